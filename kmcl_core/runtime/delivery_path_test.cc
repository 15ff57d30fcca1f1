// The delivery path on its own, over a fake link: the peer writes the
// incoming ring (a double-mapped ring of the test's memory) with a
// RingWriter or by hand, completions go out through a SendPath on a second
// ring read back with a RingReader, and the peer endpoint of the RingLink
// only counts interrupts. No partition, no channel, no threads.
#include "kmcl_core/runtime/delivery_path.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kmcl_core/bus/partition.h"
#include "kmcl_core/ring/ring_mapping.h"
#include "kmcl_core/runtime/channel.h"
#include "kmcl_core/runtime/fake_link_test_util.h"
#include "kmcl_core/wire/pipe_framing.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl {
namespace {

class DeliveryPathTest : public ::testing::Test {
 protected:
  DeliveryPathTest()
      : send_(&self_, {.gate = [] { return SendPath::Gate{.open = true}; }, .finished = [] {}}) {
    link_->Attach(&self_, EndpointRole::kHost);
    link_->Attach(&peer_, EndpointRole::kGuest);
    out_ring_ = std::make_unique<DoubleMappedRing>(*DoubleMappedRing::Create(1));
    out_reader_ = std::make_unique<RingReader>(out_ring_->memory());
    send_.Attach(out_ring_->memory(), link_);
    in_ring_ = std::make_unique<DoubleMappedRing>(*DoubleMappedRing::Create(1));
    peer_writer_ = std::make_unique<RingWriter>(in_ring_->memory());
    path_ = MakePath();
  }

  std::unique_ptr<DeliveryPath> MakePath() {
    return std::make_unique<DeliveryPath>(
        nullptr, &send_,
        DeliveryPath::Hooks{
            .process_packet =
                [this](Delivery& d, std::span<const uint8_t> data, uint32_t flags) {
                  got_.push_back(std::string(data.begin(), data.end()));
                  handed_.push_back(&d);
                  flags_.push_back(flags);
                  mask_seen_.push_back(in_control()->interrupt_mask);
                  read_index_seen_.push_back(in_control()->read_index);
                  if (on_packet_) on_packet_(d);
                },
            .processing_complete = [this](uint32_t n) { batches_.push_back(n); },
            .defer = [this](Delivery& d) { deferred_.push_back(&d); },
            .retired = [this] { ++retired_; },
            .drained = [this] { ++drained_; },
        });
  }

  wire::RingControl* in_control() const { return in_ring_->memory().control(); }

  // The peer writes a data packet and publishes it.
  void PeerSends(const std::string& payload, uint64_t transaction_id = 0,
                 bool completion_requested = false) {
    OutgoingPacket p;
    p.payload = Bytes(payload);
    p.transaction_id = transaction_id;
    p.completion_requested = completion_requested;
    ASSERT_EQ(peer_writer_->Write(p), RingStatus::kOk);
    peer_writer_->CommitWrite();
  }
  void PeerCompletes(uint64_t transaction_id, const std::string& payload) {
    OutgoingPacket p;
    p.type = wire::PacketType::kCompletion;
    p.transaction_id = transaction_id;
    p.payload = Bytes(payload);
    ASSERT_EQ(peer_writer_->Write(p), RingStatus::kOk);
    peer_writer_->CommitWrite();
  }
  // A pipe frame of type `type` claiming `claimed` bytes around `data`.
  static std::string PipeFrameBytes(uint32_t type, uint32_t claimed, const std::string& data) {
    wire::PipeHeader h{type, claimed};
    std::string out(reinterpret_cast<const char*>(&h), sizeof(h));
    return out + data;
  }

  // Every packet this side sent (completions), consumed.
  std::vector<IncomingPacket> SentByUs() { return ReadAll(*out_reader_); }

  void AttachAndStart(DeliveryPath::Settings settings = {}) {
    path_->Attach(in_ring_->memory(), settings);
    path_->Start();
  }

