// Synchronous tests of what the control plane keeps per relid and per guest
// connection (docs/control-plane.md): entries end when their relid is
// released or their connection unloads, no answer goes out that nobody asked
// for, and every request is answered once. Messages in the orders real
// guests produce them: reset and kexec (UNLOAD), rescinds racing GPADL
// creation, GPADL_HEADER and GPADL_BODY split across events.
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kmcl_core/control/control_plane_loopback.h"
#include "kmcl_core/saved/saved_state.pb.h"

namespace kmcl {
namespace {

// One range over consecutive PFNs [first, first + count).
std::vector<GpaRange> Pages(uint64_t first, uint32_t count) {
  GpaRange r{count * 4096, 0, {}};
  for (uint32_t i = 0; i < count; ++i) r.pfns.push_back(first + i);
  return {r};
}

// The guest-to-host messages describing a GPADL (GPADL_HEADER, then bodies).
std::vector<ChannelMessage> GpadlMessages(uint32_t relid, uint32_t id,
                                          const std::vector<GpaRange>& ranges) {
  absl::StatusOr<std::vector<ChannelMessage>> m = EncodeGpadlMessages(relid, id, ranges);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *m : std::vector<ChannelMessage>{};
}

template <typename T>
size_t CountSent(const std::vector<ServerEffect>& effects) {
  size_t n = 0;
  for (const ServerEffect& e : effects) {
    if (auto* s = std::get_if<SendToGuest>(&e)) n += std::holds_alternative<T>(s->message);
  }
  return n;
}

// Connect; offer (relid 1); GPADL `id` over `pages` created.
void ConnectWithGpadl(Loopback& lb, uint32_t id, std::vector<GpaRange> pages) {
  lb.Connect();
  EXPECT_EQ(lb.Offer().relid, 1u);
  EXPECT_TRUE(lb.client(0).CreateGpadl(1, id, pages).ok());
  lb.Pump();
  EXPECT_EQ(lb.Guest<GpadlCreateCompleted>().size(), 1u);
}

// The same, and the host maps the GPADL; returns the lease id.
uint64_t ConnectWithMappedGpadl(Loopback& lb, uint32_t id, std::vector<GpaRange> pages) {
  ConnectWithGpadl(lb, id, std::move(pages));
  absl::StatusOr<GpadlLease> lease = lb.table().Map(id, false);
  EXPECT_TRUE(lease.ok()) << lease.status();
  return lease.ok() ? lease->lease_id : 0;
}

void ExpectInvariants(Loopback& lb) {
  EXPECT_TRUE(lb.server().CheckInvariants().ok()) << lb.server().CheckInvariants();
  EXPECT_TRUE(lb.client(0).CheckInvariants().ok()) << lb.client(0).CheckInvariants();
}

// Issue item 1: connect; offer; GPADL_HEADER of 0x5000 (40 pages) without
// its body; revoke; RELID_RELEASED; the relid is offered again.
class HalfBuiltGpadlOnAReleasedRelid : public ::testing::Test {
 protected:
  void SetUp() override {
    lb_.Connect();
    ASSERT_EQ(lb_.Offer().relid, 1u);
    messages_ = GpadlMessages(1, 0x5000, Pages(700, 40));
    ASSERT_EQ(messages_.size(), 2u) << "41 words: a header and one body";
    lb_.server().HandleGuestMessage(0, messages_[0]);
    ASSERT_TRUE(lb_.server().Revoke(1).ok());
    lb_.Pump();
    ASSERT_EQ(lb_.Guest<OfferRescinded>().size(), 1u);
    ASSERT_TRUE(lb_.client(0).Release(1).ok());
    lb_.Pump();
    ASSERT_EQ(lb_.Host<ChannelReleased>().size(), 1u);
    ASSERT_EQ(lb_.Offer().relid, 1u) << "relid 1 is reused";
    ExpectInvariants(lb_);
  }

