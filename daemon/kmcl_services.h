// daemon/kmcl_services.h: the kmcl.v1 services kmcld registers on its gRPC
// server.
//
// Every service of the API contract (proto/) is registered so that server
// reflection lists the whole surface. Methods whose implementation has not
// landed yet answer UNIMPLEMENTED, the generated default; README.md's status
// table says which those are.
//
// Thread-safe: the registry is built once before the server starts and
// outlives it.
#ifndef KMCLD_DAEMON_KMCL_SERVICES_H_
#define KMCLD_DAEMON_KMCL_SERVICES_H_

#include <memory>
#include <vector>

#include "grpcpp/server_builder.h"

namespace kmcld {

class KmclServices {
 public:
  KmclServices();
  ~KmclServices();
  KmclServices(const KmclServices&) = delete;
  KmclServices& operator=(const KmclServices&) = delete;

  // Registers every service on `builder`. The builder keeps raw pointers, so
  // this object must outlive the server built from it.
  void RegisterAll(grpc::ServerBuilder& builder);

 private:
  std::vector<std::unique_ptr<grpc::Service>> services_;
};

}  // namespace kmcld

#endif  // KMCLD_DAEMON_KMCL_SERVICES_H_
