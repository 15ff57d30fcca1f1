#include "bench/bench_transports.h"

#include <deque>
#include <span>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace kmcld::bench {
namespace {

namespace v1 = ::kmcl::v1;
namespace kc = ::kmcl::client;
using ::kmcl::bench::EchoMessage;

constexpr char kStopPayload[] = "KMCLSTOP";  // 8 bytes; bench payloads are >= 16
constexpr char kInterfaceType[] = "3f1d7c52-9b8e-4a61-b2d4-6e0c5a9f8d17";

}  // namespace

// Reads and writes independently (a read is always outstanding, one write
// at a time), so a client that writes while the echo is flow-controlled
// never deadlocks the stream.
class EchoServiceImpl::Reactor final : public grpc::ServerBidiReactor<EchoMessage, EchoMessage> {
 public:
  Reactor() { StartRead(&incoming_); }
  void OnReadDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    if (!ok) {
      reads_done_ = true;
      if (!writing_) Finish(grpc::Status::OK);
      return;
    }
    queue_.push_back(std::move(incoming_));
    incoming_.Clear();
    if (!writing_) {
      writing_ = true;
      StartWrite(&queue_.front());
    }
    StartRead(&incoming_);
  }
  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    queue_.pop_front();
    if (!ok) {
      writing_ = false;
      if (reads_done_) Finish(grpc::Status::OK);
      return;  // the client is gone; its reads end too
    }
    if (!queue_.empty()) {
      StartWrite(&queue_.front());
      return;
    }
    writing_ = false;
    if (reads_done_) Finish(grpc::Status::OK);
  }
  void OnDone() override { delete this; }

 private:
  absl::Mutex mu_;
  EchoMessage incoming_;
  std::deque<EchoMessage> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
};

grpc::ServerBidiReactor<EchoMessage, EchoMessage>* EchoServiceImpl::Echo(
    grpc::CallbackServerContext*) {
  return new Reactor();
}

// ---------------------------------------------------------------------------
// EchoTransport

absl::Status EchoTransport::Start(::kmcl::bench::EchoService::Stub& stub,
                                  const std::string& payload, absl::Time deadline) {
  payload_ = payload;
  context_.set_deadline(absl::ToChronoTime(deadline));
  stream_ = stub.Echo(&context_);
  return absl::OkStatus();
}

absl::Status EchoTransport::Send(uint32_t n) {
  EchoMessage m;
  for (uint32_t i = 0; i < n; ++i) m.add_payloads(payload_);
  if (!stream_->Write(m)) return Broken("Write");
  return absl::OkStatus();
}

absl::Status EchoTransport::Read() {
  if (!stream_->Read(&in_)) return Broken("Read");
  for (const std::string& p : in_.payloads()) {
    if (!EqualsPadded(payload_, p)) {
      return absl::DataLossError("echo: a payload came back different");
    }
  }
  completed_ += in_.payloads_size();
  return absl::OkStatus();
}

absl::Status EchoTransport::Close() {
  stream_->WritesDone();
  while (stream_->Read(&in_)) {
  }
  return ::kmcl::client::FromGrpc(stream_->Finish(), "EchoService.Echo");
}

absl::Status EchoTransport::Broken(const char* what) {
  absl::Status s = ::kmcl::client::FromGrpc(stream_->Finish(), "EchoService.Echo");
  return s.ok() ? absl::UnavailableError(absl::StrCat("echo: ", what, " failed")) : s;
}

// ---------------------------------------------------------------------------
// KmclHostEcho

absl::Status KmclHostEcho::Start(const v1::EndpointRef& endpoint, absl::Time deadline) {
  deadline_ = deadline;
  kc::StreamOptions o;
  o.delivery_credits = 1024;
  o.max_batch = 256;
  o.reconnect = false;  // a broken stream fails the cell
  o.on_delivery = [this](kc::AttachedStream& stream, kc::Delivery d) {
    const bool stop = d.payload == kStopPayload;
    stream.Complete(d.id, std::move(d.payload)).IgnoreError();  // fails only once ended
    if (stop && !stopped_.HasBeenNotified()) stopped_.Notify();
  };
  auto stream = kc::AttachedStream::Attach(client_, endpoint, std::move(o));
  if (!stream.ok()) return stream.status();
  stream_ = *std::move(stream);
  return absl::OkStatus();
}

absl::Status KmclHostEcho::Join() {
  if (stream_ == nullptr) return absl::FailedPreconditionError("host echo: not started");
  if (!stopped_.WaitForNotificationWithDeadline(deadline_)) {
    return absl::DeadlineExceededError("host echo: no stop packet before the deadline");
  }
  return stream_->Close();
}

void KmclHostEcho::Cancel() {
  if (stream_ != nullptr) stream_->Close(absl::ZeroDuration()).IgnoreError();
}

kc::AttachedStream::Stats KmclHostEcho::stats() const {
  return stream_ != nullptr ? stream_->stats() : kc::AttachedStream::Stats();
}

// ---------------------------------------------------------------------------
// KmclGuestTransport

