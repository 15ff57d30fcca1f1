// clients/cpp/status.h: how the kmcl client library reports errors.
//
// Every call returns absl::Status / absl::StatusOr. A daemon error keeps the
// gRPC code (absl's canonical codes are gRPC's numbers) and its message, and
// the library prefixes the method name: "OfferChannel: partition 'x' not
// found". Errors the library finds itself (bad target, payload above the
// channel's maximum) use the same codes the daemon would.
//
// Thread-safe: free functions without state.
#ifndef KMCLD_CLIENTS_CPP_STATUS_H_
#define KMCLD_CLIENTS_CPP_STATUS_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/status.h"
#include "kmcl_core/base/status_macros.h"

namespace kmcl::client {

// grpc::Status -> absl::Status; the message is "<what>: <grpc message>".
absl::Status FromGrpc(const grpc::Status& status, absl::string_view what);

// absl::Status -> grpc::Status (the edge, e.g. a tool that serves gRPC).
grpc::Status ToGrpc(const absl::Status& status);

// Propagation helpers for code built on the library: the names this library
// has always offered for kmcl_core/base/status_macros.h's RETURN_IF_ERROR and
// ASSIGN_OR_RETURN (one definition).
#define KMCL_RETURN_IF_ERROR(expr) RETURN_IF_ERROR(expr)
#define KMCL_ASSIGN_OR_RETURN(lhs, expr) ASSIGN_OR_RETURN(lhs, expr)

}  // namespace kmcl::client

#endif  // KMCLD_CLIENTS_CPP_STATUS_H_