  CountingEndpoint self_, peer_;
  std::shared_ptr<RingLink> link_ = std::make_shared<RingLink>();
  SendPath send_;
  std::unique_ptr<DoubleMappedRing> out_ring_, in_ring_;
  std::unique_ptr<RingReader> out_reader_;
  std::unique_ptr<RingWriter> peer_writer_;
  std::unique_ptr<DeliveryPath> path_;
  // What the hooks saw.
  std::vector<std::string> got_;
  std::vector<Delivery*> handed_;
  std::vector<uint32_t> flags_, mask_seen_, read_index_seen_, batches_;
  std::vector<Delivery*> deferred_;
  int retired_ = 0, drained_ = 0;
  std::function<void(Delivery&)> on_packet_;
};

// ---- Reading ------------------------------------------------------------------------------

TEST_F(DeliveryPathTest, DeliversInOrderThenProcessingCompleteOnceAndPublishesTheReadIndex) {
  AttachAndStart();
  PeerSends("one");
  PeerSends("two", 5, true);
  PeerSends("three");
  path_->Drain();
  ASSERT_EQ(got_.size(), 3u);
  EXPECT_EQ(got_[0].substr(0, 3), "one");
  EXPECT_EQ(got_[1].substr(0, 3), "two");
  EXPECT_EQ(got_[2].substr(0, 5), "three");
  EXPECT_EQ(flags_, (std::vector<uint32_t>{0, 0, 0}));
  EXPECT_EQ(handed_[1]->transaction_id(), 5u);
  EXPECT_TRUE(handed_[1]->completion_requested());
  EXPECT_FALSE(handed_[0]->completion_requested());
  EXPECT_EQ(batches_, std::vector<uint32_t>{3});
  EXPECT_EQ(drained_, 1);
  EXPECT_EQ(path_->delivered(), 3u) << "handed out, not completed";
  EXPECT_EQ(in_control()->read_index, in_control()->write_index) << "all consumed";
  EXPECT_EQ(path_->counters().packets_received, 3u);
  EXPECT_TRUE(path_->idle());
}

TEST_F(DeliveryPathTest, AWrappedPacketIsDeliveredWhole) {
  AttachAndStart();
  const std::string first(3000, 'a');
  PeerSends(first);
  path_->Drain();
  ASSERT_EQ(got_.size(), 1u);
  ASSERT_TRUE(path_->Complete(*handed_[0], {}, true));
  // 2000 bytes from offset ~3000 of a 4096-byte ring run past its end.
  std::string second(2000, '\0');
  for (size_t i = 0; i < second.size(); ++i) second[i] = static_cast<char>('A' + i % 26);
  const uint32_t start = in_control()->write_index;
  PeerSends(second);
  ASSERT_LT(in_control()->write_index, start) << "the packet wrapped";
  path_->Drain();
  ASSERT_EQ(got_.size(), 2u);
  EXPECT_EQ(got_[1].substr(0, second.size()), second);
  EXPECT_EQ(in_control()->read_index, in_control()->write_index);
}

TEST_F(DeliveryPathTest, NothingFlowsBeforeStartAfterStopOrWithoutARing) {
  PeerSends("early");
  path_->Start();
  path_->Drain();  // not attached
  EXPECT_TRUE(got_.empty());
  path_->Stop();
  path_->Attach(in_ring_->memory(), {});
  path_->Drain();  // attached, incoming off
  EXPECT_TRUE(got_.empty());
  EXPECT_EQ(in_control()->read_index, 0u) << "the ring is not touched";
  EXPECT_EQ(drained_, 0);
  path_->Start();
  path_->Drain();
  EXPECT_EQ(got_.size(), 1u);
  // Stopped from inside a ProcessPacket: the rest waits for Start.
  on_packet_ = [this](Delivery&) { path_->Stop(); };
  PeerSends("a");
  PeerSends("b");
  path_->Drain();
  EXPECT_EQ(got_.size(), 2u);
  on_packet_ = nullptr;
  path_->Drain();
  EXPECT_EQ(got_.size(), 2u);
  path_->Start();
  path_->Drain();
  EXPECT_EQ(got_.size(), 3u);
  path_->Detach();
  PeerSends("c");
  path_->Drain();
  EXPECT_EQ(got_.size(), 3u) << "detached";
  EXPECT_FALSE(path_->TakeSnapshot().ring.has_value());
}

TEST_F(DeliveryPathTest, TheReadIndexIsPublishedEverySixteenPacketsDuringADrain) {
  AttachAndStart();
  for (int i = 0; i < 20; ++i) PeerSends("p");
  path_->Drain();
  ASSERT_EQ(read_index_seen_.size(), 20u);
  // Each packet takes 32 bytes (descriptor, 8 bytes of payload, trailer).
  EXPECT_EQ(read_index_seen_[14], 0u) << "nothing published before the 16th";
  EXPECT_EQ(read_index_seen_[15], 16u * 32) << "the 16th is copied out, then all 16 published";
  EXPECT_EQ(read_index_seen_[19], 16u * 32);
  EXPECT_EQ(in_control()->read_index, 20u * 32) << "the rest at the end of the drain";
}

// ---- The incoming ring's flags ------------------------------------------------------------

TEST_F(DeliveryPathTest, TheInterruptMaskIsSetWhileDrainingAndClearAfter) {
  AttachAndStart();
  PeerSends("x");
  EXPECT_EQ(in_control()->interrupt_mask, 0u);
  path_->Drain();
  ASSERT_EQ(mask_seen_.size(), 1u);
  EXPECT_NE(mask_seen_[0], 0u) << "the peer need not signal while we drain";
  EXPECT_EQ(in_control()->interrupt_mask, 0u) << "clear again: the next packet interrupts";
}

TEST_F(DeliveryPathTest, APeerWaitingForRoomIsInterruptedOnceItHasIt) {
  AttachAndStart();
  const std::string kilobyte(1024, 'k');
  int written = 0;
  OutgoingPacket p;
  p.payload = Bytes(kilobyte);
  while (peer_writer_->Write(p) == RingStatus::kOk) ++written;
  peer_writer_->CommitWrite();
  ASSERT_GE(written, 2);
  // The ring is full: the peer asks for a signal once its packet fits.
  ASSERT_FALSE(peer_writer_->ArmPendingSend(peer_writer_->bytes_needed()));
  EXPECT_NE(in_control()->pending_send_sz, 0u);
  path_->Drain();
  EXPECT_EQ(got_.size(), static_cast<size_t>(written));
  EXPECT_EQ(peer_.interrupts, 1) << "room crossed pending_send_sz";
  EXPECT_EQ(self_.interrupts, 0);

  // Without a pending send the drain does not interrupt.
  peer_writer_->ClearPendingSend();
  PeerSends("quiet");
  path_->Drain();
  EXPECT_EQ(peer_.interrupts, 1);
}

// ---- Quota --------------------------------------------------------------------------------

TEST_F(DeliveryPathTest, TheQuotaStallsTheQueueUntilACompletionFreesASlot) {
  AttachAndStart();
  path_->SetQuota(2);
  PeerSends("1");
  PeerSends("2");
  PeerSends("3");
  path_->Drain();
  ASSERT_EQ(got_.size(), 2u);
  EXPECT_EQ(path_->counters().quota_stalls, 1u);
  EXPECT_NE(in_control()->read_index, in_control()->write_index) << "the third stays in the ring";
  EXPECT_EQ(path_->TakeSnapshot().delivered, 2u);
  path_->Drain();
  EXPECT_EQ(got_.size(), 2u) << "still stalled";
  EXPECT_EQ(path_->counters().quota_stalls, 2u);

  ASSERT_TRUE(path_->Complete(*handed_[0], {}, true));
  EXPECT_EQ(retired_, 1) << "the channel is told to drain again";
  EXPECT_EQ(path_->delivered(), 1u);
  path_->Drain();
  ASSERT_EQ(got_.size(), 3u);
  EXPECT_EQ(got_[2].substr(0, 1), "3");
  EXPECT_EQ(in_control()->read_index, in_control()->write_index);
}

// ---- Completing ---------------------------------------------------------------------------

TEST_F(DeliveryPathTest, CompleteSendsACompletionOnlyWhenAskedAndOnlyOnce) {
  AttachAndStart();
  PeerSends("req", 42, true);
  PeerSends("dgram", 0, false);
  PeerSends("req2", 43, true);
  path_->Drain();
  ASSERT_EQ(handed_.size(), 3u);
  ASSERT_TRUE(path_->Complete(*handed_[0], Bytes("reply"), /*send_completion=*/true));
  EXPECT_FALSE(path_->Complete(*handed_[0], Bytes("again"), true)) << "completed twice";
  ASSERT_TRUE(path_->Complete(*handed_[1], Bytes("ignored"), true));
  ASSERT_TRUE(path_->Complete(*handed_[2], Bytes("late"), /*send_completion=*/false));
  std::vector<IncomingPacket> sent = SentByUs();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].type, wire::PacketType::kCompletion);
  EXPECT_EQ(sent[0].transaction_id, 42u);
  EXPECT_EQ(std::string(sent[0].payload.begin(), sent[0].payload.begin() + 5), "reply");
  EXPECT_EQ(retired_, 3);
  EXPECT_EQ(path_->delivered(), 0u);
}

