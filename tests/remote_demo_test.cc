// End-to-end: the README's run path. examples/remote:remote_demo drives a
// real kmcld through kmcl.v1 (offer, open, GPADL through a lease, echo with
// completions, save and restore) and exits 0; kmcld keeps serving after it.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/bridge_fixture.h"

namespace kmcld::testing {
namespace {

std::string Runfile(const std::string& path) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir == nullptr || workspace == nullptr) return path;
  return absl::StrCat(srcdir, "/", workspace, "/", path);
}

// Runs `command`, returns its exit status and fills `output`.
int RunCommand(const std::string& command, std::string* output) {
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) output->append(buf, n);
  return pclose(p);
}

TEST(RemoteDemoTest, DrivesKmcldThroughItsApiAndKmcldKeepsServing) {
  Kmcld k;
  ASSERT_TRUE(k.Start().ok()) << k.process.output();
  const std::string demo = Runfile("examples/remote/remote_demo");
  for (int round = 0; round < 2; ++round) {  // twice: the demo cleans up after itself
    std::string out;
    const int status =
        RunCommand(absl::StrCat(demo, " --target=", k.process.tcp_address(), " --packets=2000"), &out);
    ASSERT_EQ(status, 0) << out << "\n--- kmcld:\n" << k.process.output();
    EXPECT_TRUE(absl::StrContains(out, "restored")) << out;
    EXPECT_TRUE(absl::StrContains(out, "2000")) << out;
  }
  kmcl::v1::ListPartitionsResponse list;
  ASSERT_TRUE(k.partitions->ListPartitions(Kmcld::Context().get(), {}, &list).ok());
  EXPECT_EQ(list.partitions_size(), 1) << "the restored copy was deleted";
}

}  // namespace
}  // namespace kmcld::testing
