#include "kmcl_core/saved/saved_blob.h"

#include <zlib.h>

#include <limits>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"

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

namespace {

// The envelope's fields as read in place: the body stays in the caller's
// buffer. Protobuf would copy a `bytes` field into a string, which for a
// 160 MiB partition is a fresh allocation the kernel faults in page by
// page (docs/performance.md, "Save and restore").
struct Envelope {
  uint32_t format_version = 0;
  uint32_t kind = 0;
  absl::string_view body;
  uint32_t body_crc32 = 0;
};

// Reads a SavedBlob's wire form (proto3 semantics: fields in any order, the
// last occurrence wins, unknown fields skipped). False if it is malformed.
bool ReadEnvelope(absl::string_view bytes, Envelope& out) {
  if (bytes.size() > static_cast<size_t>(std::numeric_limits<int>::max())) return false;
  namespace io = google::protobuf::io;
  io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                          static_cast<int>(bytes.size()));
  for (;;) {
    const uint32_t tag = in.ReadTag();
    if (tag == 0) return in.CurrentPosition() == static_cast<int>(bytes.size());
    const uint32_t field = tag >> 3;
    if (field == 0) return false;
    uint64_t varint = 0;
    uint32_t fixed32 = 0;
    uint64_t fixed64 = 0;
    uint32_t length = 0;
    switch (tag & 7) {
      case 0:  // varint
        if (!in.ReadVarint64(&varint)) return false;
        if (field == 1) out.format_version = static_cast<uint32_t>(varint);
        if (field == 2) out.kind = static_cast<uint32_t>(varint);
        break;
      case 1:  // fixed64
        if (!in.ReadLittleEndian64(&fixed64)) return false;
        break;
      case 2: {  // length-delimited
        if (!in.ReadVarint32(&length)) return false;
        const int at = in.CurrentPosition();
        if (length > bytes.size() - static_cast<size_t>(at) || !in.Skip(static_cast<int>(length))) {
          return false;
        }
        if (field == 3) out.body = bytes.substr(static_cast<size_t>(at), length);
        break;
      }
      case 5:  // fixed32
        if (!in.ReadLittleEndian32(&fixed32)) return false;
        if (field == 4) out.body_crc32 = fixed32;
        break;
      default:  // groups (never written) and invalid wire types
        return false;
    }
  }
}

}  // namespace

absl::StatusOr<absl::string_view> OpenBlobInPlace(absl::string_view bytes,
                                                  saved::v1::SavedBlob::Kind kind) {
  Envelope blob;
  if (bytes.empty() || !ReadEnvelope(bytes, blob)) {
    return absl::InvalidArgumentError(
        absl::StrCat("saved state of ", bytes.size(), " bytes is truncated or corrupt"));
  }
  if (blob.format_version == 0) {
    return absl::InvalidArgumentError("saved state has no format version: not a kmcl_core blob");
  }
  if (blob.format_version > kSavedStateFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "saved state is format version ", blob.format_version, "; this kmcl_core reads up to ",
        kSavedStateFormatVersion));
  }
  if (Crc32(blob.body) != blob.body_crc32) {
    return absl::InvalidArgumentError("saved state is corrupt: its checksum does not match");
  }
  if (blob.kind != static_cast<uint32_t>(kind)) {
    return absl::InvalidArgumentError(
        absl::StrCat("saved state holds ",
                     KindName(static_cast<saved::v1::SavedBlob::Kind>(blob.kind)), ", not ",
                     KindName(kind)));
  }
  return blob.body;
}

absl::StatusOr<std::string> OpenBlob(absl::string_view bytes, saved::v1::SavedBlob::Kind kind) {
  absl::StatusOr<absl::string_view> body = OpenBlobInPlace(bytes, kind);
  if (!body.ok()) return body.status();
  return std::string(*body);
}

}  // namespace kmcl
