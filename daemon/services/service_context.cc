#include "daemon/services/service_context.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace kmcld {

absl::Status Authorize(const ServiceContext& services, const grpc::CallbackServerContext* ctx,
                       absl::string_view rpc, const google::protobuf::Message& request) {
  if (services.authorizer == nullptr) return absl::OkStatus();
  return services.authorizer->Check(*ctx, rpc, request);
}

void KeepVisible(const ServiceContext& services, const grpc::CallbackServerContext* ctx,
                 const std::string& requested_partition, google::protobuf::Message& response) {
  if (services.authorizer != nullptr && requested_partition.empty()) {
    services.authorizer->FilterVisible(*ctx, response);
  }
}

absl::StatusOr<std::unique_ptr<security::StreamSlot>> AcquireStreamSlot(
    const ServiceContext& services, const grpc::CallbackServerContext* ctx, absl::string_view rpc) {
  if (services.authorizer == nullptr) return nullptr;
  return services.authorizer->AcquireStream(*ctx, rpc);
}

absl::Status HoldStream(const ServiceContext& services, security::StreamSlot* slot, absl::string_view rpc,
                        absl::string_view partition, security::Role role,
                        std::weak_ptr<security::RevocableStream> stream) {
  if (services.authorizer == nullptr || slot == nullptr) return absl::OkStatus();
  return services.authorizer->HoldStream(*slot, rpc, partition, role, std::move(stream));
}

absl::StatusOr<std::shared_ptr<security::Charge>> ChargeCaller(const ServiceContext& services,
                                                               const grpc::CallbackServerContext* ctx,
                                                               absl::string_view rpc, security::Resource r,
                                                               uint64_t amount) {
  if (services.authorizer == nullptr) return nullptr;
  auto charge = services.authorizer->ChargeFor(*ctx, rpc, r, amount);
  if (!charge.ok()) return charge.status();
  return std::shared_ptr<security::Charge>(*std::move(charge));
}

absl::Status AuthorizeRole(const ServiceContext& services, const grpc::CallbackServerContext* ctx,
                           absl::string_view rpc, absl::string_view partition, security::Role role) {
  if (services.authorizer == nullptr) return absl::OkStatus();
  return services.authorizer->CheckRole(*ctx, rpc, partition, role);
}

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* ctx, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpc(status));
  return reactor;
}

std::string ChannelLane(uint32_t relid) { return absl::StrCat("channel/", relid); }

grpc::ServerUnaryReactor* FinishBlocking(grpc::CallbackServerContext* ctx, BlockingPool& pool,
                                         BlockingKey key, std::function<absl::Status()> work) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  BlockingPool::Job job;
  job.partition = std::move(key.partition);
  job.lane = std::move(key.lane);
  job.urgent = key.urgent;
  job.run = [reactor, work = std::move(work)] { reactor->Finish(ToGrpc(work())); };
  job.drop = [reactor](const absl::Status& why) { reactor->Finish(ToGrpc(why)); };
  job.cancelled = [ctx] { return ctx->IsCancelled(); };
  if (absl::Status s = pool.Submit(std::move(job)); !s.ok()) reactor->Finish(ToGrpc(s));
  return reactor;
}

}  // namespace kmcld
