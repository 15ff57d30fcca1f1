// daemon/grpc_status.h: the one mapping from kmcl_core's errors to what the
// network edge reports.
//
// Inside kmcld every error is an absl::Status whose code follows the table
// in docs/api.md ("Errors"); absl's canonical codes have the same numbers as
// gRPC's, so ToGrpc keeps the code and the message. NTSTATUS values never
// become call errors: they travel inside responses as kmcl.v1.NtStatus
// (SetNtStatus), with their KMCL name.
//
// Thread-safe (pure functions).
#ifndef KMCLD_DAEMON_GRPC_STATUS_H_
#define KMCLD_DAEMON_GRPC_STATUS_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"
#include "kmcl_core/base/ntstatus.h"
#include "proto/common.pb.h"

namespace kmcld {

// absl::Status -> grpc::Status: same code, same message. Codes outside
// gRPC's range (none today) become INTERNAL.
grpc::Status ToGrpc(const absl::Status& status);

// Fills `out` with `status` and its KMCL name ("STATUS_CANCELLED").
void SetNtStatus(kmcl::NTSTATUS status, kmcl::v1::NtStatus* out);

}  // namespace kmcld

#endif  // KMCLD_DAEMON_GRPC_STATUS_H_
