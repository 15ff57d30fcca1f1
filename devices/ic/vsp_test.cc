// The four VSPs (KMCL C surface) against the emulated guests (VSCs) in an
// emulated partition: real offers with the Hyper-V GUIDs, negotiation,
// heartbeats driven by a test clock, a KVP round trip, a shutdown, a time
// sample, and a partition save/restore with a heartbeat in flight. Waits
// are bounded waits on conditions, never sleeps.
#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "devices/ic/vsc.h"
#include "devices/ic/vsp.h"
#include "gtest/gtest.h"
#include "kmcl_core/base/mutex.h"
#include "kmcl_core/bus/partition.h"

namespace kmcl::devices::ic {
namespace {

constexpr absl::Duration kWait = absl::Seconds(20);

class TestClock {
 public:
  absl::Time Now() {
    MutexLock l(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    MutexLock l(&mu_);
    now_ += d;
  }
  std::function<absl::Time()> Fn() {
    return [this] { return Now(); };
  }

 private:
  Mutex mu_;
  absl::Time now_ = absl::FromUnixSeconds(1800000000);
};

class Devices : public ::testing::Test {
 protected:
  void SetUp() override {
    PartitionOptions o;
    o.memory_bytes = 64 << 20;
    partition_ = *Partition::Create(o);
  }
  VspOptions Options() {
    VspOptions o;
    o.clock = clock_.Fn();
    o.host.heartbeat_interval = absl::Seconds(1);
    o.host.heartbeat_timeout = absl::Seconds(5);
    o.on_event = [this](const IcEvent& e) {
      MutexLock l(&events_mu_);
      events_.push_back(e.kind);
      events_cv_.SignalAll();
    };
    return o;
  }
  // Waits for the result of `op` on a `Host` VSP.
  template <typename Host>
  auto Await(IcVsp& vsp, uint64_t op) {
    decltype(std::declval<Host&>().TakeResult(op)) result;
    EXPECT_TRUE(vsp.WaitUntil(
        [&](IcHostService& s) {
          if (!result) result = static_cast<Host&>(s).TakeResult(op);
          return result.has_value();
        },
        kWait));
    return result;
  }
  static bool Ready(IcHostService& s) { return s.core().state() == IcHostCore::State::kReady; }
  uint64_t Sequence(IcVsp& vsp) {
    uint64_t seq = 0;
    vsp.Run([&](IcHostService& s, absl::Time now, IcOutput&) {
      seq = static_cast<HeartbeatHost&>(s).Status(now).last_sequence;
    });
    return seq;
  }
  // Ticks the heartbeat VSP and waits for the answer that makes the
  // sequence `want`.
  void Beat(IcVsp& vsp, uint64_t want) {
    clock_.Advance(absl::Seconds(1));
    vsp.Poll();
    ASSERT_TRUE(vsp.WaitUntil(
        [&](IcHostService& s) { return static_cast<HeartbeatHost&>(s).Status(clock_.Now()).last_sequence >= want; },
        kWait))
        << "sequence stuck at " << Sequence(vsp);
    EXPECT_EQ(Sequence(vsp), want);
  }
  HeartbeatStatus Heartbeat(IcVsp& vsp) {
    HeartbeatStatus st;
    vsp.Run([&](IcHostService& s, absl::Time now, IcOutput&) { st = static_cast<HeartbeatHost&>(s).Status(now); });
    return st;
  }
  // A heartbeat VSP and its emulated guest, negotiated, after the guest's
  // first two answers (sequence 2).
  std::pair<std::unique_ptr<IcVsp>, std::unique_ptr<IcVsc>> BeatingHeartbeat() {
    auto hb = *IcVsp::Create(IcService::kHeartbeat, partition_->vmbus_handle(), Options());
    auto guest = *IcVsc::Create(*partition_, IcService::kHeartbeat, {}, nullptr, clock_.Fn());
    EXPECT_TRUE(hb->WaitUntil(Ready, kWait));
    hb->Poll();
    EXPECT_TRUE(hb->WaitUntil([&](IcHostService& s) { return static_cast<HeartbeatHost&>(s).Status(clock_.Now()).answers == 1; }, kWait));
    Beat(*hb, 2);
    return {std::move(hb), std::move(guest)};
  }

