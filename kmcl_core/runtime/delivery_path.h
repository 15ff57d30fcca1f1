// kmcl_core/runtime/delivery_path.h: a channel endpoint's incoming side: the
// incoming ring's reader, the deliveries (VMBPACKETCOMPLETION) handed to
// ProcessPacket until the driver completes them, the transaction quota,
// redelivery after a restore, and what the peer got wrong on the way in.
//
// The Channel owns one DeliveryPath and decides when packets flow (Start and
// Stop follow its state machine); the DeliveryPath reads the ring in place,
// parses pipe frames, hands out deliveries and takes them back: Complete
// queues the completion packet on the SendPath, Fail stops the queue.
// Completion packets from the peer end the SendPath's transactions.
//
//   DeliveryPath in(&channel, &send, {.process_packet = ..., .defer = ...});
//   in.Attach(ring.memory(), {.pipe = false, .context_bytes = 0});
//   in.Start();                               // incoming on
//   in.Drain();                               // on the I/O task
//   in.Complete(delivery, reply, /*send_completion=*/true);
//
// Threading: Drain runs on one thread at a time (the channel's I/O task)
// and holds the drain lock across the hooks it calls; Attach and Detach take
// it too, so Detach waits for a drain in progress. Deliver runs on one
// thread per delivery (the drain's, or the control task's for a deferred
// one). Every other method may be called from any thread, hooks included:
// it takes only the bookkeeping lock, a leaf (nothing is called while it
// is held), so the channel may ask delivered() and idle() under its own
// lock. Lock order: drain lock, then the send path's lock (ProcessPacket
// sends and completes), then the channel's mu_, then the bookkeeping lock
// (stated with ABSL_ACQUIRED_BEFORE/AFTER here and in channel.h). Hooks run
// without the bookkeeping lock.
#ifndef KMCLD_KMCL_CORE_RUNTIME_DELIVERY_PATH_H_
#define KMCLD_KMCL_CORE_RUNTIME_DELIVERY_PATH_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kmcl_core/base/mutex.h"
#include "kmcl_core/memory/guest_memory.h"
#include "kmcl_core/ring/ring_buffer.h"
#include "kmcl_core/runtime/send_path.h"
#include "kmcl_core/wire/gpa_range.h"

namespace kmcl {

class Channel;

// ProcessPacket's flags (vmbuskernelmodeclientlibapi.h).
inline constexpr uint32_t kProcessPacketFlagExternalData = 0x1;

// Upper bounds (inclusive, nanoseconds) of the completion-latency buckets:
// 10 us to 10 s in 1-2.5-5 steps.
inline constexpr std::array<uint64_t, 19> kCompletionLatencyBoundsNs = {
    10'000,      25'000,      50'000,      100'000,       250'000,       500'000,      1'000'000,
    2'500'000,   5'000'000,   10'000'000,  25'000'000,    50'000'000,    100'000'000,  250'000'000,
    500'000'000, 1'000'000'000, 2'500'000'000, 5'000'000'000, 10'000'000'000};

// An incoming packet as delivered to ProcessPacket (VMBPACKETCOMPLETION).
// Valid until Complete (or Fail); owned by the channel's DeliveryPath.
class Delivery {
 public:
  Channel& channel() const { return *channel_; }
  std::span<const uint8_t> payload() const { return payload_; }
  bool completion_requested() const { return completion_requested_; }
  bool has_external_data() const { return !external_.empty(); }
  const std::vector<GpaRange>& external_ranges() const { return external_; }
  uint64_t transaction_id() const { return transaction_id_; }
  std::span<uint8_t> client_context() { return context_; }

  static constexpr uint32_t kMagic = 0x504D4356;  // "VCMP"
  uint32_t magic() const { return magic_; }

