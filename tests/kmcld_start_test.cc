// End-to-end: the real kmcld binary starts on loopback (port 0) and a socket
// in the test's temp folder, reports SERVING over both listeners, lists the
// kmcl.v1 services through reflection, and exits 0 on SIGTERM and SIGINT.
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <cstdio>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

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

// Each names the flag, its value and the range.
TEST(KmcldStart, OutOfRangeFlagsFailClearly) {
  for (const auto& [flag, range] : std::vector<std::pair<std::string, std::string>>{
           {"--demo_packets=-1", ">= 1 and <= 1000000000"},
           {"--demo_interval_ms=-5", ">= 0 and <= 86400000"},
           {"--shutdown_grace_ms=-1", ">= 0 and <= 86400000"},
           {"--shutdown_grace_ms=100000000", ">= 0 and <= 86400000"}}) {
    DaemonProcess daemon;
    EXPECT_FALSE(
        daemon.Start({"--listen=127.0.0.1:0", "--insecure_plaintext_tcp", "--uds=none", "--demo", flag}).ok())
        << flag;
    EXPECT_TRUE(absl::StrContains(daemon.output(), flag + " is out of range: it must be " + range))
        << flag << ": " << daemon.output();
  }
}

// kmcld run to completion with `args` (a one-shot: --help,
// --print_sd_entry): its exit code and what it wrote (stdout and stderr).
struct OneShot {
  int exit_code = -1;
  std::string out;
};
OneShot RunKmcld(const std::string& args) {
  OneShot r;
  const std::string command = DaemonProcess::BinaryPath() + " " + args + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return r;
  char buffer[4096];
  for (size_t n; (n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0;) r.out.append(buffer, n);
  const int status = ::pclose(pipe);
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  return r;
}

// --help: the usage line names kmcld once, and every flag the daemon
// defines is listed, those of daemon/security/flags.cc (TLS, policy) too.
TEST(KmcldStart, HelpListsEveryDaemonFlag) {
  for (const char* help : {"--help", "--helpshort"}) {
    const OneShot run = RunKmcld(help);
    ASSERT_GE(run.exit_code, 0) << help;
    const std::string& out = run.out;
    EXPECT_TRUE(absl::StartsWith(out, "kmcld: serves")) << help << ":\n" << out;
    EXPECT_FALSE(absl::StrContains(out, "kmcld: kmcld:")) << help << ":\n" << out;
    for (const char* flag : {"--listen", "--uds", "--shutdown_grace_ms", "--config",  // main
                             "--tls_cert", "--tls_ca", "--policy", "--insecure_plaintext_tcp"}) {
      const bool listed = absl::StrContains(out, std::string(flag) + " ") ||
                          absl::StrContains(out, std::string(flag) + "\n");
      EXPECT_TRUE(listed) << help << ": " << flag << "\n" << out;
    }
  }
}

// --print_sd_entry prints an entry only for a configuration kmcld would
// start with; otherwise the configuration's error and exit code 1.
TEST(KmcldStart, PrintSdEntryChecksTheWholeConfigurationFirst) {
  ShortTempDir tmp;
  const OneShot good = RunKmcld("--uds=" + tmp.path() + "/k.sock --print_sd_entry");
  EXPECT_EQ(good.exit_code, 0) << good.out;
  EXPECT_TRUE(absl::StrContains(good.out, "\"targets\":[\"unix:" + tmp.path() + "/k.sock\"]"))
      << good.out;
  // TCP off loopback without mutual TLS: kmcld refuses to start.
  const OneShot refused = RunKmcld("--listen=0.0.0.0:50551 --print_sd_entry");
  EXPECT_EQ(refused.exit_code, 1) << refused.out;
  EXPECT_TRUE(absl::StrContains(refused.out, "needs mutual TLS")) << refused.out;
  EXPECT_FALSE(absl::StrContains(refused.out, "targets")) << refused.out;
}

}  // namespace
}  // namespace kmcld::testing
