// Synchronous tests of the VMBus control plane: a VmbusServer (host) and
// VmbusClients (guest, one per VTL) exchanging real encoded messages through
// a loopback pump (control_plane_loopback.h), with no threads and no I/O.
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kmcl_core/control/control_plane_loopback.h"
#include "kmcl_core/control/vmbus_client.h"
#include "kmcl_core/control/vmbus_server.h"
#include "kmcl_core/saved/saved_state.pb.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl {
namespace {

using ::testing::HasSubstr;

// OPENCHANNEL straight to the host, bypassing the guest client; returns the
// host's effects.
std::vector<ServerEffect> OpenRaw(Loopback& lb, uint32_t relid, uint32_t open_id, uint32_t ring,
                                  uint32_t downstream_offset) {
  OpenChannel open;
  open.child_relid = relid;
  open.open_id = open_id;
  open.ring_buffer_gpadl = ring;
  open.downstream_page_offset = downstream_offset;
  lb.server().HandleGuestMessage(0, Encode(open));
  return lb.server().TakeEffects();
}

// ---- Connection and offers ----------------------------------------------------

TEST(ControlPlane, NegotiatesTheNewestCommonVersion) {
  Loopback lb({0}, /*server_max=*/wire::kVersionWin10, /*client_max=*/wire::kVersionCopper);
  lb.Connect();
  auto connected = lb.Guest<Connected>();
  ASSERT_EQ(connected.size(), 1u);
  EXPECT_EQ(connected[0].version, wire::kVersionWin10) << "fell back past 6.0 ... 4.1";
  EXPECT_EQ(lb.server().ConnectedVersion(0), wire::kVersionWin10);
  EXPECT_EQ(lb.Guest<OffersComplete>().size(), 1u) << "REQUESTOFFERS follows the version";
}

TEST(ControlPlane, ConnectFailsWhenNoVersionIsCommon) {
  Loopback lb({0}, /*server_max=*/wire::kVersionWs2008 - 1);
  lb.Connect();
  EXPECT_EQ(lb.Guest<ConnectFailed>().size(), 1u);
  EXPECT_FALSE(lb.client(0).version().has_value());
}

TEST(ControlPlane, OffersReachOnlyTheClientAtTheTargetVtl) {
  Loopback lb({0, 2});
  lb.Offer(0);  // before the guest asks: held back
  EXPECT_TRUE(lb.host_to_guest().empty());
  lb.Connect();
  EXPECT_EQ(lb.Guest<OfferArrived>(0).size(), 1u);
  EXPECT_TRUE(lb.Guest<OfferArrived>(2).empty());
  OfferHandle vtl2 = lb.Offer(2);  // after: sent at once, to VTL 2 only
  auto arrived = lb.Guest<OfferArrived>(2);
  ASSERT_EQ(arrived.size(), 1u);
  EXPECT_EQ(arrived[0].offer.child_relid, vtl2.relid);
  EXPECT_TRUE(lb.Guest<OfferArrived>(0).empty());
  ServerOffer nowhere;
  nowhere.target_vtl = 1;
  EXPECT_EQ(lb.server().Offer(nowhere).status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- Open, close, reopen ------------------------------------------------------

TEST(ControlPlane, OpenAcceptedByTheHost) {
  Loopback lb;
  lb.Connect();
  OfferHandle h = lb.Offer();
  uint32_t ring = lb.StartOpen(h.relid);
  auto requested = lb.Host<OpenRequested>();
  ASSERT_EQ(requested.size(), 1u);
  EXPECT_EQ(requested[0].open.ring_buffer_gpadl, ring);
  EXPECT_EQ(requested[0].open.downstream_page_offset, 4u);
  EXPECT_EQ(lb.server().Channel(h.relid)->state, ServerChannelState::kOpening);
  ASSERT_TRUE(lb.server().AcceptOpen(h.relid, kStatusSuccess).ok());
  lb.Pump();
  auto done = lb.Guest<OpenCompleted>();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].status, kStatusSuccess);
  EXPECT_EQ(lb.server().Channel(h.relid)->state, ServerChannelState::kOpen);
  EXPECT_EQ(lb.client(0).Channel(h.relid)->state, ClientChannelState::kOpen);
}

TEST(ControlPlane, OpenRefusedByTheHostLeavesTheOfferUsable) {
  Loopback lb;
  lb.Connect();
  OfferHandle h = lb.Offer();
  uint32_t ring = lb.StartOpen(h.relid);
  ASSERT_TRUE(lb.server().AcceptOpen(h.relid, kStatusUnsuccessful).ok());
  lb.Pump();
  auto done = lb.Guest<OpenCompleted>();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].status, kStatusUnsuccessful);
  EXPECT_EQ(lb.server().Channel(h.relid)->state, ServerChannelState::kOffered);
  OpenParams p;
  p.ring_gpadl_id = ring;
  p.downstream_page_offset = 4;
  EXPECT_TRUE(lb.client(0).Open(h.relid, p).ok()) << "may try again";
}

