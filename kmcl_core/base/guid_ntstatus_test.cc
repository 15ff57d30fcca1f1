#include <set>

#include "gtest/gtest.h"
#include "kmcl_core/base/guid.h"
#include "kmcl_core/base/ntstatus.h"

namespace kmcl {
namespace {

TEST(Guid, ParsesAndPrintsTheCanonicalFormInWindowsLayout) {
  auto g = Guid::Parse("{F8615163-DF3E-46C5-913F-F2D2F965ED0E}");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->data1, 0xF8615163u);
  EXPECT_EQ(g->data2, 0xDF3E);
  EXPECT_EQ(g->data3, 0x46C5);
  EXPECT_EQ(g->data4[0], 0x91);
  EXPECT_EQ(g->data4[7], 0x0E);
  EXPECT_EQ(g->ToString(), "f8615163-df3e-46c5-913f-f2d2f965ed0e");
  // Binary layout: Data1 little-endian first.
  const auto* bytes = reinterpret_cast<const uint8_t*>(&*g);
  EXPECT_EQ(bytes[0], 0x63);
  EXPECT_EQ(bytes[3], 0xF8);
  EXPECT_EQ(bytes[8], 0x91);
}

TEST(Guid, RejectsMalformedText) {
  for (const char* bad : {"", "f8615163df3e46c5913ff2d2f965ed0e", "f8615163-df3e-46c5-913f-f2d2f965ed0",
                          "g8615163-df3e-46c5-913f-f2d2f965ed0e", "{f8615163-df3e-46c5-913f-f2d2f965ed0e"}) {
    EXPECT_FALSE(Guid::Parse(bad).ok()) << bad;
  }
}

TEST(Guid, RandomIsVersion4AndDistinct) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    Guid g = Guid::Random();
    EXPECT_EQ(g.data3 >> 12, 4);
    EXPECT_EQ(g.data4[0] & 0xC0, 0x80);
    seen.insert(g.ToString());
    EXPECT_EQ(*Guid::Parse(g.ToString()), g);
  }
  EXPECT_EQ(seen.size(), 100u);
}

TEST(NtStatus, DocumentedValuesAndSuccessSemantics) {
  EXPECT_EQ(static_cast<uint32_t>(kStatusInvalidParameter1), 0xC00000EFu);
  EXPECT_EQ(static_cast<uint32_t>(kStatusCancelled), 0xC0000120u);
  EXPECT_EQ(static_cast<uint32_t>(kStatusDeviceRemoved), 0xC00002B6u);
  EXPECT_TRUE(NtSuccess(kStatusSuccess));
  EXPECT_TRUE(NtSuccess(kStatusPending));
  EXPECT_FALSE(NtSuccess(kStatusBufferOverflow)) << "a warning, not a success";
  EXPECT_FALSE(NtSuccess(kStatusMoreProcessingRequired));
  EXPECT_EQ(NtStatusName(kStatusBufferTooSmall), "STATUS_BUFFER_TOO_SMALL");
  EXPECT_EQ(NtStatusName(NtStatus(0xC0DE0001)), "0xC0DE0001");
}

TEST(NtStatus, OneMappingEachWay) {
  EXPECT_EQ(ToNtStatus(absl::OkStatus()), kStatusSuccess);
  EXPECT_EQ(ToNtStatus(absl::InvalidArgumentError("x")), kStatusInvalidParameter);
  EXPECT_EQ(ToNtStatus(absl::CancelledError("x")), kStatusCancelled);
  EXPECT_EQ(ToNtStatus(absl::UnavailableError("x")), kStatusDeviceRemoved);
  EXPECT_EQ(ToNtStatus(absl::ResourceExhaustedError("x")), kStatusInsufficientResources);
  EXPECT_EQ(ToNtStatus(absl::InternalError("x")), kStatusUnsuccessful);
  EXPECT_TRUE(FromNtStatus(kStatusSuccess, "open").ok());
  absl::Status s = FromNtStatus(kStatusCancelled, "open of channel 3");
  EXPECT_EQ(s.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(s.message(), "open of channel 3: STATUS_CANCELLED");
}

}  // namespace
}  // namespace kmcl
