#include "kmcl_core/base/status_macros.h"

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace {

absl::Status Fails(int* calls) {
  ++*calls;
  return absl::NotFoundError("no such thing");
}

absl::Status Succeeds(int* calls) {
  ++*calls;
  return absl::OkStatus();
}

absl::Status TwoSteps(bool first_fails, int* calls, bool* reached_end) {
  RETURN_IF_ERROR(first_fails ? Fails(calls) : Succeeds(calls));
  RETURN_IF_ERROR(Succeeds(calls));
  *reached_end = true;
  return absl::OkStatus();
}

TEST(StatusMacros, ReturnIfErrorReturnsTheErrorAndStopsThere) {
  int calls = 0;
  bool reached_end = false;
  absl::Status s = TwoSteps(/*first_fails=*/true, &calls, &reached_end);
  EXPECT_EQ(s, absl::NotFoundError("no such thing"));
  EXPECT_EQ(calls, 1);  // evaluated once, and nothing after it ran
  EXPECT_FALSE(reached_end);
}

TEST(StatusMacros, ReturnIfErrorContinuesOnOk) {
  int calls = 0;
  bool reached_end = false;
  EXPECT_TRUE(TwoSteps(/*first_fails=*/false, &calls, &reached_end).ok());
  EXPECT_EQ(calls, 2);
  EXPECT_TRUE(reached_end);
}

absl::StatusOr<std::unique_ptr<int>> MakeInt(bool fail, int value, int* calls) {
  ++*calls;
  if (fail) return absl::ResourceExhaustedError("out of ints");
  return std::make_unique<int>(value);
}

// Declares, assigns to an existing variable, and works in a StatusOr function.
absl::StatusOr<int> Sum(bool fail_second, int* calls) {
  ASSIGN_OR_RETURN(std::unique_ptr<int> a, MakeInt(false, 40, calls));  // move-only value
  std::unique_ptr<int> b;
  ASSIGN_OR_RETURN(b, MakeInt(fail_second, 2, calls));
  return *a + *b;
}

TEST(StatusMacros, AssignOrReturnDeclaresOrAssignsTheValue) {
  int calls = 0;
  absl::StatusOr<int> sum = Sum(/*fail_second=*/false, &calls);
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(*sum, 42);
  EXPECT_EQ(calls, 2);
}

TEST(StatusMacros, AssignOrReturnReturnsTheError) {
  int calls = 0;
  absl::StatusOr<int> sum = Sum(/*fail_second=*/true, &calls);
  EXPECT_EQ(sum.status(), absl::ResourceExhaustedError("out of ints"));
  EXPECT_EQ(calls, 2);
}

absl::Status Collect(std::vector<std::string>& out) {
  // Two uses on different lines of one scope must not clash.
  ASSIGN_OR_RETURN(auto first, absl::StatusOr<std::string>("x"));
  ASSIGN_OR_RETURN(auto second, absl::StatusOr<std::string>("y"));
  out = {first, second};
  return absl::OkStatus();
}

TEST(StatusMacros, SeveralUsesInOneScope) {
  std::vector<std::string> out;
  ASSERT_TRUE(Collect(out).ok());
  EXPECT_EQ(out, (std::vector<std::string>{"x", "y"}));
}

}  // namespace
