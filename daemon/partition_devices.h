// daemon/partition_devices.h: the built-in devices of a kmcld partition:
// the Hyper-V integration services (devices/ic, docs/devices.md) offered as
// KMCL VSPs, optionally with kmcld's emulated Linux-like guest answering
// them, and the thread that drives their timers (heartbeats, timeouts).
// A partition gets them by configuration (CreatePartitionRequest.devices,
// the config file's default_partition); the Registry owns them with the
// partition (registry.h: PartitionEntry::devices, Registry::AttachDevices).
//
//   auto spec = ParseDeviceNames({"default"});       // all four
//   auto devices = PartitionDevices::Create(partition, {.services = *spec});
//   ... DeviceService (device_service.h) serves them over kmcl.v1 ...
//   auto saved = (*devices)->Save();                  // with the partition
//   auto copy = PartitionDevices::Create(restored, options, &*saved);
//
// Events: each device event is kept (RecentEvents) and, with options.log,
// appended to kmcld's event log as EVENT_KIND_DEVICE_* naming the device's
// channel.
//
// Errors from the guest: each malformed packet a device drops is counted
// (IcVsp::stats) and logged at warning level naming the partition, the
// channel (relid), the interface and what was wrong ("malformed packet
// from the guest"). A guest that breaks a device's ring itself (a corrupt
// ring, a bad read_index) is counted by the channel and reported as an
// EVENT_KIND_RING_CORRUPT event naming the channel (which kmcld logs at
// warning level as "ring corrupt"), or as that warning line directly when
// there is no event log. Both kinds share one budget per partition,
// options.peer_log (Registry passes the one the partition's endpoints
// use): at most kPeerWarningsPerMinute a minute together; the next one
// admitted says how many were left out (dropped_before, "N earlier not
// logged"). docs/operations.md states the policy.
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
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "daemon/event_log.h"
#include "daemon/log.h"
#include "devices/ic/vsc.h"
#include "devices/ic/vsp.h"
#include "kmcl_core/base/mutex.h"
#include "kmcl_core/bus/partition.h"

namespace kmcld {

// Device names -> services. Each entry is heartbeat, shutdown, timesync or
// kvp; "default" (or "all") alone means the four; "none" alone, or no entry,
// means none. INVALID_ARGUMENT naming an unknown or repeated entry.
absl::StatusOr<std::vector<kmcl::devices::ic::IcService>> ParseDeviceNames(
    const std::vector<std::string>& names);
// The same for a comma-separated list ("heartbeat,kvp"), as --devices takes.
absl::StatusOr<std::vector<kmcl::devices::ic::IcService>> ParseDeviceList(absl::string_view spec);
// "heartbeat", ... for each service.
std::vector<std::string> DeviceNames(const std::vector<kmcl::devices::ic::IcService>& services);

struct DeviceOptions {
  std::vector<kmcl::devices::ic::IcService> services;
  bool emulated_guest = true;            // kmcld's own guest answers them
  kmcl::devices::ic::HostOptions host;   // timeouts, heartbeat interval
  absl::Duration poll_interval = absl::Milliseconds(100);
  EventLog* log = nullptr;               // also log the devices' events here
  // The budget of warnings and events the guest's protocol errors may
  // cause, shared with the partition's endpoints (PartitionEntry::peer_log);
  // null: a budget of its own, kPeerWarningsPerMinute a minute.
  std::shared_ptr<log::Limiter> peer_log;
};

struct DeviceEventRecord {
  absl::Time time;
  std::string partition_id;
  kmcl::devices::ic::IcService service;
  kmcl::devices::ic::IcEvent event;
};

// The devices' saved state: per service, its VSP's blob and (with the
// emulated guest) its VSC's. Opaque to everything but Create.
struct SavedDevices {
  struct Device {
    kmcl::devices::ic::IcService service;
    std::string host;
    std::string guest;  // empty without the emulated guest
  };
  std::vector<Device> devices;
};

class PartitionDevices {
 public:
  static constexpr size_t kMaxEvents = 256;
  // The most warning lines a partition's guest can cause in a minute.
  static constexpr int kPeerWarningsPerMinute = 10;

  // With `saved` (from Save(), on the partition restored from the blob
  // saved right after it), restores each device instead of offering afresh;
  // `options.services` must list the saved ones (INVALID_ARGUMENT).
  static absl::StatusOr<std::unique_ptr<PartitionDevices>> Create(kmcl::Partition& partition,
                                                                  DeviceOptions options,
                                                                  const SavedDevices* saved = nullptr);
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

  // Blocking. Pauses every device (guests first, so the rings stop moving)
  // and saves it; the timers stop. Save the partition right after, then
  // Resume() to keep running here. On failure the devices are resumed.
  absl::StatusOr<SavedDevices> Save();
  void Resume();

 private:
  explicit PartitionDevices(std::string partition_id, DeviceOptions options);
  void PollLoop();
  void Record(kmcl::devices::ic::IcService service, const kmcl::devices::ic::IcEvent& event);
  // A malformed packet from the guest on `service`'s channel: a warning,
  // rate-limited by peer_log_.
  void WarnDropped(kmcl::devices::ic::IcService service, const std::string& what);
  // The guest broke `service`'s ring: an EVENT_KIND_RING_CORRUPT event (or
  // a warning without an event log), rate-limited by peer_log_.
  void ReportCorruptRing(kmcl::devices::ic::IcService service, const std::string& what);
  // The channel as the event log names it; a zero channel_id before the
  // offer is known (the guest cannot send then).
  kmcl::v1::ChannelRef ChannelOf(kmcl::devices::ic::IcService service) const;
  // Each VSP's channel as the event log names it (after the offers exist).
  void FindChannels(kmcl::Partition& partition);

  const std::string partition_id_;
  const DeviceOptions options_;
  std::map<kmcl::devices::ic::IcService, std::unique_ptr<kmcl::devices::ic::IcVsp>> vsps_;
  std::map<kmcl::devices::ic::IcService, std::unique_ptr<kmcl::devices::ic::IcVsc>> vscs_;
  mutable kmcl::Mutex mu_;
  kmcl::CondVar wake_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool saved_ ABSL_GUARDED_BY(mu_) = false;  // between Save and Resume: no ticks
  std::deque<DeviceEventRecord> events_ ABSL_GUARDED_BY(mu_);
  std::map<kmcl::devices::ic::IcService, kmcl::v1::ChannelRef> channels_ ABSL_GUARDED_BY(mu_);
  const std::shared_ptr<log::Limiter> peer_log_;
  std::thread poller_;
};

}  // namespace kmcld

#endif  // KMCLD_DAEMON_PARTITION_DEVICES_H_
