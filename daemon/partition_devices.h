// daemon/partition_devices.h: the built-in devices of kmcld's partitions:
// the Hyper-V integration services (devices/ic, docs/devices.md) offered as
// KMCL VSPs, optionally with kmcld's emulated Linux-like guest answering
// them, and the thread that drives their timers (heartbeats, timeouts).
//
//   auto spec = ParseDeviceList("default");          // all four
//   auto devices = PartitionDevices::Create(partition, {.services = *spec});
//   table.Add(*std::move(devices));
//   ... DeviceService (device_service.h) serves them over kmcl.v1 ...
//   table.Clear();  // before the partition goes
//
// Threading: thread-safe. Each PartitionDevices has one poll thread; its
// destructor stops it and closes the guests before rescinding the offers,
// and must run before its partition is destroyed.
#ifndef KMCLD_DAEMON_PARTITION_DEVICES_H_
#define KMCLD_DAEMON_PARTITION_DEVICES_H_

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "devices/ic/vsc.h"
#include "devices/ic/vsp.h"
#include "kmcl_core/mutex.h"
#include "kmcl_core/partition.h"

namespace kmcld {

// "none" or "" -> no device; "default" or "all" -> the four; otherwise a
// comma-separated list of heartbeat, shutdown, timesync, kvp.
// INVALID_ARGUMENT naming an unknown or repeated entry.
absl::StatusOr<std::vector<kmcl::devices::ic::IcService>> ParseDeviceList(absl::string_view spec);

struct DeviceOptions {
  std::vector<kmcl::devices::ic::IcService> services;
  bool emulated_guest = true;            // kmcld's own guest answers them
  kmcl::devices::ic::HostOptions host;   // timeouts, heartbeat interval
  absl::Duration poll_interval = absl::Milliseconds(100);
};

struct DeviceEventRecord {
  absl::Time time;
  std::string partition_id;
  kmcl::devices::ic::IcService service;
  kmcl::devices::ic::IcEvent event;
};

class PartitionDevices {
 public:
  static constexpr size_t kMaxEvents = 256;

  static absl::StatusOr<std::unique_ptr<PartitionDevices>> Create(kmcl::Partition& partition,
                                                                  DeviceOptions options);
  ~PartitionDevices();
  PartitionDevices(const PartitionDevices&) = delete;
  PartitionDevices& operator=(const PartitionDevices&) = delete;

  const std::string& partition_id() const { return partition_id_; }
  const DeviceOptions& options() const { return options_; }
  // The VSP of `service`, or null when the partition does not have it.
  kmcl::devices::ic::IcVsp* vsp(kmcl::devices::ic::IcService service) const;
  // The emulated guest of `service`, or null.
  kmcl::devices::ic::IcVsc* vsc(kmcl::devices::ic::IcService service) const;
  // The last kMaxEvents events, oldest first.
  std::vector<DeviceEventRecord> RecentEvents() const;

 private:
  explicit PartitionDevices(std::string partition_id, DeviceOptions options);
  void PollLoop();
  void Record(kmcl::devices::ic::IcService service, const kmcl::devices::ic::IcEvent& event);

  const std::string partition_id_;
  const DeviceOptions options_;
  std::map<kmcl::devices::ic::IcService, std::unique_ptr<kmcl::devices::ic::IcVsp>> vsps_;
  std::map<kmcl::devices::ic::IcService, std::unique_ptr<kmcl::devices::ic::IcVsc>> vscs_;
  mutable kmcl::Mutex mu_;
  kmcl::CondVar wake_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<DeviceEventRecord> events_ ABSL_GUARDED_BY(mu_);
  std::thread poller_;
};

// The partitions that have devices, by partition id.
class DeviceTable {
 public:
  // ALREADY_EXISTS when the partition has devices already.
  absl::Status Add(std::shared_ptr<PartitionDevices> devices);
  // Null when the partition has none.
  std::shared_ptr<PartitionDevices> Get(const std::string& partition_id) const;
  std::vector<std::shared_ptr<PartitionDevices>> List() const;
  // Forgets every partition's devices; each is destroyed once no call uses
  // it any more (blocking calls hold a reference).
  void Clear();

 private:
  mutable kmcl::Mutex mu_;
  std::map<std::string, std::shared_ptr<PartitionDevices>> devices_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kmcld

#endif  // KMCLD_DAEMON_PARTITION_DEVICES_H_
