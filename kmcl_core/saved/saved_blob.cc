#include "kmcl_core/saved/saved_blob.h"

#include <zlib.h>

#include "absl/strings/str_cat.h"

namespace kmcl {

uint32_t Crc32(absl::string_view bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  const auto* p = reinterpret_cast<const Bytef*>(bytes.data());
  size_t left = bytes.size();
  while (left > 0) {  // crc32 takes a uInt length
    uInt n = static_cast<uInt>(std::min<size_t>(left, 1u << 30));
    crc = crc32(crc, p, n);
    p += n;
    left -= n;
  }
  return static_cast<uint32_t>(crc);
}

namespace {

const char* KindName(saved::v1::SavedBlob::Kind kind) {
  switch (kind) {
    case saved::v1::SavedBlob::KIND_CHANNEL: return "a channel";
    case saved::v1::SavedBlob::KIND_PARTITION: return "a partition";
    default: return "an unknown kind of state";
  }
}

}  // namespace

std::string SealBlob(saved::v1::SavedBlob::Kind kind, std::string body) {
  saved::v1::SavedBlob blob;
  blob.set_format_version(kSavedStateFormatVersion);
  blob.set_kind(kind);
  blob.set_body_crc32(Crc32(body));
  blob.set_body(std::move(body));  // large partition bodies are moved, not copied
  return blob.SerializeAsString();
}

absl::StatusOr<std::string> OpenBlob(absl::string_view bytes, saved::v1::SavedBlob::Kind kind) {
  saved::v1::SavedBlob blob;
  if (bytes.empty() || !blob.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InvalidArgumentError(
        absl::StrCat("saved state of ", bytes.size(), " bytes is truncated or corrupt"));
  }
  if (blob.format_version() == 0) {
    return absl::InvalidArgumentError("saved state has no format version: not a kmcl_core blob");
  }
  if (blob.format_version() > kSavedStateFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "saved state is format version ", blob.format_version(), "; this kmcl_core reads up to ",
        kSavedStateFormatVersion));
  }
  if (Crc32(blob.body()) != blob.body_crc32()) {
    return absl::InvalidArgumentError("saved state is corrupt: its checksum does not match");
  }
  if (blob.kind() != kind) {
    return absl::InvalidArgumentError(absl::StrCat("saved state holds ", KindName(blob.kind()),
                                                   ", not ", KindName(kind)));
  }
  return std::move(*blob.mutable_body());
}

}  // namespace kmcl
