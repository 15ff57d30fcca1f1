#include "daemon/device_service.h"

#include "absl/strings/str_cat.h"
#include "daemon/services/service_context.h"

namespace kmcld {

using kmcl::devices::ic::IcService;

grpc::ServerUnaryReactor* DeviceService::Waiting(grpc::CallbackServerContext* ctx,
                                                 const std::string& partition_id, IcService service,
                                                 std::function<absl::Status()> work) {
  if (absl::Status s = api_.CheckDevice(partition_id, service); !s.ok()) return FinishNow(ctx, s);
  if (pool_ == nullptr) return FinishNow(ctx, absl::UnavailableError("kmcld is shutting down"));
  return FinishBlocking(ctx, *pool_, {partition_id, absl::StrCat("device/", static_cast<int>(service))}, std::move(work));
}

grpc::ServerUnaryReactor* DeviceService::ListDevices(grpc::CallbackServerContext* ctx,
                                                     const kmcl::v1::ListDevicesRequest* request,
                                                     kmcl::v1::ListDevicesResponse* response) {
  if (absl::Status s = Authorize(ctx, "ListDevices", *request); !s.ok()) return FinishNow(ctx, s);
  absl::Status s = api_.ListDevices(*request, response);
  if (authorizer_ != nullptr && request->partition_id().empty()) authorizer_->FilterVisible(*ctx, *response);
  return FinishNow(ctx, s);
}

grpc::ServerUnaryReactor* DeviceService::GetHeartbeat(grpc::CallbackServerContext* ctx,
                                                      const kmcl::v1::GetHeartbeatRequest* request,
                                                      kmcl::v1::HeartbeatState* response) {
  if (absl::Status s = Authorize(ctx, "GetHeartbeat", *request); !s.ok()) return FinishNow(ctx, s);
  return FinishNow(ctx, api_.GetHeartbeat(*request, response));
}

grpc::ServerUnaryReactor* DeviceService::RequestShutdown(grpc::CallbackServerContext* ctx,
                                                         const kmcl::v1::RequestShutdownRequest* request,
                                                         kmcl::v1::RequestShutdownResponse* response) {
  if (absl::Status s = Authorize(ctx, "RequestShutdown", *request); !s.ok()) return FinishNow(ctx, s);
  return Waiting(ctx, request->partition_id(), IcService::kShutdown,
                 [this, request, response] { return api_.RequestShutdown(*request, response); });
}

grpc::ServerUnaryReactor* DeviceService::SendTimeSample(grpc::CallbackServerContext* ctx,
                                                        const kmcl::v1::SendTimeSampleRequest* request,
                                                        kmcl::v1::TimeSample* response) {
  if (absl::Status s = Authorize(ctx, "SendTimeSample", *request); !s.ok()) return FinishNow(ctx, s);
  return Waiting(ctx, request->partition_id(), IcService::kTimeSync,
                 [this, request, response] { return api_.SendTimeSample(*request, response); });
}

grpc::ServerUnaryReactor* DeviceService::KvpGet(grpc::CallbackServerContext* ctx,
                                                const kmcl::v1::KvpGetRequest* request,
                                                kmcl::v1::KvpGetResponse* response) {
  if (absl::Status s = Authorize(ctx, "KvpGet", *request); !s.ok()) return FinishNow(ctx, s);
  return Waiting(ctx, request->partition_id(), IcService::kKvp,
                 [this, request, response] { return api_.KvpGet(*request, response); });
}

grpc::ServerUnaryReactor* DeviceService::KvpSet(grpc::CallbackServerContext* ctx,
                                                const kmcl::v1::KvpSetRequest* request,
                                                kmcl::v1::KvpStatus* response) {
  if (absl::Status s = Authorize(ctx, "KvpSet", *request); !s.ok()) return FinishNow(ctx, s);
  return Waiting(ctx, request->partition_id(), IcService::kKvp,
                 [this, request, response] { return api_.KvpSet(*request, response); });
}

grpc::ServerUnaryReactor* DeviceService::KvpDelete(grpc::CallbackServerContext* ctx,
                                                   const kmcl::v1::KvpDeleteRequest* request,
                                                   kmcl::v1::KvpStatus* response) {
  if (absl::Status s = Authorize(ctx, "KvpDelete", *request); !s.ok()) return FinishNow(ctx, s);
  return Waiting(ctx, request->partition_id(), IcService::kKvp,
                 [this, request, response] { return api_.KvpDelete(*request, response); });
}

grpc::ServerUnaryReactor* DeviceService::KvpEnumerate(grpc::CallbackServerContext* ctx,
                                                      const kmcl::v1::KvpEnumerateRequest* request,
                                                      kmcl::v1::KvpEnumerateResponse* response) {
  if (absl::Status s = Authorize(ctx, "KvpEnumerate", *request); !s.ok()) return FinishNow(ctx, s);
  return Waiting(ctx, request->partition_id(), IcService::kKvp,
                 [this, request, response] { return api_.KvpEnumerate(*request, response); });
}

}  // namespace kmcld
