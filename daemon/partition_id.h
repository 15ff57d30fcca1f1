// daemon/partition_id.h: the one rule for partition ids, for every path
// that names a partition (CreatePartition, a restore's target, a saved id a
// restore reuses, the --policy file's grants).
//
//   if (absl::Status s = ValidatePartitionId(id); !s.ok()) return s;
//
// Thread-safe: a pure function.
#ifndef KMCLD_DAEMON_PARTITION_ID_H_
#define KMCLD_DAEMON_PARTITION_ID_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace kmcld {

// OK for 1 to 63 characters of [a-z0-9-]; INVALID_ARGUMENT naming the id
// (escaped, the first 64 characters) and the rule otherwise.
absl::Status ValidatePartitionId(absl::string_view id);

}  // namespace kmcld

#endif  // KMCLD_DAEMON_PARTITION_ID_H_
