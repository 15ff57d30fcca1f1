// AttachedStream's gRPC side: the Attach calls, what arrives on them, what
// is written, re-attaching, and the stream's own thread (stream_core.h).
#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "clients/cpp/stream_core.h"

namespace kmcl::client {

namespace stream_internal {

bool Retryable(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kAlreadyExists:  // the old stream not yet seen ending
      return true;
    default:
      return false;
  }
}

}  // namespace stream_internal

namespace {

constexpr size_t kMaxWriteBytes = size_t{1} << 20;
constexpr int kMaxWriteItems = 1024;
constexpr size_t kItemOverhead = 16;

}  // namespace

void AttachedStream::Core::StartCall() {
  v1::AttachRequest request;
  std::shared_ptr<Call> call;
  {
    ChangeLock lock(&mu_, &cv_);
    if (done_) return;
    call = std::make_shared<Call>(this);
    call_ = call;
    ++active_calls_;
    ++generation_;
    call_attached_ = false;
    call_dead_ = false;
    write_in_flight_ = true;  // the Attach message
    hold_released_ = false;
    writes_done_sent_ = false;
    in_flight_tags_.clear();
    v1::Attach* a = request.mutable_attach();
    *a->mutable_endpoint() = endpoint_;
    const uint64_t room = options_.delivery_credits > ready_.size()
                              ? options_.delivery_credits - ready_.size() : 1;
    a->set_delivery_credits(static_cast<uint32_t>(room));
    a->set_max_batch(options_.max_batch);
    a->set_ack_completions(true);
    // What the old call saw but may not have acknowledged in time.
    request.set_completions_acked_through(completions_seen_through_);
    completions_acked_through_ = completions_seen_through_;
    credits_to_grant_ = 0;  // the new allowance replaces what the old stream owed
  }
  call->Begin(request, client_->packet_stub());
}

void AttachedStream::Core::OnRead(const v1::AttachResponse& r) {
  {
    ChangeLock lock(&mu_, &cv_);
    ++stats_.messages_read;
    switch (r.kind_case()) {
      case v1::AttachResponse::kAttached:
        HandleAttached(r.attached());
        break;
      case v1::AttachResponse::kReceived:
        for (const v1::ReceivedPacket& p : r.received().packets()) HandleDelivery(p);
        break;
      case v1::AttachResponse::kSendCompletions:
        for (const v1::SendCompletion& c : r.send_completions().completions()) {
          if (c.completion_id() != 0) {
            if (c.completion_id() <= completions_seen_through_) {
              ++stats_.duplicate_completions;  // seen before a reconnect
              continue;
            }
            completions_seen_through_ = c.completion_id();
          }
          auto it = written_.find(c.tag());
          if (it == written_.end()) {
            ++stats_.unknown_completions;  // a previous tool's send
            continue;
          }
          ++stats_.send_results;
          SendResult result{c.status(), c.payload()};
          Post([done = std::move(it->second.done), result = std::move(result)]() mutable {
            if (done) done(std::move(result));
          });
          written_.erase(it);
        }
        break;
      case v1::AttachResponse::kSendCredits:
        send_credits_ += r.send_credits().credits();  // an increment
        break;
      case v1::AttachResponse::kEvent:
        if (options_.on_event) {
          Post([this, e = r.event()] { options_.on_event(e); });
        }
        break;
      case v1::AttachResponse::KIND_NOT_SET:
        break;  // a kind this library does not know yet
    }
  }
  MaybeWrite();
}

void AttachedStream::Core::HandleAttached(const v1::Attached& a) {
  attached_ = a;
  call_attached_ = true;
  send_credits_ = a.send_credits();
  reconnect_at_.reset();
  backoff_ = absl::ZeroDuration();
  if (!ever_attached_) {
    ever_attached_ = true;
    window_ = a.send_credits();  // nothing of ours is held yet
    return;
  }
  // A re-attach. kmcld holds window - send_credits of our sends and of
  // their completions we have not seen (completions we acknowledge use the
  // window); ours beyond that never reached it: they are the newest written
  // (a stream is ordered), so send them again.
  ++stats_.reconnects;
  const uint64_t accounted = window_ > a.send_credits() ? window_ - a.send_credits() : 0;
  uint64_t resend = written_.size() > accounted ? written_.size() - accounted : 0;
  const uint64_t resent = resend;
  while (resend-- > 0) {
    auto last = std::prev(written_.end());
    unsent_.push_front(std::move(last->second));
    written_.erase(last);
  }
  stats_.resent += resent;
  redelivery_ceiling_ = max_delivery_id_;
  awaiting_redelivered_ = a.redelivered();
  if (awaiting_redelivered_ == 0) {
    // Nothing held: every completion written earlier reached kmcld.
    for (auto it = replay_.begin(); it != replay_.end();) {
      it = it->second.written_generation != 0 ? replay_.erase(it) : std::next(it);
    }
  }
  if (options_.on_reconnect) {
    ReconnectInfo info{stats_.reconnects, a.redelivered(), a.recovered_completions(), resent,
                       last_cause_};
    Post([this, info] { options_.on_reconnect(info); });
  }
}

