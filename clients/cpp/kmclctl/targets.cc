#include "clients/cpp/kmclctl/targets.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "clients/cpp/client.h"
#include "clients/cpp/kmclctl/struct_access.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace kmclctl {
namespace {

using google::protobuf::Value;

absl::Status Bad(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("targets file: ", what));
}

}  // namespace

std::string DefaultTarget() {
  if (const char* env = std::getenv("KMCLD_TARGET"); env != nullptr && *env != '\0') return env;
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && *xdg != '\0') {
    return absl::StrCat("unix:", xdg, "/kmcld/kmcld.sock");
  }
  if (::getuid() == 0 && ::access("/run", W_OK) == 0) return "unix:/run/kmcld/kmcld.sock";
  return absl::StrCat("unix:/tmp/kmcld-", ::getuid(), "/kmcld.sock");
}

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
    const Value* targets = nullptr;
    std::map<std::string, std::string> labels;
    for (const auto& [name, value] : StructFields(group.struct_value())) {
      if (name == "targets") targets = value;
      if (name != "labels") continue;
      if (value->kind_case() != Value::kStructValue) {
        return Bad(absl::StrCat("group ", g, ": \"labels\" is not an object"));
      }
      for (const auto& [k, v] : StructFields(value->struct_value())) {
        if (v->kind_case() != Value::kStringValue) {
          return Bad(absl::StrCat("group ", g, ": label \"", k, "\" is not a string"));
        }
        labels[k] = v->string_value();
      }
    }
    if (targets == nullptr || targets->kind_case() != Value::kListValue) {
      return Bad(absl::StrCat("group ", g, ": \"targets\" is missing or not a list"));
    }
    for (const Value& t : targets->list_value().values()) {
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

std::string FormatLabels(const Target& target) {
  std::string out;
  for (const auto& [key, value] : target.labels) {
    absl::StrAppend(&out, out.empty() ? "" : ",", key, "=", value);
  }
  return out;
}

google::protobuf::Struct LabelsStruct(const Target& target) {
  google::protobuf::Struct out;
  for (const auto& [key, value] : target.labels) {
    google::protobuf::Value v;
    v.set_string_value(value);
    AddStructField(&out, key, v);
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
