#include "clients/cpp/stream.h"

#include <algorithm>
#include <deque>
#include <map>
#include <optional>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/support/client_callback.h"
#include "kmcl_core/mutex.h"

namespace kmcl::client {
namespace {

constexpr size_t kMaxWriteBytes = size_t{1} << 20;
constexpr int kMaxWriteItems = 1024;
constexpr size_t kItemOverhead = 16;

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

// Holds the stream's mutex and, on release, wakes everyone waiting on its
// condition variable: every state change is made under one of these, so a
// waiter re-checks its predicate after each.
class ChangeLock {
 public:
  ChangeLock(kmcl::Mutex* mu, kmcl::CondVar* cv) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu)
      : mu_(mu), cv_(cv) {
    mu_->Lock();
  }
  ~ChangeLock() ABSL_UNLOCK_FUNCTION() {
    cv_->SignalAll();
    mu_->Unlock();
  }
  ChangeLock(const ChangeLock&) = delete;
  ChangeLock& operator=(const ChangeLock&) = delete;

 private:
  kmcl::Mutex* const mu_;
  kmcl::CondVar* const cv_;
};

struct PendingSend {
  uint64_t tag = 0;
  OutgoingPacket packet;
  AttachedStream::SendCallback done;
};

// A completion or fail the tool issued, kept to re-send after a reconnect.
struct Replay {
  std::string payload;
  bool fail = false;
  uint64_t written_generation = 0;  // 0: queued, not written yet
};

}  // namespace

class AttachedStream::Core : public std::enable_shared_from_this<Core> {
 public:
  Core(std::shared_ptr<Client> client, v1::EndpointRef endpoint, StreamOptions options)
      : client_(std::move(client)), endpoint_(std::move(endpoint)), options_(std::move(options)) {
    tag_base_ = absl::Uniform<uint64_t>(absl::BitGen(), 1, uint64_t{1} << 62);
    if (options_.delivery_credits == 0) options_.delivery_credits = 64;
  }

  // The facade handed to on_delivery; set before Start, outlives the worker.
  void set_owner(AttachedStream* owner) { owner_ = owner; }
  absl::Status Start();
  void Send(OutgoingPacket packet, SendCallback done);
  absl::StatusOr<Delivery> Receive(absl::Time deadline);
  absl::Status CompleteOrFail(uint64_t id, std::string payload, bool fail);
  absl::Status Close(absl::Duration drain);
  void Break();
  v1::Attached attached() const {
    ChangeLock lock(&mu_, &cv_);
    return attached_;
  }
  Stats stats() const {
    ChangeLock lock(&mu_, &cv_);
    return stats_;
  }

 private:
  class Call;
  friend class Call;

  // The gRPC side (from Call's reactions).
  void OnRead(const v1::AttachResponse& response);
  void OnReadFailed(Call* call);
  void OnWriteDone(Call* call, bool ok);
  void OnDone(const grpc::Status& status);

