// A host and a guest channel on one ManualExecutor: every callback runs on
// the test's thread when the test drives the executor, so the whole life of
// a channel (offer, open, start, packets, completions, close) is checked
// step by step and in one exact order, with no threads to wait for.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kmcl_core/bus/partition.h"
#include "kmcl_core/runtime/channel.h"
#include "kmcl_core/runtime/channel_test_util.h"
#include "kmcl_core/runtime/executor.h"

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

  ManualExecutor ex_;
  Recorder rec_;
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

}  // namespace
}  // namespace kmcl
