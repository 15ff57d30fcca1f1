// Channel, part 3: packet objects and the send path: the send queue, ring
// writes, transactions and their completions, cancellation, synchronous
// requests. Deliveries and the I/O task are in channel_io.cc.
#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "kmcl_core/bus/partition.h"
#include "kmcl_core/runtime/channel.h"

namespace kmcl {
namespace {

constexpr size_t kPacketHeaderBytes = (sizeof(Packet) + 15) & ~size_t{15};
constexpr uint32_t kPipeHeaderBytes = sizeof(wire::PipeHeader);

}  // namespace

// ---- Packet objects ---------------------------------------------------------------------

uint32_t Channel::SizeofPacket() const {
  MutexLock lock(&mu_);
  return static_cast<uint32_t>(kPacketHeaderBytes) + config_.max_packet_size + kPipeHeaderBytes;
}

Packet* Channel::AllocatePacket() {
  MutexLock lock(&mu_);
  Packet* p;
  const uint32_t capacity = config_.max_packet_size + kPipeHeaderBytes;
  if (!free_packets_.empty() && free_packets_.back()->capacity_ >= capacity) {
    p = free_packets_.back();
    free_packets_.pop_back();
  } else {
    auto memory = std::make_unique<uint8_t[]>(kPacketHeaderBytes + capacity);
    p = new (memory.get()) Packet(this, memory.get() + kPacketHeaderBytes, capacity, false);
    packet_memory_.push_back(std::move(memory));
  }
  p->pointer_ = nullptr;
  p->kmcl_context = nullptr;
  // KMCL's default: free the packet once its send is done.
  p->routine_ = [](Packet& packet, NTSTATUS, std::span<const uint8_t>) {
    packet.channel().FreePacket(&packet).IgnoreError();
  };
  return p;
}

absl::StatusOr<Packet*> Channel::InitializePacket(void* memory, size_t bytes) {
  const uint32_t needed = SizeofPacket();
  if (memory == nullptr || reinterpret_cast<uintptr_t>(memory) % alignof(Packet) != 0) {
    return absl::InvalidArgumentError("packet memory is null or not 8-byte aligned");
  }
  if (bytes < needed) {
    return absl::InvalidArgumentError(absl::StrCat("packet memory of ", bytes,
                                                   " bytes; VmbChannelSizeofPacket is ", needed));
  }
  auto* base = static_cast<uint8_t*>(memory);
  return new (base) Packet(this, base + kPacketHeaderBytes,
                           static_cast<uint32_t>(needed - kPacketHeaderBytes), true);
}

absl::Status Channel::FreePacket(Packet* packet) {
  if (packet == nullptr || packet->magic_ != Packet::kMagic || packet->channel_ != this) {
    return absl::InvalidArgumentError("not a packet of this channel");
  }
  if (packet->in_flight_) {
    return absl::FailedPreconditionError("the packet's send has not completed");
  }
  if (packet->caller_memory_) {
    packet->~Packet();  // the memory is the caller's
    return absl::OkStatus();
  }
  packet->routine_ = nullptr;
  packet->external_.clear();
  MutexLock lock(&mu_);
  free_packets_.push_back(packet);
  return absl::OkStatus();
}

// ---- Sending -------------------------------------------------------------------------------

absl::Status Channel::ValidateSend(Packet& packet, std::span<const uint8_t> buffer,
                                   std::span<const GpaRange> external, uint32_t flags) {
  if (packet.magic_ != Packet::kMagic || packet.channel_ != this) {
    return absl::InvalidArgumentError("not a packet of this channel");
  }
  if ((flags & ~kFormatFlags) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("unknown send flags 0x", absl::Hex(flags)));
  }
  if (packet.in_flight_) return absl::FailedPreconditionError("the packet is already in flight");
  if (!packet.routine_) {
    return absl::FailedPreconditionError("the packet has no completion routine");
  }
  MutexLock lock(&mu_);
  if (fsm_.connection() == ConnectionState::kDisabled) {
    return absl::FailedPreconditionError("sending on a disabled channel");
  }
  if (buffer.size() > config_.max_packet_size) {
    return absl::InvalidArgumentError(absl::StrCat("packet of ", buffer.size(),
                                                   " bytes exceeds the maximum packet size ",
                                                   config_.max_packet_size));
  }
  if (!external.empty()) {
    if (IsHost(role_)) {
      return absl::InvalidArgumentError("external data originates in the guest; a server cannot send it");
    }
    if (pipe_mode()) return absl::InvalidArgumentError("pipe channels carry no external data");
    if (absl::Status s = ValidateGpaRanges(external, partition_->memory().page_count()); !s.ok()) {
      return s;
    }
    if (config_.max_external_bytes != 0 && TotalBytes(external) > config_.max_external_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("external data of ", TotalBytes(external),
                                                     " bytes exceeds the maximum ",
                                                     config_.max_external_bytes));
    }
  }
  if (pipe_mode() && (flags & kFormatFlagWaitForCompletion)) {
    return absl::InvalidArgumentError("pipe channels have no transactions");
  }
  return absl::OkStatus();
}

