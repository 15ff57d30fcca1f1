#include "daemon/grpc_status.h"

#include <string>

namespace kmcld {

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  const int code = static_cast<int>(status.code());
  if (code <= 0 || code > static_cast<int>(grpc::StatusCode::UNAUTHENTICATED)) {
    return grpc::Status(grpc::StatusCode::INTERNAL, std::string(status.message()));
  }
  return grpc::Status(static_cast<grpc::StatusCode>(code), std::string(status.message()));
}

void SetNtStatus(kmcl::NTSTATUS status, kmcl::v1::NtStatus* out) {
  out->set_code(static_cast<uint32_t>(status));
  out->set_name(kmcl::NtStatusName(status));
}

}  // namespace kmcld
