// kmcl_core/saved/saved_blob.h: the envelope of every saved-state blob
// (saved_state.proto, docs/saved-state.md): format version, kind, body and
// a CRC-32 of the body.
//
// SealBlob() wraps a serialized body; OpenBlob() checks a blob from an
// untrusted source and returns its body: INVALID_ARGUMENT if it is
// truncated, corrupted or of another kind, FAILED_PRECONDITION if it comes
// from a newer format version. OpenBlobInPlace() checks the same and
// returns the body where it lies in the blob, for a partition's blob whose
// body is most of its hundreds of MiB.
#ifndef KMCLD_KMCL_CORE_SAVED_SAVED_BLOB_H_
#define KMCLD_KMCL_CORE_SAVED_SAVED_BLOB_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kmcl_core/saved/saved_state.pb.h"

namespace kmcl {

inline constexpr uint32_t kSavedStateFormatVersion = 1;

// The CRC-32 (zlib's) of `bytes`, as envelopes carry it; also for wrappers
// that frame these blobs (kmcld's bundles).
uint32_t Crc32(absl::string_view bytes);

std::string SealBlob(saved::v1::SavedBlob::Kind kind, std::string body);
absl::StatusOr<std::string> OpenBlob(absl::string_view blob, saved::v1::SavedBlob::Kind kind);
// The body as a view into `blob` (valid while `blob` is). Accepts exactly
// what OpenBlob accepts, except a blob with protobuf groups (never written).
absl::StatusOr<absl::string_view> OpenBlobInPlace(absl::string_view blob,
                                                  saved::v1::SavedBlob::Kind kind);

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_SAVED_SAVED_BLOB_H_
