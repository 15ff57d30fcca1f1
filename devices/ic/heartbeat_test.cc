// Heartbeat host against the emulated guest, synchronously, with a test
// clock: negotiation, sequence continuity (also across a save/restore of
// both sides), and unresponsiveness detection within the timeout.
#include "devices/ic/loopback.h"
#include "gtest/gtest.h"

namespace kmcl::devices::ic {
namespace {

HostOptions Options() {
  HostOptions o;
  o.heartbeat_interval = absl::Seconds(1);
  o.heartbeat_timeout = absl::Seconds(5);
  o.request_timeout = absl::Seconds(3);
  return o;
}

size_t Count(const std::vector<IcEvent>& events, IcEventKind kind) {
  size_t n = 0;
  for (const IcEvent& e : events) n += e.kind == kind;
  return n;
}

TEST(Heartbeat, NegotiatesThenAnswersAdvanceTheSequenceByOne) {
  Loopback<HeartbeatHost> l(Options());
  l.Open();
  ASSERT_EQ(l.host.core().state(), IcHostCore::State::kReady);
  EXPECT_EQ(*l.host.core().negotiated(), (NegotiatedVersions{{3, 0}, {3, 0}}));
  EXPECT_EQ(l.guest.negotiated(), l.host.core().negotiated());
  EXPECT_EQ(Count(l.events, IcEventKind::kNegotiated), 1u);
  l.Tick();  // the first heartbeat goes out at once
  for (uint64_t i = 1; i <= 10; ++i) {
    ASSERT_EQ(l.host.Status(l.now).last_sequence, i);
    ASSERT_EQ(l.guest.last_heartbeat(), i);
    l.Advance(absl::Seconds(1));
  }
  HeartbeatStatus s = l.host.Status(l.now);
  EXPECT_TRUE(s.alive);
  EXPECT_EQ(s.answers, 11u);
  EXPECT_EQ(s.last_answer, l.now);
  // Every request carried the previous answer: 0, 1, 2, ...
  for (size_t i = 1; i < l.to_guest.size(); ++i) {
    auto m = ParseIcMessage(l.to_guest[i]);
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m->header.type, kMsgHeartbeat);
    EXPECT_EQ(m->header.flags, kFlagTransaction | kFlagRequest);
    EXPECT_EQ(m->header.message, (IcVersion{3, 0}));
    EXPECT_EQ(*DecodeHeartbeatBody(m->body), i - 1);
  }
  EXPECT_EQ(l.host.core().counters().malformed(), 0u);
}

TEST(Heartbeat, NoSecondRequestWhileOneIsOutstanding) {
  Loopback<HeartbeatHost> l(Options());
  l.Open();
  l.hold = true;
  l.Tick();
  l.Advance(absl::Seconds(1), 2);
  EXPECT_EQ(l.held.size(), 1u) << "one heartbeat in flight at a time";
}

TEST(Heartbeat, AGuestThatStopsAnsweringIsUnresponsiveWithinTheTimeout) {
  Loopback<HeartbeatHost> l(Options());
  l.Open();
  l.Tick();
  l.Advance(absl::Seconds(1), 3);
  const absl::Time last = l.now;
  ASSERT_EQ(l.host.Status(l.now).last_answer, last);
  l.guest.set_answering(false);
  // Alive up to and including `timeout` after the last answer.
  for (int i = 1; i <= 5; ++i) {
    l.Advance(absl::Seconds(1));
    ASSERT_TRUE(l.host.Status(l.now).alive) << "at +" << i << "s";
    ASSERT_EQ(Count(l.events, IcEventKind::kGuestUnresponsive), 0u);
  }
  l.Advance(absl::Milliseconds(1));
  EXPECT_FALSE(l.host.Status(l.now).alive);
  EXPECT_EQ(Count(l.events, IcEventKind::kGuestUnresponsive), 1u) << "reported within the timeout";
  l.Advance(absl::Seconds(1), 10);
  EXPECT_EQ(Count(l.events, IcEventKind::kGuestUnresponsive), 1u) << "reported once";
  EXPECT_EQ(l.host.Status(l.now).unresponsive_events, 1u);
  EXPECT_GT(l.host.core().counters().timeouts, 0u);
  // It answers again: alive, and the sequence continues where it stopped.
  const HeartbeatStatus before = l.host.Status(l.now);
  l.guest.set_answering(true);
  l.Advance(absl::Seconds(1), 4);  // past the 3 s request timeout: a new heartbeat goes out
  const HeartbeatStatus after = l.host.Status(l.now);
  EXPECT_TRUE(after.alive);
  EXPECT_EQ(Count(l.events, IcEventKind::kGuestResponsive), 1u);
  EXPECT_GE(after.answers, before.answers + 1);
  EXPECT_EQ(after.last_sequence - before.last_sequence, after.answers - before.answers)
      << "no gap in the sequence";
}

TEST(Heartbeat, AGuestThatNeverAnswersIsUnresponsiveAfterTheTimeoutFromOpening) {
  Loopback<HeartbeatHost> l(Options());
  l.guest.set_answering(false);
  l.Open();
  l.Advance(absl::Seconds(5));
  EXPECT_TRUE(l.host.Status(l.now).alive);
  l.Advance(absl::Seconds(1));
  EXPECT_FALSE(l.host.Status(l.now).alive);
  EXPECT_EQ(Count(l.events, IcEventKind::kGuestUnresponsive), 1u);
  EXPECT_EQ(l.host.core().state(), IcHostCore::State::kNegotiating) << "NEGOTIATE is resent";
}

TEST(Heartbeat, SequenceContinuesAcrossASaveAndRestoreWithARequestInFlight) {
  Loopback<HeartbeatHost> l(Options());
  l.Open();
  l.Tick();
  l.Advance(absl::Seconds(1), 4);
  ASSERT_EQ(l.host.Status(l.now).last_sequence, 5u);
  // A heartbeat leaves and is still in the ring when the VM is saved.
  l.hold = true;
  l.Advance(absl::Seconds(1));
  ASSERT_EQ(l.held.size(), 1u);
  const std::string host_state = l.host.Save();
  const std::string guest_state = l.guest.Save();

  Loopback<HeartbeatHost> r(Options());
  r.now = l.now + absl::Minutes(10);  // restored much later
  ASSERT_TRUE(r.host.Restore(host_state, r.now).ok());
  ASSERT_TRUE(r.guest.Restore(guest_state).ok());
  EXPECT_EQ(r.host.core().state(), IcHostCore::State::kReady) << "no renegotiation";
  r.held = std::move(l.held);  // the ring came back with the partition
  r.Release();
  EXPECT_EQ(r.host.Status(r.now).last_sequence, 6u) << "the in-flight heartbeat's answer is accepted";
  r.Advance(absl::Seconds(1), 3);
  EXPECT_EQ(r.host.Status(r.now).last_sequence, 9u);
  EXPECT_EQ(r.host.core().counters().malformed(), 0u);
  EXPECT_TRUE(r.host.Status(r.now).alive);
}

TEST(Heartbeat, RestoreRejectsForeignOrTruncatedState) {
  HeartbeatHost hb;
  KvpHost kvp;
  EXPECT_FALSE(hb.Restore(kvp.Save(), absl::Now()).ok());
  std::string s = hb.Save();
  EXPECT_FALSE(hb.Restore(s.substr(0, s.size() - 1), absl::Now()).ok());
  EXPECT_TRUE(hb.Restore(s, absl::Now()).ok());
  IcGuest g(IcService::kHeartbeat);
  std::string gs = g.Save();
  EXPECT_FALSE(g.Restore(gs.substr(0, 5)).ok());
  IcGuest k(IcService::kKvp);
  EXPECT_FALSE(k.Restore(gs).ok()) << "another service's state";
}

}  // namespace
}  // namespace kmcl::devices::ic
