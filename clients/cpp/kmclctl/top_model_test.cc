#include "clients/cpp/kmclctl/top_model.h"

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace kmclctl {
namespace {

kmcl::v1::ChannelDiagnostics Channel(uint32_t id, uint64_t sent, uint64_t received, bool host_held) {
  kmcl::v1::ChannelDiagnostics c;
  c.mutable_channel()->mutable_offer()->mutable_channel()->set_partition_id("default");
  c.mutable_channel()->mutable_offer()->mutable_channel()->set_channel_id(id);
  c.mutable_channel()->mutable_offer()->set_friendly_name(absl::StrCat("ch", id));
  kmcl::v1::EndpointDiagnostics* e = host_held ? c.mutable_host() : c.mutable_guest();
  e->mutable_state()->set_present(true);
  e->mutable_state()->set_connection(kmcl::v1::CONNECTION_STATE_OPENED);
  e->mutable_counters()->set_packets_sent(sent);
  e->mutable_counters()->set_bytes_sent(sent * 8);
  e->mutable_counters()->set_packets_received(received);
  e->mutable_counters()->set_bytes_received(received * 8);
  e->mutable_outgoing()->set_data_bytes(100);
  e->mutable_outgoing()->set_used_bytes(25);
  e->set_outstanding_transactions(3);
  return c;
}

TEST(TopModelTest, RatesOverTheWindowBothWaysAndSortedByTraffic) {
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  std::vector<TopSample> before = {{"a", t0, std::vector{Channel(1, 0, 0, true), Channel(2, 10, 0, false)}}};
  std::vector<TopSample> after = {
      {"a", t0 + absl::Seconds(2), std::vector{Channel(1, 100, 40, true), Channel(2, 1010, 0, false)}}};
  std::vector<TopRow> rows = TopRows(before, after, TopSort::kTraffic);
  ASSERT_EQ(rows.size(), 2u);
  // Channel 2's guest sent 1000 packets in 2 s: guest to host, 500/s; it leads.
  EXPECT_EQ(rows[0].channel, 2u);
  EXPECT_DOUBLE_EQ(rows[0].g2h_packets, 500);
  EXPECT_DOUBLE_EQ(rows[0].g2h_bytes, 4000);
  EXPECT_DOUBLE_EQ(rows[0].h2g_packets, 0);
  EXPECT_EQ(rows[0].state, "-/OPENED");
  // Channel 1's host sent 100 and received 40.
  EXPECT_DOUBLE_EQ(rows[1].h2g_packets, 50);
  EXPECT_DOUBLE_EQ(rows[1].g2h_packets, 20);
  EXPECT_DOUBLE_EQ(rows[1].ring_fill, 0.25);
  EXPECT_EQ(rows[1].outstanding, 3u);
  EXPECT_EQ(TopRows(before, after, TopSort::kName)[0].channel, 1u);
}

TEST(TopModelTest, FrameListsRowsAndFailedTargets) {
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  std::vector<TopSample> before = {{"a", t0, std::vector{Channel(1, 0, 0, true)}},
                                   {"b", t0, absl::UnavailableError("down")}};
  std::vector<TopSample> after = {{"a", t0 + absl::Seconds(1), std::vector{Channel(1, 5, 0, true)}},
                                  {"b", t0 + absl::Seconds(1), absl::UnavailableError("down")}};
  const std::string frame =
      TopFrame(TopRows(before, after, TopSort::kTraffic), {"b: down"}, TopSort::kTraffic, absl::Seconds(1));
  EXPECT_TRUE(absl::StrContains(frame, "1 channels")) << frame;
  EXPECT_TRUE(absl::StrContains(frame, "ch1")) << frame;
  EXPECT_TRUE(absl::StrContains(frame, "b: down")) << frame;
  EXPECT_EQ(RingBar(0.3), "[###.......]30%");
  EXPECT_EQ(RingBar(1.5), "[##########]100%");
}

TEST(TopModelTest, SortNames) {
  EXPECT_EQ(*ParseTopSort("ring"), TopSort::kRing);
  EXPECT_FALSE(ParseTopSort("speed").ok());
  EXPECT_EQ(NextTopSort(TopSort::kName), TopSort::kTraffic);
}

}  // namespace
}  // namespace kmclctl
