#include "clients/cpp/kmclctl/targets.h"

#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "clients/cpp/client.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace kmclctl {
namespace {

using google::protobuf::Value;

absl::Status Bad(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("targets file: ", what));
}

}  // namespace

absl::StatusOr<std::vector<Target>> ParseFileSd(absl::string_view json) {
  google::protobuf::ListValue groups;
  auto parsed = google::protobuf::util::JsonStringToMessage(std::string(json), &groups);
  if (!parsed.ok()) {
    return Bad(absl::StrCat("not a JSON list of target groups: ", parsed.message().ToString()));
  }
  std::vector<Target> out;
  for (int g = 0; g < groups.values_size(); ++g) {
    const Value& group = groups.values(g);
    if (group.kind_case() != Value::kStructValue) {
      return Bad(absl::StrCat("group ", g, " is not an object"));
    }
    const auto& fields = group.struct_value().fields();
    std::map<std::string, std::string> labels;
    if (auto it = fields.find("labels"); it != fields.end()) {
      if (it->second.kind_case() != Value::kStructValue) {
        return Bad(absl::StrCat("group ", g, ": \"labels\" is not an object"));
      }
      for (const auto& [k, v] : it->second.struct_value().fields()) {
        if (v.kind_case() != Value::kStringValue) {
          return Bad(absl::StrCat("group ", g, ": label \"", k, "\" is not a string"));
        }
        labels[k] = v.string_value();
      }
    }
    auto it = fields.find("targets");
    if (it == fields.end() || it->second.kind_case() != Value::kListValue) {
      return Bad(absl::StrCat("group ", g, ": \"targets\" is missing or not a list"));
    }
    for (const Value& t : it->second.list_value().values()) {
      if (t.kind_case() != Value::kStringValue) {
        return Bad(absl::StrCat("group ", g, ": a target is not a string"));
      }
      absl::StatusOr<std::string> address = kmcl::client::NormalizeTarget(t.string_value());
      if (!address.ok()) return Bad(absl::StrCat("group ", g, ": ", address.status().message()));
      out.push_back({*address, labels});
    }
  }
  return out;
}

absl::StatusOr<std::vector<Target>> ResolveTargets(const std::vector<std::string>& flags,
                                                   const std::string& targets_file,
                                                   const std::string& fallback) {
  std::vector<Target> all;
  for (const std::string& f : flags) {
    absl::StatusOr<std::string> address = kmcl::client::NormalizeTarget(f);
    if (!address.ok()) return address.status();
    all.push_back({*address, {}});
  }
  if (!targets_file.empty()) {
    std::ifstream in(targets_file);
    if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read ", targets_file));
    std::stringstream text;
    text << in.rdbuf();
    absl::StatusOr<std::vector<Target>> file = ParseFileSd(text.str());
    if (!file.ok()) return file.status();
    all.insert(all.end(), file->begin(), file->end());
  }
  if (all.empty()) {
    absl::StatusOr<std::string> address = kmcl::client::NormalizeTarget(fallback);
    if (!address.ok()) return address.status();
    all.push_back({*address, {}});
  }
  std::vector<Target> unique;
  std::set<std::string> seen;
  for (Target& t : all) {
    if (seen.insert(t.address).second) unique.push_back(std::move(t));
  }
  return unique;
}

}  // namespace kmclctl