void AttachedStream::Core::HandleDelivery(const v1::ReceivedPacket& p) {
  const uint64_t id = p.delivery_id();
  if (id <= redelivery_ceiling_ && awaiting_redelivered_ > 0) {
    // kmcld sends held deliveries first after a re-attach.
    if (--awaiting_redelivered_ == 0) {
      // The rest of the earlier completions reached kmcld: forget them
      // (after this one is handled below).
      for (auto it = replay_.begin(); it != replay_.end();) {
        const uint64_t g = it->second.written_generation;
        it = (g != 0 && g < generation_ && it->first != id) ? replay_.erase(it) : std::next(it);
      }
    }
  }
  if (id <= redelivery_ceiling_) {
    auto replay = replay_.find(id);
    if (handed_out_.contains(id) || replay != replay_.end()) {
      ++stats_.duplicates_dropped;
      ++credits_to_grant_;
      if (replay != replay_.end() && replay->second.written_generation != 0 &&
          replay->second.written_generation < generation_) {
        // Written on a stream that broke before kmcld read it: again. (One
        // written on this stream crossed the redelivery; kmcld reads it.)
        replay->second.written_generation = 0;
        queued_completions_.push_back(id);
        ++stats_.completions_replayed;
      }
      return;
    }
  }
  max_delivery_id_ = std::max(max_delivery_id_, id);
  ++stats_.deliveries;
  Delivery d{id, p.payload(), p.completion_requested(),
             std::vector<v1::GpaRange>(p.external_ranges().begin(), p.external_ranges().end())};
  handed_out_.insert(id);
  if (options_.on_delivery) {
    Post([this, d = std::move(d)]() mutable {
      options_.on_delivery(*owner_, std::move(d));
      ChangeLock lock(&mu_, &cv_);
      ++credits_to_grant_;
    });
  } else {
    ready_.push_back(std::move(d));
  }
}

void AttachedStream::Core::OnReadFailed(Call* call) {
  bool release = false;
  {
    ChangeLock lock(&mu_, &cv_);
    call_dead_ = true;
    release = !write_in_flight_ && !hold_released_;
    hold_released_ = hold_released_ || release;
  }
  if (release) call->RemoveHold();
}

void AttachedStream::Core::OnWriteDone(Call* call, bool ok) {
  bool release = false;
  bool return_early = false;
  {
    ChangeLock lock(&mu_, &cv_);
    write_in_flight_ = false;
    if (!ok) {
      // Not sent: these sends never reached kmcld.
      for (auto it = in_flight_tags_.rbegin(); it != in_flight_tags_.rend(); ++it) {
        auto w = written_.find(*it);
        if (w == written_.end()) continue;
        unsent_.push_front(std::move(w->second));
        written_.erase(w);
      }
      call_dead_ = true;
    }
    in_flight_tags_.clear();
    release = call_dead_ && !hold_released_;
    hold_released_ = hold_released_ || release;
    if (call_dead_) return_early = true;
  }
  if (release) call->RemoveHold();
  if (return_early) return;
  MaybeWrite();
}

void AttachedStream::Core::MaybeWrite() {
  std::shared_ptr<Call> call;
  v1::AttachRequest request;
  bool writes_done = false;
  {
    ChangeLock lock(&mu_, &cv_);
    if (call_ == nullptr || !call_attached_ || call_dead_ || write_in_flight_ ||
        writes_done_sent_) {
      return;
    }
    if (!BuildWrite(&request)) {
      if (!closing_ || !queued_completions_.empty()) return;
      writes_done = true;
      writes_done_sent_ = true;
    }
    write_in_flight_ = true;
    ++stats_.messages_written;
    call = call_;
  }
  if (writes_done) {
    call->StartWritesDone();
  } else {
    call->Write(std::move(request));
  }
}

bool AttachedStream::Core::BuildWrite(v1::AttachRequest* out) {
  // Every message acknowledges the send completions seen so far; with
  // nothing else to write, an acknowledgement goes alone (it returns send
  // credits).
  const bool ack = completions_seen_through_ > completions_acked_through_;
  if (ack) {
    out->set_completions_acked_through(completions_seen_through_);
    completions_acked_through_ = completions_seen_through_;
  }
  if (BuildKind(out)) return true;
  if (ack) ++stats_.acks_alone;
  return ack;
}

