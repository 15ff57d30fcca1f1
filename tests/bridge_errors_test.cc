// End-to-end: every kmcl.v1 RPC given a bad request answers its documented
// code (docs/api.md, "Errors") and kmcld keeps serving afterwards.
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/bridge_fixture.h"

namespace kmcld::testing {
namespace {

using grpc::StatusCode;

struct Case {
  std::string name;
  StatusCode want;
  std::function<grpc::Status(Kmcld&, const kmcl::v1::ChannelRef&)> call;
};

kmcl::v1::ChannelRef Ref(const std::string& partition, uint32_t id, uint64_t seq = 0) {
  kmcl::v1::ChannelRef r;
  r.set_partition_id(partition);
  r.set_channel_id(id);
  r.set_offer_sequence(seq);
  return r;
}

template <typename Req>
Req WithChannel(const kmcl::v1::ChannelRef& ref) {
  Req r;
  *r.mutable_channel() = ref;
  return r;
}

std::vector<Case> Cases() {
  using namespace kmcl::v1;
  std::vector<Case> c;
  auto add = [&](std::string name, StatusCode want,
                 std::function<grpc::Status(Kmcld&, const ChannelRef&)> call) {
    c.push_back({std::move(name), want, std::move(call)});
  };
  // Partitions.
  add("CreatePartition bad id", StatusCode::INVALID_ARGUMENT, [](Kmcld& k, const ChannelRef&) {
    CreatePartitionRequest r;
    r.set_id("Bad_ID!");
    Partition p;
    return k.partitions->CreatePartition(Kmcld::Context().get(), r, &p);
  });
  add("CreatePartition VTL 3", StatusCode::INVALID_ARGUMENT, [](Kmcld& k, const ChannelRef&) {
    CreatePartitionRequest r;
    r.add_client_vtls(3);
    Partition p;
    return k.partitions->CreatePartition(Kmcld::Context().get(), r, &p);
  });
  add("CreatePartition odd memory", StatusCode::INVALID_ARGUMENT, [](Kmcld& k, const ChannelRef&) {
    CreatePartitionRequest r;
    r.set_guest_memory_bytes(12345);
    Partition p;
    return k.partitions->CreatePartition(Kmcld::Context().get(), r, &p);
  });
  add("CreatePartition unknown version", StatusCode::INVALID_ARGUMENT, [](Kmcld& k, const ChannelRef&) {
    CreatePartitionRequest r;
    r.set_vmbus_version(static_cast<VmbusVersion>(77));
    Partition p;
    return k.partitions->CreatePartition(Kmcld::Context().get(), r, &p);
  });
  add("CreatePartition taken id", StatusCode::ALREADY_EXISTS, [](Kmcld& k, const ChannelRef&) {
    CreatePartitionRequest r;
    r.set_id("default");
    Partition p;
    return k.partitions->CreatePartition(Kmcld::Context().get(), r, &p);
  });
  add("GetPartition unknown", StatusCode::NOT_FOUND, [](Kmcld& k, const ChannelRef&) {
    GetPartitionRequest r;
    r.set_id("nope");
    Partition p;
    return k.partitions->GetPartition(Kmcld::Context().get(), r, &p);
  });
  add("DeletePartition with channels", StatusCode::FAILED_PRECONDITION, [](Kmcld& k, const ChannelRef&) {
    DeletePartitionRequest r;
    r.set_id("default");
    DeletePartitionResponse p;
    return k.partitions->DeletePartition(Kmcld::Context().get(), r, &p);
  });
  // Host channels.
  add("OfferChannel no type", StatusCode::INVALID_ARGUMENT, [](Kmcld& k, const ChannelRef&) {
    OfferChannelRequest r;
    r.set_partition_id("default");
    ChannelResponse p;
    return k.host->OfferChannel(Kmcld::Context().get(), r, &p);
  });
  add("OfferChannel bad GUID", StatusCode::INVALID_ARGUMENT, [](Kmcld& k, const ChannelRef&) {
    OfferChannelRequest r;
    r.set_partition_id("default");
    r.mutable_settings()->mutable_interface_type()->set_value("not-a-guid");
    ChannelResponse p;
    return k.host->OfferChannel(Kmcld::Context().get(), r, &p);
  });
  add("OfferChannel unknown flags", StatusCode::INVALID_ARGUMENT, [](Kmcld& k, const ChannelRef&) {
    OfferChannelRequest r;
    r.set_partition_id("default");
    r.mutable_settings()->mutable_interface_type()->set_value(kEchoType);
    r.mutable_settings()->set_server_flags(0x100);
    ChannelResponse p;
    return k.host->OfferChannel(Kmcld::Context().get(), r, &p);
  });
  add("OfferChannel user_defined too long", StatusCode::INVALID_ARGUMENT, [](Kmcld& k, const ChannelRef&) {
    OfferChannelRequest r;
    r.set_partition_id("default");
    r.mutable_settings()->mutable_interface_type()->set_value(kEchoType);
    r.mutable_settings()->set_user_defined(std::string(121, 'u'));
    ChannelResponse p;
    return k.host->OfferChannel(Kmcld::Context().get(), r, &p);
  });
  add("OfferChannel unknown partition", StatusCode::NOT_FOUND, [](Kmcld& k, const ChannelRef&) {
    OfferChannelRequest r;
    r.set_partition_id("nope");
    r.mutable_settings()->mutable_interface_type()->set_value(kEchoType);
    ChannelResponse p;
    return k.host->OfferChannel(Kmcld::Context().get(), r, &p);
  });
  add("GetChannel unknown relid", StatusCode::NOT_FOUND, [](Kmcld& k, const ChannelRef&) {
    ChannelResponse p;
    return k.host->GetChannel(Kmcld::Context().get(), WithChannel<ChannelRequest>(Ref("default", 99)), &p);
  });
  add("GetChannel no relid", StatusCode::INVALID_ARGUMENT, [](Kmcld& k, const ChannelRef&) {
    ChannelResponse p;
    return k.host->GetChannel(Kmcld::Context().get(), WithChannel<ChannelRequest>(Ref("default", 0)), &p);
  });
  add("StartChannel stale sequence", StatusCode::FAILED_PRECONDITION, [](Kmcld& k, const ChannelRef& ref) {
    ChannelResponse p;
    ChannelRef stale = ref;
    stale.set_offer_sequence(ref.offer_sequence() + 100);
    return k.host->StartChannel(Kmcld::Context().get(), WithChannel<ChannelRequest>(stale), &p);
  });
  add("CleanupChannel while offered", StatusCode::FAILED_PRECONDITION, [](Kmcld& k, const ChannelRef& ref) {
    CleanupChannelResponse p;
    return k.host->CleanupChannel(Kmcld::Context().get(), WithChannel<ChannelRequest>(ref), &p);
  });
  add("ListChannels unknown partition", StatusCode::NOT_FOUND, [](Kmcld& k, const ChannelRef&) {
    ListChannelsRequest r;
    r.set_partition_id("nope");
    ListChannelsResponse p;
    return k.host->ListChannels(Kmcld::Context().get(), r, &p);
  });
  // Guest channels.
  add("ListOffers VTL 5", StatusCode::INVALID_ARGUMENT, [](Kmcld& k, const ChannelRef&) {
    ListOffersRequest r;
    r.set_partition_id("default");
    r.set_vtl(5);
    ListOffersResponse p;
    return k.guest->ListOffers(Kmcld::Context().get(), r, &p);
  });
  add("OpenChannel no such offer", StatusCode::NOT_FOUND, [](Kmcld& k, const ChannelRef&) {
    OpenChannelRequest r;
    r.set_partition_id("default");
    r.mutable_interface_type()->set_value("00000000-0000-0000-0000-000000000001");
    ChannelResponse p;
    return k.guest->OpenChannel(Kmcld::Context().get(), r, &p);
  });
  add("OpenChannel ring too large", StatusCode::INVALID_ARGUMENT, [](Kmcld& k, const ChannelRef&) {
    OpenChannelRequest r;
    r.set_partition_id("default");
    r.mutable_interface_type()->set_value(kEchoType);
    r.set_incoming_ring_pages(1 << 20);
    ChannelResponse p;
    return k.guest->OpenChannel(Kmcld::Context().get(), r, &p);
  });
  add("OpenChannel already opened", StatusCode::NOT_FOUND, [](Kmcld& k, const ChannelRef&) {
    OpenChannelRequest r;
    r.set_partition_id("default");
    r.mutable_interface_type()->set_value(kEchoType);
    ChannelResponse p;
    return k.guest->OpenChannel(Kmcld::Context().get(), r, &p);
  });
  add("CloseChannel no guest endpoint", StatusCode::NOT_FOUND, [](Kmcld& k, const ChannelRef&) {
    ChannelResponse p;
    return k.guest->CloseChannel(Kmcld::Context().get(), WithChannel<ChannelRequest>(Ref("default", 77)), &p);
  });
  // GPADLs and memory.
  add("AllocateGuestBuffer zero", StatusCode::INVALID_ARGUMENT, [](Kmcld& k, const ChannelRef&) {
    AllocateGuestBufferRequest r;
    r.set_partition_id("default");
    GuestBuffer p;
    return k.gpadl->AllocateGuestBuffer(Kmcld::Context().get(), r, &p);
  });
  add("AllocateGuestBuffer over the limit", StatusCode::RESOURCE_EXHAUSTED, [](Kmcld& k, const ChannelRef&) {
    AllocateGuestBufferRequest r;
    r.set_partition_id("default");
    r.set_byte_count(uint64_t{8} << 30);
    GuestBuffer p;
    return k.gpadl->AllocateGuestBuffer(Kmcld::Context().get(), r, &p);
  });
  add("WriteGuestMemory beyond memory", StatusCode::OUT_OF_RANGE, [](Kmcld& k, const ChannelRef&) {
    WriteGuestMemoryRequest r;
    r.set_partition_id("default");
    r.set_gpa(uint64_t{5} << 30);
    r.set_data("x");
    WriteGuestMemoryResponse p;
    return k.gpadl->WriteGuestMemory(Kmcld::Context().get(), r, &p);
  });
  add("WriteGuestMemory no target", StatusCode::INVALID_ARGUMENT, [](Kmcld& k, const ChannelRef&) {
    WriteGuestMemoryRequest r;
    r.set_partition_id("default");
    r.set_data("x");
    WriteGuestMemoryResponse p;
    return k.gpadl->WriteGuestMemory(Kmcld::Context().get(), r, &p);
  });
  add("ReadGuestMemory above 1 MiB and out of range", StatusCode::INVALID_ARGUMENT,
      [](Kmcld& k, const ChannelRef&) {
        ReadGuestMemoryRequest r;
        r.set_partition_id("default");
        r.set_gpa(uint64_t{5} << 30);
        r.set_length((1 << 20) + 1);
        ReadGuestMemoryResponse p;
        return k.gpadl->ReadGuestMemory(Kmcld::Context().get(), r, &p);
      });
  add("ReadGuestMemory unknown buffer", StatusCode::NOT_FOUND, [](Kmcld& k, const ChannelRef&) {
    ReadGuestMemoryRequest r;
    r.set_partition_id("default");
    r.set_buffer_id(12345);
    r.set_length(4);
    ReadGuestMemoryResponse p;
    return k.gpadl->ReadGuestMemory(Kmcld::Context().get(), r, &p);
  });
  add("CreateGpadl no source", StatusCode::INVALID_ARGUMENT, [](Kmcld& k, const ChannelRef& ref) {
    Gpadl p;
    return k.gpadl->CreateGpadl(Kmcld::Context().get(), WithChannel<CreateGpadlRequest>(ref), &p);
  });
  add("CreateGpadl PFN outside memory", StatusCode::OUT_OF_RANGE, [](Kmcld& k, const ChannelRef& ref) {
    auto r = WithChannel<CreateGpadlRequest>(ref);
    GpaRange* g = r.mutable_ranges()->add_ranges();
    g->set_byte_count(4096);
    g->add_pfns(uint64_t{1} << 40);
    Gpadl p;
    return k.gpadl->CreateGpadl(Kmcld::Context().get(), r, &p);
  });
  add("CreateGpadl PFN never allocated", StatusCode::INVALID_ARGUMENT, [](Kmcld& k, const ChannelRef& ref) {
    auto r = WithChannel<CreateGpadlRequest>(ref);
    GpaRange* g = r.mutable_ranges()->add_ranges();
    g->set_byte_count(4096);
    g->add_pfns(5000);  // inside guest memory; no guest buffer holds it
    Gpadl p;
    return k.gpadl->CreateGpadl(Kmcld::Context().get(), r, &p);
  });
  add("CreateGpadl wrong PFN count", StatusCode::INVALID_ARGUMENT, [](Kmcld& k, const ChannelRef& ref) {
    auto r = WithChannel<CreateGpadlRequest>(ref);
    GpaRange* g = r.mutable_ranges()->add_ranges();
    g->set_byte_count(3 * 4096);
    g->add_pfns(10);
    Gpadl p;
    return k.gpadl->CreateGpadl(Kmcld::Context().get(), r, &p);
  });
  add("MapGpadl unknown GPADL", StatusCode::NOT_FOUND, [](Kmcld& k, const ChannelRef& ref) {
    auto r = WithChannel<MapGpadlRequest>(ref);
    r.set_gpadl_id(424242);
    GpadlLease p;
    return k.gpadl->MapGpadl(Kmcld::Context().get(), r, &p);
  });
  add("TeardownGpadl of the channel's ring", StatusCode::FAILED_PRECONDITION, [](Kmcld& k, const ChannelRef& ref) {
    ListGpadlsRequest list;
    list.set_partition_id(ref.partition_id());
    list.set_channel_id(ref.channel_id());
    ListGpadlsResponse gpadls;
    grpc::Status s = k.gpadl->ListGpadls(Kmcld::Context().get(), list, &gpadls);
    if (!s.ok() || gpadls.gpadls_size() != 1) return grpc::Status(StatusCode::UNKNOWN, "expected the ring GPADL");
    auto r = WithChannel<TeardownGpadlRequest>(ref);
    r.set_gpadl_id(gpadls.gpadls(0).gpadl_id());
    Gpadl p;
    return k.gpadl->TeardownGpadl(Kmcld::Context().get(), r, &p);
  });
  add("ReadLease unknown lease", StatusCode::NOT_FOUND, [](Kmcld& k, const ChannelRef&) {
    LeaseIoRequest r;
    r.set_lease_id(999);
    r.set_length(1);
    LeaseIoResponse p;
    return k.gpadl->ReadLease(Kmcld::Context().get(), r, &p);
  });
  add("WriteLease above 1 MiB", StatusCode::INVALID_ARGUMENT, [](Kmcld& k, const ChannelRef&) {
    LeaseIoRequest r;
    r.set_lease_id(999);
    r.set_data(std::string((1 << 20) + 1, 'x'));
    LeaseIoResponse p;
    return k.gpadl->WriteLease(Kmcld::Context().get(), r, &p);
  });
  add("UnmapGpadl unknown lease", StatusCode::NOT_FOUND, [](Kmcld& k, const ChannelRef&) {
    UnmapGpadlRequest r;
    r.set_lease_id(999);
    UnmapGpadlResponse p;
    return k.gpadl->UnmapGpadl(Kmcld::Context().get(), r, &p);
  });
  // Save/restore and diagnostics.
  add("SaveChannel while running", StatusCode::FAILED_PRECONDITION, [](Kmcld& k, const ChannelRef& ref) {
    auto r = WithChannel<SaveChannelRequest>(ref);
    auto ctx = Kmcld::Context();
    auto reader = k.save_restore->SaveChannel(ctx.get(), r);
    SaveChunk chunk;
    while (reader->Read(&chunk)) {
    }
    return reader->Finish();
  });
  add("SavePartition huge chunks", StatusCode::INVALID_ARGUMENT, [](Kmcld& k, const ChannelRef&) {
    SavePartitionRequest r;
    r.set_partition_id("default");
    r.set_chunk_bytes(64 << 20);
    auto ctx = Kmcld::Context();
    auto reader = k.save_restore->SavePartition(ctx.get(), r);
    SaveChunk chunk;
    while (reader->Read(&chunk)) {
    }
    return reader->Finish();
  });
  add("RestoreChannel without target", StatusCode::INVALID_ARGUMENT, [](Kmcld& k, const ChannelRef&) {
    RestoreChannelResponse p;
    auto ctx = Kmcld::Context();
    auto writer = k.save_restore->RestoreChannel(ctx.get(), &p);
    RestoreChunk c;
    c.set_data("junk");
    writer->Write(c);
    writer->WritesDone();
    return writer->Finish();
  });
  add("GetChannelDiagnostics unknown partition", StatusCode::NOT_FOUND, [](Kmcld& k, const ChannelRef&) {
    ChannelDiagnostics p;
    return k.diagnostics->GetChannelDiagnostics(
        Kmcld::Context().get(), WithChannel<GetChannelDiagnosticsRequest>(Ref("nope", 1)), &p);
  });
  return c;
}

// Attach protocol violations: each ends its stream with its code.
grpc::Status AttachWith(Kmcld& k, const std::vector<kmcl::v1::AttachRequest>& messages) {
  auto ctx = Kmcld::Context();
  auto rw = k.packets->Attach(ctx.get());
  for (const auto& m : messages) rw->Write(m);
  kmcl::v1::AttachResponse resp;
  while (rw->Read(&resp)) {
  }
  return rw->Finish();
}

TEST(BridgeErrorsTest, EveryBadRequestGetsItsCodeAndKmcldKeepsServing) {
  Kmcld k;
  ASSERT_TRUE(k.Start().ok()) << k.process.output();
  auto offered = k.Offer();
  ASSERT_TRUE(offered.ok());
  ASSERT_TRUE(k.Open().ok());
  const kmcl::v1::ChannelRef ref = offered->offer().channel();
  for (const Case& c : Cases()) {
    grpc::Status s = c.call(k, ref);
    EXPECT_EQ(s.error_code(), c.want) << c.name << ": " << s.error_message();
    EXPECT_FALSE(s.error_message().empty()) << c.name;
  }

  kmcl::v1::AttachRequest attach;
  *attach.mutable_attach()->mutable_endpoint()->mutable_channel() = ref;
  attach.mutable_attach()->mutable_endpoint()->set_role(kmcl::v1::ENDPOINT_ROLE_HOST);
  kmcl::v1::AttachRequest sends;
  sends.mutable_sends()->add_packets()->set_payload("x");
  kmcl::v1::AttachRequest empty;
  kmcl::v1::AttachRequest bad_completion;
  bad_completion.mutable_completions()->add_completions()->set_delivery_id(12345);
  kmcl::v1::AttachRequest oversized;
  oversized.mutable_sends()->add_packets()->set_payload(std::string(5000, 'o'));
  kmcl::v1::AttachRequest unknown = attach;
  unknown.mutable_attach()->mutable_endpoint()->mutable_channel()->set_channel_id(55);
  kmcl::v1::AttachRequest no_role = attach;
  no_role.mutable_attach()->mutable_endpoint()->set_role(kmcl::v1::ENDPOINT_ROLE_UNSPECIFIED);
  EXPECT_EQ(AttachWith(k, {sends}).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(AttachWith(k, {attach, attach}).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(AttachWith(k, {attach, empty}).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(AttachWith(k, {attach, bad_completion}).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(AttachWith(k, {attach, oversized}).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(AttachWith(k, {unknown}).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(AttachWith(k, {no_role}).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // External data that names neither a GPADL nor ranges: an unset oneof.
  kmcl::v1::AttachRequest guest_attach = attach;
  guest_attach.mutable_attach()->mutable_endpoint()->set_role(kmcl::v1::ENDPOINT_ROLE_GUEST);
  kmcl::v1::AttachRequest unset_external = sends;
  unset_external.mutable_sends()->mutable_packets(0)->mutable_external();
  EXPECT_EQ(AttachWith(k, {guest_attach, unset_external}).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // Still serving, the channel untouched and usable.
  EXPECT_TRUE(PacketFlows(*k.packets, ref));
}

// Regressions from a hostile-client review: races between calls on one
// endpoint, a forced deletion while a tool holds deliveries, odd inputs.
TEST(BridgeErrorsTest, RacingCallsOnOneEndpointEndCleanly) {
  Kmcld k;
  ASSERT_TRUE(k.Start().ok()) << k.process.output();
  for (int round = 0; round < 5; ++round) {
    auto offered = k.Offer();
    ASSERT_TRUE(offered.ok()) << offered.status();
    const kmcl::v1::ChannelRef ref = offered->offer().channel();
    // Two guests race for one offer: one opens, the other is NOT_FOUND.
    grpc::Status opens[2];
    {
      std::thread t([&] { opens[1] = k.Open().status().ok() ? grpc::Status::OK
                                                             : grpc::Status(grpc::StatusCode::NOT_FOUND, ""); });
      opens[0] = k.Open().status().ok() ? grpc::Status::OK : grpc::Status(grpc::StatusCode::NOT_FOUND, "");
      t.join();
    }
    EXPECT_EQ(opens[0].ok() + opens[1].ok(), 1) << "round " << round;
    // Two closes race: exactly one closes, the other is NOT_FOUND.
    kmcl::v1::ChannelRequest req;
    *req.mutable_channel() = ref;
    grpc::Status closes[2];
    {
      kmcl::v1::ChannelResponse r0, r1;
      std::thread t([&] { closes[1] = k.guest->CloseChannel(Kmcld::Context(20).get(), req, &r1); });
      closes[0] = k.guest->CloseChannel(Kmcld::Context(20).get(), req, &r0);
      t.join();
    }
    EXPECT_EQ(closes[0].ok() + closes[1].ok(), 1) << closes[0].error_message() << " / "
                                                  << closes[1].error_message();
    for (const auto& s : closes) {
      if (!s.ok()) {
        EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
      }
    }
    kmcl::v1::ChannelResponse resp;
    ASSERT_TRUE(k.host->RescindChannel(Kmcld::Context().get(), req, &resp).ok());
    kmcl::v1::CleanupChannelResponse cleaned;
    ASSERT_TRUE(k.host->CleanupChannel(Kmcld::Context().get(), req, &cleaned).ok());
  }
  // A later offer is not taken by a leftover guest endpoint.
  auto offered = k.Offer();
  ASSERT_TRUE(offered.ok());
  EXPECT_FALSE(offered->guest().present());
  EXPECT_TRUE(k.Open().ok());
}

TEST(BridgeErrorsTest, ForcedDeleteReleasesHeldDeliveriesAndEndsStreams) {
  Kmcld k;
  ASSERT_TRUE(k.Start().ok()) << k.process.output();
  kmcl::v1::CreatePartitionRequest create;
  create.set_id("doomed");
  kmcl::v1::Partition p;
  ASSERT_TRUE(k.partitions->CreatePartition(Kmcld::Context().get(), create, &p).ok());
  auto offered = k.Offer("doomed");
  ASSERT_TRUE(offered.ok());
  ASSERT_TRUE(k.Open("doomed").ok());
  const kmcl::v1::ChannelRef ref = offered->offer().channel();
  AttachStream host(*k.packets, ref, kmcl::v1::ENDPOINT_ROLE_HOST);
  AttachStream guest(*k.packets, ref, kmcl::v1::ENDPOINT_ROLE_GUEST);
  ASSERT_TRUE(host.ok() && guest.ok());
  ASSERT_TRUE(guest.Send({Packet(1, "a"), Packet(2, "b"), Packet(3, "c")}));
  std::vector<kmcl::v1::ReceivedPacket> got;
  ASSERT_TRUE(host.ReadDeliveries(3, &got));  // held, never completed
  kmcl::v1::DeletePartitionRequest del;
  del.set_id("doomed");
  del.set_force(true);
  kmcl::v1::DeletePartitionResponse deleted;
  grpc::Status s = k.partitions->DeletePartition(Kmcld::Context(20).get(), del, &deleted);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(host.Close().ok()) << "the stream ended OK";
  EXPECT_TRUE(guest.Close().ok());
}

TEST(BridgeErrorsTest, OddInputsGetTheirDocumentedCodes) {
  Kmcld k;
  ASSERT_TRUE(k.Start().ok()) << k.process.output();
  kmcl::v1::AllocateGuestBufferRequest alloc;
  alloc.set_partition_id("Default!");
  alloc.set_byte_count(4096);
  kmcl::v1::GuestBuffer b;
  EXPECT_EQ(k.gpadl->AllocateGuestBuffer(Kmcld::Context().get(), alloc, &b).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // The newest sequence: nothing after it yet, OK. Beyond it (a stale
  // sequence from before a restart): OUT_OF_RANGE naming the newest, at
  // once, whether following or not.
  kmcl::v1::WatchEventsRequest all;
  all.set_backlog_only(true);
  auto all_ctx = Kmcld::Context();
  auto all_reader = k.events->WatchEvents(all_ctx.get(), all);
  kmcl::v1::Event e;
  uint64_t newest = 0;
  while (all_reader->Read(&e)) newest = e.sequence();
  ASSERT_TRUE(all_reader->Finish().ok());
  ASSERT_GT(newest, 0u) << "kmcld logs its default partition";
  kmcl::v1::WatchEventsRequest watch;
  watch.set_after_sequence(newest);
  watch.set_backlog_only(true);
  auto ctx = Kmcld::Context();
  auto reader = k.events->WatchEvents(ctx.get(), watch);
  EXPECT_FALSE(reader->Read(&e));
  EXPECT_TRUE(reader->Finish().ok()) << "nothing after the newest sequence, not OUT_OF_RANGE";
  for (bool backlog_only : {true, false}) {
    for (uint64_t stale : {newest + 1000, ~uint64_t{0}}) {
      watch.set_after_sequence(stale);
      watch.set_backlog_only(backlog_only);
      auto stale_ctx = Kmcld::Context();
      auto stale_reader = k.events->WatchEvents(stale_ctx.get(), watch);
      EXPECT_FALSE(stale_reader->Read(&e));
      grpc::Status s = stale_reader->Finish();
      EXPECT_EQ(s.error_code(), grpc::StatusCode::OUT_OF_RANGE) << stale << ": " << s.error_message();
      EXPECT_NE(s.error_message().find(absl::StrCat("newest event, ", newest)), std::string::npos)
          << s.error_message();
    }
  }
  // A restore stream whose data is not a bundle is refused at its first byte.
  kmcl::v1::Partition p;
  auto rctx = Kmcld::Context();
  auto writer = k.save_restore->RestorePartition(rctx.get(), &p);
  kmcl::v1::RestoreChunk target;
  target.mutable_target()->set_partition_id("x");
  writer->Write(target);
  kmcl::v1::RestoreChunk junk;
  junk.set_data(std::string(1 << 20, '\xff'));
  for (int i = 0; i < 64 && writer->Write(junk); ++i) {
  }
  writer->WritesDone();
  EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(BridgeErrorsTest, ABadConfigFileStopsKmcldBeforeItListens) {
  DaemonProcess d;
  absl::Status s = d.Start(
      {"--listen=127.0.0.1:0", "--insecure_plaintext_tcp", "--uds=none", "--config=/nonexistent.conf"},
      absl::Seconds(30));
  EXPECT_FALSE(s.ok());
  EXPECT_NE(d.output().find("/nonexistent.conf"), std::string::npos) << d.output();
  EXPECT_EQ(d.output().find("kmcld: ready"), std::string::npos) << d.output();
}

}  // namespace
}  // namespace kmcld::testing
