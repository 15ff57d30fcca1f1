// daemon/demo_traffic.h: demo traffic for `make run`: the example echo VSP
// and echo VSC (examples/, written against the KMCL surface) run against
// each other in a partition, in rounds, and report on stderr what moved.
//
// Thread-compatible: Start and Stop from one thread; the traffic runs on a
// thread of its own until Stop (or destruction) joins it.
#ifndef KMCLD_DAEMON_DEMO_TRAFFIC_H_
#define KMCLD_DAEMON_DEMO_TRAFFIC_H_

#include <atomic>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "kmcl_core/bus/partition.h"

struct _ECHO_VSP;
struct _ECHO_VSC;

namespace kmcld {

class DemoTraffic {
 public:
  DemoTraffic() = default;
  ~DemoTraffic();
  DemoTraffic(const DemoTraffic&) = delete;
  DemoTraffic& operator=(const DemoTraffic&) = delete;

  // Offers the echo channel, opens it from the guest side and starts echoing
  // `packets_per_round` packets every `interval`.
  absl::Status Start(kmcl::Partition& partition, uint64_t packets_per_round,
                     absl::Duration interval);
  void Stop();
  uint64_t echoed() const { return echoed_.load(); }

 private:
  void Run(uint64_t packets_per_round, absl::Duration interval);

  _ECHO_VSP* vsp_ = nullptr;
  _ECHO_VSC* vsc_ = nullptr;
  std::thread thread_;
  absl::Notification stop_;
  std::atomic<uint64_t> echoed_{0};
};

}  // namespace kmcld

#endif  // KMCLD_DAEMON_DEMO_TRAFFIC_H_
