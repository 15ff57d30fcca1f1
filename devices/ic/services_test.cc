// Shutdown, time sync and KVP hosts against the emulated guest,
// synchronously; negotiation per service across version lists, including
// lists with nothing in common.
#include "devices/ic/loopback.h"
#include "gtest/gtest.h"

namespace kmcl::devices::ic {
namespace {

template <typename T>
T Result(std::optional<absl::StatusOr<T>> r) {
  EXPECT_TRUE(r.has_value()) << "no result yet";
  if (!r) return T{};
  EXPECT_TRUE(r->ok()) << r->status();
  return r->ok() ? **r : T{};
}

template <typename Host>
NegotiatedVersions NegotiateWith(std::vector<IcVersion> host_fw, std::vector<IcVersion> host_msg) {
  HostOptions o;
  o.framework_versions = std::move(host_fw);
  o.message_versions = std::move(host_msg);
  Loopback<Host> l(o);
  l.Open();
  EXPECT_EQ(l.host.core().state(), IcHostCore::State::kReady) << l.host.core().failure();
  return l.host.core().negotiated().value_or(NegotiatedVersions{});
}

TEST(Negotiation, EachServiceSettlesOnTheHighestCommonVersions) {
  EXPECT_EQ(NegotiateWith<ShutdownHost>({}, {}), (NegotiatedVersions{{3, 0}, {3, 2}}));
  EXPECT_EQ(NegotiateWith<TimeSyncHost>({}, {}), (NegotiatedVersions{{3, 0}, {4, 0}}));
  EXPECT_EQ(NegotiateWith<KvpHost>({}, {}), (NegotiatedVersions{{3, 0}, {4, 0}}));
  EXPECT_EQ(NegotiateWith<HeartbeatHost>({{1, 0}}, {{1, 0}}), (NegotiatedVersions{{1, 0}, {1, 0}}));
  EXPECT_EQ(NegotiateWith<ShutdownHost>({{3, 0}, {1, 0}}, {{3, 1}, {1, 0}, {9, 9}}),
            (NegotiatedVersions{{3, 0}, {3, 1}}));
  EXPECT_EQ(NegotiateWith<TimeSyncHost>({{1, 0}, {3, 0}}, {{1, 0}, {3, 0}}), (NegotiatedVersions{{3, 0}, {3, 0}}))
      << "the host's order does not matter";
}

TEST(Negotiation, NoCommonVersionFailsClearlyAndFailsQueuedRequests) {
  for (auto [fw, msg] : std::vector<std::pair<std::vector<IcVersion>, std::vector<IcVersion>>>{
           {{{2, 0}}, {}},           // no common framework
           {{}, {{5, 0}, {2, 0}}},   // no common message version
       }) {
    HostOptions o;
    o.framework_versions = fw;
    o.message_versions = msg;
    Loopback<KvpHost> l(o);
    uint64_t queued = 0;
    l.Run([&](IcOutput& out) { queued = *l.host.Get(0, "k", l.now, out); });  // before the channel opened
    l.Open();
    EXPECT_EQ(l.host.core().state(), IcHostCore::State::kFailed);
    EXPECT_NE(l.host.core().failure().find("no common version"), std::string::npos) << l.host.core().failure();
    ASSERT_FALSE(l.events.empty());
    EXPECT_EQ(l.events.back().kind, IcEventKind::kNegotiationFailed);
    auto r = l.host.TakeResult(queued);
    ASSERT_TRUE(r.has_value());
    EXPECT_TRUE(absl::IsFailedPrecondition(r->status())) << r->status();
    uint64_t later = 0;
    l.Run([&](IcOutput& out) { later = *l.host.Get(0, "k", l.now, out); });
    EXPECT_TRUE(absl::IsFailedPrecondition(l.host.TakeResult(later)->status()));
    EXPECT_EQ(l.guest.counters().negotiation_failures, 1u);
    // The guest's answer lists nothing and says E_FAIL.
    auto answer = ParseIcMessage(l.to_host.at(0));
    EXPECT_EQ(answer->header.status, kHvEFail);
    EXPECT_EQ(GetU16(answer->body.data()), 0);
    EXPECT_EQ(GetU16(answer->body.data() + 2), 0);
  }
}

TEST(Shutdown, RequestIsAcknowledgedAndRecordedByTheGuest) {
  Loopback<ShutdownHost> l;
  l.Open();
  uint64_t op = 0;
  l.Run([&](IcOutput& out) {
    op = *l.host.RequestShutdown({5, 30, kShutdownFlagShutdown | kShutdownFlagForce, "maintenance"}, l.now, out);
  });
  EXPECT_EQ(Result(l.host.TakeResult(op)).guest_status, kHvSOk);
  ASSERT_EQ(l.guest.shutdowns().size(), 1u);
  EXPECT_EQ(l.guest.shutdowns()[0].request.reason_code, 5u);
  EXPECT_EQ(l.guest.shutdowns()[0].request.timeout_seconds, 30u);
  EXPECT_EQ(l.guest.shutdowns()[0].request.display_message, "maintenance");
  ASSERT_FALSE(l.events.empty());
  EXPECT_EQ(l.events.back().kind, IcEventKind::kShutdownAnswered);
  EXPECT_NE(l.events.back().detail.find("acknowledged"), std::string::npos);
  EXPECT_FALSE(l.host.TakeResult(op).has_value()) << "taken once";
}

TEST(Shutdown, RestartHibernateAndUnknownFlags) {
  Loopback<ShutdownHost> l;
  l.Open();
  auto ask = [&](uint32_t flags) {
    uint64_t op = 0;
    l.Run([&](IcOutput& out) { op = *l.host.RequestShutdown({0, 0, flags, ""}, l.now, out); });
    return Result(l.host.TakeResult(op)).guest_status;
  };
  EXPECT_EQ(ask(kShutdownFlagRestart), kHvSOk);
  EXPECT_EQ(ask(kShutdownFlagHibernate), kHvEFail) << "hibernation not supported by default";
  EXPECT_EQ(ask(9), kHvEFail);
  EXPECT_NE(l.events.back().detail.find("refused"), std::string::npos);
  Loopback<ShutdownHost> h({}, GuestOptions{.hibernation_supported = true});
  h.Open();
  uint64_t op = 0;
  h.Run([&](IcOutput& out) { op = *h.host.RequestShutdown({0, 0, kShutdownFlagHibernate, ""}, h.now, out); });
  EXPECT_EQ(Result(h.host.TakeResult(op)).guest_status, kHvSOk);
  IcOutput unused;
  EXPECT_FALSE(l.host.RequestShutdown({0, 0, 0, std::string(2048, 'm')}, l.now, unused).ok());
}

TEST(TimeSync, SyncSetsTheGuestClockAndSamplesAreRecorded) {
  for (IcVersion v : {IcVersion{4, 0}, IcVersion{3, 0}}) {
    HostOptions o;
    o.message_versions = {v};
    Loopback<TimeSyncHost> l(o);
    IcOutput early;
    EXPECT_TRUE(absl::IsFailedPrecondition(l.host.SendSample(kTimeSyncSync, l.now, early).status()));
    l.Open();
    l.Advance(absl::Seconds(2));
    uint64_t op = 0;
    const absl::Time host_time = l.now;
    l.Run([&](IcOutput& out) { op = *l.host.SendSample(kTimeSyncSync, l.now, out); });
    TimeSyncResult r = Result(l.host.TakeResult(op));
    EXPECT_EQ(r.guest_status, kHvSOk);
    EXPECT_EQ(r.sent.parent_time, static_cast<uint64_t>(absl::ToUnixNanos(host_time) / 100) + kWindowsToUnixEpoch100ns);
    EXPECT_EQ(r.answered_at, l.now);
    if (v.major >= 4) {
      EXPECT_EQ(r.sent.reference_time, 20000000u) << "2 s after opening in 100 ns";
    }
    EXPECT_EQ(l.guest.time_syncs(), 1u);
    EXPECT_EQ(l.guest.GuestTime(l.now), host_time);
    l.Run([&](IcOutput& out) { op = *l.host.SendSample(kTimeSyncSample, l.now, out); });
    Result(l.host.TakeResult(op));
    ASSERT_TRUE(l.guest.last_time_sample().has_value());
    EXPECT_EQ(l.guest.last_time_sample()->flags, kTimeSyncSample);
    EXPECT_EQ(l.guest.time_syncs(), 1u) << "a sample does not set the clock";
    EXPECT_EQ(l.host.samples_answered(), 2u);
    EXPECT_EQ(l.host.core().counters().malformed(), 0u) << v.ToString();
  }
}

class Kvp : public ::testing::Test {
 protected:
  void SetUp() override { l.Open(); }
  KvpResult Do(const std::function<absl::StatusOr<uint64_t>(IcOutput&)>& call) {
    uint64_t op = 0;
    l.Run([&](IcOutput& out) {
      auto r = call(out);
      ASSERT_TRUE(r.ok()) << r.status();
      op = *r;
    });
    return Result(l.host.TakeResult(op));
  }
  KvpResult Set(uint8_t pool, std::string k, std::string v) {
    return Do([&](IcOutput& out) { return l.host.Set(pool, k, v, l.now, out); });
  }
  KvpResult Get(uint8_t pool, std::string k) {
    return Do([&](IcOutput& out) { return l.host.Get(pool, k, l.now, out); });
  }
  KvpResult Delete(uint8_t pool, std::string k) {
    return Do([&](IcOutput& out) { return l.host.Delete(pool, k, l.now, out); });
  }
  KvpResult Enumerate(uint8_t pool, uint32_t i) {
    return Do([&](IcOutput& out) { return l.host.Enumerate(pool, i, l.now, out); });
  }
  Loopback<KvpHost> l{HostOptions{}, GuestOptions{.kvp_pool_capacity = 3}};
};

TEST_F(Kvp, SetGetDeleteEnumerate) {
  EXPECT_EQ(Set(kKvpPoolExternal, "VirtualMachineName", "vm-1").guest_status, kHvSOk);
  EXPECT_EQ(Set(kKvpPoolExternal, "Owner", "ops \xE2\x9C\x93").guest_status, kHvSOk);
  KvpResult got = Get(kKvpPoolExternal, "Owner");
  EXPECT_EQ(got.guest_status, kHvSOk);
  EXPECT_EQ(got.value, "ops \xE2\x9C\x93");
  EXPECT_EQ(Get(kKvpPoolGuest, "Owner").guest_status, kHvSCont) << "pools are separate";
  EXPECT_EQ(Set(kKvpPoolExternal, "Owner", "me").guest_status, kHvSOk) << "overwrite";
  EXPECT_EQ(Get(kKvpPoolExternal, "Owner").value, "me");
  KvpResult e0 = Enumerate(kKvpPoolExternal, 0);
  EXPECT_EQ(e0.key, "VirtualMachineName");
  EXPECT_EQ(e0.value, "vm-1");
  EXPECT_EQ(Enumerate(kKvpPoolExternal, 1).key, "Owner");
  EXPECT_EQ(Enumerate(kKvpPoolExternal, 2).guest_status, kHvSCont) << "end of the pool";
  EXPECT_EQ(Delete(kKvpPoolExternal, "VirtualMachineName").guest_status, kHvSOk);
  EXPECT_EQ(Get(kKvpPoolExternal, "VirtualMachineName").guest_status, kHvSCont) << "missing key";
  EXPECT_EQ(Delete(kKvpPoolExternal, "VirtualMachineName").guest_status, kHvSCont) << "deleting a missing key";
  EXPECT_EQ(Enumerate(kKvpPoolExternal, 0).key, "Owner");
  EXPECT_EQ(l.guest.pool(kKvpPoolExternal).records().size(), 1u);
}

TEST_F(Kvp, LargestKeysAndValuesRoundTrip) {
  const std::string key(kKvpMaxKeyChars, 'k');        // 255 units + NUL = 512 bytes
  const std::string value(kKvpMaxValueChars, 'v');    // 1023 units + NUL = 2048 bytes
  EXPECT_EQ(Set(kKvpPoolAuto, key, value).guest_status, kHvSOk);
  EXPECT_EQ(Get(kKvpPoolAuto, key).value, value);
  KvpResult e = Enumerate(kKvpPoolAuto, 0);
  EXPECT_EQ(e.key, key);
  EXPECT_EQ(e.value, value);
  // One more character does not fit: refused on the host before anything is sent.
  IcOutput out;
  // The message says which field and its limits.
  absl::Status long_key = l.host.Set(0, key + "k", "v", l.now, out).status();
  EXPECT_TRUE(absl::IsInvalidArgument(long_key));
  EXPECT_NE(long_key.message().find("KVP key: 256 bytes of UTF-8 take 514 bytes"), std::string::npos)
      << long_key;
  EXPECT_NE(long_key.message().find("limit is 512 bytes (255 UTF-16 units"), std::string::npos)
      << long_key;
  absl::Status long_value = l.host.Set(0, "k", value + "v", l.now, out).status();
  EXPECT_TRUE(absl::IsInvalidArgument(long_value));
  EXPECT_NE(long_value.message().find("KVP value: "), std::string::npos) << long_value;
  EXPECT_NE(long_value.message().find("limit is 2048 bytes (1023 UTF-16 units"), std::string::npos)
      << long_value;
  EXPECT_TRUE(absl::IsInvalidArgument(l.host.Get(5, "k", l.now, out).status())) << "pool 5";
  EXPECT_TRUE(out.send.empty());
}

TEST_F(Kvp, AFullPoolRefusesNewKeysButAcceptsUpdates) {
  for (std::string k : {"a", "b", "c"}) EXPECT_EQ(Set(kKvpPoolGuest, k, "1").guest_status, kHvSOk);
  EXPECT_EQ(Set(kKvpPoolGuest, "d", "1").guest_status, kHvErrorDiskFull);
  EXPECT_EQ(Set(kKvpPoolGuest, "a", "2").guest_status, kHvSOk);
  EXPECT_EQ(Delete(kKvpPoolGuest, "b").guest_status, kHvSOk);
  EXPECT_EQ(Set(kKvpPoolGuest, "d", "1").guest_status, kHvSOk);
  EXPECT_EQ(Set(kKvpPoolExternal, "d", "1").guest_status, kHvSOk) << "another pool has room";
}

TEST_F(Kvp, IntegerValuesAreStoredAsText) {
  // A raw SET with REG_U32, as a Windows host may send.
  KvpBody set{kKvpOpSet, kKvpPoolExternal, 0, kKvpRegU32, *EncodeKvpString("n", kKvpMaxKeyBytes), {7, 0, 0, 0}};
  Bytes body = *EncodeKvpBody(set);
  IcHeader h{0, 0, {3, 0}, kMsgKvpExchange, {4, 0}, 0, 0, 77, kFlagTransaction | kFlagRequest};
  auto answer = l.guest.OnPacket(EncodeIcMessage(h, body), l.now);
  ASSERT_TRUE(answer.has_value());
  EXPECT_EQ(ParseIcMessage(*answer)->header.status, kHvSOk);
  EXPECT_EQ(ParseIcMessage(*answer)->header.transaction_id, 77) << "echoed";
  EXPECT_EQ(Get(kKvpPoolExternal, "n").value, "7");
}

TEST_F(Kvp, PoolsSurviveASaveAndRestoreOfTheGuest) {
  Set(kKvpPoolGuest, "x", "y");
  IcGuest copy(IcService::kKvp, GuestOptions{.kvp_pool_capacity = 3});
  ASSERT_TRUE(copy.Restore(l.guest.Save()).ok());
  EXPECT_EQ(*copy.pool(kKvpPoolGuest).Find("x"), "y");
  EXPECT_EQ(copy.negotiated(), l.guest.negotiated());
}

TEST_F(Kvp, ARequestInFlightCompletesAfterTheHostIsRestored) {
  l.hold = true;
  uint64_t op = 0;
  l.Run([&](IcOutput& out) { op = *l.host.Set(kKvpPoolExternal, "k", "v", l.now, out); });
  ASSERT_EQ(l.held.size(), 1u);
  Loopback<KvpHost> r(HostOptions{}, GuestOptions{.kvp_pool_capacity = 3});
  ASSERT_TRUE(r.host.Restore(l.host.Save(), r.now).ok());
  ASSERT_TRUE(r.guest.Restore(l.guest.Save()).ok());
  r.held = std::move(l.held);
  r.Release();
  EXPECT_EQ(Result(r.host.TakeResult(op)).guest_status, kHvSOk) << "same op id after restore";
  EXPECT_EQ(*r.guest.pool(kKvpPoolExternal).Find("k"), "v");
}

TEST_F(Kvp, UnansweredRequestTimesOutAndTheLateAnswerIsCounted) {
  l.hold = true;
  uint64_t op = 0;
  l.Run([&](IcOutput& out) { op = *l.host.Get(0, "k", l.now, out); });
  l.Advance(absl::Seconds(11));
  auto r = l.host.TakeResult(op);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(absl::IsDeadlineExceeded(r->status()));
  l.hold = false;
  l.Release();  // the guest finally answers
  EXPECT_EQ(l.host.core().counters().unexpected, 1u);
  EXPECT_EQ(Set(0, "k", "v").guest_status, kHvSOk) << "the channel keeps working";
}

TEST_F(Kvp, CloseFailsPendingRequests) {
  l.hold = true;
  uint64_t op = 0;
  l.Run([&](IcOutput& out) { op = *l.host.Get(0, "k", l.now, out); });
  l.Run([&](IcOutput& out) { l.host.Close(out); });
  EXPECT_TRUE(absl::IsUnavailable(l.host.TakeResult(op)->status()));
}

}  // namespace
}  // namespace kmcl::devices::ic
