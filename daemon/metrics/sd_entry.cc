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

std::string SdEntryJson(const std::string& grpc_target, const std::string& metrics_address) {
  google::protobuf::ListValue doc;
  google::protobuf::Struct* group = doc.add_values()->mutable_struct_value();
  auto& fields = *group->mutable_fields();
  fields["targets"].mutable_list_value()->add_values()->set_string_value(Reachable(grpc_target));
  if (!metrics_address.empty()) {
    (*fields["labels"].mutable_struct_value()->mutable_fields())[kMetricsAddressLabel].set_string_value(
        Reachable(metrics_address));
  }
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(doc, &out).ok()) return "[]";
  return out;
}

}  // namespace kmcld::metrics