absl::Status Channel::Send(Packet& packet, std::span<const uint8_t> buffer,
                           std::span<const GpaRange> external, uint32_t flags) {
  if (absl::Status s = ValidateSend(packet, buffer, external, flags); !s.ok()) return s;
  NTSTATUS status = SendInternal(packet, buffer, external, flags, /*must_fit_now=*/false);
  if (status == kStatusDeviceRemoved) {
    return absl::FailedPreconditionError("sending on a disabled channel");
  }
  return FromNtStatus(status, "send");
}

NTSTATUS Channel::SendInternal(Packet& packet, std::span<const uint8_t> buffer,
                               std::span<const GpaRange> external, uint32_t flags,
                               bool must_fit_now) {
  {
    // The state check, the transaction and the queue entry are one step
    // against CancelOutstanding (which sweeps under the same two locks), so
    // a send racing a close is either cancelled or refused, never lost.
    MutexLock s(&send_mu_);
    bool pipe;
    {
      MutexLock lock(&mu_);
      if (fsm_.connection() == ConnectionState::kDisabled) return kStatusDeviceRemoved;
      pipe = pipe_mode();
    }
    uint32_t length = static_cast<uint32_t>(buffer.size());
    if (pipe) {
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
      const bool fits = writer_ != nullptr && send_queue_.empty() &&
                        RingSpaceFor(probe) <= writer_->cached_free_bytes();
      if (!fits) return kStatusBufferOverflow;  // not queued
    }
    {
      MutexLock lock(&mu_);
      // In flight before it becomes visible: its completion may run on the
      // I/O task as soon as mu_ is released.
      packet.in_flight_ = true;
      if (flags & kFormatFlagWaitForCompletion) {
        packet.transaction_id_ = next_transaction_id_++;
        packet.outstanding_since_ = absl::Now();
        outstanding_[packet.transaction_id_] = &packet;
      } else {
        packet.transaction_id_ = 0;
      }
    }
    send_queue_.push_back({&packet});
    if (writer_ == nullptr || send_queue_.size() > 1) stats_.sends_queued++;
  }
  FlushSends();
  return kStatusSuccess;
}

void Channel::FlushSends() {
  std::shared_ptr<RingLink> link;
  bool signal = false;
  bool finished = false;
  {
    MutexLock s(&send_mu_);
    if (writer_ == nullptr) return;
    {
      MutexLock lock(&mu_);
      if (frozen_) return;  // being saved: the queue stays as saved
    }
    while (!send_queue_.empty()) {
      QueuedSend& q = send_queue_.front();
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
            MutexLock lock(&mu_);
            outstanding_.erase(q.packet->transaction_id_);
            finished_sends_.push_back({q.packet, kStatusInvalidParameter});
          }
          send_queue_.pop_front();
          finished = true;
          continue;
        }
        if (writer_->ArmPendingSend(writer_->bytes_needed())) continue;
        stats_.ring_full_events++;
        break;
      }
      if (st == RingStatus::kCorrupt) break;  // the peer broke the ring; sends wait for close
      if (q.packet != nullptr) {
        stats_.packets_sent++;
        stats_.bytes_sent += op.payload.size();
        if (!op.completion_requested) {
          finished_sends_.push_back({q.packet, kStatusSuccess});
          finished = true;
        }
      } else {
        stats_.completions_sent++;
      }
      send_queue_.pop_front();
    }
    if (send_queue_.empty()) writer_->ClearPendingSend();
    signal = writer_->CommitWrite();
    if (signal) link = link_;
  }
  if (signal && link != nullptr) {
    stats_.signals_sent++;
    link->Signal(this);
  }
  if (finished) NotifyIo();  // completion routines run on the I/O task
}

void Channel::RunFinishedSends() {
  std::vector<std::pair<Packet*, NTSTATUS>> done;
  {
    MutexLock s(&send_mu_);
    done.swap(finished_sends_);
  }
  for (auto& [packet, status] : done) CompleteSend(*packet, status, {});
}

