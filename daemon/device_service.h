// daemon/device_service.h: kmcl.v1.DeviceService (proto/devices.proto) over
// gRPC: each call is DeviceApi's (device_api.h). Calls that read state
// finish on the reactor thread; calls that wait for the guest's answer run
// on a blocking pool of their own, after a cheap check that the device
// exists.
//
// Thread-safe, except Drain(), which runs once the server stopped. Must
// outlive the server it is registered on; the registry must outlive it.
#ifndef KMCLD_DAEMON_DEVICE_SERVICE_H_
#define KMCLD_DAEMON_DEVICE_SERVICE_H_

#include <functional>
#include <memory>

#include "daemon/blocking_pool.h"
#include "daemon/device_api.h"
#include "daemon/security/authorizer.h"
#include "proto/devices.grpc.pb.h"

namespace kmcld {

class DeviceService final : public kmcl::v1::DeviceService::CallbackService {
 public:
  // At most `max_waiting_calls` calls wait for guests at once (more get
  // RESOURCE_EXHAUSTED).
  explicit DeviceService(Registry& registry, int max_waiting_calls = 64)
      : api_(registry), pool_(std::make_unique<BlockingPool>(max_waiting_calls)) {}

  // After the server stopped: waits for calls still waiting on guests (at
  // most the devices' request timeout), so no call holds a partition's
  // devices when they are cleared. Later calls answer UNAVAILABLE.
  void Drain() { pool_.reset(); }

  // Checks every call before it acts (kmcld sets it; null allows all).
  void set_authorizer(const security::Authorizer* authorizer) { authorizer_ = authorizer; }

  grpc::ServerUnaryReactor* ListDevices(grpc::CallbackServerContext* ctx,
                                        const kmcl::v1::ListDevicesRequest* request,
                                        kmcl::v1::ListDevicesResponse* response) override;
  grpc::ServerUnaryReactor* GetHeartbeat(grpc::CallbackServerContext* ctx,
                                         const kmcl::v1::GetHeartbeatRequest* request,
                                         kmcl::v1::HeartbeatState* response) override;
  grpc::ServerUnaryReactor* RequestShutdown(grpc::CallbackServerContext* ctx,
                                            const kmcl::v1::RequestShutdownRequest* request,
                                            kmcl::v1::RequestShutdownResponse* response) override;
  grpc::ServerUnaryReactor* SendTimeSample(grpc::CallbackServerContext* ctx,
                                           const kmcl::v1::SendTimeSampleRequest* request,
                                           kmcl::v1::TimeSample* response) override;
  grpc::ServerUnaryReactor* KvpGet(grpc::CallbackServerContext* ctx, const kmcl::v1::KvpGetRequest* request,
                                   kmcl::v1::KvpGetResponse* response) override;
  grpc::ServerUnaryReactor* KvpSet(grpc::CallbackServerContext* ctx, const kmcl::v1::KvpSetRequest* request,
                                   kmcl::v1::KvpStatus* response) override;
  grpc::ServerUnaryReactor* KvpDelete(grpc::CallbackServerContext* ctx,
                                      const kmcl::v1::KvpDeleteRequest* request,
                                      kmcl::v1::KvpStatus* response) override;
  grpc::ServerUnaryReactor* KvpEnumerate(grpc::CallbackServerContext* ctx,
                                         const kmcl::v1::KvpEnumerateRequest* request,
                                         kmcl::v1::KvpEnumerateResponse* response) override;

 private:
  // Checks that the device exists, then runs `work` on the blocking pool.
  grpc::ServerUnaryReactor* Waiting(grpc::CallbackServerContext* ctx, const std::string& partition_id,
                                    kmcl::devices::ic::IcService service, std::function<absl::Status()> work);

  absl::Status Authorize(grpc::CallbackServerContext* ctx, absl::string_view rpc,
                         const google::protobuf::Message& request) const {
    return authorizer_ == nullptr ? absl::OkStatus() : authorizer_->Check(*ctx, rpc, request);
  }

  const security::Authorizer* authorizer_ = nullptr;
  DeviceApi api_;
  std::unique_ptr<BlockingPool> pool_;
};

}  // namespace kmcld

#endif  // KMCLD_DAEMON_DEVICE_SERVICE_H_
