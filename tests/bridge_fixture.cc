#include "tests/bridge_fixture.h"

#include <chrono>
#include <cstdlib>
#include <utility>

#include "grpcpp/security/credentials.h"

namespace kmcld::testing {

absl::Status Kmcld::Start(const std::vector<std::string>& flags) {
  // The bridge tests count the default partition's channels from an empty
  // start: no built-in devices (kmcld's default gives it the four).
  std::vector<std::string> args = {"--listen=127.0.0.1:0", "--insecure_plaintext_tcp", "--uds=none",
                                   "--devices=none"};
  args.insert(args.end(), flags.begin(), flags.end());
  if (absl::Status s = process.Start(args); !s.ok()) return s;
  channel = grpc::CreateChannel(process.tcp_address(), grpc::InsecureChannelCredentials());
  partitions = kmcl::v1::PartitionService::NewStub(channel);
  host = kmcl::v1::HostChannelService::NewStub(channel);
  guest = kmcl::v1::GuestChannelService::NewStub(channel);
  gpadl = kmcl::v1::GpadlService::NewStub(channel);
  packets = kmcl::v1::PacketService::NewStub(channel);
  events = kmcl::v1::EventService::NewStub(channel);
  save_restore = kmcl::v1::SaveRestoreService::NewStub(channel);
  diagnostics = kmcl::v1::DiagnosticsService::NewStub(channel);
  return absl::OkStatus();
}

std::unique_ptr<grpc::ClientContext> Kmcld::Context(int seconds) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return ctx;
}

namespace {
absl::Status FromGrpc(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}
}  // namespace

absl::StatusOr<kmcl::v1::Channel> Kmcld::Offer(const std::string& partition,
                                               const std::string& type, uint32_t max_packet_size,
                                               bool start) {
  kmcl::v1::OfferChannelRequest req;
  req.set_partition_id(partition);
  req.mutable_settings()->mutable_interface_type()->set_value(type);
  req.mutable_settings()->set_friendly_name("echo");
  req.mutable_settings()->set_max_packet_size(max_packet_size);
  req.mutable_settings()->set_start(start);
  kmcl::v1::ChannelResponse resp;
  grpc::Status s = host->OfferChannel(Context().get(), req, &resp);
  if (!s.ok()) return FromGrpc(s);
  return resp.channel();
}

absl::StatusOr<kmcl::v1::Channel> Kmcld::Open(const std::string& partition,
                                              const std::string& type, uint32_t ring_pages) {
  kmcl::v1::OpenChannelRequest req;
  req.set_partition_id(partition);
  req.mutable_interface_type()->set_value(type);
  req.set_incoming_ring_pages(ring_pages);
  req.set_outgoing_ring_pages(ring_pages);
  kmcl::v1::ChannelResponse resp;
  grpc::Status s = guest->OpenChannel(Context().get(), req, &resp);
  if (!s.ok()) return FromGrpc(s);
  return resp.channel();
}

AttachStream::AttachStream(kmcl::v1::PacketService::Stub& stub, const kmcl::v1::ChannelRef& ref,
                           kmcl::v1::EndpointRole role, uint32_t delivery_credits,
                           uint32_t max_batch)
    : ctx_(Kmcld::Context(std::getenv("KMCLD_TEST_STREAM_SECONDS") != nullptr
                              ? std::atoi(std::getenv("KMCLD_TEST_STREAM_SECONDS"))
                              : 300)),
      rw_(stub.Attach(ctx_.get())) {
  kmcl::v1::AttachRequest req;
  *req.mutable_attach()->mutable_endpoint()->mutable_channel() = ref;
  req.mutable_attach()->mutable_endpoint()->set_role(role);
  req.mutable_attach()->set_delivery_credits(delivery_credits);
  req.mutable_attach()->set_max_batch(max_batch);
  if (!rw_->Write(req)) return;
  kmcl::v1::AttachResponse resp;
  if (!rw_->Read(&resp) || !resp.has_attached()) return;
  attached_ = resp.attached();
  send_credits_ = attached_.send_credits();
  ok_ = true;
}

AttachStream::~AttachStream() {
  if (!closed_) Cancel();
}

bool AttachStream::Write(const kmcl::v1::AttachRequest& request) { return rw_->Write(request); }

