// clients/cpp/stream_core.h: AttachedStream's implementation, shared by
// stream.cc (what the tool calls) and stream_core.cc (what gRPC's reactions
// and the stream's thread do). Internal to //clients/cpp:kmcl_client; tools
// include stream.h.
//
// Threading: Core's state is guarded by mu_; every change is made under a
// ChangeLock, which wakes the waiters (Receive, Close, Start, the worker).
// gRPC's reactions only update state, post callbacks to the worker and start
// writes; they never block. One Call (reactor) is current at a time; the
// next starts after the previous one's OnDone.
#ifndef KMCLD_CLIENTS_CPP_STREAM_CORE_H_
#define KMCLD_CLIENTS_CPP_STREAM_CORE_H_

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/random/random.h"
#include "absl/time/clock.h"
#include "clients/cpp/stream.h"
#include "grpcpp/support/client_callback.h"
#include "kmcl_core/base/mutex.h"

namespace kmcl::client {
namespace stream_internal {

// Whether a stream that ended with `code` should re-attach.
bool Retryable(absl::StatusCode code);

// Holds the stream's mutex and, on release, wakes everyone waiting on its
// condition variable: every state change is made under one of these, so a
// waiter re-checks its predicate after each.
class ABSL_SCOPED_LOCKABLE ChangeLock {
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

}  // namespace stream_internal

// Owned by the AttachedStream facade alone. Its Calls point at it without
// owning it: Close() waits until the last Call's OnDone has run, and the
// destructor takes the lock once more, so neither the Core nor the Client it
// holds is ever destroyed on a gRPC thread (gRPC does not allow a channel to
// die inside one of its own callbacks).
class AttachedStream::Core {
  using ChangeLock = stream_internal::ChangeLock;
  using PendingSend = stream_internal::PendingSend;
  using Replay = stream_internal::Replay;

 public:
  ~Core();
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
  void OnDone(Call* call, const grpc::Status& status);

  void StartCall() ABSL_LOCKS_EXCLUDED(mu_);
  // Starts the next write if the slot is free and something is pending.
  void MaybeWrite() ABSL_LOCKS_EXCLUDED(mu_);
  bool BuildWrite(v1::AttachRequest* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool BuildKind(v1::AttachRequest* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
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
  int active_calls_ ABSL_GUARDED_BY(mu_) = 0;  // started, OnDone not yet run
  // Ended calls, destroyed with the Core (on the owner's thread, never on
  // the gRPC thread that ran their OnDone); one per re-attach.
  std::vector<std::shared_ptr<Call>> ended_calls_ ABSL_GUARDED_BY(mu_);
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
  // Completion acknowledgement (packet.proto): the highest completion_id
  // seen (those at or below it are duplicates), and the highest the
  // current call has been told of.
  uint64_t completions_seen_through_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t completions_acked_through_ ABSL_GUARDED_BY(mu_) = 0;
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
  explicit Call(Core* core) : core_(core) {}

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
  // The last reaction; nothing of this Call or its Core is touched after.
  void OnDone(const grpc::Status& status) override { core_->OnDone(this, status); }

 private:
  friend class Core;
  Core* const core_;
  grpc::ClientContext context_;
  v1::AttachRequest out_;
  v1::AttachResponse in_;
};


}  // namespace kmcl::client

#endif  // KMCLD_CLIENTS_CPP_STREAM_CORE_H_
