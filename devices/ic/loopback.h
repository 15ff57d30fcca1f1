// devices/ic/loopback.h (testonly): a host service and an emulated guest
// wired back to back without a channel, so the protocol is tested
// synchronously: every packet the host emits is handed to the guest and its
// answer back to the host before the call returns. Time is a field the test
// advances (no clock, no sleeps). Tests may also drop or rewrite packets in
// either direction to play a misbehaving guest or host.
//
// Threading: single-threaded, like the state machines it drives.
#ifndef KMCLD_DEVICES_IC_LOOPBACK_H_
#define KMCLD_DEVICES_IC_LOOPBACK_H_

#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "devices/ic/guest.h"
#include "devices/ic/host_services.h"

namespace kmcl::devices::ic {

template <typename Host>
class Loopback {
 public:
  explicit Loopback(const HostOptions& host_options = {}, GuestOptions guest_options = {})
      : host(host_options), guest(host.info().service, std::move(guest_options)) {}

  // Drives `call` (which fills an IcOutput) and then every packet exchange
  // it causes, until nothing is left in flight.
  void Run(const std::function<void(IcOutput&)>& call) {
    IcOutput out;
    call(out);
    Pump(out);
  }
  void Open() {
    Run([&](IcOutput& out) { host.Open(now, out); });
  }
  void Tick() {
    Run([&](IcOutput& out) { host.Tick(now, out); });
  }
  // Advances time by `step` and ticks, `times` times.
  void Advance(absl::Duration step, int times = 1) {
    for (int i = 0; i < times; ++i) {
      now += step;
      Tick();
    }
  }
  // A packet straight to the host, as a hostile guest would send it.
  void InjectToHost(const Bytes& packet) {
    Run([&](IcOutput& out) { host.OnPacket(packet, now, out); });
  }

  Host host;
  IcGuest guest;
  absl::Time now = absl::FromUnixSeconds(1700000000);
  std::vector<IcEvent> events;
  std::vector<std::string> dropped;  // the host's IcOutput::dropped lines
  std::vector<Bytes> to_guest;   // every packet the host sent
  std::vector<Bytes> to_host;    // every answer the guest sent
  // Test hooks: return nullopt to drop the packet, or a rewritten one.
  std::function<std::optional<Bytes>(Bytes)> host_to_guest;
  std::function<std::optional<Bytes>(Bytes)> guest_to_host;
  bool hold = false;             // keep the host's packets in `held` instead of delivering
  std::deque<Bytes> held;

  // Delivers held packets (after `hold` was cleared, or a restore).
  void Release() {
    IcOutput out;
    out.send.assign(held.begin(), held.end());
    held.clear();
    Pump(out);
  }

 private:
  void Pump(IcOutput& first) {
    std::deque<Bytes> queue;
    auto take = [&](IcOutput& out) {
      for (Bytes& b : out.send) queue.push_back(std::move(b));
      for (IcEvent& e : out.events) events.push_back(std::move(e));
      for (std::string& d : out.dropped) dropped.push_back(std::move(d));
      out = IcOutput{};
    };
    take(first);
    while (!queue.empty()) {
      Bytes packet = std::move(queue.front());
      queue.pop_front();
      if (hold) {
        held.push_back(std::move(packet));
        continue;
      }
      to_guest.push_back(packet);
      if (host_to_guest) {
        std::optional<Bytes> p = host_to_guest(packet);
        if (!p) continue;
        packet = *std::move(p);
      }
      std::optional<Bytes> answer = guest.OnPacket(packet, now);
      if (!answer) continue;
      if (guest_to_host) {
        answer = guest_to_host(*std::move(answer));
        if (!answer) continue;
      }
      to_host.push_back(*answer);
      IcOutput out;
      host.OnPacket(*answer, now, out);
      take(out);
    }
  }
};

}  // namespace kmcl::devices::ic

#endif  // KMCLD_DEVICES_IC_LOOPBACK_H_
