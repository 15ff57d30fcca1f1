#include "daemon/metrics/sd_entry.h"

#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace kmcld::metrics {

std::string Reachable(const std::string& address) {
  if (absl::StartsWith(address, "unix:")) return address;
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return address;
  const std::string host = address.substr(0, colon);
  if (host != "0.0.0.0" && host != "[::]" && host != "::" && !host.empty()) return address;
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0) return address;
  return absl::StrCat(name, address.substr(colon));
}

namespace {

// `text` as a JSON string literal, escaped by protobuf's JSON printer. A
// Value holding a string has no map field, unlike Struct, whose inline map
// accessors crash when this file is built with -fsanitize=thread against
// Debian's libprotobuf (see clients/cpp/kmclctl/struct_access.h).
std::string JsonString(const std::string& text) {
  google::protobuf::Value v;
  v.set_string_value(text);
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(v, &out).ok()) return "\"\"";
  return out;
}

}  // namespace

std::string SdEntryJson(const std::string& grpc_target, const std::string& metrics_address) {
  std::string out = absl::StrCat("[{\"targets\":[", JsonString(Reachable(grpc_target)), "]");
  if (!metrics_address.empty()) {
    absl::StrAppend(&out, ",\"labels\":{", JsonString(kMetricsAddressLabel), ":",
                    JsonString(Reachable(metrics_address)), "}");
  }
  absl::StrAppend(&out, "}]");
  return out;
}

}  // namespace kmcld::metrics
