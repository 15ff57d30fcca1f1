// daemon/kmcl_services.h: kmcld's gRPC bridge, assembled: the event log,
// the timer, the registry of partitions and endpoints, host leases, the
// blocking pool, and every kmcl.v1 service (daemon/services/), registered on
// one grpc::ServerBuilder.
//
//   KmclServices services(options);
//   services.AddPartition(...default partition...);
//   services.RegisterAll(builder);
//   auto server = builder.BuildAndStart();
//   ... server->Shutdown(); server->Wait();
//   services.Shutdown();  // frees every endpoint and partition
//
// Thread-safe. Must outlive the server built from the builder.
#ifndef KMCLD_DAEMON_KMCL_SERVICES_H_
#define KMCLD_DAEMON_KMCL_SERVICES_H_

#include <memory>
#include <vector>

#include "daemon/blocking_pool.h"
#include "daemon/config.pb.h"
#include "daemon/event_log.h"
#include "daemon/leases.h"
#include "daemon/metrics/rpc_metrics.h"
#include "daemon/registry.h"
#include "daemon/security/authorizer.h"
#include "daemon/services/packet_service.h"
#include "daemon/services/service_context.h"
#include "daemon/timer.h"
#include "grpcpp/server_builder.h"

namespace kmcld {

class KmclServices {
 public:
  // `authorizer` (may be null: every call allowed) must outlive this.
  explicit KmclServices(const config::KmcldConfig& config,
                        const security::Authorizer* authorizer = nullptr);
  ~KmclServices();
  KmclServices(const KmclServices&) = delete;
  KmclServices& operator=(const KmclServices&) = delete;

  Registry& registry() { return *registry_; }
  const LeaseTable& leases() const { return leases_; }
  const EventLog& event_log() const { return log_; }
  // Every call of the server RegisterAll built on, as metrics.
  metrics::RpcMetrics& rpc_metrics() { return rpc_metrics_; }

  // Registers every service on `builder`, the message size limits and the
  // interceptors (the builder's only ones) that record rpc_metrics() and,
  // with an authorizer, the final status of audited calls.
  void RegisterAll(grpc::ServerBuilder& builder);

  // After the server stopped: frees every endpoint and partition, then
  // stops the timer. Idempotent.
  void Shutdown();

 private:
  const config::KmcldConfig config_;
  const security::Authorizer* const authorizer_;
  metrics::RpcMetrics rpc_metrics_;
  Timer timer_;
  EventLog log_;
  std::unique_ptr<Registry> registry_;
  LeaseTable leases_;
  StreamCounter streams_;
  std::unique_ptr<BlockingPool> pool_;
  std::vector<std::unique_ptr<grpc::Service>> services_;
};

}  // namespace kmcld

#endif  // KMCLD_DAEMON_KMCL_SERVICES_H_
