// The KMCL runtime end to end in one process: a host endpoint (VSP) and a
// guest endpoint (VSC) in one partition, through the real control plane and
// real rings in guest memory. Each test runs twice: on a ManualExecutor the
// test drives (deterministic: act, settle, assert) and on the shared pools,
// so the real executor stays covered.
#include "kmcl_core/runtime/channel.h"

#include <atomic>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kmcl_core/bus/partition.h"
#include "kmcl_core/runtime/channel_test_util.h"

namespace kmcl {
namespace {

using ::testing::ElementsAre;

const Guid kType = *Guid::Parse("9d1f7a2e-4b0c-4c51-8a7e-3f5e2d6c1b00");
const Guid kInstance = *Guid::Parse("00000000-0000-4000-8000-000000000001");

using testing::Execution;
using testing::Recorder;
ChannelCallbacks Recording(Recorder& r, const std::string& who) {
  return testing::RecordingCallbacks(r, who);
}

class ChannelTest : public ::testing::TestWithParam<Execution> {
 protected:
  ChannelTest() : exec_(GetParam()) {}

  void SetUp() override {
    PartitionOptions o;
    o.memory_bytes = 256 << 20;
    partition_ = *Partition::Create(o);
  }

  std::unique_ptr<Channel> Host(ChannelCallbacks cb) {
    auto ch = *Channel::Allocate(*partition_, EndpointRole::kHost, exec_.channel_executors());
    EXPECT_TRUE(ch->SetTargetInterfaceId(kType, kInstance).ok());
    EXPECT_TRUE(ch->SetCallbacks(std::move(cb)).ok());
    return ch;
  }
  std::unique_ptr<Channel> Guest(ChannelCallbacks cb) {
    auto ch = *Channel::Allocate(*partition_, EndpointRole::kGuest, exec_.channel_executors());
    EXPECT_TRUE(ch->SetTargetPnp(kType, std::nullopt).ok());
    EXPECT_TRUE(ch->SetCallbacks(std::move(cb)).ok());
    return ch;
  }

  // Offers and starts `host`, opens `guest` on it, and waits until both
  // have run PostStarted (recorded in `r` as "<who>:post_started").
  void Open(Channel& host, Channel& guest, Recorder& r) {
    ASSERT_TRUE(host.Enable().ok());
    ASSERT_TRUE(host.Start().ok());
    ASSERT_TRUE(guest.Enable().ok());
    ASSERT_TRUE(exec_.Recorded(r, "guest:post_started"));
    ASSERT_TRUE(exec_.Recorded(r, "host:post_started"));
  }

