// Unit tests of kmcld's configuration file parsing and validation.
#include "daemon/config.h"

#include "gtest/gtest.h"

namespace kmcld {
namespace {

TEST(ConfigTest, EmptyFileGivesTheDefaults) {
  auto c = ParseConfig("");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->attach_linger_ms(), 30000u);
  EXPECT_EQ(c->packets_in_flight_per_stream(), 256u);
  EXPECT_TRUE(ValidateConfig(DefaultConfig()).ok());
}

TEST(ConfigTest, FieldsOverrideAndZeroKeepsTheDefault) {
  auto c = ParseConfig("attach_linger_ms: 500\nmax_partitions: 0\n# comment\nevent_retention: 64");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->attach_linger_ms(), 500u);
  EXPECT_EQ(c->max_partitions(), 64u);
  EXPECT_EQ(c->event_retention(), 64u);
}

TEST(ConfigTest, UnknownFieldIsAnErrorNamingIt) {
  auto c = ParseConfig("attach_linger_ms: 5\nno_such_field: 3\n");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("no_such_field"), absl::string_view::npos) << c.status();
  EXPECT_NE(c.status().message().find("line 2"), absl::string_view::npos) << c.status();
}

TEST(ConfigTest, OutOfRangeValueIsAnErrorNamingTheField) {
  auto c = ParseConfig("event_retention: 3");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("event_retention"), absl::string_view::npos) << c.status();
  c = ParseConfig("max_message_bytes: -1");
  EXPECT_FALSE(c.ok());
  c = ParseConfig("attach_linger_ms: \"soon\"");
  EXPECT_FALSE(c.ok());
}

TEST(ConfigTest, MissingFileIsNotFound) {
  auto c = LoadConfigFile("/nonexistent/kmcld.conf");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace kmcld
