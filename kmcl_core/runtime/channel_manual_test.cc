// A host and a guest channel on one ManualExecutor: every callback runs on
// the test's thread when the test drives the executor, so the whole life of
// a channel (offer, open, start, packets, completions, close) is checked
// step by step and in one exact order, with no threads to wait for.
#include <atomic>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

#include "gtest/gtest.h"
#include "kmcl_core/bus/partition.h"
#include "kmcl_core/runtime/channel.h"
#include "kmcl_core/runtime/channel_test_util.h"
#include "kmcl_core/runtime/executor.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl {
namespace {

using ::kmcl::testing::kTestInstance;
using ::kmcl::testing::kTestType;
using ::kmcl::testing::Recorder;
using ::kmcl::testing::RecordingCallbacks;

// Ring packets are padded to 8 bytes (docs/ring-format.md): the text
// without its padding.
std::string Text(std::span<const uint8_t> bytes) {
  std::string s(bytes.begin(), bytes.end());
  while (!s.empty() && s.back() == '\0') s.pop_back();
  return s;
}

class ManualChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PartitionOptions o;
    o.memory_bytes = 64 << 20;
    partition_ = *Partition::Create(o);
    host_ = *Channel::Allocate(*partition_, EndpointRole::kHost, ChannelExecutors::Manual(&ex_));
    guest_ = *Channel::Allocate(*partition_, EndpointRole::kGuest, ChannelExecutors::Manual(&ex_));
  }
  void TearDown() override {
    EXPECT_TRUE(guest_->Disable().ok());
    EXPECT_TRUE(host_->Disable().ok());
    EXPECT_EQ(ex_.RunUntilIdle(), 0u) << "work queued after both channels were disabled";
  }

  // Host echoes every packet back as its completion; both record callbacks.
  void Open() {
    ChannelCallbacks host_cb = RecordingCallbacks(rec_, "host");
    host_cb.peer_error = host_cb_.peer_error;
    host_cb.process_packet = [this](Channel& ch, Delivery& d, std::span<const uint8_t> buf,
                                     uint32_t) {
      rec_.Add("host:packet " + Text(buf));
      ch.Complete(d, buf);
    };
    ASSERT_TRUE(host_->SetTargetInterfaceId(kTestType, kTestInstance).ok());
    ASSERT_TRUE(host_->SetCallbacks(host_cb).ok());
    ASSERT_TRUE(guest_->SetTargetPnp(kTestType, std::nullopt).ok());
    ASSERT_TRUE(guest_->SetCallbacks(RecordingCallbacks(rec_, "guest")).ok());

    ASSERT_TRUE(host_->Enable().ok());
    ASSERT_TRUE(host_->Start().ok());
    ASSERT_TRUE(guest_->Enable().ok());
    // Nothing has run on any other thread: the guest has not opened yet.
    EXPECT_TRUE(rec_.Events().empty() || rec_.EventsOf("guest").empty());
    EXPECT_GT(ex_.pending(), 0u);
    ex_.RunUntilIdle();
  }

  // The control page of one of the channel's rings, through the guest's
  // own pages (what a hostile guest can write): the guest-to-host ring's
  // (the guest's outgoing) or the host-to-guest ring's.
  wire::RingControl* GuestRingControl(bool guest_to_host) {
    const ChannelSnapshot g = guest_->Snapshot();
    std::vector<GpadlInfo> gpadls = partition_->gpadls().ListForChannel(g.relid);
    EXPECT_EQ(gpadls.size(), 1u);
    EXPECT_TRUE(g.outgoing.has_value());
    if (gpadls.size() != 1 || !g.outgoing.has_value()) return nullptr;
    const std::vector<uint64_t>& pfns = gpadls[0].ranges.at(0).pfns;
    // [control + outgoing data][control + incoming data], as the guest lays them out.
    const size_t at = guest_to_host ? 0 : 1 + g.outgoing->data_size / wire::kPageSize;
    absl::StatusOr<GuestView> view = partition_->memory().MapPages({&pfns.at(at), 1}, true);
    EXPECT_TRUE(view.ok()) << view.status();
    if (!view.ok()) return nullptr;
    views_.push_back(*std::move(view));
    return reinterpret_cast<wire::RingControl*>(views_.back().data());
  }
  // The host records each peer error with the corrupt counter at that time.
  void RecordHostPeerErrors() {
    ChannelCallbacks cb = host_cb_;
    cb.peer_error = [this](Channel& ch, absl::string_view what) {
      rec_.Add(absl::StrCat("host:peer_error ", ch.Snapshot().stats.corrupt_packets, " ", what));
    };
    host_cb_ = cb;
  }

  ManualExecutor ex_;
  Recorder rec_;
  ChannelCallbacks host_cb_;
  std::vector<GuestView> views_;
  std::unique_ptr<Partition> partition_;
  std::unique_ptr<Channel> host_;
  std::unique_ptr<Channel> guest_;
};

