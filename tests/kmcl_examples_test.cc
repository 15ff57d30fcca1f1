// End-to-end: the two client-library examples against a real kmcld. The
// echo host offers and echoes; the guest tool opens, shares a GPADL, sends
// transactions and checks each echo; both exit 0 and clean up after
// themselves (no channel left).
#include <csignal>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "clients/cpp/kmcl.h"
#include "clients/cpp/testing/kmcld.h"
#include "clients/cpp/testing/subprocess.h"
#include "gtest/gtest.h"

namespace kmcl::client::testing {
namespace {

TEST(KmclExamplesTest, EchoHostAndGuestToolTalkThroughKmcld) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.process.output();
  const std::string target = "--target=" + d.target();
  Background host({Runfile("examples/kmcl_echo_host"), target});
  ASSERT_TRUE(host.WaitForStdout("echoing").ok()) << host.out();
  RunResult guest = testing::Run({Runfile("examples/kmcl_guest_tool"), target, "--packets=500"});
  EXPECT_EQ(guest.exit_code, 0) << guest.out << guest.err;
  EXPECT_TRUE(absl::StrContains(guest.out, "500 transactions echoed")) << guest.out;
  EXPECT_TRUE(absl::StrContains(guest.out, ", 0 mismatched")) << guest.out;
  host.Signal(SIGTERM);  // the guest tool is done: stop echoing
  EXPECT_EQ(host.Wait(), 0) << host.out();
  EXPECT_TRUE(absl::StrContains(host.out(), "echoed 500 packets")) << host.out();
  auto client = Client::Connect(d.target());
  ASSERT_TRUE(client.ok());
  auto channels = (*client)->ListChannels("");
  ASSERT_TRUE(channels.ok());
  for (const v1::Channel& c : *channels) {  // kmcld's own devices may be listed
    EXPECT_NE(c.offer().friendly_name(), "kmcl_echo_host")
        << "the examples' handles released their channel";
  }
}

}  // namespace
}  // namespace kmcl::client::testing
