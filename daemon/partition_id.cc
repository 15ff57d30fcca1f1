#include "daemon/partition_id.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace kmcld {

absl::Status ValidatePartitionId(absl::string_view id) {
  bool ok = !id.empty() && id.size() <= 63;
  for (char c : id) ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-');
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("partition id '", absl::CHexEscape(id.substr(0, 64)),
                                                 id.size() > 64 ? "...' " : "' ",
                                                 "must be 1 to 63 characters of [a-z0-9-]"));
}

}  // namespace kmcld
