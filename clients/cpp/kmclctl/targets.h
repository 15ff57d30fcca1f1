// clients/cpp/kmclctl/targets.h: which kmcld instances a command talks to:
// --target (repeatable) and --targets-file, a Prometheus file_sd JSON
// document, so one inventory serves kmclctl and Prometheus:
//
//   [ {"targets": ["10.0.0.1:50551", "10.0.0.2:50551"], "labels": {"rack": "a"}},
//     {"targets": ["unix:/run/kmcld/kmcld.sock"]} ]
//
// The file is parsed with protobuf's JSON parser (google.protobuf.ListValue)
// and checked against that shape; anything else is INVALID_ARGUMENT.
//
// Thread-safe: free functions.
#ifndef KMCLD_CLIENTS_CPP_KMCLCTL_TARGETS_H_
#define KMCLD_CLIENTS_CPP_KMCLCTL_TARGETS_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/struct.pb.h"

namespace kmclctl {

struct Target {
  std::string address;  // normalised (kmcl::client::NormalizeTarget)
  std::map<std::string, std::string> labels;
};

// Where kmcld listens by default: $KMCLD_TARGET if set, else kmcld's
// default socket (unix:$XDG_RUNTIME_DIR/kmcld/kmcld.sock; as root
// unix:/run/kmcld/kmcld.sock; else unix:/tmp/kmcld-<uid>/kmcld.sock).
std::string DefaultTarget();

// Parses a file_sd document (its text).
absl::StatusOr<std::vector<Target>> ParseFileSd(absl::string_view json);

// A target's labels as a cell: "rack=a,zone=z" (sorted by key); "" for none.
std::string FormatLabels(const Target& target);
// The same as a JSON object ({"rack": "a", ...}).
google::protobuf::Struct LabelsStruct(const Target& target);

// --target values, then the file's targets, without duplicates (first
// wins); `fallback` when both are empty. INVALID_ARGUMENT for a bad one.
absl::StatusOr<std::vector<Target>> ResolveTargets(const std::vector<std::string>& flags,
                                                   const std::string& targets_file,
                                                   const std::string& fallback);

}  // namespace kmclctl

#endif  // KMCLD_CLIENTS_CPP_KMCLCTL_TARGETS_H_
