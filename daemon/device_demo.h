// daemon/device_demo.h: the devices' part of `kmcld --demo`: with
// --devices, every demo interval one line on stderr shows the heartbeat
// advancing, a KVP round trip (set then get) and a time sample answered,
// driven through DeviceApi exactly as a remote tool's DeviceService calls.
//
//   kmcld --demo --devices=default
//   kmcld: devices: heartbeat sequence 12 (alive); KVP kmcld/demo-round = 3 (round trip ok);
//          time sample answered in 0.21 ms
//
// Thread-compatible: Start and Stop from one thread; the reports run on a
// thread of their own until Stop (or destruction) joins it.
#ifndef KMCLD_DAEMON_DEVICE_DEMO_H_
#define KMCLD_DAEMON_DEVICE_DEMO_H_

#include <string>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "daemon/device_api.h"

namespace kmcld {

class DeviceDemo {
 public:
  DeviceDemo() = default;
  ~DeviceDemo() { Stop(); }
  DeviceDemo(const DeviceDemo&) = delete;
  DeviceDemo& operator=(const DeviceDemo&) = delete;

  // Reports on `partition_id`'s devices every `interval`. `registry` must
  // outlive Stop().
  void Start(Registry& registry, std::string partition_id, absl::Duration interval);
  void Stop();
  // One report line (also what the thread prints); exposed for tests.
  static std::string Round(DeviceApi& api, const std::string& partition_id, uint64_t round);

 private:
  std::thread thread_;
  absl::Notification stop_;
};

}  // namespace kmcld

#endif  // KMCLD_DAEMON_DEVICE_DEMO_H_
