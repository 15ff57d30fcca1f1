// End-to-end: a partition saved through SavePartition in one kmcld process
// is restored through RestorePartition into a second kmcld process; the
// tools re-attach there and every in-flight transaction completes exactly
// once. Also: garbage blobs are refused cleanly, and the event log records
// and resumes.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/bridge_fixture.h"

namespace kmcld::testing {
namespace {

using kmcl::v1::ENDPOINT_ROLE_GUEST;
using kmcl::v1::ENDPOINT_ROLE_HOST;

absl::StatusOr<std::string> SavePartition(Kmcld& k, const std::string& id, bool stay_paused,
                                          uint32_t chunk_bytes) {
  kmcl::v1::SavePartitionRequest req;
  req.set_partition_id(id);
  req.set_stay_paused(stay_paused);
  req.set_chunk_bytes(chunk_bytes);
  auto ctx = Kmcld::Context();
  auto reader = k.save_restore->SavePartition(ctx.get(), req);
  std::string blob;
  kmcl::v1::SaveChunk chunk;
  bool last = false;
  while (reader->Read(&chunk)) {
    if (chunk.offset() != blob.size()) return absl::InternalError("chunk offsets do not follow");
    blob += chunk.data();
    last = chunk.last();
    if (last && chunk.total_bytes() != blob.size()) return absl::InternalError("bad total");
  }
  grpc::Status s = reader->Finish();
  if (!s.ok()) return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  if (!last) return absl::InternalError("no last chunk");
  return blob;
}

grpc::Status RestorePartition(Kmcld& k, const std::string& target, const std::string& blob,
                              kmcl::v1::Partition* out, size_t chunk = 100000) {
  auto ctx = Kmcld::Context();
  auto writer = k.save_restore->RestorePartition(ctx.get(), out);
  kmcl::v1::RestoreChunk first;
  first.mutable_target()->set_partition_id(target);
  writer->Write(first);
  for (size_t at = 0; at < blob.size(); at += chunk) {
    kmcl::v1::RestoreChunk c;
    c.set_data(blob.substr(at, chunk));
    if (!writer->Write(c)) break;
  }
  writer->WritesDone();
  return writer->Finish();
}

// Starts `k` with the default partition's echo channel offered and opened,
// and saves that partition.
absl::StatusOr<std::string> StartAndSaveDefault(Kmcld& k) {
  if (absl::Status s = k.Start(); !s.ok()) return absl::Status(s.code(), k.process.output());
  if (auto offered = k.Offer(); !offered.ok()) return offered.status();
  if (auto opened = k.Open(); !opened.ok()) return opened.status();
  return SavePartition(k, "default", false, 0);
}

TEST(BridgeSaveRestoreTest, RestoredInASecondProcessFinishesEveryTransactionOnce) {
  Kmcld a;
  ASSERT_TRUE(a.Start().ok()) << a.process.output();
  kmcl::v1::CreatePartitionRequest create;
  create.set_id("vm");
  create.set_guest_memory_bytes(uint64_t{64} << 20);
  kmcl::v1::Partition p;
  ASSERT_TRUE(a.partitions->CreatePartition(Kmcld::Context().get(), create, &p).ok());
  // The host is offered paused, so the guest's transactions wait in the ring.
  auto offered = a.Offer("vm", kEchoType, 0, /*start=*/false);
  ASSERT_TRUE(offered.ok()) << offered.status();
  const kmcl::v1::ChannelRef ref = offered->offer().channel();
  ASSERT_TRUE(a.Open("vm").ok());
  {
    AttachStream guest(*a.packets, ref, ENDPOINT_ROLE_GUEST);
    ASSERT_TRUE(guest.ok());
    std::vector<kmcl::v1::SendPacket> batch;
    for (int i = 0; i < 50; ++i) batch.push_back(Packet(1000 + i, absl::StrCat("in flight ", i)));
    ASSERT_TRUE(guest.Send(batch));
    kmcl::v1::GetChannelDiagnosticsRequest dr;
    *dr.mutable_channel() = ref;
    kmcl::v1::ChannelDiagnostics diag;
    for (int i = 0; i < 100000 && diag.guest().outstanding_transactions() < 50; ++i) {
      ASSERT_TRUE(a.diagnostics->GetChannelDiagnostics(Kmcld::Context().get(), dr, &diag).ok());
    }
    ASSERT_EQ(diag.guest().outstanding_transactions(), 50u);
    guest.Cancel();  // the guest tool goes away; kmcld keeps the transactions
  }
  auto blob = SavePartition(a, "vm", /*stay_paused=*/true, 4096);
  ASSERT_TRUE(blob.ok()) << blob.status();
  ASSERT_GT(blob->size(), 4096u) << "several chunks";

  Kmcld b;
  ASSERT_TRUE(b.Start().ok()) << b.process.output();
  kmcl::v1::Partition restored;
  grpc::Status s = RestorePartition(b, "", *blob, &restored);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(restored.id(), "vm");
  EXPECT_EQ(restored.channel_count(), 1u);
  // The same partition again: ALREADY_EXISTS, and nothing changes.
  kmcl::v1::Partition again;
  s = RestorePartition(b, "vm", *blob, &again);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS) << s.error_message();

