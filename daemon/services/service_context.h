// daemon/services/service_context.h: what every kmcl.v1 service of kmcld
// shares (the registry, the blocking pool, the limits), and the two ways a
// unary call ends: at once on the reactor thread for calls that never
// block, or on the blocking pool for calls that wait on KMCL callbacks or
// remote tools.
//
// Thread-safe.
#ifndef KMCLD_DAEMON_SERVICES_SERVICE_CONTEXT_H_
#define KMCLD_DAEMON_SERVICES_SERVICE_CONTEXT_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "daemon/blocking_pool.h"
#include "daemon/grpc_status.h"
#include "daemon/registry.h"
#include "daemon/security/authorizer.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/server_callback.h"

namespace kmcld {

struct ServiceLimits {
  uint32_t max_message_bytes = 16 << 20;   // gRPC receive/send limit
  uint32_t max_streams_per_client = 256;   // Attach + WatchEvents per peer
  uint32_t max_transfer_bytes = 1 << 20;   // guest memory and lease I/O per call
  uint32_t device_heartbeat_timeout_ms = 5000;  // built-in devices of new partitions
};

struct ServiceContext {
  Registry& registry;
  BlockingPool& pool;
  ServiceLimits limits;
  // kmcld always sets it; null (in-process tests) allows every call.
  const security::Authorizer* authorizer = nullptr;
};

// The authorization check every RPC entry makes before any effect
// (daemon/security/authorizer.h): OK, or PERMISSION_DENIED naming the role.
absl::Status Authorize(const ServiceContext& services, const grpc::CallbackServerContext* ctx,
                       absl::string_view rpc, const google::protobuf::Message& request);
// After a list call without a partition filled `response`: keeps only the
// entries the caller may observe (Authorizer::FilterVisible).
void KeepVisible(const ServiceContext& services, const grpc::CallbackServerContext* ctx,
                 const std::string& requested_partition, google::protobuf::Message& response);
// A place for one more stream of the caller (null without an authorizer).
absl::StatusOr<std::unique_ptr<security::StreamSlot>> AcquireStreamSlot(
    const ServiceContext& services, const grpc::CallbackServerContext* ctx, absl::string_view rpc);
// The stream holding `slot` (null without an authorizer: OK) stays open only
// while the policy gives its caller `role` on `partition`
// (Authorizer::HoldStream; a reload that revokes it ends `stream`).
absl::Status HoldStream(const ServiceContext& services, security::StreamSlot* slot, absl::string_view rpc,
                        absl::string_view partition, security::Role role,
                        std::weak_ptr<security::RevocableStream> stream);
// `amount` of `r` charged to the caller (Limits per identity) until the
// returned charge is destroyed; null without an authorizer;
// RESOURCE_EXHAUSTED naming the limit.
absl::StatusOr<std::shared_ptr<security::Charge>> ChargeCaller(const ServiceContext& services,
                                                               const grpc::CallbackServerContext* ctx,
                                                               absl::string_view rpc, security::Resource r,
                                                               uint64_t amount);
// The same for a call whose role depends on its content (Attach).
absl::Status AuthorizeRole(const ServiceContext& services, const grpc::CallbackServerContext* ctx,
                           absl::string_view rpc, absl::string_view partition, security::Role role);

// A server-streaming call refused before it started: finishes with `status`.
template <typename Response>
grpc::ServerWriteReactor<Response>* RefuseStream(const absl::Status& status) {
  class Refused final : public grpc::ServerWriteReactor<Response> {
   public:
    explicit Refused(const absl::Status& status) { this->Finish(ToGrpc(status)); }
    void OnDone() override { delete this; }
  };
  return new Refused(status);
}

// Finishes a unary call now with `status`.
grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* ctx, const absl::Status& status);

// Where a blocking call queues (BlockingPool::Job): its partition, its lane
// inside it (calls on one channel run one at a time), and whether it runs
// at once past every limit (an admin's DeletePartition --force).
struct BlockingKey {
  std::string partition;
  std::string lane;
  bool urgent = false;
};
// The lane of calls on one channel of a partition.
std::string ChannelLane(uint32_t relid);

// Runs `work` on the blocking pool under `key` and finishes the call with
// its result. RESOURCE_EXHAUSTED at once when the partition's queue is
// full; CANCELLED (work not run) when the caller went before its turn. The
// call's deadline is enforced by gRPC for the client; work that started
// runs to its end (a pause past the deadline still takes effect).
grpc::ServerUnaryReactor* FinishBlocking(grpc::CallbackServerContext* ctx, BlockingPool& pool,
                                         BlockingKey key, std::function<absl::Status()> work);

}  // namespace kmcld

#endif  // KMCLD_DAEMON_SERVICES_SERVICE_CONTEXT_H_