TEST_F(DeliveryPathTest, ADeliveryIsReusedOnlyOnceRetiredAndProcessPacketReturned) {
  AttachAndStart();
  // The first is completed inside its ProcessPacket; the second is kept.
  on_packet_ = [this](Delivery& d) {
    if (handed_.size() == 1) path_->Complete(d, {}, true);
  };
  PeerSends("1");
  PeerSends("2");
  PeerSends("3");
  path_->Drain();
  ASSERT_EQ(handed_.size(), 3u);
  EXPECT_EQ(handed_[1], handed_[0]) << "freed when its ProcessPacket returned";
  EXPECT_NE(handed_[2], handed_[1]) << "the second is still out";
  EXPECT_EQ(path_->delivered(), 2u);
}

TEST_F(DeliveryPathTest, FailRetiresAndStopsTheQueueUntilStart) {
  AttachAndStart();
  PeerSends("bad", 9, /*completion_requested=*/true);
  path_->Drain();
  ASSERT_EQ(handed_.size(), 1u);
  ASSERT_TRUE(path_->Fail(*handed_[0]));
  EXPECT_FALSE(path_->Fail(*handed_[0]));
  EXPECT_FALSE(path_->Complete(*handed_[0], {}, true));
  EXPECT_EQ(path_->delivered(), 0u);
  PeerSends("next");
  path_->Drain();
  EXPECT_EQ(got_.size(), 1u) << "stopped";
  path_->Start();
  path_->Drain();
  EXPECT_EQ(got_.size(), 2u);
  EXPECT_TRUE(SentByUs().empty());
}

