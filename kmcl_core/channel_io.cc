// Channel packets and the I/O thread: packet objects, sends and the send
// queue, transactions and completions, deliveries and the transaction
// quota, the ring interrupts between the two endpoints.
#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "kmcl_core/channel.h"
#include "kmcl_core/partition.h"
#include "kmcl_core/pipe_framing.h"

namespace kmcl {
namespace {

constexpr size_t kPacketHeaderBytes = (sizeof(Packet) + 15) & ~size_t{15};
constexpr uint32_t kPipeHeaderBytes = sizeof(wire::PipeHeader);
constexpr int kCommitEvery = 16;

}  // namespace

// ---- Packet objects ---------------------------------------------------------------------

uint32_t Channel::SizeofPacket() const {
  MutexLock lock(&mu_);
  return static_cast<uint32_t>(kPacketHeaderBytes) + max_packet_size_ + kPipeHeaderBytes;
}

Packet* Channel::AllocatePacket() {
  MutexLock lock(&mu_);
  Packet* p;
  const uint32_t capacity = max_packet_size_ + kPipeHeaderBytes;
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
  if (buffer.size() > max_packet_size_) {
    return absl::InvalidArgumentError(absl::StrCat("packet of ", buffer.size(),
                                                   " bytes exceeds the maximum packet size ",
                                                   max_packet_size_));
  }
  if (!external.empty()) {
    if (is_server_) {
      return absl::InvalidArgumentError("external data originates in the guest; a server cannot send it");
    }
    if (pipe_mode()) return absl::InvalidArgumentError("pipe channels carry no external data");
    if (absl::Status s = ValidateGpaRanges(external, partition_->memory().page_count()); !s.ok()) {
      return s;
    }
    if (max_external_bytes_ != 0 && TotalBytes(external) > max_external_bytes_) {
      return absl::InvalidArgumentError(absl::StrCat("external data of ", TotalBytes(external),
                                                     " bytes exceeds the maximum ",
                                                     max_external_bytes_));
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
      // I/O thread as soon as mu_ is released.
      packet.in_flight_ = true;
      if (flags & kFormatFlagWaitForCompletion) {
        packet.transaction_id_ = next_transaction_id_++;
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
  if (finished) NotifyIo();  // completion routines run on the I/O thread
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
  if (is_server_ && (!zero_timeout || wait)) {
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

// ---- Deliveries -------------------------------------------------------------------------------

Delivery* Channel::TakeDelivery() {
  if (free_deliveries_.empty()) {
    deliveries_.push_back(std::make_unique<Delivery>());
    free_deliveries_.push_back(deliveries_.back().get());
  }
  Delivery* d = free_deliveries_.back();
  free_deliveries_.pop_back();
  d->channel_ = this;
  d->in_callback_ = d->deferred_ = d->completed_ = d->passive_ = false;
  d->context_.assign(context_size_, 0);
  return d;
}

void Channel::Deliver(Delivery& d) {
  {
    MutexLock lock(&mu_);
    d.in_callback_ = true;
  }
  const uint32_t flags = d.external_.empty() ? 0 : kProcessPacketFlagExternalData;
  if (callbacks_.process_packet) {
    callbacks_.process_packet(*this, d, d.payload_, flags);
  } else {
    Complete(d, {});
  }
  MutexLock lock(&mu_);
  d.in_callback_ = false;
  if (d.deferred_) {
    // Delivered again on the control thread, at passive level.
    d.deferred_ = false;
    d.passive_ = true;
    Post({CommandKind::kDeliverPassive, 0, 0, 0, &d});
  } else if (d.completed_) {
    free_deliveries_.push_back(&d);  // completed inline: reusable now
  }
}

void Channel::Complete(Delivery& d, std::span<const uint8_t> completion) {
  if (d.magic_ != Delivery::kMagic || d.channel_ != this) return;
  bool send_completion;
  {
    MutexLock lock(&mu_);
    if (d.completed_) return;  // completed twice: ignore the second
    d.completed_ = true;
    send_completion = d.completion_requested_ && fsm_.connection() != ConnectionState::kDisabled;
  }
  if (send_completion) {
    {
      MutexLock s(&send_mu_);
      send_queue_.push_back({nullptr, d.transaction_id_,
                             std::vector<uint8_t>(completion.begin(), completion.end())});
    }
    FlushSends();
  }
  RetireDelivery(d);
}

void Channel::Fail(Delivery& d) {
  if (d.magic_ != Delivery::kMagic || d.channel_ != this) return;
  {
    MutexLock lock(&mu_);
    if (d.completed_) return;
    d.completed_ = true;
    incoming_failed_ = true;  // KMCL: the incoming queue stops
  }
  RetireDelivery(d);
}

void Channel::RetireDelivery(Delivery& d) {
  d.external_view_.reset();
  {
    MutexLock lock(&mu_);
    if (delivered_ > 0) --delivered_;
    if (!d.in_callback_) free_deliveries_.push_back(&d);  // else Deliver frees it
    io_work_ = true;  // a completion restarts a quota-stalled queue
    done_cv_.SignalAll();
  }
  io_cv_.Signal();
}

absl::Status Channel::DeferToPassive(Delivery& d) {
  MutexLock lock(&mu_);
  if (d.magic_ != Delivery::kMagic || d.channel_ != this || !d.in_callback_ || d.passive_) {
    return absl::FailedPreconditionError(
        "VmbChannelPacketDeferToPassive is valid only inline in ProcessPacket");
  }
  d.deferred_ = true;
  return absl::OkStatus();
}

absl::StatusOr<ExternalData> Channel::GetExternalData(Delivery& d, bool read_only) {
  if (d.magic_ != Delivery::kMagic || d.channel_ != this) {
    return absl::InvalidArgumentError("not a delivery of this channel");
  }
  if (d.external_.empty()) return absl::FailedPreconditionError("the packet has no external data");
  std::vector<uint64_t> pfns;
  for (const GpaRange& r : d.external_) pfns.insert(pfns.end(), r.pfns.begin(), r.pfns.end());
  if (!d.external_view_.has_value() || (d.external_view_->writable() == read_only && !read_only)) {
    absl::StatusOr<GuestView> view = partition_->memory().MapPages(pfns, !read_only);
    if (!view.ok()) return view.status();
    d.external_view_ = *std::move(view);
  }
  ExternalData out;
  out.ranges = d.external_;
  out.pages = d.external_view_->bytes();
  out.byte_count = TotalBytes(d.external_);
  out.read_only = !d.external_view_->writable();
  return out;
}

void Channel::SetTransactionQuota(uint32_t quota) {
  MutexLock lock(&mu_);
  quota_ = quota;  // does not restart a stalled queue: only a completion does
}

void Channel::SetIncomingProcessingAtPassive(bool passive) {
  MutexLock lock(&mu_);
  at_passive_ = passive;
}

// ---- The I/O thread ---------------------------------------------------------------------------

void Channel::NotifyIo() {
  {
    MutexLock lock(&mu_);
    io_work_ = true;
  }
  io_cv_.Signal();
}

void Channel::SignalPeer() {
  std::shared_ptr<RingLink> link;
  {
    MutexLock s(&send_mu_);
    link = link_;
  }
  if (link != nullptr) {
    stats_.signals_sent++;
    link->Signal(this);
  }
}

void Channel::IoLoop() {
  for (;;) {
    {
      MutexLock lock(&mu_);
      while (!io_work_ && !stopping_) io_cv_.Wait(&mu_);
      if (stopping_) return;
      io_work_ = false;
    }
    RunFinishedSends();
    DrainIncoming();
    FlushSends();
    RunFinishedSends();
  }
}

absl::Status Channel::SetUpRings(std::span<uint8_t> view, uint32_t downstream_offset) {
  absl::StatusOr<RingPair> pair = RingPair::FromGpadlView(view, downstream_offset);
  if (!pair.ok()) return pair.status();
  const RingMemory outgoing = is_server_ ? pair->host_to_guest : pair->guest_to_host;
  const RingMemory incoming = is_server_ ? pair->guest_to_host : pair->host_to_guest;
  uint32_t relid;
  {
    MutexLock lock(&mu_);
    relid = relid_;
    incoming_memory_ = incoming;
  }
  std::shared_ptr<RingLink> link = partition_->LinkFor(relid);
  if (link != nullptr) link->Attach(this, is_server_);
  {
    MutexLock r(&reader_mu_);
    reader_ = std::make_unique<RingReader>(incoming);
  }
  {
    MutexLock s(&send_mu_);
    writer_ = std::make_unique<RingWriter>(outgoing);
    link_ = link;
  }
  NotifyIo();
  return absl::OkStatus();
}

void Channel::DrainIncoming() {
  MutexLock r(&reader_mu_);
  if (reader_ == nullptr) return;
  bool pipe;
  {
    MutexLock lock(&mu_);
    if (!incoming_on_ || incoming_failed_) return;
    in_delivery_ = true;
    pipe = pipe_mode();
  }
  uint32_t batch = 0;
  int since_commit = 0;
  bool signal = false;
  // Packets delivered before a save and not completed come first.
  for (;;) {
    Delivery* d = nullptr;
    {
      MutexLock lock(&mu_);
      if (redeliver_.empty() || !incoming_on_) break;
      d = redeliver_.front();
      redeliver_.pop_front();
    }
    ++batch;
    Deliver(*d);
  }
  reader_->BeginDrain();
  for (;;) {
    bool passive;
    {
      MutexLock lock(&mu_);
      if (!incoming_on_ || incoming_failed_) break;
      if (quota_ != 0 && delivered_ >= quota_) {
        stats_.quota_stalls++;
        break;
      }
      passive = at_passive_;
    }
    RingStatus st = reader_->Read(incoming_packet_);
    if (st == RingStatus::kEmpty) {
      if (reader_->EndDrain()) {
        reader_->BeginDrain();
        continue;
      }
      break;
    }
    if (st == RingStatus::kCorrupt) {
      stats_.corrupt_packets++;
      MutexLock lock(&mu_);
      corruption_ = std::string(reader_->corruption().message());
      incoming_failed_ = true;
      break;
    }
    IncomingPacket& in = incoming_packet_;
    if (++since_commit == kCommitEvery) {
      signal |= reader_->CommitRead();
      since_commit = 0;
    }
    if (in.type == wire::PacketType::kCompletion) {
      Packet* packet = nullptr;
      {
        MutexLock lock(&mu_);
        auto it = outstanding_.find(in.transaction_id);
        if (it != outstanding_.end()) {
          packet = it->second;
          outstanding_.erase(it);
        }
      }
      stats_.completions_received++;
      if (packet != nullptr) CompleteSend(*packet, kStatusSuccess, in.payload);
      continue;  // a completion for nothing outstanding is dropped
    }
    std::span<const uint8_t> data = in.payload;
    if (pipe) {
      absl::StatusOr<PipeFrame> frame = ParsePipePacket(in.payload);
      if (!frame.ok()) {
        stats_.corrupt_packets++;
        continue;  // a malformed pipe frame is dropped, the channel goes on
      }
      data = frame->data;
    }
    stats_.packets_received++;
    stats_.bytes_received += data.size();
    Delivery* d;
    {
      MutexLock lock(&mu_);
      d = TakeDelivery();
      ++delivered_;
    }
    d->payload_.assign(data.begin(), data.end());
    d->external_ = in.gpa_ranges;
    d->transaction_id_ = in.transaction_id;
    d->completion_requested_ = in.completion_requested();
    ++batch;
    if (passive) {
      MutexLock lock(&mu_);
      d->passive_ = true;
      Post({CommandKind::kDeliverPassive, 0, 0, 0, d});
    } else {
      Deliver(*d);
    }
  }
  reader_->EndDrain();
  signal |= reader_->CommitRead();
  if (batch != 0 && callbacks_.processing_complete) callbacks_.processing_complete(*this, batch);
  {
    MutexLock lock(&mu_);
    in_delivery_ = false;
    done_cv_.SignalAll();
  }
  if (signal) SignalPeer();
}

// ---- Diagnostics ---------------------------------------------------------------------------------

ChannelSnapshot Channel::Snapshot() const {
  ChannelSnapshot s;
  std::optional<RingMemory> incoming;
  {
    MutexLock lock(&mu_);
    s.is_server = is_server_;
    s.connection = fsm_.connection();
    s.run = fsm_.run();
    s.relid = relid_;
    s.offer_sequence = offer_sequence_;
    s.outstanding_transactions = static_cast<uint32_t>(outstanding_.size());
    s.delivered_uncompleted = delivered_;
    s.transaction_quota = quota_;
    s.interrupt_latency = interrupt_latency_;
    s.corruption = corruption_;
    incoming = incoming_memory_;
  }
  {
    MutexLock send(&send_mu_);
    s.queued_sends = static_cast<uint32_t>(send_queue_.size());
    if (writer_ != nullptr) s.outgoing = SnapshotRing(writer_->memory());
  }
  if (incoming.has_value() && s.outgoing.has_value()) s.incoming = SnapshotRing(*incoming);
  s.stats.packets_sent = stats_.packets_sent;
  s.stats.bytes_sent = stats_.bytes_sent;
  s.stats.packets_received = stats_.packets_received;
  s.stats.bytes_received = stats_.bytes_received;
  s.stats.completions_sent = stats_.completions_sent;
  s.stats.completions_received = stats_.completions_received;
  s.stats.signals_sent = stats_.signals_sent;
  s.stats.sends_queued = stats_.sends_queued;
  s.stats.ring_full_events = stats_.ring_full_events;
  s.stats.quota_stalls = stats_.quota_stalls;
  s.stats.corrupt_packets = stats_.corrupt_packets;
  return s;
}

}  // namespace kmcl
