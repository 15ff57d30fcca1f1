// daemon/services/packet_service.h: kmcl.v1.PacketService (see
// proto/packet.proto): one Attach stream per endpoint, as a gRPC callback
// bidi reactor. The reactor is thin: requests go to Endpoint::Handle, and
// writes come from Endpoint::NextMessage, one at a time; the endpoint keeps
// every queue and the credits.
//
// Thread-safe. Reactions never block: sends and completions only queue in
// kmcl_core.
#ifndef KMCLD_DAEMON_SERVICES_PACKET_SERVICE_H_
#define KMCLD_DAEMON_SERVICES_PACKET_SERVICE_H_

#include <map>
#include <string>

#include "daemon/services/service_context.h"
#include "proto/packet.grpc.pb.h"

namespace kmcld {

// Open streams per client connection (gRPC's peer string), bounded by
// ServiceLimits::max_streams_per_client.
class StreamCounter {
 public:
  explicit StreamCounter(uint32_t limit) : limit_(limit) {}
  // RESOURCE_EXHAUSTED past the limit.
  absl::Status Acquire(const std::string& peer);
  void Release(const std::string& peer);

 private:
  const uint32_t limit_;
  kmcl::Mutex mu_;
  std::map<std::string, uint32_t> open_ ABSL_GUARDED_BY(mu_);
};

class PacketService final : public kmcl::v1::PacketService::CallbackService {
 public:
  PacketService(ServiceContext ctx, StreamCounter& streams) : ctx_(ctx), streams_(streams) {}
  grpc::ServerBidiReactor<kmcl::v1::AttachRequest, kmcl::v1::AttachResponse>* Attach(
      grpc::CallbackServerContext* ctx) override;

 private:
  ServiceContext ctx_;
  StreamCounter& streams_;
};

}  // namespace kmcld

#endif  // KMCLD_DAEMON_SERVICES_PACKET_SERVICE_H_
