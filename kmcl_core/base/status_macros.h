// kmcl_core/base/status_macros.h: early return on error for absl::Status and
// absl::StatusOr, so that propagation is one line instead of three.
//
//   RETURN_IF_ERROR(expr);
//     `expr` is an absl::Status; if it is not OK, the enclosing function
//     returns it (the function returns absl::Status or absl::StatusOr<T>).
//   ASSIGN_OR_RETURN(lhs, expr);
//     `expr` is an absl::StatusOr<T>; if it holds an error the enclosing
//     function returns its status, otherwise its value is moved into `lhs`,
//     which may be a declaration (`auto view`, `std::vector<int> v`) or an
//     existing lvalue (`ring_view_`). `lhs` must not contain a bare comma:
//     name such a type with an alias first.
//
// Both evaluate `expr` exactly once and add nothing to the status: write the
// context into the status where it is made, or annotate it by hand where a
// caller needs more.
#ifndef KMCLD_KMCL_CORE_BASE_STATUS_MACROS_H_
#define KMCLD_KMCL_CORE_BASE_STATUS_MACROS_H_

#include <utility>

#include "absl/base/optimization.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define RETURN_IF_ERROR(expr)                                             \
  do {                                                                    \
    if (::absl::Status kmcl_status_macro_ = (expr);                       \
        ABSL_PREDICT_FALSE(!kmcl_status_macro_.ok())) {                   \
      return kmcl_status_macro_;                                          \
    }                                                                     \
  } while (false)

#define KMCL_STATUS_MACROS_CONCAT_INNER_(a, b) a##b
#define KMCL_STATUS_MACROS_CONCAT_(a, b) KMCL_STATUS_MACROS_CONCAT_INNER_(a, b)

#define ASSIGN_OR_RETURN(lhs, expr) \
  KMCL_ASSIGN_OR_RETURN_IMPL_(KMCL_STATUS_MACROS_CONCAT_(kmcl_statusor_, __LINE__), lhs, expr)

#define KMCL_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                \
  if (ABSL_PREDICT_FALSE(!statusor.ok())) {              \
    return std::move(statusor).status();                 \
  }                                                      \
  lhs = *std::move(statusor)

#endif  // KMCLD_KMCL_CORE_BASE_STATUS_MACROS_H_