TEST_F(DeliveryPathTest, ThePeersCompletionsEndOurTransactions) {
  AttachAndStart();
  std::vector<uint8_t> storage(256);
  std::unique_ptr<Packet> packet = PacketTestAccess::Make(storage);
  std::vector<std::string> ended;
  packet->set_completion_routine([&](Packet&, NTSTATUS s, std::span<const uint8_t> c) {
    ended.push_back(std::to_string(s) + ":" + std::string(c.begin(), c.begin() + 4));
  });
  ASSERT_EQ(send_.Queue(*packet, Bytes("ask"), {}, kFormatFlagWaitForCompletion, false),
            kStatusSuccess);
  const uint64_t tid = PacketTestAccess::transaction_id(*packet);
  PeerCompletes(tid + 100, "nope");  // nothing outstanding: dropped
  PeerCompletes(tid, "done");
  path_->Drain();
  EXPECT_TRUE(got_.empty()) << "completions are not deliveries";
  EXPECT_TRUE(batches_.empty());
  EXPECT_EQ(ended, std::vector<std::string>{"0:done"});
  EXPECT_EQ(path_->counters().completions_received, 2u);
  uint64_t latencies = 0;
  for (const auto& b : path_->counters().latency_buckets) latencies += b;
  EXPECT_EQ(latencies, 1u);
  EXPECT_EQ(send_.TakeSnapshot().outstanding_count, 0u);
}

