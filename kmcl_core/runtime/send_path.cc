#include "kmcl_core/runtime/send_path.h"

#include <cstring>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kmcl_core/bus/partition.h"
#include "kmcl_core/runtime/channel.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl {
namespace {

constexpr uint32_t kPipeHeaderBytes = sizeof(wire::PipeHeader);

}  // namespace

SendPath::SendPath(const BusEndpoint* self, Hooks hooks) : self_(self), hooks_(std::move(hooks)) {}

// ---- The ring -----------------------------------------------------------------------------

void SendPath::Attach(RingMemory outgoing, std::shared_ptr<RingLink> link) {
  MutexLock lock(&mu_);
  writer_ = std::make_unique<RingWriter>(outgoing);
  corrupt_ = false;  // a new ring: its first corruption is reported again
  link_ = std::move(link);
}

std::shared_ptr<RingLink> SendPath::Detach() {
  MutexLock lock(&mu_);
  writer_.reset();
  return std::move(link_);
}

bool SendPath::attached() const {
  MutexLock lock(&mu_);
  return writer_ != nullptr;
}

// ---- Sending ------------------------------------------------------------------------------

NTSTATUS SendPath::Queue(Packet& packet, std::span<const uint8_t> buffer,
                         std::span<const GpaRange> external, uint32_t flags, bool must_fit_now) {
  {
    // The gate, the transaction and the queue entry are one step against
    // CancelAll (which sweeps under the same lock), so a send racing a
    // close is either cancelled or refused, never lost.
    MutexLock lock(&mu_);
    const Gate gate = hooks_.gate();
    if (!gate.open) return kStatusDeviceRemoved;
    uint32_t length = static_cast<uint32_t>(buffer.size());
    if (gate.pipe) {
      wire::PipeHeader h{static_cast<uint32_t>(wire::PipePacketType::kData), length};
      std::memcpy(packet.storage_, &h, sizeof(h));
      if (length != 0) std::memcpy(packet.storage_ + sizeof(h), buffer.data(), length);
      length += kPipeHeaderBytes;
    } else if (length != 0) {
      std::memcpy(packet.storage_, buffer.data(), length);
    }
    packet.length_ = length;
    packet.flags_ = flags;
    packet.external_.assign(external.begin(), external.end());
    if (must_fit_now) {
      OutgoingPacket probe;
      probe.payload = {packet.storage_, packet.length_};
      probe.gpa_ranges = packet.external_;
      if (!probe.gpa_ranges.empty()) probe.type = wire::PacketType::kDataUsingGpaDirect;
      const bool fits = writer_ != nullptr && queue_.empty() &&
                        RingSpaceFor(probe) <= writer_->cached_free_bytes();
      if (!fits) return kStatusBufferOverflow;  // not queued
    }
    // In flight before it becomes visible: its completion may run on
    // another thread as soon as the lock is released.
    packet.in_flight_ = true;
    if (flags & kFormatFlagWaitForCompletion) {
      packet.transaction_id_ = next_transaction_id_++;
      packet.outstanding_since_ = absl::Now();
      outstanding_[packet.transaction_id_] = &packet;
    } else {
      packet.transaction_id_ = 0;
    }
    queue_.push_back({&packet});
    if (writer_ == nullptr || queue_.size() > 1) counters_.sends_queued++;
  }
  Flush();
  return kStatusSuccess;
}

void SendPath::QueueCompletion(uint64_t transaction_id, std::span<const uint8_t> payload) {
  MutexLock lock(&mu_);
  queue_.push_back({nullptr, transaction_id, std::vector<uint8_t>(payload.begin(), payload.end())});
}

void SendPath::Flush() {
  std::shared_ptr<RingLink> link;
  bool signal = false;
  bool finished = false;
  {
    MutexLock lock(&mu_);
    if (writer_ == nullptr || frozen_) return;  // frozen: the queue stays as saved
    while (!queue_.empty()) {
      QueuedSend& q = queue_.front();
      OutgoingPacket op;
      if (q.packet != nullptr) {
        op.payload = {q.packet->storage_, q.packet->length_};
        op.transaction_id = q.packet->transaction_id_;
        op.completion_requested = (q.packet->flags_ & kFormatFlagWaitForCompletion) != 0;
        if (!q.packet->external_.empty()) {
          op.type = wire::PacketType::kDataUsingGpaDirect;
          op.gpa_ranges = q.packet->external_;
        }
      } else {
        op.type = wire::PacketType::kCompletion;
        op.transaction_id = q.completion_tid;
        op.payload = q.completion;
      }
      RingStatus st = writer_->Write(op);
      if (st == RingStatus::kFull) {
        if (writer_->bytes_needed() > writer_->memory().data_size() - 8) {
          // Can never fit this ring: fail it rather than block the queue.
          if (q.packet != nullptr) {
            outstanding_.erase(q.packet->transaction_id_);
            finished_.push_back({q.packet, kStatusInvalidParameter});
          }
          queue_.pop_front();
          finished = true;
          continue;
        }
        if (writer_->ArmPendingSend(writer_->bytes_needed())) continue;
        counters_.ring_full_events++;
        break;
      }
      if (st == RingStatus::kCorrupt) {  // the peer broke the ring; sends wait for close
        if (!corrupt_) {
          corrupt_ = true;
          counters_.corrupt_rings++;
          peer_error_ = absl::StrCat("outgoing ring: ", writer_->corruption().message());
          finished = true;  // the I/O task reports it (TakePeerError)
        }
        break;
      }
      if (q.packet != nullptr) {
        counters_.packets_sent++;
        counters_.bytes_sent += op.payload.size();
        if (!op.completion_requested) {
          finished_.push_back({q.packet, kStatusSuccess});
          finished = true;
        }
      } else {
        counters_.completions_sent++;
      }
      queue_.pop_front();
    }
    if (queue_.empty()) writer_->ClearPendingSend();
    signal = writer_->CommitWrite();
    if (signal) link = link_;
  }
  if (signal && link != nullptr) {
    counters_.signals_sent++;
    link->Signal(self_);
  }
  if (finished && hooks_.finished) hooks_.finished();
}