bool AttachedStream::Core::BuildKind(v1::AttachRequest* out) {
  // Completions first: they free the daemon's quota.
  if (!queued_completions_.empty()) {
    size_t bytes = 0;
    size_t n = 0;
    for (; n < queued_completions_.size() && n < kMaxWriteItems; ++n) {
      Replay& r = replay_[queued_completions_[n]];
      if (r.fail) {
        if (n == 0) {
          out->mutable_fail()->set_delivery_id(queued_completions_[0]);
          r.written_generation = generation_;
          ++n;
        }
        break;  // a fail is a message of its own
      }
      if (n > 0 && bytes + r.payload.size() + kItemOverhead > kMaxWriteBytes) break;
      bytes += r.payload.size() + kItemOverhead;
      v1::PacketCompletion* c = out->mutable_completions()->add_completions();
      c->set_delivery_id(queued_completions_[n]);
      c->set_payload(r.payload);
      r.written_generation = generation_;
    }
    queued_completions_.erase(queued_completions_.begin(), queued_completions_.begin() + n);
    return true;
  }
  if (credits_to_grant_ > 0) {
    const uint64_t n = std::min<uint64_t>(credits_to_grant_, UINT32_MAX);
    out->mutable_delivery_credits()->set_credits(static_cast<uint32_t>(n));
    credits_to_grant_ -= n;
    return true;
  }
  if (!unsent_.empty() && !closing_) {
    if (send_credits_ == 0) {
      ++stats_.credit_stalls;
      return false;
    }
    size_t bytes = 0;
    v1::SendBatch* batch = out->mutable_sends();
    while (!unsent_.empty() && send_credits_ > 0 && batch->packets_size() < kMaxWriteItems) {
      PendingSend& s = unsent_.front();
      if (batch->packets_size() > 0 && bytes + s.packet.payload.size() + kItemOverhead >
                                           kMaxWriteBytes) {
        break;
      }
      bytes += s.packet.payload.size() + kItemOverhead;
      v1::SendPacket* p = batch->add_packets();
      p->set_tag(s.tag);
      p->set_payload(s.packet.payload);
      p->set_wait_for_completion(s.packet.wait_for_completion);
      --send_credits_;
      ++stats_.sends;
      in_flight_tags_.push_back(s.tag);
      const uint64_t tag = s.tag;
      written_.emplace(tag, std::move(s));
      unsent_.pop_front();
    }
    return true;
  }
  return false;
}

void AttachedStream::Core::OnDone(Call* ended, const grpc::Status& grpc_status) {
  {
    ChangeLock lock(&mu_, &cv_);
    if (call_.get() == ended) ended_calls_.push_back(std::move(call_));
    call_ = nullptr;
    --active_calls_;
    call_attached_ = false;
    absl::Status status = FromGrpc(grpc_status, "PacketService.Attach");
    if (done_) return;
    if (closing_) {
      Finish(status);
    } else if (status.ok()) {
      Finish(absl::FailedPreconditionError(
          "PacketService.Attach: kmcld ended the stream (the endpoint was freed)"));
    } else if (!ever_attached_ || !options_.reconnect ||
               !stream_internal::Retryable(status.code())) {
      Finish(status);
    } else {
      const absl::Time now = absl::Now();
      if (!reconnect_at_.has_value() && backoff_ == absl::ZeroDuration()) {
        disconnected_since_ = now;
        last_cause_ = status;
      }
      if (now - disconnected_since_ > options_.reconnect_window) {
        Finish(absl::UnavailableError(absl::StrCat(
            "PacketService.Attach: could not re-attach within ",
            absl::FormatDuration(options_.reconnect_window), "; last error: ", status.message())));
      } else {
        backoff_ = backoff_ == absl::ZeroDuration()
                       ? options_.reconnect_backoff
                       : std::min(backoff_ * 2, absl::Seconds(1));
        reconnect_at_ = now + backoff_;
      }
    }
  }
}

void AttachedStream::Core::Finish(absl::Status status) {
  done_ = true;
  final_ = std::move(status);
  reconnect_at_.reset();
  absl::Status why = final_.ok() ? absl::CancelledError("the stream was closed before a result")
                                 : final_;
  auto fail = [&](PendingSend& s) {
    mu_.AssertHeld();  // runs inside Finish, under mu_
    Post([done = std::move(s.done), why] {
      if (done) done(why);
    });
  };
  for (auto& [tag, s] : written_) fail(s);
  for (PendingSend& s : unsent_) fail(s);
  written_.clear();
  unsent_.clear();
}

void AttachedStream::Core::WorkerLoop() {
  for (;;) {
    std::deque<std::function<void()>> work;
    bool reconnect = false;
    {
      ChangeLock lock(&mu_, &cv_);
      // Wakes for work, stop, or a due reconnect (a new reconnect time
      // signals the condition variable, and the deadline is recomputed).
      auto due = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return reconnect_at_.has_value() && absl::Now() >= *reconnect_at_;
      };
      while (work_.empty() && !stop_worker_ && !due()) {
        cv_.WaitWithDeadline(&mu_, reconnect_at_.value_or(absl::InfiniteFuture()));
      }
      work.swap(work_);
      if (reconnect_at_.has_value() && absl::Now() >= *reconnect_at_ && call_ == nullptr) {
        reconnect_at_.reset();
        reconnect = !done_;
      }
      if (work.empty() && !reconnect && stop_worker_) return;
    }
    for (auto& w : work) w();
    if (reconnect) StartCall();
    if (!work.empty()) MaybeWrite();  // credits granted by callbacks
  }
}


}  // namespace kmcl::client
