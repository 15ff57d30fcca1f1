// clients/cpp/kmclctl/output.h: how kmclctl prints results: aligned tables
// for people (columns marked wide appear only with --output=wide), and
// protobuf's JSON mapping of the API's messages for machines (--json).
// Several targets merge into one table with a TARGET column, or one JSON
// object keyed by target.
//
// Thread-compatible: build on one thread, print from one.
#ifndef KMCLD_CLIENTS_CPP_KMCLCTL_OUTPUT_H_
#define KMCLD_CLIENTS_CPP_KMCLCTL_OUTPUT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/struct.pb.h"

namespace kmclctl {

struct Column {
  std::string name;
  bool wide_only = false;
};

struct Table {
  std::vector<Column> columns;
  std::vector<std::vector<std::string>> rows;  // one cell per column

  // Adds a row; `cells` must match `columns` in number.
  void Add(std::vector<std::string> cells) { rows.push_back(std::move(cells)); }
};

// One target's answer: the API message for --json, and for people either
// a table or free text (a hexdump).
struct Output {
  std::shared_ptr<google::protobuf::Message> message;
  Table table;
  std::string text;  // printed instead of the table when non-empty
};

enum class Format { kTable, kWide, kJson };

// Renders `tables` (one per target, same columns) as one aligned table;
// `targets` non-empty adds a leading TARGET column, and `labels` non-empty
// (one cell per table, "rack=a,zone=z") a LABELS column after it.
std::string RenderTable(const std::vector<const Table*>& tables,
                        const std::vector<std::string>& targets, bool wide,
                        const std::vector<std::string>& labels = {});

// The message in protobuf's JSON mapping (API field names), pretty printed.
absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message, bool pretty = true);
// {"<target>": <message as JSON>, ...}
absl::StatusOr<std::string> ToJsonByTarget(
    const std::vector<std::pair<std::string, const google::protobuf::Message*>>& messages,
    bool pretty = true);

// Cells.
std::string EnumSuffix(const std::string& name, const std::string& prefix);  // "CONNECTION_STATE_OPENED" -> "OPENED"
std::string Bytes(uint64_t n);  // "4.0 GiB", "512 B"
std::string Hexdump(const std::string& data, uint64_t base_offset);

}  // namespace kmclctl

#endif  // KMCLD_CLIENTS_CPP_KMCLCTL_OUTPUT_H_
