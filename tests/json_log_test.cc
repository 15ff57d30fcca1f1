// kmcld --log_format=json: every line it writes, from start-up to shutdown,
// parses as a JSON object with time, level and msg; channel events carry
// the partition and the channel; a bad request is a warning naming the peer.
#include <signal.h>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/traffic.h"

namespace kmcld::testing {
namespace {

TEST(JsonLogTest, EveryLineParsesAndCarriesItsFields) {
  Kmcld k;
  ASSERT_TRUE(k.Start({"--log_format=json"}).ok()) << k.process.output();
  auto ch = OfferAndOpen(k, "logged");
  ASSERT_TRUE(ch.ok()) << ch.status();
  kmcl::v1::OfferChannelRequest bad;  // no such partition
  bad.set_partition_id("");
  bad.mutable_settings()->mutable_interface_type()->set_value("not a guid");
  kmcl::v1::ChannelResponse ignored;
  EXPECT_FALSE(k.host->OfferChannel(Kmcld::Context().get(), bad, &ignored).ok());
  auto code = k.process.Stop(SIGTERM);
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0);

  bool opened = false, warned = false;
  std::string last;
  const std::vector<std::string> lines = absl::StrSplit(k.process.output(), '\n', absl::SkipEmpty());
  for (const std::string& line : lines) {
    nlohmann::json j = nlohmann::json::parse(line);  // throws (fails the test) if not JSON
    ASSERT_TRUE(j.is_object()) << line;
    ASSERT_TRUE(j["time"].is_string() && j["level"].is_string() && j["msg"].is_string()) << line;
    if (j["msg"] == "opened" && j.value("role", "") == "host") {
      opened = true;
      EXPECT_EQ(j["partition"], "default") << line;
      EXPECT_EQ(j["channel"], std::to_string(ch->ref.channel_id())) << line;
    }
    if (j["msg"] == "bad request") {
      warned = true;
      EXPECT_EQ(j["level"], "warning") << line;
      EXPECT_EQ(j["method"], "/kmcl.v1.HostChannelService/OfferChannel") << line;
      EXPECT_FALSE(j["peer"].get<std::string>().empty()) << line;
    }
    last = j["msg"];
  }
  EXPECT_TRUE(opened) << k.process.output();
  EXPECT_TRUE(warned) << k.process.output();
  EXPECT_EQ(last, "stopped");
}

}  // namespace
}  // namespace kmcld::testing
