// kmcl_core/ntstatus.h: NTSTATUS, the status type of the KMCL compatibility
// surface, with the values KMCL documents (kmcl_api.md 3.7), and the one
// mapping between it and absl::Status.
//
// Inside kmcl_core errors are absl::Status; the KMCL surface converts with
// ToNtStatus (choosing the documented code for each condition where KMCL
// names one) and completions carry NTSTATUS values to peers. Remember that
// STATUS_BUFFER_OVERFLOW and STATUS_MORE_PROCESSING_REQUIRED are not
// NT_SUCCESS.
#ifndef KMCLD_KMCL_CORE_NTSTATUS_H_
#define KMCLD_KMCL_CORE_NTSTATUS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace kmcl {

using NTSTATUS = int32_t;

inline constexpr NTSTATUS NtStatus(uint32_t value) { return static_cast<NTSTATUS>(value); }

inline constexpr NTSTATUS kStatusSuccess = NtStatus(0x00000000);
inline constexpr NTSTATUS kStatusPending = NtStatus(0x00000103);
inline constexpr NTSTATUS kStatusBufferOverflow = NtStatus(0x80000005);
inline constexpr NTSTATUS kStatusUnsuccessful = NtStatus(0xC0000001);
inline constexpr NTSTATUS kStatusInvalidHandle = NtStatus(0xC0000008);
inline constexpr NTSTATUS kStatusInvalidParameter = NtStatus(0xC000000D);
inline constexpr NTSTATUS kStatusMoreProcessingRequired = NtStatus(0xC0000016);
inline constexpr NTSTATUS kStatusBufferTooSmall = NtStatus(0xC0000023);
inline constexpr NTSTATUS kStatusInsufficientResources = NtStatus(0xC000009A);
inline constexpr NTSTATUS kStatusNotSupported = NtStatus(0xC00000BB);
inline constexpr NTSTATUS kStatusInvalidParameter1 = NtStatus(0xC00000EF);
inline constexpr NTSTATUS kStatusInvalidParameter2 = NtStatus(0xC00000F0);
inline constexpr NTSTATUS kStatusInvalidParameter3 = NtStatus(0xC00000F1);
inline constexpr NTSTATUS kStatusInvalidParameter4 = NtStatus(0xC00000F2);
inline constexpr NTSTATUS kStatusCancelled = NtStatus(0xC0000120);
inline constexpr NTSTATUS kStatusInvalidDeviceState = NtStatus(0xC0000184);
inline constexpr NTSTATUS kStatusDeviceRemoved = NtStatus(0xC00002B6);
inline constexpr NTSTATUS kStatusRevisionMismatch = NtStatus(0xC0000059);
inline constexpr NTSTATUS kStatusDataError = NtStatus(0xC000003E);
inline constexpr NTSTATUS kStatusTimeout = NtStatus(0x00000102);

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

#endif  // KMCLD_KMCL_CORE_NTSTATUS_H_
