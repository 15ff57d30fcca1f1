#include "kmcl_core/runtime/delivery_path.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kmcl_core/runtime/channel.h"
#include "kmcl_core/wire/pipe_framing.h"

namespace kmcl {
namespace {

constexpr int kCommitEvery = 16;  // publish the read index every 16 packets

}  // namespace

DeliveryPath::DeliveryPath(Channel* owner, SendPath* send, Hooks hooks)
    : owner_(owner), send_(send), hooks_(std::move(hooks)) {}

// ---- The ring -----------------------------------------------------------------------------

void DeliveryPath::Attach(RingMemory incoming, Settings settings) {
  MutexLock r(&drain_mu_);
  reader_ = std::make_unique<RingReader>(incoming);
  MutexLock lock(&mu_);
  ring_corrupt_ = false;
  memory_ = incoming;
  settings_ = settings;
}

void DeliveryPath::Detach() {
  MutexLock r(&drain_mu_);
  reader_.reset();
  MutexLock lock(&mu_);
  memory_.reset();  // Snapshot no longer reads the ring
}

// ---- Running ------------------------------------------------------------------------------

void DeliveryPath::Start() {
  MutexLock lock(&mu_);
  on_ = true;
  failed_ = false;
}

void DeliveryPath::Stop() {
  MutexLock lock(&mu_);
  on_ = false;
}

bool DeliveryPath::idle() const {
  MutexLock lock(&mu_);
  return !draining_;
}

uint32_t DeliveryPath::delivered() const {
  MutexLock lock(&mu_);
  return delivered_;
}

void DeliveryPath::ClearErrors() {
  MutexLock lock(&mu_);
  failed_ = false;
  corruption_.clear();
}

void DeliveryPath::Drain() {
  MutexLock r(&drain_mu_);
  if (reader_ == nullptr) return;
  Settings settings;
  {
    MutexLock lock(&mu_);
    if (!on_ || failed_ || ring_corrupt_) return;
    draining_ = true;
    settings = settings_;
  }
  uint32_t batch = 0;
  int since_commit = 0;
  bool signal = false;
  // Deliveries handed out before a save and not completed come first.
  for (;;) {
    Delivery* d = nullptr;
    {
      MutexLock lock(&mu_);
      if (redeliver_.empty() || !on_) break;
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
      if (!on_ || failed_ || ring_corrupt_) break;
      if (quota_ != 0 && delivered_ >= quota_) {
        counters_.quota_stalls++;
        break;
      }
      passive = at_passive_;
    }
    std::span<const uint8_t> bytes;  // in the ring, wrapped or not, until the commit
    RingStatus st = reader_->ReadInPlace(packet_, bytes);
    if (st == RingStatus::kEmpty) {
      if (reader_->EndDrain()) {
        reader_->BeginDrain();
        continue;
      }
      break;
    }
    if (st == RingStatus::kCorrupt) {
      counters_.corrupt_packets++;
      MutexLock lock(&mu_);
      corruption_ = std::string(reader_->corruption().message());
      peer_errors_.push_back(absl::StrCat("incoming ring: ", corruption_));
      ring_corrupt_ = true;  // the reader is poisoned: nothing more from this ring
      break;
    }
    // The peer may rewrite the ring under `bytes`: everything used later is
    // copied out before the read is committed, and validated on the copy.
    Delivery* d = nullptr;
    bool completion = false;
    if (packet_.type == wire::PacketType::kCompletion) {
      completion_.assign(bytes.begin(), bytes.end());
      completion = true;
    } else {
      std::span<const uint8_t> data = bytes;
      bool malformed = false;
      if (settings.pipe) {
        // ParsePipePacket copies the header once and validates the copy.
        absl::StatusOr<PipeFrame> frame = ParsePipePacket(bytes);
        if (frame.ok()) {
          data = frame->data;
        } else {
          malformed = true;
          counters_.corrupt_packets++;
          MutexLock lock(&mu_);
          peer_errors_.push_back(absl::StrCat("pipe frame: ", frame.status().message()));
        }
      }
      if (!malformed) {  // a malformed pipe frame is dropped, the queue goes on
        counters_.packets_received++;
        counters_.bytes_received += data.size();
        {
          MutexLock lock(&mu_);
          d = TakeDeliveryLocked(settings.context_bytes);
          ++delivered_;
          d->passive_ = passive;
        }
        d->payload_.assign(data.begin(), data.end());
        d->external_ = packet_.gpa_ranges;
        d->transaction_id_ = packet_.transaction_id;
        d->completion_requested_ = packet_.completion_requested();
      }
    }
    if (++since_commit == kCommitEvery) {
      signal |= reader_->CommitRead();
      since_commit = 0;
    }
    if (completion) {
      EndTransaction(packet_.transaction_id, completion_);
    } else if (d != nullptr) {
      ++batch;
      if (passive) {
        hooks_.defer(*d);
      } else {
        Deliver(*d);
      }
    }
  }
  reader_->EndDrain();
  signal |= reader_->CommitRead();
  if (batch != 0 && hooks_.processing_complete) hooks_.processing_complete(batch);
  {
    MutexLock lock(&mu_);
    draining_ = false;
  }
  if (hooks_.drained) hooks_.drained();
  if (signal) send_->SignalPeer();  // the peer waits for room (pending_send_sz)
}

void DeliveryPath::EndTransaction(uint64_t transaction_id, std::span<const uint8_t> payload) {
  absl::Time sent;
  Packet* packet = send_->TakeOutstanding(transaction_id, &sent);
  counters_.completions_received++;
  if (packet == nullptr) return;  // a completion for nothing outstanding is dropped
  counters_.RecordLatency(absl::ToInt64Nanoseconds(absl::Now() - sent));
  SendPath::Complete(*packet, kStatusSuccess, payload);
}

void DeliveryPath::Deliver(Delivery& d) {
  {
    MutexLock lock(&mu_);
    d.in_callback_ = true;
  }
  const uint32_t flags = d.external_.empty() ? 0 : kProcessPacketFlagExternalData;
  hooks_.process_packet(d, d.payload_, flags);
  bool defer = false;
  {
    MutexLock lock(&mu_);
    d.in_callback_ = false;
    if (d.deferred_) {
      // Delivered again at passive level.
      d.deferred_ = false;
      d.passive_ = true;
      defer = true;
    } else if (d.retired_) {
      FreeLocked(d);  // retired during the callback: reusable now
    }
  }
  if (defer) hooks_.defer(d);
}

// ---- Completing ---------------------------------------------------------------------------

bool DeliveryPath::Complete(Delivery& d, std::span<const uint8_t> completion,
                            bool send_completion) {
  uint64_t transaction_id;
  bool send;
  {
    MutexLock lock(&mu_);
    if (d.completed_) return false;  // completed twice: ignore the second
    d.completed_ = true;
    // Read under the lock: once completed_ is set, a ProcessPacket ending on
    // the drain's thread may retire the delivery and reuse it.
    transaction_id = d.transaction_id_;
    send = send_completion && d.completion_requested_;
  }
  if (send) {
    send_->QueueCompletion(transaction_id, completion);
    send_->Flush();
  }
  Retire(d);
  return true;
}

bool DeliveryPath::Fail(Delivery& d) {
  {
    MutexLock lock(&mu_);
    if (d.completed_) return false;
    d.completed_ = true;
    failed_ = true;  // KMCL: the incoming queue stops
  }
  Retire(d);
  return true;
}

void DeliveryPath::Retire(Delivery& d) {
  d.external_view_.reset();
  {
    MutexLock lock(&mu_);
    if (delivered_ > 0) --delivered_;
    // Exactly one of Retire and Deliver's epilogue frees it: this one unless
    // ProcessPacket is still running (it may complete the delivery on
    // another thread), in which case Deliver does.
    d.retired_ = true;
    if (!d.in_callback_) FreeLocked(d);
  }
  if (hooks_.retired) hooks_.retired();
}

absl::Status DeliveryPath::Defer(Delivery& d) {
  MutexLock lock(&mu_);
  if (!d.in_callback_ || d.passive_) {
    return absl::FailedPreconditionError(
        "VmbChannelPacketDeferToPassive is valid only inline in ProcessPacket");
  }
  d.deferred_ = true;
  return absl::OkStatus();
}

void DeliveryPath::SetQuota(uint32_t quota) {
  MutexLock lock(&mu_);
  quota_ = quota;
}

uint32_t DeliveryPath::quota() const {
  MutexLock lock(&mu_);
  return quota_;
}

void DeliveryPath::SetAtPassive(bool passive) {
  MutexLock lock(&mu_);
  at_passive_ = passive;
}

std::vector<std::string> DeliveryPath::TakePeerErrors() {
  MutexLock lock(&mu_);
  return std::exchange(peer_errors_, {});
}

Delivery* DeliveryPath::TakeDeliveryLocked(uint32_t context_bytes) {
  if (free_.empty()) {
    deliveries_.push_back(std::make_unique<Delivery>());
    free_.push_back(deliveries_.back().get());
  }
  Delivery* d = free_.back();
  free_.pop_back();
  d->channel_ = owner_;
  d->in_callback_ = d->deferred_ = d->completed_ = d->retired_ = d->passive_ = d->pooled_ = false;
  d->context_.assign(context_bytes, 0);
  return d;
}

void DeliveryPath::FreeLocked(Delivery& d) {
  d.pooled_ = true;
  free_.push_back(&d);
}

// ---- Save and restore ---------------------------------------------------------------------

std::vector<DeliveryPath::SavedDelivery> DeliveryPath::Save() const {
  std::vector<SavedDelivery> out;
  MutexLock lock(&mu_);
  for (const auto& d : deliveries_) {
    if (d->completed_ || d->pooled_) continue;
    out.push_back({d->transaction_id_, d->payload_, d->external_, d->completion_requested_});
  }
  return out;
}

void DeliveryPath::Restore(const std::vector<SavedDelivery>& saved, uint32_t context_bytes) {
  MutexLock lock(&mu_);
  for (const SavedDelivery& s : saved) {
    Delivery* d = TakeDeliveryLocked(context_bytes);
    d->payload_ = s.payload;
    d->external_ = s.external;
    d->transaction_id_ = s.transaction_id;
    d->completion_requested_ = s.completion_requested;
    ++delivered_;
    redeliver_.push_back(d);
  }
}

void DeliveryPath::DropRestored() {
  MutexLock lock(&mu_);
  for (Delivery* d : redeliver_) FreeLocked(*d);
  redeliver_.clear();
  delivered_ = 0;
}

DeliveryPath::Snapshot DeliveryPath::TakeSnapshot() const {
  Snapshot s;
  MutexLock lock(&mu_);
  s.delivered = delivered_;
  s.quota = quota_;
  s.corruption = corruption_;
  // Detach forgets the memory under this lock before the caller unmaps it.
  if (memory_.has_value()) s.ring = SnapshotRing(*memory_);
  return s;
}

void DeliveryPath::Counters::RecordLatency(int64_t ns) {
  const uint64_t v = ns < 0 ? 0 : static_cast<uint64_t>(ns);
  const size_t bucket =
      std::lower_bound(kCompletionLatencyBoundsNs.begin(), kCompletionLatencyBoundsNs.end(), v) -
      kCompletionLatencyBoundsNs.begin();
  latency_buckets[bucket].fetch_add(1, std::memory_order_relaxed);
  latency_sum_ns.fetch_add(v, std::memory_order_relaxed);
}

}  // namespace kmcl
