// kmcld's /metrics against known traffic: counters equal what was sent,
// every family has HELP and TYPE, friendly names are escaped, the order is
// stable, --metrics_channel_labels=false sums per partition, and Debian's
// promtool accepts the exposition.
#include <cstdlib>
#include <fstream>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/exposition_parse.h"
#include "tests/traffic.h"

namespace kmcld::testing {
namespace {

// A friendly name that needs every escape of the text format.
constexpr char kNastyName[] = "disk \"A\"\\0\nline two";
constexpr char kNastyEscaped[] = "disk \\\"A\\\"\\\\0\\nline two";

std::string Series(const std::string& name, const TrafficChannel& c, const std::string& friendly,
                   const std::string& role) {
  return absl::StrCat(name, "{partition=\"default\",channel=\"", c.ref.channel_id(),
                      "\",interface_type=\"", kEchoType, "\",friendly_name=\"", friendly,
                      "\",role=\"", role, "\"}");
}

TEST(MetricsTest, CountersEqualTrafficAndEveryFamilyIsDeclared) {
  Kmcld k;
  ASSERT_TRUE(k.Start({"--metrics_listen=127.0.0.1:0"}).ok());
  ASSERT_FALSE(k.process.metrics_address().empty()) << k.process.output();
  auto ch = OfferAndOpen(k, kNastyName);
  ASSERT_TRUE(ch.ok()) << ch.status();
  constexpr int kPackets = 50;
  ASSERT_TRUE(RunTransactions(k, *ch, kPackets, std::string(64, 'x')).ok());

  auto text = Scrape(k.process.metrics_address());
  ASSERT_TRUE(text.ok()) << text.status();
  auto parsed = ParseExposition(*text);
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << *text;
  for (const auto& [family, help] : parsed->help) {
    EXPECT_FALSE(help.empty()) << family;
    EXPECT_TRUE(parsed->type.contains(family)) << family;
    EXPECT_TRUE(absl::StartsWith(family, "kmcld_")) << family;
  }
  auto value = [&](const std::string& series) {
    auto it = parsed->samples.find(series);
    EXPECT_NE(it, parsed->samples.end()) << series << " missing in\n" << *text;
    return it == parsed->samples.end() ? -1 : it->second;
  };
  const std::string e = kNastyEscaped;
  EXPECT_EQ(value(Series("kmcld_channel_packets_sent_total", *ch, e, "guest")), kPackets);
  EXPECT_EQ(value(Series("kmcld_channel_bytes_sent_total", *ch, e, "guest")), kPackets * 64);
  EXPECT_EQ(value(Series("kmcld_channel_packets_received_total", *ch, e, "host")), kPackets);
  EXPECT_EQ(value(Series("kmcld_channel_bytes_received_total", *ch, e, "host")), kPackets * 64);
  EXPECT_EQ(value(Series("kmcld_channel_completions_sent_total", *ch, e, "host")), kPackets);
  EXPECT_EQ(value(Series("kmcld_channel_completions_received_total", *ch, e, "guest")), kPackets);
  EXPECT_EQ(value(Series("kmcld_channel_completion_latency_seconds_count", *ch, e, "guest")), kPackets);
  EXPECT_EQ(value(Series("kmcld_channel_outstanding_transactions", *ch, e, "guest")), 0);
  EXPECT_EQ(value(Series("kmcld_channel_delivered_uncompleted", *ch, e, "host")), 0);
  std::string ring = Series("kmcld_channel_ring_size_bytes", *ch, e, "guest");
  ring.insert(ring.size() - 1, ",ring=\"outgoing\"");
  EXPECT_EQ(value(ring), 16 * 4096);  // 16 data pages by default
  EXPECT_EQ(value("kmcld_rpcs_total{service=\"kmcl.v1.HostChannelService\",method=\"OfferChannel\","
                  "code=\"OK\"}"),
            1);
  EXPECT_EQ(value("kmcld_partition_channels{partition=\"default\",role=\"host\",state=\"opened\"}"), 1);
  EXPECT_GT(value("kmcld_process_threads"), 1);
  // No devices here (the fixture starts kmcld with --devices=none): the
  // family is declared, with no series.
  EXPECT_EQ(parsed->type["kmcld_device_heartbeat_alive"], "gauge");
  EXPECT_FALSE(absl::StrContains(*text, "kmcld_device_heartbeat_alive{")) << *text;

  // Debian's promtool lints the same exposition.
  const std::string file = absl::StrCat(std::getenv("TEST_TMPDIR"), "/metrics.txt");
  std::ofstream(file) << *text;
  EXPECT_EQ(std::system(absl::StrCat("/usr/bin/promtool check metrics < ", file).c_str()), 0);
}

TEST(MetricsTest, HeartbeatOfTheBuiltInDevices) {
  Kmcld k;
  // The default partition with its devices and kmcld's emulated guest.
  ASSERT_TRUE(k.Start({"--metrics_listen=127.0.0.1:0", "--devices=heartbeat"}).ok()) << k.process.output();
  // The guest negotiates and answers on its own schedule: wait (bounded)
  // for the log line that says it negotiated, then read the series.
  ASSERT_TRUE(k.process.WaitForOutput("device negotiated").ok()) << k.process.output();
  auto text = Scrape(k.process.metrics_address());
  ASSERT_TRUE(text.ok());
  auto parsed = ParseExposition(*text);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->samples["kmcld_device_heartbeat_negotiated{partition=\"default\"}"], 1) << *text;
  EXPECT_TRUE(parsed->samples.contains("kmcld_device_heartbeat_alive{partition=\"default\"}")) << *text;
  EXPECT_TRUE(parsed->samples.contains("kmcld_device_heartbeat_answers_total{partition=\"default\"}"));
}

// The sum of the samples of family `name` whose labels contain every one
// of `labels` (e.g. `friendly_name="echo"`), and how many there were.
std::pair<double, int> SumOf(const ParsedExposition& e, const std::string& name,
                             const std::vector<std::string>& labels) {
  double sum = 0;
  int n = 0;
  for (const auto& [series, value] : e.samples) {
    if (!absl::StartsWith(series, name + "{")) continue;
    bool all = true;
    for (const std::string& l : labels) all = all && absl::StrContains(series, l);
    if (!all) continue;
    sum += value;
    ++n;
  }
  return {sum, n};
}

// The channels kmcld runs itself, the built-in devices (host VSP and the
// emulated guest) and the --demo echo VSP and VSC, have per-channel series
// like the channels tools own, and DiagnosticsService shows them too.
TEST(MetricsTest, BuiltInChannelsHaveChannelSeries) {
  Kmcld k;
  ASSERT_TRUE(k.Start({"--metrics_listen=127.0.0.1:0", "--devices=heartbeat", "--demo", "--demo_packets=100",
                       "--demo_interval_ms=600000"})
                  .ok())
      << k.process.output();
  // One demo round (100 echoed transactions, then a 10-minute pause) and the
  // heartbeat negotiation (a packet each way at least).
  ASSERT_TRUE(k.process.WaitForOutput("demo: 100 packets echoed").ok()) << k.process.output();
  ASSERT_TRUE(k.process.WaitForOutput("device negotiated").ok()) << k.process.output();
  auto text = Scrape(k.process.metrics_address());
  ASSERT_TRUE(text.ok());
  auto parsed = ParseExposition(*text);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const std::string echo = "friendly_name=\"echo\"", guest = "role=\"guest\"", host = "role=\"host\"";
  EXPECT_EQ(SumOf(*parsed, "kmcld_channel_packets_sent_total", {echo, guest}), std::make_pair(100.0, 1)) << *text;
  EXPECT_EQ(SumOf(*parsed, "kmcld_channel_bytes_sent_total", {echo, guest}).first, 100 * 256);
  EXPECT_EQ(SumOf(*parsed, "kmcld_channel_completions_received_total", {echo, guest}).first, 100);
  EXPECT_EQ(SumOf(*parsed, "kmcld_channel_packets_received_total", {echo, host}), std::make_pair(100.0, 1));
  EXPECT_EQ(SumOf(*parsed, "kmcld_channel_completions_sent_total", {echo, host}).first, 100);
  EXPECT_EQ(SumOf(*parsed, "kmcld_channel_completion_latency_seconds_count", {echo, guest}).first, 100);
  const std::string heartbeat = "friendly_name=\"heartbeat\"";
  EXPECT_GE(SumOf(*parsed, "kmcld_channel_packets_sent_total", {heartbeat, host}).first, 1) << *text;
  EXPECT_GE(SumOf(*parsed, "kmcld_channel_packets_received_total", {heartbeat, host}).first, 1);
  EXPECT_GE(SumOf(*parsed, "kmcld_channel_packets_sent_total", {heartbeat, guest}).first, 1);
  EXPECT_EQ(SumOf(*parsed, "kmcld_partition_channels", {host, "state=\"opened\""}).first, 2);
  EXPECT_EQ(SumOf(*parsed, "kmcld_partition_channels", {guest, "state=\"opened\""}).first, 2);
  EXPECT_EQ(parsed->samples["kmcld_attached_streams"], 0);

  // The same endpoints in DiagnosticsService, marked built-in.
  kmcl::v1::ListChannelDiagnosticsResponse list;
  ASSERT_TRUE(k.diagnostics->ListChannelDiagnostics(Kmcld::Context().get(), {}, &list).ok());
  int builtin = 0;
  for (const auto& c : list.channels()) {
    for (const auto* e : {&c.host(), &c.guest()}) {
      if (!e->state().present()) continue;
      EXPECT_TRUE(e->state().builtin()) << c.DebugString();
      ++builtin;
    }
    if (c.channel().offer().friendly_name() == "echo") {
      EXPECT_EQ(c.guest().counters().packets_sent(), 100u) << c.DebugString();
      EXPECT_EQ(c.host().state().connection(), kmcl::v1::CONNECTION_STATE_OPENED);
      kmcl::v1::GetChannelDiagnosticsRequest one;
      *one.mutable_channel() = c.channel().offer().channel();
      kmcl::v1::ChannelDiagnostics single;
      ASSERT_TRUE(k.diagnostics->GetChannelDiagnostics(Kmcld::Context().get(), one, &single).ok());
      EXPECT_TRUE(single.host().state().builtin() && single.guest().state().builtin()) << single.DebugString();
      EXPECT_EQ(single.host().counters().packets_received(), 100u);
    }
  }
  EXPECT_EQ(builtin, 4) << "heartbeat and echo, host and guest each";
}

TEST(MetricsTest, BuildInfoCarriesGetVersionsVersionAndCommit) {
  Kmcld k;
  ASSERT_TRUE(k.Start({"--metrics_listen=127.0.0.1:0"}).ok());
  kmcl::v1::DaemonVersion version;
  ASSERT_TRUE(k.diagnostics->GetVersion(Kmcld::Context().get(), {}, &version).ok());
  ASSERT_FALSE(version.version().empty());
  auto text = Scrape(k.process.metrics_address());
  ASSERT_TRUE(text.ok());
  auto parsed = ParseExposition(*text);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  // The commit is empty unless built with --stamp; either way the same.
  const std::string prefix = absl::StrCat("kmcld_build_info{version=\"", version.version(),
                                          "\",commit=\"", version.git_commit(), "\",");
  int found = 0;
  for (const auto& [series, value] : parsed->samples) {
    if (!absl::StartsWith(series, "kmcld_build_info{")) continue;
    ++found;
    EXPECT_TRUE(absl::StartsWith(series, prefix)) << series << " vs " << prefix;
    EXPECT_EQ(value, 1);
  }
  EXPECT_EQ(found, 1) << *text;
}

// The config file's observability fields drive kmcld; flags given win.
TEST(MetricsTest, TheConfigFileTurnsMetricsOnAndFlagsWin) {
  const std::string file = absl::StrCat(std::getenv("TEST_TMPDIR"), "/kmcld.conf");
  std::ofstream(file) << "metrics_listen: \"127.0.0.1:0\"\n"
                         "metrics_channel_labels: false\n"
                         "log_format: \"json\"\n"
                         "log_level: \"error\"\n";
  Kmcld k;
  // The file says error; the flag (debug) wins, so "ready" (info) is logged,
  // as JSON: the file chose the format.
  ASSERT_TRUE(k.Start({absl::StrCat("--config=", file), "--log_level=debug"}).ok()) << k.process.output();
  ASSERT_FALSE(k.process.metrics_address().empty()) << k.process.output();
  EXPECT_TRUE(absl::StrContains(k.process.output(), "\"msg\":\"ready\"")) << k.process.output();
  auto ch = OfferAndOpen(k, "configured");
  ASSERT_TRUE(ch.ok()) << ch.status();
  ASSERT_TRUE(RunTransactions(k, *ch, 7, std::string(8, 'c')).ok());
  auto text = Scrape(k.process.metrics_address());
  ASSERT_TRUE(text.ok());
  auto parsed = ParseExposition(*text);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->samples["kmcld_channel_packets_sent_total{partition=\"default\",role=\"guest\"}"], 7) << *text;
  EXPECT_FALSE(absl::StrContains(*text, "friendly_name=")) << "the file's metrics_channel_labels: false";
}

