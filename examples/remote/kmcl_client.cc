#include "examples/remote/kmcl_client.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace kmcld::remote {
namespace {

namespace v1 = ::kmcl::v1;

// Largest SendBatch / CompletionBatch this client writes in one message
// (gRPC servers refuse messages above 4 MiB by default).
constexpr size_t kMaxWriteBytes = size_t{1} << 20;

const char* ResponseKindName(const v1::AttachResponse& r) {
  switch (r.kind_case()) {
    case v1::AttachResponse::kAttached: return "Attached";
    case v1::AttachResponse::kReceived: return "ReceivedBatch";
    case v1::AttachResponse::kSendCompletions: return "SendCompletionBatch";
    case v1::AttachResponse::kSendCredits: return "SendCredits";
    case v1::AttachResponse::kEvent: return "EndpointEvent";
    case v1::AttachResponse::KIND_NOT_SET: return "an empty AttachResponse";
  }
  return "an unknown AttachResponse";
}

}  // namespace

absl::Status FromGrpc(const grpc::Status& status, absl::string_view what) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat(what, ": ", status.error_message()));
}

bool EqualsPadded(absl::string_view sent, absl::string_view received) {
  if (received.size() != PaddedSize(sent.size())) return false;
  if (received.substr(0, sent.size()) != sent) return false;
  for (size_t i = sent.size(); i < received.size(); ++i) {
    if (received[i] != '\0') return false;
  }
  return true;
}

std::shared_ptr<grpc::Channel> CreateKmclChannel(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  // Its own connection: two KmclClients are two tools, as two processes
  // would be, not two channels multiplexed over one shared subchannel.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

absl::StatusOr<std::unique_ptr<KmclClient>> KmclClient::Connect(const std::string& target,
                                                                absl::Duration connect_timeout) {
  std::shared_ptr<grpc::Channel> channel = CreateKmclChannel(target);
  if (!channel->WaitForConnected(absl::ToChronoTime(absl::Now() + connect_timeout))) {
    return absl::UnavailableError(absl::StrCat("cannot connect to kmcld at ", target, " within ",
                                               absl::FormatDuration(connect_timeout),
                                               " (is it running? --target)"));
  }
  return std::make_unique<KmclClient>(std::move(channel));
}

KmclClient::KmclClient(std::shared_ptr<grpc::Channel> channel)
    : channel_(std::move(channel)),
      partitions_(v1::PartitionService::NewStub(channel_)),
      host_(v1::HostChannelService::NewStub(channel_)),
      guest_(v1::GuestChannelService::NewStub(channel_)),
      gpadl_(v1::GpadlService::NewStub(channel_)),
      packet_(v1::PacketService::NewStub(channel_)),
      events_(v1::EventService::NewStub(channel_)),
      save_restore_(v1::SaveRestoreService::NewStub(channel_)),
      diagnostics_(v1::DiagnosticsService::NewStub(channel_)) {}

// ---------------------------------------------------------------------------
// PacketStream

PacketStream::PacketStream(v1::PacketService::Stub* stub)
    : stub_(stub), context_(std::make_unique<grpc::ClientContext>()) {}

PacketStream::~PacketStream() {
  if (stream_ != nullptr && !finished_) {
    context_->TryCancel();
    FinishStream().IgnoreError();
  }
}

void PacketStream::Cancel() { context_->TryCancel(); }

absl::Status PacketStream::Attach(const v1::EndpointRef& endpoint, Handlers handlers,
                                  Options options) {
  if (stream_ != nullptr) return absl::FailedPreconditionError("PacketStream: already attached");
  handlers_ = std::move(handlers);
  options_ = options;
  if (options_.deadline != absl::InfiniteFuture()) {
    context_->set_deadline(absl::ToChronoTime(options_.deadline));
  }
  stream_ = stub_->Attach(context_.get());

  v1::AttachRequest request;
  v1::Attach* attach = request.mutable_attach();
  *attach->mutable_endpoint() = endpoint;
  attach->set_delivery_credits(options_.delivery_credits);
  attach->set_max_batch(options_.max_batch);
  if (absl::Status s = Write(request, "Attach"); !s.ok()) return s;

  v1::AttachResponse response;
  if (!stream_->Read(&response)) {
    absl::Status s = FinishStream();
    if (s.ok()) return absl::UnknownError("PacketService.Attach: stream ended before Attached");
    return s;
  }
  ++counters_.messages_read;
  if (response.kind_case() != v1::AttachResponse::kAttached) {
    context_->TryCancel();
    FinishStream().IgnoreError();
    return absl::InternalError(absl::StrCat("PacketService.Attach: first response was ",
                                            ResponseKindName(response), ", not Attached"));
  }
  attached_info_ = response.attached();
  send_credits_ = attached_info_.send_credits();
  attached_ = true;
  return absl::OkStatus();
}

absl::Status PacketStream::Write(const v1::AttachRequest& request, absl::string_view what) {
  if (stream_ == nullptr) return absl::FailedPreconditionError("PacketStream: not attached");
  if (finished_) return Ended();
  if (writes_done_) return absl::FailedPreconditionError("PacketStream: already closed");
  if (!stream_->Write(request)) {
    // The stream is broken; its status says why.
    absl::Status s = FinishStream();
    if (s.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("PacketStream: writing ", what, " failed: the daemon ended the stream"));
    }
    return s;
  }
  ++counters_.messages_written;
  return absl::OkStatus();
}

