// daemon/config.h: kmcld's effective configuration: defaults, then the
// --config file (daemon/config.proto, text format), then flags given on the
// command line. Every limit is validated here once; a bad file or value is
// an error naming the field, and kmcld exits before listening.
//
// Thread-compatible: built once at start-up.
#ifndef KMCLD_DAEMON_CONFIG_H_
#define KMCLD_DAEMON_CONFIG_H_

#include <string>

#include "absl/status/statusor.h"
#include "daemon/config.pb.h"

namespace kmcld {

// The defaults, every field set.
config::KmcldConfig DefaultConfig();

// Parses `text` (protobuf text format) over the defaults. INVALID_ARGUMENT
// naming the line and field for a syntax error, an unknown field, or a
// value out of range.
absl::StatusOr<config::KmcldConfig> ParseConfig(const std::string& text);

// Reads and parses `path`; NOT_FOUND / PERMISSION_DENIED naming it.
absl::StatusOr<config::KmcldConfig> LoadConfigFile(const std::string& path);

// Checks every limit of a complete configuration.
absl::Status ValidateConfig(const config::KmcldConfig& config);

}  // namespace kmcld

#endif  // KMCLD_DAEMON_CONFIG_H_
