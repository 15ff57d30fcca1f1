// Unit tests of kmcld's configuration file parsing and validation.
#include "daemon/config.h"

#include <string>
#include <utility>
#include <vector>

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

TEST(ConfigTest, TheDefaultPartitionHasTheFourDevicesAndTheEmulatedGuest) {
  auto c = ParseConfig("");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->default_partition().devices_size(), 1);
  EXPECT_EQ(c->default_partition().devices(0), "default");
  EXPECT_TRUE(c->default_partition().emulated_guest());
  EXPECT_EQ(c->device_heartbeat_timeout_ms(), 5000u);
}

TEST(ConfigTest, TheFilesDeviceListReplacesTheDefaultOne) {
  auto c = ParseConfig(
      "default_partition { devices: \"heartbeat\" devices: \"kvp\" emulated_guest: false }\n"
      "device_heartbeat_timeout_ms: 700");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->default_partition().devices_size(), 2);
  EXPECT_EQ(c->default_partition().devices(0), "heartbeat");
  EXPECT_EQ(c->default_partition().devices(1), "kvp");
  EXPECT_FALSE(c->default_partition().emulated_guest()) << "false is kept: the field is optional";
  EXPECT_EQ(c->device_heartbeat_timeout_ms(), 700u);
  c = ParseConfig("default_partition { devices: \"none\" }");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->default_partition().emulated_guest()) << "unset keeps the default";
}

TEST(ConfigTest, AnUnknownDeviceIsAnErrorNamingIt) {
  auto c = ParseConfig("default_partition { devices: \"floppy\" }");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("default_partition.devices"), absl::string_view::npos) << c.status();
  EXPECT_NE(c.status().message().find("floppy"), absl::string_view::npos) << c.status();
  EXPECT_FALSE(ParseConfig("default_partition { devices: \"kvp\" devices: \"kvp\" }").ok());
  EXPECT_FALSE(ParseConfig("default_partition { devices: \"default\" devices: \"kvp\" }").ok());
}

TEST(ConfigTest, ObservabilityDefaultsAndFields) {
  auto c = ParseConfig("");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->metrics_listen(), "");
  EXPECT_TRUE(c->metrics_channel_labels());
  EXPECT_EQ(c->log_level(), "info");
  EXPECT_EQ(c->log_format(), "text");
  c = ParseConfig(
      "metrics_listen: \"127.0.0.1:9464\"\nmetrics_channel_labels: false\n"
      "log_level: \"warning\"\nlog_format: \"json\"");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->metrics_listen(), "127.0.0.1:9464");
  EXPECT_FALSE(c->metrics_channel_labels()) << "false is kept: the field is optional";
  EXPECT_EQ(c->log_level(), "warning");
  EXPECT_EQ(c->log_format(), "json");
  c = ParseConfig("metrics_listen: \"9464\"");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->metrics_channel_labels()) << "unset keeps the default";
}

TEST(ConfigTest, BadObservabilityValuesAreErrorsNamingTheField) {
  for (const auto& [text, field] : std::vector<std::pair<std::string, std::string>>{
           {"log_level: \"loud\"", "log_level"},
           {"log_format: \"xml\"", "log_format"},
           {"metrics_listen: \"host:port:what\"", "metrics_listen"},
       }) {
    auto c = ParseConfig(text);
    ASSERT_FALSE(c.ok()) << text;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(c.status().message().find(field), absl::string_view::npos) << c.status();
  }
}

TEST(ConfigTest, MissingFileIsNotFound) {
  auto c = LoadConfigFile("/nonexistent/kmcld.conf");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace kmcld