TEST(ControlPlane, OpenNamingAnotherChannelsGpadlFails) {
  Loopback lb;
  lb.Connect();
  OfferHandle a = lb.Offer();
  OfferHandle b = lb.Offer();
  uint32_t gpadl_of_b = lb.CreateGpadl(b.relid, 4);
  auto effects = OpenRaw(lb, a.relid, 9, gpadl_of_b, 2);
  ASSERT_EQ(effects.size(), 2u);
  EXPECT_THAT(std::get<ProtocolError>(effects[0]).what, HasSubstr("not one of its GPADLs"));
  auto result = std::get<OpenResult>(std::get<SendToGuest>(effects[1]).message);
  EXPECT_EQ(static_cast<NTSTATUS>(result.status), kStatusInvalidParameter);
  EXPECT_EQ(lb.server().Channel(a.relid)->state, ServerChannelState::kOffered);
}

TEST(ControlPlane, CloseThenReopenWhileTheHostIsStillClosing) {
  Loopback lb;
  lb.Connect();
  OfferHandle h = lb.Offer();
  uint32_t ring = lb.StartOpen(h.relid);
  ASSERT_EQ(lb.Host<OpenRequested>().size(), 1u);
  ASSERT_TRUE(lb.server().AcceptOpen(h.relid, kStatusSuccess).ok());
  lb.Pump();
  ASSERT_TRUE(lb.client(0).Close(h.relid).ok());
  lb.Pump();
  ASSERT_EQ(lb.Host<CloseRequested>().size(), 1u);
  EXPECT_EQ(lb.server().Channel(h.relid)->state, ServerChannelState::kClosing);
  // The guest reopens before the host finished closing: the open waits.
  OpenParams p;
  p.ring_gpadl_id = ring;
  p.downstream_page_offset = 4;
  ASSERT_TRUE(lb.client(0).Open(h.relid, p).ok());
  lb.Pump();
  EXPECT_EQ(lb.server().Channel(h.relid)->state, ServerChannelState::kClosingReopen);
  EXPECT_TRUE(lb.Host<OpenRequested>().empty());
  ASSERT_TRUE(lb.server().CloseComplete(h.relid).ok());
  lb.Pump();
  EXPECT_EQ(lb.Host<OpenRequested>().size(), 1u);
  EXPECT_EQ(lb.server().Channel(h.relid)->state, ServerChannelState::kOpening);
}

TEST(ControlPlane, EveryOpenIsAnsweredEvenWhenWithdrawnOrRefused) {
  Loopback lb;
  lb.Connect();
  OfferHandle h = lb.Offer();
  uint32_t ring = lb.StartOpen(h.relid);
  // A second OPENCHANNEL while the first is being accepted: refused.
  auto effects = OpenRaw(lb, h.relid, 40, ring, 4);
  ASSERT_EQ(effects.size(), 2u);
  auto refused = std::get<OpenResult>(std::get<SendToGuest>(effects[1]).message);
  EXPECT_EQ(refused.open_id, 40u);
  EXPECT_EQ(static_cast<NTSTATUS>(refused.status), kStatusInvalidDeviceState);
  ASSERT_TRUE(lb.server().AcceptOpen(h.relid, kStatusSuccess).ok());
  lb.server().HandleGuestMessage(0, Encode(CloseChannel{h.relid}));
  // Reopened while closing, then closed again: the reopen is withdrawn.
  OpenRaw(lb, h.relid, 41, ring, 4);
  ASSERT_EQ(lb.server().Channel(h.relid)->state, ServerChannelState::kClosingReopen);
  lb.server().HandleGuestMessage(0, Encode(CloseChannel{h.relid}));
  effects = lb.server().TakeEffects();
  ASSERT_EQ(effects.size(), 1u);
  auto withdrawn = std::get<OpenResult>(std::get<SendToGuest>(effects[0]).message);
  EXPECT_EQ(withdrawn.open_id, 41u);
  EXPECT_EQ(static_cast<NTSTATUS>(withdrawn.status), kStatusCancelled);
  EXPECT_EQ(lb.server().Channel(h.relid)->state, ServerChannelState::kClosing);
}

