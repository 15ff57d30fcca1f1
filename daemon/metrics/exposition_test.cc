#include "daemon/metrics/exposition.h"

#include "gtest/gtest.h"

namespace kmcld::metrics {
namespace {

TEST(ExpositionTest, EscapesLabelValuesAndHelp) {
  EXPECT_EQ(EscapeLabelValue("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
  EXPECT_EQ(EscapeHelp("x\\y\nz \"q\""), "x\\\\y\\nz \"q\"");
}

TEST(ExpositionTest, FormatsValues) {
  EXPECT_EQ(FormatValue(42), "42");
  EXPECT_EQ(FormatValue(1e-5), "1e-05");
  EXPECT_EQ(FormatValue(0.25), "0.25");
  EXPECT_EQ(FormatValue(1.0 / 0.0), "+Inf");
}

TEST(ExpositionTest, FamiliesInNameOrderSeriesInLabelOrderDuplicatesSum) {
  Exposition e;
  auto& z = e.Family("z_total", MetricType::kCounter, "Z.");
  z.Add({{"p", "b"}}, 1);
  z.Add({{"p", "a"}}, 2);
  z.Add({{"p", "b"}}, 3);
  e.Family("a_bytes", MetricType::kGauge, "A\nsecond line.").Add({}, 7);
  EXPECT_EQ(e.Render(),
            "# HELP a_bytes A\\nsecond line.\n"
            "# TYPE a_bytes gauge\n"
            "a_bytes 7\n"
            "# HELP z_total Z.\n"
            "# TYPE z_total counter\n"
            "z_total{p=\"a\"} 2\n"
            "z_total{p=\"b\"} 4\n");
}

TEST(ExpositionTest, HistogramBucketsAreCumulative) {
  Exposition e;
  auto& h = e.Family("lat_seconds", MetricType::kHistogram, "Latency.");
  const double bounds[] = {0.1, 1};
  const uint64_t counts[] = {1, 2, 3};
  h.AddHistogram({{"r", "x"}}, bounds, counts, 4.5);
  h.AddHistogram({{"r", "x"}}, bounds, counts, 0.5);
  EXPECT_EQ(e.Render(),
            "# HELP lat_seconds Latency.\n"
            "# TYPE lat_seconds histogram\n"
            "lat_seconds_bucket{r=\"x\",le=\"0.1\"} 2\n"
            "lat_seconds_bucket{r=\"x\",le=\"1\"} 6\n"
            "lat_seconds_bucket{r=\"x\",le=\"+Inf\"} 12\n"
            "lat_seconds_sum{r=\"x\"} 5\n"
            "lat_seconds_count{r=\"x\"} 12\n");
}

}  // namespace
}  // namespace kmcld::metrics
