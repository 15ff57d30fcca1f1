// The one list of NTSTATUS values (ntstatus_values.h): complete, named, and
// carried exactly through the absl::Status mapping.
#include <cstdlib>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kmcl_core/kmcl/kmcl_api.h"
#include "kmcl_core/base/ntstatus.h"

namespace kmcl {
namespace {

struct Entry {
  NTSTATUS value;
  const char* c_name;
  NTSTATUS cxx_value;
};

std::vector<Entry> AllValues() {
  return {
#define KMCL_ENTRY_(c_name, cxx_name) {c_name, #c_name, cxx_name},
      KMCL_NTSTATUS_LIST(KMCL_ENTRY_)
#undef KMCL_ENTRY_
  };
}

TEST(NtStatusList, NamesExactlyTheMacrosTheHeaderDefines) {
  // The header is the source of truth for C; read its #defines as text.
  const std::string dir = "kmcl_core/base";
  const char* srcdir = std::getenv("TEST_SRCDIR");
  ASSERT_NE(srcdir, nullptr);
  std::ifstream in(std::string(srcdir) + "/kmcld/" + dir + "/ntstatus_values.h");
  ASSERT_TRUE(in.good());
  std::stringstream text;
  text << in.rdbuf();
  const std::string header = text.str();
  std::set<std::string> defined;
  std::regex define(R"(#define (STATUS_[A-Z0-9_]+) \(\(NTSTATUS\)0x[0-9A-F]{8}L\))");
  for (auto it = std::sregex_iterator(header.begin(), header.end(), define);
       it != std::sregex_iterator(); ++it) {
    defined.insert((*it)[1]);
  }
  std::set<std::string> listed;
  for (const Entry& e : AllValues()) EXPECT_TRUE(listed.insert(e.c_name).second) << e.c_name;
  EXPECT_EQ(defined.size(), 20u);
  EXPECT_EQ(listed, defined);
}

TEST(NtStatusList, ValuesAreDistinctAndTheCxxNamesAreTheSameValues) {
  std::set<NTSTATUS> seen;
  for (const Entry& e : AllValues()) {
    EXPECT_TRUE(seen.insert(e.value).second) << e.c_name << " repeats a value";
    EXPECT_EQ(e.cxx_value, e.value) << e.c_name;
  }
  // The documented values (as in Windows' ntstatus.h) of a few, as the C surface sees them.
  EXPECT_EQ(static_cast<uint32_t>(STATUS_PENDING), 0x00000103u);
  EXPECT_EQ(static_cast<uint32_t>(STATUS_BUFFER_OVERFLOW), 0x80000005u);
  EXPECT_EQ(static_cast<uint32_t>(STATUS_INVALID_PARAMETER_1), 0xC00000EFu);
  EXPECT_EQ(static_cast<uint32_t>(STATUS_DEVICE_REMOVED), 0xC00002B6u);
}

TEST(NtStatusList, EveryValueRoundTripsThroughTheStatusMapping) {
  for (const Entry& e : AllValues()) {
    SCOPED_TRACE(e.c_name);
    EXPECT_EQ(NtStatusName(e.value), e.c_name);
    absl::Status s = FromNtStatus(e.value, "from a peer");
    if (NT_SUCCESS(e.value)) {
      // Success and informational values are successes (KMCL's NT_SUCCESS).
      EXPECT_TRUE(s.ok());
      continue;
    }
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.message(), absl::StrCat("from a peer: ", e.c_name));
    EXPECT_EQ(ToNtStatus(s), e.value);
    // The value survives being passed on (copies keep the payload).
    absl::Status copy = s;
    EXPECT_EQ(ToNtStatus(copy), e.value);
  }
}

TEST(NtStatusList, StatusesMadeInsideStillUseTheOneMapping) {
  // No carried value: the code decides, as documented in ntstatus.h.
  EXPECT_EQ(ToNtStatus(absl::FailedPreconditionError("x")), kStatusInvalidDeviceState);
  EXPECT_EQ(ToNtStatus(absl::InvalidArgumentError("x")), kStatusInvalidParameter);
  EXPECT_EQ(NtStatusName(NtStatus(0xC0DE0001)), "0xC0DE0001");
  // A value outside the list still round-trips (its name is its hex form).
  absl::Status odd = FromNtStatus(NtStatus(0xC0DE0001), "peer");
  EXPECT_EQ(odd.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ToNtStatus(odd), NtStatus(0xC0DE0001));
}

}  // namespace
}  // namespace kmcl