  testing::TestExecutors exec_;  // outlives the channels
  std::unique_ptr<Partition> partition_;
};

INSTANTIATE_TEST_SUITE_P(Executors, ChannelTest,
                         ::testing::Values(Execution::kManual, Execution::kThreaded),
                         testing::ExecutionName);

// Every setter goes through one gate: state, then role, then the
// configuration's validator; a refused edit leaves the configuration as it
// was.
TEST_P(ChannelTest, SettersShareOneStateCheckAndOneValidator) {
  auto guest = *Channel::Allocate(*partition_, EndpointRole::kGuest, exec_.channel_executors());
  ASSERT_TRUE(guest->SetMaximumPacketSize(512).ok());
  const uint32_t sizeof_packet = guest->SizeofPacket();
  EXPECT_EQ(guest->SetMaximumPacketSize(0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(guest->SizeofPacket(), sizeof_packet) << "the refused size was not kept";
  EXPECT_EQ(guest->SetMaximumExternalData(4096, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(guest->SetServerFlags(0).code(), absl::StatusCode::kFailedPrecondition)
      << "a host-only setting";
  EXPECT_EQ(guest->Enable().code(), absl::StatusCode::kFailedPrecondition)
      << "Enable validates: no target interface";
  ASSERT_TRUE(guest->SetTargetPnp(kType, std::nullopt).ok());

  auto host = Host({});
  EXPECT_EQ(host->SetRingBufferPageCount(4, 4).code(), absl::StatusCode::kFailedPrecondition)
      << "a guest-only setting";
  ASSERT_TRUE(host->Enable().ok());
  // Enabled: every setter is refused by the same state check.
  EXPECT_EQ(host->SetMaximumPacketSize(512).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(host->SetFriendlyName("late").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(host->SetServerFlags(0).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(host->SetCallbacks({}).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(host->Disable().ok());
  EXPECT_TRUE(host->SetMaximumPacketSize(512).ok()) << "configurable again once disabled";
}

TEST_P(ChannelTest, OpenRunsCallbacksInKmclOrderOnBothSides) {
  Recorder r;
  auto host = Host(Recording(r, "host"));
  auto guest = Guest(Recording(r, "guest"));
  ASSERT_NO_FATAL_FAILURE(Open(*host, *guest, r));
  if (exec_.manual()) {
    // One thread, one order: the host is opened before the guest hears.
    EXPECT_THAT(r.Events(), ElementsAre("host:opened", "host:started", "host:post_started",
                                        "guest:opened", "guest:started", "guest:post_started"));
  }
  std::vector<std::string> host_events, guest_events;
  for (const std::string& e : r.Events()) {
    (e.rfind("host:", 0) == 0 ? host_events : guest_events).push_back(e);
  }
  EXPECT_THAT(host_events, ElementsAre("host:opened", "host:started", "host:post_started"));
  EXPECT_THAT(guest_events, ElementsAre("guest:opened", "guest:started", "guest:post_started"));

  ASSERT_TRUE(guest->Disable().ok());
  ASSERT_TRUE(exec_.Recorded(r, "host:closed"));
  ASSERT_TRUE(host->Disable().ok());
  host_events.clear();
  guest_events.clear();
  for (const std::string& e : r.Events()) {
    (e.rfind("host:", 0) == 0 ? host_events : guest_events).push_back(e);
  }
  EXPECT_THAT(guest_events, ElementsAre("guest:opened", "guest:started", "guest:post_started",
                                        "guest:suspend", "guest:closed"));
  EXPECT_THAT(host_events, ElementsAre("host:opened", "host:started", "host:post_started",
                                       "host:suspend", "host:closed"));
}

TEST_P(ChannelTest, EchoWithCompletions) {
  Recorder r;
  ChannelCallbacks host_cb = Recording(r, "host");
  host_cb.process_packet = [](Channel& ch, Delivery& d, std::span<const uint8_t> buf, uint32_t) {
    std::vector<uint8_t> reply(buf.begin(), buf.end());
    for (auto& b : reply) b ^= 0xFF;
    ch.Complete(d, reply);
  };
  auto host = Host(host_cb);
  auto guest = Guest(Recording(r, "guest"));
  ASSERT_NO_FATAL_FAILURE(Open(*host, *guest, r));

  std::vector<uint8_t> request = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<uint8_t> reply;
  NTSTATUS st = guest->SendSynchronous(request, {}, kFormatFlagWaitForCompletion, &reply,
                                       absl::Seconds(10));
  ASSERT_EQ(st, kStatusSuccess) << NtStatusName(st);
  EXPECT_THAT(reply, ElementsAre(0xFE, 0xFD, 0xFC, 0xFB, 0xFA, 0xF9, 0xF8, 0xF7));

  // The host publishes its read index after the callback that already sent
  // the completion, so the ring's indices settle a moment later.
  EXPECT_TRUE(exec_.Settled([&] {
    const ChannelSnapshot s = host->Snapshot();
    return s.incoming.has_value() && s.incoming->read_index == s.incoming->write_index;
  }));
  const ChannelSnapshot hs = host->Snapshot();
  EXPECT_EQ(hs.connection, ConnectionState::kOpened);
  EXPECT_EQ(hs.stats.packets_received, 1u);
  EXPECT_EQ(hs.stats.completions_sent, 1u);
  ASSERT_TRUE(hs.incoming.has_value());
  EXPECT_EQ(hs.incoming->read_index, hs.incoming->write_index);
  ASSERT_TRUE(guest->Disable().ok());
  ASSERT_TRUE(host->Disable().ok());
  EXPECT_EQ(exec_.RunUntilIdle(), 0u) << "work queued after both channels were disabled";
}

// Disables from several threads at once (in kmcld, a rescind racing a close
// and a forced partition deletion): each returns only once the channel is
// disabled, the callbacks run once, and no call stops tasks another call
// has already stopped and destroyed (which crashed, or failed under ASan).
TEST_P(ChannelTest, ConcurrentDisablesTakeTurns) {
  constexpr int kRounds = 40;
  constexpr int kThreadsPerChannel = 3;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(round);
    Recorder r;
    auto host = Host(Recording(r, "host"));
    auto guest = Guest(Recording(r, "guest"));
    ASSERT_NO_FATAL_FAILURE(Open(*host, *guest, r));
    std::latch go(2 * kThreadsPerChannel);
    std::atomic<int> failed{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreadsPerChannel; ++i) {
      for (Channel* ch : {guest.get(), host.get()}) {
        threads.emplace_back([&go, &failed, ch] {
          go.arrive_and_wait();
          if (!ch->Disable().ok()) ++failed;
          if (ch->connection() != ConnectionState::kDisabled) ++failed;
        });
      }
    }
    for (std::thread& t : threads) t.join();
    EXPECT_EQ(failed.load(), 0) << "a Disable failed or returned before the channel was disabled";
    EXPECT_EQ(r.Count("guest:closed"), 1u);
    EXPECT_EQ(r.Count("host:closed"), 1u);
    // A run that one channel's close queued for the other after its tasks
    // stopped may still be pending: it finds them stopped and does nothing.
    exec_.RunUntilIdle();
  }
}

// An Enable racing a Disable either fails (still enabled) or enables the
// channel anew with its own tasks, never a channel that looks enabled but
// has no tasks left to run its commands: the Disable after it must rescind
// the offer.
TEST_P(ChannelTest, EnableRacingDisableLeavesAChannelThatDisables) {
  constexpr int kRounds = 200;
  auto host = Host({});
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(round);
    ASSERT_TRUE(host->Enable().ok());
    std::latch go(2);
    std::thread disabler([&] {
      go.arrive_and_wait();
      EXPECT_TRUE(host->Disable().ok());
    });
    go.arrive_and_wait();
    host->Enable().IgnoreError();  // FAILED_PRECONDITION if it came first
    disabler.join();
    ASSERT_TRUE(host->Disable().ok());
    ASSERT_EQ(host->connection(), ConnectionState::kDisabled);
    ASSERT_TRUE(exec_.Settled([&] { return partition_->ServerChannels().empty(); }))
        << "the offer outlived the last Disable";
  }
}

}  // namespace
}  // namespace kmcl