bool AttachStream::Send(const std::vector<kmcl::v1::SendPacket>& packets) {
  kmcl::v1::AttachRequest req;
  for (const auto& p : packets) *req.mutable_sends()->add_packets() = p;
  send_credits_ -= std::min<uint64_t>(send_credits_, packets.size());
  return rw_->Write(req);
}

bool AttachStream::Complete(const std::vector<std::pair<uint64_t, std::string>>& completions) {
  kmcl::v1::AttachRequest req;
  for (const auto& [id, payload] : completions) {
    kmcl::v1::PacketCompletion* c = req.mutable_completions()->add_completions();
    c->set_delivery_id(id);
    c->set_payload(payload);
  }
  return rw_->Write(req);
}

bool AttachStream::GrantDeliveries(uint32_t n) {
  kmcl::v1::AttachRequest req;
  req.mutable_delivery_credits()->set_credits(n);
  return rw_->Write(req);
}

bool AttachStream::Read(kmcl::v1::AttachResponse* out) {
  if (!rw_->Read(out)) return false;
  if (out->has_send_credits()) send_credits_ += out->send_credits().credits();
  return true;
}

bool AttachStream::ReadDeliveries(size_t n, std::vector<kmcl::v1::ReceivedPacket>* out,
                                  std::vector<kmcl::v1::SendCompletion>* completions) {
  const size_t want = out->size() + n;
  kmcl::v1::AttachResponse resp;
  while (out->size() < want) {
    if (!Read(&resp)) return false;
    for (const auto& p : resp.received().packets()) out->push_back(p);
    if (completions != nullptr) {
      for (const auto& c : resp.send_completions().completions()) completions->push_back(c);
    }
  }
  return true;
}

bool AttachStream::ReadCompletions(size_t n, std::vector<kmcl::v1::SendCompletion>* out,
                                   std::vector<kmcl::v1::ReceivedPacket>* deliveries) {
  const size_t want = out->size() + n;
  kmcl::v1::AttachResponse resp;
  while (out->size() < want) {
    if (!Read(&resp)) return false;
    for (const auto& c : resp.send_completions().completions()) out->push_back(c);
    if (deliveries != nullptr) {
      for (const auto& p : resp.received().packets()) deliveries->push_back(p);
    }
  }
  return true;
}

grpc::Status AttachStream::Close() {
  closed_ = true;
  rw_->WritesDone();
  kmcl::v1::AttachResponse drain;
  while (rw_->Read(&drain)) {
  }
  return rw_->Finish();
}

void AttachStream::Cancel() {
  closed_ = true;
  ctx_->TryCancel();
  kmcl::v1::AttachResponse drain;
  while (rw_->Read(&drain)) {
  }
  (void)rw_->Finish();
}

std::unique_ptr<AttachStream> AttachWhenFree(kmcl::v1::PacketService::Stub& stub,
                                             const kmcl::v1::ChannelRef& ref,
                                             kmcl::v1::EndpointRole role,
                                             uint32_t delivery_credits) {
  std::unique_ptr<AttachStream> s;
  for (int i = 0; i < 100000; ++i) {
    s = std::make_unique<AttachStream>(stub, ref, role, delivery_credits);
    if (s->ok()) break;
  }
  return s;
}

kmcl::v1::SendPacket Packet(uint64_t tag, std::string payload, bool wait_for_completion) {
  kmcl::v1::SendPacket p;
  p.set_tag(tag);
  p.set_payload(std::move(payload));
  p.set_wait_for_completion(wait_for_completion);
  return p;
}

std::string Padded(std::string s) {
  s.resize((s.size() + 7) / 8 * 8, '\0');
  return s;
}

bool PacketFlows(kmcl::v1::PacketService::Stub& stub, const kmcl::v1::ChannelRef& ref) {
  AttachStream host(stub, ref, kmcl::v1::ENDPOINT_ROLE_HOST);
  AttachStream guest(stub, ref, kmcl::v1::ENDPOINT_ROLE_GUEST);
  std::vector<kmcl::v1::ReceivedPacket> got;
  return host.ok() && guest.ok() && guest.Send({Packet(1, "still here")}) && host.ReadDeliveries(1, &got) &&
         got[0].payload() == Padded("still here");
}

}  // namespace kmcld::testing
