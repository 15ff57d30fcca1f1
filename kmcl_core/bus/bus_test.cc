// The bus (Partition) driven synchronously through fake endpoints on the
// test's thread (one test excepted, see it): no channel tasks, so the order
// in which the bus tells endpoints about an offer, a match, an open and a
// rescind is checked exactly.
#include <chrono>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kmcl_core/bus/bus_endpoint.h"
#include "kmcl_core/bus/partition.h"
#include "kmcl_core/saved/saved_blob.h"
#include "kmcl_core/saved/saved_state.pb.h"

namespace kmcl {
namespace {

constexpr char kType[] = "3f1c9e0a-5b7d-4e21-8a6f-0c2d4e6f8a10";

// Records every event; `on_matched` runs inside OnOfferMatched, where the
// bus still holds its lock (as a real endpoint's thread could run right
// after it).
class FakeEndpoint : public BusEndpoint {
 public:
  void OnOffered(const OfferHandle& handle) override {
    relid = handle.relid;
    events.push_back("offered");
  }
  void OnOpenRequested(const OpenChannel& open) override {
    open_request = open;
    events.push_back("open-requested");
  }
  void OnOpenCancelled() override { events.push_back("open-cancelled"); }
  void OnReleased() override { events.push_back("released"); }
  void OnOfferMatched(uint32_t matched_relid, const OfferChannel&) override {
    relid = matched_relid;
    events.push_back("matched");
    if (on_matched) on_matched();
  }
  void OnOpenCompleted(NTSTATUS status) override {
    open_status = status;
    events.push_back("open-completed");
  }
  void OnPeerClosed() override { events.push_back("peer-closed"); }
  void NotifyIo() override { ++interrupts; }

