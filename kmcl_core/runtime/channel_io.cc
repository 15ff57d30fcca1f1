// Channel, part 4: the incoming side as the channel drives it (the ring
// reader, deliveries and the quota are the DeliveryPath's, delivery_path.cc):
// the delivery hooks, external data, the I/O task, ring setup, snapshots.
#include <algorithm>
#include <utility>

#include "kmcl_core/bus/partition.h"
#include "kmcl_core/runtime/channel.h"

namespace kmcl {

// ---- Deliveries (the DeliveryPath's; delivery_path.h) -----------------------------------------

DeliveryPath::Hooks Channel::DeliveryHooks() {
  return {
      .process_packet =
          [this](Delivery& d, std::span<const uint8_t> data, uint32_t flags) {
            if (callbacks_.process_packet) {
              callbacks_.process_packet(*this, d, data, flags);
            } else {
              Complete(d, {});
            }
          },
      .processing_complete =
          [this](uint32_t packets) {
            if (callbacks_.processing_complete) callbacks_.processing_complete(*this, packets);
          },
      .defer =
          [this](Delivery& d) {
            MutexLock lock(&mu_);
            Post({CommandKind::kDeliverPassive, 0, 0, 0, &d});
          },
      .retired =
          [this] {
            MutexLock lock(&mu_);
            KickIo();  // a completion restarts a quota-stalled queue
            done_cv_.SignalAll();
          },
      .drained =
          [this] {
            MutexLock lock(&mu_);
            done_cv_.SignalAll();  // the control task may wait for an idle drain
          },
  };
}

void Channel::Complete(Delivery& d, std::span<const uint8_t> completion) {
  if (d.magic_ != Delivery::kMagic || d.channel_ != this) return;
  bool connected;
  {
    MutexLock lock(&mu_);
    connected = fsm_.connection() != ConnectionState::kDisabled;
  }
  delivery_.Complete(d, completion, /*send_completion=*/connected);
}

void Channel::Fail(Delivery& d) {
  if (d.magic_ != Delivery::kMagic || d.channel_ != this) return;
  delivery_.Fail(d);
}

absl::Status Channel::DeferToPassive(Delivery& d) {
  if (d.magic_ != Delivery::kMagic || d.channel_ != this) {
    return absl::FailedPreconditionError(
        "VmbChannelPacketDeferToPassive is valid only inline in ProcessPacket");
  }
  return delivery_.Defer(d);
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

void Channel::SetTransactionQuota(uint32_t quota) { delivery_.SetQuota(quota); }

void Channel::SetIncomingProcessingAtPassive(bool passive) { delivery_.SetAtPassive(passive); }

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
  delivery_.Drain();
  send_.Flush();
  send_.RunFinished();
  ReportPeerErrors();
  // A kick during this pass set io_work_ again and scheduled another pass.
}

void Channel::ReportPeerErrors() {
  std::vector<std::string> errors = delivery_.TakePeerErrors();
  if (std::optional<std::string> sent = send_.TakePeerError(); sent.has_value()) {
    {
      MutexLock lock(&mu_);
      if (send_corruption_.empty()) send_corruption_ = *sent;
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
  DeliveryPath::Settings settings;
  {
    MutexLock lock(&mu_);
    relid = relid_;
    settings = {.pipe = pipe_mode(), .context_bytes = config_.client_context_size};
  }
  std::shared_ptr<RingLink> link = partition_->LinkFor(relid);
  if (link != nullptr) link->Attach(this, role_);
  delivery_.Attach(incoming, settings);
  send_.Attach(outgoing, link);
  NotifyIo();
  return absl::OkStatus();
}

// ---- Diagnostics ---------------------------------------------------------------------------------

ChannelSnapshot Channel::Snapshot() const {
  ChannelSnapshot s;
  SendPath::Snapshot sent = send_.TakeSnapshot();  // before mu_ (lock order)
  DeliveryPath::Snapshot in = delivery_.TakeSnapshot();
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
    s.interrupt_latency = interrupt_latency_;
    // The incoming ring's corruption first (it stops the channel's input).
    s.corruption = in.corruption.empty() ? send_corruption_ : in.corruption;
    s.friendly_name = config_.friendly_name;
  }
  s.delivered_uncompleted = in.delivered;
  s.transaction_quota = in.quota;
  if (s.outgoing.has_value()) s.incoming = in.ring;
  const SendPath::Counters& sc = send_.counters();
  const DeliveryPath::Counters& dc = delivery_.counters();
  s.stats.packets_sent = sc.packets_sent;
  s.stats.bytes_sent = sc.bytes_sent;
  s.stats.packets_received = dc.packets_received;
  s.stats.bytes_received = dc.bytes_received;
  s.stats.completions_sent = sc.completions_sent;
  s.stats.completions_received = dc.completions_received;
  s.stats.signals_sent = sc.signals_sent;
  s.stats.sends_queued = sc.sends_queued;
  s.stats.ring_full_events = sc.ring_full_events;
  s.stats.quota_stalls = dc.quota_stalls;
  s.stats.corrupt_packets = dc.corrupt_packets + sc.corrupt_rings;
  std::sort(s.outstanding.begin(), s.outstanding.end(),
            [](const OutstandingTransaction& a, const OutstandingTransaction& b) {
              return a.age > b.age || (a.age == b.age && a.transaction_id < b.transaction_id);
            });
  if (s.outstanding.size() > kMaxSnapshotTransactions) s.outstanding.resize(kMaxSnapshotTransactions);
  LatencyHistogram& h = s.stats.completion_latency;
  for (size_t i = 0; i < h.buckets.size(); ++i) {
    h.buckets[i] = dc.latency_buckets[i].load(std::memory_order_relaxed);
    h.count += h.buckets[i];
  }
  h.sum_ns = dc.latency_sum_ns.load(std::memory_order_relaxed);
  return s;
}

}  // namespace kmcl
