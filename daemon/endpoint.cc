#include "daemon/endpoint.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/convert.h"
#include "daemon/grpc_status.h"

namespace kmcld {

using kmcl::v1::EventKind;

namespace {
constexpr size_t kMaxPendingEvents = 1024;
constexpr uint32_t kDefaultCredits = 64;
constexpr uint32_t kMaxBatch = 1024;
}  // namespace

Endpoint::Endpoint(std::string partition_id, Role role, EndpointLimits limits, EventLog& log,
                   Timer& timer)
    : partition_id_(std::move(partition_id)), role_(role), limits_(limits), log_(log),
      timer_(timer) {}

absl::StatusOr<std::shared_ptr<Endpoint>> Endpoint::Create(std::shared_ptr<kmcl::Partition> partition,
                                                           std::string partition_id, Role role,
                                                           EndpointLimits limits, EventLog& log,
                                                           Timer& timer,
                                                           std::shared_ptr<log::Limiter> peer_log) {
  std::shared_ptr<Endpoint> ep(new Endpoint(std::move(partition_id), role, limits, log, timer));
  ep->self_ = ep;
  ep->peer_log_ =
      peer_log != nullptr ? std::move(peer_log) : std::make_shared<log::Limiter>(kPeerEventsPerMinute);
  if (partition == nullptr) return absl::InvalidArgumentError("an endpoint needs a partition");
  ep->partition_ = std::move(partition);
  auto channel = kmcl::Channel::Allocate(*ep->partition_, role == kmcl::v1::ENDPOINT_ROLE_HOST
                                                        ? kmcl::EndpointRole::kHost
                                                        : kmcl::EndpointRole::kGuest);
  if (!channel.ok()) return channel.status();
  ep->channel_ = *std::move(channel);
  ep->InstallCallbacks();
  ep->SetQuota(0);
  return ep;
}

Endpoint::~Endpoint() {
  {
    kmcl::MutexLock lock(&mu_);
    if (linger_timer_ != 0) timer_.Cancel(linger_timer_);
  }
  if (channel_ == nullptr) return;  // Create failed
  // Disable while channel_ is still set: the callbacks it runs (Closed)
  // use it. unique_ptr::reset clears the pointer before ~Channel runs.
  channel_->Disable().IgnoreError();  // already disabled is fine
  channel_.reset();  // no callback runs after this
}

void Endpoint::InstallCallbacks() {
  kmcl::ChannelCallbacks cb;
  cb.opened = [this](kmcl::Channel&) {
    relid();  // remember it
    {
      kmcl::MutexLock lock(&mu_);
      opened_ = true;
      state_cv_.SignalAll();
    }
    Event(kmcl::v1::EVENT_KIND_OPENED, kmcl::kStatusSuccess);
    return kmcl::kStatusSuccess;
  };
  cb.started = [this](kmcl::Channel&) {
    {
      kmcl::MutexLock lock(&mu_);
      started_ = true;
      state_cv_.SignalAll();
    }
    Event(kmcl::v1::EVENT_KIND_STARTED, 0);
  };
  cb.post_started = [this](kmcl::Channel&) { Event(kmcl::v1::EVENT_KIND_POST_STARTED, 0); };
  cb.suspend = [this](kmcl::Channel&) { Event(kmcl::v1::EVENT_KIND_SUSPEND, 0); };
  cb.closed = [this](kmcl::Channel&) {
    bool rescind = false;
    {
      kmcl::MutexLock lock(&mu_);
      opened_ = false;
      if (role_ == kmcl::v1::ENDPOINT_ROLE_GUEST && !closing_ && !rescinded_) {
        rescinded_ = rescind = true;
      }
      state_cv_.SignalAll();
    }
    Event(kmcl::v1::EVENT_KIND_CLOSED, 0);
    if (rescind) Event(kmcl::v1::EVENT_KIND_RESCINDED, 0, "the host rescinded the offer");
  };
  cb.pnp_failure = [this](kmcl::Channel&, kmcl::NTSTATUS status) {
    {
      kmcl::MutexLock lock(&mu_);
      open_failure_ = status;
      state_cv_.SignalAll();
    }
    Event(kmcl::v1::EVENT_KIND_PNP_FAILURE, status);
  };
  cb.process_packet = [this](kmcl::Channel&, kmcl::Delivery& d, std::span<const uint8_t>,
                             uint32_t) { OnDelivery(d); };
  cb.peer_error = [this](kmcl::Channel&, absl::string_view what) { OnPeerError(what); };
  cb.save_packet = [this](kmcl::Channel&, kmcl::Packet& p) { return SavePacket(p); };
  cb.restore_packet = [this](kmcl::Channel&, std::span<const uint8_t> lib,
                             std::span<const uint8_t> saved) { return RestorePacket(lib, saved); };
  channel_->SetCallbacks(std::move(cb)).IgnoreError();  // a fresh channel is configurable
}

uint32_t Endpoint::relid() const {
  const uint32_t now = channel_->relid();
  kmcl::MutexLock lock(&mu_);
  if (now != 0) relid_ = now;
  return relid_;
}

kmcl::v1::ChannelRef Endpoint::Ref() const {
  kmcl::v1::ChannelRef ref;
  ref.set_partition_id(partition_id_);
  ref.set_channel_id(relid());
  kmcl::MutexLock lock(&mu_);
  ref.set_offer_sequence(offer_sequence_);
  return ref;
}

void Endpoint::set_offer_sequence(uint64_t sequence) {
  kmcl::MutexLock lock(&mu_);
  offer_sequence_ = sequence;
}

void Endpoint::set_offer(kmcl::v1::ServerChannelSettings settings, kmcl::v1::Offer offer) {
  kmcl::MutexLock lock(&mu_);
  settings_ = std::move(settings);
  offer_ = std::move(offer);
  offer_sequence_ = offer_->channel().offer_sequence();
}

kmcl::v1::ServerChannelSettings Endpoint::settings() const {
  kmcl::MutexLock lock(&mu_);
  return settings_;
}

std::optional<kmcl::v1::Offer> Endpoint::offer() const {
  kmcl::MutexLock lock(&mu_);
  return offer_;
}

void Endpoint::SetQuota(uint32_t quota) {
  const uint32_t window = std::max<uint32_t>(limits_.delivery_window, 1);
  channel_->SetTransactionQuota(quota == 0 ? window : std::min(quota, window));
}

void Endpoint::set_max_packet_size(uint32_t bytes) {
  kmcl::MutexLock lock(&mu_);
  max_packet_size_ = bytes;
}

uint32_t Endpoint::max_packet_size() const {
  kmcl::MutexLock lock(&mu_);
  return max_packet_size_;
}

bool Endpoint::rescinded() const {
  kmcl::MutexLock lock(&mu_);
  return rescinded_;
}

void Endpoint::MarkRescinded() {
  {
    kmcl::MutexLock lock(&mu_);
    if (rescinded_) return;
    rescinded_ = true;
  }
  Event(kmcl::v1::EVENT_KIND_RESCINDED, 0, "RescindChannel");
}

void Endpoint::ExpectClose() {
  kmcl::MutexLock lock(&mu_);
  closing_ = true;
}

bool Endpoint::attached() const {
  kmcl::MutexLock lock(&mu_);
  return stream_ != nullptr;
}

std::string Endpoint::StreamState() const {
  std::shared_ptr<EndpointStream> stream;
  {
    kmcl::MutexLock lock(&mu_);
    stream = stream_;
  }
  const std::string writes = stream != nullptr ? stream->DebugState() : "";
  kmcl::MutexLock lock(&mu_);
  return absl::StrCat(writes, " ","attached=", stream_ != nullptr, " epoch=", epoch_, " held=", held_.size(),
                      " undelivered=", undelivered_.size(), " delivery_credits=", delivery_credits_,
                      " send_credits=", send_credits_, " held_sends=", held_sends_,
                      " credits_to_return=", credits_to_return_, " completions=", completions_.size(),
                      " ack_mode=", ack_mode_, " unacked=", unacked_.size(),
                      " events=", events_.size());
}

void Endpoint::KeepUntilFreed(std::shared_ptr<void> held) {
  kmcl::MutexLock lock(&mu_);
  kept_.push_back(std::move(held));
}

uint32_t Endpoint::held_deliveries() const {
  kmcl::MutexLock lock(&mu_);
  return static_cast<uint32_t>(held_.size());
}

absl::Status Endpoint::WaitOpened(absl::Time deadline) {
  kmcl::MutexLock lock(&mu_);
  for (;;) {
    if (opened_ && started_) return absl::OkStatus();
    if (open_failure_.has_value()) {
      return absl::UnavailableError(absl::StrCat("the host refused the open: ",
                                                 kmcl::NtStatusName(*open_failure_)));
    }
    if (rescinded_) return absl::CancelledError("the offer was rescinded during the open");
    if (state_cv_.WaitWithDeadline(&mu_, deadline)) {
      if (opened_ && started_) return absl::OkStatus();
      return absl::DeadlineExceededError("the channel did not open before the deadline");
    }
  }
}

void Endpoint::Event(EventKind kind, kmcl::NTSTATUS status, std::string detail) {
  kmcl::v1::Event e;
  e.set_kind(kind);
  e.set_partition_id(partition_id_);
  *e.mutable_channel() = Ref();
  e.set_role(role_);
  SetNtStatus(status, e.mutable_status());
  e.set_detail(std::move(detail));
  const uint64_t sequence = log_.Append(std::move(e));
  {
    kmcl::MutexLock lock(&mu_);
    if (stream_ == nullptr) return;
    if (events_.size() >= kMaxPendingEvents) events_.pop_front();  // still in the log
    kmcl::v1::EndpointEvent& out = events_.emplace_back();
    out.set_kind(kind);
    out.set_sequence(sequence);
    SetNtStatus(status, out.mutable_status());
  }
  WakeStream();
}

void Endpoint::OnPeerError(absl::string_view what) {
  uint64_t dropped_before = 0;
  if (!peer_log_->Admit(&dropped_before)) return;  // still counted by the channel
  const uint32_t id = relid();
  std::string interface_type = "unknown";
  for (const kmcl::ServerChannelInfo& c : partition_->ServerChannels()) {
    if (c.relid == id) interface_type = c.offer.interface_type.ToString();
  }
  std::string detail = absl::StrCat(what, "; interface_type ", interface_type);
  if (dropped_before != 0) absl::StrAppend(&detail, "; ", dropped_before, " earlier not logged");
  Event(kmcl::v1::EVENT_KIND_RING_CORRUPT, kmcl::kStatusSuccess, std::move(detail));
}

void Endpoint::OnDelivery(kmcl::Delivery& delivery) {
  // Whether it is released and holding it are one step: a release between
  // them would empty held_ before this delivery joined it, and nothing
  // would complete it.
  bool release = false;
  bool wake = false;
  {
    kmcl::MutexLock lock(&mu_);
    if (released_) {
      release = true;
    } else {
      const uint64_t id = next_delivery_id_++;
      held_.emplace(id, &delivery);
      if (stream_ != nullptr) {  // else it is sent when a stream attaches
        undelivered_.push_back(id);
        wake = true;
      }
    }
  }
  if (release) {
    // Being freed: no stream will take it, and the Disable that follows
    // waits for every delivery (after EvtChannelSuspend, KMCL waits for the
    // incoming packets). Completing inside ProcessPacket is allowed.
    channel_->Complete(delivery, {});
    return;
  }
  if (wake) WakeStream();
}

void Endpoint::OnSendDone(uint64_t tag, uint64_t epoch, kmcl::NTSTATUS status,
                          std::span<const uint8_t> completion) {
  {
    kmcl::MutexLock lock(&mu_);
    if (held_sends_ > 0) --held_sends_;
    const bool kept = epoch > forgotten_through_;
    if (kept) {
      kmcl::v1::SendCompletion& c = completions_.emplace_back();
      c.set_tag(tag);
      SetNtStatus(status, c.mutable_status());
      c.set_payload(completion.data(), completion.size());
      c.set_completion_id(next_completion_id_++);
    }
    if (stream_ == nullptr) return;
    // An acknowledging stream gets the credit back with the acknowledgement.
    if (!kept || !ack_mode_) ++credits_to_return_;
  }
  WakeStream();
}

void Endpoint::WakeStream() {
  std::shared_ptr<EndpointStream> stream;
  {
    kmcl::MutexLock lock(&mu_);
    stream = stream_;
  }
  if (stream != nullptr) stream->Wake();
}

absl::StatusOr<kmcl::v1::Attached> Endpoint::Attach(std::shared_ptr<EndpointStream> stream,
                                                    const kmcl::v1::AttachRequest& first) {
  const uint32_t delivery_credits = first.attach().delivery_credits();
  const uint32_t max_batch = first.attach().max_batch();
  kmcl::v1::Attached attached;
  *attached.mutable_endpoint()->mutable_channel() = Ref();
  attached.mutable_endpoint()->set_role(role_);
  kmcl::MutexLock lock(&mu_);
  if (released_) {
    return absl::NotFoundError(absl::StrCat("the ", EndpointRoleName(role_), " endpoint of channel ",
                                            relid_, " is being freed"));
  }
  if (stream_ != nullptr) {
    return absl::AlreadyExistsError(absl::StrCat("another stream is attached to the ",
                                                 EndpointRoleName(role_), " endpoint of channel ",
                                                 relid_));
  }
  // Written but unacknowledged completions of the earlier stream go first
  // again, but for those this Attach acknowledges.
  while (!unacked_.empty()) {
    completions_.push_front(std::move(unacked_.back()));
    unacked_.pop_back();
  }
  if (absl::Status s = HandleAck(first.completions_acked_through()); !s.ok()) return s;
  if (linger_timer_ != 0) timer_.Cancel(linger_timer_);
  linger_timer_ = 0;
  ack_mode_ = first.attach().ack_completions();
  stream_ = std::move(stream);
  ++epoch_;
  delivery_credits_ = delivery_credits == 0 ? kDefaultCredits : delivery_credits;
  max_batch_ = max_batch == 0 ? 64 : std::min(max_batch, kMaxBatch);
  undelivered_.clear();
  for (auto& [id, d] : held_) undelivered_.push_back(id);
  // Held sends, and on an acknowledging stream the completions kept for it,
  // use the window.
  const uint64_t held = held_sends_ + (ack_mode_ ? completions_.size() : 0);
  send_credits_ = limits_.send_window > held ? limits_.send_window - held : 0;
  credits_to_return_ = 0;
  attached.set_send_credits(static_cast<uint32_t>(send_credits_));
  attached.set_max_packet_size(max_packet_size_);
  attached.set_redelivered(static_cast<uint32_t>(undelivered_.size()));
  attached.set_recovered_completions(static_cast<uint32_t>(completions_.size()));
  return attached;
}

void Endpoint::Detach(const EndpointStream* stream, bool clean) {
  {
    kmcl::MutexLock lock(&mu_);
    if (stream_.get() != stream || stream == nullptr) return;
    stream_.reset();
    events_.clear();
    undelivered_.clear();
    if (!clean) {
      std::weak_ptr<Endpoint> weak = self_;
      linger_timer_ = timer_.Schedule(absl::Now() + limits_.linger, [weak] {
        if (auto ep = weak.lock()) ep->LingerExpired();
      });
      return;
    }
  }
  ReleaseHeld();
}

void Endpoint::LingerExpired() {
  {
    kmcl::MutexLock lock(&mu_);
    linger_timer_ = 0;
    if (stream_ != nullptr) return;
  }
  ReleaseHeld();
}

void Endpoint::EndStreamAndRelease(const absl::Status& why) {
  std::shared_ptr<EndpointStream> stream;
  {
    kmcl::MutexLock lock(&mu_);
    released_ = true;
    stream = std::move(stream_);
    stream_.reset();
    if (linger_timer_ != 0) timer_.Cancel(linger_timer_);
    linger_timer_ = 0;
  }
  if (stream != nullptr) stream->EndpointGone(why);
  ReleaseHeld();
}

void Endpoint::ReleaseHeld() {
  std::vector<kmcl::Delivery*> held;
  {
    kmcl::MutexLock lock(&mu_);
    for (auto& [id, d] : held_) held.push_back(d);
    held_.clear();
    undelivered_.clear();
    forgotten_through_ = epoch_;
    completions_.clear();
    unacked_.clear();
  }
  for (kmcl::Delivery* d : held) channel_->Complete(*d, {});
}

absl::Status Endpoint::Handle(const EndpointStream* stream,
                              const kmcl::v1::AttachRequest& request) {
  bool acked = false;
  {
    kmcl::MutexLock lock(&mu_);
    if (stream_.get() != stream) {
      return absl::FailedPreconditionError("the stream is no longer attached to the endpoint");
    }
    acked = ack_mode_ && request.completions_acked_through() != 0;
    if (acked) {
      if (absl::Status s = HandleAck(request.completions_acked_through()); !s.ok()) return s;
    }
  }
  if (acked) WakeStream();  // credits may be due
  switch (request.kind_case()) {
    case kmcl::v1::AttachRequest::kAttach:
      return absl::FailedPreconditionError("Attach must be the first message, and only the first");
    case kmcl::v1::AttachRequest::kSends:
      return HandleSends(request.sends());
    case kmcl::v1::AttachRequest::kCompletions:
      return HandleCompletions(request.completions());
    case kmcl::v1::AttachRequest::kFail:
      return HandleFail(request.fail().delivery_id());
    case kmcl::v1::AttachRequest::kDeliveryCredits: {
      {
        kmcl::MutexLock lock(&mu_);
        delivery_credits_ = std::min<uint64_t>(delivery_credits_ + request.delivery_credits().credits(),
                                               uint64_t{1} << 32);
      }
      WakeStream();
      return absl::OkStatus();
    }
    case kmcl::v1::AttachRequest::KIND_NOT_SET:
      if (request.completions_acked_through() != 0) return absl::OkStatus();  // an ack alone
      break;
  }
  return absl::InvalidArgumentError("an AttachRequest with no message set");
}

absl::Status Endpoint::HandleAck(uint64_t through) {
  if (through > last_written_completion_id_) {
    return absl::InvalidArgumentError(
        absl::StrCat("completions_acked_through ", through, " acknowledges a completion kmcld has "
                     "not written (the last written is ", last_written_completion_id_, ")"));
  }
  // Before the merge on Attach, kept completions may also wait in
  // completions_ (written to a stream that broke).
  uint32_t acked = 0;
  for (auto* queue : {&unacked_, &completions_}) {
    while (!queue->empty() && queue->front().completion_id() != 0 &&
           queue->front().completion_id() <= through) {
      queue->pop_front();
      ++acked;
    }
  }
  if (ack_mode_ && stream_ != nullptr) credits_to_return_ += acked;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<kmcl::GpaRange>> Endpoint::ResolveExternal(
    const kmcl::v1::ExternalData& ext) {
  if (role_ == kmcl::v1::ENDPOINT_ROLE_HOST) {
    return absl::InvalidArgumentError(
        "external data originates in the guest; the host role cannot send it");
  }
  switch (ext.kind_case()) {
    case kmcl::v1::ExternalData::kRanges:
      return FromProto(ext.ranges());
    case kmcl::v1::ExternalData::kGpadl: {
      const kmcl::v1::GpadlSlice& slice = ext.gpadl();
      std::optional<kmcl::GpadlInfo> info = partition_->gpadls().Get(slice.gpadl_id());
      if (!info.has_value() || info->channel_id != relid()) {
        return absl::NotFoundError(absl::StrCat("GPADL ", slice.gpadl_id(),
                                                " does not exist on channel ", relid()));
      }
      return SliceRanges(info->ranges, slice.offset(), slice.length());
    }
    case kmcl::v1::ExternalData::KIND_NOT_SET:
      break;
  }
  // Set but empty: an unset oneof, INVALID_ARGUMENT as everywhere
  // (docs/api.md), not a plain send.
  return absl::InvalidArgumentError("external data names neither a GPADL nor GPA ranges");
}

absl::Status Endpoint::HandleSends(const kmcl::v1::SendBatch& batch) {
  const int n = batch.packets_size();
  if (n == 0) return absl::OkStatus();
  std::vector<std::vector<kmcl::GpaRange>> external(n);
  for (int i = 0; i < n; ++i) {
    const kmcl::v1::SendPacket& p = batch.packets(i);
    if (p.has_external()) {
      auto ranges = ResolveExternal(p.external());
      if (!ranges.ok()) {
        return absl::Status(ranges.status().code(),
                            absl::StrCat("send tag ", p.tag(), ": ", ranges.status().message()));
      }
      external[i] = *std::move(ranges);
    }
  }
  uint64_t epoch;
  {
    kmcl::MutexLock lock(&mu_);
    if (send_credits_ < static_cast<uint64_t>(n)) {
      return absl::ResourceExhaustedError(absl::StrCat("a batch of ", n, " sends exceeds the ",
                                                       send_credits_, " send credits granted"));
    }
    for (const kmcl::v1::SendPacket& p : batch.packets()) {
      if (p.payload().size() > max_packet_size_) {
        return absl::InvalidArgumentError(absl::StrCat("send tag ", p.tag(), ": payload of ",
                                                       p.payload().size(),
                                                       " bytes exceeds the maximum packet size ",
                                                       max_packet_size_));
      }
    }
    send_credits_ -= n;
    held_sends_ += n;
    epoch = epoch_;
  }
  for (int i = 0; i < n; ++i) {
    const kmcl::v1::SendPacket& p = batch.packets(i);
    const uint64_t tag = p.tag();
    kmcl::Packet* packet = channel_->AllocatePacket();
    SetSendRoutine(*packet, tag, epoch);
    auto bytes = std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(p.payload().data()),
                                          p.payload().size());
    absl::Status s = channel_->Send(*packet, bytes, external[i],
                                    p.wait_for_completion() ? kmcl::kFormatFlagWaitForCompletion : 0);
    if (!s.ok()) {
      channel_->FreePacket(packet).IgnoreError();
      OnSendDone(tag, epoch, kmcl::ToNtStatus(s), {});
    }
  }
  return absl::OkStatus();
}

void Endpoint::SetSendRoutine(kmcl::Packet& packet, uint64_t tag, uint64_t epoch) {
  {
    kmcl::MutexLock lock(&mu_);
    tags_[&packet] = tag;
  }
  packet.set_completion_routine(
      [this, tag, epoch](kmcl::Packet& pk, kmcl::NTSTATUS status, std::span<const uint8_t> c) {
        {
          kmcl::MutexLock lock(&mu_);
          tags_.erase(&pk);
        }
        OnSendDone(tag, epoch, status, c);
        pk.channel().FreePacket(&pk).IgnoreError();
      });
}

// The tool's tag, little-endian, is the driver state KMCL saves per packet
// (EvtVmbChannelSavePacket).
absl::StatusOr<std::vector<uint8_t>> Endpoint::SavePacket(kmcl::Packet& packet) {
  kmcl::MutexLock lock(&mu_);
  auto it = tags_.find(&packet);
  const uint64_t tag = it == tags_.end() ? 0 : it->second;
  std::vector<uint8_t> out(8);
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(tag >> (8 * i));
  return out;
}

// EvtVmbChannelRestorePacket: the send comes back with its tag, held against
// the send window, its completion kept for the first stream.
absl::Status Endpoint::RestorePacket(std::span<const uint8_t> lib, std::span<const uint8_t> saved) {
  if (saved.size() != 8) return absl::InvalidArgumentError("saved packet state is not a tag");
  uint64_t tag = 0;
  for (int i = 0; i < 8; ++i) tag |= uint64_t{saved[i]} << (8 * i);
  uint64_t epoch;
  {
    kmcl::MutexLock lock(&mu_);
    epoch = epoch_ + 1;  // the next stream's
    ++held_sends_;
  }
  kmcl::Packet* packet = channel_->AllocatePacket();
  SetSendRoutine(*packet, tag, epoch);
  absl::Status s = channel_->RestorePacket(*packet, lib);
  if (!s.ok()) {
    {
      kmcl::MutexLock lock(&mu_);
      --held_sends_;
      tags_.erase(packet);
    }
    channel_->FreePacket(packet).IgnoreError();
  }
  return s;
}

absl::Status Endpoint::HandleCompletions(const kmcl::v1::CompletionBatch& batch) {
  std::vector<std::pair<kmcl::Delivery*, const std::string*>> done;
  absl::Status status;
  {
    kmcl::MutexLock lock(&mu_);
    for (const kmcl::v1::PacketCompletion& c : batch.completions()) {
      if (c.payload().size() > max_packet_size_) {
        status = absl::InvalidArgumentError(
            absl::StrCat("completion of delivery ", c.delivery_id(), ": payload of ",
                         c.payload().size(), " bytes exceeds the maximum packet size ",
                         max_packet_size_));
        break;
      }
      auto it = held_.find(c.delivery_id());
      if (it == held_.end()) {
        status = absl::NotFoundError(absl::StrCat("delivery ", c.delivery_id(),
                                                  " is not an uncompleted delivery of this endpoint"));
        break;
      }
      done.emplace_back(it->second, &c.payload());
      held_.erase(it);
    }
  }
  for (auto& [d, payload] : done) {
    channel_->Complete(*d, std::span<const uint8_t>(
                               reinterpret_cast<const uint8_t*>(payload->data()), payload->size()));
  }
  return status;
}

absl::Status Endpoint::HandleFail(uint64_t delivery_id) {
  kmcl::Delivery* d;
  {
    kmcl::MutexLock lock(&mu_);
    auto it = held_.find(delivery_id);
    if (it == held_.end()) {
      return absl::NotFoundError(absl::StrCat("delivery ", delivery_id,
                                              " is not an uncompleted delivery of this endpoint"));
    }
    d = it->second;
    held_.erase(it);
  }
  channel_->Fail(*d);
  return absl::OkStatus();
}

bool Endpoint::NextMessage(const EndpointStream* stream, kmcl::v1::AttachResponse* out) {
  kmcl::MutexLock lock(&mu_);
  if (stream_.get() != stream || stream == nullptr) return false;
  if (!events_.empty()) {
    *out->mutable_event() = std::move(events_.front());
    events_.pop_front();
    return true;
  }
  // Alternate between deliveries and completions so neither starves.
  for (int round = 0; round < 2; ++round) {
    const bool deliveries_turn = ((next_kind_ + round) % 2) == 0;
    if (deliveries_turn) {
      kmcl::v1::ReceivedBatch* batch = nullptr;
      while (!undelivered_.empty() && delivery_credits_ > 0 &&
             (batch == nullptr || batch->packets_size() < static_cast<int>(max_batch_))) {
        const uint64_t id = undelivered_.front();
        undelivered_.pop_front();
        auto it = held_.find(id);
        if (it == held_.end()) continue;  // completed meanwhile
        if (batch == nullptr) batch = out->mutable_received();
        const kmcl::Delivery& d = *it->second;
        kmcl::v1::ReceivedPacket* p = batch->add_packets();
        p->set_delivery_id(id);
        p->set_payload(d.payload().data(), d.payload().size());
        p->set_completion_requested(d.completion_requested());
        for (const kmcl::GpaRange& r : d.external_ranges()) ToProto(r, p->add_external_ranges());
        --delivery_credits_;
      }
      if (batch != nullptr) {
        next_kind_ = 1;
        return true;
      }
    } else {
      if (!completions_.empty()) {
        kmcl::v1::SendCompletionBatch* batch = out->mutable_send_completions();
        while (!completions_.empty() && batch->completions_size() < static_cast<int>(max_batch_)) {
          kmcl::v1::SendCompletion& c = completions_.front();
          last_written_completion_id_ = std::max(last_written_completion_id_, c.completion_id());
          if (ack_mode_) {
            *batch->add_completions() = c;
            unacked_.push_back(std::move(c));  // until acknowledged
          } else {
            *batch->add_completions() = std::move(c);
            batch->mutable_completions()->rbegin()->clear_completion_id();
          }
          completions_.pop_front();
        }
        next_kind_ = 0;
        return true;
      }
      if (credits_to_return_ > 0) {
        out->mutable_send_credits()->set_credits(credits_to_return_);
        send_credits_ += credits_to_return_;
        credits_to_return_ = 0;
        next_kind_ = 0;
        return true;
      }
    }
  }
  return false;
}

}  // namespace kmcld