// ---- Passive level ------------------------------------------------------------------------

TEST_F(DeliveryPathTest, AtPassiveEveryPacketIsDeferredAndDeliveredLater) {
  AttachAndStart();
  path_->SetAtPassive(true);
  PeerSends("slow");
  path_->Drain();
  EXPECT_TRUE(got_.empty());
  ASSERT_EQ(deferred_.size(), 1u);
  EXPECT_EQ(batches_, std::vector<uint32_t>{1});
  EXPECT_EQ(path_->delivered(), 1u);
  absl::Status defer_again;
  on_packet_ = [&](Delivery& d) { defer_again = path_->Defer(d); };
  path_->Deliver(*deferred_[0]);  // as the control task does
  ASSERT_EQ(got_.size(), 1u);
  EXPECT_EQ(defer_again.code(), absl::StatusCode::kFailedPrecondition) << "already at passive";
  EXPECT_EQ(deferred_.size(), 1u);
}

TEST_F(DeliveryPathTest, DeferInsideProcessPacketRedeliversAtPassiveOnce) {
  AttachAndStart();
  on_packet_ = [this](Delivery& d) {
    if (got_.size() == 1) {
      EXPECT_TRUE(path_->Defer(d).ok());
    }
  };
  PeerSends("later");
  path_->Drain();
  ASSERT_EQ(deferred_.size(), 1u);
  EXPECT_EQ(deferred_[0], handed_[0]);
  EXPECT_EQ(path_->Defer(*handed_[0]).code(), absl::StatusCode::kFailedPrecondition)
      << "outside ProcessPacket";
  path_->Deliver(*deferred_[0]);
  EXPECT_EQ(got_.size(), 2u);
  EXPECT_EQ(deferred_.size(), 1u);
  EXPECT_TRUE(path_->Complete(*handed_[1], {}, true));
  EXPECT_EQ(path_->delivered(), 0u);
}

// ---- Save and restore ---------------------------------------------------------------------

TEST_F(DeliveryPathTest, UncompletedDeliveriesAreSavedAndRedeliveredFirstAfterRestore) {
  AttachAndStart();
  PeerSends("done", 1, true);
  PeerSends("open", 2, true);
  path_->Drain();
  ASSERT_EQ(handed_.size(), 2u);
  ASSERT_TRUE(path_->Complete(*handed_[0], {}, true));
  ASSERT_EQ(SentByUs().size(), 1u);
  std::vector<DeliveryPath::SavedDelivery> saved = path_->Save();
  ASSERT_EQ(saved.size(), 1u);
  EXPECT_EQ(saved[0].transaction_id, 2u);
  EXPECT_TRUE(saved[0].completion_requested);
  EXPECT_EQ(std::string(saved[0].payload.begin(), saved[0].payload.begin() + 4), "open");

  // A fresh path (the restored channel's), on the same ring.
  path_ = MakePath();
  got_.clear();
  handed_.clear();
  batches_.clear();
  path_->SetQuota(1);
  path_->Restore(saved, /*context_bytes=*/16);
  EXPECT_EQ(path_->delivered(), 1u);
  path_->Attach(in_ring_->memory(), {});
  path_->Drain();
  EXPECT_TRUE(got_.empty()) << "not before Start";
  PeerSends("new", 3, true);
  path_->Start();
  path_->Drain();
  ASSERT_EQ(got_.size(), 1u) << "the quota (1) is full with the redelivery";
  EXPECT_EQ(got_[0].substr(0, 4), "open");
  EXPECT_EQ(handed_[0]->transaction_id(), 2u);
  EXPECT_EQ(handed_[0]->client_context().size(), 16u);
  EXPECT_EQ(batches_, std::vector<uint32_t>{1});
  EXPECT_EQ(path_->Save().size(), 1u);
  ASSERT_TRUE(path_->Complete(*handed_[0], Bytes("ok"), true));
  path_->Drain();
  ASSERT_EQ(got_.size(), 2u);
  EXPECT_EQ(got_[1].substr(0, 3), "new");
  std::vector<IncomingPacket> sent = SentByUs();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].transaction_id, 2u) << "the restored delivery's completion";
}

