// daemon/device_api.h: what kmcl.v1.DeviceService does (proto/devices.proto),
// without gRPC: each call takes the request and fills the response, or
// returns the error the service reports (docs/devices.md). The gRPC service
// (device_service.h) decides on which thread each call runs; these functions
// are also what its tests drive.
//
// Calls marked "waits" block until the guest answers, at most the devices'
// request timeout (plus 2 s); never call them on a gRPC reactor thread or
// from a KMCL callback.
//
// Thread-safe. The registry (which owns each partition's devices) must
// outlive it.
#ifndef KMCLD_DAEMON_DEVICE_API_H_
#define KMCLD_DAEMON_DEVICE_API_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "daemon/partition_devices.h"
#include "daemon/registry.h"
#include "proto/devices.pb.h"

namespace kmcld {

class DeviceApi {
 public:
  explicit DeviceApi(Registry& registry) : registry_(registry) {}

  absl::Status ListDevices(const kmcl::v1::ListDevicesRequest& request, kmcl::v1::ListDevicesResponse* response);
  absl::Status GetHeartbeat(const kmcl::v1::GetHeartbeatRequest& request, kmcl::v1::HeartbeatState* response);
  // Waits.
  absl::Status RequestShutdown(const kmcl::v1::RequestShutdownRequest& request,
                               kmcl::v1::RequestShutdownResponse* response);
  // Waits.
  absl::Status SendTimeSample(const kmcl::v1::SendTimeSampleRequest& request, kmcl::v1::TimeSample* response);
  // Wait.
  absl::Status KvpGet(const kmcl::v1::KvpGetRequest& request, kmcl::v1::KvpGetResponse* response);
  absl::Status KvpSet(const kmcl::v1::KvpSetRequest& request, kmcl::v1::KvpStatus* response);
  absl::Status KvpDelete(const kmcl::v1::KvpDeleteRequest& request, kmcl::v1::KvpStatus* response);
  absl::Status KvpEnumerate(const kmcl::v1::KvpEnumerateRequest& request,
                            kmcl::v1::KvpEnumerateResponse* response);

  // NOT_FOUND unless `partition_id` has the device (INVALID_ARGUMENT when
  // empty): the cheap check the service makes before it starts waiting.
  absl::Status CheckDevice(const std::string& partition_id, kmcl::devices::ic::IcService service) const;

 private:
  struct Target {
    // Both kept while waiting; devices is declared last, so released first.
    std::shared_ptr<PartitionEntry> partition;
    std::shared_ptr<PartitionDevices> devices;
    kmcl::devices::ic::IcVsp* vsp = nullptr;
  };
  absl::StatusOr<Target> Find(const std::string& partition_id, kmcl::devices::ic::IcService service) const;
  // One KVP request on `pool`: `submit` makes it, `fill` reads its result.
  absl::Status KvpOnce(const std::string& partition_id, uint32_t pool,
                       const std::function<absl::StatusOr<uint64_t>(kmcl::devices::ic::KvpHost&, absl::Time,
                                                                    kmcl::devices::ic::IcOutput&)>& submit,
                       const std::function<void(const kmcl::devices::ic::KvpResult&)>& fill);

  Registry& registry_;
};

}  // namespace kmcld

#endif  // KMCLD_DAEMON_DEVICE_API_H_
