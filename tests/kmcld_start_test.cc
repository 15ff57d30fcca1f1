// End-to-end: the real kmcld binary starts on loopback (port 0) and a socket
// in the test's temp folder, reports SERVING over both listeners, lists the
// kmcl.v1 services through reflection, and exits 0 on SIGTERM and SIGINT.
#include <signal.h>
#include <stdlib.h>

#include <algorithm>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "tests/daemon_process.h"
#include "tests/grpc_probe.h"
#include "tests/short_temp_dir.h"

namespace kmcld::testing {
namespace {

std::shared_ptr<grpc::Channel> Dial(const std::string& target) {
  return grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
}

TEST(KmcldStart, ServesHealthOverTcpAndUnixSocketThenStopsOnSigterm) {
  ShortTempDir tmp;
  std::string dir = tmp.path();
  DaemonProcess daemon;
  ASSERT_TRUE(
      daemon.Start({"--listen=127.0.0.1:0", "--insecure_plaintext_tcp", "--runtime_dir=" + dir}).ok())
      << daemon.output();
  ASSERT_TRUE(absl::StartsWith(daemon.tcp_address(), "127.0.0.1:")) << daemon.output();
  EXPECT_NE(daemon.tcp_address(), "127.0.0.1:0");
  EXPECT_EQ(daemon.uds_path(), dir + "/kmcld.sock");

  auto tcp = HealthCheck(Dial(daemon.tcp_address()));
  ASSERT_TRUE(tcp.ok()) << tcp.status();
  EXPECT_EQ(*tcp, 1) << "SERVING over TCP";
  auto uds = HealthCheck(Dial("unix:" + daemon.uds_path()));
  ASSERT_TRUE(uds.ok()) << uds.status();
  EXPECT_EQ(*uds, 1) << "SERVING over the Unix socket";

  auto code = daemon.Stop(SIGTERM);
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0) << daemon.output();
  EXPECT_TRUE(absl::StrContains(daemon.output(), "SIGTERM received")) << daemon.output();
  EXPECT_TRUE(absl::StrContains(daemon.output(), "kmcld: stopped")) << daemon.output();
}

TEST(KmcldStart, ReflectionListsTheKmclApi) {
  DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start({"--listen=127.0.0.1:0", "--insecure_plaintext_tcp", "--uds=none"}).ok())
      << daemon.output();
  EXPECT_TRUE(daemon.uds_path().empty());
  auto services = ListServices(Dial(daemon.tcp_address()));
  ASSERT_TRUE(services.ok()) << services.status();
  for (const char* want :
       {"kmcl.v1.PartitionService", "kmcl.v1.HostChannelService", "kmcl.v1.GuestChannelService",
        "kmcl.v1.GpadlService", "kmcl.v1.PacketService", "kmcl.v1.EventService",
        "kmcl.v1.SaveRestoreService", "kmcl.v1.DiagnosticsService", "grpc.health.v1.Health"}) {
    EXPECT_NE(std::find(services->begin(), services->end(), want), services->end()) << want;
  }
  auto code = daemon.Stop(SIGINT);
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0) << daemon.output();
}

TEST(KmcldStart, RefusesASocketAnotherDaemonServes) {
  ShortTempDir tmp;
  std::string dir = tmp.path();
  DaemonProcess first;
  ASSERT_TRUE(first.Start({"--listen=", "--runtime_dir=" + dir}).ok()) << first.output();
  DaemonProcess second;
  absl::Status s = second.Start({"--listen=", "--runtime_dir=" + dir});
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(second.output(), "already listening")) << second.output();
  // The first daemon is unharmed.
  auto health = HealthCheck(Dial("unix:" + first.uds_path()));
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, 1);
  EXPECT_EQ(*first.Stop(SIGTERM), 0);
}

TEST(KmcldStart, HostsTheDefaultPartitionAndRunsDemoTraffic) {
  DaemonProcess daemon;
  ASSERT_TRUE(daemon.Start({"--listen=127.0.0.1:0", "--insecure_plaintext_tcp", "--uds=none", "--demo", "--demo_packets=2000",
                            "--demo_interval_ms=50"})
                  .ok())
      << daemon.output();
  EXPECT_TRUE(absl::StrContains(daemon.output(), "kmcld: partition default: 4096 MiB"))
      << daemon.output();
  ASSERT_TRUE(daemon.WaitForOutput("kmcld: demo:", 2).ok()) << daemon.output();
  EXPECT_TRUE(absl::StrContains(daemon.output(), "4000 packets echoed")) << daemon.output();
  // Every report says nothing was mismatched.
  for (absl::string_view line : absl::StrSplit(daemon.output(), '\n')) {
    if (absl::StrContains(line, "kmcld: demo:")) {
      EXPECT_TRUE(absl::StrContains(line, " 0 mismatched)")) << line;
    }
  }
  auto code = daemon.Stop(SIGTERM);
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0) << daemon.output();
}

TEST(KmcldStart, UnusableTcpAddressFailsClearly) {
  DaemonProcess daemon;
  absl::Status s = daemon.Start({"--listen=127.0.0.1:no-port", "--insecure_plaintext_tcp", "--uds=none"});
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(daemon.output(), "cannot listen")) << daemon.output();
}

TEST(KmcldStart, OutOfRangeFlagsFailClearly) {
  for (const char* flag : {"--demo_packets=-1", "--demo_interval_ms=-5", "--shutdown_grace_ms=-1"}) {
    DaemonProcess daemon;
    EXPECT_FALSE(
        daemon.Start({"--listen=127.0.0.1:0", "--insecure_plaintext_tcp", "--uds=none", "--demo", flag}).ok())
        << flag;
    EXPECT_TRUE(absl::StrContains(daemon.output(), "must be >= ")) << flag << ": " << daemon.output();
  }
}

}  // namespace
}  // namespace kmcld::testing
