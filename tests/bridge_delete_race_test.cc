// End-to-end: a partition deleted (force) while calls still use it, and
// partition ids on the restore path. kmcld must keep serving and stop
// cleanly ("kmcld: stopped", exit 0) afterwards; under --config=asan the
// daemon is built with ASan, so a use after free fails these tests.
#include <csignal>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/bridge_fixture.h"

namespace kmcld::testing {
namespace {

grpc::Status CreatePartition(Kmcld& k, const std::string& id) {
  kmcl::v1::CreatePartitionRequest req;
  req.set_id(id);
  req.set_guest_memory_bytes(32 << 20);
  kmcl::v1::Partition out;
  return k.partitions->CreatePartition(Kmcld::Context().get(), req, &out);
}

grpc::Status DeletePartition(Kmcld& k, const std::string& id) {
  kmcl::v1::DeletePartitionRequest req;
  req.set_id(id);
  req.set_force(true);
  kmcl::v1::DeletePartitionResponse out;
  return k.partitions->DeletePartition(Kmcld::Context().get(), req, &out);
}

void ExpectServesAndStopsCleanly(Kmcld& k) {
  kmcl::v1::ListPartitionsRequest list;
  kmcl::v1::ListPartitionsResponse partitions;
  grpc::Status s = k.partitions->ListPartitions(Kmcld::Context().get(), list, &partitions);
  EXPECT_TRUE(s.ok()) << s.error_message() << k.process.output();
  auto code = k.process.Stop(SIGTERM);
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << k.process.output();
  EXPECT_TRUE(absl::StrContains(k.process.output(), "kmcld: stopped")) << k.process.output();
}

// The guest's CloseChannel waits for the host to unmap the ring, which
// waits for the delivery the host holds (no host tool). A forced delete
// releases it; the close then ends on the blocking pool after the partition
// was deleted, and drops the last reference to its endpoint there.
TEST(BridgeDeleteRaceTest, ForcedDeleteWhileACloseWaitsOnAHeldDelivery) {
  Kmcld k;
  ASSERT_TRUE(k.Start().ok()) << k.process.output();
  ASSERT_TRUE(CreatePartition(k, "rk").ok());
  auto offered = k.Offer("rk");
  ASSERT_TRUE(offered.ok()) << offered.status();
  ASSERT_TRUE(k.Open("rk").ok());
  const kmcl::v1::ChannelRef ref = offered->offer().channel();
  {
    AttachStream guest(*k.packets, ref, kmcl::v1::ENDPOINT_ROLE_GUEST);
    ASSERT_TRUE(guest.ok());
    ASSERT_TRUE(guest.Send({Packet(1, "held", /*wait_for_completion=*/false)}));
    EXPECT_TRUE(guest.Close().ok());
  }
  // Until the host endpoint holds the delivery (bounded by the deadline).
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  for (;;) {
    kmcl::v1::GetChannelDiagnosticsRequest req;
    *req.mutable_channel() = ref;
    kmcl::v1::ChannelDiagnostics d;
    ASSERT_TRUE(k.diagnostics->GetChannelDiagnostics(Kmcld::Context().get(), req, &d).ok());
    if (d.host().held_deliveries() == 1) break;
    ASSERT_LT(absl::Now(), deadline) << "the delivery never reached the host endpoint";
  }
  kmcl::v1::ChannelRequest close;
  *close.mutable_channel() = ref;
  kmcl::v1::ChannelResponse closed;
  grpc::Status s = k.guest->CloseChannel(Kmcld::Context(2).get(), close, &closed);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
  s = DeletePartition(k, "rk");
  EXPECT_TRUE(s.ok()) << s.error_message();
  ExpectServesAndStopsCleanly(k);  // the stop waits for the close's blocking call
}

TEST(BridgeDeleteRaceTest, RestoreRefusesAnInvalidPartitionIdAndStopsCleanly) {
  Kmcld k;
  ASSERT_TRUE(k.Start().ok()) << k.process.output();
  ASSERT_TRUE(CreatePartition(k, "src").ok());
  ASSERT_TRUE(k.Offer("src").ok());
  ASSERT_TRUE(k.Open("src").ok());
  kmcl::v1::SavePartitionRequest save;
  save.set_partition_id("src");
  auto ctx = Kmcld::Context();
  auto reader = k.save_restore->SavePartition(ctx.get(), save);
  std::string blob;
  kmcl::v1::SaveChunk chunk;
  while (reader->Read(&chunk)) blob += chunk.data();
  ASSERT_TRUE(reader->Finish().ok());
  auto restore = [&](const std::string& target) {
    kmcl::v1::Partition out;
    auto rctx = Kmcld::Context();
    auto writer = k.save_restore->RestorePartition(rctx.get(), &out);
    kmcl::v1::RestoreChunk first;
    first.mutable_target()->set_partition_id(target);
    if (writer->Write(first)) {
      kmcl::v1::RestoreChunk data;
      data.set_data(blob);
      writer->Write(data);
    }
    writer->WritesDone();
    return writer->Finish();
  };
  for (const std::string& bad : {std::string("a/b"), std::string("*"), std::string(".."),
                                 std::string("a\nb"), std::string(70000, 'x')}) {
    grpc::Status s = restore(bad);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad.substr(0, 10);
    EXPECT_TRUE(absl::StrContains(s.error_message(), "[a-z0-9-]")) << s.error_message();
  }
  grpc::Status s = restore("dst");
  EXPECT_TRUE(s.ok()) << s.error_message();
  ExpectServesAndStopsCleanly(k);
}

}  // namespace
}  // namespace kmcld::testing
