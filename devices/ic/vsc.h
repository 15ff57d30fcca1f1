// devices/ic/vsc.h: an integration service's emulated guest side (what
// Linux's hv_utils does, see guest.h) as a VSC on kmcl_core's C++ channel
// API (kmcl_core/runtime/channel.h): a client channel targeting the service's
// interface type, answering each host packet from EvtVmbChannelProcessPacket.
// It uses the C++ API rather than the KMCL C surface because a guest
// endpoint is saved with Channel::Save (KMCL's save calls are server-only).
//
//   auto vsc = IcVsc::Create(partition, IcService::kHeartbeat, {});
//   vsc->Inspect([](IcGuest& g) { ... g.last_heartbeat() ... });
//
// Save/restore: Save() pauses the channel and saves it with the guest's
// state; Create(..., &saved) on the restored partition restores both before
// Enable and resumes the channel.
//
// Threading: thread-safe. Host packets are answered on the channel's I/O
// thread under a short internal lock; Inspect runs under the same lock.
// Save() and the destructor block and must not be called from callbacks.
#ifndef KMCLD_DEVICES_IC_VSC_H_
#define KMCLD_DEVICES_IC_VSC_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "devices/ic/guest.h"
#include "kmcl_core/base/mutex.h"
#include "kmcl_core/bus/partition.h"
#include "kmcl_core/runtime/channel.h"

namespace kmcl::devices::ic {

class IcVsc {
 public:
  // Claims the service's offer in `partition` at VTL 0 (now or when it
  // arrives). `clock` stamps the packets (time sync uses it).
  static absl::StatusOr<std::unique_ptr<IcVsc>> Create(
      Partition& partition, IcService service, GuestOptions options, const std::string* saved = nullptr,
      std::function<absl::Time()> clock = [] { return absl::Now(); });
  // Disables (closes) the channel.
  ~IcVsc();
  IcVsc(const IcVsc&) = delete;
  IcVsc& operator=(const IcVsc&) = delete;

  // Runs `fn` on the guest state under the lock.
  void Inspect(const std::function<void(IcGuest&)>& fn);
  // Waits until `pred` holds after some packet; false on timeout.
  bool WaitUntil(const std::function<bool(IcGuest&)>& pred, absl::Duration timeout);
  // Answers that could not be sent (Channel::Send failed).
  uint64_t send_failures() const;

  // Pauses the channel and saves it with the guest's state.
  absl::StatusOr<std::string> Save();
  // After Save(): the channel runs here again.
  absl::Status Resume();

 private:
  IcVsc(IcService service, GuestOptions options, std::function<absl::Time()> clock);
  void OnPacket(Channel& channel, Delivery& delivery, std::span<const uint8_t> payload);

  std::function<absl::Time()> clock_;
  mutable Mutex mu_;
  CondVar changed_;
  IcGuest guest_ ABSL_GUARDED_BY(mu_);
  uint64_t send_failures_ ABSL_GUARDED_BY(mu_) = 0;
  std::unique_ptr<Channel> channel_;
};

}  // namespace kmcl::devices::ic

#endif  // KMCLD_DEVICES_IC_VSC_H_
