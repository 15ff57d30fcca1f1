// The send path on its own, over a fake link: a double-mapped ring of its own
// memory read back with a RingReader, and a RingLink whose peer endpoint only
// counts interrupts. No partition, no channel, no threads.
#include "kmcl_core/runtime/send_path.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kmcl_core/bus/partition.h"
#include "kmcl_core/ring/ring_mapping.h"
#include "kmcl_core/runtime/channel.h"
#include "kmcl_core/runtime/fake_link_test_util.h"

namespace kmcl {
namespace {

class SendPathTest : public ::testing::Test {
 protected:
  // One packet with its storage and a routine that records how it ended.
  struct TestPacket {
    std::vector<uint8_t> storage = std::vector<uint8_t>(8192);
    std::unique_ptr<Packet> packet;
    std::vector<NTSTATUS> ended;
    std::string completion;
  };

  SendPathTest()
      : send_(&self_,
              {.gate = [this] { return gate_; }, .finished = [this] { ++finished_hooks_; }}) {
    link_->Attach(&self_, EndpointRole::kHost);
    link_->Attach(&peer_, EndpointRole::kGuest);
  }

  TestPacket& NewPacket() {
    auto t = std::make_unique<TestPacket>();
    t->packet = PacketTestAccess::Make(t->storage);
    TestPacket* raw = t.get();
    t->packet->set_completion_routine(
        [raw](Packet&, NTSTATUS status, std::span<const uint8_t> completion) {
          raw->ended.push_back(status);
          raw->completion.assign(completion.begin(), completion.end());
        });
    packets_.push_back(std::move(t));
    return *raw;
  }

  void AttachRing(uint32_t data_pages = 1) {
    ring_ = std::make_unique<DoubleMappedRing>(*DoubleMappedRing::Create(data_pages));
    reader_ = std::make_unique<RingReader>(ring_->memory());
    send_.Attach(ring_->memory(), link_);
  }

  std::vector<IncomingPacket> ReadAll() { return kmcl::ReadAll(*reader_); }

  static std::string Payload(const IncomingPacket& in) {
    return std::string(in.payload.begin(), in.payload.end());
  }

