#include "daemon/services/event_service.h"

#include <deque>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/stream_pump.h"

namespace kmcld {

namespace {

constexpr size_t kReadBatch = 256;

class WatchReactor final : public grpc::ServerWriteReactor<kmcl::v1::Event>,
                           public security::RevocableStream {
 public:
  WatchReactor(grpc::CallbackServerContext* ctx, const kmcl::v1::WatchEventsRequest& request,
               ServiceContext services, StreamCounter& streams)
      : services_(services), streams_(streams), peer_(ctx->peer()), request_(request),
        log_(services.registry.log()) {
    // Without a partition the stream spans partitions: keep only the events
    // of those the caller may observe, under the policy of each moment.
    if (services.authorizer != nullptr && request_.partition_id().empty()) {
      caller_ = security::PeerOf(*ctx);
    }
    // Deleted when gRPC is done with it and no pump task holds it.
    self_ = std::shared_ptr<WatchReactor>(this, [](WatchReactor* r) { delete r; });
    absl::Status s = Validate();
    if (s.ok()) {
      auto slot = AcquireStreamSlot(services, ctx, "WatchEvents");
      s = slot.status();
      if (slot.ok()) slot_ = *std::move(slot);
    }
    if (s.ok()) s = streams_.Acquire(peer_);
    if (s.ok()) counted_ = true;
    if (s.ok()) {
      // A reload that revokes observer (on the partition, or on every
      // partition for a stream that spans them) ends the stream.
      std::weak_ptr<security::RevocableStream> revocable;
      {
        kmcl::MutexLock lock(&mu_);
        revocable = self_;
      }
      s = HoldStream(services, slot_.get(), "WatchEvents", request_.partition_id(), security::OBSERVER,
                     std::move(revocable));
    }
    if (!s.ok()) {
      {
        kmcl::MutexLock lock(&mu_);
        FinishLocked(ToGrpc(s));
      }
      FlushFinish();
      return;
    }
    {
      kmcl::MutexLock lock(&mu_);
      after_ = request_.after_sequence();
    }
    backlog_end_ = log_.last_sequence();
    // Appends happen on any thread (a channel's included): hop to the
    // stream pump before touching gRPC (stream_pump.h says why).
    subscription_ = log_.Subscribe([this] { WakeFromLog(); });
    Pump();
  }

  void OnWriteDone(bool ok) override {
    {
      kmcl::MutexLock lock(&mu_);
      write_in_flight_ = false;
      if (pending_finish_.has_value()) {
        finish_now_ = std::move(pending_finish_);
        pending_finish_.reset();
      } else if (!ok) {
        FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the watcher went away"));
      }
    }
    Pump();
  }

  void OnCancel() override {
    {
      kmcl::MutexLock lock(&mu_);
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled"));
    }
    FlushFinish();
  }

  // The policy no longer allows this stream (from the reloading thread):
  // finish it from the stream pump.
  void Revoke(const absl::Status& status) override {
    std::shared_ptr<WatchReactor> self;
    {
      kmcl::MutexLock lock(&mu_);
      if (done_ || finished_ || self_ == nullptr) return;
      self = self_;
    }
    StreamPump::Default().Post([self, status] {
      {
        kmcl::MutexLock lock(&self->mu_);
        if (self->done_) return;
        self->FinishLocked(ToGrpc(status));
      }
      self->FlushFinish();
    });
  }

  void OnDone() override {
    if (subscription_ != 0) log_.Unsubscribe(subscription_);  // no wake-up after this
    if (counted_) streams_.Release(peer_);
    std::shared_ptr<WatchReactor> self;
    {
      kmcl::MutexLock lock(&mu_);
      done_ = true;
      self = std::move(self_);
    }
    // `self` going out of scope deletes this, unless a pump task still
    // holds it (it then sees done_ and does nothing).
  }

 private:
  absl::Status Validate() {
    if (!request_.partition_id().empty()) {
      auto p = services_.registry.GetPartition(request_.partition_id());
      if (!p.ok()) return p.status();
    }
    if (request_.has_channel()) {
      const kmcl::v1::ChannelRef& c = request_.channel();
      if (c.partition_id().empty() || c.channel_id() == 0) {
        return absl::InvalidArgumentError("channel filter needs partition_id and channel_id");
      }
      if (!request_.partition_id().empty() && c.partition_id() != request_.partition_id()) {
        return absl::InvalidArgumentError("channel.partition_id differs from partition_id");
      }
    }
    return absl::OkStatus();
  }

  bool Matches(const kmcl::v1::Event& e) const {
    if (!request_.partition_id().empty() && e.partition_id() != request_.partition_id()) return false;
    if (caller_.has_value() && !services_.authorizer->Visible(*caller_, e.partition_id())) return false;
    if (request_.has_channel()) {
      const kmcl::v1::ChannelRef& c = request_.channel();
      if (e.partition_id() != c.partition_id() || e.channel().channel_id() != c.channel_id()) return false;
      if (c.offer_sequence() != 0 && e.channel().offer_sequence() != c.offer_sequence()) return false;
    }
    return true;
  }

  void WakeFromLog() {
    std::shared_ptr<WatchReactor> self;
    {
      kmcl::MutexLock lock(&mu_);
      if (done_ || finished_ || wake_queued_ || self_ == nullptr) return;
      wake_queued_ = true;
      self = self_;
    }
    StreamPump::Default().Post([self] {
      {
        kmcl::MutexLock lock(&self->mu_);
        self->wake_queued_ = false;
        if (self->done_) return;
      }
      self->Pump();
    });
  }

  // From gRPC's reactions, the constructor or the stream pump; gRPC is
  // called only after mu_ is released.
  void Pump() {
    if (PrepareWrite()) StartWrite(&out_);
    FlushFinish();
  }

  // True when out_ holds the next event to write (write_in_flight_ set).
  bool PrepareWrite() {
    kmcl::MutexLock lock(&mu_);
    if (done_ || finished_ || write_in_flight_) return false;
    while (pending_.empty()) {
      std::vector<kmcl::v1::Event> batch;
      absl::Status s = log_.Read(after_, kReadBatch, &batch);
      if (!s.ok()) {
        FinishLocked(ToGrpc(s));
        return false;
      }
      if (batch.empty()) {
        if (request_.backlog_only() && after_ >= backlog_end_) FinishLocked(grpc::Status::OK);
        return false;
      }
      for (kmcl::v1::Event& e : batch) {
        after_ = e.sequence();
        if (request_.backlog_only() && e.sequence() > backlog_end_) break;
        if (Matches(e)) pending_.push_back(std::move(e));
      }
      if (request_.backlog_only() && after_ >= backlog_end_ && pending_.empty()) {
        FinishLocked(grpc::Status::OK);
        return false;
      }
    }
    out_ = std::move(pending_.front());
    pending_.pop_front();
    write_in_flight_ = true;
    return true;
  }

  // Decides to finish: now (FlushFinish, outside mu_) or after the write in
  // flight (OnWriteDone).
  void FinishLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    if (write_in_flight_) {
      pending_finish_ = std::move(status);
    } else {
      finish_now_ = std::move(status);
    }
  }