  TestClock clock_;
  // The events of `kind` once there are `at_least` (bounded wait).
  size_t CountEvents(IcEventKind kind, size_t at_least) {
    const absl::Time deadline = absl::Now() + kWait;
    MutexLock l(&events_mu_);
    auto count = [&] { return static_cast<size_t>(std::count(events_.begin(), events_.end(), kind)); };
    while (count() < at_least && !events_cv_.WaitWithDeadline(&events_mu_, deadline)) {
    }
    return count();
  }
  Mutex events_mu_;
  CondVar events_cv_;
  std::vector<IcEventKind> events_;
  std::unique_ptr<Partition> partition_;
};

TEST_F(Devices, OffersCarryTheHyperVInterfaceTypes) {
  std::vector<std::unique_ptr<IcVsp>> vsps;
  for (IcService s : {IcService::kHeartbeat, IcService::kShutdown, IcService::kTimeSync, IcService::kKvp}) {
    vsps.push_back(*IcVsp::Create(s, partition_->vmbus_handle(), Options()));
  }
  std::vector<std::string> types;
  for (const ServerChannelInfo& c : partition_->ServerChannels()) types.push_back(c.offer.interface_type.ToString());
  for (IcService s : {IcService::kHeartbeat, IcService::kShutdown, IcService::kTimeSync, IcService::kKvp}) {
    EXPECT_NE(std::find(types.begin(), types.end(), ServiceInfo(s).interface_type.ToString()), types.end())
        << ServiceInfo(s).name;
  }
}

TEST_F(Devices, AllFourServicesWorkEndToEnd) {
  auto hb = *IcVsp::Create(IcService::kHeartbeat, partition_->vmbus_handle(), Options());
  auto sd = *IcVsp::Create(IcService::kShutdown, partition_->vmbus_handle(), Options());
  auto ts = *IcVsp::Create(IcService::kTimeSync, partition_->vmbus_handle(), Options());
  auto kvp = *IcVsp::Create(IcService::kKvp, partition_->vmbus_handle(), Options());
  auto ghb = *IcVsc::Create(*partition_, IcService::kHeartbeat, {}, nullptr, clock_.Fn());
  auto gsd = *IcVsc::Create(*partition_, IcService::kShutdown, {}, nullptr, clock_.Fn());
  auto gts = *IcVsc::Create(*partition_, IcService::kTimeSync, {}, nullptr, clock_.Fn());
  auto gkvp = *IcVsc::Create(*partition_, IcService::kKvp, {}, nullptr, clock_.Fn());
  for (IcVsp* v : {hb.get(), sd.get(), ts.get(), kvp.get()}) {
    ASSERT_TRUE(v->WaitUntil(Ready, kWait)) << ServiceInfo(v->service()).name;
  }
  // Heartbeat: the sequence advances by one per tick.
  hb->Poll();
  ASSERT_TRUE(hb->WaitUntil([](IcHostService& s) { return static_cast<HeartbeatHost&>(s).Status(absl::InfiniteFuture()).answers > 0; }, kWait));
  for (uint64_t want = 2; want <= 5; ++want) Beat(*hb, want);
  ghb->Inspect([](IcGuest& g) { EXPECT_EQ(g.last_heartbeat(), 5u); });

  // KVP round trip.
  uint64_t set_op = 0, get_op = 0;
  kvp->Run([&](IcHostService& s, absl::Time now, IcOutput& out) {
    set_op = *static_cast<KvpHost&>(s).Set(kKvpPoolExternal, "HostName", "kmcld", now, out);
    get_op = *static_cast<KvpHost&>(s).Get(kKvpPoolExternal, "HostName", now, out);
  });
  auto set = Await<KvpHost>(*kvp, set_op);
  ASSERT_TRUE(set.has_value() && set->ok());
  EXPECT_EQ((*set)->guest_status, kHvSOk);
  auto got = Await<KvpHost>(*kvp, get_op);
  ASSERT_TRUE(got.has_value() && got->ok());
  EXPECT_EQ((*got)->value, "kmcld");

  // Time sync sample.
  uint64_t ts_op = 0;
  ts->Run([&](IcHostService& s, absl::Time now, IcOutput& out) {
    ts_op = *static_cast<TimeSyncHost&>(s).SendSample(kTimeSyncSync, now, out);
  });
  auto sample = Await<TimeSyncHost>(*ts, ts_op);
  ASSERT_TRUE(sample.has_value() && sample->ok());
  EXPECT_EQ((*sample)->guest_status, kHvSOk);
  gts->Inspect([](IcGuest& g) { EXPECT_EQ(g.time_syncs(), 1u); });
  gts->Inspect([&](IcGuest& g) { EXPECT_EQ(g.GuestTime(clock_.Now()), clock_.Now()); });

  // Shutdown, acknowledged.
  uint64_t sd_op = 0;
  sd->Run([&](IcHostService& s, absl::Time now, IcOutput& out) {
    sd_op = *static_cast<ShutdownHost&>(s).RequestShutdown({1, 10, kShutdownFlagShutdown, "bye"}, now, out);
  });
  auto ack = Await<ShutdownHost>(*sd, sd_op);
  ASSERT_TRUE(ack.has_value() && ack->ok());
  EXPECT_EQ((*ack)->guest_status, kHvSOk);
  gsd->Inspect([](IcGuest& g) { EXPECT_EQ(g.shutdowns().size(), 1u); });
  for (IcVsp* v : {hb.get(), sd.get(), ts.get(), kvp.get()}) {
    EXPECT_EQ(v->stats().protocol.malformed(), 0u);
    EXPECT_EQ(v->stats().send_failures, 0u);
  }
  EXPECT_EQ(CountEvents(IcEventKind::kNegotiated, 4), 4u);
  EXPECT_EQ(CountEvents(IcEventKind::kShutdownAnswered, 1), 1u);
}

TEST_F(Devices, HeartbeatContinuesAcrossAPartitionSaveAndRestore) {
  auto [hb, guest] = BeatingHeartbeat();
  Beat(*hb, 3);
  // The guest stops draining; the next heartbeat stays in the ring.
  auto guest_blob = guest->Save();
  ASSERT_TRUE(guest_blob.ok()) << guest_blob.status();
  clock_.Advance(absl::Seconds(1));
  hb->Poll();
  auto host_blob = hb->Save();
  ASSERT_TRUE(host_blob.ok()) << host_blob.status();
  auto partition_blob = partition_->Save();
  ASSERT_TRUE(partition_blob.ok()) << partition_blob.status();

  auto restored = *Partition::Restore(*partition_blob, "restored");
  {
    auto hb2 = IcVsp::Create(IcService::kHeartbeat, restored->vmbus_handle(), Options(), &*host_blob);
    ASSERT_TRUE(hb2.ok()) << hb2.status();
    auto guest2 = IcVsc::Create(*restored, IcService::kHeartbeat, {}, &*guest_blob, clock_.Fn());
    ASSERT_TRUE(guest2.ok()) << guest2.status();
    ASSERT_TRUE((*hb2)->WaitUntil([&](IcHostService& s) { return static_cast<HeartbeatHost&>(s).Status(clock_.Now()).last_sequence == 4; }, kWait))
        << "the heartbeat in flight at save time is answered after restore; sequence " << Sequence(**hb2);
    Beat(**hb2, 5);
    Beat(**hb2, 6);
    EXPECT_EQ((*hb2)->stats().protocol.malformed(), 0u);
    (*guest2)->Inspect([](IcGuest& g) { EXPECT_EQ(g.last_heartbeat(), 6u); });
  }
  guest.reset();
  hb.reset();
}

// A checkpoint (Save, then Resume on the source) is no silence of the
// guest's: however long the partition's save holds the channel paused while
// the daemon keeps polling, the heartbeat reports no unresponsive guest, and
// the guest answers again once resumed.
TEST_F(Devices, ALongSaveThenResumeIsNotAnUnresponsiveGuest) {
  auto [hb, guest] = BeatingHeartbeat();
  const uint64_t saved_at = Sequence(*hb);
  auto blob = hb->Save();
  ASSERT_TRUE(blob.ok()) << blob.status();
  for (int i = 0; i < 30; ++i) {  // 30 s of saving, six times the timeout
    clock_.Advance(absl::Seconds(1));
    hb->Poll();
  }
  hb->Resume();
  hb->Poll();
  EXPECT_TRUE(Heartbeat(*hb).alive);
  // The beats go on. The Poll right after Resume may already have sent one
  // whose answer lands at any moment, so the sequence is checked to reach
  // each value, not to stop at it.
  for (uint64_t want : {saved_at + 1, saved_at + 2}) {
    clock_.Advance(absl::Seconds(1));
    hb->Poll();
    ASSERT_TRUE(hb->WaitUntil(
        [&](IcHostService& s) {
          return static_cast<HeartbeatHost&>(s).Status(clock_.Now()).last_sequence >= want;
        },
        kWait))
        << "sequence stuck at " << Sequence(*hb) << " after the resume";
  }
  EXPECT_EQ(Heartbeat(*hb).unresponsive_events, 0u);
  MutexLock l(&events_mu_);
  EXPECT_EQ(std::count(events_.begin(), events_.end(), IcEventKind::kGuestUnresponsive), 0);
}

TEST_F(Devices, AKvpRequestInFlightCompletesAfterAPartitionSaveAndRestore) {
  auto kvp = *IcVsp::Create(IcService::kKvp, partition_->vmbus_handle(), Options());
  auto guest = *IcVsc::Create(*partition_, IcService::kKvp, {}, nullptr, clock_.Fn());
  ASSERT_TRUE(kvp->WaitUntil(Ready, kWait));
  auto guest_blob = guest->Save();  // the guest stops draining
  ASSERT_TRUE(guest_blob.ok()) << guest_blob.status();
  uint64_t op = 0;
  kvp->Run([&](IcHostService& s, absl::Time now, IcOutput& out) {
    op = *static_cast<KvpHost&>(s).Set(kKvpPoolGuest, "in-flight", "yes", now, out);
  });
  auto host_blob = kvp->Save();
  ASSERT_TRUE(host_blob.ok()) << host_blob.status();
  auto partition_blob = partition_->Save();
  ASSERT_TRUE(partition_blob.ok()) << partition_blob.status();

  auto restored = *Partition::Restore(*partition_blob, "restored");
  {
    auto kvp2 = IcVsp::Create(IcService::kKvp, restored->vmbus_handle(), Options(), &*host_blob);
    ASSERT_TRUE(kvp2.ok()) << kvp2.status();
    auto guest2 = IcVsc::Create(*restored, IcService::kKvp, {}, &*guest_blob, clock_.Fn());
    ASSERT_TRUE(guest2.ok()) << guest2.status();
    auto done = Await<KvpHost>(**kvp2, op);
    ASSERT_TRUE(done.has_value() && done->ok()) << "the request in flight finishes under its op id";
    EXPECT_EQ((*done)->guest_status, kHvSOk);
    (*guest2)->Inspect([](IcGuest& g) { EXPECT_EQ(*g.pool(kKvpPoolGuest).Find("in-flight"), "yes"); });
  }
  guest.reset();
  kvp.reset();
}

TEST_F(Devices, AGuestThatReopensRenegotiatesAndTheSequenceContinues) {
  auto [hb, guest] = BeatingHeartbeat();
  guest.reset();  // the guest closes the channel: the host's service closes
  ASSERT_TRUE(hb->WaitUntil([](IcHostService& s) { return s.core().state() == IcHostCore::State::kClosed; }, kWait));
  guest = *IcVsc::Create(*partition_, IcService::kHeartbeat, {}, nullptr, clock_.Fn());
  ASSERT_TRUE(hb->WaitUntil(Ready, kWait)) << "NEGOTIATE again on the reopened channel";
  Beat(*hb, 3);
  EXPECT_EQ(CountEvents(IcEventKind::kNegotiated, 2), 2u);
  EXPECT_EQ(hb->stats().protocol.malformed(), 0u);
}

}  // namespace
}  // namespace kmcl::devices::ic
