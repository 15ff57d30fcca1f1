#include "bench/bench_transports.h"

#include <deque>
#include <span>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace kmcld::bench {
namespace {

namespace v1 = ::kmcl::v1;
using ::kmcl::bench::EchoMessage;
using kmcld::remote::OutgoingPacket;
using kmcld::remote::PacketStream;

constexpr char kStopPayload[] = "KMCLSTOP";  // 8 bytes; bench payloads are >= 16
constexpr uint64_t kStopTag = ~uint64_t{0};

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
    if (!kmcld::remote::EqualsPadded(payload_, p)) {
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
  return kmcld::remote::FromGrpc(stream_->Finish(), "EchoService.Echo");
}

absl::Status EchoTransport::Broken(const char* what) {
  absl::Status s = kmcld::remote::FromGrpc(stream_->Finish(), "EchoService.Echo");
  return s.ok() ? absl::UnavailableError(absl::StrCat("echo: ", what, " failed")) : s;
}

// ---------------------------------------------------------------------------
// KmclHostEcho

KmclHostEcho::~KmclHostEcho() {
  if (thread_.joinable()) {
    stream_.Cancel();
    thread_.join();
  }
}

absl::Status KmclHostEcho::Start(const v1::EndpointRef& endpoint, absl::Time deadline) {
  PacketStream::Handlers h;
  h.on_received = [this](const v1::ReceivedPacket& p) {
    if (p.payload() == kStopPayload) stop_ = true;
    stream_.Complete(p.delivery_id(), p.payload());
  };
  PacketStream::Options o;
  o.delivery_credits = 1024;
  o.max_batch = 256;
  o.deadline = deadline;
  if (absl::Status s = stream_.Attach(endpoint, h, o); !s.ok()) return s;
  thread_ = std::thread([this] {
    absl::Status s;
    while (s.ok() && !stop_) s = stream_.ReadOne();
    if (s.ok()) s = stream_.Close();
    status_ = s;
  });
  return absl::OkStatus();
}

absl::Status KmclHostEcho::Join() {
  if (thread_.joinable()) thread_.join();
  return status_;
}

// ---------------------------------------------------------------------------
// KmclGuestTransport

absl::Status KmclGuestTransport::Start(const v1::EndpointRef& endpoint,
                                       const std::string& payload, uint32_t batch,
                                       absl::Time deadline) {
  payload_ = payload;
  packets_.assign(batch, OutgoingPacket{0, payload, true});
  PacketStream::Handlers h;
  h.on_send_completion = [this](const v1::SendCompletion& c) {
    if (c.tag() == kStopTag) {
      stopped_ = true;
      return;
    }
    if (c.status().code() != 0) {
      if (problem_.ok()) {
        problem_ = absl::AbortedError(absl::StrCat("kmcld: a send completed with ",
                                                   c.status().name(), " (0x",
                                                   absl::Hex(c.status().code()), ")"));
      }
    } else if (!kmcld::remote::EqualsPadded(payload_, c.payload())) {
      if (problem_.ok()) {
        problem_ = absl::DataLossError(absl::StrCat(
            "kmcld: a completion payload of ", c.payload().size(),
            " bytes differs from the ", payload_.size(), " bytes sent"));
      }
    }
    ++completed_;
  };
  h.on_received = [this](const v1::ReceivedPacket& p) { stream_.Complete(p.delivery_id(), ""); };
  PacketStream::Options o;
  o.delivery_credits = 64;
  o.max_batch = 256;
  o.deadline = deadline;
  return stream_.Attach(endpoint, h, o);
}

absl::Status KmclGuestTransport::Send(uint32_t n) {
  for (uint32_t i = 0; i < n; ++i) packets_[i].tag = next_tag_++;
  if (absl::Status s = stream_.Send(std::span<const OutgoingPacket>(packets_.data(), n));
      !s.ok()) {
    return s;
  }
  return problem_;
}

absl::Status KmclGuestTransport::Read() {
  if (absl::Status s = stream_.ReadOne(); !s.ok()) return s;
  return problem_;
}

absl::Status KmclGuestTransport::Stop() {
  if (absl::Status s = stream_.Send({{kStopTag, kStopPayload, true}}); !s.ok()) return s;
  while (!stopped_) {
    if (absl::Status s = stream_.ReadOne(); !s.ok()) return s;
  }
  return stream_.Close();
}

}  // namespace kmcld::bench