  void StartCall() ABSL_LOCKS_EXCLUDED(mu_);
  // Starts the next write if the slot is free and something is pending.
  void MaybeWrite() ABSL_LOCKS_EXCLUDED(mu_);
  bool BuildWrite(v1::AttachRequest* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void HandleAttached(const v1::Attached& a) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void HandleDelivery(const v1::ReceivedPacket& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Finish(absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Post(std::function<void()> work) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    work_.push_back(std::move(work));
  }
  void WorkerLoop();

  const std::shared_ptr<Client> client_;
  const v1::EndpointRef endpoint_;
  StreamOptions options_;
  uint64_t tag_base_ = 0;

  // Waits (mu_ held) until `done()` or `deadline`; false on the deadline.
  template <typename Pred>
  bool WaitUntil(Pred done, absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    while (!done()) {
      if (cv_.WaitWithDeadline(&mu_, deadline)) return done();
    }
    return true;
  }

  mutable kmcl::Mutex mu_;
  mutable kmcl::CondVar cv_;
  // The current call and its write slot.
  std::shared_ptr<Call> call_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool call_attached_ ABSL_GUARDED_BY(mu_) = false;
  bool call_dead_ ABSL_GUARDED_BY(mu_) = false;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool hold_released_ ABSL_GUARDED_BY(mu_) = false;
  bool writes_done_sent_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<uint64_t> in_flight_tags_ ABSL_GUARDED_BY(mu_);
  v1::Attached attached_ ABSL_GUARDED_BY(mu_);
  bool ever_attached_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t window_ ABSL_GUARDED_BY(mu_) = 0;  // the daemon's send window
  // Lifecycle.
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status final_ ABSL_GUARDED_BY(mu_);
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_worker_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<absl::Time> reconnect_at_ ABSL_GUARDED_BY(mu_);
  absl::Time disconnected_since_ ABSL_GUARDED_BY(mu_);
  absl::Duration backoff_ ABSL_GUARDED_BY(mu_);
  absl::Status last_cause_ ABSL_GUARDED_BY(mu_);
  // Sends: queued (not in any write) and written (awaiting a result), both
  // in tag order, which is write order.
  uint64_t next_tag_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<PendingSend> unsent_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, PendingSend> written_ ABSL_GUARDED_BY(mu_);
  uint64_t send_credits_ ABSL_GUARDED_BY(mu_) = 0;
  // Deliveries.
  std::deque<Delivery> ready_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<uint64_t> handed_out_ ABSL_GUARDED_BY(mu_);  // not yet completed
  std::map<uint64_t, Replay> replay_ ABSL_GUARDED_BY(mu_);         // completed, by id
  std::deque<uint64_t> replay_order_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> queued_completions_ ABSL_GUARDED_BY(mu_);  // ids, in order
  uint64_t credits_to_grant_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t max_delivery_id_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t redelivery_ceiling_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t awaiting_redelivered_ ABSL_GUARDED_BY(mu_) = 0;
  // Callbacks for the stream's thread.
  std::deque<std::function<void()>> work_ ABSL_GUARDED_BY(mu_);
  AttachedStream* owner_ = nullptr;
  std::thread worker_;
  std::thread::id worker_id_;
  Stats stats_ ABSL_GUARDED_BY(mu_);
};

// One Attach call: a gRPC callback reactor. Its state lives in Core (one
// call is current at a time; the next starts after this one's OnDone). A
// hold keeps it from finishing while Core may still start a write on it.
class AttachedStream::Core::Call
    : public grpc::ClientBidiReactor<v1::AttachRequest, v1::AttachResponse> {
 public:
  explicit Call(std::shared_ptr<Core> core) : core_(std::move(core)) {}

  void Begin(const v1::AttachRequest& attach, v1::PacketService::Stub& stub) {
    out_ = attach;
    stub.async()->Attach(&context_, this);
    AddHold();  // the writer's hold, released once no write can start
    StartWrite(&out_);
    StartRead(&in_);
    StartCall();
  }
  void Write(v1::AttachRequest request) {
    out_ = std::move(request);
    StartWrite(&out_);
  }
  void Cancel() { context_.TryCancel(); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      core_->OnReadFailed(this);
      return;
    }
    core_->OnRead(in_);
    StartRead(&in_);
  }
  void OnWriteDone(bool ok) override { core_->OnWriteDone(this, ok); }
  void OnWritesDoneDone(bool ok) override { core_->OnWriteDone(this, ok); }
  void OnDone(const grpc::Status& status) override {
    std::shared_ptr<Core> core = std::move(core_);
    core->OnDone(status);  // drops Core's reference to this call
  }

 private:
  friend class Core;
  std::shared_ptr<Core> core_;
  grpc::ClientContext context_;
  v1::AttachRequest out_;
  v1::AttachResponse in_;
};

absl::Status AttachedStream::Core::Start() {
  worker_ = std::thread([this] { WorkerLoop(); });
  worker_id_ = worker_.get_id();
  StartCall();
  const absl::Time deadline = absl::Now() + client_->options().call_timeout;
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return ever_attached_ || done_; };
  std::shared_ptr<Call> late;
  {
    ChangeLock lock(&mu_, &cv_);
    if (!WaitUntil(ready, deadline)) late = call_;
  }
  if (late != nullptr) late->Cancel();  // OnDone then ends the attempt
  ChangeLock lock(&mu_, &cv_);
  WaitUntil(ready, absl::InfiniteFuture());
  if (ever_attached_) return absl::OkStatus();
  return final_;
}