// ---- Rescind races --------------------------------------------------------------

TEST(ControlPlane, RescindDuringOpenFailsTheOpenAndCancelsTheHostSide) {
  Loopback lb;
  lb.Connect();
  OfferHandle h = lb.Offer();
  lb.StartOpen(h.relid);
  ASSERT_EQ(lb.Host<OpenRequested>().size(), 1u);
  ASSERT_TRUE(lb.server().Revoke(h.relid).ok());
  lb.Pump();
  EXPECT_EQ(lb.Host<OpenCancelled>().size(), 1u);
  auto done = lb.Guest<OpenCompleted>();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].status, kStatusDeviceRemoved);
  EXPECT_EQ(lb.Guest<OfferRescinded>().size(), 1u);
  // The host endpoint's late answer is refused; nothing reaches the guest.
  EXPECT_EQ(lb.server().AcceptOpen(h.relid, kStatusSuccess).code(),
            absl::StatusCode::kFailedPrecondition);
  lb.Pump();
  EXPECT_TRUE(lb.Guest<OpenCompleted>().empty());
}

TEST(ControlPlane, ReofferGetsANewRelidUntilTheOldOneIsReleased) {
  Loopback lb;
  lb.Connect();
  OfferHandle a = lb.Offer();
  ASSERT_TRUE(lb.server().Revoke(a.relid).ok());
  lb.Pump();
  ASSERT_EQ(lb.Guest<OfferRescinded>().size(), 1u);
  OfferHandle b = lb.Offer();
  EXPECT_NE(b.relid, a.relid) << "the rescinded relid is still held";
  ASSERT_TRUE(lb.client(0).Release(a.relid).ok());
  lb.Pump();
  auto released = lb.Host<ChannelReleased>();
  ASSERT_EQ(released.size(), 1u);
  EXPECT_EQ(released[0].relid, a.relid);
  EXPECT_EQ(released[0].offer_sequence, a.offer_sequence);
  OfferHandle c = lb.Offer();
  EXPECT_EQ(c.relid, a.relid) << "reused once released";
  EXPECT_GT(c.offer_sequence, b.offer_sequence) << "but a new incarnation";
  EXPECT_EQ(lb.Guest<OfferArrived>().size(), 3u);
}

TEST(ControlPlane, GpadlCreationOnARevokedButUnreleasedChannelSucceeds) {
  Loopback lb;
  lb.Connect();
  OfferHandle h = lb.Offer();
  ASSERT_TRUE(lb.server().Revoke(h.relid).ok());
  lb.Pump();
  lb.CreateGpadl(h.relid, 3);
  auto created = lb.Guest<GpadlCreateCompleted>();
  ASSERT_EQ(created.size(), 1u);
  EXPECT_EQ(created[0].status, kStatusSuccess) << "openvmm #3959: Hyper-V accepts it";
}

TEST(ControlPlane, RevokingAnOfferTheGuestNeverSawReleasesAtOnce) {
  Loopback lb;
  OfferHandle h = lb.Offer();  // no guest connected yet
  ASSERT_TRUE(lb.server().Revoke(h.relid).ok());
  lb.Pump();
  EXPECT_EQ(lb.Host<ChannelReleased>().size(), 1u);
  EXPECT_TRUE(lb.host_to_guest().empty()) << "no RESCIND for an offer never sent";
  EXPECT_EQ(lb.server().Revoke(h.relid).code(), absl::StatusCode::kNotFound);
}

TEST(ControlPlane, ReleasingAChannelTearsDownGpadlsTheGuestLeftBehind) {
  Loopback lb;
  lb.Connect();
  OfferHandle h = lb.Offer();
  uint32_t g = lb.CreateGpadl(h.relid, 2);
  ASSERT_TRUE(lb.server().Revoke(h.relid).ok());
  lb.Pump();
  ASSERT_TRUE(lb.client(0).Release(h.relid).ok());
  lb.Pump();
  auto gone = lb.Host<GpadlGone>();
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0].gpadl_id, g);
  EXPECT_FALSE(lb.table().Get(g).has_value());
}

// ---- GPADLs -------------------------------------------------------------------

TEST(ControlPlane, LargeGpadlCrossesInHeaderAndBodies) {
  Loopback lb;
  lb.Connect();
  OfferHandle h = lb.Offer();
  uint32_t g = lb.CreateGpadl(h.relid, 300);  // 300 PFNs: header + 11 bodies
  auto created = lb.Guest<GpadlCreateCompleted>();
  ASSERT_EQ(created.size(), 1u);
  EXPECT_EQ(created[0].status, kStatusSuccess);
  auto info = lb.table().Get(g);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->ranges[0].pfns.size(), 300u);
  EXPECT_EQ(info->channel_id, h.relid);
  EXPECT_EQ(lb.Host<GpadlReady>().size(), 1u);
}

