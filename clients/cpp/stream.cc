// AttachedStream: what the tool calls (stream.h); the gRPC side is in
// stream_core.cc.
#include "clients/cpp/stream.h"

#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "clients/cpp/stream_core.h"

namespace kmcl::client {

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
    auto finished = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return done_ && active_calls_ == 0;
    };
    if (WaitUntil(finished, absl::Now() + absl::Seconds(10))) call = nullptr;
  }
  if (call != nullptr) call->Cancel();  // kmcld did not finish the stream: end it
  {
    ChangeLock lock(&mu_, &cv_);
    auto finished = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return done_ && active_calls_ == 0;
    };
    WaitUntil(finished, absl::InfiniteFuture());
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

AttachedStream::Core::~Core() {
  // A gRPC thread may still be leaving the lock after the last OnDone.
  kmcl::MutexLock lock(&mu_);
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
