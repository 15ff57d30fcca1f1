#include "kmcl_core/ntstatus.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kmcl {

std::string NtStatusName(NTSTATUS status) {
  switch (static_cast<uint32_t>(status)) {
    case 0x00000000: return "STATUS_SUCCESS";
    case 0x00000102: return "STATUS_TIMEOUT";
    case 0x00000103: return "STATUS_PENDING";
    case 0x80000005: return "STATUS_BUFFER_OVERFLOW";
    case 0xC0000001: return "STATUS_UNSUCCESSFUL";
    case 0xC0000008: return "STATUS_INVALID_HANDLE";
    case 0xC000000D: return "STATUS_INVALID_PARAMETER";
    case 0xC0000016: return "STATUS_MORE_PROCESSING_REQUIRED";
    case 0xC0000023: return "STATUS_BUFFER_TOO_SMALL";
    case 0xC000003E: return "STATUS_DATA_ERROR";
    case 0xC0000059: return "STATUS_REVISION_MISMATCH";
    case 0xC000009A: return "STATUS_INSUFFICIENT_RESOURCES";
    case 0xC00000BB: return "STATUS_NOT_SUPPORTED";
    case 0xC00000EF: return "STATUS_INVALID_PARAMETER_1";
    case 0xC00000F0: return "STATUS_INVALID_PARAMETER_2";
    case 0xC00000F1: return "STATUS_INVALID_PARAMETER_3";
    case 0xC00000F2: return "STATUS_INVALID_PARAMETER_4";
    case 0xC0000120: return "STATUS_CANCELLED";
    case 0xC0000184: return "STATUS_INVALID_DEVICE_STATE";
    case 0xC00002B6: return "STATUS_DEVICE_REMOVED";
    default: return absl::StrFormat("0x%08X", static_cast<uint32_t>(status));
  }
}

NTSTATUS ToNtStatus(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk: return kStatusSuccess;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange: return kStatusInvalidParameter;
    case absl::StatusCode::kResourceExhausted: return kStatusInsufficientResources;
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAlreadyExists: return kStatusInvalidDeviceState;
    case absl::StatusCode::kCancelled: return kStatusCancelled;
    case absl::StatusCode::kUnavailable: return kStatusDeviceRemoved;
    case absl::StatusCode::kDeadlineExceeded: return kStatusTimeout;
    case absl::StatusCode::kUnimplemented: return kStatusNotSupported;
    case absl::StatusCode::kDataLoss: return kStatusDataError;
    case absl::StatusCode::kNotFound: return kStatusInvalidHandle;
    default: return kStatusUnsuccessful;
  }
}

absl::Status FromNtStatus(NTSTATUS status, absl::string_view context) {
  if (NtSuccess(status)) return absl::OkStatus();
  std::string message = absl::StrCat(context, ": ", NtStatusName(status));
  switch (static_cast<uint32_t>(status)) {
    case 0xC0000120: return absl::CancelledError(message);
    case 0xC00002B6: return absl::UnavailableError(message);
    case 0xC000009A: return absl::ResourceExhaustedError(message);
    case 0xC000000D:
    case 0xC00000EF:
    case 0xC00000F0:
    case 0xC00000F1:
    case 0xC00000F2: return absl::InvalidArgumentError(message);
    default: return absl::FailedPreconditionError(message);
  }
}

}  // namespace kmcl