TEST(MetricsTest, OrderIsStableAndSorted) {
  Kmcld k;
  ASSERT_TRUE(k.Start({"--metrics_listen=127.0.0.1:0"}).ok());
  for (const char* name : {"b", "a"}) ASSERT_TRUE(OfferAndOpen(k, name).ok());
  auto first = Scrape(k.process.metrics_address());
  auto second = Scrape(k.process.metrics_address());
  ASSERT_TRUE(first.ok() && second.ok());
  auto a = ParseExposition(*first), b = ParseExposition(*second);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(std::is_sorted(a->family_order.begin(), a->family_order.end()));
  // The RPC counters move between scrapes (the scrape is no RPC, but the
  // values may); the series and their order do not.
  EXPECT_EQ(a->series_order, b->series_order);
}

TEST(MetricsTest, ChannelLabelsOffSumsPerPartition) {
  Kmcld k;
  ASSERT_TRUE(k.Start({"--metrics_listen=127.0.0.1:0", "--metrics_channel_labels=false"}).ok());
  auto one = OfferAndOpen(k, "one", kEchoType);
  ASSERT_TRUE(one.ok());
  ASSERT_TRUE(RunTransactions(k, *one, 10, std::string(8, 'a')).ok());
  auto two = OfferAndOpen(k, "two", "11111111-2222-3333-4444-555555555555");
  ASSERT_TRUE(two.ok());
  ASSERT_TRUE(RunTransactions(k, *two, 20, std::string(8, 'b')).ok());
  auto text = Scrape(k.process.metrics_address());
  ASSERT_TRUE(text.ok());
  auto parsed = ParseExposition(*text);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->samples["kmcld_channel_packets_sent_total{partition=\"default\",role=\"guest\"}"], 30);
  EXPECT_FALSE(absl::StrContains(*text, "channel=\"")) << *text;
  EXPECT_FALSE(absl::StrContains(*text, "friendly_name=")) << *text;
}

}  // namespace
}  // namespace kmcld::testing
