#include "kmcl_core/base/ntstatus.h"

#include <optional>

#include "absl/strings/cord.h"
#include "absl/types/optional.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kmcl {

namespace {

// FromNtStatus records the exact value in the status, so that ToNtStatus
// gives back what the peer sent (a STATUS_REVISION_MISMATCH stays one) even
// where several NTSTATUS values share an absl::StatusCode.
constexpr absl::string_view kNtStatusPayload = "kmcld/ntstatus";

std::optional<NTSTATUS> CarriedNtStatus(const absl::Status& status) {
  absl::optional<absl::Cord> payload = status.GetPayload(kNtStatusPayload);
  if (!payload.has_value()) return std::nullopt;
  uint32_t value = 0;
  if (!absl::SimpleHexAtoi(std::string(*payload), &value)) return std::nullopt;
  return NtStatus(value);
}

}  // namespace

std::string NtStatusName(NTSTATUS status) {
  switch (status) {
#define KMCL_NTSTATUS_NAME_(c_name, cxx_name) \
  case c_name:                                \
    return #c_name;
    KMCL_NTSTATUS_LIST(KMCL_NTSTATUS_NAME_)
#undef KMCL_NTSTATUS_NAME_
    default: return absl::StrFormat("0x%08X", static_cast<uint32_t>(status));
  }
}

NTSTATUS ToNtStatus(const absl::Status& status) {
  if (status.ok()) return kStatusSuccess;
  if (std::optional<NTSTATUS> carried = CarriedNtStatus(status); carried.has_value()) {
    return *carried;
  }
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
  absl::Status out;
  switch (status) {
    case kStatusCancelled: out = absl::CancelledError(message); break;
    case kStatusDeviceRemoved: out = absl::UnavailableError(message); break;
    case kStatusInsufficientResources: out = absl::ResourceExhaustedError(message); break;
    case kStatusInvalidParameter:
    case kStatusInvalidParameter1:
    case kStatusInvalidParameter2:
    case kStatusInvalidParameter3:
    case kStatusInvalidParameter4: out = absl::InvalidArgumentError(message); break;
    default: out = absl::FailedPreconditionError(message); break;
  }
  out.SetPayload(kNtStatusPayload,
                 absl::Cord(absl::StrFormat("%08X", static_cast<uint32_t>(status))));
  return out;
}

}  // namespace kmcl
