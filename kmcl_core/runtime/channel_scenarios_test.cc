// KMCL runtime scenarios from the issue: a million echoes with completions
// in both directions, rescind under load, quota stall and resume, pause and
// start under load, close with a non-empty ring and reopen. Each runs on a
// ManualExecutor the test drives, so "under load" means at an exact point
// with a full window in flight; the three whose threaded form races real
// threads keep that form too (ThreadedScenario).
#include <atomic>
#include <cstring>
#include <functional>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kmcl_core/runtime/channel_test_util.h"

namespace kmcl::testing {
namespace {

// Sends `count` numbered packets with WAIT_FOR_COMPLETION, at most `window`
// in flight; each completion must echo the packet's sequence number. On a
// ManualExecutor the test calls Pump between drives (see Drive); on threads
// Run sends them all.
class Sender {
 public:
  Sender(uint64_t count, uint32_t payload_bytes, uint32_t window)
      : count_(count), window_(window), payload_(std::max<uint32_t>(payload_bytes, 8), 0x5A) {}

  // Sends until `window` are in flight, all are sent or the channel refuses
  // one; never waits. Returns how many it sent now.
  uint64_t Pump(Channel& ch) {
    uint64_t sent = 0;
    for (;;) {
      {
        MutexLock lock(&mu_);
        if (refused_ || next_ >= count_ || in_flight_ >= window_) return sent;
        ++in_flight_;
      }
      if (!SendNext(ch)) return sent;
      ++sent;
    }
  }
  // Sends them all (or until `stop`), waiting for room in the window, then
  // for the last completion. Returns the number of sends the channel
  // accepted. For channels on threads.
  uint64_t Run(Channel& ch, const std::atomic<bool>* stop = nullptr) {
    for (;;) {
      if (stop != nullptr && stop->load()) break;
      {
        MutexLock lock(&mu_);
        while (in_flight_ >= window_) cv_.Wait(&mu_);
        if (refused_ || next_ >= count_) break;
        ++in_flight_;
      }
      if (!SendNext(ch)) break;
    }
    MutexLock lock(&mu_);
    while (in_flight_ > 0) cv_.Wait(&mu_);
    return accepted_;
  }
  // All sent (or the channel refused one) and every routine has run.
  bool finished() { MutexLock l(&mu_); return (refused_ || next_ >= count_) && in_flight_ == 0; }
  uint64_t accepted() { MutexLock l(&mu_); return accepted_; }
  uint64_t succeeded() { MutexLock l(&mu_); return succeeded_; }
  uint64_t cancelled() { MutexLock l(&mu_); return cancelled_; }
  uint64_t mismatched() { MutexLock l(&mu_); return mismatched_; }
  uint64_t other() { MutexLock l(&mu_); return other_; }

 private:
  // Sends the next sequence number (its window slot already taken); false
  // if the channel refused it (it went away).
  bool SendNext(Channel& ch) {
    uint64_t seq;
    {
      MutexLock lock(&mu_);
      seq = next_++;
    }
    Packet* p = ch.AllocatePacket();
    p->set_pointer(reinterpret_cast<void*>(seq));
    p->set_completion_routine([this](Packet& packet, NTSTATUS status,
                                     std::span<const uint8_t> data) {
      const uint64_t seq = reinterpret_cast<uint64_t>(packet.pointer());
      uint64_t echoed = UINT64_MAX;
      if (data.size() >= 8) std::memcpy(&echoed, data.data(), 8);
      packet.channel().FreePacket(&packet).IgnoreError();
      MutexLock lock(&mu_);
      if (status == kStatusSuccess) {
        ++succeeded_;
        if (echoed != seq) ++mismatched_;
      } else if (status == kStatusCancelled) {
        ++cancelled_;
      } else {
        ++other_;
      }
      --in_flight_;
      cv_.SignalAll();
    });
    std::memcpy(payload_.data(), &seq, 8);
    if (!ch.Send(*p, payload_, {}, kFormatFlagWaitForCompletion).ok()) {
      ch.FreePacket(p).IgnoreError();
      MutexLock lock(&mu_);
      --in_flight_;
      refused_ = true;
      cv_.SignalAll();
      return false;
    }
    MutexLock lock(&mu_);
    ++accepted_;
    return true;
  }

