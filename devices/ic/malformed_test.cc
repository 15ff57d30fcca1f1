// Every malformed message kind, both ways: a hostile guest's answers to the
// host (dropped and counted by kind; the channel keeps working) and a
// hostile host's requests to the emulated guest (answered with a clear
// status where the protocol has an answer, else dropped and counted).
#include <random>

#include "absl/strings/match.h"
#include "devices/ic/loopback.h"
#include "gtest/gtest.h"

namespace kmcl::devices::ic {
namespace {

// A response header as a guest would write it.
IcHeader Answer(uint16_t type, uint8_t tid) {
  IcHeader h;
  h.framework = {3, 0};
  h.message = {3, 0};
  h.type = type;
  h.transaction_id = tid;
  h.flags = kFlagTransaction | kFlagResponse;
  return h;
}

uint8_t LastTransactionId(const std::vector<Bytes>& sent) {
  return ParseIcMessage(sent.back())->header.transaction_id;
}

class HostSide : public ::testing::Test {
 protected:
  void SetUp() override {
    l.Open();
    l.Tick();
    ASSERT_EQ(l.host.Status(l.now).last_sequence, 1u);
    l.hold = true;  // the next heartbeat waits in `held` for the test's answer
    l.Advance(absl::Seconds(1));
    ASSERT_EQ(l.held.size(), 1u);
    tid = LastTransactionId({l.held.back()});
  }
  // After the test's bad packet: the real answer still works.
  void ExpectStillWorking() {
    // Every packet counted as malformed has its line for the log.
    EXPECT_EQ(l.dropped.size(), c().malformed());
    EXPECT_GT(l.dropped.size(), 0u);
    l.hold = false;
    l.Release();
    EXPECT_EQ(l.host.Status(l.now).last_sequence, 2u);
    l.Advance(absl::Seconds(1));
    EXPECT_EQ(l.host.Status(l.now).last_sequence, 3u);
  }
  const IcHostCounters& c() { return l.host.core().counters(); }
  Loopback<HeartbeatHost> l;
  uint8_t tid = 0;
};

TEST_F(HostSide, ShortPacket) {
  l.InjectToHost(Bytes(27, 0));
  l.InjectToHost(Bytes());
  EXPECT_EQ(c().short_packets, 2u);
  ASSERT_EQ(l.dropped.size(), 2u);
  EXPECT_EQ(l.dropped[0], "IC packet of 27 bytes is shorter than its 28-byte header");
  ExpectStillWorking();
}

TEST_F(HostSide, RequestFlagInsteadOfResponse) {
  IcHeader h = Answer(kMsgHeartbeat, tid);
  h.flags = kFlagTransaction | kFlagRequest;
  l.InjectToHost(EncodeIcMessage(h, EncodeHeartbeatBody(2)));
  EXPECT_EQ(c().not_response, 1u);
  ExpectStillWorking();
}

TEST_F(HostSide, WrongMessageType) {
  l.InjectToHost(EncodeIcMessage(Answer(kMsgKvpExchange, tid), EncodeHeartbeatBody(2)));
  l.InjectToHost(EncodeIcMessage(Answer(7, tid), EncodeHeartbeatBody(2)));
  EXPECT_EQ(c().wrong_type, 2u);
  ExpectStillWorking();
}

TEST_F(HostSide, SizeFieldLargerThanThePacket) {
  Bytes b = EncodeIcMessage(Answer(kMsgHeartbeat, tid), EncodeHeartbeatBody(2));
  PutU16(&b[18], 41);  // icmsgsize: one byte more than came
  l.InjectToHost(b);
  EXPECT_EQ(c().bad_size, 1u);
  ExpectStillWorking();
}

TEST_F(HostSide, BodyTooShortForItsType) {
  l.InjectToHost(EncodeIcMessage(Answer(kMsgHeartbeat, tid), Bytes(4, 0)));
  EXPECT_EQ(c().bad_body, 1u);
  ASSERT_EQ(l.dropped.size(), 1u);
  EXPECT_TRUE(absl::StartsWith(l.dropped[0], "heartbeat answer: ")) << l.dropped[0];
  EXPECT_EQ(l.host.Status(l.now).last_sequence, 1u);
  // The request was consumed by the bad answer: the next tick sends another.
  l.hold = false;
  l.held.clear();
  l.Advance(absl::Seconds(1));
  EXPECT_EQ(l.host.Status(l.now).last_sequence, 2u);
}

TEST_F(HostSide, WrongSequenceIsNotProofOfLife) {
  l.InjectToHost(EncodeIcMessage(Answer(kMsgHeartbeat, tid), EncodeHeartbeatBody(7)));
  EXPECT_EQ(c().bad_body, 1u);
  EXPECT_EQ(l.dropped, std::vector<std::string>{"heartbeat answer with sequence 7, expected 2"});
  EXPECT_EQ(l.host.Status(l.now).last_sequence, 1u);
  EXPECT_EQ(l.host.Status(l.now).answers, 1u);
}

TEST_F(HostSide, UnknownTransactionOrNothingOutstanding) {
  l.InjectToHost(EncodeIcMessage(Answer(kMsgHeartbeat, static_cast<uint8_t>(tid + 9)), EncodeHeartbeatBody(2)));
  EXPECT_EQ(c().unexpected, 1u);
  l.InjectToHost(EncodeIcMessage(Answer(kMsgNegotiate, tid), EncodeNegotiateBody({{{3, 0}}, {{3, 0}}})));
  EXPECT_EQ(c().unexpected, 2u) << "a NEGOTIATE answer nobody asked for";
  EXPECT_EQ(l.host.core().state(), IcHostCore::State::kReady);
  ExpectStillWorking();
}

TEST(HostNegotiation, AnswersWithUnknownVersionsOrBadListsFailNegotiationAndAreCounted) {
  struct Case {
    const char* name;
    Bytes body;
    uint32_t status;
  };
  const std::vector<Case> cases = {
      {"unknown message version", EncodeNegotiateBody({{{3, 0}}, {{9, 9}}}), kHvSOk},
      {"unknown framework version", EncodeNegotiateBody({{{2, 0}}, {{3, 0}}}), kHvSOk},
      {"two of each", EncodeNegotiateBody({{{3, 0}, {1, 0}}, {{3, 0}, {1, 0}}}), kHvSOk},
      {"count over 100", [] {
         Bytes b = EncodeNegotiateBody({{{3, 0}}, {{3, 0}}});
         PutU16(b.data(), 101);
         return b;
       }(), kHvSOk},
      {"versions cut off", Bytes{1, 0, 1, 0, 0, 0, 0, 0, 3, 0}, kHvSOk},
  };
  for (const Case& k : cases) {
    Loopback<HeartbeatHost> l;
    l.hold = true;
    l.Open();
    IcHeader h = Answer(kMsgNegotiate, LastTransactionId({l.held.back()}));
    h.status = k.status;
    l.InjectToHost(EncodeIcMessage(h, k.body));
    EXPECT_EQ(l.host.core().state(), IcHostCore::State::kFailed) << k.name;
    EXPECT_EQ(l.host.core().counters().bad_body, 1u) << k.name;
    EXPECT_FALSE(l.host.core().failure().empty()) << k.name;
    // Reopening the channel negotiates afresh with a well-behaved guest.
    l.hold = false;
    l.held.clear();
    l.Open();
    EXPECT_EQ(l.host.core().state(), IcHostCore::State::kReady) << k.name;
  }
}

TEST(HostKvp, MalformedAnswersFinishTheRequestWithDataLoss) {
  Loopback<KvpHost> l;
  l.Open();
  l.guest_to_host = [](Bytes b) -> std::optional<Bytes> {
    if (ParseIcMessage(b)->header.type == kMsgKvpExchange) PutU32(&b[kIcMessageHeaderSize + 8], 9999);  // key_size
    return b;
  };
  uint64_t set = 0, get = 0;
  l.Run([&](IcOutput& out) {
    set = *l.host.Set(0, "k", "v", l.now, out);
    get = *l.host.Get(0, "k", l.now, out);
  });
  EXPECT_TRUE(l.host.TakeResult(set)->ok()) << "SET's answer carries nothing to decode";
  auto r = l.host.TakeResult(get);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(absl::IsDataLoss(r->status())) << r->status();
  EXPECT_EQ(l.host.core().counters().bad_body, 1u);
}

// ---- The guest against a hostile host ----------------------------------------------

Bytes Request(uint16_t type, const Bytes& body, IcVersion message = {3, 0}) {
  IcHeader h;
  h.framework = {3, 0};
  h.message = message;
  h.type = type;
  h.transaction_id = 5;
  h.flags = kFlagTransaction | kFlagRequest;
  return EncodeIcMessage(h, body);
}

uint32_t StatusOf(const std::optional<Bytes>& answer) { return ParseIcMessage(*answer)->header.status; }

TEST(GuestSide, ShortPacketsAreDroppedAndCounted) {
  for (IcService s : {IcService::kHeartbeat, IcService::kShutdown, IcService::kTimeSync, IcService::kKvp}) {
    IcGuest g(s);
    EXPECT_FALSE(g.OnPacket(Bytes(27, 0), absl::Now())) << ServiceInfo(s).name;
    EXPECT_FALSE(g.OnPacket(Request(ServiceInfo(s).message_type, Bytes(3, 0)), absl::Now())) << ServiceInfo(s).name;
    EXPECT_EQ(g.counters().short_packets, 2u) << ServiceInfo(s).name;
    EXPECT_EQ(g.counters().answered, 0u);
  }
  IcGuest sd(IcService::kShutdown);
  EXPECT_FALSE(sd.OnPacket(Request(kMsgShutdown, Bytes(2059, 0)), absl::Now())) << "one byte short of 2060";
  IcGuest ts(IcService::kTimeSync);
  EXPECT_FALSE(ts.OnPacket(Request(kMsgTimeSync, Bytes(24, 0)), absl::Now())) << "one byte short of 25";
}

TEST(GuestSide, WrongTypeIsAnsweredEFailExceptKvpWhichDrops) {
  IcGuest hb(IcService::kHeartbeat);
  auto a = hb.OnPacket(Request(kMsgShutdown, EncodeHeartbeatBody(1)), absl::Now());
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(StatusOf(a), kHvEFail);
  EXPECT_EQ(ParseIcMessage(*a)->header.flags, kFlagTransaction | kFlagResponse);
  EXPECT_EQ(ParseIcMessage(*a)->header.transaction_id, 5);
  EXPECT_EQ(hb.counters().wrong_type, 1u);
  IcGuest kvp(IcService::kKvp);
  EXPECT_FALSE(kvp.OnPacket(Request(kMsgHeartbeat, EncodeHeartbeatBody(1)), absl::Now()));
  EXPECT_EQ(kvp.counters().wrong_type, 1u);
}

TEST(GuestSide, BadNegotiateListsAreAnsweredWithNoVersions) {
  Bytes too_many = EncodeNegotiateBody({{{3, 0}}, {{3, 0}}});
  PutU16(too_many.data() + 2, 101);
  for (const Bytes& body : {too_many, Bytes{5, 0, 5, 0, 0, 0, 0, 0}, Bytes{1, 0}}) {
    IcGuest g(IcService::kHeartbeat);
    auto a = g.OnPacket(Request(kMsgNegotiate, body), absl::Now());
    ASSERT_TRUE(a.has_value());
    EXPECT_EQ(StatusOf(a), kHvEFail);
    auto m = ParseIcMessage(*a);
    EXPECT_EQ(GetU16(m->body.data()), 0);
    EXPECT_EQ(GetU16(m->body.data() + 2), 0);
    EXPECT_EQ(g.counters().bad_body, 1u);
    EXPECT_FALSE(g.negotiated().has_value());
  }
}

TEST(GuestSide, HeaderVersionsAreNotChecked) {
  // Linux ignores icverframe/icvermsg of requests; so does the guest.
  IcGuest g(IcService::kHeartbeat);
  auto a = g.OnPacket(Request(kMsgHeartbeat, EncodeHeartbeatBody(41), {77, 7}), absl::Now());
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(*DecodeHeartbeatBody(ParseIcMessage(*a)->body), 42u);
}

TEST(GuestSide, MalformedKvpRequestsGetAClearStatus) {
  const Bytes good = *EncodeKvpBody({kKvpOpSet, 0, 0, kKvpRegSz, *EncodeKvpString("k", 512), *EncodeKvpString("v", 2048)});
  struct Case {
    const char* name;
    std::function<void(Bytes&)> edit;
    uint32_t status;
  };
  const std::vector<Case> cases = {
      {"IP info operation", [](Bytes& b) { b[0] = 4; }, kHvErrorNotSupported},
      {"unknown operation", [](Bytes& b) { b[0] = 200; }, kHvErrorNotSupported},
      {"pool 5", [](Bytes& b) { b[1] = 5; }, kHvInvalidArg},
      {"key_size over 512", [](Bytes& b) { PutU32(&b[8], 514); }, kHvInvalidArg},
      {"value_size over 2048", [](Bytes& b) { PutU32(&b[12], 4096); }, kHvInvalidArg},
      {"odd key_size", [](Bytes& b) { PutU32(&b[8], 3); }, kHvInvalidArg},
      {"REG_BINARY value", [](Bytes& b) { PutU32(&b[4], 3); }, kHvInvalidArg},
      {"body shorter than SET", [](Bytes& b) { b.resize(2000); }, kHvInvalidArg},
      {"lone surrogate in key", [](Bytes& b) { PutU16(&b[16], 0xDC00); }, kHvInvalidArg},
  };
  for (const Case& k : cases) {
    IcGuest g(IcService::kKvp);
    Bytes body = good;
    k.edit(body);
    auto a = g.OnPacket(Request(kMsgKvpExchange, body), absl::Now());
    ASSERT_TRUE(a.has_value()) << k.name;
    EXPECT_EQ(StatusOf(a), k.status) << k.name;
    EXPECT_GE(g.counters().bad_body, 1u) << k.name;
    EXPECT_TRUE(g.pool(0).records().empty()) << k.name;
    // The guest keeps working.
    EXPECT_EQ(StatusOf(g.OnPacket(Request(kMsgKvpExchange, good), absl::Now())), kHvSOk) << k.name;
  }
}

TEST(Garbage, NoInputCrashesEitherSide) {
  std::mt19937 rng(12);
  for (IcService s : {IcService::kHeartbeat, IcService::kShutdown, IcService::kTimeSync, IcService::kKvp}) {
    IcGuest guest(s);
    std::unique_ptr<IcHostService> host = MakeHostService(s, HostOptions{});
    IcOutput out;
    const absl::Time t0 = absl::FromUnixSeconds(1);
    host->Open(t0, out);
    for (int i = 0; i < 3000; ++i) {
      // A valid header of this service most of the time, then random bytes.
      Bytes b(std::uniform_int_distribution<int>(0, 3000)(rng));
      for (uint8_t& x : b) x = static_cast<uint8_t>(rng());
      if (b.size() >= kIcMessageHeaderSize && i % 4 != 0) {
        PutU16(&b[12], i % 8 == 1 ? kMsgNegotiate : ServiceInfo(s).message_type);
        b[25] = i % 3 == 0 ? kFlagRequest : kFlagResponse;
        b[24] = static_cast<uint8_t>(i % 5);
        if (b.size() > kIcMessageHeaderSize + 2 && s == IcService::kKvp) b[kIcMessageHeaderSize] %= 5;
      }
      guest.OnPacket(b, t0 + absl::Seconds(i));
      host->OnPacket(b, t0 + absl::Seconds(i), out);
      host->Tick(t0 + absl::Seconds(i), out);
      out = IcOutput{};
    }
    EXPECT_GT(guest.counters().requests, 0u);
  }
}

}  // namespace
}  // namespace kmcl::devices::ic