  SendPath::Gate gate_{.open = true, .pipe = false};
  int finished_hooks_ = 0;
  CountingEndpoint self_, peer_;
  std::shared_ptr<RingLink> link_ = std::make_shared<RingLink>();
  SendPath send_;
  std::unique_ptr<DoubleMappedRing> ring_;
  std::unique_ptr<RingReader> reader_;
  std::vector<std::unique_ptr<TestPacket>> packets_;
};

TEST_F(SendPathTest, QueuesUntilAttachedThenWritesInOrderAndSignalsThePeer) {
  TestPacket& a = NewPacket();
  TestPacket& b = NewPacket();
  EXPECT_EQ(send_.Queue(*a.packet, Bytes("first"), {}, 0, false), kStatusSuccess);
  EXPECT_EQ(send_.Queue(*b.packet, Bytes("second"), {}, 0, false), kStatusSuccess);
  EXPECT_TRUE(a.packet->in_flight());
  EXPECT_EQ(send_.TakeSnapshot().queued, 2u);
  EXPECT_EQ(send_.counters().sends_queued, 2u);
  EXPECT_EQ(peer_.interrupts, 0);

  AttachRing();
  send_.Flush();
  std::vector<IncomingPacket> got = ReadAll();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(Payload(got[0]).substr(0, 5), "first");
  EXPECT_EQ(Payload(got[1]).substr(0, 6), "second");
  EXPECT_FALSE(got[0].completion_requested());
  EXPECT_EQ(send_.TakeSnapshot().queued, 0u);
  EXPECT_EQ(send_.counters().packets_sent, 2u);
  EXPECT_EQ(peer_.interrupts, 1) << "the ring was empty: one interrupt";
  EXPECT_EQ(self_.interrupts, 0);

  // Written without a transaction: they end, but only on RunFinished.
  EXPECT_GE(finished_hooks_, 1);
  EXPECT_TRUE(a.ended.empty());
  send_.RunFinished();
  EXPECT_EQ(a.ended, std::vector<NTSTATUS>{kStatusSuccess});
  EXPECT_EQ(b.ended, std::vector<NTSTATUS>{kStatusSuccess});
  EXPECT_FALSE(a.packet->in_flight());
}

TEST_F(SendPathTest, AClosedGateRefusesAndQueuesNothing) {
  gate_.open = false;
  TestPacket& a = NewPacket();
  EXPECT_EQ(send_.Queue(*a.packet, Bytes("x"), {}, 0, false), kStatusDeviceRemoved);
  EXPECT_FALSE(a.packet->in_flight());
  EXPECT_EQ(send_.TakeSnapshot().queued, 0u);
}

TEST_F(SendPathTest, PipeFramingPrecedesThePayload) {
  gate_.pipe = true;
  AttachRing();
  TestPacket& a = NewPacket();
  ASSERT_EQ(send_.Queue(*a.packet, Bytes("abc"), {}, 0, false), kStatusSuccess);
  std::vector<IncomingPacket> got = ReadAll();
  ASSERT_EQ(got.size(), 1u);
  ASSERT_GE(got[0].payload.size(), sizeof(wire::PipeHeader) + 3);
  wire::PipeHeader h;
  std::memcpy(&h, got[0].payload.data(), sizeof(h));
  EXPECT_EQ(h.packet_type, static_cast<uint32_t>(wire::PipePacketType::kData));
  EXPECT_EQ(h.data_size, 3u);
  EXPECT_EQ(Payload(got[0]).substr(sizeof(h), 3), "abc");
}

TEST_F(SendPathTest, ATransactionEndsWithThePeersCompletionOnce) {
  AttachRing();
  TestPacket& a = NewPacket();
  ASSERT_EQ(send_.Queue(*a.packet, Bytes("req"), {}, kFormatFlagWaitForCompletion, false),
            kStatusSuccess);
  std::vector<IncomingPacket> got = ReadAll();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].completion_requested());
  const uint64_t tid = got[0].transaction_id;
  EXPECT_EQ(tid, PacketTestAccess::transaction_id(*a.packet));
  EXPECT_EQ(send_.TakeSnapshot().outstanding_count, 1u);
  send_.RunFinished();
  EXPECT_TRUE(a.ended.empty()) << "waits for the peer";

  absl::Time sent;
  Packet* p = send_.TakeOutstanding(tid, &sent);
  ASSERT_EQ(p, a.packet.get());
  EXPECT_LE(sent, absl::Now());
  EXPECT_EQ(send_.TakeOutstanding(tid, nullptr), nullptr) << "a second completion is unknown";
  EXPECT_EQ(send_.TakeOutstanding(tid + 1, nullptr), nullptr);
  SendPath::Complete(*p, kStatusSuccess, Bytes("done"));
  EXPECT_EQ(a.ended, std::vector<NTSTATUS>{kStatusSuccess});
  EXPECT_EQ(a.completion, "done");
  EXPECT_EQ(send_.TakeSnapshot().outstanding_count, 0u);
}

TEST_F(SendPathTest, MustFitNowRefusesWithoutQueueing) {
  TestPacket& a = NewPacket();
  EXPECT_EQ(send_.Queue(*a.packet, Bytes("x"), {}, 0, /*must_fit_now=*/true), kStatusBufferOverflow)
      << "no ring yet";
  EXPECT_FALSE(a.packet->in_flight());
  AttachRing();
  // Fill the ring (one 4 KiB page) so that 1 KiB no longer fits.
  const std::string kilobyte(1024, 'k');
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(send_.Queue(*NewPacket().packet, Bytes(kilobyte), {}, 0, true), kStatusSuccess) << i;
  }
  TestPacket& late = NewPacket();
  EXPECT_EQ(send_.Queue(*late.packet, Bytes(kilobyte), {}, 0, true), kStatusBufferOverflow);
  EXPECT_FALSE(late.packet->in_flight());
  EXPECT_EQ(send_.TakeSnapshot().queued, 0u);
}

