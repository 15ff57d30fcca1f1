#include "daemon/config.h"

#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "daemon/log.h"
#include "daemon/metrics/http_server.h"
#include "daemon/partition_devices.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

namespace kmcld {

namespace {

// Collects the parser's first error instead of letting protobuf log it.
class ErrorCollector final : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (error.empty()) error = absl::StrCat("line ", line + 1, " column ", column + 1, ": ", message);
  }
  void AddWarning(int, google::protobuf::io::ColumnNumber, const std::string&) override {}
  std::string error;
};

absl::Status Range(const char* field, uint64_t value, uint64_t min, uint64_t max) {
  if (value >= min && value <= max) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, " = ", value, " is outside [", min, ", ",
                                                 max, "]"));
}

}  // namespace

config::KmcldConfig DefaultConfig() {
  config::KmcldConfig c;
  c.set_max_message_bytes(16 << 20);
  c.set_max_streams_per_client(256);
  c.set_packets_in_flight_per_stream(256);
  c.set_deliveries_in_flight(1024);
  c.set_guest_buffer_bytes_per_partition(uint64_t{1} << 30);
  c.set_max_partitions(64);
  c.set_event_retention(65536);
  c.set_attach_linger_ms(30000);
  c.set_lease_idle_ms(60000);
  c.set_max_restore_bytes(uint64_t{1} << 30);
  c.set_max_blocking_calls(256);
  c.mutable_default_partition()->add_devices("default");
  c.mutable_default_partition()->set_emulated_guest(true);
  c.set_device_heartbeat_timeout_ms(5000);
  c.set_metrics_channel_labels(true);
  c.set_log_level("info");
  c.set_log_format("text");
  return c;
}

absl::Status ValidateConfig(const config::KmcldConfig& c) {
  for (absl::Status s : {
           Range("max_message_bytes", c.max_message_bytes(), 4 << 20, 1u << 30),
           Range("max_streams_per_client", c.max_streams_per_client(), 1, 1 << 20),
           Range("packets_in_flight_per_stream", c.packets_in_flight_per_stream(), 1, 65536),
           Range("deliveries_in_flight", c.deliveries_in_flight(), 1, 65536),
           Range("guest_buffer_bytes_per_partition", c.guest_buffer_bytes_per_partition(), 4096,
                 uint64_t{64} << 30),
           Range("max_partitions", c.max_partitions(), 1, 100000),
           Range("event_retention", c.event_retention(), 16, 1 << 24),
           Range("attach_linger_ms", c.attach_linger_ms(), 1, 24u * 3600 * 1000),
           Range("lease_idle_ms", c.lease_idle_ms(), 1, 24u * 3600 * 1000),
           Range("max_restore_bytes", c.max_restore_bytes(), 1 << 20, uint64_t{64} << 30),
           Range("max_blocking_calls", c.max_blocking_calls(), 4, 100000),
           Range("device_heartbeat_timeout_ms", c.device_heartbeat_timeout_ms(), 1, 24u * 3600 * 1000),
       }) {
    if (!s.ok()) return s;
  }
  if (!c.metrics_listen().empty()) {
    if (auto hp = metrics::ParseHostPort(c.metrics_listen()); !hp.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("metrics_listen: ", hp.status().message()));
    }
  }
  if (auto level = log::ParseLevel(c.log_level()); !level.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("log_level: ", level.status().message()));
  }
  if (auto format = log::ParseFormat(c.log_format()); !format.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("log_format: ", format.status().message()));
  }
  const auto& names = c.default_partition().devices();
  if (auto devices = ParseDeviceNames({names.begin(), names.end()}); !devices.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("default_partition.devices: ", devices.status().message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<config::KmcldConfig> ParseConfig(const std::string& text) {
  config::KmcldConfig file;
  google::protobuf::TextFormat::Parser parser;
  ErrorCollector errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &file)) {
    return absl::InvalidArgumentError(errors.error.empty() ? "cannot parse" : errors.error);
  }
  // proto3 scalars merge only when non-zero: zero keeps the default. A
  // repeated field would append: the file's device list replaces ours.
  config::KmcldConfig merged = DefaultConfig();
  if (file.default_partition().devices_size() > 0) merged.mutable_default_partition()->clear_devices();
  merged.MergeFrom(file);
  if (absl::Status s = ValidateConfig(merged); !s.ok()) return s;
  return merged;
}

absl::StatusOr<config::KmcldConfig> LoadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the config file ", path));
  std::stringstream text;
  text << in.rdbuf();
  auto parsed = ParseConfig(text.str());
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", parsed.status().message()));
  }
  return parsed;
}

}  // namespace kmcld
