// kmcl_core/runtime/send_path.h: a channel endpoint's outgoing side: the send
// queue, the outgoing ring's writer, the transactions waiting for the peer's
// completion, and the ring interrupt to the peer.
//
// The Channel owns one SendPath and decides what may be sent (its
// ValidateSend); the SendPath orders the sends, writes them into the ring
// when there is room, remembers the transactions and ends them: with the
// peer's completion (TakeOutstanding), once written (sends without
// kFormatFlagWaitForCompletion: RunFinished), or cancelled (CancelAll).
//
//   SendPath send(&endpoint, {.gate = ..., .finished = ...});
//   send.Attach(ring.memory(), link);      // the ring is up
//   send.Queue(packet, bytes, {}, flags, /*must_fit_now=*/false);
//   send.RunFinished();                    // on the I/O task: routines run
//
// Threading: every method may be called from any thread. One lock guards
// the queue, the writer and the transactions; completion routines run
// outside it. Hooks::gate runs with that lock held, so the channel's own
// lock is taken after it (Channel declares mu_ ABSL_ACQUIRED_AFTER it) and
// the channel must not call into its SendPath while holding its own lock.
#ifndef KMCLD_KMCL_CORE_RUNTIME_SEND_PATH_H_
#define KMCLD_KMCL_CORE_RUNTIME_SEND_PATH_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "kmcl_core/base/mutex.h"
#include "kmcl_core/base/ntstatus.h"
#include "kmcl_core/bus/bus_endpoint.h"
#include "kmcl_core/ring/ring_buffer.h"
#include "kmcl_core/wire/gpa_range.h"

namespace kmcl {

class Packet;
struct RingLink;

// A transaction waiting for the peer's completion.
struct OutstandingTransaction {
  uint64_t transaction_id = 0;
  uint32_t payload_bytes = 0;  // in-band bytes as sent
  absl::Duration age;          // since it was sent (or restored)
};

class SendPath {
 public:
  // Whether the channel takes sends now, and how it frames them.
  struct Gate {
    bool open = false;  // false: Queue answers STATUS_DEVICE_REMOVED
    bool pipe = false;  // pipe framing (wire::PipeHeader) before the payload
  };
  struct Hooks {
    // Asked by Queue with this path's lock held (see the threading note).
    std::function<Gate()> gate;
    // Sends have finished without a peer completion (written, or too big
    // for the ring), or the peer broke the ring: call RunFinished and
    // TakePeerError soon. Called without the lock.
    std::function<void()> finished;
  };
  // Relaxed counters, for diagnostics.
  struct Counters {
    std::atomic<uint64_t> packets_sent{0}, bytes_sent{0}, completions_sent{0}, signals_sent{0},
        sends_queued{0}, ring_full_events{0};
    // The peer's read_index was invalid (at most 1: the writer stays poisoned).
    std::atomic<uint64_t> corrupt_rings{0};
  };
  struct Snapshot {
    uint32_t queued = 0;
    uint32_t outstanding_count = 0;
    std::vector<OutstandingTransaction> outstanding;  // unordered, all of them
    std::optional<RingSnapshot> ring;                 // while attached
  };
  // What Save keeps of the outgoing side.
  struct Saved {
    std::vector<std::pair<Packet*, bool>> packets;  // (packet, sent): sent ones first, then queued
    std::vector<std::pair<uint64_t, std::vector<uint8_t>>> completions;  // queued, in order
    uint64_t next_transaction_id = 1;
  };

  // `self` is the endpoint the peer's RingLink knows this side by.
  SendPath(const BusEndpoint* self, Hooks hooks);
  SendPath(const SendPath&) = delete;
  SendPath& operator=(const SendPath&) = delete;

  // ---- The ring ----
  // Writes go to `outgoing` from now on; `link` (may be null) carries the
  // interrupts. Queued sends are written at the next Flush.
  void Attach(RingMemory outgoing, std::shared_ptr<RingLink> link);
  // Stops writing (the ring is going away); returns the link, for the
  // caller to detach from. Queued sends stay queued.
  std::shared_ptr<RingLink> Detach();
  bool attached() const;