TEST_F(SendPathTest, APacketThatCanNeverFitFailsAndDoesNotBlockTheQueue) {
  AttachRing();
  TestPacket& big = NewPacket();
  TestPacket& small = NewPacket();
  const std::string too_big(5000, 'b');
  ASSERT_EQ(send_.Queue(*big.packet, Bytes(too_big), {}, kFormatFlagWaitForCompletion, false),
            kStatusSuccess);
  ASSERT_EQ(send_.Queue(*small.packet, Bytes("s"), {}, 0, false), kStatusSuccess);
  send_.RunFinished();
  EXPECT_EQ(big.ended, std::vector<NTSTATUS>{kStatusInvalidParameter});
  EXPECT_EQ(small.ended, std::vector<NTSTATUS>{kStatusSuccess});
  EXPECT_EQ(send_.TakeSnapshot().outstanding_count, 0u);
  EXPECT_EQ(ReadAll().size(), 1u);
}

TEST_F(SendPathTest, ARingFullOfUnreadPacketsHoldsTheRestUntilTheReaderFreesRoom) {
  AttachRing();
  const std::string kilobyte(1024, 'k');
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(send_.Queue(*NewPacket().packet, Bytes(kilobyte), {}, 0, false), kStatusSuccess);
  }
  EXPECT_EQ(send_.TakeSnapshot().queued, 2u);
  EXPECT_GE(send_.counters().ring_full_events, 1u);
  EXPECT_EQ(ReadAll().size(), 3u);
  send_.Flush();
  EXPECT_EQ(ReadAll().size(), 2u);
  EXPECT_EQ(send_.TakeSnapshot().queued, 0u);
}

TEST_F(SendPathTest, CompletionsForIncomingTransactionsGoOutInOrder) {
  AttachRing();
  send_.QueueCompletion(7, Bytes("seven"));
  send_.QueueCompletion(8, Bytes("eight"));
  EXPECT_TRUE(ReadAll().empty()) << "queued, not flushed";
  send_.Flush();
  std::vector<IncomingPacket> got = ReadAll();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].type, wire::PacketType::kCompletion);
  EXPECT_EQ(got[0].transaction_id, 7u);
  EXPECT_EQ(Payload(got[1]).substr(0, 5), "eight");
  EXPECT_EQ(send_.counters().completions_sent, 2u);
}

TEST_F(SendPathTest, CancelAllEndsQueuedOutstandingAndFinishedSends) {
  AttachRing();
  TestPacket& written = NewPacket();     // finished, routine not run yet
  TestPacket& waiting = NewPacket();     // outstanding
  ASSERT_EQ(send_.Queue(*written.packet, Bytes("w"), {}, 0, false), kStatusSuccess);
  ASSERT_EQ(send_.Queue(*waiting.packet, Bytes("t"), {}, kFormatFlagWaitForCompletion, false),
            kStatusSuccess);
  send_.Detach();
  TestPacket& queued = NewPacket();
  ASSERT_EQ(send_.Queue(*queued.packet, Bytes("q"), {}, 0, false), kStatusSuccess);
  send_.CancelAll(kStatusCancelled);
  EXPECT_EQ(written.ended, std::vector<NTSTATUS>{kStatusSuccess});
  EXPECT_EQ(waiting.ended, std::vector<NTSTATUS>{kStatusCancelled});
  EXPECT_EQ(queued.ended, std::vector<NTSTATUS>{kStatusCancelled});
  SendPath::Snapshot s = send_.TakeSnapshot();
  EXPECT_EQ(s.queued, 0u);
  EXPECT_EQ(s.outstanding_count, 0u);
  EXPECT_FALSE(s.ring.has_value());
}

TEST_F(SendPathTest, FrozenWritesNothingAndHandsItsSendsOverSilently) {
  AttachRing();
  send_.Freeze();
  TestPacket& a = NewPacket();
  TestPacket& b = NewPacket();
  ASSERT_EQ(send_.Queue(*a.packet, Bytes("a"), {}, kFormatFlagWaitForCompletion, false),
            kStatusSuccess);
  ASSERT_EQ(send_.Queue(*b.packet, Bytes("b"), {}, 0, false), kStatusSuccess);
  EXPECT_TRUE(ReadAll().empty());
  send_.QueueCompletion(9, Bytes("c"));
  SendPath::Saved saved = send_.Save();
  ASSERT_EQ(saved.packets.size(), 2u);
  EXPECT_EQ(saved.packets[0].first, a.packet.get());
  EXPECT_FALSE(saved.packets[0].second) << "queued, not sent";
  EXPECT_EQ(saved.packets[1].first, b.packet.get());
  ASSERT_EQ(saved.completions.size(), 1u);
  EXPECT_EQ(saved.completions[0].first, 9u);
  EXPECT_EQ(saved.next_transaction_id, PacketTestAccess::transaction_id(*a.packet) + 1);

  send_.CancelAll(kStatusCancelled);
  EXPECT_TRUE(a.ended.empty());
  EXPECT_TRUE(b.ended.empty());
  EXPECT_FALSE(a.packet->in_flight());
}