 private:
  friend class Channel;
  friend class DeliveryPath;
  uint32_t magic_ = kMagic;
  Channel* channel_ = nullptr;
  std::vector<uint8_t> payload_;
  std::vector<GpaRange> external_;
  std::vector<uint8_t> context_;
  uint64_t transaction_id_ = 0;
  bool completion_requested_ = false;
  // Guarded by the DeliveryPath's bookkeeping lock.
  bool in_callback_ = false;  // ProcessPacket is running for it now
  bool deferred_ = false;
  bool completed_ = false;
  bool retired_ = false;  // Retire ran: its quota slot is back
  bool passive_ = false;  // delivered (again) at passive level
  bool pooled_ = false;   // in the free list
  std::optional<GuestView> external_view_;  // GetExternalData mapping
};

class DeliveryPath {
 public:
  struct Hooks {
    // ProcessPacket for `delivery`, `flags` kProcessPacketFlagExternalData
    // or 0. On Deliver's thread (inside Drain, the drain lock held; or the
    // control task for a deferred delivery).
    std::function<void(Delivery&, std::span<const uint8_t> data, uint32_t flags)> process_packet;
    // ProcessingComplete: a Drain handed out `packets` (redeliveries and
    // deferred ones included). Inside Drain.
    std::function<void(uint32_t packets)> processing_complete;
    // Run Deliver(delivery) at passive level (a packet read while incoming
    // is at passive, or deferred by its ProcessPacket).
    std::function<void(Delivery&)> defer;
    // A delivery was retired: its quota slot is free (a stalled queue goes
    // on at the next Drain) and delivered() dropped.
    std::function<void()> retired;
    // A Drain ended: idle() may have turned true.
    std::function<void()> drained;
  };
  // Fixed while the ring is attached.
  struct Settings {
    bool pipe = false;           // wire::PipeHeader before every data payload
    uint32_t context_bytes = 0;  // Delivery::client_context size
  };
  // Relaxed counters, for diagnostics.
  struct Counters {
    std::atomic<uint64_t> packets_received{0}, bytes_received{0}, completions_received{0},
        quota_stalls{0}, corrupt_packets{0};
    // Latencies of the send path's transactions, ended here by the peer's
    // completions: buckets as kCompletionLatencyBoundsNs, then above all.
    std::array<std::atomic<uint64_t>, kCompletionLatencyBoundsNs.size() + 1> latency_buckets{};
    std::atomic<uint64_t> latency_sum_ns{0};
    void RecordLatency(int64_t ns);
  };
  struct Snapshot {
    uint32_t delivered = 0;  // handed out, not yet completed
    uint32_t quota = 0;
    std::string corruption;           // the incoming ring's, "" if none
    std::optional<RingSnapshot> ring;  // while attached
  };
  // A delivery handed out and not completed, as Save keeps it.
  struct SavedDelivery {
    uint64_t transaction_id = 0;
    std::vector<uint8_t> payload;
    std::vector<GpaRange> external;
    bool completion_requested = false;
  };

  // `owner` is what Delivery::channel() returns (null in tests); `send`
  // carries completion packets and interrupts to the peer.
  DeliveryPath(Channel* owner, SendPath* send, Hooks hooks);
  DeliveryPath(const DeliveryPath&) = delete;
  DeliveryPath& operator=(const DeliveryPath&) = delete;

  // ---- The ring ----
  // Reads `incoming` from now on. Waits for a Drain in progress.
  void Attach(RingMemory incoming, Settings settings);
  // Stops reading (the ring is going away). Waits for a Drain in progress.
  void Detach();

  // ---- Running ----
  // Incoming on: Drain hands out packets again (also after a Fail or a
  // corrupt ring; a corrupt reader stays corrupt).
  void Start();
  // Incoming off: Drain stops before the next packet. Wait for idle().
  void Stop();
  // No Drain is handing out packets.
  bool idle() const;
  // Deliveries handed out and not completed.
  uint32_t delivered() const;
  // Forgets the incoming ring's corruption and a Fail (Enable).
  void ClearErrors();
  // With incoming on and the ring attached: redelivers restored deliveries,
  // then reads packets in place until the ring is empty, the quota is
  // reached, incoming goes off or the ring is corrupt, and publishes the
  // read index (interrupting the peer if it waits for room). Completion
  // packets end the send path's transactions.
  void Drain();
  // Runs process_packet for `delivery` (see Hooks::defer).
  void Deliver(Delivery& delivery);