TEST(ControlPlane, TeardownWhileMappedAnswersOnlyAfterTheUnmap) {
  Loopback lb;
  lb.Connect();
  OfferHandle h = lb.Offer();
  uint32_t g = lb.CreateGpadl(h.relid, 2);
  auto lease = lb.table().Map(g, false);
  ASSERT_TRUE(lease.ok());
  ASSERT_TRUE(lb.client(0).TeardownGpadl(h.relid, g).ok());
  lb.Pump();
  EXPECT_TRUE(lb.Guest<GpadlTeardownCompleted>().empty()) << "still mapped";
  auto unmapped = lb.table().Unmap(lease->lease_id);
  ASSERT_TRUE(unmapped.ok());
  lb.server().GpadlUnmapped(*unmapped);
  lb.Pump();
  auto done = lb.Guest<GpadlTeardownCompleted>();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].gpadl_id, g);
  EXPECT_EQ(lb.Host<GpadlGone>().size(), 1u);
}

TEST(ControlPlane, BadGpadlsGetAFailureStatusNeverSilence) {
  Loopback lb;
  lb.Connect();
  OfferHandle h = lb.Offer();
  // PFN beyond guest memory (2048 pages).
  std::vector<GpaRange> outside = {{4096, 0, {5000}}};
  ASSERT_TRUE(lb.client(0).CreateGpadl(h.relid, 77, outside).ok());
  lb.Pump();
  auto created = lb.Guest<GpadlCreateCompleted>();
  ASSERT_EQ(created.size(), 1u);
  EXPECT_FALSE(NtSuccess(created[0].status));
  // A GPADL id already in use on the host.
  uint32_t g = lb.CreateGpadl(h.relid, 1);
  lb.Guest<GpadlCreateCompleted>();
  GpadlHeader dup;
  dup.bytes = (*EncodeGpadlMessages(h.relid, g, outside))[0];
  dup.child_relid = h.relid;
  dup.gpadl = g;
  lb.server().HandleGuestMessage(0, Encode(dup));
  auto effects = lb.server().TakeEffects();
  ASSERT_EQ(effects.size(), 2u);
  auto reply = std::get<GpadlCreated>(std::get<SendToGuest>(effects[1]).message);
  EXPECT_FALSE(NtSuccess(static_cast<NTSTATUS>(reply.creation_status)));
  EXPECT_TRUE(lb.table().Get(g).has_value()) << "the existing GPADL is untouched";
}

// ---- Hostile guests --------------------------------------------------------------

TEST(ControlPlane, MalformedGuestMessagesAreContained) {
  Loopback lb;
  OfferHandle h = lb.Offer();
  lb.server().HandleGuestMessage(0, Encode(RequestOffers{}));
  auto effects = lb.server().TakeEffects();
  ASSERT_EQ(effects.size(), 1u);
  EXPECT_THAT(std::get<ProtocolError>(effects[0]).what, HasSubstr("before INITIATE_CONTACT"));
  lb.Connect();
  lb.server().HandleGuestMessage(0, std::vector<uint8_t>(3, 0xFF));
  lb.server().HandleGuestMessage(0, Encode(CloseChannel{99}));
  lb.server().HandleGuestMessage(0, Encode(RelIdReleased{h.relid}));  // not rescinded
  lb.server().HandleGuestMessage(0, Encode(OfferChannel{}));         // wrong direction
  lb.server().HandleGuestMessage(5, Encode(RequestOffers{}));        // no client at VTL 5
  effects = lb.server().TakeEffects();
  ASSERT_EQ(effects.size(), 5u);
  for (auto& e : effects) EXPECT_TRUE(std::holds_alternative<ProtocolError>(e));
  EXPECT_EQ(lb.server().Channel(h.relid)->state, ServerChannelState::kOffered);
}