TEST_F(SendPathTest, ThawWritesWhatWasQueuedWhileFrozen) {
  AttachRing();
  send_.Freeze();
  ASSERT_EQ(send_.Queue(*NewPacket().packet, Bytes("later"), {}, 0, false), kStatusSuccess);
  EXPECT_TRUE(ReadAll().empty());
  send_.Thaw();
  EXPECT_FALSE(send_.frozen());
  EXPECT_EQ(ReadAll().size(), 1u);
}

TEST_F(SendPathTest, SentTransactionsAreSavedBeforeQueuedOnesAndRestoreBack) {
  AttachRing();
  TestPacket& sent = NewPacket();
  ASSERT_EQ(send_.Queue(*sent.packet, Bytes("s"), {}, kFormatFlagWaitForCompletion, false),
            kStatusSuccess);
  send_.Detach();
  TestPacket& queued = NewPacket();
  ASSERT_EQ(send_.Queue(*queued.packet, Bytes("q"), {}, kFormatFlagWaitForCompletion, false),
            kStatusSuccess);
  send_.Freeze();
  SendPath::Saved saved = send_.Save();
  ASSERT_EQ(saved.packets.size(), 2u);
  EXPECT_EQ(saved.packets[0], std::make_pair(sent.packet.get(), true));
  EXPECT_EQ(saved.packets[1], std::make_pair(queued.packet.get(), false));
  send_.CancelAll(kStatusCancelled);

  // Into a fresh path, as Channel::Restore does.
  SendPath restored(&self_, {.gate = [this] { return gate_; }, .finished = [] {}});
  restored.RestoreNextTransactionId(saved.next_transaction_id);
  ASSERT_TRUE(restored.Restore(*sent.packet, true).ok());
  ASSERT_TRUE(restored.Restore(*queued.packet, false).ok());
  SendPath::Snapshot s = restored.TakeSnapshot();
  EXPECT_EQ(s.outstanding_count, 2u);
  EXPECT_EQ(s.queued, 1u);
  EXPECT_EQ(restored.Restore(*sent.packet, true).code(), absl::StatusCode::kInvalidArgument)
      << "its id is a restored transaction's already";
  // New transactions start after the restored ones.
  TestPacket& next = NewPacket();
  ASSERT_EQ(restored.Queue(*next.packet, Bytes("n"), {}, kFormatFlagWaitForCompletion, false),
            kStatusSuccess);
  EXPECT_GT(PacketTestAccess::transaction_id(*next.packet),
            PacketTestAccess::transaction_id(*queued.packet));
  restored.CancelAll(kStatusCancelled);
}

TEST_F(SendPathTest, ReclaimTakesBackAQueuedOrOutstandingSendOnly) {
  TestPacket& queued = NewPacket();
  ASSERT_EQ(send_.Queue(*queued.packet, Bytes("q"), {}, kFormatFlagWaitForCompletion, false),
            kStatusSuccess);
  EXPECT_TRUE(send_.Reclaim(*queued.packet));
  EXPECT_FALSE(send_.Reclaim(*queued.packet));
  SendPath::Snapshot s = send_.TakeSnapshot();
  EXPECT_EQ(s.queued, 0u);
  EXPECT_EQ(s.outstanding_count, 0u);

  AttachRing();
  TestPacket& sent = NewPacket();
  ASSERT_EQ(send_.Queue(*sent.packet, Bytes("s"), {}, kFormatFlagWaitForCompletion, false),
            kStatusSuccess);
  EXPECT_TRUE(send_.Reclaim(*sent.packet)) << "outstanding";
  EXPECT_EQ(send_.TakeOutstanding(PacketTestAccess::transaction_id(*sent.packet), nullptr),
            nullptr);
}

}  // namespace
}  // namespace kmcl