  // ---- Completing ----
  // The driver is done with `delivery`: queues the completion packet if the
  // peer asked for one and `send_completion`, and retires it. False (and
  // nothing done) if it was completed before.
  bool Complete(Delivery& delivery, std::span<const uint8_t> completion, bool send_completion);
  // Retires `delivery` without a completion and stops incoming until the
  // next Start. False if it was completed before.
  bool Fail(Delivery& delivery);
  // From its ProcessPacket only: `delivery` goes to passive level when that
  // returns. FAILED_PRECONDITION otherwise.
  absl::Status Defer(Delivery& delivery);
  // 0: no limit. A lower quota does not stop deliveries handed out already;
  // a higher one does not restart a stalled queue (a completion does).
  void SetQuota(uint32_t quota);
  uint32_t quota() const;
  void SetAtPassive(bool passive);
  // What the peer got wrong since the last call, oldest first: a corrupt
  // incoming ring (once; incoming stops) or a malformed pipe frame (the
  // packet is dropped, the queue goes on). Each also counts in
  // counters().corrupt_packets.
  std::vector<std::string> TakePeerErrors();

  // ---- Save and restore ----
  // The deliveries handed out and not completed.
  std::vector<SavedDelivery> Save() const;
  // Hands `saved` out again, first thing at the next Drain; they count in
  // delivered() from now.
  void Restore(const std::vector<SavedDelivery>& saved, uint32_t context_bytes);
  // Forgets restored deliveries not yet handed out (a new channel instance).
  void DropRestored();

  Snapshot TakeSnapshot() const;
  const Counters& counters() const { return counters_; }

 private:
  Delivery* TakeDeliveryLocked(uint32_t context_bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FreeLocked(Delivery& d) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Retire(Delivery& d);
  // Ends the send path's transaction `transaction_id` with `payload`.
  void EndTransaction(uint64_t transaction_id, std::span<const uint8_t> payload);

  Channel* const owner_;
  SendPath* const send_;
  const Hooks hooks_;
  // Held by Drain throughout, and by Attach/Detach.
  Mutex drain_mu_ ABSL_ACQUIRED_BEFORE(send_->mu_, mu_);
  std::unique_ptr<RingReader> reader_ ABSL_GUARDED_BY(drain_mu_);
  IncomingPacket packet_ ABSL_GUARDED_BY(drain_mu_);          // reused across reads
  std::vector<uint8_t> completion_ ABSL_GUARDED_BY(drain_mu_);  // a completion's bytes, copied

  mutable Mutex mu_;  // bookkeeping: a leaf
  std::optional<RingMemory> memory_ ABSL_GUARDED_BY(mu_);  // while attached
  Settings settings_ ABSL_GUARDED_BY(mu_);
  bool on_ ABSL_GUARDED_BY(mu_) = false;
  bool failed_ ABSL_GUARDED_BY(mu_) = false;    // VmbChannelPacketFail: until Start
  // The incoming ring broke: nothing more is read from it (Start does not
  // undo it, so it is reported once) until Attach brings a new ring.
  bool ring_corrupt_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;  // Drain is past its checks
  bool at_passive_ ABSL_GUARDED_BY(mu_) = false;
  uint32_t quota_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t delivered_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::unique_ptr<Delivery>> deliveries_ ABSL_GUARDED_BY(mu_);  // all, owned
  std::vector<Delivery*> free_ ABSL_GUARDED_BY(mu_);
  std::deque<Delivery*> redeliver_ ABSL_GUARDED_BY(mu_);  // restored, not handed out yet
  std::string corruption_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> peer_errors_ ABSL_GUARDED_BY(mu_);  // not yet taken
  Counters counters_;

  friend class Channel;  // names mu_ in its lock-order annotation
};

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_RUNTIME_DELIVERY_PATH_H_