  void FlushFinish() {
    std::optional<grpc::Status> status;
    {
      kmcl::MutexLock lock(&mu_);
      status = std::move(finish_now_);
      finish_now_.reset();
    }
    if (status.has_value()) Finish(*status);
  }

  ServiceContext services_;
  StreamCounter& streams_;
  const std::string peer_;
  std::optional<security::Peer> caller_;  // set: filter events by Visible
  const kmcl::v1::WatchEventsRequest request_;
  EventLog& log_;
  bool counted_ = false;
  std::unique_ptr<security::StreamSlot> slot_;  // the identity's place, until deleted
  uint64_t subscription_ = 0;
  uint64_t backlog_end_ = 0;
  kmcl::Mutex mu_;
  std::shared_ptr<WatchReactor> self_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool wake_queued_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t after_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<kmcl::v1::Event> pending_ ABSL_GUARDED_BY(mu_);
  std::optional<grpc::Status> pending_finish_ ABSL_GUARDED_BY(mu_);
  std::optional<grpc::Status> finish_now_ ABSL_GUARDED_BY(mu_);
  kmcl::v1::Event out_;
};

}  // namespace

grpc::ServerWriteReactor<kmcl::v1::Event>* EventService::WatchEvents(
    grpc::CallbackServerContext* ctx, const kmcl::v1::WatchEventsRequest* request) {
  if (absl::Status s = Authorize(ctx_, ctx, "WatchEvents", *request); !s.ok()) {
    return RefuseStream<kmcl::v1::Event>(s);
  }
  return new WatchReactor(ctx, *request, ctx_, streams_);
}

}  // namespace kmcld