TEST_F(DeliveryPathTest, RedeliveryIgnoresTheQuotaAndDropRestoredForgetsThem) {
  std::vector<DeliveryPath::SavedDelivery> saved = {{7, {'a'}, {}, true}, {8, {'b'}, {}, false}};
  path_->SetQuota(1);
  path_->Restore(saved, 0);
  AttachAndStart();
  path_->Drain();
  EXPECT_EQ(got_, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(path_->delivered(), 2u);

  auto other = MakePath();
  other->Restore(saved, 0);
  EXPECT_EQ(other->Save().size(), 2u) << "restored, not yet handed out";
  other->DropRestored();
  EXPECT_EQ(other->delivered(), 0u);
  EXPECT_TRUE(other->Save().empty());
  other->Attach(in_ring_->memory(), {});
  other->Start();
  other->Drain();
  EXPECT_EQ(got_.size(), 2u);
}

// ---- A hostile peer -----------------------------------------------------------------------

class CorruptRingTest : public DeliveryPathTest {
 protected:
  // Something this side has going on that corruption must not touch: a
  // transaction waiting for the peer.
  void SetUp() override {
    packet_ = PacketTestAccess::Make(storage_);
    packet_->set_completion_routine([this](Packet&, NTSTATUS, std::span<const uint8_t>) {
      ++ended_;
    });
    ASSERT_EQ(send_.Queue(*packet_, Bytes("t"), {}, kFormatFlagWaitForCompletion, false),
              kStatusSuccess);
    SentByUs();
    interrupts_before_ = peer_.interrupts;
    AttachAndStart();
  }
  // The peer's raw bytes at the start of the ring and its write_index.
  void PeerWritesRaw(const wire::PacketDescriptor& desc, uint32_t write_index) {
    std::memcpy(in_ring_->memory().data(), &desc, sizeof(desc));
    in_control()->write_index = write_index;
  }
  void ExpectReportedOnceAndNothingElseChanged(const std::string& what) {
    path_->Drain();
    EXPECT_TRUE(got_.empty());
    std::vector<std::string> errors = path_->TakePeerErrors();
    ASSERT_EQ(errors.size(), 1u);
    EXPECT_NE(errors[0].find("incoming ring: "), std::string::npos) << errors[0];
    EXPECT_NE(errors[0].find(what), std::string::npos) << errors[0];
    EXPECT_EQ(path_->counters().corrupt_packets, 1u);
    EXPECT_FALSE(path_->TakeSnapshot().corruption.empty());
    EXPECT_TRUE(path_->idle());
    EXPECT_EQ(path_->delivered(), 0u);
    // Stopped: another drain reads nothing and reports nothing more.
    path_->Drain();
    EXPECT_TRUE(path_->TakePeerErrors().empty());
    EXPECT_EQ(path_->counters().corrupt_packets, 1u);
    // The outgoing side is as it was.
    EXPECT_EQ(send_.TakeSnapshot().outstanding_count, 1u);
    EXPECT_EQ(ended_, 0);
    EXPECT_TRUE(SentByUs().empty());
    EXPECT_EQ(peer_.interrupts, interrupts_before_);
    // Enable forgets it.
    path_->ClearErrors();
    EXPECT_TRUE(path_->TakeSnapshot().corruption.empty());
  }

  std::vector<uint8_t> storage_ = std::vector<uint8_t>(256);
  std::unique_ptr<Packet> packet_;
  int ended_ = 0;
  int interrupts_before_ = 0;
};

TEST_F(CorruptRingTest, ABadPacketHeaderIsReportedOnce) {
  PeerWritesRaw({static_cast<uint16_t>(wire::PacketType::kDataInBand), /*offset8=*/1,
                 /*len8=*/3, 0, 0},
                32);
  ExpectReportedOnceAndNothingElseChanged("offset8 1");
}

TEST_F(CorruptRingTest, ALengthPastTheRingIsReportedOnce) {
  PeerWritesRaw({static_cast<uint16_t>(wire::PacketType::kDataInBand), 2, /*len8=*/0xFFFF, 0, 0},
                64);
  ExpectReportedOnceAndNothingElseChanged("were written");
}

TEST_F(CorruptRingTest, AWriteIndexOutsideTheRingIsReportedOnce) {
  in_control()->write_index = 4096 + 8;
  ExpectReportedOnceAndNothingElseChanged("write_index");
}

// Unlike VmbChannelPacketFail, a pause and a Start do not bring a broken
// ring back: it would be read, and reported, again on every drain.
TEST_F(CorruptRingTest, StartDoesNotResumeACorruptRing) {
  in_control()->write_index = 4096 + 8;
  path_->Drain();
  ASSERT_EQ(path_->TakePeerErrors().size(), 1u);
  path_->Stop();
  path_->Start();
  path_->Drain();
  EXPECT_TRUE(path_->TakePeerErrors().empty()) << "reported again after Start";
}

TEST_F(CorruptRingTest, GoodPacketsBeforeTheCorruptOneAreDelivered) {
  PeerSends("fine");
  // Then a descriptor of an unknown type right after it.
  const uint32_t at = in_control()->write_index;
  wire::PacketDescriptor bad{0x77, 2, 3, 0, 0};
  std::memcpy(in_ring_->memory().data() + at, &bad, sizeof(bad));
  in_control()->write_index = at + 32;
  path_->Drain();
  ASSERT_EQ(got_.size(), 1u);
  EXPECT_EQ(got_[0].substr(0, 4), "fine");
  std::vector<std::string> errors = path_->TakePeerErrors();
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].find("unsupported type"), std::string::npos) << errors[0];
  EXPECT_EQ(path_->delivered(), 1u);
}