  // ---- Sending ----
  // Copies `buffer` (framed if the gate says pipe) into `packet`, makes it a
  // transaction if `flags` has kFormatFlagWaitForCompletion, queues it and
  // flushes. STATUS_DEVICE_REMOVED if the gate is closed; with
  // `must_fit_now`, STATUS_BUFFER_OVERFLOW (nothing queued) unless the ring
  // is attached, nothing is queued before it and it has room now.
  NTSTATUS Queue(Packet& packet, std::span<const uint8_t> buffer,
                 std::span<const GpaRange> external, uint32_t flags, bool must_fit_now);
  // Queues a completion packet for an incoming transaction (not flushed).
  void QueueCompletion(uint64_t transaction_id, std::span<const uint8_t> payload);
  // Writes what fits into the ring, in order, and interrupts the peer if it
  // asked. Nothing while frozen or detached.
  void Flush();
  // Runs the completion routines of sends that finished in Flush.
  void RunFinished();
  // What was wrong with the outgoing ring, once: Flush found the peer's
  // read_index invalid (counted in counters().corrupt_rings); sends wait
  // for the channel to close. nullopt otherwise and after the first call.
  std::optional<std::string> TakePeerError();
  // The peer completed `transaction_id`: the packet (no longer outstanding)
  // and when it was sent, or nullptr for an unknown id.
  Packet* TakeOutstanding(uint64_t transaction_id, absl::Time* sent);
  // Takes `packet` back before it completed (a timed-out synchronous send):
  // true if it was still queued or outstanding. The caller owns it again.
  bool Reclaim(Packet& packet);
  // Ends every send: finished, queued and outstanding. Their routines run
  // with `status` (finished ones with their own), unless the path is
  // frozen: then the saved blob owns them and they end silently.
  void CancelAll(NTSTATUS status);
  // Interrupts the peer (after the incoming side consumed packets).
  void SignalPeer();
  // Marks `packet` done and runs its routine (which may free it).
  static void Complete(Packet& packet, NTSTATUS status, std::span<const uint8_t> completion);

  // ---- Save and restore ----
  // A frozen path writes nothing to the ring, so the ring saved with the
  // partition matches the saved queue. Thaw resumes and flushes.
  void Freeze();
  void Thaw();
  bool frozen() const;
  Saved Save() const;
  // Puts a restored packet back: sent (waiting for its completion) or
  // queued. INVALID_ARGUMENT for a missing or duplicated transaction id.
  absl::Status Restore(Packet& packet, bool sent);
  void RestoreNextTransactionId(uint64_t next);

  Snapshot TakeSnapshot() const;
  const Counters& counters() const { return counters_; }

 private:
  struct QueuedSend {
    Packet* packet = nullptr;     // a send, or
    uint64_t completion_tid = 0;  // a completion packet for a delivery
    std::vector<uint8_t> completion;
  };

  const BusEndpoint* const self_;
  const Hooks hooks_;
  mutable Mutex mu_;
  std::unique_ptr<RingWriter> writer_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<RingLink> link_ ABSL_GUARDED_BY(mu_);
  std::deque<QueuedSend> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<Packet*, NTSTATUS>> finished_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Packet*> outstanding_ ABSL_GUARDED_BY(mu_);
  uint64_t next_transaction_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool frozen_ ABSL_GUARDED_BY(mu_) = false;
  bool corrupt_ ABSL_GUARDED_BY(mu_) = false;  // the writer found the ring corrupt
  std::optional<std::string> peer_error_ ABSL_GUARDED_BY(mu_);  // until TakePeerError
  Counters counters_;

  friend class Channel;       // names mu_ in its lock-order annotation
  friend class DeliveryPath;  // likewise
};

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_RUNTIME_SEND_PATH_H_
