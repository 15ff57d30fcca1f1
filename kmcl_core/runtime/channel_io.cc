// Channel, part 4: deliveries and the I/O task: draining the incoming
// ring, ProcessPacket and the transaction quota, completing deliveries,
// external data, the ring interrupts between the two endpoints, snapshots.
#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kmcl_core/bus/partition.h"
#include "kmcl_core/runtime/channel.h"
#include "kmcl_core/wire/pipe_framing.h"

namespace kmcl {
namespace {

constexpr int kCommitEvery = 16;  // publish the read index every 16 packets

}  // namespace

// ---- Deliveries -------------------------------------------------------------------------------

Delivery* Channel::TakeDelivery() {
  if (free_deliveries_.empty()) {
    deliveries_.push_back(std::make_unique<Delivery>());
    free_deliveries_.push_back(deliveries_.back().get());
  }
  Delivery* d = free_deliveries_.back();
  free_deliveries_.pop_back();
  d->channel_ = this;
  d->in_callback_ = d->deferred_ = d->completed_ = d->retired_ = d->passive_ = false;
  d->context_.assign(config_.client_context_size, 0);
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
    // Delivered again on the control task, at passive level.
    d.deferred_ = false;
    d.passive_ = true;
    Post({CommandKind::kDeliverPassive, 0, 0, 0, &d});
  } else if (d.retired_) {
    free_deliveries_.push_back(&d);  // retired during the callback: reusable now
  }
}

