// End-to-end through a real kmcld: external data (GPA direct) from the
// guest role, rescind with transactions outstanding, backpressure through
// send credits, and detach/re-attach within and after the linger.
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/bridge_fixture.h"

namespace kmcld::testing {
namespace {

using kmcl::v1::ENDPOINT_ROLE_GUEST;
using kmcl::v1::ENDPOINT_ROLE_HOST;

constexpr uint32_t kStatusCancelled = 0xC0000120;

class BridgeFlowTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> flags = {}) {
    ASSERT_TRUE(k_.Start(flags).ok()) << k_.process.output();
    auto offered = k_.Offer();
    ASSERT_TRUE(offered.ok()) << offered.status();
    ref_ = offered->offer().channel();
    ASSERT_TRUE(k_.Open().ok());
  }
  // The guest sends one packet, the host tool reads it and holds it; then a
  // pause with a 1 s deadline waits for it: DEADLINE_EXCEEDED. Returns the
  // held delivery.
  kmcl::v1::ReceivedPacket HoldADeliveryAndPause(AttachStream& host, AttachStream& guest) {
    EXPECT_TRUE(host.ok() && guest.ok());
    EXPECT_TRUE(guest.Send({Packet(1, "hold me")}));
    std::vector<kmcl::v1::ReceivedPacket> got;
    EXPECT_TRUE(host.ReadDeliveries(1, &got));
    kmcl::v1::ChannelRequest req;
    *req.mutable_channel() = ref_;
    kmcl::v1::ChannelResponse resp;
    grpc::Status s = k_.host->PauseChannel(Kmcld::Context(1).get(), req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
    return got.empty() ? kmcl::v1::ReceivedPacket() : got[0];
  }
  kmcl::v1::Channel Get() {
    kmcl::v1::ChannelRequest req;
    *req.mutable_channel() = ref_;
    kmcl::v1::ChannelResponse resp;
    EXPECT_TRUE(k_.host->GetChannel(Kmcld::Context().get(), req, &resp).ok());
    return resp.channel();
  }
  Kmcld k_;
  kmcl::v1::ChannelRef ref_;
};

TEST_F(BridgeFlowTest, ExternalDataFromTheGuestReachesTheHostAsRanges) {
  Start();
  kmcl::v1::AllocateGuestBufferRequest alloc;
  alloc.set_partition_id("default");
  alloc.set_byte_count(8192);
  kmcl::v1::GuestBuffer buffer;
  ASSERT_TRUE(k_.gpadl->AllocateGuestBuffer(Kmcld::Context().get(), alloc, &buffer).ok());
  kmcl::v1::WriteGuestMemoryRequest w;
  w.set_partition_id("default");
  w.set_buffer_id(buffer.buffer_id());
  w.set_offset(4080);
  const std::string text = "external bytes across a page boundary";
  w.set_data(text);
  kmcl::v1::WriteGuestMemoryResponse wr;
  ASSERT_TRUE(k_.gpadl->WriteGuestMemory(Kmcld::Context().get(), w, &wr).ok());
  kmcl::v1::CreateGpadlRequest cg;
  *cg.mutable_channel() = ref_;
  cg.mutable_buffer()->set_buffer_id(buffer.buffer_id());
  kmcl::v1::Gpadl g;
  ASSERT_TRUE(k_.gpadl->CreateGpadl(Kmcld::Context().get(), cg, &g).ok());

  AttachStream host(*k_.packets, ref_, ENDPOINT_ROLE_HOST);
  AttachStream guest(*k_.packets, ref_, ENDPOINT_ROLE_GUEST);
  ASSERT_TRUE(host.ok() && guest.ok());
  kmcl::v1::SendPacket p = Packet(7, "header");
  p.mutable_external()->mutable_gpadl()->set_gpadl_id(g.gpadl_id());
  p.mutable_external()->mutable_gpadl()->set_offset(4080);
  p.mutable_external()->mutable_gpadl()->set_length(text.size());
  ASSERT_TRUE(guest.Send({p}));
  std::vector<kmcl::v1::ReceivedPacket> got;
  ASSERT_TRUE(host.ReadDeliveries(1, &got));
  ASSERT_EQ(got[0].external_ranges_size(), 1);
  const kmcl::v1::GpaRange& r = got[0].external_ranges(0);
  EXPECT_EQ(r.byte_count(), text.size());
  EXPECT_EQ(r.byte_offset(), 4080u);
  ASSERT_EQ(r.pfns_size(), 2);
  EXPECT_EQ(r.pfns(0), buffer.pfns(0));
  // The host reads the external data through guest memory.
  std::string seen;
  for (int i = 0; i < r.pfns_size(); ++i) {
    kmcl::v1::ReadGuestMemoryRequest rd;
    rd.set_partition_id("default");
    const uint64_t start = i == 0 ? r.byte_offset() : 0;
    const uint64_t len = i == 0 ? 4096 - start : r.byte_count() - (4096 - r.byte_offset());
    rd.set_gpa(r.pfns(i) * 4096 + start);
    rd.set_length(static_cast<uint32_t>(len));
    kmcl::v1::ReadGuestMemoryResponse rr;
    ASSERT_TRUE(k_.gpadl->ReadGuestMemory(Kmcld::Context().get(), rd, &rr).ok());
    seen += rr.data();
  }
  EXPECT_EQ(seen, text);
  ASSERT_TRUE(host.Complete({{got[0].delivery_id(), "ok"}}));
  std::vector<kmcl::v1::SendCompletion> done;
  ASSERT_TRUE(guest.ReadCompletions(1, &done));
  EXPECT_EQ(done[0].tag(), 7u);
  EXPECT_EQ(done[0].payload(), Padded("ok"));

  // The host role cannot send external data: the stream ends.
  ASSERT_TRUE(host.Send({p}));
  kmcl::v1::AttachResponse resp;
  while (host.Read(&resp)) {
  }
  EXPECT_EQ(host.Close().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(BridgeFlowTest, RescindWithTransactionsOutstandingCancelsEachOnce) {
  ASSERT_TRUE(k_.Start().ok()) << k_.process.output();
  auto offered = k_.Offer("default", kEchoType, 0, /*start=*/false);  // the host stays paused
  ASSERT_TRUE(offered.ok());
  ref_ = offered->offer().channel();
  ASSERT_TRUE(k_.Open().ok());
  AttachStream guest(*k_.packets, ref_, ENDPOINT_ROLE_GUEST);
  ASSERT_TRUE(guest.ok());
  std::vector<kmcl::v1::SendPacket> batch;
  for (int i = 0; i < 50; ++i) batch.push_back(Packet(i, absl::StrCat("t", i)));
  ASSERT_TRUE(guest.Send(batch));
  // Rescind once all 50 are transactions in the channel (a send that arrives
  // after the close gets STATUS_INVALID_DEVICE_STATE instead).
  kmcl::v1::GetChannelDiagnosticsRequest dr;
  *dr.mutable_channel() = ref_;
  kmcl::v1::ChannelDiagnostics diag;
  for (int i = 0; i < 100000 && diag.guest().outstanding_transactions() < 50; ++i) {
    ASSERT_TRUE(k_.diagnostics->GetChannelDiagnostics(Kmcld::Context().get(), dr, &diag).ok());
  }
  ASSERT_EQ(diag.guest().outstanding_transactions(), 50u);
  kmcl::v1::ChannelRequest req;
  *req.mutable_channel() = ref_;
  kmcl::v1::ChannelResponse resp;
  grpc::Status s = k_.host->RescindChannel(Kmcld::Context().get(), req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.channel().host().connection(), kmcl::v1::CONNECTION_STATE_RESCINDED);
  std::vector<kmcl::v1::SendCompletion> done;
  ASSERT_TRUE(guest.ReadCompletions(50, &done));
  std::vector<int> seen(50, 0);
  for (const auto& c : done) {
    EXPECT_EQ(c.status().code(), kStatusCancelled) << c.status().name();
    EXPECT_EQ(c.status().name(), "STATUS_CANCELLED");
    ASSERT_LT(c.tag(), 50u);
    ++seen[c.tag()];
  }
  for (int i = 0; i < 50; ++i) EXPECT_EQ(seen[i], 1) << "tag " << i;
  EXPECT_EQ(Get().guest().connection(), kmcl::v1::CONNECTION_STATE_RESCINDED);
  // The guest tool closes; the host cleans up; the relid is reusable.
  kmcl::v1::ChannelResponse closed;
  ASSERT_TRUE(k_.guest->CloseChannel(Kmcld::Context().get(), req, &closed).ok());
  kmcl::v1::CleanupChannelResponse cleaned;
  s = k_.host->CleanupChannel(Kmcld::Context().get(), req, &cleaned);
  ASSERT_TRUE(s.ok()) << s.error_message();
  auto again = k_.Offer();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->offer().channel().channel_id(), ref_.channel_id());
  EXPECT_NE(again->offer().channel().offer_sequence(), ref_.offer_sequence());
  s = k_.host->GetChannel(Kmcld::Context().get(), req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << "stale incarnation";
  EXPECT_NE(s.error_message().find(absl::StrCat(
                "offer_sequence ", ref_.offer_sequence(),
                " is stale (an older incarnation; the current one is ",
                again->offer().channel().offer_sequence(), ")")),
            std::string::npos)
      << s.error_message();
}

TEST_F(BridgeFlowTest, AToolThatStopsCompletingStopsThePeersCreditsThenTrafficResumes) {
  Start({"--packets_in_flight_per_stream=32", "--deliveries_in_flight=8"});
  AttachStream host(*k_.packets, ref_, ENDPOINT_ROLE_HOST, /*delivery_credits=*/1000);
  AttachStream guest(*k_.packets, ref_, ENDPOINT_ROLE_GUEST);
  ASSERT_TRUE(host.ok() && guest.ok());
  EXPECT_EQ(guest.send_credits(), 32u);
  std::vector<kmcl::v1::SendPacket> batch;
  for (int i = 0; i < 32; ++i) batch.push_back(Packet(i, std::string(100, 'a' + i % 26)));
  ASSERT_TRUE(guest.Send(batch));
  EXPECT_EQ(guest.send_credits(), 0u);
  // The host takes 8 (the delivery window) and holds them.
  std::vector<kmcl::v1::ReceivedPacket> got;
  ASSERT_TRUE(host.ReadDeliveries(8, &got));
  kmcl::v1::ChannelDiagnostics diag;
  kmcl::v1::GetChannelDiagnosticsRequest dr;
  *dr.mutable_channel() = ref_;
  ASSERT_TRUE(k_.diagnostics->GetChannelDiagnostics(Kmcld::Context().get(), dr, &diag).ok());
  EXPECT_EQ(diag.host().delivered_uncompleted(), 8u);
  EXPECT_EQ(diag.host().transaction_quota(), 8u);
  EXPECT_EQ(guest.send_credits(), 0u) << "no completion, no credit";
  // One more send beyond the credits ends the stream with RESOURCE_EXHAUSTED
  // (tried on a second stream would be ALREADY_EXISTS; here the guest keeps
  // its stream and completes the flow first).
  for (int round = 0; round < 4; ++round) {
    std::vector<std::pair<uint64_t, std::string>> done;
    for (const auto& p : got) done.emplace_back(p.delivery_id(), "");
    got.clear();
    ASSERT_TRUE(host.Complete(done));
    if (round < 3) {
      ASSERT_TRUE(host.ReadDeliveries(8, &got));
    }
  }
  std::vector<kmcl::v1::SendCompletion> completions;
  ASSERT_TRUE(guest.ReadCompletions(32, &completions));
  kmcl::v1::AttachResponse resp;
  while (guest.send_credits() < 32) ASSERT_TRUE(guest.Read(&resp));
  EXPECT_EQ(guest.send_credits(), 32u) << "every credit came back";
  for (int i = 0; i < 32; ++i) EXPECT_EQ(completions[i].tag(), static_cast<uint64_t>(i));
  // Now a send beyond the allowance is a protocol violation.
  batch.resize(33, Packet(99, "x"));
  ASSERT_TRUE(guest.Send(batch));
  while (guest.Read(&resp)) {
  }
  EXPECT_EQ(guest.Close().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(BridgeFlowTest, UncleanDetachKeepsDeliveriesForTheNextStreamWithinTheLinger) {
  Start({"--attach_linger_ms=600000"});
  AttachStream guest(*k_.packets, ref_, ENDPOINT_ROLE_GUEST);
  ASSERT_TRUE(guest.ok());
  std::vector<kmcl::v1::ReceivedPacket> held;
  {
    AttachStream host(*k_.packets, ref_, ENDPOINT_ROLE_HOST);
    ASSERT_TRUE(host.ok());
    std::vector<kmcl::v1::SendPacket> batch;
    for (int i = 0; i < 10; ++i) batch.push_back(Packet(100 + i, absl::StrCat("m", i)));
    ASSERT_TRUE(guest.Send(batch));
    ASSERT_TRUE(host.ReadDeliveries(10, &held));
    ASSERT_TRUE(host.Complete({{held[0].delivery_id(), "first"}}));
    // A second stream to the same endpoint is refused.
    AttachStream second(*k_.packets, ref_, ENDPOINT_ROLE_HOST);
    EXPECT_FALSE(second.ok());
    host.Cancel();  // as a killed tool: no clean close
  }
  std::unique_ptr<AttachStream> again_stream = AttachWhenFree(*k_.packets, ref_, ENDPOINT_ROLE_HOST);
  AttachStream& again = *again_stream;
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again.attached().redelivered(), 9u);
  std::vector<kmcl::v1::ReceivedPacket> redelivered;
  ASSERT_TRUE(again.ReadDeliveries(9, &redelivered));
  for (int i = 0; i < 9; ++i) {
    EXPECT_EQ(redelivered[i].delivery_id(), held[i + 1].delivery_id()) << "same ids";
    EXPECT_EQ(redelivered[i].payload(), held[i + 1].payload());
  }
  std::vector<std::pair<uint64_t, std::string>> done;
  for (const auto& p : redelivered) done.emplace_back(p.delivery_id(), "later");
  ASSERT_TRUE(again.Complete(done));
  std::vector<kmcl::v1::SendCompletion> completions;
  ASSERT_TRUE(guest.ReadCompletions(10, &completions));
  EXPECT_EQ(completions[0].payload(), Padded("first"));
  for (int i = 1; i < 10; ++i) EXPECT_EQ(completions[i].payload(), Padded("later"));
  EXPECT_TRUE(again.Close().ok());
}

TEST_F(BridgeFlowTest, AfterTheLingerHeldDeliveriesCompleteEmptyAndLostCompletionsAreDropped) {
  Start({"--attach_linger_ms=200"});
  AttachStream host(*k_.packets, ref_, ENDPOINT_ROLE_HOST);
  ASSERT_TRUE(host.ok());
  {
    AttachStream guest(*k_.packets, ref_, ENDPOINT_ROLE_GUEST);
    ASSERT_TRUE(guest.ok());
    ASSERT_TRUE(guest.Send({Packet(1, "a"), Packet(2, "b")}));
    std::vector<kmcl::v1::ReceivedPacket> got;
    ASSERT_TRUE(host.ReadDeliveries(2, &got));
    guest.Cancel();  // the guest tool vanishes with two transactions outstanding
    ASSERT_TRUE(host.Complete({{got[0].delivery_id(), "x"}, {got[1].delivery_id(), "y"}}));
  }
  // The host's deliveries, in turn, are released by the linger when the host
  // tool vanishes: the guest's next sends complete with empty payloads.
  std::unique_ptr<AttachStream> guest_stream = AttachWhenFree(*k_.packets, ref_, ENDPOINT_ROLE_GUEST);
  AttachStream& guest = *guest_stream;
  ASSERT_TRUE(guest.ok());
  // The guest's two completions are kept for it within its linger (or
  // dropped after it); either way every credit comes back.
  kmcl::v1::AttachResponse resp;
  while (guest.send_credits() < 256) {
    ASSERT_TRUE(guest.Read(&resp));
    for (const auto& c : resp.send_completions().completions()) {
      EXPECT_EQ(c.payload(), Padded(c.tag() == 1 ? "x" : "y"));
    }
  }
  ASSERT_TRUE(guest.Send({Packet(3, "c")}));
  std::vector<kmcl::v1::ReceivedPacket> got;
  ASSERT_TRUE(host.ReadDeliveries(1, &got));
  host.Cancel();
  std::vector<kmcl::v1::SendCompletion> completions;
  while (completions.empty() || completions.back().tag() != 3) {
    ASSERT_TRUE(guest.Read(&resp));
    for (const auto& c : resp.send_completions().completions()) completions.push_back(c);
  }
  EXPECT_EQ(completions.back().payload(), "") << "completed empty after the host's linger";
  EXPECT_EQ(completions.back().status().code(), 0u);
  EXPECT_TRUE(guest.Close().ok());
}

TEST_F(BridgeFlowTest, PauseWhileAToolHoldsDeliveriesIsDeadlineExceededButTakesEffect) {
  Start();
  AttachStream host(*k_.packets, ref_, ENDPOINT_ROLE_HOST);
  AttachStream guest(*k_.packets, ref_, ENDPOINT_ROLE_GUEST);
  const kmcl::v1::ReceivedPacket held = HoldADeliveryAndPause(host, guest);
  kmcl::v1::ChannelRequest req;
  *req.mutable_channel() = ref_;
  kmcl::v1::ChannelResponse resp;
  kmcl::v1::Channel now = Get();
  EXPECT_EQ(now.host().run(), kmcl::v1::RUN_STATE_PAUSED) << "the pause took effect at once";
  EXPECT_FALSE(now.host().running());
  // Completing the held delivery lets the pause finish; start again.
  ASSERT_TRUE(host.Complete({{held.delivery_id(), "done"}}));
  std::vector<kmcl::v1::SendCompletion> completions;
  ASSERT_TRUE(guest.ReadCompletions(1, &completions));
  grpc::Status s = k_.host->StartChannel(Kmcld::Context().get(), req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(resp.channel().host().running());
}

// The tester's t31: a pause waits for a held delivery; many more calls on
// the same channel, each given up by its caller, must not take the daemon's
// blocking threads: they queue behind the pause (docs/api.md, "Blocking
// calls"), so another partition's calls and an admin's forced delete of
// this partition still run.
TEST_F(BridgeFlowTest, CallsQueuedBehindAHeldPauseLeaveOtherPartitionsTheirThreads) {
  Start({"--max_blocking_calls=8"});
  AttachStream host(*k_.packets, ref_, ENDPOINT_ROLE_HOST);
  AttachStream guest(*k_.packets, ref_, ENDPOINT_ROLE_GUEST);
  HoldADeliveryAndPause(host, guest);
  ASSERT_FALSE(HasFailure());
  kmcl::v1::ChannelRequest req;
  *req.mutable_channel() = ref_;
  // Twice the daemon's blocking threads' worth of starts, each given up.
  std::vector<std::thread> callers;
  for (int i = 0; i < 16; ++i) {
    callers.emplace_back([&] {
      kmcl::v1::ChannelResponse r;
      grpc::Status st = k_.host->StartChannel(Kmcld::Context(1).get(), req, &r);
      EXPECT_FALSE(st.ok()) << "a start ran while the pause waits";
    });
  }
  for (std::thread& t : callers) t.join();

  kmcl::v1::CreatePartitionRequest create;
  create.set_id("other-tenant");
  kmcl::v1::Partition p;
  grpc::Status s = k_.partitions->CreatePartition(Kmcld::Context().get(), create, &p);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_TRUE(k_.Offer("other-tenant").ok());

  kmcl::v1::DeletePartitionRequest del;
  del.set_id("default");
  del.set_force(true);
  kmcl::v1::DeletePartitionResponse deleted;
  s = k_.partitions->DeletePartition(Kmcld::Context().get(), del, &deleted);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

}  // namespace
}  // namespace kmcld::testing