  // The host comes back paused as saved; start it, attach both tools.
  kmcl::v1::ChannelRequest req;
  *req.mutable_channel() = ref;
  kmcl::v1::ChannelResponse resp;
  s = b.host->GetChannel(Kmcld::Context().get(), req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.channel().host().connection(), kmcl::v1::CONNECTION_STATE_OPENED);
  EXPECT_EQ(resp.channel().guest().connection(), kmcl::v1::CONNECTION_STATE_OPENED);
  AttachStream host(*b.packets, ref, ENDPOINT_ROLE_HOST, 1000);
  AttachStream guest(*b.packets, ref, ENDPOINT_ROLE_GUEST);
  ASSERT_TRUE(host.ok() && guest.ok());
  EXPECT_EQ(guest.send_credits(), 256u - 50u) << "the restored sends hold their credits";
  ASSERT_TRUE(b.host->StartChannel(Kmcld::Context().get(), req, &resp).ok());
  std::vector<kmcl::v1::ReceivedPacket> got;
  ASSERT_TRUE(host.ReadDeliveries(50, &got));
  std::vector<std::pair<uint64_t, std::string>> done;
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(got[i].payload(), Padded(absl::StrCat("in flight ", i)));
    done.emplace_back(got[i].delivery_id(), absl::StrCat("done ", i));
  }
  ASSERT_TRUE(host.Complete(done));
  std::vector<kmcl::v1::SendCompletion> completions;
  ASSERT_TRUE(guest.ReadCompletions(50, &completions));
  std::vector<int> seen(50, 0);
  for (const auto& c : completions) {
    ASSERT_GE(c.tag(), 1000u);
    ASSERT_LT(c.tag(), 1050u);
    EXPECT_EQ(c.payload(), Padded(absl::StrCat("done ", c.tag() - 1000)));
    EXPECT_EQ(c.status().code(), 0u);
    ++seen[c.tag() - 1000];
  }
  for (int i = 0; i < 50; ++i) EXPECT_EQ(seen[i], 1) << "tag " << 1000 + i;
  // Traffic goes on in the new process.
  ASSERT_TRUE(guest.Send({Packet(1, "after")}));
  got.clear();
  ASSERT_TRUE(host.ReadDeliveries(1, &got));
  ASSERT_TRUE(host.Complete({{got[0].delivery_id(), "ack"}}));
  completions.clear();
  ASSERT_TRUE(guest.ReadCompletions(1, &completions));
  EXPECT_EQ(completions[0].tag(), 1u);
}

TEST(BridgeSaveRestoreTest, GarbageAndTruncatedBlobsAreRefusedAndLeaveNothingBehind) {
  Kmcld k;
  auto blob = StartAndSaveDefault(k);
  ASSERT_TRUE(blob.ok()) << blob.status();
  kmcl::v1::Partition p;
  for (const std::string& bad :
       {std::string("garbage"), blob->substr(0, blob->size() / 2), std::string(5000, '\xff'),
        std::string()}) {
    grpc::Status s = RestorePartition(k, "copy", bad, &p);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  }
  std::string flipped = *blob;
  flipped[flipped.size() - 100] ^= 0x40;
  grpc::Status s = RestorePartition(k, "copy", flipped, &p);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  kmcl::v1::GetPartitionRequest get;
  get.set_id("copy");
  EXPECT_EQ(k.partitions->GetPartition(Kmcld::Context().get(), get, &p).error_code(),
            grpc::StatusCode::NOT_FOUND);
  // The good blob restores under a new id, beside the original.
  s = RestorePartition(k, "copy", *blob, &p);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(p.id(), "copy");
  EXPECT_EQ(p.channel_count(), 1u);
  // kmcld logged no flood of protobuf errors.
  size_t lines = 0;
  for (size_t at = 0; (at = k.process.output().find("protobuf", at)) != std::string::npos; ++at) ++lines;
  EXPECT_LE(lines, 5u) << k.process.output();
}

