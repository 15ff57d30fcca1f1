// End-to-end lifecycle corners: a guest that opens before the offer exists
// (wait_for_offer), host leases released when their tool stops using them,
// pipe-mode offers, ListOffers filters, and how streams end when kmcld
// shuts down.
#include <signal.h>

#include <cstdio>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/bridge_fixture.h"

namespace kmcld::testing {
namespace {

TEST(BridgeLifecycleTest, AGuestWaitingForAnOfferOpensItWhenItArrives) {
  Kmcld k;
  ASSERT_TRUE(k.Start().ok()) << k.process.output();
  kmcl::v1::OpenChannelRequest open;
  open.set_partition_id("default");
  open.mutable_interface_type()->set_value(kEchoType);
  open.set_wait_for_offer(true);
  kmcl::v1::ChannelResponse resp;
  grpc::Status s = k.guest->OpenChannel(Kmcld::Context().get(), open, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.channel().offer().channel().channel_id(), 0u) << "no offer yet";
  EXPECT_EQ(resp.channel().guest().connection(), kmcl::v1::CONNECTION_STATE_ENABLED);

  // Follow the log live; the guest's OPENED names the channel.
  kmcl::v1::WatchEventsRequest watch;
  watch.set_partition_id("default");
  auto ctx = Kmcld::Context();
  auto reader = k.events->WatchEvents(ctx.get(), watch);
  auto offered = k.Offer();
  ASSERT_TRUE(offered.ok());
  kmcl::v1::Event e;
  bool guest_opened = false;
  while (!guest_opened && reader->Read(&e)) {
    guest_opened = e.kind() == kmcl::v1::EVENT_KIND_OPENED && e.role() == kmcl::v1::ENDPOINT_ROLE_GUEST;
  }
  ASSERT_TRUE(guest_opened) << k.process.output();
  EXPECT_EQ(e.channel().channel_id(), offered->offer().channel().channel_id());
  ctx->TryCancel();
  (void)reader->Finish();
  AttachStream host(*k.packets, offered->offer().channel(), kmcl::v1::ENDPOINT_ROLE_HOST);
  AttachStream guest(*k.packets, offered->offer().channel(), kmcl::v1::ENDPOINT_ROLE_GUEST);
  ASSERT_TRUE(host.ok() && guest.ok());
  ASSERT_TRUE(guest.Send({Packet(1, "late but open")}));
  std::vector<kmcl::v1::ReceivedPacket> got;
  ASSERT_TRUE(host.ReadDeliveries(1, &got));
}

// SIGTERM ends Attach and WatchEvents streams UNAVAILABLE ("kmcld is
// shutting down"), not OK, so a tool tells a shutdown from the end of its
// channel; at once, not after --shutdown_grace_ms.
TEST(BridgeLifecycleTest, StreamsEndUnavailableWhenKmcldShutsDown) {
  Kmcld k;
  ASSERT_TRUE(k.Start({"--shutdown_grace_ms=600000"}).ok()) << k.process.output();
  auto offered = k.Offer();
  ASSERT_TRUE(offered.ok()) << offered.status();
  ASSERT_TRUE(k.Open().ok());
  AttachStream host(*k.packets, offered->offer().channel(), kmcl::v1::ENDPOINT_ROLE_HOST);
  ASSERT_TRUE(host.ok());
  kmcl::v1::WatchEventsRequest watch;  // follows live after the backlog
  auto ctx = Kmcld::Context();
  auto reader = k.events->WatchEvents(ctx.get(), watch);
  kmcl::v1::Event e;
  ASSERT_TRUE(reader->Read(&e)) << "the stream is up";

  ASSERT_EQ(::kill(k.process.pid(), SIGTERM), 0);
  while (reader->Read(&e)) {
  }
  grpc::Status watch_end = reader->Finish();
  EXPECT_EQ(watch_end.error_code(), grpc::StatusCode::UNAVAILABLE) << watch_end.error_message();
  EXPECT_NE(watch_end.error_message().find("shutting down"), std::string::npos)
      << watch_end.error_message();
  kmcl::v1::AttachResponse r;
  while (host.Read(&r)) {
  }
  grpc::Status attach_end = host.Close();
  EXPECT_EQ(attach_end.error_code(), grpc::StatusCode::UNAVAILABLE) << attach_end.error_message();
  EXPECT_NE(attach_end.error_message().find("shutting down"), std::string::npos)
      << attach_end.error_message();
}

TEST(BridgeLifecycleTest, ALeaseItsToolStopsUsingIsReleasedSoTeardownCompletes) {
  Kmcld k;
  ASSERT_TRUE(k.Start({"--lease_idle_ms=300"}).ok()) << k.process.output();
  auto offered = k.Offer();
  ASSERT_TRUE(offered.ok());
  ASSERT_TRUE(k.Open().ok());
  const kmcl::v1::ChannelRef ref = offered->offer().channel();
  kmcl::v1::AllocateGuestBufferRequest alloc;
  alloc.set_partition_id("default");
  alloc.set_byte_count(8192);
  kmcl::v1::GuestBuffer buffer;
  ASSERT_TRUE(k.gpadl->AllocateGuestBuffer(Kmcld::Context().get(), alloc, &buffer).ok());
  kmcl::v1::CreateGpadlRequest cg;
  *cg.mutable_channel() = ref;
  kmcl::v1::GpaRange* r = cg.mutable_ranges()->add_ranges();
  r->set_byte_count(8192);
  r->add_pfns(buffer.pfns(1));  // any order of the buffer's pages
  r->add_pfns(buffer.pfns(0));
  kmcl::v1::Gpadl g;
  ASSERT_TRUE(k.gpadl->CreateGpadl(Kmcld::Context().get(), cg, &g).ok());
  kmcl::v1::MapGpadlRequest map;
  *map.mutable_channel() = ref;
  map.set_gpadl_id(g.gpadl_id());
  kmcl::v1::GpadlLease lease;
  ASSERT_TRUE(k.gpadl->MapGpadl(Kmcld::Context().get(), map, &lease).ok());
  // The host tool "crashes": it never unmaps. The guest's teardown waits
  // for the idle expiry, then completes.
  kmcl::v1::TeardownGpadlRequest td;
  *td.mutable_channel() = ref;
  td.set_gpadl_id(g.gpadl_id());
  td.set_wait(true);
  kmcl::v1::Gpadl after;
  grpc::Status s = k.gpadl->TeardownGpadl(Kmcld::Context(30).get(), td, &after);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(after.state(), kmcl::v1::GPADL_STATE_TORN_DOWN);
  kmcl::v1::LeaseIoRequest read;
  read.set_lease_id(lease.lease_id());
  read.set_length(1);
  kmcl::v1::LeaseIoResponse data;
  EXPECT_EQ(k.gpadl->ReadLease(Kmcld::Context().get(), read, &data).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST(BridgeLifecycleTest, PipeOffersCarryTheirModeAndListOffersFilters) {
  Kmcld k;
  ASSERT_TRUE(k.Start().ok()) << k.process.output();
  constexpr char kPipeType[] = "99999999-8888-7777-6666-555555555555";
  kmcl::v1::OfferChannelRequest req;
  req.set_partition_id("default");
  kmcl::v1::ServerChannelSettings* s = req.mutable_settings();
  s->mutable_interface_type()->set_value(kPipeType);
  s->set_pipe_mode(kmcl::v1::PIPE_MODE_MESSAGE);
  s->set_user_defined("hello");
  s->set_friendly_name("a pipe");
  s->set_start(true);
  kmcl::v1::ChannelResponse resp;
  grpc::Status st = k.host->OfferChannel(Kmcld::Context().get(), req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_TRUE(k.Offer().ok());
  kmcl::v1::ListOffersRequest lo;
  lo.set_partition_id("default");
  lo.mutable_interface_type()->set_value(kPipeType);
  kmcl::v1::ListOffersResponse offers;
  ASSERT_TRUE(k.guest->ListOffers(Kmcld::Context().get(), lo, &offers).ok());
  ASSERT_EQ(offers.offers_size(), 1) << "filtered by type";
  const kmcl::v1::Offer& o = offers.offers(0);
  EXPECT_NE(o.wire_channel_flags() & 0x10, 0u) << "named pipe mode";
  ASSERT_GE(o.user_defined().size(), 9u);
  EXPECT_EQ(o.user_defined()[0], 4) << "message-mode pipe type, as Linux's vmbus_channel_offer";
  EXPECT_EQ(o.user_defined().substr(4, 5), "hello");
  lo.set_vtl(1);
  EXPECT_EQ(k.guest->ListOffers(Kmcld::Context().get(), lo, &offers).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT)
      << "the default partition has no guest at VTL 1";
  // Pipes carry no transactions: a wait_for_completion send completes with
  // an NTSTATUS error, plain sends go through.
  auto opened = k.Open("default", kPipeType);
  ASSERT_TRUE(opened.ok()) << opened.status();
  const kmcl::v1::ChannelRef ref = opened->offer().channel();
  AttachStream host(*k.packets, ref, kmcl::v1::ENDPOINT_ROLE_HOST);
  AttachStream guest(*k.packets, ref, kmcl::v1::ENDPOINT_ROLE_GUEST);
  ASSERT_TRUE(host.ok() && guest.ok());
  ASSERT_TRUE(guest.Send({Packet(1, "txn", true), Packet(2, "message", false)}));
  std::vector<kmcl::v1::SendCompletion> done;
  ASSERT_TRUE(guest.ReadCompletions(2, &done));
  EXPECT_NE(done[0].status().code(), 0u) << done[0].status().name();
  EXPECT_EQ(done[1].status().code(), 0u);
  std::vector<kmcl::v1::ReceivedPacket> got;
  ASSERT_TRUE(host.ReadDeliveries(1, &got));
  EXPECT_EQ(got[0].payload().substr(0, 7), "message");
}

// A rescinded guest endpoint stays until its tool closes it, but its relid
// is released at once and the next offer may reuse it: each incarnation is
// then named by its offer_sequence, the new channel never shows the old
// guest, and closing the old guest and cleaning up the old host leave the
// new channel (its ring GPADL included) whole.
TEST(BridgeLifecycleTest, AReusedRelidKeepsEachIncarnationApart) {
  Kmcld k;
  ASSERT_TRUE(k.Start().ok()) << k.process.output();
  auto first = k.Offer();
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(k.Open().ok());
  const kmcl::v1::ChannelRef old = first->offer().channel();
  kmcl::v1::ChannelRequest old_req;
  *old_req.mutable_channel() = old;
  kmcl::v1::ChannelResponse resp;
  grpc::Status s = k.host->RescindChannel(Kmcld::Context().get(), old_req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();

  // The guest releases the relid on its own thread once it heard the
  // rescind: offer (each of a type of its own) until an offer gets it back.
  kmcl::v1::Channel second;
  std::string second_type;
  for (int i = 0; i < 1000 && second.offer().channel().channel_id() != old.channel_id(); ++i) {
    char type[40];
    std::snprintf(type, sizeof(type), "8e1d0a5e-2a3b-4c5d-9e0f-%012d", i);
    second_type = type;
    auto offered = k.Offer("default", second_type);
    ASSERT_TRUE(offered.ok()) << offered.status();
    second = *offered;
  }
  const kmcl::v1::ChannelRef now = second.offer().channel();
  ASSERT_EQ(now.channel_id(), old.channel_id()) << "the guest released the relid: reused";
  ASSERT_NE(now.offer_sequence(), old.offer_sequence());
  EXPECT_FALSE(second.guest().present()) << "the old incarnation's guest is not the new one's";

  ASSERT_TRUE(k.Open("default", second_type).ok());
  kmcl::v1::ChannelRequest now_req;
  *now_req.mutable_channel() = now;
  kmcl::v1::ListGpadlsRequest lg;
  lg.set_partition_id(now.partition_id());
  lg.set_channel_id(now.channel_id());
  kmcl::v1::ListGpadlsResponse gpadls_before;
  ASSERT_TRUE(k.gpadl->ListGpadls(Kmcld::Context().get(), lg, &gpadls_before).ok());
  ASSERT_FALSE(gpadls_before.gpadls().empty()) << "the new channel's ring";

  // The old incarnation, by its sequence: its guest closes, its host is
  // cleaned up.
  s = k.host->GetChannel(Kmcld::Context().get(), old_req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.channel().guest().connection(), kmcl::v1::CONNECTION_STATE_RESCINDED);
  EXPECT_EQ(resp.channel().host().connection(), kmcl::v1::CONNECTION_STATE_RESCINDED);
  s = k.guest->CloseChannel(Kmcld::Context().get(), old_req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  kmcl::v1::CleanupChannelResponse cleaned;
  s = k.host->CleanupChannel(Kmcld::Context().get(), old_req, &cleaned);
  ASSERT_TRUE(s.ok()) << s.error_message();
  s = k.host->GetChannel(Kmcld::Context().get(), old_req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << "gone: stale";

  // The new channel is untouched.
  s = k.host->GetChannel(Kmcld::Context().get(), now_req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.channel().host().connection(), kmcl::v1::CONNECTION_STATE_OPENED);
  EXPECT_EQ(resp.channel().guest().connection(), kmcl::v1::CONNECTION_STATE_OPENED);
  kmcl::v1::ListGpadlsResponse gpadls_after;
  ASSERT_TRUE(k.gpadl->ListGpadls(Kmcld::Context().get(), lg, &gpadls_after).ok());
  EXPECT_EQ(gpadls_after.gpadls_size(), gpadls_before.gpadls_size());
  EXPECT_TRUE(PacketFlows(*k.packets, now));
}

}  // namespace
}  // namespace kmcld::testing