absl::Status PacketStream::Ended() {
  if (!final_status_.ok()) return final_status_;
  return absl::FailedPreconditionError(
      "PacketStream: the daemon ended the stream (endpoint freed)");
}

absl::Status PacketStream::FinishStream() {
  if (finished_) return final_status_;
  v1::AttachResponse ignored;
  while (stream_->Read(&ignored)) ++counters_.messages_read;
  final_status_ = FromGrpc(stream_->Finish(), "PacketService.Attach");
  finished_ = true;
  return final_status_;
}

void PacketStream::Complete(uint64_t delivery_id, std::string payload) {
  pending_completion_bytes_ += payload.size() + 16;
  v1::PacketCompletion* c = pending_completions_.mutable_completions()->add_completions();
  c->set_delivery_id(delivery_id);
  c->set_payload(std::move(payload));
  if (uncompleted_ > 0) --uncompleted_;
  if (options_.auto_delivery_credits) {
    uint32_t initial = options_.delivery_credits == 0 ? 64 : options_.delivery_credits;
    if (++delivery_credits_used_ >= std::max<uint32_t>(1, initial / 2)) {
      pending_credit_grant_ += delivery_credits_used_;
      delivery_credits_used_ = 0;
    }
  }
}

void PacketStream::GrantDeliveryCredits(uint32_t n) { pending_credit_grant_ += n; }

absl::Status PacketStream::Flush() {
  if (pending_completions_.has_completions()) {
    v1::AttachRequest all;
    all.Swap(&pending_completions_);
    const size_t total_bytes = pending_completion_bytes_;
    pending_completion_bytes_ = 0;
    const int total = all.completions().completions_size();
    if (total_bytes <= kMaxWriteBytes) {
      if (absl::Status s = Write(all, "CompletionBatch"); !s.ok()) return s;
      counters_.completions_sent += total;
    } else {
      // Split so that no message exceeds kMaxWriteBytes (at least one each).
      auto* list = all.mutable_completions()->mutable_completions();
      int begin = 0;
      while (begin < total) {
        v1::AttachRequest part;
        size_t bytes = 0;
        int end = begin;
        while (end < total &&
               (end == begin || bytes + (*list)[end].payload().size() + 16 <= kMaxWriteBytes)) {
          bytes += (*list)[end].payload().size() + 16;
          part.mutable_completions()->add_completions()->Swap(&(*list)[end]);
          ++end;
        }
        if (absl::Status s = Write(part, "CompletionBatch"); !s.ok()) return s;
        counters_.completions_sent += end - begin;
        begin = end;
      }
    }
  }
  if (pending_credit_grant_ > 0) {
    while (pending_credit_grant_ > 0) {
      uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(pending_credit_grant_, UINT32_MAX));
      v1::AttachRequest request;
      request.mutable_delivery_credits()->set_credits(n);
      if (absl::Status s = Write(request, "DeliveryCredits"); !s.ok()) return s;
      pending_credit_grant_ -= n;
    }
  }
  return absl::OkStatus();
}

