// End-to-end through a real kmcld on loopback: partitions, a host tool that
// offers a channel and a guest tool that opens it, GPADLs with leases
// (read-only enforcement, teardown after the last unmap), and packets with
// completions both ways, payloads and order checked.
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "tests/bridge_fixture.h"

namespace kmcld::testing {
namespace {

using kmcl::v1::ENDPOINT_ROLE_GUEST;
using kmcl::v1::ENDPOINT_ROLE_HOST;

class BridgeChannelTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(k_.Start().ok()) << k_.process.output(); }
  Kmcld k_;
};

TEST_F(BridgeChannelTest, PartitionsCanBeCreatedListedAndDeleted) {
  kmcl::v1::ListPartitionsResponse list;
  ASSERT_TRUE(k_.partitions->ListPartitions(Kmcld::Context().get(), {}, &list).ok());
  ASSERT_EQ(list.partitions_size(), 1);
  EXPECT_EQ(list.partitions(0).id(), "default");
  EXPECT_EQ(list.partitions(0).vmbus_version(), kmcl::v1::VMBUS_VERSION_COPPER);

  kmcl::v1::CreatePartitionRequest create;
  create.set_id("vm-2");
  create.add_client_vtls(0);
  create.add_client_vtls(2);
  create.set_guest_memory_bytes(uint64_t{256} << 20);
  create.set_vmbus_version(kmcl::v1::VMBUS_VERSION_WIN10);
  kmcl::v1::Partition p;
  grpc::Status s = k_.partitions->CreatePartition(Kmcld::Context().get(), create, &p);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(p.id(), "vm-2");
  EXPECT_EQ(p.guest_memory_bytes(), uint64_t{256} << 20);
  EXPECT_EQ(p.vmbus_version(), kmcl::v1::VMBUS_VERSION_WIN10);
  EXPECT_EQ(p.client_vtls_size(), 2);

  s = k_.partitions->CreatePartition(Kmcld::Context().get(), create, &p);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
  kmcl::v1::CreatePartitionRequest unnamed;
  ASSERT_TRUE(k_.partitions->CreatePartition(Kmcld::Context().get(), unnamed, &p).ok());
  EXPECT_EQ(p.id().rfind("p-", 0), 0u) << p.id();

  kmcl::v1::DeletePartitionRequest del;
  del.set_id("vm-2");
  kmcl::v1::DeletePartitionResponse deleted;
  ASSERT_TRUE(k_.partitions->DeletePartition(Kmcld::Context().get(), del, &deleted).ok());
  kmcl::v1::GetPartitionRequest get;
  get.set_id("vm-2");
  s = k_.partitions->GetPartition(Kmcld::Context().get(), get, &p);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(BridgeChannelTest, OfferOpenAndDescribeBothEndpoints) {
  auto offered = k_.Offer();
  ASSERT_TRUE(offered.ok()) << offered.status();
  const kmcl::v1::ChannelRef ref = offered->offer().channel();
  EXPECT_EQ(ref.channel_id(), 1u);
  EXPECT_NE(ref.offer_sequence(), 0u);
  EXPECT_EQ(offered->host().connection(), kmcl::v1::CONNECTION_STATE_ENABLED);
  EXPECT_FALSE(offered->guest().present());

  kmcl::v1::ListOffersRequest lo;
  lo.set_partition_id("default");
  kmcl::v1::ListOffersResponse offers;
  ASSERT_TRUE(k_.guest->ListOffers(Kmcld::Context().get(), lo, &offers).ok());
  ASSERT_EQ(offers.offers_size(), 1);
  EXPECT_EQ(offers.offers(0).interface_type().value(), kEchoType);
  EXPECT_EQ(offers.offers(0).channel().offer_sequence(), ref.offer_sequence());

  auto opened = k_.Open();
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(opened->offer().channel().channel_id(), ref.channel_id());
  EXPECT_EQ(opened->guest().connection(), kmcl::v1::CONNECTION_STATE_OPENED);
  EXPECT_TRUE(opened->guest().running());
  EXPECT_TRUE(opened->host().running());
  EXPECT_TRUE(opened->host().present());
  EXPECT_FALSE(opened->host().attached());

  // An incarnation never given yet is refused as in the future, naming the
  // current one (an older one: BridgeFlowTest's rescind and re-offer).
  kmcl::v1::ChannelRequest get;
  *get.mutable_channel() = ref;
  get.mutable_channel()->set_offer_sequence(ref.offer_sequence() + 7);
  kmcl::v1::ChannelResponse resp;
  grpc::Status s = k_.host->GetChannel(Kmcld::Context().get(), get, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_NE(s.error_message().find(absl::StrCat("offer_sequence ", ref.offer_sequence() + 7,
                                                " is in the future (no offer had it yet; the "
                                                "current one is ",
                                                ref.offer_sequence(), ")")),
            std::string::npos)
      << s.error_message();

  // Unknown channel_flags bits are named.
  kmcl::v1::ServerChannelSettings bad;
  bad.mutable_interface_type()->set_value(kEchoType);
  bad.set_channel_flags(0x1 | 0x300);  // IS_PIPE and two unknown bits
  kmcl::v1::OfferChannelRequest offer;
  offer.set_partition_id("default");
  *offer.mutable_settings() = bad;
  s = k_.host->OfferChannel(Kmcld::Context().get(), offer, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_NE(s.error_message().find("channel_flags has unknown bits 0x300"), std::string::npos)
      << s.error_message();
}

TEST_F(BridgeChannelTest, GpadlThroughALeaseWithReadOnlyAndTeardownAfterUnmap) {
  auto offered = k_.Offer();
  ASSERT_TRUE(offered.ok()) << offered.status();
  ASSERT_TRUE(k_.Open().ok());
  const kmcl::v1::ChannelRef ref = offered->offer().channel();

  kmcl::v1::AllocateGuestBufferRequest alloc;
  alloc.set_partition_id("default");
  alloc.set_byte_count(3 * 4096 + 100);
  kmcl::v1::GuestBuffer buffer;
  ASSERT_TRUE(k_.gpadl->AllocateGuestBuffer(Kmcld::Context().get(), alloc, &buffer).ok());
  EXPECT_EQ(buffer.byte_count(), 4u * 4096);  // rounded to pages
  ASSERT_EQ(buffer.pfns_size(), 4);
  std::string pattern(4 * 4096, '\0');
  for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<char>(i * 7 + 3);
  kmcl::v1::WriteGuestMemoryRequest w;
  w.set_partition_id("default");
  w.set_buffer_id(buffer.buffer_id());
  w.set_data(pattern);
  kmcl::v1::WriteGuestMemoryResponse wr;
  ASSERT_TRUE(k_.gpadl->WriteGuestMemory(Kmcld::Context().get(), w, &wr).ok());

  // Read-write GPADL over the buffer from offset 100.
  kmcl::v1::CreateGpadlRequest cg;
  *cg.mutable_channel() = ref;
  cg.mutable_buffer()->set_buffer_id(buffer.buffer_id());
  cg.mutable_buffer()->set_offset(100);
  kmcl::v1::Gpadl g;
  grpc::Status s = k_.gpadl->CreateGpadl(Kmcld::Context().get(), cg, &g);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(g.state(), kmcl::v1::GPADL_STATE_CREATED);
  EXPECT_EQ(g.byte_count(), 4u * 4096 - 100);

  kmcl::v1::MapGpadlRequest map;
  *map.mutable_channel() = ref;
  map.set_gpadl_id(g.gpadl_id());
  kmcl::v1::GpadlLease lease;
  ASSERT_TRUE(k_.gpadl->MapGpadl(Kmcld::Context().get(), map, &lease).ok());
  EXPECT_EQ(lease.byte_count(), g.byte_count());
  kmcl::v1::GpadlLease second;
  s = k_.gpadl->MapGpadl(Kmcld::Context().get(), map, &second);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << "one lease at a time";
  EXPECT_NE(s.error_message().find("already mapped by lease_id " + std::to_string(lease.lease_id())),
            std::string::npos)
      << s.error_message();

  kmcl::v1::LeaseIoRequest read;
  read.set_lease_id(lease.lease_id());
  read.set_offset(0);
  read.set_length(static_cast<uint32_t>(g.byte_count()));
  kmcl::v1::LeaseIoResponse data;
  ASSERT_TRUE(k_.gpadl->ReadLease(Kmcld::Context().get(), read, &data).ok());
  EXPECT_EQ(data.data(), pattern.substr(100));
  read.set_offset(g.byte_count() - 10);
  read.set_length(11);
  s = k_.gpadl->ReadLease(Kmcld::Context().get(), read, &data);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::OUT_OF_RANGE);

  kmcl::v1::LeaseIoRequest write;
  write.set_lease_id(lease.lease_id());
  write.set_offset(4000);
  write.set_data("host wrote this");
  ASSERT_TRUE(k_.gpadl->WriteLease(Kmcld::Context().get(), write, &data).ok());
  kmcl::v1::ReadGuestMemoryRequest gr;
  gr.set_partition_id("default");
  gr.set_buffer_id(buffer.buffer_id());
  gr.set_offset(4100);
  gr.set_length(15);
  kmcl::v1::ReadGuestMemoryResponse grr;
  ASSERT_TRUE(k_.gpadl->ReadGuestMemory(Kmcld::Context().get(), gr, &grr).ok());
  EXPECT_EQ(grr.data(), "host wrote this");

  // Teardown without waiting while leased: TEARING_DOWN until the unmap.
  kmcl::v1::TeardownGpadlRequest td;
  *td.mutable_channel() = ref;
  td.set_gpadl_id(g.gpadl_id());
  td.set_wait(false);
  kmcl::v1::Gpadl after;
  ASSERT_TRUE(k_.gpadl->TeardownGpadl(Kmcld::Context().get(), td, &after).ok());
  EXPECT_EQ(after.state(), kmcl::v1::GPADL_STATE_TEARING_DOWN);
  s = k_.gpadl->MapGpadl(Kmcld::Context().get(), map, &lease);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  kmcl::v1::FreeGuestBufferRequest fb;
  fb.set_partition_id("default");
  fb.set_buffer_id(buffer.buffer_id());
  kmcl::v1::FreeGuestBufferResponse fbr;
  s = k_.gpadl->FreeGuestBuffer(Kmcld::Context().get(), fb, &fbr);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << "covered by a GPADL";
  kmcl::v1::UnmapGpadlRequest um;
  um.set_lease_id(lease.lease_id());
  kmcl::v1::UnmapGpadlResponse umr;
  ASSERT_TRUE(k_.gpadl->UnmapGpadl(Kmcld::Context().get(), um, &umr).ok());
  kmcl::v1::GetGpadlRequest gg;
  *gg.mutable_channel() = ref;
  gg.set_gpadl_id(g.gpadl_id());
  s = k_.gpadl->GetGpadl(Kmcld::Context().get(), gg, &after);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << "torn down at the unmap";
  ASSERT_TRUE(k_.gpadl->FreeGuestBuffer(Kmcld::Context().get(), fb, &fbr).ok());

  // Explicit ranges describe only pages of guest buffers: the freed
  // buffer's pages are refused, naming the first.
  kmcl::v1::CreateGpadlRequest ro;
  *ro.mutable_channel() = ref;
  ro.set_read_only(true);
  kmcl::v1::GpaRange* r = ro.mutable_ranges()->add_ranges();
  r->set_byte_count(4096);
  r->set_byte_offset(0);
  r->add_pfns(buffer.pfns(0));
  s = k_.gpadl->CreateGpadl(Kmcld::Context().get(), ro, &g);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_NE(s.error_message().find(absl::StrCat("PFN ", buffer.pfns(0), " (range 0, page 0)")),
            std::string::npos)
      << s.error_message();

  // A read-only GPADL from explicit ranges (a buffer's page): only
  // read-only maps, no writes.
  alloc.set_byte_count(4096);
  ASSERT_TRUE(k_.gpadl->AllocateGuestBuffer(Kmcld::Context().get(), alloc, &buffer).ok());
  r->set_pfns(0, buffer.pfns(0));
  ASSERT_TRUE(k_.gpadl->CreateGpadl(Kmcld::Context().get(), ro, &g).ok());
  EXPECT_TRUE(g.read_only());
  map.set_gpadl_id(g.gpadl_id());
  map.set_read_only(false);
  s = k_.gpadl->MapGpadl(Kmcld::Context().get(), map, &lease);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  map.set_read_only(true);
  ASSERT_TRUE(k_.gpadl->MapGpadl(Kmcld::Context().get(), map, &lease).ok());
  write.set_lease_id(lease.lease_id());
  write.set_offset(0);
  s = k_.gpadl->WriteLease(Kmcld::Context().get(), write, &data);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  um.set_lease_id(lease.lease_id());
  ASSERT_TRUE(k_.gpadl->UnmapGpadl(Kmcld::Context().get(), um, &umr).ok());
  td.set_gpadl_id(g.gpadl_id());
  td.set_wait(true);
  ASSERT_TRUE(k_.gpadl->TeardownGpadl(Kmcld::Context().get(), td, &after).ok());
  EXPECT_EQ(after.state(), kmcl::v1::GPADL_STATE_TORN_DOWN);
}

// 100,000 round trips each way; fewer where ASan or TSan slow every packet
// down several times, so that the run stays within the test's deadlines.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kEchoCount = 20000;
#else
constexpr int kEchoCount = 100000;
#endif

std::string Payload(int i) { return absl::StrCat("packet-", i, "-", std::string(i % 23, 'x')); }

// `receiver` echoes `count` deliveries as their completions, checking order
// and payloads, granting delivery credits back as it goes.
void Echo(AttachStream* receiver, int count) {
  int received = 0;
  uint64_t last_id = 0;
  kmcl::v1::AttachResponse resp;
  while (received < count) {
    ASSERT_TRUE(receiver->Read(&resp));
    std::vector<std::pair<uint64_t, std::string>> done;
    for (const auto& p : resp.received().packets()) {
      ASSERT_EQ(p.payload(), Padded(Payload(received))) << "in order, padded with zeros";
      ASSERT_TRUE(p.completion_requested());
      ASSERT_GT(p.delivery_id(), last_id);
      last_id = p.delivery_id();
      done.emplace_back(p.delivery_id(), absl::StrCat("echo-", received));
      ++received;
    }
    if (!done.empty()) {
      ASSERT_TRUE(receiver->Complete(done));
      ASSERT_TRUE(receiver->GrantDeliveries(static_cast<uint32_t>(done.size())));
    }
  }
}

// `sender` sends `count` transactions as credits allow and checks each
// completion's tag, status and echoed payload.
void SendAndCheck(AttachStream* sender, int count, std::atomic<int>* progress) {
  int sent = 0, completed = 0;
  kmcl::v1::AttachResponse resp;
  while (completed < count) {
    std::vector<kmcl::v1::SendPacket> batch;
    while (sent < count && sender->send_credits() > batch.size() && batch.size() < 64) {
      batch.push_back(Packet(sent, Payload(sent)));
      ++sent;
    }
    if (!batch.empty()) {
      ASSERT_TRUE(sender->Send(batch));
    }
    ASSERT_TRUE(sender->Read(&resp));
    for (const auto& c : resp.send_completions().completions()) {
      ASSERT_EQ(c.tag(), static_cast<uint64_t>(completed));
      ASSERT_EQ(c.status().code(), 0u) << c.status().name();
      ASSERT_EQ(c.payload(), Padded(absl::StrCat("echo-", completed)));
      ++completed;
    }
    progress->store(completed, std::memory_order_relaxed);
  }
}

// The guest tool sends `count` transactions, the host tool echoes each as
// its completion; then the other way round.
void EchoBothWays(Kmcld& k, const kmcl::v1::ChannelRef& ref, int count) {
  AttachStream host(*k.packets, ref, ENDPOINT_ROLE_HOST, 256, 256);
  AttachStream guest(*k.packets, ref, ENDPOINT_ROLE_GUEST, 256, 256);
  ASSERT_TRUE(host.ok());
  ASSERT_TRUE(guest.ok());
  EXPECT_EQ(host.attached().max_packet_size(), 4096u);
  for (auto pair : {std::pair{&guest, &host}, std::pair{&host, &guest}}) {
    // Named, not a structured binding, so that clang 14 lets lambdas capture them.
    AttachStream* sender = pair.first;
    AttachStream* receiver = pair.second;
    std::thread echo([receiver, count] { Echo(receiver, count); });
    absl::Notification done;
    std::atomic<int> progress{0};
    // Reports where the traffic stands if no completion arrived for 40 s (a
    // stall, not a slow build: sanitizer builds are several times slower).
    std::thread watchdog([&] {
      int last = -1;
      while (!done.WaitForNotificationWithTimeout(absl::Seconds(40))) {
        const int now = progress.load(std::memory_order_relaxed);
        if (now != last) {
          last = now;
          continue;
        }
        kmcl::v1::GetChannelDiagnosticsRequest dr;
        *dr.mutable_channel() = ref;
        kmcl::v1::ChannelDiagnostics diag;
        (void)k.diagnostics->GetChannelDiagnostics(Kmcld::Context().get(), dr, &diag);
        ADD_FAILURE() << "no progress for 40 s at " << now << " completions: host "
                      << diag.host().stream_state() << " / " << diag.host().counters().ShortDebugString()
                      << "; guest " << diag.guest().stream_state() << " / "
                      << diag.guest().counters().ShortDebugString();
        host.context().TryCancel();  // thread-safe; ends both loops
        guest.context().TryCancel();
        return;
      }
    });
    SendAndCheck(sender, count, &progress);
    done.Notify();
    watchdog.join();
    if (::testing::Test::HasFatalFailure()) {
      // Say where the traffic stood, then end the streams so Echo returns.
      kmcl::v1::GetChannelDiagnosticsRequest dr;
      *dr.mutable_channel() = ref;
      kmcl::v1::ChannelDiagnostics diag;
      (void)k.diagnostics->GetChannelDiagnostics(Kmcld::Context().get(), dr, &diag);
      ADD_FAILURE() << "stalled; kmcld says: " << diag.DebugString();
      host.context().TryCancel();
      guest.context().TryCancel();
      echo.join();
      return;
    }
    echo.join();
    if (::testing::Test::HasFatalFailure()) return;
  }
  EXPECT_TRUE(guest.Close().ok());
  EXPECT_TRUE(host.Close().ok());
}

TEST_F(BridgeChannelTest, PacketsWithCompletionsBothWays) {
  auto offered = k_.Offer();
  ASSERT_TRUE(offered.ok()) << offered.status();
  ASSERT_TRUE(k_.Open().ok());
  EchoBothWays(k_, offered->offer().channel(), kEchoCount);
}

}  // namespace
}  // namespace kmcld::testing