void AttachedStream::Core::StartCall() {
  v1::AttachRequest request;
  std::shared_ptr<Call> call;
  {
    ChangeLock lock(&mu_, &cv_);
    if (done_) return;
    call = std::make_shared<Call>(shared_from_this());
    call_ = call;
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
  // A re-attach. kmcld holds window - send_credits sends and kept
  // `recovered` completions; ours beyond that never reached it: they are
  // the newest written (a stream is ordered), so send them again.
  ++stats_.reconnects;
  const uint64_t held = window_ > a.send_credits() ? window_ - a.send_credits() : 0;
  const uint64_t accounted = held + a.recovered_completions();
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

void AttachedStream::Core::OnDone(const grpc::Status& grpc_status) {
  std::shared_ptr<Call> dead;
  {
    ChangeLock lock(&mu_, &cv_);
    dead = std::move(call_);
    call_ = nullptr;
    call_attached_ = false;
    absl::Status status = FromGrpc(grpc_status, "PacketService.Attach");
    if (done_) return;
    if (closing_) {
      Finish(status);
    } else if (status.ok()) {
      Finish(absl::FailedPreconditionError(
          "PacketService.Attach: kmcld ended the stream (the endpoint was freed)"));
    } else if (!ever_attached_ || !options_.reconnect || !Retryable(status.code())) {
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
  // `dead` (the reactor) is released here, after its last reaction.
}

void AttachedStream::Core::Finish(absl::Status status) {
  done_ = true;
  final_ = std::move(status);
  reconnect_at_.reset();
  absl::Status why = final_.ok() ? absl::CancelledError("the stream was closed before a result")
                                 : final_;
  auto fail = [&](PendingSend& s) {
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

void AttachedStream::Core::Send(OutgoingPacket packet, SendCallback done) {
  {
    ChangeLock lock(&mu_, &cv_);
    absl::Status error;
    if (done_ || closing_) {
      error = done_ && !final_.ok() ? final_
                                   : absl::FailedPreconditionError("AttachedStream: closed");
    } else if (packet.payload.size() > attached_.max_packet_size()) {
      error = absl::InvalidArgumentError(absl::StrCat(
          "AttachedStream: a payload of ", packet.payload.size(),
          " bytes exceeds the channel's maximum packet size of ", attached_.max_packet_size()));
    }
    if (!error.ok()) {
      Post([done = std::move(done), error] {
        if (done) done(error);
      });
      return;
    }
    unsent_.push_back(PendingSend{tag_base_ + next_tag_++, std::move(packet), std::move(done)});
  }
  MaybeWrite();
}

absl::StatusOr<Delivery> AttachedStream::Core::Receive(absl::Time deadline) {
  absl::StatusOr<Delivery> out;
  {
    ChangeLock lock(&mu_, &cv_);
    if (options_.on_delivery) {
      return absl::FailedPreconditionError("AttachedStream: deliveries go to on_delivery");
    }
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !ready_.empty() || done_; };
    if (!WaitUntil(ready, deadline)) {
      return absl::DeadlineExceededError("AttachedStream: no delivery before the deadline");
    }
    if (ready_.empty()) {
      return final_.ok() ? absl::FailedPreconditionError("AttachedStream: the stream ended")
                         : final_;
    }
    out = std::move(ready_.front());
    ready_.pop_front();
    ++credits_to_grant_;
  }
  MaybeWrite();
  return out;
}

absl::Status AttachedStream::Core::CompleteOrFail(uint64_t id, std::string payload, bool fail) {
  {
    ChangeLock lock(&mu_, &cv_);
    if (!handed_out_.contains(id)) {
      return absl::NotFoundError(
          absl::StrCat("AttachedStream: delivery ", id, " is not an uncompleted delivery"));
    }
    if (payload.size() > attached_.max_packet_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "AttachedStream: a completion of ", payload.size(),
          " bytes exceeds the channel's maximum packet size of ", attached_.max_packet_size()));
    }
    if (done_) return final_.ok() ? absl::FailedPreconditionError("AttachedStream: closed") : final_;
    handed_out_.erase(id);
    replay_[id] = Replay{std::move(payload), fail, 0};
    replay_order_.push_back(id);
    while (replay_order_.size() > options_.completion_replay) {
      auto it = replay_.find(replay_order_.front());
      if (it != replay_.end()) {
        if (it->second.written_generation == 0) break;  // still queued: keep
        replay_.erase(it);
      }
      replay_order_.pop_front();
    }
    queued_completions_.push_back(id);
  }
  MaybeWrite();
  return absl::OkStatus();
}

absl::Status AttachedStream::Core::Close(absl::Duration drain) {
  if (std::this_thread::get_id() == worker_id_) {
    return absl::FailedPreconditionError("AttachedStream: Close from one of its callbacks");
  }
  std::shared_ptr<Call> call;
  {
    ChangeLock lock(&mu_, &cv_);
    auto drained = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return done_ || (unsent_.empty() && written_.empty());
    };
    WaitUntil(drained, absl::Now() + drain);
    closing_ = true;
    reconnect_at_.reset();
    if (call_ == nullptr && !done_) Finish(last_cause_);  // detached: nothing to close
    call = call_;
  }
  MaybeWrite();  // WritesDone once the completions are out
  {
    ChangeLock lock(&mu_, &cv_);
    auto finished = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done_; };
    if (!WaitUntil(finished, absl::Now() + absl::Seconds(10)) && call != nullptr) {
      call->Cancel();
      WaitUntil(finished, absl::InfiniteFuture());
    }
    stop_worker_ = true;
  }
  if (worker_.joinable()) worker_.join();
  ChangeLock lock(&mu_, &cv_);
  return final_;
}

void AttachedStream::Core::Break() {
  std::shared_ptr<Call> call;
  {
    ChangeLock lock(&mu_, &cv_);
    call = call_;
  }
  if (call != nullptr) call->Cancel();
}

// --- AttachedStream

absl::StatusOr<std::unique_ptr<AttachedStream>> AttachedStream::Attach(
    std::shared_ptr<Client> client, const v1::EndpointRef& endpoint, StreamOptions options) {
  auto core = std::make_shared<Core>(std::move(client), endpoint, std::move(options));
  std::unique_ptr<AttachedStream> stream(new AttachedStream(core));
  absl::Status s = core->Start();
  if (!s.ok()) {
    stream->Close(absl::ZeroDuration()).IgnoreError();
    return s;
  }
  return stream;
}

AttachedStream::AttachedStream(std::shared_ptr<Core> core) : core_(std::move(core)) {
  core_->set_owner(this);
}

AttachedStream::~AttachedStream() { core_->Close(absl::Seconds(5)).IgnoreError(); }

void AttachedStream::Send(OutgoingPacket packet, SendCallback done) {
  core_->Send(std::move(packet), std::move(done));
}

std::future<absl::StatusOr<SendResult>> AttachedStream::Send(OutgoingPacket packet) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<SendResult>>>();
  std::future<absl::StatusOr<SendResult>> future = promise->get_future();
  core_->Send(std::move(packet),
              [promise](absl::StatusOr<SendResult> r) { promise->set_value(std::move(r)); });
  return future;
}

absl::StatusOr<Delivery> AttachedStream::Receive(absl::Time deadline) {
  return core_->Receive(deadline);
}
absl::Status AttachedStream::Complete(uint64_t id, std::string payload) {
  return core_->CompleteOrFail(id, std::move(payload), false);
}
absl::Status AttachedStream::Fail(uint64_t id) { return core_->CompleteOrFail(id, "", true); }
absl::Status AttachedStream::Close(absl::Duration drain) { return core_->Close(drain); }
v1::Attached AttachedStream::attached() const { return core_->attached(); }
uint32_t AttachedStream::max_packet_size() const { return core_->attached().max_packet_size(); }
AttachedStream::Stats AttachedStream::stats() const { return core_->stats(); }
void AttachedStream::BreakConnectionForTesting() { core_->Break(); }

}  // namespace kmcl::client
