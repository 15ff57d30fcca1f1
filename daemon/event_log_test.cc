// Unit tests of EventLog: sequence numbers, resumption, the retention window
// and wake-ups.
#include "daemon/event_log.h"

#include <vector>

#include "gtest/gtest.h"

namespace kmcld {
namespace {

kmcl::v1::Event Kind(kmcl::v1::EventKind kind) {
  kmcl::v1::Event e;
  e.set_kind(kind);
  return e;
}

TEST(EventLogTest, SequencesStartAtOneAndResumeAfter) {
  EventLog log(100);
  EXPECT_EQ(log.Append(Kind(kmcl::v1::EVENT_KIND_OFFERED)), 1u);
  EXPECT_EQ(log.Append(Kind(kmcl::v1::EVENT_KIND_OPENED)), 2u);
  EXPECT_EQ(log.Append(Kind(kmcl::v1::EVENT_KIND_CLOSED)), 3u);
  std::vector<kmcl::v1::Event> out;
  ASSERT_TRUE(log.Read(1, 10, &out).ok());
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].sequence(), 2u);
  EXPECT_EQ(out[0].kind(), kmcl::v1::EVENT_KIND_OPENED);
  EXPECT_EQ(out[1].sequence(), 3u);
  EXPECT_GT(out[1].time().seconds(), 0);
  out.clear();
  ASSERT_TRUE(log.Read(3, 10, &out).ok());
  EXPECT_TRUE(out.empty());
  ASSERT_TRUE(log.Read(0, 2, &out).ok());
  EXPECT_EQ(out.size(), 2u);  // bounded by max
}

TEST(EventLogTest, BeyondRetentionIsOutOfRangeNamingTheOldest) {
  EventLog log(16);
  for (int i = 0; i < 40; ++i) log.Append(Kind(kmcl::v1::EVENT_KIND_STARTED));
  EXPECT_EQ(log.oldest_sequence(), 25u);
  std::vector<kmcl::v1::Event> out;
  absl::Status s = log.Read(10, 10, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(s.message().find("25"), absl::string_view::npos) << s;
  EXPECT_TRUE(log.Read(24, 100, &out).ok());  // exactly the oldest next: fine
  EXPECT_EQ(out.size(), 16u);
  out.clear();
  EXPECT_TRUE(log.Read(0, 100, &out).ok());  // 0: from the oldest retained
  EXPECT_EQ(out.front().sequence(), 25u);
}

TEST(EventLogTest, BeyondTheNewestIsOutOfRangeNamingIt) {
  EventLog log(16);
  std::vector<kmcl::v1::Event> out;
  EXPECT_TRUE(log.Read(0, 10, &out).ok());
  EXPECT_EQ(log.Read(1, 10, &out).code(), absl::StatusCode::kOutOfRange) << "empty log";
  for (int i = 0; i < 3; ++i) log.Append(Kind(kmcl::v1::EVENT_KIND_STARTED));
  EXPECT_TRUE(log.Read(3, 10, &out).ok()) << "the newest: nothing after it yet";
  EXPECT_TRUE(out.empty());
  absl::Status s = log.Read(4, 10, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(s.message().find("newest event, 3"), absl::string_view::npos) << s;
}

TEST(EventLogTest, CloseEndsReadersAfterWhatWasAppendedBefore) {
  EventLog log(16);
  int woken = 0;
  log.Subscribe([&] { ++woken; });
  log.Append(Kind(kmcl::v1::EVENT_KIND_OFFERED));
  log.Append(Kind(kmcl::v1::EVENT_KIND_OPENED));
  log.Close(absl::UnavailableError("shutting down"));
  EXPECT_EQ(woken, 3) << "Close wakes the watchers";
  log.Close(absl::InternalError("second"));  // the first status stays
  log.Append(Kind(kmcl::v1::EVENT_KIND_CLOSED));  // still logged, not read
  std::vector<kmcl::v1::Event> out;
  ASSERT_TRUE(log.Read(0, 10, &out).ok()) << "events from before Close still come";
  EXPECT_EQ(out.size(), 2u);
  EXPECT_EQ(log.last_sequence(), 3u);
  absl::Status s = log.Read(2, 10, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(s.message(), "shutting down");
}

TEST(EventLogTest, WatchersAreWokenUntilUnsubscribed) {
  EventLog log(16);
  int woken = 0;
  const uint64_t id = log.Subscribe([&] { ++woken; });
  log.Append(Kind(kmcl::v1::EVENT_KIND_OFFERED));
  log.Append(Kind(kmcl::v1::EVENT_KIND_OFFERED));
  EXPECT_EQ(woken, 2);
  log.Unsubscribe(id);
  log.Append(Kind(kmcl::v1::EVENT_KIND_OFFERED));
  EXPECT_EQ(woken, 2);
}

}  // namespace
}  // namespace kmcld