  Loopback lb_;
  std::vector<ChannelMessage> messages_;
};

TEST_F(HalfBuiltGpadlOnAReleasedRelid, TheIdIsFreeForTheNewIncarnation) {
  ASSERT_TRUE(lb_.client(0).CreateGpadl(1, 0x5000, Pages(900, 1)).ok());
  lb_.Pump();
  auto created = lb_.Guest<GpadlCreateCompleted>();
  ASSERT_EQ(created.size(), 1u);
  EXPECT_EQ(created[0].status, kStatusSuccess) << "refused as already in use";
  ASSERT_TRUE(lb_.table().Get(0x5000).has_value());
  EXPECT_EQ(lb_.table().Get(0x5000)->ranges[0].pfns, std::vector<uint64_t>{900});
  ExpectInvariants(lb_);
}

TEST_F(HalfBuiltGpadlOnAReleasedRelid, ItsLateBodyCreatesNothing) {
  lb_.server().HandleGuestMessage(0, messages_[1]);
  auto effects = lb_.server().TakeEffects();
  EXPECT_EQ(CountSent<GpadlCreated>(effects), 0u) << "answered a request of a released relid";
  ASSERT_EQ(effects.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<ProtocolError>(effects[0]));
  EXPECT_FALSE(lb_.table().Get(0x5000).has_value());
  ExpectInvariants(lb_);
}

// Issue item 2: after UNLOAD_RESPONSE the guest's GPADLs are gone.
TEST(ControlPlaneLifecycle, UnloadTearsDownTheGuestsGpadls) {
  Loopback lb;
  ConnectWithGpadl(lb, 0xE1E10, Pages(1000, 2));
  lb.client(0).Unload();
  lb.Pump();
  ASSERT_EQ(lb.Guest<Unloaded>().size(), 1u);
  EXPECT_FALSE(lb.table().Get(0xE1E10).has_value());
  ExpectInvariants(lb);
  lb.Connect();
  ASSERT_TRUE(lb.client(0).CreateGpadl(1, 0xE1E10, Pages(1100, 1)).ok());
  lb.Pump();
  auto created = lb.Guest<GpadlCreateCompleted>();
  ASSERT_EQ(created.size(), 1u);
  EXPECT_EQ(created[0].status, kStatusSuccess) << "refused as already in use";
}

TEST(ControlPlaneLifecycle, UnloadWaitsForTheHostToUnmapTheGuestsGpadls) {
  Loopback lb;
  const uint64_t lease = ConnectWithMappedGpadl(lb, 0xE1E10, Pages(1000, 2));
  // A teardown the guest asked for is still pending when it unloads.
  ASSERT_TRUE(lb.client(0).TeardownGpadl(1, 0xE1E10).ok());
  lb.client(0).Unload();
  lb.Pump();
  EXPECT_TRUE(lb.Guest<Unloaded>().empty()) << "a host mapping still holds the GPADL";
  EXPECT_TRUE(lb.server().Unloading(0));
  ExpectInvariants(lb);
  auto unmapped = lb.table().Unmap(lease);
  ASSERT_TRUE(unmapped.ok());
  lb.server().GpadlUnmapped(*unmapped);
  lb.Pump();
  EXPECT_EQ(lb.Guest<Unloaded>().size(), 1u);
  EXPECT_THAT(lb.host_to_guest(), ::testing::Not(::testing::Contains("GPADL_TORNDOWN")))
      << "the unload ended the request";
  EXPECT_TRUE(lb.Guest<ClientProtocolError>().empty());
  EXPECT_FALSE(lb.table().Get(0xE1E10).has_value());
}

// Issue item 3: UNLOAD_RESPONSE waits for the host endpoint's close.
TEST(ControlPlaneLifecycle, UnloadResponseWaitsForTheClose) {
  Loopback lb;
  ConnectWithGpadl(lb, 0x7000, Pages(600, 8));
  const OfferHandle h{1, 1};
  OpenParams p;
  p.ring_gpadl_id = 0x7000;
  p.downstream_page_offset = 4;
  ASSERT_TRUE(lb.client(0).Open(h.relid, p).ok());
  lb.Pump();
  auto requested = lb.Host<OpenRequested>();
  ASSERT_EQ(requested.size(), 1u);
  EXPECT_EQ(requested[0].open.open_id, 1u);
  ASSERT_TRUE(lb.server().AcceptOpen(h.relid, kStatusSuccess).ok());
  lb.Pump();
  lb.client(0).Unload();
  lb.Pump();
  EXPECT_EQ(lb.Host<CloseRequested>().size(), 1u);
  EXPECT_TRUE(lb.Guest<Unloaded>().empty()) << "UNLOAD_RESPONSE before the close completed";
  EXPECT_EQ(lb.client(0).CreateGpadl(h.relid, 0x7001, Pages(610, 1)).code(),
            absl::StatusCode::kFailedPrecondition)
      << "no requests between UNLOAD and UNLOAD_RESPONSE";
  ExpectInvariants(lb);
  ASSERT_TRUE(lb.server().CloseComplete(h.relid).ok());
  lb.Pump();
  EXPECT_EQ(lb.Guest<Unloaded>().size(), 1u);
  EXPECT_EQ(lb.server().Channel(h.relid)->state, ServerChannelState::kOffered);
  EXPECT_FALSE(lb.table().Get(0x7000).has_value());
  ExpectInvariants(lb);
}

// Issue item 4: the guest holds RELID_RELEASED until its GPADL request on
// the relid is answered.
TEST(ControlPlaneLifecycle, ReleaseWaitsForGpadlCreated) {
  Loopback lb;
  lb.Connect();
  OfferHandle h = lb.Offer();
  ASSERT_TRUE(lb.client(0).CreateGpadl(h.relid, 0x6000, Pages(1300, 1)).ok());
  std::vector<ClientEffect> in_flight = lb.client(0).TakeEffects();  // the header
  ASSERT_EQ(in_flight.size(), 1u);
  ASSERT_TRUE(lb.server().Revoke(h.relid).ok());
  lb.Pump();
  ASSERT_EQ(lb.Guest<OfferRescinded>().size(), 1u);
  ASSERT_TRUE(lb.client(0).Release(h.relid).ok());
  EXPECT_TRUE(lb.client(0).TakeEffects().empty()) << "RELID_RELEASED before GPADL_CREATED";
  ExpectInvariants(lb);
  lb.server().HandleGuestMessage(0, Encode(std::get<SendToHost>(in_flight[0]).message));
  lb.Pump();
  auto created = lb.Guest<GpadlCreateCompleted>();
  ASSERT_EQ(created.size(), 1u);
  EXPECT_EQ(created[0].gpadl_id, 0x6000u);
  EXPECT_EQ(created[0].status, kStatusSuccess);
  EXPECT_TRUE(lb.Guest<ClientProtocolError>().empty());
  EXPECT_EQ(lb.Host<ChannelReleased>().size(), 1u) << "released after the answer";
  EXPECT_FALSE(lb.client(0).Channel(h.relid).has_value());
  EXPECT_FALSE(lb.table().Get(0x6000).has_value()) << "the host tore it down with the relid";
  ExpectInvariants(lb);
}

TEST(ControlPlaneLifecycle, ReleaseWaitsForGpadlTorndown) {
  Loopback lb;
  const uint64_t lease = ConnectWithMappedGpadl(lb, 0x6100, Pages(1310, 1));
  ASSERT_TRUE(lb.client(0).TeardownGpadl(1, 0x6100).ok());
  ASSERT_TRUE(lb.server().Revoke(1).ok());
  lb.Pump();
  ASSERT_TRUE(lb.client(0).Release(1).ok());
  lb.Pump();
  EXPECT_TRUE(lb.Host<ChannelReleased>().empty()) << "GPADL_TORNDOWN still owed";
  lb.server().GpadlUnmapped(*lb.table().Unmap(lease));
  lb.Pump();
  EXPECT_EQ(lb.Guest<GpadlTeardownCompleted>().size(), 1u);
  EXPECT_EQ(lb.Host<ChannelReleased>().size(), 1u);
  EXPECT_TRUE(lb.Guest<ClientProtocolError>().empty());
  ExpectInvariants(lb);
}

// Issue item 5: a GPADL the relid's release tore down is finished silently.
TEST(ControlPlaneLifecycle, NoTorndownForATeardownNobodyAskedFor) {
  Loopback lb;
  const uint64_t lease = ConnectWithMappedGpadl(lb, 0x7300, Pages(1400, 2));
  ASSERT_TRUE(lb.server().Revoke(1).ok());
  lb.Pump();
  ASSERT_TRUE(lb.client(0).Release(1).ok());
  lb.Pump();
  ExpectInvariants(lb);
  auto unmapped = lb.table().Unmap(lease);
  ASSERT_TRUE(unmapped.ok());
  EXPECT_TRUE(unmapped->completed_teardown);
  lb.server().GpadlUnmapped(*unmapped);
  auto effects = lb.server().TakeEffects();
  EXPECT_EQ(CountSent<GpadlTorndown>(effects), 0u);
  for (const ServerEffect& e : effects) EXPECT_FALSE(std::holds_alternative<SendToGuest>(e));
  EXPECT_FALSE(lb.table().Get(0x7300).has_value());
  ExpectInvariants(lb);
}

// ---- Across save/restore ------------------------------------------------------

TEST(ControlPlaneLifecycle, AHalfBuiltGpadlSurvivesSaveAndRestore) {
  Loopback lb;
  lb.Connect();
  OfferHandle h = lb.Offer();
  auto messages = GpadlMessages(h.relid, 0x5100, Pages(700, 40));
  lb.server().HandleGuestMessage(0, messages[0]);
  saved::v1::SavedPartition saved;
  lb.server().Save(saved);
  ASSERT_EQ(saved.assembling_gpadls_size(), 1);
  VmbusServer restored(lb.table(), kGuestPages, {0}, wire::kVersionCopper);
  ASSERT_TRUE(restored.Restore(saved).ok());
  EXPECT_TRUE(restored.CheckInvariants().ok()) << restored.CheckInvariants();
  restored.HandleGuestMessage(0, messages[1]);
  auto effects = restored.TakeEffects();
  EXPECT_EQ(CountSent<GpadlCreated>(effects), 1u) << "the body after the restore completes it";
  EXPECT_TRUE(lb.table().Get(0x5100).has_value());
}

TEST(ControlPlaneLifecycle, UnloadAndHeldReleaseSurviveSaveAndRestore) {
  Loopback lb;
  lb.Connect();
  OfferHandle a = lb.Offer();
  OfferHandle b = lb.Offer();
  uint32_t ring = lb.StartOpen(a.relid);
  ASSERT_TRUE(lb.server().AcceptOpen(a.relid, kStatusSuccess).ok());
  ASSERT_TRUE(lb.client(0).CreateGpadl(b.relid, 0x6200, Pages(1500, 1)).ok());
  std::vector<ClientEffect> in_flight = lb.client(0).TakeEffects();
  ASSERT_TRUE(lb.server().Revoke(b.relid).ok());
  lb.Pump();
  ASSERT_TRUE(lb.client(0).Release(b.relid).ok());
  saved::v1::Client saved_client;
  lb.client(0).Save(saved_client);
  VmbusClient client(0, wire::kVersionCopper);
  ASSERT_TRUE(client.Restore(saved_client).ok());
  ASSERT_TRUE(client.Channel(b.relid).has_value());
  EXPECT_TRUE(client.Channel(b.relid)->release_pending);
  EXPECT_EQ(client.Release(b.relid).code(), absl::StatusCode::kNotFound) << "released once";

  lb.client(0).Unload();
  lb.Pump();
  ASSERT_TRUE(lb.server().Unloading(0));
  saved::v1::SavedPartition saved;
  lb.server().Save(saved);
  VmbusServer server(lb.table(), kGuestPages, {0}, wire::kVersionCopper);
  ASSERT_TRUE(server.Restore(saved).ok());
  EXPECT_TRUE(server.Unloading(0));
  server.HandleGuestMessage(0, Encode(InitiateContact{wire::kVersionCopper, 0, 2, 0}));
  auto refused = server.TakeEffects();
  EXPECT_EQ(CountSent<VersionResponse>(refused), 1u) << "refused until UNLOAD_RESPONSE";
  ASSERT_TRUE(server.CloseComplete(a.relid).ok());
  EXPECT_EQ(CountSent<UnloadResponse>(server.TakeEffects()), 1u);
  EXPECT_FALSE(lb.table().Get(ring).has_value());
}

}  // namespace
}  // namespace kmcl