void SendPath::RunFinished() {
  std::vector<std::pair<Packet*, NTSTATUS>> done;
  {
    MutexLock lock(&mu_);
    done.swap(finished_);
  }
  for (auto& [packet, status] : done) Complete(*packet, status, {});
}

std::optional<std::string> SendPath::TakePeerError() {
  MutexLock lock(&mu_);
  return std::exchange(peer_error_, std::nullopt);
}

Packet* SendPath::TakeOutstanding(uint64_t transaction_id, absl::Time* sent) {
  MutexLock lock(&mu_);
  auto it = outstanding_.find(transaction_id);
  if (it == outstanding_.end()) return nullptr;
  Packet* packet = it->second;
  if (sent != nullptr) *sent = packet->outstanding_since_;
  outstanding_.erase(it);
  return packet;
}

bool SendPath::Reclaim(Packet& packet) {
  MutexLock lock(&mu_);
  bool reclaimed = false;
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it->packet == &packet) {
      queue_.erase(it);
      reclaimed = true;
      break;
    }
  }
  if (packet.transaction_id_ != 0 && outstanding_.erase(packet.transaction_id_) != 0) {
    reclaimed = true;
  }
  return reclaimed;
}

void SendPath::CancelAll(NTSTATUS status) {
  std::vector<std::pair<Packet*, NTSTATUS>> done;
  absl::flat_hash_set<Packet*> seen;
  bool handed_over;
  {
    MutexLock lock(&mu_);
    handed_over = frozen_;  // saved and never thawed: the blob owns them now
    for (auto& f : finished_) {
      done.push_back(f);
      seen.insert(f.first);
    }
    finished_.clear();
    for (QueuedSend& q : queue_) {
      if (q.packet != nullptr && seen.insert(q.packet).second) done.push_back({q.packet, status});
    }
    queue_.clear();
    for (auto& [tid, packet] : outstanding_) {
      if (seen.insert(packet).second) done.push_back({packet, status});
    }
    outstanding_.clear();
  }
  if (handed_over) {
    // Their transactions live on in the saved blob and complete in the
    // restored channel; here they end silently.
    for (auto& [packet, s] : done) packet->in_flight_ = false;
    return;
  }
  for (auto& [packet, s] : done) Complete(*packet, s, {});
}

void SendPath::SignalPeer() {
  std::shared_ptr<RingLink> link;
  {
    MutexLock lock(&mu_);
    link = link_;
  }
  if (link != nullptr) {
    counters_.signals_sent++;
    link->Signal(self_);
  }
}

void SendPath::Complete(Packet& packet, NTSTATUS status, std::span<const uint8_t> completion) {
  packet.in_flight_ = false;
  Packet::CompletionRoutine routine = packet.routine_;  // it may free the packet
  if (routine) routine(packet, status, completion);
}

// ---- Save and restore ---------------------------------------------------------------------

void SendPath::Freeze() {
  MutexLock lock(&mu_);
  frozen_ = true;
}

void SendPath::Thaw() {
  {
    MutexLock lock(&mu_);
    frozen_ = false;
  }
  Flush();
}

bool SendPath::frozen() const {
  MutexLock lock(&mu_);
  return frozen_;
}

SendPath::Saved SendPath::Save() const {
  Saved out;
  MutexLock lock(&mu_);
  out.next_transaction_id = next_transaction_id_;
  // Sent and awaiting completion, then still queued, in order.
  for (const auto& [tid, p] : outstanding_) {
    bool queued = false;
    for (const QueuedSend& q : queue_) queued |= q.packet == p;
    if (!queued) out.packets.push_back({p, true});
  }
  for (const QueuedSend& q : queue_) {
    if (q.packet != nullptr) {
      out.packets.push_back({q.packet, false});
    } else {
      out.completions.push_back({q.completion_tid, q.completion});
    }
  }
  return out;
}

absl::Status SendPath::Restore(Packet& packet, bool sent) {
  MutexLock lock(&mu_);
  if (packet.flags_ & kFormatFlagWaitForCompletion) {
    if (packet.transaction_id_ == 0 || outstanding_.contains(packet.transaction_id_)) {
      return absl::InvalidArgumentError("saved transaction id is missing or duplicated");
    }
    packet.outstanding_since_ = absl::Now();  // its age before the save is not saved
    outstanding_[packet.transaction_id_] = &packet;
    next_transaction_id_ = std::max(next_transaction_id_, packet.transaction_id_ + 1);
  }
  packet.in_flight_ = true;
  // A sent transaction waits for its completion; an unsent packet is queued.
  if (!sent) queue_.push_back({&packet});
  return absl::OkStatus();
}

void SendPath::RestoreNextTransactionId(uint64_t next) {
  MutexLock lock(&mu_);
  next_transaction_id_ = std::max(next, next_transaction_id_);
}

SendPath::Snapshot SendPath::TakeSnapshot() const {
  Snapshot s;
  MutexLock lock(&mu_);
  s.queued = static_cast<uint32_t>(queue_.size());
  s.outstanding_count = static_cast<uint32_t>(outstanding_.size());
  const absl::Time now = absl::Now();
  for (const auto& [id, packet] : outstanding_) {
    s.outstanding.push_back({id, packet->length_, now - packet->outstanding_since_});
  }
  if (writer_ != nullptr) s.ring = SnapshotRing(writer_->memory());
  return s;
}

}  // namespace kmcl
