#include "clients/cpp/kmclctl/output.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "clients/cpp/kmclctl/struct_access.h"
#include "google/protobuf/util/json_util.h"

namespace kmclctl {

std::string RenderTable(const std::vector<const Table*>& tables,
                        const std::vector<std::string>& targets, bool wide,
                        const std::vector<std::string>& labels) {
  if (tables.empty()) return "";
  const std::vector<Column>& columns = tables[0]->columns;
  std::vector<size_t> shown;
  for (size_t c = 0; c < columns.size(); ++c) {
    if (wide || !columns[c].wide_only) shown.push_back(c);
  }
  std::vector<std::vector<std::string>> lines;
  std::vector<std::string> header;
  if (!targets.empty()) header.push_back("TARGET");
  if (!labels.empty()) header.push_back("LABELS");
  for (size_t c : shown) header.push_back(columns[c].name);
  lines.push_back(header);
  for (size_t t = 0; t < tables.size(); ++t) {
    for (const auto& row : tables[t]->rows) {
      std::vector<std::string> line;
      if (!targets.empty()) line.push_back(targets[t]);
      if (!labels.empty()) line.push_back(labels[t].empty() ? "-" : labels[t]);
      for (size_t c : shown) line.push_back(c < row.size() ? row[c] : "");
      lines.push_back(std::move(line));
    }
  }
  std::vector<size_t> width(header.size(), 0);
  for (const auto& line : lines) {
    for (size_t i = 0; i < line.size(); ++i) width[i] = std::max(width[i], line[i].size());
  }
  std::string out;
  for (const auto& line : lines) {
    std::string text;
    for (size_t i = 0; i < line.size(); ++i) {
      absl::StrAppend(&text, line[i]);
      if (i + 1 < line.size()) text.append(width[i] - line[i].size() + 2, ' ');
    }
    absl::StrAppend(&out, text, "\n");
  }
  return out;
}

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message, bool pretty) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = pretty;
  options.preserve_proto_field_names = true;  // the API's field names
  std::string out;
  auto status = google::protobuf::util::MessageToJsonString(message, &out, options);
  if (!status.ok()) return absl::InternalError(std::string(status.message()));
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

absl::StatusOr<std::string> ToJsonByTarget(
    const std::vector<std::pair<std::string, const google::protobuf::Message*>>& messages,
    bool pretty) {
  google::protobuf::Struct merged;
  for (const auto& [target, message] : messages) {
    absl::StatusOr<std::string> json = ToJson(*message, false);
    if (!json.ok()) return json.status();
    google::protobuf::Value value;
    auto status = google::protobuf::util::JsonStringToMessage(*json, &value);
    if (!status.ok()) return absl::InternalError(std::string(status.message()));
    AddStructField(&merged, target, value);
  }
  return ToJson(merged, pretty);
}

std::string EnumSuffix(const std::string& name, const std::string& prefix) {
  if (absl::StartsWith(name, prefix)) return name.substr(prefix.size());
  return name;
}

std::string Bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  if (u == 0) return absl::StrCat(n, " B");
  return absl::StrFormat("%.1f %s", v, units[u]);
}

std::string Hexdump(const std::string& data, uint64_t base_offset) {
  std::string out;
  for (size_t line = 0; line < data.size(); line += 16) {
    absl::StrAppendFormat(&out, "%08x  ", base_offset + line);
    std::string ascii;
    for (size_t i = 0; i < 16; ++i) {
      if (line + i < data.size()) {
        const unsigned char c = static_cast<unsigned char>(data[line + i]);
        absl::StrAppendFormat(&out, "%02x ", c);
        ascii.push_back(c >= 0x20 && c < 0x7f ? static_cast<char>(c) : '.');
      } else {
        out += "   ";
      }
      if (i == 7) out += " ";
    }
    absl::StrAppend(&out, " |", ascii, "|\n");
  }
  return out;
}

}  // namespace kmclctl
