#include "daemon/services/event_service.h"

#include <deque>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace kmcld {

namespace {

constexpr size_t kReadBatch = 256;

class WatchReactor final : public grpc::ServerWriteReactor<kmcl::v1::Event> {
 public:
  WatchReactor(grpc::CallbackServerContext* ctx, const kmcl::v1::WatchEventsRequest& request,
               ServiceContext services, StreamCounter& streams)
      : services_(services), streams_(streams), peer_(ctx->peer()), request_(request),
        log_(services.registry.log()) {
    absl::Status s = Validate();
    if (s.ok()) s = streams_.Acquire(peer_);
    if (!s.ok()) {
      finished_ = true;
      Finish(ToGrpc(s));
      return;
    }
    counted_ = true;
    after_ = request_.after_sequence();
    backlog_end_ = log_.last_sequence();
    subscription_ = log_.Subscribe([this] { Pump(); });
    Pump();
  }

  void OnWriteDone(bool ok) override {
    {
      kmcl::MutexLock lock(&mu_);
      write_in_flight_ = false;
      if (pending_finish_.has_value()) {
        Finish(*pending_finish_);
        pending_finish_.reset();
        return;
      }
      if (!ok) {
        FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the watcher went away"));
      }
    }
    Pump();
  }

  void OnCancel() override {
    kmcl::MutexLock lock(&mu_);
    FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled"));
  }

  void OnDone() override {
    if (subscription_ != 0) log_.Unsubscribe(subscription_);
    if (counted_) streams_.Release(peer_);
    delete this;
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
    if (request_.has_channel()) {
      const kmcl::v1::ChannelRef& c = request_.channel();
      if (e.partition_id() != c.partition_id() || e.channel().channel_id() != c.channel_id()) return false;
      if (c.offer_sequence() != 0 && e.channel().offer_sequence() != c.offer_sequence()) return false;
    }
    return true;
  }

  void Pump() {
    kmcl::MutexLock lock(&mu_);
    if (finished_ || write_in_flight_) return;
    while (pending_.empty()) {
      std::vector<kmcl::v1::Event> batch;
      absl::Status s = log_.Read(after_, kReadBatch, &batch);
      if (!s.ok()) {
        FinishLocked(ToGrpc(s));
        return;
      }
      if (batch.empty()) {
        if (request_.backlog_only() && after_ >= backlog_end_) {
          FinishLocked(grpc::Status::OK);
        }
        return;
      }
      for (kmcl::v1::Event& e : batch) {
        after_ = e.sequence();
        if (request_.backlog_only() && e.sequence() > backlog_end_) break;
        if (Matches(e)) pending_.push_back(std::move(e));
      }
      if (request_.backlog_only() && after_ >= backlog_end_ && pending_.empty()) {
        FinishLocked(grpc::Status::OK);
        return;
      }
    }
    out_ = std::move(pending_.front());
    pending_.pop_front();
    write_in_flight_ = true;
    StartWrite(&out_);
  }

  void FinishLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    if (write_in_flight_) {
      pending_finish_ = std::move(status);  // after the write in flight
      return;
    }
    Finish(status);
  }

  ServiceContext services_;
  StreamCounter& streams_;
  const std::string peer_;
  const kmcl::v1::WatchEventsRequest request_;
  EventLog& log_;
  bool counted_ = false;
  uint64_t subscription_ = 0;
  uint64_t backlog_end_ = 0;
  kmcl::Mutex mu_;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t after_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<kmcl::v1::Event> pending_ ABSL_GUARDED_BY(mu_);
  std::optional<grpc::Status> pending_finish_ ABSL_GUARDED_BY(mu_);
  kmcl::v1::Event out_;
};

}  // namespace

grpc::ServerWriteReactor<kmcl::v1::Event>* EventService::WatchEvents(
    grpc::CallbackServerContext* ctx, const kmcl::v1::WatchEventsRequest* request) {
  return new WatchReactor(ctx, *request, ctx_, streams_);
}

}  // namespace kmcld
