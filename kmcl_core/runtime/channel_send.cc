// Channel, part 3: packet objects, what may be sent, and synchronous
// requests; the queue, ring writes and transactions are the SendPath's
// (send_path.cc). Deliveries and the I/O task are in channel_io.cc.
#include <algorithm>
#include <cstring>
#include <utility>

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
  NTSTATUS status = send_.Queue(packet, buffer, external, flags, /*must_fit_now=*/false);
  if (status == kStatusDeviceRemoved) {
    return absl::FailedPreconditionError("sending on a disabled channel");
  }
  return FromNtStatus(status, "send");
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
  NTSTATUS sent = send_.Queue(*packet, buffer, external, flags, zero_timeout);
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
      const bool reclaimed = send_.Reclaim(*packet);
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
