#include "daemon/log.h"

#include <sstream>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "spdlog/sinks/ostream_sink.h"

namespace kmcld::log {
namespace {

class LogTest : public ::testing::Test {
 protected:
  void Use(Format format, Level level) {
    Init(format, level, std::make_shared<spdlog::sinks::ostream_sink_mt>(out_));
  }
  ~LogTest() override { Init(Format::kText, Level::kInfo); }
  std::vector<std::string> Lines() {
    return absl::StrSplit(out_.str(), '\n', absl::SkipEmpty());
  }
  std::ostringstream out_;
};

TEST_F(LogTest, JsonLinesParseOneByOne) {
  Use(Format::kJson, Level::kInfo);
  Info("listening on tcp 127.0.0.1:1");
  Channel(Level::kWarning, "ring corrupt", "vm \"1\"", 7, {{"role", "host"}, {"detail", "line\nbreak"}});
  Debug("dropped below the level");
  Error("bad bytes \xff\xfe", {{"peer", "ipv4:127.0.0.1:9"}});
  const std::vector<std::string> lines = Lines();
  ASSERT_EQ(lines.size(), 3u) << out_.str();
  std::vector<nlohmann::json> parsed;
  for (const std::string& line : lines) parsed.push_back(nlohmann::json::parse(line));  // throws if not JSON
  EXPECT_EQ(parsed[0]["level"], "info");
  EXPECT_EQ(parsed[0]["msg"], "listening on tcp 127.0.0.1:1");
  EXPECT_TRUE(parsed[0]["time"].is_string());
  EXPECT_EQ(parsed[1]["level"], "warning");
  EXPECT_EQ(parsed[1]["partition"], "vm \"1\"");
  EXPECT_EQ(parsed[1]["channel"], "7");
  EXPECT_EQ(parsed[1]["role"], "host");
  EXPECT_EQ(parsed[1]["detail"], "line\nbreak");
  EXPECT_EQ(parsed[2]["level"], "error");
  EXPECT_EQ(parsed[2]["peer"], "ipv4:127.0.0.1:9");
}

TEST_F(LogTest, TextKeepsTheKmcldPrefixAndQuotesOddValues) {
  Use(Format::kText, Level::kDebug);
  Info("listening on tcp 127.0.0.1:1");
  Channel(Level::kWarning, "ring corrupt", "default", 3, {{"detail", "bad index"}});
  Debug("shown at debug");
  EXPECT_EQ(out_.str(),
            "kmcld: listening on tcp 127.0.0.1:1\n"
            "kmcld: warning: ring corrupt partition=default channel=3 detail=\"bad index\"\n"
            "kmcld: debug: shown at debug\n");
}

TEST(LogParseTest, FormatsAndLevels) {
  EXPECT_EQ(*ParseFormat("json"), Format::kJson);
  EXPECT_FALSE(ParseFormat("xml").ok());
  EXPECT_EQ(*ParseLevel("WARNING"), Level::kWarning);
  EXPECT_FALSE(ParseLevel("loud").ok());
}

TEST(LimiterTest, AdmitsUpToTheRateAndCountsTheRest) {
  Limiter limiter(2);
  uint64_t dropped = 99;
  EXPECT_TRUE(limiter.Admit(&dropped));
  EXPECT_EQ(dropped, 0u);
  EXPECT_TRUE(limiter.Admit(&dropped));
  EXPECT_FALSE(limiter.Admit(&dropped));
}

}  // namespace
}  // namespace kmcld::log