// The bundle's own fields (endpoints, buffers, devices) were outside every
// CRC: a flip there restored. Since format version 3 the bundle ends with a
// CRC of all of it; a version 2 bundle (no CRC) is still read.
TEST(BridgeSaveRestoreTest, AFlipInTheBundlesOwnFieldsIsRefusedAndOldBundlesStillRestore) {
  Kmcld k;
  auto blob = StartAndSaveDefault(k);
  ASSERT_TRUE(blob.ok()) << blob.status();
  ASSERT_GT(blob->size(), 64u);
  kmcl::v1::Partition p;
  // The last bytes: the endpoints' settings and offers, the buffers, the CRC.
  for (size_t at = blob->size() - 64; at < blob->size(); ++at) {
    std::string flipped = *blob;
    flipped[at] ^= 0x01;
    grpc::Status s = RestorePartition(k, "copy", flipped, &p);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << "byte " << at << ": " << s.error_message();
  }
  // The same bundle as a version-2 writer made it: no CRC field.
  ASSERT_EQ((*blob)[0], '\x08');
  ASSERT_EQ((*blob)[1], '\x03') << "format version 3";
  std::string legacy = blob->substr(0, blob->size() - 5);
  legacy[1] = '\x02';
  grpc::Status s = RestorePartition(k, "legacy", legacy, &p);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

TEST(BridgeEventsTest, TheLogRecordsCallbacksInOrderAndResumes) {
  Kmcld k;
  ASSERT_TRUE(k.Start({"--event_retention=64"}).ok()) << k.process.output();
  auto offered = k.Offer();
  ASSERT_TRUE(offered.ok());
  ASSERT_TRUE(k.Open().ok());
  // Open returns once the guest has the channel open; the host's STARTED
  // and POST_STARTED may still be on their way to the log. Follow the live
  // log until the last of them is in it.
  {
    kmcl::v1::WatchEventsRequest req;
    *req.mutable_channel() = offered->offer().channel();
    auto ctx = Kmcld::Context();
    auto reader = k.events->WatchEvents(ctx.get(), req);
    kmcl::v1::Event e;
    bool post_started = false;
    while (!post_started && reader->Read(&e)) {
      post_started = e.role() == ENDPOINT_ROLE_HOST && e.kind() == kmcl::v1::EVENT_KIND_POST_STARTED;
    }
    ASSERT_TRUE(post_started) << "the host's POST_STARTED never reached the log";
    ctx->TryCancel();
    reader->Finish();
  }
  auto watch = [&](uint64_t after, std::vector<kmcl::v1::Event>* out) {
    kmcl::v1::WatchEventsRequest req;
    req.set_after_sequence(after);
    req.set_backlog_only(true);
    *req.mutable_channel() = offered->offer().channel();
    auto ctx = Kmcld::Context();
    auto reader = k.events->WatchEvents(ctx.get(), req);
    kmcl::v1::Event e;
    while (reader->Read(&e)) out->push_back(e);
    return reader->Finish();
  };
  std::vector<kmcl::v1::Event> events;
  ASSERT_TRUE(watch(0, &events).ok());
  std::vector<kmcl::v1::EventKind> host_kinds;
  for (const auto& e : events) {
    if (e.role() == ENDPOINT_ROLE_HOST) host_kinds.push_back(e.kind());
  }
  std::vector<kmcl::v1::EventKind> want = {kmcl::v1::EVENT_KIND_OFFERED, kmcl::v1::EVENT_KIND_OPENED,
                                           kmcl::v1::EVENT_KIND_STARTED,
                                           kmcl::v1::EVENT_KIND_POST_STARTED};
  EXPECT_EQ(host_kinds, want);
  for (size_t i = 1; i < events.size(); ++i) EXPECT_GT(events[i].sequence(), events[i - 1].sequence());
  // Resuming after the second event gives exactly the later ones (and any
  // recorded since the first watch: the guest's side may still be opening).
  std::vector<kmcl::v1::Event> later;
  ASSERT_TRUE(watch(events[1].sequence(), &later).ok());
  ASSERT_GE(later.size(), events.size() - 2);
  for (size_t i = 2; i < events.size(); ++i) {
    EXPECT_EQ(later[i - 2].sequence(), events[i].sequence());
    EXPECT_EQ(later[i - 2].kind(), events[i].kind());
  }
  // Push the early events out of the window: resuming there is OUT_OF_RANGE.
  kmcl::v1::CreatePartitionRequest create;
  kmcl::v1::Partition p;
  kmcl::v1::DeletePartitionResponse deleted;
  for (int i = 0; i < 40; ++i) {
    ASSERT_TRUE(k.partitions->CreatePartition(Kmcld::Context().get(), create, &p).ok());
    kmcl::v1::DeletePartitionRequest del;
    del.set_id(p.id());
    ASSERT_TRUE(k.partitions->DeletePartition(Kmcld::Context().get(), del, &deleted).ok());
  }
  later.clear();
  grpc::Status s = watch(events[0].sequence(), &later);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::OUT_OF_RANGE) << s.error_message();
  // An unknown partition filter is NOT_FOUND.
  kmcl::v1::WatchEventsRequest req;
  req.set_partition_id("nope");
  auto ctx = Kmcld::Context();
  auto reader = k.events->WatchEvents(ctx.get(), req);
  kmcl::v1::Event e;
  EXPECT_FALSE(reader->Read(&e));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace kmcld::testing
