#include "daemon/services/service_context.h"

#include <utility>

namespace kmcld {

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* ctx, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpc(status));
  return reactor;
}

grpc::ServerUnaryReactor* FinishBlocking(grpc::CallbackServerContext* ctx, BlockingPool& pool,
                                         std::function<absl::Status()> work) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  const bool started = pool.Run([reactor, work = std::move(work)] {
    reactor->Finish(ToGrpc(work()));
  });
  if (!started) {
    reactor->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                 "too many blocking calls are running in kmcld; try again"));
  }
  return reactor;
}

}  // namespace kmcld
