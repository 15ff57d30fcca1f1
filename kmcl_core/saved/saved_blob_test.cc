// The envelope: OpenBlobInPlace reads the wire form itself, so it is checked
// against protobuf's own parser of SavedBlob on every truncation and every
// single-byte change of a blob, and on hand-made field orders.
#include "kmcl_core/saved/saved_blob.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kmcl {
namespace {

using saved::v1::SavedBlob;
using ::testing::HasSubstr;

// What OpenBlob did before it read the envelope in place: protobuf's parse,
// then the same checks.
absl::StatusOr<std::string> Reference(const std::string& bytes, SavedBlob::Kind kind) {
  SavedBlob blob;
  if (bytes.empty() || !blob.ParseFromString(bytes)) return absl::InvalidArgumentError("corrupt");
  if (blob.format_version() == 0) return absl::InvalidArgumentError("no version");
  if (blob.format_version() > kSavedStateFormatVersion) {
    return absl::FailedPreconditionError("newer");
  }
  if (Crc32(blob.body()) != blob.body_crc32()) return absl::InvalidArgumentError("crc");
  if (blob.kind() != kind) return absl::InvalidArgumentError("kind");
  return blob.body();
}

void ExpectSameAsReference(const std::string& bytes, SavedBlob::Kind kind) {
  absl::StatusOr<std::string> want = Reference(bytes, kind);
  absl::StatusOr<absl::string_view> got = OpenBlobInPlace(bytes, kind);
  ASSERT_EQ(got.status().code(), want.status().code()) << got.status() << " vs " << want.status();
  if (got.ok()) {
    EXPECT_EQ(*got, *want);
    if (got->empty()) return;  // a blob without a body field
    // In place: the view points into the caller's bytes.
    EXPECT_GE(got->data(), bytes.data());
    EXPECT_LE(got->data() + got->size(), bytes.data() + bytes.size());
  }
}

TEST(SavedBlob, OpensWhatItSealsInPlace) {
  const std::string blob = SealBlob(SavedBlob::KIND_PARTITION, std::string(300, 'p'));
  absl::StatusOr<absl::string_view> body = OpenBlobInPlace(blob, SavedBlob::KIND_PARTITION);
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(*body, std::string(300, 'p'));
  EXPECT_EQ(*OpenBlob(blob, SavedBlob::KIND_PARTITION), std::string(300, 'p'));
  absl::Status other = OpenBlobInPlace(blob, SavedBlob::KIND_CHANNEL).status();
  EXPECT_EQ(other.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(other.message()), HasSubstr("holds a partition, not a channel"));
}

TEST(SavedBlob, EveryTruncationAndByteChangeAgreesWithProtobuf) {
  const std::string blob = SealBlob(SavedBlob::KIND_CHANNEL, "channel state, 29 bytes long.");
  for (size_t n = 0; n <= blob.size(); ++n) {
    ExpectSameAsReference(blob.substr(0, n), SavedBlob::KIND_CHANNEL);
  }
  for (size_t i = 0; i < blob.size(); ++i) {
    for (int v : {0x00, 0x01, 0x07, 0x08, 0x0A, 0x12, 0x1A, 0x25, 0x7F, 0x80, 0xFF}) {
      std::string changed = blob;
      changed[i] = static_cast<char>(v);
      ExpectSameAsReference(changed, SavedBlob::KIND_CHANNEL);
    }
  }
}

TEST(SavedBlob, FieldOrderRepeatsAndUnknownFieldsFollowProtobuf) {
  const std::string body = "the body";
  SavedBlob a;
  a.set_format_version(kSavedStateFormatVersion);
  a.set_kind(SavedBlob::KIND_CHANNEL);
  a.set_body(body);
  a.set_body_crc32(Crc32(body));
  // Unknown fields of every wire type, then the body again (the last wins).
  std::string tail;
  tail += std::string("\x28\x96\x01", 3);                  // field 5, varint
  tail += std::string("\x31") + std::string(8, '\x01');    // field 6, fixed64
  tail += std::string("\x3A\x02hi", 4);                    // field 7, bytes
  tail += std::string("\x45") + std::string(4, '\x02');    // field 8, fixed32
  SavedBlob b;
  b.set_body("second body");
  b.set_body_crc32(Crc32("second body"));
  for (const std::string& bytes :
       {a.SerializeAsString(), a.SerializeAsString() + tail,
        a.SerializeAsString() + tail + b.SerializeAsString(),
        b.SerializeAsString() + a.SerializeAsString()}) {
    ExpectSameAsReference(bytes, SavedBlob::KIND_CHANNEL);
    ASSERT_TRUE(OpenBlobInPlace(bytes, SavedBlob::KIND_CHANNEL).ok());
  }
  EXPECT_EQ(*OpenBlobInPlace(a.SerializeAsString() + tail + b.SerializeAsString(),
                             SavedBlob::KIND_CHANNEL),
            "second body");
}

TEST(SavedBlob, NewerFormatIsFailedPrecondition) {
  SavedBlob a;
  a.set_format_version(kSavedStateFormatVersion + 1);
  a.set_kind(SavedBlob::KIND_CHANNEL);
  absl::Status s = OpenBlobInPlace(a.SerializeAsString(), SavedBlob::KIND_CHANNEL).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("format version 2"));
}

}  // namespace
}  // namespace kmcl
