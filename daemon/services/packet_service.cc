#include "daemon/services/packet_service.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/stream_pump.h"

namespace kmcld {

absl::Status StreamCounter::Acquire(const std::string& peer) {
  kmcl::MutexLock lock(&mu_);
  uint32_t& n = open_[peer];
  if (n >= limit_) {
    return absl::ResourceExhaustedError(absl::StrCat("this client already has ", n,
                                                     " open streams (max_streams_per_client)"));
  }
  ++n;
  return absl::OkStatus();
}

void StreamCounter::Release(const std::string& peer) {
  kmcl::MutexLock lock(&mu_);
  auto it = open_.find(peer);
  if (it != open_.end() && --it->second == 0) open_.erase(it);
}

namespace {

using Reactor = grpc::ServerBidiReactor<kmcl::v1::AttachRequest, kmcl::v1::AttachResponse>;

// The stream as the endpoint sees it. Outlives the reactor when the
// endpoint still holds it; after OnDone every call is a no-op.
class AttachStream final : public EndpointStream,
                           public security::RevocableStream,
                           public std::enable_shared_from_this<AttachStream> {
 public:
  explicit AttachStream(Reactor* reactor) : reactor_(reactor) {}

  // The policy no longer allows this stream: end it from the stream pump
  // (this runs on the thread that reloaded the policy).
  void Revoke(const absl::Status& status) override {
    StreamPump::Default().Post([self = shared_from_this(), status] { self->Finish(ToGrpc(status)); });
  }

  // From any thread, a channel's included: the write starts on the stream
  // pump (stream_pump.h says why), at most one pump task queued at a time.
  void Wake() override {
    {
      kmcl::MutexLock lock(&mu_);
      if (reactor_ == nullptr || finished_ || wake_queued_) return;
      wake_queued_ = true;
    }
    StreamPump::Default().Post([self = shared_from_this()] {
      {
        kmcl::MutexLock lock(&self->mu_);
        self->wake_queued_ = false;
      }
      self->WriteNext();
    });
  }

  // Starts the next write if none is in flight. Only from gRPC's reactions
  // or the stream pump: never with a lock held.
  void WriteNext() {
    Reactor* reactor;
    {
      kmcl::MutexLock lock(&mu_);
      if (reactor_ == nullptr || write_in_flight_ || finished_) return;
      std::shared_ptr<Endpoint> endpoint = endpoint_.lock();
      if (endpoint == nullptr) return;
      out_.Clear();
      if (!endpoint->NextMessage(this, &out_)) return;
      if (out_.kind_case() == kmcl::v1::AttachResponse::kSendCompletions) {
        GiveInFlightLocked(static_cast<uint64_t>(out_.send_completions().completions_size()));
      }
      write_in_flight_ = true;
      ++writes_started_;
      reactor = reactor_;
    }
    reactor->StartWrite(&out_);  // OnDone cannot run while a write is in flight
  }

  // Packets in flight for the identity's limit (Limits.packets_in_flight):
  // sends this stream made whose completions it has not yet written. Set
  // before the stream attaches; without an authorizer nothing is counted.
  void CountInFlightFor(const security::Authorizer* authorizer, security::Peer peer) {
    kmcl::MutexLock lock(&mu_);
    authorizer_ = authorizer;
    peer_ = std::move(peer);
  }
  // A batch of `n` sends: RESOURCE_EXHAUSTED over the identity's limit.
  absl::Status TakeInFlight(uint64_t n) {
    kmcl::MutexLock lock(&mu_);
    if (authorizer_ == nullptr || n == 0) return absl::OkStatus();
    absl::Status s = authorizer_->Take(peer_, "Attach", security::Resource::kPacketsInFlight, n);
    if (s.ok()) in_flight_ += n;
    return s;
  }

  std::string DebugState() override {
    kmcl::MutexLock lock(&mu_);
    return absl::StrCat("writes_started=", writes_started_, " writes_done=", writes_done_,
                        " write_in_flight=", write_in_flight_, " wake_queued=", wake_queued_,
                        " reads=", reads_);
  }
  void CountRead() {
    kmcl::MutexLock lock(&mu_);
    ++reads_;
  }

  void EndpointGone(const absl::Status& why) override {
    {
      kmcl::MutexLock lock(&mu_);
      endpoint_.reset();
    }
    StreamPump::Default().Post([self = shared_from_this(), why] { self->Finish(ToGrpc(why)); });
  }

  // Writes the first message (Attached) before anything NextMessage gives.
  void WriteFirst(kmcl::v1::AttachResponse first) {
    Reactor* reactor;
    {
      kmcl::MutexLock lock(&mu_);
      reactor = reactor_;
      out_ = std::move(first);
    }
    reactor->StartWrite(&out_);
  }

  // Claims the write slot before attaching, so that Attached goes first.
  void ReserveWrite() {
    kmcl::MutexLock lock(&mu_);
    write_in_flight_ = true;
  }

  void WriteDone(bool ok) {
    std::optional<grpc::Status> finish;
    Reactor* reactor;
    {
      kmcl::MutexLock lock(&mu_);
      write_in_flight_ = false;
      ++writes_done_;
      reactor = reactor_;
      if (pending_finish_.has_value()) {
        finish = std::move(pending_finish_);
        pending_finish_.reset();
      }
    }
    if (finish.has_value()) {
      if (reactor != nullptr) reactor->Finish(*finish);
      return;
    }
    if (ok) WriteNext();  // a reaction: safe to start the next write here
  }

  // Finishes once, after any write in flight.
  void Finish(grpc::Status status) {
    Reactor* reactor;
    {
      kmcl::MutexLock lock(&mu_);
      if (finished_ || reactor_ == nullptr) return;
      finished_ = true;
      if (write_in_flight_) {
        pending_finish_ = std::move(status);
        return;
      }
      reactor = reactor_;
    }
    reactor->Finish(status);
  }

  void set_endpoint(std::shared_ptr<Endpoint> endpoint) {
    kmcl::MutexLock lock(&mu_);
    endpoint_ = endpoint;
  }
  std::shared_ptr<Endpoint> endpoint() {
    kmcl::MutexLock lock(&mu_);
    return endpoint_.lock();
  }
  void Done() {
    kmcl::MutexLock lock(&mu_);
    reactor_ = nullptr;
    GiveInFlightLocked(in_flight_);  // the endpoint keeps them; the identity no longer waits on them
  }

 private:
  kmcl::Mutex mu_;
  Reactor* reactor_ ABSL_GUARDED_BY(mu_);
  std::weak_ptr<Endpoint> endpoint_ ABSL_GUARDED_BY(mu_);
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool wake_queued_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t writes_started_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t writes_done_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t reads_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<grpc::Status> pending_finish_ ABSL_GUARDED_BY(mu_);
  const security::Authorizer* authorizer_ ABSL_GUARDED_BY(mu_) = nullptr;
  security::Peer peer_ ABSL_GUARDED_BY(mu_);
  uint64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  kmcl::v1::AttachResponse out_;  // owned by the one write in flight

  void GiveInFlightLocked(uint64_t n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    n = std::min(n, in_flight_);  // a re-attached stream gets earlier streams' completions too
    if (n == 0 || authorizer_ == nullptr) return;
    in_flight_ -= n;
    authorizer_->Give(peer_, security::Resource::kPacketsInFlight, n);
  }
};

class AttachReactor final : public Reactor {
 public:
  AttachReactor(grpc::CallbackServerContext* ctx, ServiceContext services, StreamCounter& streams)
      : ctx_(ctx), services_(services), streams_(streams), peer_(ctx->peer()),
        stream_(std::make_shared<AttachStream>(this)) {
    auto slot = AcquireStreamSlot(services_, ctx, "Attach");
    if (slot.ok()) slot_ = *std::move(slot);
    if (absl::Status s = slot.ok() ? streams_.Acquire(peer_) : slot.status(); !s.ok()) {
      stream_->Finish(ToGrpc(s));
      return;
    }
    counted_ = true;
    if (services_.authorizer != nullptr) {
      caller_ = security::PeerOf(*ctx);
      stream_->CountInFlightFor(services_.authorizer, *caller_);
    }
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    stream_->CountRead();
    if (!ok) {
      // The tool half-closed (clean), or the call broke (unclean).
      Detach(/*clean=*/!ctx_->IsCancelled());
      stream_->Finish(grpc::Status::OK);
      return;
    }
    if (caller_.has_value()) {
      // The identity's limits: this message's size, and its sends in flight.
      absl::Status s = services_.authorizer->CheckMessageSize(*caller_, "Attach", in_.ByteSizeLong());
      if (s.ok() && attached_ && in_.kind_case() == kmcl::v1::AttachRequest::kSends) {
        s = stream_->TakeInFlight(static_cast<uint64_t>(in_.sends().packets_size()));
      }
      if (!s.ok()) {
        Detach(/*clean=*/false);
        stream_->Finish(ToGrpc(s));
        return;
      }
    }
    if (!attached_) {
      absl::Status s = AttachFirst();
      if (!s.ok()) {
        stream_->Finish(ToGrpc(s));
        return;
      }
      attached_ = true;
    } else if (std::shared_ptr<Endpoint> ep = stream_->endpoint(); ep != nullptr) {
      absl::Status s = ep->Handle(stream_.get(), in_);
      if (!s.ok()) {
        Detach(/*clean=*/false);
        stream_->Finish(ToGrpc(s));
        return;
      }
    }
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override { stream_->WriteDone(ok); }

  void OnCancel() override {
    Detach(/*clean=*/false);
    stream_->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled"));
  }

  void OnDone() override {
    Detach(/*clean=*/false);
    stream_->Done();
    if (counted_) streams_.Release(peer_);
    delete this;
  }

 private:
  absl::Status AttachFirst() {
    if (in_.kind_case() != kmcl::v1::AttachRequest::kAttach) {
      return absl::FailedPreconditionError("the first message of an Attach stream must be Attach");
    }
    const kmcl::v1::Attach& a = in_.attach();
    const security::Role role =
        a.endpoint().role() == kmcl::v1::ENDPOINT_ROLE_HOST ? security::HOST : security::GUEST;
    const std::string& partition = a.endpoint().channel().partition_id();
    if (absl::Status s = AuthorizeRole(services_, ctx_, "Attach", partition, role); !s.ok()) return s;
    // From here on, a policy reload that revokes the role ends the stream.
    if (absl::Status s = HoldStream(services_, slot_.get(), "Attach", partition, role, stream_); !s.ok()) {
      return s;
    }
    auto ep = services_.registry.ResolveEndpoint(a.endpoint());
    if (!ep.ok()) return ep.status();
    stream_->ReserveWrite();
    stream_->set_endpoint(*ep);
    auto attached = (*ep)->Attach(stream_, in_);
    if (!attached.ok()) {
      stream_->set_endpoint(nullptr);
      stream_->WriteDone(false);
      return attached.status();
    }
    kmcl::v1::AttachResponse first;
    *first.mutable_attached() = *std::move(attached);
    stream_->WriteFirst(std::move(first));
    return absl::OkStatus();
  }

  void Detach(bool clean) {
    std::shared_ptr<Endpoint> ep = stream_->endpoint();
    if (ep == nullptr) return;
    stream_->set_endpoint(nullptr);
    ep->Detach(stream_.get(), clean);
  }

  grpc::CallbackServerContext* ctx_;
  ServiceContext services_;
  StreamCounter& streams_;
  const std::string peer_;
  std::shared_ptr<AttachStream> stream_;
  bool counted_ = false;
  std::unique_ptr<security::StreamSlot> slot_;  // the identity's place, until deleted
  std::optional<security::Peer> caller_;         // with an authorizer: for the identity's limits
  bool attached_ = false;
  kmcl::v1::AttachRequest in_;
};

}  // namespace

Reactor* PacketService::Attach(grpc::CallbackServerContext* ctx) {
  return new AttachReactor(ctx, ctx_, streams_);
}

}  // namespace kmcld
