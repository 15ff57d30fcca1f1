// devices/ic/vsp.h: an integration service's host side as a KMCL VSP. The
// glue is written only against kmcl_core's KMCL C surface (kmcl_api.h),
// the way a Windows VSP driver is: query KMCL_SERVER_INTERFACE_V1, then
// VmbChannelAllocate, the Init setters (VmbServerChannelInitSetVmbusHandle,
// ...SetTargetInterfaceId with the service's real interface type GUID,
// VmbChannelInitSetMaximumPacketSize, the state-change, process-packet and
// save/restore packet callbacks), VmbChannelEnable, VmbChannelStart.
// The protocol itself is the clock-free state machine of host_services.h;
// this class only feeds it packets and time and sends what it emits.
//
//   auto vsp = IcVsp::Create(IcService::kKvp, partition.vmbus_handle(), {});
//   uint64_t op;
//   vsp->Run([&](IcHostService& s, absl::Time now, IcOutput& out) {
//     op = *static_cast<KvpHost&>(s).Get(kKvpPoolGuest, "key", now, out);
//   });
//   vsp->WaitUntil([&](IcHostService& s) { ... TakeResult(op) ... }, absl::Seconds(5));
//
// Time: the VSP has no thread of its own. Poll() ticks the service
// (heartbeats, timeouts) at options.clock(); the owner calls it
// periodically (the daemon from a timer, tests with a test clock).
//
// Save/restore: Save() pauses the channel, saves KMCL's part
// (VmbChannelSaveBegin/Continue/End, with queued packets through
// EvtVmbChannelSavePacket) and the service's state; Create(..., &saved) on
// the restored partition feeds it back (VmbChannelRestoreFromBuffer,
// EvtVmbChannelRestorePacket + VmbPacketRestore) before VmbChannelEnable,
// so a heartbeat or KVP request in flight continues.
//
// Malformed guest packets: dropped and counted (stats().protocol); what was
// wrong with each goes to options.on_dropped (for a rate-limited log).
// A guest that breaks the ring itself (a corrupt incoming ring, a bad
// read_index on the outgoing one; KmclChannelInitSetPeerErrorCallback):
// counted (stats().peer_errors) and said to options.on_peer_error.
//
// Threading: thread-safe. Packets are handled in EvtVmbChannelProcessPacket
// on the channel's I/O task under a short internal lock (no blocking);
// events go to options.on_event and dropped-packet lines to
// options.on_dropped after that lock is released, from whichever thread
// caused them; options.on_peer_error runs on the I/O task. None of them
// may block or call back into this VSP's Save(), WaitUntil() or destructor. Save() and the destructor block and must
// not be called from KMCL callbacks.
#ifndef KMCLD_DEVICES_IC_VSP_H_
#define KMCLD_DEVICES_IC_VSP_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "devices/ic/host_services.h"
#include "kmcl_core/base/mutex.h"
#include "kmcl_core/kmcl/kmcl_api.h"

namespace kmcl::devices::ic {

struct VspOptions {
  HostOptions host;
  // The offer's interface instance; nil: a random one.
  Guid instance;
  std::function<absl::Time()> clock = [] { return absl::Now(); };
  std::function<void(const IcEvent&)> on_event;
  // Each guest packet dropped as malformed: what was wrong with it
  // (IcOutput::dropped).
  std::function<void(const std::string&)> on_dropped;
  // Each time the guest breaks the ring protocol: what was wrong
  // ("incoming ring: ring corrupt: ...").
  std::function<void(const std::string&)> on_peer_error;
};

struct VspStats {
  IcHostCounters protocol;
  uint64_t packets_received = 0;
  uint64_t packets_sent = 0;
  // The guest broke the ring protocol: counted after on_peer_error returned.
  uint64_t peer_errors = 0;
  uint64_t send_failures = 0;  // VmbPacketSend refused (NTSTATUS logged in last_send_error)
  NTSTATUS last_send_error = STATUS_SUCCESS;
};

class IcVsp {
 public:
  // Offers `service` to the guest of the partition whose VMBus handle is
  // `vmbus_handle` (Partition::vmbus_handle()) and starts the channel.
  // With `saved` (from Save()), restores the channel and the service first.
  // The KMCL NTSTATUS of a failing step is in the error message.
  static absl::StatusOr<std::unique_ptr<IcVsp>> Create(IcService service, uint64_t vmbus_handle,
                                                       VspOptions options, const std::string* saved = nullptr);
  // VmbChannelDisable (rescinds the offer) and VmbChannelCleanup.
  ~IcVsp();
  IcVsp(const IcVsp&) = delete;
  IcVsp& operator=(const IcVsp&) = delete;

  IcService service() const { return service_; }
  // Runs `fn` on the service under the lock with the current time, then
  // sends what it emitted and reports its events.
  void Run(const std::function<void(IcHostService&, absl::Time, IcOutput&)>& fn);
  // Ticks the service at clock().
  void Poll();
  // Waits until `pred` holds (checked under the lock after each change,
  // once that change's events have gone to options.on_event); false if
  // `timeout` passed first.
  bool WaitUntil(const std::function<bool(IcHostService&)>& pred, absl::Duration timeout);
  // The same for the counters other than stats().protocol (packets,
  // peer_errors): waits until `pred` holds, false if `timeout` passed.
  bool WaitForStats(const std::function<bool(const VspStats&)>& pred, absl::Duration timeout);
  VspStats stats() const;

  // The offer's interface instance (VmbChannelGetInterfaceInstance): with
  // the interface type, what names this VSP's channel in the partition.
  Guid instance() const;

  // Pauses the channel and saves it with the service's state, atomically
  // with respect to Run() and Poll(): the blob never holds a request whose
  // packet is not in the saved ring. The VSP stays paused: destroy it and
  // Create a new one from the blob on the restored partition, or Resume().
  absl::StatusOr<std::string> Save();
  // After Save(): the channel runs here again (a checkpoint, or a migration
  // that failed); what it queued while frozen is sent. Poll() does not tick
  // the service from Save() to here, and the heartbeat gives the guest its
  // timeout afresh: a long save is not an unresponsive guest.
  void Resume();

 private:
  IcVsp(IcService service, VspOptions options);
  absl::Status Init(uint64_t vmbus_handle, const std::string* saved);
  void SendLocked(std::vector<Bytes>& packets) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Emit(const IcOutput& out);
  static IcVsp* From(VMBCHANNEL channel);
  static EVT_VMB_CHANNEL_PROCESS_PACKET ProcessPacket;
  static EVT_VMB_CHANNEL_POST_STARTED PostStarted;
  static EVT_VMB_CHANNEL_CLOSED Closed;
  static EVT_VMB_CHANNEL_SAVE_PACKET SavePacket;
  static EVT_VMB_CHANNEL_RESTORE_PACKET RestorePacket;
  static EVT_KMCL_CHANNEL_PEER_ERROR PeerError;

  const IcService service_;
  VspOptions options_;
  KMCL_SERVER_INTERFACE_V1 kmcl_ = {};
  VMBCHANNEL channel_ = nullptr;
  mutable Mutex mu_;
  CondVar changed_;
  std::unique_ptr<IcHostService> host_ ABSL_GUARDED_BY(mu_);
  VspStats stats_ ABSL_GUARDED_BY(mu_);
  int emitting_ ABSL_GUARDED_BY(mu_) = 0;  // Runs whose events are not out yet
  bool frozen_ ABSL_GUARDED_BY(mu_) = false;  // from Save() to Resume(): Poll does not tick
};

}  // namespace kmcl::devices::ic

#endif  // KMCLD_DEVICES_IC_VSP_H_
