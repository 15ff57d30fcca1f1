// Debian's real Prometheus server scrapes a kmcld on loopback through the
// inventory kmcld logged at start-up (file_sd, relabelled to the metrics
// address), known traffic runs, and Prometheus's HTTP API must report the
// counters equal to the traffic sent, with the gRPC address as the
// instance. kmclctl reads the same inventory file.
//
// Prometheus listens on 127.0.0.1:0; its port is found from its own
// listening socket in /proc once it logs that it is ready.
#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "clients/cpp/testing/subprocess.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/traffic.h"

namespace kmcld::testing {
namespace {

using kmcl::client::testing::Background;

using kmcl::client::testing::Runfile;

// The TCP port `pid` listens on (the first listening socket it owns), or 0.
int ListeningPort(pid_t pid) {
  std::set<std::string> inodes;
  const std::string fd_dir = absl::StrCat("/proc/", pid, "/fd");
  if (DIR* d = ::opendir(fd_dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      char target[256] = {};
      const std::string link = absl::StrCat(fd_dir, "/", e->d_name);
      const ssize_t n = ::readlink(link.c_str(), target, sizeof(target) - 1);
      absl::string_view t(target, n > 0 ? n : 0);
      if (absl::ConsumePrefix(&t, "socket:[") && absl::ConsumeSuffix(&t, "]")) inodes.insert(std::string(t));
    }
    ::closedir(d);
  }
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
      // sl local_address rem_address st ... inode (field 9)
      if (f.size() < 10 || f[3] != "0A" || !inodes.contains(f[9])) continue;
      const std::string port_hex = f[1].substr(f[1].rfind(':') + 1);
      return static_cast<int>(std::strtol(port_hex.c_str(), nullptr, 16));
    }
  }
  return 0;
}

// The value of the one series `query` selects, or an error.
absl::StatusOr<double> Query(httplib::Client& prometheus, const std::string& query,
                             std::map<std::string, std::string>* labels = nullptr) {
  auto res = prometheus.Get("/api/v1/query", httplib::Params{{"query", query}}, httplib::Headers{});
  if (!res || res->status != 200) return absl::UnavailableError("query failed");
  nlohmann::json j = nlohmann::json::parse(res->body);
  const auto& result = j["data"]["result"];
  if (result.size() != 1) return absl::NotFoundError(absl::StrCat(result.size(), " series for ", query));
  if (labels != nullptr) {
    for (const auto& [k, v] : result[0]["metric"].items()) (*labels)[k] = v.get<std::string>();
  }
  double v = 0;
  if (!absl::SimpleAtod(result[0]["value"][1].get<std::string>(), &v)) return absl::InternalError("value");
  return v;
}

TEST(PrometheusTest, ScrapedCountersEqualTrafficSent) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  Kmcld k;
  ASSERT_TRUE(k.Start({"--metrics_listen=127.0.0.1:0"}).ok());
  ASSERT_FALSE(k.process.sd_entry().empty()) << k.process.output();
  const std::string inventory = absl::StrCat(dir, "/fleet.json");
  std::ofstream(inventory) << k.process.sd_entry() << "\n";
  const std::string config = absl::StrCat(dir, "/prometheus.yml");
  std::ofstream(config) << "global:\n"
                           "  scrape_interval: 1s\n"
                           "scrape_configs:\n"
                           "  - job_name: kmcld\n"
                           "    file_sd_configs:\n"
                           "      - files: ['" << inventory << "']\n"
                           "    relabel_configs:\n"
                           "      - source_labels: [__address__]\n"
                           "        target_label: instance\n"
                           "      - source_labels: [__kmcld_metrics_address]\n"
                           "        target_label: __address__\n";

  Background prometheus({"/usr/bin/prometheus", "--config.file=" + config,
                         "--storage.tsdb.path=" + dir + "/data", "--web.listen-address=127.0.0.1:0"},
                        /*with_stderr=*/true);
  ASSERT_TRUE(prometheus.WaitForStdout("Server is ready to receive web requests", absl::Seconds(60)).ok())
      << prometheus.out();
  const int port = ListeningPort(prometheus.pid());
  ASSERT_GT(port, 0) << "no listening socket of prometheus";
  httplib::Client api("127.0.0.1", port);
  api.set_read_timeout(10, 0);

  auto ch = OfferAndOpen(k, "scraped");
  ASSERT_TRUE(ch.ok());
  constexpr int kPackets = 123;
  ASSERT_TRUE(RunTransactions(k, *ch, kPackets, std::string(40, 'p')).ok());

  // Prometheus scrapes every second: wait (bounded) until a scrape after
  // the traffic is stored, then compare every counter.
  const std::string guest = "{job=\"kmcld\",role=\"guest\",friendly_name=\"scraped\"}";
  const std::string host = "{job=\"kmcld\",role=\"host\",friendly_name=\"scraped\"}";
  std::map<std::string, std::string> labels;
  absl::StatusOr<double> sent = absl::NotFoundError("not yet");
  for (absl::Time deadline = absl::Now() + absl::Seconds(60); absl::Now() < deadline;) {
    sent = Query(api, "kmcld_channel_packets_sent_total" + guest, &labels);
    if (sent.ok() && *sent == kPackets) break;
    absl::SleepFor(absl::Milliseconds(200));  // polling Prometheus's API, which has no push
  }
  ASSERT_TRUE(sent.ok()) << sent.status() << "\n" << prometheus.out();
  EXPECT_EQ(*sent, kPackets);
  EXPECT_EQ(*Query(api, "kmcld_channel_bytes_sent_total" + guest), kPackets * 40);
  EXPECT_EQ(*Query(api, "kmcld_channel_completions_received_total" + guest), kPackets);
  EXPECT_EQ(*Query(api, "kmcld_channel_completion_latency_seconds_count" + guest), kPackets);
  EXPECT_EQ(*Query(api, "kmcld_channel_packets_received_total" + host), kPackets);
  EXPECT_EQ(*Query(api, "kmcld_channel_bytes_received_total" + host), kPackets * 40);
  EXPECT_EQ(*Query(api, "kmcld_channel_completions_sent_total" + host), kPackets);
  // The inventory's target (kmcld's gRPC address) names the instance; the
  // metrics address label stays out of the stored series.
  EXPECT_EQ(labels["instance"], k.process.tcp_address());
  EXPECT_FALSE(labels.contains("__kmcld_metrics_address"));
  EXPECT_EQ(*Query(api, "up{job=\"kmcld\"}"), 1);

  // kmclctl reads the very same file.
  auto health = kmcl::client::testing::Run({Runfile("clients/cpp/kmclctl/kmclctl"), "--targets-file", inventory, "health"});
  EXPECT_EQ(health.exit_code, 0) << health.out << health.err;

  prometheus.Signal(SIGTERM);
  EXPECT_EQ(prometheus.Wait(), 0) << prometheus.out();
}

}  // namespace
}  // namespace kmcld::testing