  uint32_t relid = 0;
  std::optional<OpenChannel> open_request;
  std::optional<NTSTATUS> open_status;
  int interrupts = 0;
  std::vector<std::string> events;
  std::function<void()> on_matched;
};

ServerOffer EchoOffer() {
  ServerOffer offer;
  offer.interface_type = *Guid::Parse(kType);
  offer.interface_instance = Guid::Random();
  return offer;
}

std::unique_ptr<Partition> NewPartition() {
  absl::StatusOr<std::unique_ptr<Partition>> p = Partition::Create(PartitionOptions{});
  EXPECT_TRUE(p.ok()) << p.status();
  return *std::move(p);
}

// The guest's open of a just-matched offer, as Channel does it: donate ring
// pages through a GPADL, then OPENCHANNEL.
absl::Status OpenAsGuest(Partition& p, uint32_t relid) {
  absl::StatusOr<std::vector<uint64_t>> pfns = p.memory().AllocatePages(4);
  if (!pfns.ok()) return pfns.status();
  const uint32_t gpadl = p.gpadls().AllocateId();
  if (absl::Status s = p.CreateGuestGpadl(0, relid, gpadl, {{4 * wire::kPageSize, 0, *pfns}});
      !s.ok()) {
    return s;
  }
  OpenParams params;
  params.ring_gpadl_id = gpadl;
  params.downstream_page_offset = 2;
  return p.OpenGuest(0, relid, params);
}

// The regression behind a lost wait_for_offer open: a guest waiting for an
// offer is matched while the host's Offer() is still running, and its thread
// may send OPENCHANNEL before Offer() returns to the host. The host endpoint
// must already know its relid by then, or it answers the open for relid 0
// and the guest waits forever.
TEST(BusTest, TheHostKnowsItsRelidBeforeAWaitingGuestIsMatched) {
  auto p = NewPartition();
  FakeEndpoint host, guest;
  std::optional<uint32_t> host_relid_at_match;
  guest.on_matched = [&] { host_relid_at_match = host.relid; };
  p->Connect(&guest, 0, *Guid::Parse(kType), std::nullopt);
  EXPECT_TRUE(guest.events.empty()) << "nothing offered yet";

  absl::StatusOr<OfferHandle> handle = p->Offer(&host, EchoOffer());
  ASSERT_TRUE(handle.ok()) << handle.status();
  ASSERT_TRUE(host_relid_at_match.has_value()) << "the waiting guest was not matched";
  EXPECT_EQ(*host_relid_at_match, handle->relid);
  EXPECT_EQ(guest.relid, handle->relid);
  EXPECT_EQ(host.events, (std::vector<std::string>{"offered"}));
  p->DetachGuest(0, guest.relid, &guest);
  p->DetachHost(handle->relid, &host);
}

TEST(BusTest, AnOpenReachesTheHostAndItsAnswerTheGuest) {
  auto p = NewPartition();
  FakeEndpoint host, guest;
  absl::StatusOr<OfferHandle> handle = p->Offer(&host, EchoOffer());
  ASSERT_TRUE(handle.ok());
  p->Connect(&guest, 0, *Guid::Parse(kType), std::nullopt);
  ASSERT_EQ(guest.events, (std::vector<std::string>{"matched"})) << "an existing offer matches at once";

  ASSERT_TRUE(OpenAsGuest(*p, guest.relid).ok());
  ASSERT_TRUE(host.open_request.has_value());
  EXPECT_EQ(host.open_request->child_relid, handle->relid);
  EXPECT_FALSE(guest.open_status.has_value()) << "no answer before the host accepts";

  ASSERT_TRUE(p->AcceptOpen(handle->relid, kStatusSuccess).ok());
  ASSERT_TRUE(guest.open_status.has_value());
  EXPECT_EQ(*guest.open_status, kStatusSuccess);

  // Rescind: the guest hears of it; its relid stays held until it lets go.
  ASSERT_TRUE(p->Revoke(handle->relid).ok());
  EXPECT_EQ(guest.events.back(), "peer-closed");
  p->DetachGuest(0, guest.relid, &guest);
  p->DetachHost(handle->relid, &host);
}

TEST(BusTest, AGpadlTornDownWhileItsWaiterMakesProgressIsNotMissed) {
  auto p = NewPartition();
  FakeEndpoint host, guest;
  absl::StatusOr<OfferHandle> handle = p->Offer(&host, EchoOffer());
  ASSERT_TRUE(handle.ok());
  p->Connect(&guest, 0, *Guid::Parse(kType), std::nullopt);
  ASSERT_TRUE(OpenAsGuest(*p, guest.relid).ok());
  ASSERT_TRUE(host.open_request.has_value());
  const uint32_t gpadl = host.open_request->ring_buffer_gpadl;
  absl::StatusOr<GpadlLease> lease = p->MapGpadl(handle->relid, gpadl, /*read_only=*/false);
  ASSERT_TRUE(lease.ok()) << lease.status();
  ASSERT_TRUE(p->AcceptOpen(handle->relid, kStatusSuccess).ok());

  // The host unmaps (and so finishes the teardown) while the guest runs
  // its progress hook outside the partition's lock, as a channel on a
  // manual executor does; the hook itself ran no task of its own.
  // This one test runs the waiter on a thread of its own: a missed answer
  // shows only as a wait that never ends (a bounded wait would look again
  // when it expires and pass), so the test must watch it from outside.
  auto teardown = std::async(std::launch::async, [&] {
    bool unmapped = false;
    return p->TeardownGuestGpadl(0, guest.relid, gpadl, std::nullopt, [&] {
      if (!unmapped) p->UnmapGpadl(lease->lease_id).IgnoreError();
      unmapped = true;
      return false;
    });
  });
  if (teardown.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
    ADD_FAILURE() << "GPADL_TORNDOWN came while the waiter was outside the lock and was lost";
    // Any GPADL answer wakes the partition's waiters: free the stuck one.
    absl::StatusOr<std::vector<uint64_t>> pfns = p->memory().AllocatePages(1);
    ASSERT_TRUE(pfns.ok());
    p->CreateGuestGpadl(0, guest.relid, p->gpadls().AllocateId(), {{wire::kPageSize, 0, *pfns}})
        .IgnoreError();
  }
  EXPECT_TRUE(teardown.get().ok());
  p->DetachGuest(0, guest.relid, &guest);
  p->DetachHost(handle->relid, &host);
}

TEST(BusTest, AnOfferOnlyOneGuestCanHaveGoesToTheNextWaiterWhenReleased) {
  auto p = NewPartition();
  FakeEndpoint host, first, second;
  p->Connect(&first, 0, *Guid::Parse(kType), std::nullopt);
  p->Connect(&second, 0, *Guid::Parse(kType), std::nullopt);
  absl::StatusOr<OfferHandle> handle = p->Offer(&host, EchoOffer());
  ASSERT_TRUE(handle.ok());
  EXPECT_EQ(first.relid, handle->relid);
  EXPECT_TRUE(second.events.empty()) << "one offer, one guest";

  p->DetachGuest(0, first.relid, &first);
  EXPECT_EQ(second.relid, handle->relid) << "the released offer serves the next waiter";
  p->DetachGuest(0, second.relid, &second);
  p->DetachHost(handle->relid, &host);
}

TEST(BusTest, AGuestGetsTheLowestFreeRelidOfItsInterfaceAndInstance) {
  auto p = NewPartition();
  // Offers of two types, instances in an order unlike their relids'.
  FakeEndpoint hosts[4];
  std::vector<ServerOffer> offers;
  for (int i = 0; i < 4; ++i) {
    ServerOffer o = EchoOffer();
    if (i == 1) o.interface_type = Guid::Random();  // another interface
    offers.push_back(o);
    ASSERT_TRUE(p->Offer(&hosts[i], o).ok());
  }
  // By instance: exactly that offer, whatever its relid.
  FakeEndpoint by_instance, any1, any2, none;
  p->Connect(&by_instance, 0, *Guid::Parse(kType), offers[3].interface_instance);
  EXPECT_EQ(by_instance.relid, hosts[3].relid);
  // Any instance: the lowest relid of the type that is free.
  p->Connect(&any1, 0, *Guid::Parse(kType), std::nullopt);
  EXPECT_EQ(any1.relid, hosts[0].relid);
  p->Connect(&any2, 0, *Guid::Parse(kType), std::nullopt);
  EXPECT_EQ(any2.relid, hosts[2].relid) << "relid 2 is another interface, 1 and 4 are taken";
  p->Connect(&none, 0, *Guid::Parse(kType), std::nullopt);
  EXPECT_TRUE(none.events.empty()) << "every offer of the type is taken";
  // A released one goes to the waiter.
  p->DetachGuest(0, any1.relid, &any1);
  EXPECT_EQ(none.relid, hosts[0].relid);
  for (FakeEndpoint* g : {&by_instance, &any2, &none}) p->DetachGuest(0, g->relid, g);
  for (FakeEndpoint& h : hosts) p->DetachHost(h.relid, &h);
}

TEST(BusTest, ACancelledWaiterIsNeverMatched) {
  auto p = NewPartition();
  FakeEndpoint host, guest;
  p->Connect(&guest, 0, *Guid::Parse(kType), std::nullopt);
  p->CancelConnect(&guest);
  ASSERT_TRUE(p->Offer(&host, EchoOffer()).ok());
  EXPECT_TRUE(guest.events.empty());
  p->DetachHost(host.relid, &host);
}

TEST(BusTest, ARingLinkInterruptsOnlyThePeer) {
  RingLink link;
  FakeEndpoint host, guest;
  link.Attach(&host, EndpointRole::kHost);
  link.Attach(&guest, EndpointRole::kGuest);
  link.Signal(&host);
  EXPECT_EQ(guest.interrupts, 1);
  EXPECT_EQ(host.interrupts, 0);
  link.Detach(&guest);
  link.Signal(&host);
  EXPECT_EQ(guest.interrupts, 1) << "a detached endpoint hears nothing";
}

// A saved partition with an open channel, edited by `edit` and sealed again
// with a valid CRC (as a hand edit would be), then restored.
absl::StatusOr<std::unique_ptr<Partition>> RestoreEdited(
    const std::function<void(saved::v1::SavedPartition&)>& edit) {
  auto p = NewPartition();
  FakeEndpoint host, guest;
  absl::StatusOr<OfferHandle> handle = p->Offer(&host, EchoOffer());
  if (!handle.ok()) return handle.status();
  p->Connect(&guest, 0, *Guid::Parse(kType), std::nullopt);
  if (absl::Status s = OpenAsGuest(*p, guest.relid); !s.ok()) return s;
  if (absl::Status s = p->AcceptOpen(handle->relid, kStatusSuccess); !s.ok()) return s;
  absl::StatusOr<std::string> blob = p->Save();
  p->DetachGuest(0, guest.relid, &guest);
  p->DetachHost(handle->relid, &host);
  if (!blob.ok()) return blob.status();
  absl::StatusOr<std::string> body = OpenBlob(*blob, saved::v1::SavedBlob::KIND_PARTITION);
  if (!body.ok()) return body.status();
  saved::v1::SavedPartition saved;
  if (!saved.ParseFromString(*body)) return absl::InternalError("cannot parse the saved partition");
  edit(saved);
  return Partition::Restore(SealBlob(saved::v1::SavedBlob::KIND_PARTITION, saved.SerializeAsString()), "");
}

TEST(BusTest, AnUneditedSavedPartitionWithAnOpenChannelRestores) {
  absl::StatusOr<std::unique_ptr<Partition>> restored = RestoreEdited([](saved::v1::SavedPartition& saved) {
    ASSERT_EQ(saved.gpadl_owners_size(), 1);
    ASSERT_EQ(saved.connections_size(), 1);
  });
  EXPECT_TRUE(restored.ok()) << restored.status();
}

// The tester's fz-case-49: the ring GPADL's owner removed from the host
// side. The guest's teardown of its ring would wait forever for an answer.
TEST(BusTest, ARestoreRefusesAGuestGpadlWithoutItsOwner) {
  absl::StatusOr<std::unique_ptr<Partition>> restored =
      RestoreEdited([](saved::v1::SavedPartition& saved) { saved.clear_gpadl_owners(); });
  ASSERT_EQ(restored.status().code(), absl::StatusCode::kInvalidArgument) << restored.status();
  EXPECT_NE(restored.status().message().find("has no owner"), std::string::npos) << restored.status();
}

// The tester's fz-case-333: the host's connection record removed while the
// guest is connected; every guest message would be refused.
TEST(BusTest, ARestoreRefusesAConnectedGuestWithoutTheHostsConnection) {
  absl::StatusOr<std::unique_ptr<Partition>> restored =
      RestoreEdited([](saved::v1::SavedPartition& saved) { saved.clear_connections(); });
  ASSERT_EQ(restored.status().code(), absl::StatusCode::kInvalidArgument) << restored.status();
  EXPECT_NE(restored.status().message().find("connection record"), std::string::npos) << restored.status();
}

}  // namespace
}  // namespace kmcl