void Channel::CompleteSend(Packet& packet, NTSTATUS status, std::span<const uint8_t> completion) {
  packet.in_flight_ = false;
  Packet::CompletionRoutine routine = packet.routine_;  // it may free the packet
  if (routine) routine(packet, status, completion);
}

void Channel::CancelOutstanding(NTSTATUS status) {
  std::vector<std::pair<Packet*, NTSTATUS>> done;
  absl::flat_hash_set<Packet*> seen;
  bool handed_over;
  {
    MutexLock lock(&mu_);
    handed_over = frozen_;  // saved and never thawed: the blob owns them now
  }
  {
    MutexLock s(&send_mu_);  // then mu_: the same order as SendInternal
    for (auto& f : finished_sends_) {
      done.push_back(f);
      seen.insert(f.first);
    }
    finished_sends_.clear();
    for (QueuedSend& q : send_queue_) {
      if (q.packet != nullptr && seen.insert(q.packet).second) done.push_back({q.packet, status});
    }
    send_queue_.clear();
    MutexLock lock(&mu_);
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
  for (auto& [packet, s] : done) CompleteSend(*packet, s, {});
}

NTSTATUS Channel::SendSynchronous(std::span<const uint8_t> buffer,
                                  std::span<const GpaRange> external, uint32_t flags,
                                  std::vector<uint8_t>* completion,
                                  std::optional<absl::Duration> timeout) {
  const bool wait = (flags & kFormatFlagWaitForCompletion) != 0;
  const bool zero_timeout = timeout.has_value() && *timeout <= absl::ZeroDuration();
  {
    MutexLock lock(&mu_);
    if (fsm_.connection() == ConnectionState::kDisabled || stopping_) return kStatusDeviceRemoved;
    if (in_started_callback_ && std::this_thread::get_id() == control_id_.load()) {
      // KMCL: it would never return from EvtVmbChannelStarted.
      return kStatusInvalidDeviceState;
    }
  }
  if (IsHost(role_) && (!zero_timeout || wait)) {
    return kStatusInvalidParameter;  // the root may only send without waiting
  }
  struct SyncState {
    Mutex mu;
    CondVar cv;
    bool done ABSL_GUARDED_BY(mu) = false;
    NTSTATUS status ABSL_GUARDED_BY(mu) = kStatusSuccess;
    std::vector<uint8_t> data ABSL_GUARDED_BY(mu);
  };
  auto state = std::make_shared<SyncState>();
  Packet* packet = AllocatePacket();
  packet->set_completion_routine(
      [state](Packet& p, NTSTATUS status, std::span<const uint8_t> data) {
        {
          MutexLock lock(&state->mu);
          state->done = true;
          state->status = status;
          state->data.assign(data.begin(), data.end());
        }
        state->cv.SignalAll();
        p.channel().FreePacket(&p).IgnoreError();
      });
  if (absl::Status s = ValidateSend(*packet, buffer, external, flags); !s.ok()) {
    FreePacket(packet).IgnoreError();
    return s.code() == absl::StatusCode::kFailedPrecondition ? kStatusDeviceRemoved
                                                             : kStatusInvalidParameter;
  }
  NTSTATUS sent = SendInternal(*packet, buffer, external, flags, zero_timeout);
  if (sent != kStatusSuccess) {
    FreePacket(packet).IgnoreError();
    return sent;  // STATUS_BUFFER_OVERFLOW: did not fit, not queued
  }
  const absl::Time deadline =
      timeout.has_value() && !zero_timeout ? absl::Now() + *timeout : absl::InfiniteFuture();
  MutexLock lock(&state->mu);
  while (!state->done) {
    // A manual executor makes progress only on this thread.
    state->mu.Unlock();
    const bool ran = executors_.RunOneHere();
    state->mu.Lock();
    if (ran) continue;
    if (state->cv.WaitWithDeadline(&state->mu, deadline) && !state->done) {
      // Timed out: take the packet back if it has not completed meanwhile.
      bool reclaimed = false;
      {
        MutexLock s(&send_mu_);
        for (auto it = send_queue_.begin(); it != send_queue_.end(); ++it) {
          if (it->packet == packet) {
            send_queue_.erase(it);
            reclaimed = true;
            break;
          }
        }
      }
      {
        MutexLock l(&mu_);
        if (outstanding_.erase(packet->transaction_id_) != 0) reclaimed = true;
      }
      if (reclaimed) {
        state->mu.Unlock();
        packet->in_flight_ = false;
        FreePacket(packet).IgnoreError();
        state->mu.Lock();
        return kStatusCancelled;
      }
    }
  }
  if (completion != nullptr) *completion = state->data;
  return state->status;
}

}  // namespace kmcl
