// kmcl_core/base/ntstatus.h: NTSTATUS, the status type of the KMCL compatibility
// surface, with the values KMCL documents (Windows' ntstatus.h), and the one
// mapping between it and absl::Status.
//
// Inside kmcl_core errors are absl::Status; the KMCL surface converts with
// ToNtStatus (choosing the documented code for each condition where KMCL
// names one) and completions carry NTSTATUS values to peers. Remember that
// STATUS_BUFFER_OVERFLOW and STATUS_MORE_PROCESSING_REQUIRED are not
// NT_SUCCESS.
#ifndef KMCLD_KMCL_CORE_BASE_NTSTATUS_H_
#define KMCLD_KMCL_CORE_BASE_NTSTATUS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "kmcl_core/base/ntstatus_values.h"

namespace kmcl {

using NTSTATUS = ::NTSTATUS;  // int32_t

inline constexpr NTSTATUS NtStatus(uint32_t value) { return static_cast<NTSTATUS>(value); }

// kStatusSuccess, kStatusCancelled, ...: the C++ names of the values in
// ntstatus_values.h (one list for C and C++).
#define KMCL_NTSTATUS_CONSTANT_(c_name, cxx_name) inline constexpr NTSTATUS cxx_name = c_name;
KMCL_NTSTATUS_LIST(KMCL_NTSTATUS_CONSTANT_)
#undef KMCL_NTSTATUS_CONSTANT_

// NT_SUCCESS: severity success or informational.
inline constexpr bool NtSuccess(NTSTATUS status) { return status >= 0; }

// "STATUS_CANCELLED" etc.; "0x%08X" for values without a name here.
std::string NtStatusName(NTSTATUS status);

// absl::Status -> NTSTATUS, the one mapping used at the KMCL surface:
// OK -> SUCCESS; INVALID_ARGUMENT -> INVALID_PARAMETER; RESOURCE_EXHAUSTED ->
// INSUFFICIENT_RESOURCES; FAILED_PRECONDITION -> INVALID_DEVICE_STATE;
// CANCELLED -> CANCELLED; UNAVAILABLE -> DEVICE_REMOVED; DEADLINE_EXCEEDED ->
// TIMEOUT; UNIMPLEMENTED -> NOT_SUPPORTED; DATA_LOSS -> DATA_ERROR; NOT_FOUND ->
// INVALID_HANDLE; anything else -> UNSUCCESSFUL. Call sites that KMCL
// documents with a specific code (STATUS_INVALID_PARAMETER_1 for a bad
// channel, ...) return that code directly instead.
NTSTATUS ToNtStatus(const absl::Status& status);

// NTSTATUS -> absl::Status for statuses that arrive from peers (open
// results, GPADL creation): success -> OK, else an error naming the value.
absl::Status FromNtStatus(NTSTATUS status, absl::string_view context);

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_BASE_NTSTATUS_H_