TEST_F(DeliveryPathTest, AMalformedPipeFrameIsDroppedAndReportedAndTheQueueGoesOn) {
  AttachAndStart({.pipe = true, .context_bytes = 0});
  const uint32_t data = static_cast<uint32_t>(wire::PipePacketType::kData);
  PeerSends(PipeFrameBytes(data, 100, "short"));  // claims more than it has
  PeerSends(PipeFrameBytes(data, 5, "hello"));
  PeerSends(PipeFrameBytes(0x99, 2, "hi"));  // unknown type
  PeerSends("no");                           // shorter than a header
  PeerSends(PipeFrameBytes(data, 3, "end"));
  path_->Drain();
  EXPECT_EQ(got_, (std::vector<std::string>{"hello", "end"})) << "the header is stripped";
  std::vector<std::string> errors = path_->TakePeerErrors();
  ASSERT_EQ(errors.size(), 3u);
  for (const std::string& e : errors) EXPECT_EQ(e.rfind("pipe frame: ", 0), 0u) << e;
  EXPECT_EQ(path_->counters().corrupt_packets, 3u);
  EXPECT_EQ(path_->counters().packets_received, 2u);
  EXPECT_TRUE(path_->TakeSnapshot().corruption.empty()) << "the ring itself is fine";
  EXPECT_EQ(in_control()->read_index, in_control()->write_index);
  PeerSends(PipeFrameBytes(data, 4, "more"));
  path_->Drain();
  EXPECT_EQ(got_.size(), 3u) << "not stopped";
}

TEST_F(DeliveryPathTest, ASnapshotShowsTheRingWhileAttached) {
  EXPECT_FALSE(path_->TakeSnapshot().ring.has_value());
  AttachAndStart();
  PeerSends("x");
  DeliveryPath::Snapshot s = path_->TakeSnapshot();
  ASSERT_TRUE(s.ring.has_value());
  EXPECT_EQ(s.ring->write_index, in_control()->write_index);
  EXPECT_GT(s.ring->used_bytes, 0u);
  path_->SetQuota(4);
  EXPECT_EQ(path_->TakeSnapshot().quota, 4u);
  path_->Detach();
  EXPECT_FALSE(path_->TakeSnapshot().ring.has_value());
}

}  // namespace
}  // namespace kmcl
