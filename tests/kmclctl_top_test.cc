// kmclctl top --once against two kmcld processes: known traffic runs on one
// channel of each between top's two rounds, and the frame shows both
// targets' channels with rates that match it within the window's slack.
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "clients/cpp/testing/subprocess.h"
#include "gtest/gtest.h"
#include "tests/traffic.h"

namespace kmcld::testing {
namespace {

using kmcl::client::testing::Background;
using kmcl::client::testing::Runfile;

// The frame's rows by friendly name: column header -> cell (no cell here
// holds a space).
std::map<std::string, std::map<std::string, std::string>> Rows(const std::string& out) {
  std::vector<std::string> lines = absl::StrSplit(out, '\n', absl::SkipEmpty());
  std::map<std::string, std::map<std::string, std::string>> rows;
  std::vector<std::string> header;
  for (const std::string& line : lines) {
    std::vector<std::string> cells = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (!cells.empty() && cells[0] == "TARGET") {
      header = cells;
      continue;
    }
    if (header.empty() || cells.size() != header.size()) continue;
    std::map<std::string, std::string> row;
    for (size_t i = 0; i < cells.size(); ++i) row[header[i]] = cells[i];
    rows[row["INTERFACE"]] = row;
  }
  return rows;
}

double Number(const std::string& s) {
  double v = -1;
  EXPECT_TRUE(absl::SimpleAtod(s, &v)) << s;
  return v;
}

TEST(KmclctlTopTest, OnceShowsBothTargetsWithTheirRates) {
  Kmcld a, b;
  ASSERT_TRUE(a.Start().ok());
  ASSERT_TRUE(b.Start().ok());
  auto ca = OfferAndOpen(a, "alpha");
  auto cb = OfferAndOpen(b, "bravo");
  ASSERT_TRUE(ca.ok() && cb.ok());

  constexpr double kInterval = 3;
  Background top({Runfile("clients/cpp/kmclctl/kmclctl"), "-t", a.process.tcp_address(), "-t",
                  b.process.tcp_address(), "top", "--once", "--interval=3"},
                 /*with_stderr=*/true);
  ASSERT_TRUE(top.WaitForStdout("first sample taken").ok()) << top.out();
  // Between the two rounds: 120 packets of 64 bytes on alpha, 60 of 32 on bravo,
  // guest to host.
  ASSERT_TRUE(RunTransactions(a, *ca, 120, std::string(64, 'a')).ok());
  ASSERT_TRUE(RunTransactions(b, *cb, 60, std::string(32, 'b')).ok());
  ASSERT_EQ(top.Wait(), 0) << top.out();

  auto rows = Rows(top.out());
  ASSERT_TRUE(rows.contains("alpha") && rows.contains("bravo")) << top.out();
  EXPECT_EQ(rows["alpha"]["TARGET"], a.process.tcp_address());
  EXPECT_EQ(rows["bravo"]["TARGET"], b.process.tcp_address());
  EXPECT_EQ(rows["alpha"]["STATE"], "OPENED/OPENED");
  // The window is the interval plus the second round's latency: the rate
  // is at most count / interval, and not far below it.
  auto expect_rate = [&](const std::string& name, const std::string& column, double count) {
    const double rate = Number(rows[name][column]);
    EXPECT_LE(rate, count / kInterval + 0.1) << name << " " << column << "\n" << top.out();
    EXPECT_GE(rate, count / (kInterval * 1.5)) << name << " " << column << "\n" << top.out();
  };
  expect_rate("alpha", "G2H_PKT/S", 120);
  expect_rate("alpha", "G2H_B/S", 120 * 64);
  expect_rate("bravo", "G2H_PKT/S", 60);
  expect_rate("bravo", "G2H_B/S", 60 * 32);
  EXPECT_EQ(Number(rows["alpha"]["H2G_PKT/S"]), 0);  // completions are not packets
  EXPECT_EQ(rows["alpha"]["OUTSTANDING"], "0");
  // Sorted by traffic: alpha (more bytes/s) before bravo.
  EXPECT_LT(top.out().find("alpha"), top.out().find("bravo"));
}

}  // namespace
}  // namespace kmcld::testing