TEST_F(ManualChannelTest, OpensInKmclOrderWhenDriven) {
  Open();
  EXPECT_EQ(rec_.Events(), (std::vector<std::string>{
                               "host:opened", "host:started", "host:post_started",
                               "guest:opened", "guest:started", "guest:post_started"}));
  EXPECT_EQ(host_->connection(), ConnectionState::kOpened);
  EXPECT_EQ(guest_->connection(), ConnectionState::kOpened);
  EXPECT_EQ(ex_.pending(), 0u);
}

TEST_F(ManualChannelTest, APacketAndItsCompletionEachTakeOneDrive) {
  Open();
  std::vector<std::string> completions;
  Packet* p = guest_->AllocatePacket();
  p->set_completion_routine([&](Packet& pk, NTSTATUS status, std::span<const uint8_t> data) {
    completions.push_back(std::to_string(status) + " " + Text(data));
    pk.channel().FreePacket(&pk).IgnoreError();
  });
  const std::string msg = "ping";
  ASSERT_TRUE(guest_
                  ->Send(*p, {reinterpret_cast<const uint8_t*>(msg.data()), msg.size()}, {},
                         kFormatFlagWaitForCompletion)
                  .ok());
  // Written to the ring, but the host has not read it: nothing ran.
  EXPECT_EQ(rec_.Count("host:packet ping"), 0u);
  EXPECT_TRUE(completions.empty());
  ex_.RunUntilIdle();
  EXPECT_EQ(rec_.Count("host:packet ping"), 1u);
  EXPECT_EQ(completions, (std::vector<std::string>{"0 ping"}));
  EXPECT_EQ(guest_->Snapshot().outstanding_transactions, 0u);
}

TEST_F(ManualChannelTest, SynchronousRequestsDriveTheExecutorWhileTheyWait) {
  Open();
  std::vector<uint8_t> reply;
  const std::string msg = "sync";
  // With a manual executor nothing else would run the host: the call itself
  // drives the executor until its completion arrives.
  EXPECT_EQ(guest_->SendSynchronous({reinterpret_cast<const uint8_t*>(msg.data()), msg.size()},
                                    {}, kFormatFlagWaitForCompletion, &reply, std::nullopt),
            kStatusSuccess);
  EXPECT_EQ(Text(reply), "sync");
}

TEST_F(ManualChannelTest, ClosingRunsSuspendAndClosedOnBothSides) {
  Open();
  ASSERT_TRUE(guest_->Disable().ok());  // drives the executor until closed
  ex_.RunUntilIdle();
  const std::vector<std::string> events = rec_.Events();
  ASSERT_GE(events.size(), 6u);
  const std::vector<std::string> tail(events.begin() + 6, events.end());
  EXPECT_EQ(tail, (std::vector<std::string>{"guest:suspend", "guest:closed", "host:suspend",
                                            "host:closed"}));
}