TEST(ControlPlane, UnloadClosesOpenChannelsAndDisconnects) {
  Loopback lb;
  lb.Connect();
  OfferHandle h = lb.Offer();
  lb.StartOpen(h.relid);
  ASSERT_TRUE(lb.server().AcceptOpen(h.relid, kStatusSuccess).ok());
  lb.Pump();
  lb.client(0).Unload();
  lb.Pump();
  EXPECT_EQ(lb.Host<CloseRequested>().size(), 1u);
  // UNLOAD_RESPONSE waits for the host endpoint to finish the close.
  EXPECT_TRUE(lb.Guest<Unloaded>().empty());
  ASSERT_TRUE(lb.server().CloseComplete(h.relid).ok());
  lb.Pump();
  EXPECT_EQ(lb.Guest<Unloaded>().size(), 1u);
  EXPECT_FALSE(lb.server().ConnectedVersion(0).has_value());
  // Reconnecting re-delivers the offer.
  lb.Connect();
  EXPECT_GE(lb.Guest<OfferArrived>().size(), 1u);
}

// ---- Saved state --------------------------------------------------------------

TEST(ControlPlane, ASavedClientKeepsEveryOfferField) {
  Loopback lb;
  lb.Connect();
  ServerOffer offer;
  offer.interface_type = Guid::Random();
  offer.interface_instance = Guid::Random();
  offer.channel_flags = wire::kOfferFlagNamedPipeMode | wire::kOfferFlagEnumerateDeviceInterface;
  offer.mmio_megabytes = 7;
  offer.mmio_megabytes_optional = 9;
  for (size_t i = 0; i < offer.user_defined.size(); ++i) offer.user_defined[i] = uint8_t(i + 1);
  offer.subchannel_index = 3;
  ASSERT_TRUE(lb.server().Offer(offer).ok());
  lb.Pump();
  auto arrived = lb.Guest<OfferArrived>();
  ASSERT_EQ(arrived.size(), 1u);
  const OfferChannel& sent = arrived[0].offer;
  EXPECT_EQ(sent.interface_type, offer.interface_type);
  EXPECT_EQ(sent.interface_instance, offer.interface_instance);
  EXPECT_EQ(sent.channel_flags, offer.channel_flags);
  EXPECT_EQ(sent.mmio_megabytes, 7);
  EXPECT_EQ(sent.mmio_megabytes_optional, 9);
  EXPECT_EQ(sent.user_defined, offer.user_defined);
  EXPECT_EQ(sent.subchannel_index, 3);

  saved::v1::Client saved;
  lb.client(0).Save(saved);
  VmbusClient restored(0, wire::kVersionCopper);
  ASSERT_TRUE(restored.Restore(saved).ok());
  std::optional<ClientChannelInfo> c = restored.Channel(sent.child_relid);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->offer, sent);
}

TEST(ControlPlane, ARestoredClientFindsItsOffersAndGpadlsAndRejectsAGpadlInTwoChannels) {
  Loopback lb;
  lb.Connect();
  ServerOffer offer;
  offer.interface_type = Guid::Random();
  offer.interface_instance = Guid::Random();
  absl::StatusOr<OfferHandle> a = lb.server().Offer(offer);
  offer.interface_instance = Guid::Random();
  absl::StatusOr<OfferHandle> b = lb.server().Offer(offer);
  ASSERT_TRUE(a.ok() && b.ok());
  lb.Pump();
  const GpaRange range{wire::kPageSize, 0, {40}};
  ASSERT_TRUE(lb.client(0).CreateGpadl(a->relid, 0x77, std::span(&range, 1)).ok());
  lb.Pump();

  saved::v1::Client saved;
  lb.client(0).Save(saved);
  VmbusClient restored(0, wire::kVersionCopper);
  ASSERT_TRUE(restored.Restore(saved).ok());
  EXPECT_TRUE(restored.CheckInvariants().ok()) << restored.CheckInvariants();
  std::vector<uint32_t> found;
  restored.ForEachOfferOf(offer.interface_type, std::nullopt,
                          [&](const ClientChannelInfo& c) { found.push_back(c.offer.child_relid); });
  EXPECT_EQ(found.size(), 2u);
  found.clear();
  restored.ForEachOfferOf(offer.interface_type, offer.interface_instance,
                          [&](const ClientChannelInfo& c) { found.push_back(c.offer.child_relid); });
  EXPECT_EQ(found, std::vector<uint32_t>{b->relid});
  // The restored GPADL id is known: a second create of it is refused.
  EXPECT_EQ(restored.CreateGpadl(b->relid, 0x77, std::span(&range, 1)).code(),
            absl::StatusCode::kAlreadyExists);

  // A blob naming one GPADL id on two channels is refused whole.
  for (auto& c : *saved.mutable_channels()) (*c.mutable_gpadls())[0x77] = 2;
  VmbusClient hostile(0, wire::kVersionCopper);
  absl::Status s = hostile.Restore(saved);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("two channels"), std::string::npos) << s;
}

}  // namespace
}  // namespace kmcl
