#include "daemon/services/save_restore_service.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/services/partition_service.h"

namespace kmcld {

namespace {

constexpr uint32_t kDefaultChunk = 256 << 10;
constexpr uint32_t kMaxChunk = 4 << 20;

// Computes a blob on the blocking pool, then streams it in chunks, one
// write in flight. The reactor finishes only after the computation, so
// OnDone never races it.
class SaveReactor final : public grpc::ServerWriteReactor<kmcl::v1::SaveChunk> {
 public:
  SaveReactor(grpc::CallbackServerContext* ctx, BlockingPool& pool, BlockingKey key, uint32_t chunk_bytes,
              std::function<absl::StatusOr<std::string>()> compute) {
    if (chunk_bytes > kMaxChunk) {
      Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("chunk_bytes ", chunk_bytes, " is above ", kMaxChunk)));
      return;
    }
    chunk_ = chunk_bytes == 0 ? kDefaultChunk : chunk_bytes;
    BlockingPool::Job job;
    job.partition = std::move(key.partition);
    job.lane = std::move(key.lane);
    job.run = [this, compute = std::move(compute)] {
      absl::StatusOr<std::string> blob = compute();
      if (!blob.ok()) {
        Finish(ToGrpc(blob.status()));
        return;
      }
      blob_ = *std::move(blob);
      Next();
    };
    job.drop = [this](const absl::Status& why) { Finish(ToGrpc(why)); };
    job.cancelled = [ctx] { return ctx->IsCancelled(); };
    if (absl::Status s = pool.Submit(std::move(job)); !s.ok()) Finish(ToGrpc(s));
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the client went away"));
      return;
    }
    Next();
  }
  void OnDone() override { delete this; }

 private:
  void Next() {
    if (sent_ && offset_ >= blob_.size()) {
      Finish(grpc::Status::OK);
      return;
    }
    const size_t n = std::min<size_t>(chunk_, blob_.size() - offset_);
    out_.Clear();
    out_.set_data(blob_.data() + offset_, n);
    out_.set_offset(offset_);
    offset_ += n;
    sent_ = true;
    if (offset_ >= blob_.size()) {
      out_.set_last(true);
      out_.set_total_bytes(blob_.size());
    }
    StartWrite(&out_);
  }
  uint32_t chunk_ = kDefaultChunk;
  std::string blob_;
  size_t offset_ = 0;
  bool sent_ = false;
  kmcl::v1::SaveChunk out_;
};

// Collects a RestoreChunk stream (target first), bounded, then restores on
// the blocking pool.
class RestoreReactor final : public grpc::ServerReadReactor<kmcl::v1::RestoreChunk> {
 public:
  using Restore = std::function<absl::Status(const std::string& target, const std::string& blob)>;
  // `authorize` checks the target chunk before any data is taken.
  using Authorize = std::function<absl::Status(const kmcl::v1::RestoreChunk& target)>;
  RestoreReactor(grpc::CallbackServerContext* ctx, BlockingPool& pool, uint64_t max_bytes,
                 std::atomic<uint64_t>& in_flight, Authorize authorize, Restore restore)
      : ctx_(ctx), pool_(pool), max_bytes_(max_bytes), in_flight_(in_flight),
        authorize_(std::move(authorize)), restore_(std::move(restore)) {
    StartRead(&in_);
  }
  void OnReadDone(bool ok) override {
    if (!ok) {
      if (ctx_->IsCancelled()) {  // a broken stream is not a complete blob
        Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the restore stream was cancelled"));
        return;
      }
      if (!have_target_) {
        Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "a restore stream must start with its target"));
        return;
      }
      BlockingPool::Job job;
      job.partition = target_;
      job.run = [this] { Finish(ToGrpc(restore_(target_, blob_))); };
      job.drop = [this](const absl::Status& why) { Finish(ToGrpc(why)); };
      job.cancelled = [ctx = ctx_] { return ctx->IsCancelled(); };
      if (absl::Status s = pool_.Submit(std::move(job)); !s.ok()) Finish(ToGrpc(s));
      return;
    }
    if (!have_target_) {
      if (in_.kind_case() != kmcl::v1::RestoreChunk::kTarget) {
        Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "the first RestoreChunk must be the target"));
        return;
      }
      if (absl::Status s = authorize_(in_); !s.ok()) {
        Finish(ToGrpc(s));
        return;
      }
      have_target_ = true;
      target_ = in_.target().partition_id();
    } else if (in_.kind_case() != kmcl::v1::RestoreChunk::kData) {
      Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "after the target, a restore stream carries only data"));
      return;
    } else {
      // A bundle begins with its version field (tag 1, varint): refuse
      // anything else at the first byte instead of buffering it.
      if (blob_.empty() && !in_.data().empty() && in_.data()[0] != '\x08') {
        Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "the blob is not a kmcld saved bundle"));
        return;
      }
      // The limit holds for one stream and for all restore streams together.
      const uint64_t n = in_.data().size();
      bool over = blob_.size() + n > max_bytes_;
      if (!over && in_flight_.fetch_add(n) + n > max_bytes_) {
        in_flight_.fetch_sub(n);
        over = true;
      }
      if (over) {
        Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                            absl::StrCat("restores in flight would hold more than "
                                         "max_restore_bytes (", max_bytes_, ")")));
        return;
      }
      counted_ += n;
      blob_ += in_.data();
    }
    StartRead(&in_);
  }
  void OnDone() override {
    in_flight_.fetch_sub(counted_);
    delete this;
  }

 private:
  grpc::CallbackServerContext* ctx_;
  BlockingPool& pool_;
  const uint64_t max_bytes_;
  std::atomic<uint64_t>& in_flight_;  // bytes all restore streams hold
  uint64_t counted_ = 0;              // this stream's share of in_flight_
  Authorize authorize_;
  Restore restore_;
  bool have_target_ = false;
  std::string target_;
  std::string blob_;
  kmcl::v1::RestoreChunk in_;
};

}  // namespace