absl::Status KmclGuestTransport::Start(const v1::EndpointRef& endpoint,
                                       const std::string& payload, uint32_t /*batch*/,
                                       absl::Time deadline) {
  payload_ = payload;
  deadline_ = deadline;
  kc::StreamOptions o;
  o.delivery_credits = 64;
  o.max_batch = 256;
  o.reconnect = false;
  o.on_delivery = [](kc::AttachedStream& stream, kc::Delivery d) {
    stream.Complete(d.id, "").IgnoreError();
  };
  auto stream = kc::AttachedStream::Attach(client_, endpoint, std::move(o));
  if (!stream.ok()) return stream.status();
  stream_ = *std::move(stream);
  return absl::OkStatus();
}

void KmclGuestTransport::OnResult(absl::StatusOr<kc::SendResult> r) {
  absl::Status problem;
  if (!r.ok()) {
    problem = r.status();
  } else if (r->status.code() != 0) {
    problem = absl::AbortedError(absl::StrCat("kmcld: a send completed with ", r->status.name(),
                                              " (0x", absl::Hex(r->status.code()), ")"));
  } else if (!EqualsPadded(payload_, r->payload)) {
    problem = absl::DataLossError(absl::StrCat("kmcld: a completion payload of ",
                                               r->payload.size(), " bytes differs from the ",
                                               payload_.size(), " bytes sent"));
  }
  absl::MutexLock lock(&mu_);
  if (problem_.ok()) problem_ = problem;
  ++completed_;
}

absl::Status KmclGuestTransport::Send(uint32_t n) {
  for (uint32_t i = 0; i < n; ++i) {
    stream_->Send({payload_, true}, [this](absl::StatusOr<kc::SendResult> r) {
      OnResult(std::move(r));
    });
  }
  absl::MutexLock lock(&mu_);
  return problem_;
}

absl::Status KmclGuestTransport::Read() {
  absl::MutexLock lock(&mu_);
  auto progress = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return completed_ > read_through_ || !problem_.ok();
  };
  if (!mu_.AwaitWithDeadline(absl::Condition(&progress), deadline_)) {
    return absl::DeadlineExceededError("guest: no completion before the deadline");
  }
  read_through_ = completed_;
  return problem_;
}

uint64_t KmclGuestTransport::completed() const {
  absl::MutexLock lock(&mu_);
  return completed_;
}

absl::Status KmclGuestTransport::Stop() {
  absl::StatusOr<kc::SendResult> last = stream_->Send({kStopPayload, true}).get();
  if (!last.ok()) return last.status();
  return stream_->Close();
}

void KmclGuestTransport::Cancel() {
  if (stream_ != nullptr) stream_->Close(absl::ZeroDuration()).IgnoreError();
}

kc::AttachedStream::Stats KmclGuestTransport::stats() const {
  return stream_ != nullptr ? stream_->stats() : kc::AttachedStream::Stats();
}

// ---------------------------------------------------------------------------
// Channels

absl::StatusOr<v1::ChannelRef> OfferAndOpen(kc::Client& host, kc::Client& guest,
                                            const std::string& partition, uint32_t max_packet,
                                            uint32_t ring_pages, const std::string& name,
                                            uint32_t mmio_megabytes) {
  v1::ServerChannelSettings s;
  s.mutable_interface_type()->set_value(kInterfaceType);
  s.set_friendly_name(name);
  s.set_max_packet_size(max_packet);
  s.set_mmio_megabytes(mmio_megabytes);
  s.set_start(true);
  auto offered = host.OfferChannel(partition, s);
  if (!offered.ok()) return offered.status();
  v1::OpenChannelRequest open;
  open.set_partition_id(partition);
  *open.mutable_interface_type() = offered->offer().interface_type();
  *open.mutable_interface_instance() = offered->offer().interface_instance();
  open.set_max_packet_size(max_packet);
  open.set_incoming_ring_pages(ring_pages);
  open.set_outgoing_ring_pages(ring_pages);
  auto opened = guest.OpenChannel(open);
  if (!opened.ok()) return opened.status();
  return offered->offer().channel();
}

absl::Status CloseRescindCleanup(kc::Client& host, kc::Client& guest, const v1::ChannelRef& ref) {
  absl::Status s1 = guest.CloseChannel(ref).status();
  absl::Status s2 = host.RescindChannel(ref).status();
  absl::Status s3 = host.CleanupChannel(ref);
  return !s1.ok() ? s1 : !s2.ok() ? s2 : s3;
}

v1::EndpointRef Endpoint(const v1::ChannelRef& ref, v1::EndpointRole role) {
  v1::EndpointRef e;
  *e.mutable_channel() = ref;
  e.set_role(role);
  return e;
}

bool EqualsPadded(const std::string& sent, const std::string& got) {
  if (got.size() != PaddedSize(sent.size()) || got.compare(0, sent.size(), sent) != 0) {
    return false;
  }
  return got.find_first_not_of('\0', sent.size()) == std::string::npos;
}

uint32_t PaddedSize(size_t n) { return static_cast<uint32_t>((n + 7) & ~size_t{7}); }

}  // namespace kmcld::bench