  const uint64_t count_;
  const uint64_t window_;
  std::vector<uint8_t> payload_;  // used by the sending thread only
  Mutex mu_;
  CondVar cv_;
  uint64_t next_ = 0, in_flight_ = 0, accepted_ = 0;
  bool refused_ = false;
  uint64_t succeeded_ = 0, cancelled_ = 0, mismatched_ = 0, other_ = 0;
};

// ProcessPacket that checks sequence order and echoes the payload back.
struct EchoReceiver {
  std::atomic<uint64_t> next{0};
  std::atomic<uint64_t> out_of_order{0};
  std::atomic<uint64_t> received{0};
  ChannelCallbacks Wrap(ChannelCallbacks cb) {
    cb.process_packet = [this](Channel& ch, Delivery& d, std::span<const uint8_t> buf, uint32_t) {
      uint64_t seq = UINT64_MAX;
      if (buf.size() >= 8) std::memcpy(&seq, buf.data(), 8);
      if (seq != next.fetch_add(1)) out_of_order++;
      received++;
      ch.Complete(d, buf);
    };
    return cb;
  }
};

// Host callbacks that count packets delivered between Suspend and Started.
struct PauseWatch {
  std::atomic<bool> paused{false};
  std::atomic<uint64_t> delivered_while_paused{0};
  ChannelCallbacks Wrap(ChannelCallbacks cb, Recorder& r) {
    auto inner = cb.process_packet;
    cb.process_packet = [this, inner](Channel& ch, Delivery& d, std::span<const uint8_t> b,
                                      uint32_t f) {
      if (paused) delivered_while_paused++;
      inner(ch, d, b, f);
    };
    cb.suspend = [this, &r](Channel&) {
      paused = true;
      r.Add("host:suspend");
    };
    cb.started = [this, &r](Channel&) {
      paused = false;
      r.Add("host:started");
    };
    return cb;
  }
};

// All `count` sends of `from` were received in order by `to` and completed
// with their own echo.
void ExpectEchoedInOrder(Sender& from, EchoReceiver& to, uint64_t count) {
  EXPECT_EQ(from.accepted(), count);
  EXPECT_EQ(from.succeeded(), count);
  EXPECT_EQ(from.mismatched(), 0u);
  EXPECT_EQ(to.received.load(), count);
  EXPECT_EQ(to.out_of_order.load(), 0u);
}

// After the host's Disable (a rescind) under load: each of the `accepted`
// sends ended exactly once, and the guest is left disabled with nothing
// outstanding.
void ExpectRescindedCleanly(Sender& s, uint64_t accepted, Recorder& r, Channel& guest) {
  EXPECT_GT(accepted, 2000u);
  EXPECT_EQ(s.succeeded() + s.cancelled(), accepted) << "each routine ran exactly once";
  EXPECT_EQ(s.other(), 0u);
  EXPECT_EQ(s.mismatched(), 0u);
  EXPECT_EQ(r.Count("host:suspend"), 1u);
  EXPECT_EQ(r.Count("host:closed"), 1u);
  EXPECT_EQ(guest.connection(), ConnectionState::kDisabled) << "a rescinded client is disabled";
  const ChannelSnapshot g = guest.Snapshot();
  EXPECT_EQ(g.outstanding_transactions, 0u);
  EXPECT_EQ(g.queued_sends, 0u);
}

class ScenarioBase : public ChannelPairTest {
 protected:
  using ChannelPairTest::ChannelPairTest;
  // Opens a pair with 64-page rings whose two sides echo every packet.
  void OpenEchoPair(EchoReceiver& host_rx, EchoReceiver& guest_rx) {
    Recorder& r = Keep<Recorder>();
    MakeHost(host_rx.Wrap(RecordingCallbacks(r, "host")));
    MakeGuest(guest_rx.Wrap(RecordingCallbacks(r, "guest")), 64);
    ASSERT_TRUE(exec_.Recorded(r, "guest:post_started"));
    ASSERT_TRUE(exec_.Recorded(r, "host:post_started"));
  }
};

// On the ManualExecutor (deterministic): act, run until idle, assert.
class Scenario : public ScenarioBase {
 protected:
  // Pumps each sender on its channel and runs the channels until `until`
  // holds, stopping right after the task that made it hold. False if it
  // cannot: nothing left to send and nothing left to run.
  bool Drive(std::vector<std::pair<Sender*, Channel*>> senders,
             const std::function<bool()>& until) {
    ManualExecutor& ex = exec_.executor();
    for (;;) {
      uint64_t sent = 0;
      for (auto& [sender, ch] : senders) sent += sender->Pump(*ch);
      const bool had_work = ex.pending() > 0;
      if (ex.RunUntil(until)) return true;
      if (sent == 0 && !had_work) return false;
    }
  }
};

// On the shared pools: these scenarios race a sending thread against the
// channels' own tasks and against Disable/Pause from a third thread, which
// only real threads do; they keep the real executor covered.
class ThreadedScenario : public ScenarioBase {
 protected:
  ThreadedScenario() : ScenarioBase(Execution::kThreaded) {}
};

// Both windows are filled before each drive, so packets and completions
// cross in both directions at once, each ring carrying both.
TEST_F(Scenario, MillionEchoesWithCompletionsInBothDirectionsInOrder) {
  constexpr uint64_t kPerDirection = 500'000;
  EchoReceiver& host_rx = Keep<EchoReceiver>();
  EchoReceiver& guest_rx = Keep<EchoReceiver>();
  ASSERT_NO_FATAL_FAILURE(OpenEchoPair(host_rx, guest_rx));
  Sender from_guest(kPerDirection, 64, 64), from_host(kPerDirection, 64, 64);
  ASSERT_TRUE(Drive({{&from_guest, guest_.get()}, {&from_host, host_.get()}},
                    [&] { return from_guest.finished() && from_host.finished(); }));
  ExpectEchoedInOrder(from_guest, host_rx, kPerDirection);
  ExpectEchoedInOrder(from_host, guest_rx, kPerDirection);
}

// The same from two sending threads (fewer echoes: the million above is
// the count check; this one is about Send racing the pools' I/O tasks).
TEST_F(ThreadedScenario, EchoesWithCompletionsInBothDirectionsFromTwoThreadsInOrder) {
  constexpr uint64_t kPerDirection = 25'000;
  EchoReceiver& host_rx = Keep<EchoReceiver>();
  EchoReceiver& guest_rx = Keep<EchoReceiver>();
  ASSERT_NO_FATAL_FAILURE(OpenEchoPair(host_rx, guest_rx));
  Sender from_guest(kPerDirection, 64, 64), from_host(kPerDirection, 64, 64);
  std::thread t([&] { EXPECT_EQ(from_host.Run(*host_), kPerDirection); });
  EXPECT_EQ(from_guest.Run(*guest_), kPerDirection);
  t.join();
  ExpectEchoedInOrder(from_guest, host_rx, kPerDirection);
  ExpectEchoedInOrder(from_host, guest_rx, kPerDirection);
}

// The rescind comes at an exact point: after the host has received 2,000
// packets, with a full window just written to the guest's ring. (On one
// thread the host's I/O task, queued first, still echoes that window before
// its Disable runs; the threaded form below races them, and
// CloseWithANonEmptyRingThenReopen cancels transactions left in a ring.)
TEST_F(Scenario, RescindUnderLoadCompletesEverySendExactlyOnce) {
  Recorder& r = Keep<Recorder>();
  EchoReceiver& host_rx = Keep<EchoReceiver>();
  MakeHost(host_rx.Wrap(RecordingCallbacks(r, "host")));
  MakeGuest(RecordingCallbacks(r, "guest"));
  ASSERT_TRUE(exec_.Recorded(r, "guest:post_started"));
  Sender s(1'000'000, 64, 32);
  ASSERT_TRUE(Drive({{&s, guest_.get()}}, [&] { return host_rx.received.load() >= 2000; }));
  s.Pump(*guest_);                     // the window full again
  EXPECT_GT(guest_->Snapshot().outstanding_transactions, 0u) << "under load";
  ASSERT_TRUE(host_->Disable().ok());  // rescind under load
  ASSERT_TRUE(exec_.Recorded(r, "guest:closed"));
  EXPECT_EQ(s.Pump(*guest_), 0u) << "a rescinded channel takes no more sends";
  ASSERT_TRUE(exec_.Settled([&] { return s.finished(); }));
  ExpectRescindedCleanly(s, s.accepted(), r, *guest_);
}

// The same with the rescind racing a sending thread and the pools.
TEST_F(ThreadedScenario, RescindUnderLoadCompletesEverySendExactlyOnce) {
  Recorder& r = Keep<Recorder>();
  EchoReceiver& host_rx = Keep<EchoReceiver>();
  MakeHost(host_rx.Wrap(RecordingCallbacks(r, "host")));
  MakeGuest(RecordingCallbacks(r, "guest"));
  ASSERT_TRUE(r.WaitFor("guest:post_started"));
  Sender s(1'000'000, 64, 32);
  std::atomic<bool> stop{false};
  uint64_t accepted = 0;
  std::thread t([&] { accepted = s.Run(*guest_, &stop); });
  while (host_rx.received.load() < 2000) std::this_thread::yield();
  ASSERT_TRUE(host_->Disable().ok());  // rescind under load
  ASSERT_TRUE(r.WaitFor("guest:closed"));
  stop = true;
  t.join();
  ExpectRescindedCleanly(s, accepted, r, *guest_);
}

TEST_F(Scenario, QuotaStallsDeliveryAndOnlyACompletionRestartsIt) {
  Recorder& r = Keep<Recorder>();
  std::vector<Delivery*>& held = Keep<std::vector<Delivery*>>();
  ChannelCallbacks host_cb = RecordingCallbacks(r, "host");
  host_cb.process_packet = [&](Channel&, Delivery& d, std::span<const uint8_t>, uint32_t) {
    held.push_back(&d);  // hold it: not completed
    r.Add("host:delivered");
  };
  host_cb.suspend = [&](Channel& ch) {  // a driver completes what it holds
    for (Delivery* d : held) ch.Complete(*d, {});
    held.clear();
  };
  MakeHost(host_cb);
  host_->SetTransactionQuota(2);
  MakeGuest(RecordingCallbacks(r, "guest"));
  ASSERT_TRUE(exec_.Recorded(r, "guest:post_started"));
  for (uint64_t i = 0; i < 5; ++i) {
    Packet* p = guest_->AllocatePacket();
    std::vector<uint8_t> payload(8, static_cast<uint8_t>(i));
    ASSERT_TRUE(guest_->Send(*p, payload, {}, 0).ok());
  }
  ASSERT_TRUE(exec_.Recorded(r, "host:delivered", 2));
  // Settled: the other three stay in the ring, the queue stalls on the quota.
  ChannelSnapshot hs = host_->Snapshot();
  EXPECT_GT(hs.stats.quota_stalls, 0u);
  EXPECT_EQ(hs.delivered_uncompleted, 2u);
  EXPECT_EQ(r.Count("host:delivered"), 2u);
  ASSERT_TRUE(hs.incoming.has_value());
  EXPECT_GT(hs.incoming->used_bytes, 0u) << "three packets wait in the ring";
  // Raising the quota alone restarts nothing; a completion does.
  host_->SetTransactionQuota(10);
  exec_.RunUntilIdle();
  EXPECT_EQ(r.Count("host:delivered"), 2u) << "a raised quota alone delivered";
  Delivery* first = held.front();
  held.erase(held.begin());
  host_->Complete(*first, {});
  ASSERT_TRUE(exec_.Recorded(r, "host:delivered", 5));
  EXPECT_EQ(r.Count("host:delivered"), 5u);
  EXPECT_EQ(host_->Snapshot().delivered_uncompleted, 4u);
}

// Pauses at exact points (every 5,000 packets received) with a full window
// in flight.
TEST_F(Scenario, PauseAndStartUnderLoadLoseNothing) {
  constexpr uint64_t kPackets = 50'000;
  Recorder& r = Keep<Recorder>();
  EchoReceiver& host_rx = Keep<EchoReceiver>();
  PauseWatch& watch = Keep<PauseWatch>();
  MakeHost(watch.Wrap(host_rx.Wrap(RecordingCallbacks(r, "host")), r));
  MakeGuest(RecordingCallbacks(r, "guest"));
  ASSERT_TRUE(exec_.Recorded(r, "guest:post_started"));
  Sender s(kPackets, 128, 64);
  for (uint64_t round = 0; round < 5; ++round) {
    ASSERT_TRUE(Drive({{&s, guest_.get()}},
                      [&] { return host_rx.received.load() >= (round + 1) * 5000; }));
    s.Pump(*guest_);  // the window full again
    EXPECT_GT(guest_->Snapshot().outstanding_transactions, 0u) << "under load";
    ASSERT_TRUE(host_->Pause().ok());  // returns after Suspend, all delivered completed
    EXPECT_EQ(host_->Snapshot().delivered_uncompleted, 0u);
    // Paused, the guest goes on sending: the packets wait in the ring.
    exec_.RunUntilIdle();  // the guest takes the completions it has
    const uint64_t received = host_rx.received.load();
    EXPECT_GT(s.Pump(*guest_), 0u);
    exec_.RunUntilIdle();
    EXPECT_EQ(host_rx.received.load(), received) << "delivered while paused";
    ASSERT_TRUE(host_->Start().ok());
  }
  ASSERT_TRUE(Drive({{&s, guest_.get()}}, [&] { return s.finished(); }));
  EXPECT_EQ(watch.delivered_while_paused.load(), 0u) << "no ProcessPacket between Suspend and Started";
  EXPECT_EQ(r.Count("host:suspend"), 5u);
  EXPECT_EQ(s.accepted(), kPackets);
  EXPECT_EQ(s.succeeded(), kPackets);
  EXPECT_EQ(s.mismatched(), 0u);
  EXPECT_EQ(host_rx.received.load(), kPackets);
  EXPECT_EQ(host_rx.out_of_order.load(), 0u);
}

// The same with Pause and Start racing a sending thread and the pools.
TEST_F(ThreadedScenario, PauseAndStartUnderLoadLoseNothing) {
  constexpr uint64_t kPackets = 50'000;
  Recorder& r = Keep<Recorder>();
  EchoReceiver& host_rx = Keep<EchoReceiver>();
  PauseWatch& watch = Keep<PauseWatch>();
  MakeHost(watch.Wrap(host_rx.Wrap(RecordingCallbacks(r, "host")), r));
  MakeGuest(RecordingCallbacks(r, "guest"));
  ASSERT_TRUE(r.WaitFor("guest:post_started"));
  Sender s(kPackets, 128, 64);
  std::thread t([&] { EXPECT_EQ(s.Run(*guest_), kPackets); });
  for (uint64_t round = 0; round < 5; ++round) {
    while (host_rx.received.load() < (round + 1) * 5000) std::this_thread::yield();
    ASSERT_TRUE(host_->Pause().ok());  // returns after Suspend, all delivered completed
    EXPECT_EQ(host_->Snapshot().delivered_uncompleted, 0u);
    ASSERT_TRUE(host_->Start().ok());
  }
  t.join();
  EXPECT_EQ(watch.delivered_while_paused.load(), 0u) << "no ProcessPacket between Suspend and Started";
  EXPECT_EQ(r.Count("host:suspend"), 5u);
  EXPECT_EQ(s.succeeded(), kPackets);
  EXPECT_EQ(s.mismatched(), 0u);
  EXPECT_EQ(host_rx.received.load(), kPackets);
  EXPECT_EQ(host_rx.out_of_order.load(), 0u);
}

TEST_F(Scenario, CloseWithANonEmptyRingThenReopen) {
  Recorder& r = Keep<Recorder>();
  std::vector<Delivery*>& held = Keep<std::vector<Delivery*>>();
  uint64_t& delivered = Keep<uint64_t>(0);
  ChannelCallbacks host_cb = RecordingCallbacks(r, "host");
  host_cb.process_packet = [&](Channel& ch, Delivery& d, std::span<const uint8_t> buf, uint32_t) {
    delivered++;
    if (buf.size() >= 1 && buf[0] == 0xEE) {  // after the reopen: answer at once
      ch.Complete(d, {});
      r.Add("host:fresh");
      return;
    }
    held.push_back(&d);
  };
  host_cb.suspend = [&](Channel& ch) {
    r.Add("host:suspend");
    for (Delivery* d : held) ch.Complete(*d, {});
    held.clear();
  };
  MakeHost(host_cb);
  host_->SetTransactionQuota(1);
  MakeGuest(RecordingCallbacks(r, "guest"));
  ASSERT_TRUE(exec_.Recorded(r, "guest:post_started"));
  int& cancelled = Keep<int>(0);
  for (int i = 0; i < 5; ++i) {
    Packet* p = guest_->AllocatePacket();
    p->set_completion_routine([&cancelled](Packet& pk, NTSTATUS st, std::span<const uint8_t>) {
      if (st == kStatusCancelled) cancelled++;
      pk.channel().FreePacket(&pk).IgnoreError();
    });
    std::vector<uint8_t> payload(64, static_cast<uint8_t>(i));
    ASSERT_TRUE(guest_->Send(*p, payload, {}, kFormatFlagWaitForCompletion).ok());
  }
  // One delivered (quota 1), four waiting in the ring.
  exec_.RunUntilIdle();
  EXPECT_EQ(delivered, 1u);
  EXPECT_EQ(guest_->Snapshot().stats.packets_sent, 5u);
  ASSERT_TRUE(guest_->Disable().ok());
  EXPECT_EQ(cancelled, 5) << "the guest's transactions end cancelled";
  ASSERT_TRUE(exec_.Recorded(r, "host:closed"));
  EXPECT_EQ(host_->connection(), ConnectionState::kClosed) << "the offer stays out";

  ASSERT_TRUE(guest_->Enable().ok());  // reopen: a new ring
  ASSERT_TRUE(exec_.Recorded(r, "host:opened", 2));
  ASSERT_TRUE(exec_.Recorded(r, "guest:post_started", 2));
  std::vector<uint8_t> fresh(8, 0xEE);
  std::vector<uint8_t> reply;
  EXPECT_EQ(guest_->SendSynchronous(fresh, {}, kFormatFlagWaitForCompletion, &reply,
                                    absl::Seconds(20)),
            kStatusSuccess);
  ASSERT_TRUE(exec_.Recorded(r, "host:fresh"));
  EXPECT_EQ(delivered, 2u) << "the stale packets of the old ring are never delivered";
}

}  // namespace
}  // namespace kmcl::testing