grpc::ServerWriteReactor<kmcl::v1::SaveChunk>* SaveRestoreService::SaveChannel(
    grpc::CallbackServerContext* ctx, const kmcl::v1::SaveChannelRequest* request) {
  if (absl::Status s = Authorize(ctx_, ctx, "SaveChannel", *request); !s.ok()) {
    return RefuseStream<kmcl::v1::SaveChunk>(s);
  }
  const kmcl::v1::ChannelRef& channel = request->channel();
  return new SaveReactor(ctx, ctx_.pool, {channel.partition_id(), ChannelLane(channel.channel_id())},
                         request->chunk_bytes(), [this, ref = channel] {
    return SaveChannelBundle(ctx_.registry, ref);
  });
}

grpc::ServerWriteReactor<kmcl::v1::SaveChunk>* SaveRestoreService::SavePartition(
    grpc::CallbackServerContext* ctx, const kmcl::v1::SavePartitionRequest* request) {
  if (absl::Status s = Authorize(ctx_, ctx, "SavePartition", *request); !s.ok()) {
    return RefuseStream<kmcl::v1::SaveChunk>(s);
  }
  return new SaveReactor(ctx, ctx_.pool, {request->partition_id(), ""}, request->chunk_bytes(),
                         [this, id = request->partition_id(), stay = request->stay_paused()] {
                           return SavePartitionBundle(ctx_.registry, id, stay);
                         });
}

grpc::ServerReadReactor<kmcl::v1::RestoreChunk>* SaveRestoreService::RestoreChannel(
    grpc::CallbackServerContext* ctx, kmcl::v1::RestoreChannelResponse* response) {
  return new RestoreReactor(ctx, ctx_.pool, limits_.max_restore_bytes, restore_in_flight_,
                            [this, ctx](const kmcl::v1::RestoreChunk& target) {
                              return Authorize(ctx_, ctx, "RestoreChannel", target);
                            },
                            [this, response](const std::string& target, const std::string& blob) {
                              auto ref = RestoreChannelBundle(ctx_.registry, target, blob);
                              if (ref.ok()) *response->mutable_channel() = *ref;
                              return ref.status();
                            });
}

grpc::ServerReadReactor<kmcl::v1::RestoreChunk>* SaveRestoreService::RestorePartition(
    grpc::CallbackServerContext* ctx, kmcl::v1::Partition* response) {
  return new RestoreReactor(ctx, ctx_.pool, limits_.max_restore_bytes, restore_in_flight_,
                            [this, ctx](const kmcl::v1::RestoreChunk& target) {
                              // Before any data: a new partition's id follows the one rule.
                              const std::string& id = target.target().partition_id();
                              if (!id.empty()) {
                                if (absl::Status s = ValidatePartitionId(id); !s.ok()) return s;
                              }
                              return Authorize(ctx_, ctx, "RestorePartition", target);
                            },
                            [this, response](const std::string& target, const std::string& blob) {
                              auto p = RestorePartitionBundle(ctx_.registry, blob, target);
                              if (p.ok()) *response = DescribePartition(**p);
                              return p.status();
                            });
}

}  // namespace kmcld