// A guest that forges its ring's write_index: the host's reader finds it
// out of range, counts it, stops reading and says so once, on its I/O task.
TEST_F(ManualChannelTest, AWriteIndexForgedByTheGuestIsReportedOnceAndCounted) {
  RecordHostPeerErrors();
  Open();
  wire::RingControl* to_host = GuestRingControl(/*guest_to_host=*/true);
  ASSERT_NE(to_host, nullptr);
  Packet* p = guest_->AllocatePacket();
  const std::string msg = "ping";
  ASSERT_TRUE(guest_->Send(*p, {reinterpret_cast<const uint8_t*>(msg.data()), msg.size()}, {}, 0).ok());
  // Written and the host signalled, but not read yet: now break the index.
  std::atomic_ref<uint32_t>(to_host->write_index).store(0xfffffff8u);
  ex_.RunUntilIdle();
  const std::vector<std::string> errors = rec_.EventsOf("host:peer_error");
  ASSERT_EQ(errors.size(), 1u) << "one detection, one callback";
  EXPECT_EQ(errors[0].rfind("host:peer_error 1 incoming ring: ", 0), 0u) << errors[0];
  EXPECT_NE(errors[0].find("write_index"), std::string::npos) << errors[0];
  EXPECT_EQ(rec_.Count("host:packet ping"), 0u);
  // More signals from the guest find the incoming side stopped: no more.
  Packet* q = guest_->AllocatePacket();
  ASSERT_TRUE(guest_->Send(*q, {reinterpret_cast<const uint8_t*>(msg.data()), msg.size()}, {}, 0).ok());
  ex_.RunUntilIdle();
  EXPECT_EQ(rec_.EventsOf("host:peer_error").size(), 1u);
  const ChannelSnapshot s = host_->Snapshot();
  EXPECT_EQ(s.stats.corrupt_packets, 1u);
  EXPECT_FALSE(s.corruption.empty());
  EXPECT_TRUE(rec_.EventsOf("guest:peer_error").empty());
}

// A guest that forges the read_index of the host's outgoing ring: the
// host's send path finds it when the ring looks full and it reads the index
// again, counts it once (however many sends follow), and the I/O task
// reports it once.
TEST_F(ManualChannelTest, AReadIndexForgedByTheGuestIsReportedOnceAndCountedBySendingSide) {
  RecordHostPeerErrors();
  Open();
  wire::RingControl* to_guest = GuestRingControl(/*guest_to_host=*/false);
  ASSERT_NE(to_guest, nullptr);
  std::atomic_ref<uint32_t>(to_guest->read_index).store(0xfffffff8u);
  // More than the ring holds (the guest reads nothing meanwhile): the
  // writer runs out of the space it knew of and reads the forged index.
  const std::vector<uint8_t> msg(1024, 0x5a);
  const uint32_t ring_bytes = host_->Snapshot().outgoing->data_size;
  const uint32_t sends = ring_bytes / msg.size() + 4;
  for (uint32_t i = 0; i < sends; ++i) {
    Packet* p = host_->AllocatePacket();
    ASSERT_TRUE(host_->Send(*p, msg, {}, 0).ok());
  }
  // Found on this thread (Send flushes), reported only on the I/O task.
  EXPECT_TRUE(rec_.EventsOf("host:peer_error").empty());
  ex_.RunUntilIdle();
  const std::vector<std::string> errors = rec_.EventsOf("host:peer_error");
  ASSERT_EQ(errors.size(), 1u) << "one detection, one callback";
  EXPECT_EQ(errors[0].rfind("host:peer_error 1 outgoing ring: ", 0), 0u) << errors[0];
  EXPECT_NE(errors[0].find("read_index"), std::string::npos) << errors[0];
  const ChannelSnapshot s = host_->Snapshot();
  EXPECT_EQ(s.stats.corrupt_packets, 1u);
  EXPECT_LT(s.stats.packets_sent, sends);
  EXPECT_GT(s.queued_sends, 0u) << "the rest wait for the channel to close";
  EXPECT_FALSE(s.corruption.empty());
}

}  // namespace
}  // namespace kmcl
