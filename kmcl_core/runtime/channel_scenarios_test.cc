// KMCL runtime scenarios from the issue: a million echoes with completions
// in both directions, rescind under load, quota stall and resume, pause and
// start under load, close with a non-empty ring and reopen.
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kmcl_core/runtime/channel_test_util.h"

namespace kmcl::testing {
namespace {

// Sends numbered packets with WAIT_FOR_COMPLETION, at most `window` in
// flight; each completion must echo the packet's sequence number.
class Sender {
 public:
  // Returns the number of sends the channel accepted.
  uint64_t Run(Channel& ch, uint64_t count, uint32_t payload_bytes, uint32_t window,
               const std::atomic<bool>* stop = nullptr) {
    std::vector<uint8_t> payload(std::max<uint32_t>(payload_bytes, 8), 0x5A);
    uint64_t accepted = 0;
    for (uint64_t seq = 0; seq < count; ++seq) {
      if (stop != nullptr && stop->load()) break;
      {
        MutexLock lock(&mu_);
        while (in_flight_ >= window) cv_.Wait(&mu_);
        ++in_flight_;
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
      std::memcpy(payload.data(), &seq, 8);
      if (!ch.Send(*p, payload, {}, kFormatFlagWaitForCompletion).ok()) {
        ch.FreePacket(p).IgnoreError();
        MutexLock lock(&mu_);
        --in_flight_;
        break;  // the channel went away
      }
      ++accepted;
    }
    MutexLock lock(&mu_);
    while (in_flight_ > 0) cv_.Wait(&mu_);
    return accepted;
  }
  uint64_t succeeded() { MutexLock l(&mu_); return succeeded_; }
  uint64_t cancelled() { MutexLock l(&mu_); return cancelled_; }
  uint64_t mismatched() { MutexLock l(&mu_); return mismatched_; }
  uint64_t other() { MutexLock l(&mu_); return other_; }

 private:
  Mutex mu_;
  CondVar cv_;
  uint64_t in_flight_ = 0, succeeded_ = 0, cancelled_ = 0, mismatched_ = 0, other_ = 0;
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

class Scenario : public ChannelPairTest {};

TEST_F(Scenario, MillionEchoesWithCompletionsInBothDirectionsInOrder) {
  constexpr uint64_t kPerDirection = 500'000;
  Recorder& r = Keep<Recorder>();
  EchoReceiver& host_rx = Keep<EchoReceiver>();
  EchoReceiver& guest_rx = Keep<EchoReceiver>();
  MakeHost(host_rx.Wrap(RecordingCallbacks(r, "host")));
  MakeGuest(guest_rx.Wrap(RecordingCallbacks(r, "guest")), 64);
  ASSERT_TRUE(r.WaitFor("guest:post_started"));
  ASSERT_TRUE(r.WaitFor("host:post_started"));
  Sender from_guest, from_host;
  std::thread t([&] { EXPECT_EQ(from_host.Run(*host_, kPerDirection, 64, 64), kPerDirection); });
  EXPECT_EQ(from_guest.Run(*guest_, kPerDirection, 64, 64), kPerDirection);
  t.join();
  EXPECT_EQ(from_guest.succeeded(), kPerDirection);
  EXPECT_EQ(from_host.succeeded(), kPerDirection);
  EXPECT_EQ(from_guest.mismatched() + from_host.mismatched(), 0u);
  EXPECT_EQ(host_rx.received.load(), kPerDirection);
  EXPECT_EQ(guest_rx.received.load(), kPerDirection);
  EXPECT_EQ(host_rx.out_of_order.load() + guest_rx.out_of_order.load(), 0u);
}

TEST_F(Scenario, RescindUnderLoadCompletesEverySendExactlyOnce) {
  Recorder& r = Keep<Recorder>();
  EchoReceiver& host_rx = Keep<EchoReceiver>();
  MakeHost(host_rx.Wrap(RecordingCallbacks(r, "host")));
  MakeGuest(RecordingCallbacks(r, "guest"));
  ASSERT_TRUE(r.WaitFor("guest:post_started"));
  Sender s;
  std::atomic<bool> stop{false};
  uint64_t accepted = 0;
  std::thread t([&] { accepted = s.Run(*guest_, 1'000'000, 64, 32, &stop); });
  while (host_rx.received.load() < 2000) std::this_thread::yield();
  ASSERT_TRUE(host_->Disable().ok());  // rescind under load
  ASSERT_TRUE(r.WaitFor("guest:closed"));
  stop = true;
  t.join();
  EXPECT_GT(accepted, 2000u);
  EXPECT_EQ(s.succeeded() + s.cancelled(), accepted) << "each routine ran exactly once";
  EXPECT_EQ(s.other(), 0u);
  EXPECT_EQ(s.mismatched(), 0u);
  EXPECT_EQ(r.Count("host:suspend"), 1u);
  EXPECT_EQ(r.Count("host:closed"), 1u);
  EXPECT_EQ(guest_->connection(), ConnectionState::kDisabled) << "a rescinded client is disabled";
  ChannelSnapshot g = guest_->Snapshot();
  EXPECT_EQ(g.outstanding_transactions, 0u);
  EXPECT_EQ(g.queued_sends, 0u);
}

TEST_F(Scenario, QuotaStallsDeliveryAndOnlyACompletionRestartsIt) {
  Recorder& r = Keep<Recorder>();
  Mutex& held_mu = Keep<Mutex>();
  std::vector<Delivery*>& held = Keep<std::vector<Delivery*>>();
  ChannelCallbacks host_cb = RecordingCallbacks(r, "host");
  host_cb.process_packet = [&](Channel&, Delivery& d, std::span<const uint8_t>, uint32_t) {
    {
      MutexLock lock(&held_mu);
      held.push_back(&d);  // hold it: not completed
    }
    r.Add("host:delivered");
  };
  host_cb.suspend = [&](Channel& ch) {  // a driver completes what it holds
    MutexLock lock(&held_mu);
    for (Delivery* d : held) ch.Complete(*d, {});
    held.clear();
  };
  MakeHost(host_cb);
  host_->SetTransactionQuota(2);
  MakeGuest(RecordingCallbacks(r, "guest"));
  ASSERT_TRUE(r.WaitFor("guest:post_started"));
  for (uint64_t i = 0; i < 5; ++i) {
    Packet* p = guest_->AllocatePacket();
    std::vector<uint8_t> payload(8, static_cast<uint8_t>(i));
    ASSERT_TRUE(guest_->Send(*p, payload, {}, 0).ok());
  }
  ASSERT_TRUE(r.WaitFor("host:delivered", 2));
  // The other three stay in the ring: the queue stalls on the quota.
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (host_->Snapshot().stats.quota_stalls == 0 && absl::Now() < deadline) {
    std::this_thread::yield();
  }
  ChannelSnapshot hs = host_->Snapshot();
  EXPECT_GT(hs.stats.quota_stalls, 0u);
  EXPECT_EQ(hs.delivered_uncompleted, 2u);
  EXPECT_EQ(r.Count("host:delivered"), 2u);
  ASSERT_TRUE(hs.incoming.has_value());
  EXPECT_GT(hs.incoming->used_bytes, 0u) << "three packets wait in the ring";
  // Raising the quota alone restarts nothing; a completion does.
  host_->SetTransactionQuota(10);
  Delivery* first;
  {
    MutexLock lock(&held_mu);
    first = held.front();
    held.erase(held.begin());
  }
  host_->Complete(*first, {});
  ASSERT_TRUE(r.WaitFor("host:delivered", 5));
  EXPECT_EQ(host_->Snapshot().delivered_uncompleted, 4u);
}

TEST_F(Scenario, PauseAndStartUnderLoadLoseNothing) {
  constexpr uint64_t kPackets = 50'000;
  Recorder& r = Keep<Recorder>();
  EchoReceiver& host_rx = Keep<EchoReceiver>();
  std::atomic<bool>& paused = Keep<std::atomic<bool>>(false);
  std::atomic<uint64_t>& delivered_while_paused = Keep<std::atomic<uint64_t>>(0);
  ChannelCallbacks host_cb = host_rx.Wrap(RecordingCallbacks(r, "host"));
  auto echo = host_cb.process_packet;
  host_cb.process_packet = [&, echo](Channel& ch, Delivery& d, std::span<const uint8_t> b, uint32_t f) {
    if (paused) delivered_while_paused++;
    echo(ch, d, b, f);
  };
  host_cb.suspend = [&](Channel&) {
    paused = true;
    r.Add("host:suspend");
  };
  host_cb.started = [&](Channel&) {
    paused = false;
    r.Add("host:started");
  };
  MakeHost(host_cb);
  MakeGuest(RecordingCallbacks(r, "guest"));
  ASSERT_TRUE(r.WaitFor("guest:post_started"));
  Sender s;
  std::thread t([&] { EXPECT_EQ(s.Run(*guest_, kPackets, 128, 64), kPackets); });
  for (uint64_t round = 0; round < 5; ++round) {
    while (host_rx.received.load() < (round + 1) * 5000) std::this_thread::yield();
    ASSERT_TRUE(host_->Pause().ok());  // returns after Suspend, all delivered completed
    EXPECT_EQ(host_->Snapshot().delivered_uncompleted, 0u);
    ASSERT_TRUE(host_->Start().ok());
  }
  t.join();
  EXPECT_EQ(delivered_while_paused.load(), 0u) << "no ProcessPacket between Suspend and Started";
  EXPECT_EQ(r.Count("host:suspend"), 5u);
  EXPECT_EQ(s.succeeded(), kPackets);
  EXPECT_EQ(s.mismatched(), 0u);
  EXPECT_EQ(host_rx.received.load(), kPackets);
  EXPECT_EQ(host_rx.out_of_order.load(), 0u);
}

TEST_F(Scenario, CloseWithANonEmptyRingThenReopen) {
  Recorder& r = Keep<Recorder>();
  Mutex& held_mu = Keep<Mutex>();
  std::vector<Delivery*>& held = Keep<std::vector<Delivery*>>();
  std::atomic<uint64_t>& delivered = Keep<std::atomic<uint64_t>>(0);
  ChannelCallbacks host_cb = RecordingCallbacks(r, "host");
  host_cb.process_packet = [&](Channel& ch, Delivery& d, std::span<const uint8_t> buf, uint32_t) {
    delivered++;
    if (buf.size() >= 1 && buf[0] == 0xEE) {  // after the reopen: answer at once
      ch.Complete(d, {});
      r.Add("host:fresh");
      return;
    }
    MutexLock lock(&held_mu);
    held.push_back(&d);
  };
  host_cb.suspend = [&](Channel& ch) {
    r.Add("host:suspend");
    MutexLock lock(&held_mu);
    for (Delivery* d : held) ch.Complete(*d, {});
    held.clear();
  };
  MakeHost(host_cb);
  host_->SetTransactionQuota(1);
  MakeGuest(RecordingCallbacks(r, "guest"));
  ASSERT_TRUE(r.WaitFor("guest:post_started"));
  std::atomic<int>& cancelled = Keep<std::atomic<int>>(0);
  for (int i = 0; i < 5; ++i) {
    Packet* p = guest_->AllocatePacket();
    p->set_completion_routine([&cancelled](Packet& pk, NTSTATUS st, std::span<const uint8_t>) {
      if (st == kStatusCancelled) cancelled++;
      pk.channel().FreePacket(&pk).IgnoreError();
    });
    std::vector<uint8_t> payload(64, static_cast<uint8_t>(i));
    ASSERT_TRUE(guest_->Send(*p, payload, {}, kFormatFlagWaitForCompletion).ok());
  }
  while (delivered.load() < 1 || guest_->Snapshot().stats.packets_sent < 5) {
    std::this_thread::yield();  // one delivered (quota 1), four waiting in the ring
  }
  ASSERT_TRUE(guest_->Disable().ok());
  EXPECT_EQ(cancelled.load(), 5) << "the guest's transactions end cancelled";
  ASSERT_TRUE(r.WaitFor("host:closed"));
  EXPECT_EQ(host_->connection(), ConnectionState::kClosed) << "the offer stays out";

  ASSERT_TRUE(guest_->Enable().ok());  // reopen: a new ring
  ASSERT_TRUE(r.WaitFor("host:opened", 2));
  ASSERT_TRUE(r.WaitFor("guest:post_started", 2));
  std::vector<uint8_t> fresh(8, 0xEE);
  std::vector<uint8_t> reply;
  EXPECT_EQ(guest_->SendSynchronous(fresh, {}, kFormatFlagWaitForCompletion, &reply,
                                    absl::Seconds(20)),
            kStatusSuccess);
  ASSERT_TRUE(r.WaitFor("host:fresh"));
  EXPECT_EQ(delivered.load(), 2u) << "the stale packets of the old ring are never delivered";
}

}  // namespace
}  // namespace kmcl::testing