void Channel::Complete(Delivery& d, std::span<const uint8_t> completion) {
  if (d.magic_ != Delivery::kMagic || d.channel_ != this) return;
  bool send_completion;
  uint64_t transaction_id;
  {
    MutexLock lock(&mu_);
    if (d.completed_) return;  // completed twice: ignore the second
    d.completed_ = true;
    // Read under the lock: once completed_ is set, a ProcessPacket ending on
    // the I/O task may retire the delivery and reuse it for the next one.
    transaction_id = d.transaction_id_;
    send_completion = d.completion_requested_ && fsm_.connection() != ConnectionState::kDisabled;
  }
  if (send_completion) {
    send_.QueueCompletion(transaction_id, completion);
    send_.Flush();
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
    // Exactly one of RetireDelivery and Deliver's epilogue frees it: this
    // one unless ProcessPacket is still running (it may complete the
    // delivery on another thread), in which case Deliver does.
    d.retired_ = true;
    if (!d.in_callback_) free_deliveries_.push_back(&d);
    KickIo();  // a completion restarts a quota-stalled queue
    done_cv_.SignalAll();
  }
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

// ---- The I/O task ---------------------------------------------------------------------------

void Channel::NotifyIo() {
  MutexLock lock(&mu_);
  KickIo();
}

void Channel::IoRun() {
  {
    MutexLock lock(&mu_);
    if (stopping_ || !io_work_) return;
    io_work_ = false;
  }
  send_.RunFinished();
  DrainIncoming();
  send_.Flush();
  send_.RunFinished();
  ReportPeerErrors();
  // A kick during this pass set io_work_ again and scheduled another pass.
}

void Channel::ReportPeerErrors() {
  std::vector<std::string> errors;
  {
    MutexLock r(&reader_mu_);
    errors.swap(peer_errors_);
  }
  if (std::optional<std::string> sent = send_.TakePeerError(); sent.has_value()) {
    {
      MutexLock lock(&mu_);
      if (corruption_.empty()) corruption_ = *sent;
    }
    errors.push_back(*std::move(sent));
  }
  if (!callbacks_.peer_error) return;
  for (const std::string& what : errors) callbacks_.peer_error(*this, what);
}

absl::Status Channel::SetUpRings(std::span<uint8_t> view, uint32_t downstream_offset) {
  absl::StatusOr<RingPair> pair = RingPair::FromDoubleMappedView(view, downstream_offset);
  if (!pair.ok()) return pair.status();
  const RingMemory outgoing = IsHost(role_) ? pair->host_to_guest : pair->guest_to_host;
  const RingMemory incoming = IsHost(role_) ? pair->guest_to_host : pair->host_to_guest;
  uint32_t relid;
  {
    MutexLock lock(&mu_);
    relid = relid_;
    incoming_memory_ = incoming;
  }
  std::shared_ptr<RingLink> link = partition_->LinkFor(relid);
  if (link != nullptr) link->Attach(this, role_);
  {
    MutexLock r(&reader_mu_);
    reader_ = std::make_unique<RingReader>(incoming);
  }
  send_.Attach(outgoing, link);
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
      peer_errors_.push_back(absl::StrCat("incoming ring: ", reader_->corruption().message()));
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
      absl::Time sent;
      Packet* packet = send_.TakeOutstanding(in.transaction_id, &sent);
      stats_.completions_received++;
      if (packet != nullptr) {
        stats_.RecordLatency(absl::ToInt64Nanoseconds(absl::Now() - sent));
        SendPath::Complete(*packet, kStatusSuccess, in.payload);
      }
      continue;  // a completion for nothing outstanding is dropped
    }
    std::span<const uint8_t> data = in.payload;
    if (pipe) {
      absl::StatusOr<PipeFrame> frame = ParsePipePacket(in.payload);
      if (!frame.ok()) {
        stats_.corrupt_packets++;
        peer_errors_.push_back(absl::StrCat("pipe frame: ", frame.status().message()));
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
  if (signal) send_.SignalPeer();
}

// ---- Diagnostics ---------------------------------------------------------------------------------

ChannelSnapshot Channel::Snapshot() const {
  ChannelSnapshot s;
  std::optional<RingMemory> incoming;
  SendPath::Snapshot sent = send_.TakeSnapshot();  // before mu_ (lock order)
  s.queued_sends = sent.queued;
  s.outgoing = sent.ring;
  s.outstanding_transactions = sent.outstanding_count;
  s.outstanding = std::move(sent.outstanding);
  {
    MutexLock lock(&mu_);
    s.role = role_;
    s.connection = fsm_.connection();
    s.run = fsm_.run();
    s.relid = relid_;
    s.offer_sequence = offer_sequence_;
    s.delivered_uncompleted = delivered_;
    s.transaction_quota = quota_;
    s.interrupt_latency = interrupt_latency_;
    s.corruption = corruption_;
    s.friendly_name = config_.friendly_name;
    incoming = incoming_memory_;
  }
  if (incoming.has_value() && s.outgoing.has_value()) s.incoming = SnapshotRing(*incoming);
  const SendPath::Counters& sc = send_.counters();
  s.stats.packets_sent = sc.packets_sent;
  s.stats.bytes_sent = sc.bytes_sent;
  s.stats.packets_received = stats_.packets_received;
  s.stats.bytes_received = stats_.bytes_received;
  s.stats.completions_sent = sc.completions_sent;
  s.stats.completions_received = stats_.completions_received;
  s.stats.signals_sent = sc.signals_sent;
  s.stats.sends_queued = sc.sends_queued;
  s.stats.ring_full_events = sc.ring_full_events;
  s.stats.quota_stalls = stats_.quota_stalls;
  s.stats.corrupt_packets = stats_.corrupt_packets + sc.corrupt_rings;
  std::sort(s.outstanding.begin(), s.outstanding.end(),
            [](const OutstandingTransaction& a, const OutstandingTransaction& b) {
              return a.age > b.age || (a.age == b.age && a.transaction_id < b.transaction_id);
            });
  if (s.outstanding.size() > kMaxSnapshotTransactions) s.outstanding.resize(kMaxSnapshotTransactions);
  LatencyHistogram& h = s.stats.completion_latency;
  for (size_t i = 0; i < h.buckets.size(); ++i) {
    h.buckets[i] = stats_.latency_buckets[i].load(std::memory_order_relaxed);
    h.count += h.buckets[i];
  }
  h.sum_ns = stats_.latency_sum_ns.load(std::memory_order_relaxed);
  return s;
}

void Channel::AtomicStats::RecordLatency(int64_t ns) {
  const uint64_t v = ns < 0 ? 0 : static_cast<uint64_t>(ns);
  const size_t bucket =
      std::lower_bound(kCompletionLatencyBoundsNs.begin(), kCompletionLatencyBoundsNs.end(), v) -
      kCompletionLatencyBoundsNs.begin();
  latency_buckets[bucket].fetch_add(1, std::memory_order_relaxed);
  latency_sum_ns.fetch_add(v, std::memory_order_relaxed);
}

}  // namespace kmcl