absl::Status PacketStream::Send(std::span<const OutgoingPacket> packets) {
  if (!attached_) return absl::FailedPreconditionError("PacketStream: not attached");
  for (const OutgoingPacket& p : packets) {
    if (p.payload.size() > attached_info_.max_packet_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("PacketStream: payload of ", p.payload.size(),
                       " bytes exceeds the channel's maximum packet size of ",
                       attached_info_.max_packet_size()));
    }
  }
  if (absl::Status s = Flush(); !s.ok()) return s;
  size_t next = 0;
  while (next < packets.size()) {
    if (send_credits_ == 0) {
      ++counters_.credit_waits;
      if (absl::Status s = ReadOne(); !s.ok()) return s;
      continue;
    }
    v1::AttachRequest request;
    v1::SendBatch* batch = request.mutable_sends();
    size_t bytes = 0;
    while (next < packets.size() && send_credits_ > 0 &&
           (batch->packets_size() == 0 || bytes + packets[next].payload.size() + 16 <=
                                              kMaxWriteBytes)) {
      const OutgoingPacket& p = packets[next++];
      v1::SendPacket* sp = batch->add_packets();
      sp->set_tag(p.tag);
      sp->set_payload(p.payload);
      sp->set_wait_for_completion(p.wait_for_completion);
      bytes += p.payload.size() + 16;
      --send_credits_;
    }
    int count = batch->packets_size();
    if (absl::Status s = Write(request, "SendBatch"); !s.ok()) return s;
    counters_.packets_sent += count;
  }
  return absl::OkStatus();
}

absl::Status PacketStream::ReadOne() {
  if (!attached_) return absl::FailedPreconditionError("PacketStream: not attached");
  if (finished_) return Ended();
  if (absl::Status s = Flush(); !s.ok()) return s;
  v1::AttachResponse response;
  if (!stream_->Read(&response)) {
    FinishStream().IgnoreError();
    return Ended();
  }
  ++counters_.messages_read;
  return Dispatch(response, /*closing=*/false);
}

absl::Status PacketStream::Dispatch(const v1::AttachResponse& response, bool closing) {
  switch (response.kind_case()) {
    case v1::AttachResponse::kAttached:
      return absl::InternalError("PacketService.Attach: a second Attached on the stream");
    case v1::AttachResponse::kReceived:
      for (const v1::ReceivedPacket& p : response.received().packets()) {
        ++counters_.packets_received;
        if (closing) continue;  // the daemon completes these itself after WritesDone
        ++uncompleted_;
        if (!handlers_.on_received) {
          return absl::FailedPreconditionError(
              "PacketStream: a packet was delivered but there is no on_received handler");
        }
        handlers_.on_received(p);
      }
      return absl::OkStatus();
    case v1::AttachResponse::kSendCompletions:
      for (const v1::SendCompletion& c : response.send_completions().completions()) {
        ++counters_.send_completions;
        if (handlers_.on_send_completion) handlers_.on_send_completion(c);
      }
      return absl::OkStatus();
    case v1::AttachResponse::kSendCredits:
      send_credits_ += response.send_credits().credits();  // an increment
      return absl::OkStatus();
    case v1::AttachResponse::kEvent:
      ++counters_.events;
      if (handlers_.on_event) handlers_.on_event(response.event());
      return absl::OkStatus();
    case v1::AttachResponse::KIND_NOT_SET:
      return absl::OkStatus();  // a kind this client does not know yet
  }
  return absl::OkStatus();
}

absl::Status PacketStream::Close() {
  if (stream_ == nullptr) return absl::OkStatus();
  if (finished_) return final_status_;
  if (!writes_done_) {
    if (absl::Status s = Flush(); !s.ok()) return s;
    stream_->WritesDone();
    writes_done_ = true;
  }
  v1::AttachResponse response;
  while (stream_->Read(&response)) {
    ++counters_.messages_read;
    Dispatch(response, /*closing=*/true).IgnoreError();
  }
  return FinishStream();
}

}  // namespace kmcld::remote
