// End-to-end security of kmcld (docs/security.md): real kmcld processes on
// 127.0.0.1:0 with mutual TLS, certificates made at run time by
// tools/make-certs.sh, and a policy file. Refused handshakes (no client
// certificate, another CA, expired), PERMISSION_DENIED for unknown
// identities, for another identity's partition and for an observer's
// mutations (every mutating RPC of the API, through a generic stub), the
// audit lines, start-up refusals, the Unix socket's mode, and a SIGHUP that
// swaps the policy for new calls while an established client keeps going.
#include <openssl/ssl.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <sstream>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "clients/cpp/kmclctl/kmclctl.pb.h"
#include "clients/cpp/testing/subprocess.h"
#include "daemon/security/authorizer.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "proto/channel.grpc.pb.h"
#include "proto/devices.grpc.pb.h"
#include "proto/diagnostics.grpc.pb.h"
#include "proto/event.grpc.pb.h"
#include "proto/gpadl.grpc.pb.h"
#include "proto/packet.grpc.pb.h"
#include "proto/partition.grpc.pb.h"
#include "proto/save_restore.grpc.pb.h"
#include "tests/bridge_fixture.h"
#include "tests/daemon_process.h"
#include "tests/short_temp_dir.h"
#include "tests/traffic.h"
#include "tests/tls_probe.h"
#include "tools/build_info.h"

namespace kmcld::testing {
namespace {

constexpr char kPolicy[] = R"pb(
  grant { identity: "spiffe://kmcl.test/admin" partition: "*" role: ADMIN }
  grant { identity: "spiffe://kmcl.test/a" partition: "pa" role: HOST role: GUEST }
  grant { identity: "spiffe://kmcl.test/b" partition: "pb" role: HOST role: GUEST }
  grant { identity: "spiffe://kmcl.test/watcher" partition: "*" role: OBSERVER }
)pb";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteFile(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

std::unique_ptr<grpc::ClientContext> Deadline() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return ctx;
}

class SecurityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ShortTempDir();
    MakeCerts(absl::StrCat(dir_->path(), " admin=spiffe://kmcl.test/admin a=spiffe://kmcl.test/a",
                           " b=spiffe://kmcl.test/b watcher=spiffe://kmcl.test/watcher",
                           " stranger=spiffe://kmcl.test/stranger --test"));
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }

  std::string Cert(const std::string& name) { return dir_->Join(name); }

  // kmcld on 127.0.0.1:0 with mutual TLS and `policy`, its socket in the
  // temp folder, audit lines in audit.log.
  void StartTls(const std::string& policy = kPolicy) {
    WriteFile(Cert("policy.textproto"), policy);
    ASSERT_TRUE(daemon_.Start(TlsFlags()).ok()) << daemon_.output();
  }

  // StartTls, then the admin (returned; null on failure) creates a's
  // partition "pa" and b's "pb".
  std::shared_ptr<grpc::Channel> StartTlsWithPartitionsAB() {
    StartTls();
    auto admin = Dial("admin");
    if (HasFatalFailure() || !CreatePartition(admin, "pa").ok() || !CreatePartition(admin, "pb").ok()) {
      return nullptr;
    }
    return admin;
  }

  // audit.log once it holds `text` (kmcld writes it on its own thread),
  // or as it is after 10 s.
  std::string AuditWith(const std::string& text, const std::string& file = "") {
    const std::string path = file.empty() ? Cert("audit.log") : file;
    const absl::Time give_up = absl::Now() + absl::Seconds(10);
    std::string audit = ReadFile(path);
    while (!absl::StrContains(audit, text) && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(10));
      audit = ReadFile(path);
    }
    return audit;
  }

  // kmcld's flags for that (the policy file written by the caller).
  std::vector<std::string> TlsFlags() {
    return {"--listen=127.0.0.1:0", "--tls_cert=" + Cert("server.pem"), "--tls_key=" + Cert("server.key"),
            "--tls_ca=" + Cert("ca.pem"), "--policy=" + Cert("policy.textproto"),
            "--audit_log=" + Cert("audit.log"), "--runtime_dir=" + Cert("run"), "--devices=none"};
  }

  static std::string MakeCerts(const std::string& args) {
    const char* srcdir = std::getenv("TEST_SRCDIR");
    const char* workspace = std::getenv("TEST_WORKSPACE");
    const std::string cmd = absl::StrCat(srcdir ? srcdir : ".", "/", workspace ? workspace : "kmcld",
                                         "/tools/make-certs.sh ", args);
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    return cmd;
  }

  TlsProbeOptions Probe(const std::string& client, int min_version, int max_version) {
    TlsProbeOptions o;
    o.min_version = min_version;
    o.max_version = max_version;
    o.cert = Cert(client + ".pem");
    o.key = Cert(client + ".key");
    o.ca = Cert("ca.pem");
    return o;
  }

  std::shared_ptr<grpc::Channel> Dial(const std::string& client) {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = ReadFile(Cert("ca.pem"));
    if (!client.empty()) {
      o.pem_private_key = ReadFile(Cert(client + ".key"));
      o.pem_cert_chain = ReadFile(Cert(client + ".pem"));
    }
    return grpc::CreateChannel(daemon_.tcp_address(), grpc::SslCredentials(o));
  }

  grpc::Status GetPartition(const std::shared_ptr<grpc::Channel>& ch, const std::string& id) {
    kmcl::v1::GetPartitionRequest req;
    req.set_id(id);
    kmcl::v1::Partition p;
    return kmcl::v1::PartitionService::NewStub(ch)->GetPartition(Deadline().get(), req, &p);
  }

  grpc::Status CreatePartition(const std::shared_ptr<grpc::Channel>& ch, const std::string& id) {
    kmcl::v1::CreatePartitionRequest req;
    req.set_id(id);
    req.add_client_vtls(0);
    req.set_guest_memory_bytes(uint64_t{64} << 20);
    kmcl::v1::Partition p;
    return kmcl::v1::PartitionService::NewStub(ch)->CreatePartition(Deadline().get(), req, &p);
  }

  grpc::Status Offer(const std::shared_ptr<grpc::Channel>& ch, const std::string& partition,
                     kmcl::v1::ChannelRef* ref = nullptr) {
    kmcl::v1::OfferChannelRequest req;
    req.set_partition_id(partition);
    req.mutable_settings()->mutable_interface_type()->set_value("8e1d0a5e-2a3b-4c5d-9e0f-112233445566");
    req.mutable_settings()->set_friendly_name("sec");
    kmcl::v1::ChannelResponse resp;
    grpc::Status s = kmcl::v1::HostChannelService::NewStub(ch)->OfferChannel(Deadline().get(), req, &resp);
    if (ref != nullptr) *ref = resp.channel().offer().channel();
    return s;
  }

  int ChannelCount(const std::shared_ptr<grpc::Channel>& ch, const std::string& partition) {
    kmcl::v1::ListChannelsRequest req;
    req.set_partition_id(partition);
    kmcl::v1::ListChannelsResponse resp;
    grpc::Status s = kmcl::v1::HostChannelService::NewStub(ch)->ListChannels(Deadline().get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.channels_size();
  }

  std::vector<std::string> ListPartitions(const std::shared_ptr<grpc::Channel>& ch, grpc::Status* status) {
    kmcl::v1::ListPartitionsResponse resp;
    *status = kmcl::v1::PartitionService::NewStub(ch)->ListPartitions(Deadline().get(), {}, &resp);
    std::vector<std::string> ids;
    for (const auto& p : resp.partitions()) ids.push_back(p.id());
    return ids;
  }

  static ShortTempDir* dir_;
  DaemonProcess daemon_;
};

ShortTempDir* SecurityTest::dir_ = nullptr;

TEST_F(SecurityTest, HandshakesWithoutAValidClientCertificateAreRefused) {
  StartTls();
  ASSERT_TRUE(GetPartition(Dial("admin"), "default").ok()) << "the valid certificate works";
  for (const char* client : {"", "foreign", "expired"}) {
    grpc::Status s = GetPartition(Dial(client), "default");
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE)
        << (*client ? client : "no certificate") << ": " << s.error_message();
  }
}

// TLS 1.3 is the minimum: a client that offers at most TLS 1.2 fails the
// handshake; --tls_min_version=1.2 lets it in.
TEST_F(SecurityTest, TcpRefusesTls12ClientsAndSpeaksTls13) {
  StartTls();
  absl::StatusOr<TlsProbeResult> tls12 = ProbeTls(daemon_.tcp_address(), Probe("admin", 0, TLS1_2_VERSION));
  EXPECT_FALSE(tls12.ok()) << "a TLS 1.2-only client got in with " << (tls12.ok() ? tls12->protocol : "");
  std::printf("TLS 1.2-only client: %s\n", tls12.ok() ? tls12->protocol.c_str() : tls12.status().ToString().c_str());
  absl::StatusOr<TlsProbeResult> tls13 = ProbeTls(daemon_.tcp_address(), Probe("admin", TLS1_3_VERSION, 0));
  ASSERT_TRUE(tls13.ok()) << tls13.status();
  EXPECT_EQ(tls13->protocol, "TLSv1.3");
  EXPECT_TRUE(GetPartition(Dial("admin"), "default").ok()) << "gRPC clients negotiate TLS 1.3";

  DaemonProcess lenient;
  std::vector<std::string> flags = TlsFlags();
  flags.push_back("--tls_min_version=1.2");
  flags.push_back("--uds=none");
  ASSERT_TRUE(lenient.Start(flags).ok()) << lenient.output();
  tls12 = ProbeTls(lenient.tcp_address(), Probe("admin", 0, TLS1_2_VERSION));
  ASSERT_TRUE(tls12.ok()) << tls12.status();
  EXPECT_EQ(tls12->protocol, "TLSv1.2");
}

// A renewed server certificate (tools/make-certs.sh --renew-server) is
// served to new connections after SIGHUP, while a connection made before,
// and a stream open on it, go on.
TEST_F(SecurityTest, SighupReloadsTheCertificateAndKeepsConnectedClients) {
  ShortTempDir tls;
  for (const char* file : {"ca.pem", "ca.key"}) WriteFile(tls.Join(file), ReadFile(Cert(file)));
  MakeCerts(tls.path() + " --renew-server");
  WriteFile(Cert("policy.textproto"), kPolicy);
  ASSERT_TRUE(daemon_
                  .Start({"--listen=127.0.0.1:0", "--tls_cert=" + tls.Join("server.pem"),
                          "--tls_key=" + tls.Join("server.key"), "--tls_ca=" + Cert("ca.pem"),
                          "--policy=" + Cert("policy.textproto"), "--runtime_dir=" + Cert("run"),
                          "--devices=none"})
                  .ok())
      << daemon_.output();
  const std::string first = ReadFile(tls.Join("server.pem"));
  absl::StatusOr<TlsProbeResult> before = ProbeTls(daemon_.tcp_address(), Probe("admin", 0, 0));
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_EQ(before->server_cert, first);

  auto admin = Dial("admin");
  auto watch_ctx = Deadline();
  auto watch = kmcl::v1::EventService::NewStub(admin)->WatchEvents(watch_ctx.get(), {});
  ASSERT_TRUE(CreatePartition(admin, "before-renewal").ok());
  kmcl::v1::Event event;
  ASSERT_TRUE(watch->Read(&event));

  MakeCerts(tls.path() + " --renew-server");
  const std::string renewed = ReadFile(tls.Join("server.pem"));
  ASSERT_NE(renewed, first);
  ASSERT_EQ(::kill(daemon_.pid(), SIGHUP), 0);
  ASSERT_TRUE(daemon_.WaitForOutput("kmcld: SIGHUP: certificates reloaded").ok()) << daemon_.output();
  // gRPC's watcher applies the published set within about a second.
  absl::StatusOr<TlsProbeResult> after;
  const absl::Time give_up = absl::Now() + absl::Seconds(20);
  int probes = 0;
  do {
    if (probes++ > 0) absl::SleepFor(absl::Milliseconds(50));
    after = ProbeTls(daemon_.tcp_address(), Probe("admin", 0, 0));
    ASSERT_TRUE(after.ok()) << after.status();
  } while (after->server_cert != renewed && absl::Now() < give_up);
  EXPECT_EQ(after->server_cert, renewed) << "a new connection sees the renewed certificate";
  std::printf("renewed certificate served after %d probe(s)\n", probes);
  EXPECT_TRUE(GetPartition(Dial("admin"), "default").ok()) << "a new gRPC client trusts the renewal";

  EXPECT_EQ(admin->GetState(false), GRPC_CHANNEL_READY) << "the connection made before survived";
  ASSERT_TRUE(CreatePartition(admin, "after-renewal").ok());
  bool seen = false;
  while (!seen && watch->Read(&event)) seen = event.partition_id() == "after-renewal";
  EXPECT_TRUE(seen) << "the stream opened before the renewal goes on";
  watch_ctx->TryCancel();
}

// An audit line never holds up a call: with the audit file a pipe nobody
// reads (its 64 KiB fill after a few hundred lines), every call still
// completes; once the pipe is read, every line is there, and a privileged
// call's line carries its final status, not the check's.
TEST_F(SecurityTest, AuditLinesCarryTheFinalStatusAndNeverHoldUpACall) {
  const std::string fifo = Cert("audit.fifo");
  ::unlink(fifo.c_str());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(reader, 0);
  WriteFile(Cert("policy.textproto"), kPolicy);
  std::vector<std::string> flags = TlsFlags();
  for (std::string& f : flags) {
    if (absl::StartsWith(f, "--audit_log=")) f = "--audit_log=" + fifo;
  }
  ASSERT_TRUE(daemon_.Start(flags).ok()) << daemon_.output();
  auto admin = Dial("admin");
  auto stranger = Dial("stranger");
  ASSERT_TRUE(CreatePartition(admin, "audited").ok());
  EXPECT_EQ(CreatePartition(admin, "audited").error_code(), grpc::StatusCode::ALREADY_EXISTS);
  constexpr int kDenied = 1000;  // ~170 KB of audit lines
  int denied = 0;
  for (; denied < kDenied; ++denied) {
    grpc::Status s = GetPartition(stranger, "default");
    if (s.error_code() != grpc::StatusCode::PERMISSION_DENIED) {
      ADD_FAILURE() << "call " << denied << " with the audit pipe full: " << s.error_code() << " "
                    << s.error_message();
      break;
    }
  }
  ASSERT_TRUE(CreatePartition(admin, "last").ok());
  std::printf("%d denied calls completed while nobody read the audit pipe\n", denied);

  std::string audit;
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  while (!absl::StrContains(audit, "object=\"last\" result=ok") && absl::Now() < give_up) {
    pollfd p{reader, POLLIN, 0};
    if (::poll(&p, 1, 1000) <= 0) continue;
    char buf[65536];
    const ssize_t n = ::read(reader, buf, sizeof(buf));
    if (n > 0) audit.append(buf, static_cast<size_t>(n));
  }
  ::close(reader);
  EXPECT_TRUE(absl::StrContains(audit, "object=\"last\" result=ok")) << audit.size() << " bytes read";
  EXPECT_TRUE(absl::StrContains(audit, "rpc=CreatePartition object=\"audited\" result=ok ms="));
  EXPECT_TRUE(absl::StrContains(audit, "rpc=CreatePartition object=\"audited\" result=failed:ALREADY_EXISTS ms="))
      << "the second CreatePartition passed the check and failed";
  EXPECT_FALSE(absl::StrContains(audit, "result=allowed"));
  int denial_lines = 0;
  for (size_t at = audit.find("result=denied:missing-observer"); at != std::string::npos;
       at = audit.find("result=denied:missing-observer", at + 1)) {
    ++denial_lines;
  }
  EXPECT_EQ(denial_lines, denied);
}

TEST_F(SecurityTest, UnknownIdentityIsDeniedAndAudited) {
  StartTls();
  auto stranger = Dial("stranger");
  grpc::Status s = GetPartition(stranger, "default");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_TRUE(absl::StrContains(s.error_message(), "observer")) << s.error_message();
  ListPartitions(stranger, &s);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  const std::string audit = AuditWith("rpc=GetPartition object=\"default\" result=denied:missing-observer");
  EXPECT_TRUE(absl::StrContains(audit, "identity=\"spiffe://kmcl.test/stranger\"")) << audit;
  EXPECT_TRUE(absl::StrContains(audit, "rpc=GetPartition object=\"default\" result=denied:missing-observer"))
      << audit;
}

TEST_F(SecurityTest, AnIdentityCanNeitherSeeNorTouchAnothersPartition) {
  auto admin = StartTlsWithPartitionsAB();
  ASSERT_NE(admin, nullptr);
  auto a = Dial("a");
  grpc::Status s = Offer(a, "pa");
  EXPECT_TRUE(s.ok()) << "a is host on its own partition: " << s.error_message();
  s = Offer(a, "pb");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_TRUE(absl::StrContains(s.error_message(), "lacks role host on partition 'pb'")) << s.error_message();
  EXPECT_EQ(ChannelCount(admin, "pb"), 0) << "the denied offer changed nothing";
  auto b = Dial("b");
  ASSERT_TRUE(Offer(b, "pb").ok());
  EXPECT_EQ(ChannelCount(admin, ""), 2);
  EXPECT_EQ(ChannelCount(a, ""), 1) << "a list of every partition shows a only its own";
  kmcl::v1::ListChannelDiagnosticsResponse diag;
  ASSERT_TRUE(kmcl::v1::DiagnosticsService::NewStub(a)->ListChannelDiagnostics(Deadline().get(), {}, &diag).ok());
  ASSERT_EQ(diag.channels_size(), 1);
  EXPECT_EQ(diag.channels(0).channel().offer().channel().partition_id(), "pa");
  kmcl::v1::ListChannelsRequest listb;
  listb.set_partition_id("pb");
  kmcl::v1::ListChannelsResponse listed;
  s = kmcl::v1::HostChannelService::NewStub(a)->ListChannels(Deadline().get(), listb, &listed);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_EQ(GetPartition(a, "pb").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // The event log of every partition shows a only its own partition's events.
  kmcl::v1::WatchEventsRequest every;
  every.set_backlog_only(true);
  auto events_ctx = Deadline();
  auto events = kmcl::v1::EventService::NewStub(a)->WatchEvents(events_ctx.get(), every);
  std::set<std::string> event_partitions;
  for (kmcl::v1::Event e; events->Read(&e);) event_partitions.insert(e.partition_id());
  s = events->Finish();
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(event_partitions, std::set<std::string>{"pa"}) << "pb's events stay hidden from a";
  std::vector<std::string> seen = ListPartitions(a, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(seen, std::vector<std::string>{"pa"}) << "lists show only what the identity may see";
  kmcl::v1::DeletePartitionRequest del;
  del.set_id("pa");
  kmcl::v1::DeletePartitionResponse resp;
  s = kmcl::v1::PartitionService::NewStub(a)->DeletePartition(Deadline().get(), del, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << "deleting needs admin";
  EXPECT_TRUE(GetPartition(admin, "pa").ok());
  EXPECT_TRUE(absl::StrContains(AuditWith("identity=\"spiffe://kmcl.test/a\" peer=\"ipv4:127.0.0.1:"),
                                "identity=\"spiffe://kmcl.test/a\" peer=\"ipv4:127.0.0.1:"))
      << "privileged calls and denials are audited with the peer address";
}

// kmclctl's --tls-ca/--tls-cert/--tls-key against the mutual-TLS listener:
// the daemon names kmclctl by its certificate (an observer reads, a host
// sees only its partition, a stranger is denied), and kmclctl without a
// client certificate, or without TLS, does not get in.
TEST_F(SecurityTest, KmclctlSpeaksMutualTlsWithItsFlags) {
  StartTls();
  ASSERT_TRUE(CreatePartition(Dial("admin"), "pa").ok());
  ASSERT_TRUE(CreatePartition(Dial("admin"), "pb").ok());
  auto ctl = [&](const std::string& who, std::vector<std::string> args) {
    std::vector<std::string> argv = {kmcl::client::testing::Runfile("clients/cpp/kmclctl/kmclctl"),
                                     "--target", daemon_.tcp_address(), "--timeout=5"};
    if (!who.empty()) argv.insert(argv.end(), {"--tls-ca", Cert("ca.pem")});
    if (!who.empty() && who != "no-certificate") {
      argv.insert(argv.end(), {"--tls-cert", Cert(who + ".pem"), "--tls-key", Cert(who + ".key")});
    }
    argv.insert(argv.end(), args.begin(), args.end());
    return kmcl::client::testing::Run(argv);
  };
  kmcl::client::testing::RunResult v = ctl("watcher", {"--json", "version"});
  ASSERT_EQ(v.exit_code, 0) << v.err;
  kmclctl::json::Version version;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(v.out, &version).ok()) << v.out;
  EXPECT_EQ(version.kmcld().version(), kmcl::build::Version());

  kmcl::client::testing::RunResult listed = ctl("a", {"--json", "partitions", "list"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  kmcl::v1::ListPartitionsResponse partitions;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(listed.out, &partitions).ok());
  ASSERT_EQ(partitions.partitions_size(), 1) << listed.out;
  EXPECT_EQ(partitions.partitions(0).id(), "pa");
  EXPECT_EQ(ctl("a", {"gpadl", "list", "--partition", "pb"}).exit_code, 1)
      << "ListGpadls of another's partition is denied";
  EXPECT_EQ(ctl("a", {"gpadl", "list"}).exit_code, 0) << "the list of every partition filters";

  kmcl::client::testing::RunResult stranger = ctl("stranger", {"version"});
  EXPECT_EQ(stranger.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(stranger.err, "PERMISSION_DENIED")) << stranger.err;
  EXPECT_TRUE(absl::StrContains(AuditWith("rpc=GetVersion"),
                                "rpc=GetVersion object=\"*\" result=denied:missing-observer"));
  for (const char* who : {"no-certificate", ""}) {
    kmcl::client::testing::RunResult refused = ctl(who, {"version"});
    EXPECT_EQ(refused.exit_code, 1) << who;
    EXPECT_TRUE(absl::StrContains(refused.err, "UNAVAILABLE")) << who << ": " << refused.err;
  }
}

// Every RPC of the API whose table role is above observer, called by an
// observer of every partition with an empty request, is PERMISSION_DENIED,
// so no entry point skips the check; every RPC is in the table.
TEST_F(SecurityTest, AnObserverReadsButEveryMutatingRpcIsDenied) {
  StartTls();
  auto watcher = Dial("watcher");
  grpc::Status s;
  EXPECT_EQ(ListPartitions(watcher, &s), std::vector<std::string>{"default"});
  EXPECT_TRUE(s.ok()) << s.error_message();
  kmcl::v1::ListChannelDiagnosticsResponse diag;
  s = kmcl::v1::DiagnosticsService::NewStub(watcher)->ListChannelDiagnostics(Deadline().get(), {}, &diag);
  EXPECT_TRUE(s.ok()) << s.error_message();

  // A statically linked test (the sanitizer configs) keeps a .pb.cc only
  // when something refers to it, and only kept files are in the generated
  // pool: refer to one message of each file that defines a service.
  for (const google::protobuf::Descriptor* d :
       {kmcl::v1::ListPartitionsRequest::descriptor(), kmcl::v1::OfferChannelRequest::descriptor(),
        kmcl::v1::CreateGpadlRequest::descriptor(), kmcl::v1::AttachRequest::descriptor(),
        kmcl::v1::WatchEventsRequest::descriptor(), kmcl::v1::SaveChunk::descriptor(),
        kmcl::v1::ListChannelDiagnosticsResponse::descriptor(),
        kmcl::v1::ListDevicesRequest::descriptor()}) {
    ASSERT_GT(d->file()->service_count(), 0) << d->file()->name();
  }
  const google::protobuf::DescriptorPool* pool = google::protobuf::DescriptorPool::generated_pool();
  grpc::GenericStub stub(watcher);
  int mutating = 0;
  for (const char* name :
       {"kmcl.v1.PartitionService", "kmcl.v1.HostChannelService", "kmcl.v1.GuestChannelService",
        "kmcl.v1.GpadlService", "kmcl.v1.PacketService", "kmcl.v1.EventService",
        "kmcl.v1.SaveRestoreService", "kmcl.v1.DiagnosticsService", "kmcl.v1.DeviceService"}) {
    const google::protobuf::ServiceDescriptor* service = pool->FindServiceByName(name);
    ASSERT_NE(service, nullptr) << name;
    for (int i = 0; i < service->method_count(); ++i) {
      const google::protobuf::MethodDescriptor* m = service->method(i);
      std::optional<security::Role> role = security::RequiredRole(m->name());
      if (m->name() == "Attach") continue;  // role chosen by the first message; covered below
      ASSERT_TRUE(role.has_value()) << m->full_name() << " is not in the authorization table";
      if (*role == security::OBSERVER || m->client_streaming()) continue;
      ++mutating;
      const std::string method = absl::StrCat("/", service->full_name(), "/", m->name());
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      grpc::ByteBuffer request(nullptr, 0), response;
      std::promise<grpc::Status> done;
      stub.UnaryCall(&ctx, method, grpc::StubOptions(), &request, &response,
                     [&done](grpc::Status st) { done.set_value(st); });
      grpc::Status st = done.get_future().get();
      EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << method << ": " << st.error_message();
      EXPECT_TRUE(absl::StrContains(st.error_message(), security::RoleName(*role))) << st.error_message();
    }
  }
  EXPECT_GE(mutating, 25);

  // The streams the loop above skips. The observer watches events...
  auto admin = Dial("admin");
  kmcl::v1::ChannelRef ref;
  ASSERT_TRUE(Offer(admin, "default", &ref).ok());
  {
    auto ctx = Deadline();
    kmcl::v1::WatchEventsRequest req;
    req.set_partition_id("default");
    auto events = kmcl::v1::EventService::NewStub(watcher)->WatchEvents(ctx.get(), req);
    kmcl::v1::Event e;
    EXPECT_TRUE(events->Read(&e)) << "an observer reads the event log";
    ctx->TryCancel();
  }
  // ...but may attach neither as host nor as guest...
  auto packets = kmcl::v1::PacketService::NewStub(watcher);
  for (kmcl::v1::EndpointRole role : {kmcl::v1::ENDPOINT_ROLE_HOST, kmcl::v1::ENDPOINT_ROLE_GUEST}) {
    AttachStream attach(*packets, ref, role);
    EXPECT_FALSE(attach.ok());
    grpc::Status st = attach.Close();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << role << ": " << st.error_message();
    EXPECT_TRUE(absl::StrContains(st.error_message(), role == kmcl::v1::ENDPOINT_ROLE_HOST ? "host" : "guest"))
        << st.error_message();
  }
  // ...nor restore a channel or a partition (client streams).
  auto save_restore = kmcl::v1::SaveRestoreService::NewStub(watcher);
  for (bool partition : {false, true}) {
    auto ctx = Deadline();
    kmcl::v1::RestoreChannelResponse channel_response;
    kmcl::v1::Partition partition_response;
    auto upload = partition ? save_restore->RestorePartition(ctx.get(), &partition_response)
                            : save_restore->RestoreChannel(ctx.get(), &channel_response);
    kmcl::v1::RestoreChunk chunk;
    chunk.mutable_target()->set_partition_id(partition ? "restored" : "default");
    upload->Write(chunk);  // may fail once the server has refused
    upload->WritesDone();
    grpc::Status st = upload->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << (partition ? "RestorePartition: " : "RestoreChannel: ") << st.error_message();
    EXPECT_TRUE(absl::StrContains(st.error_message(), "operator")) << st.error_message();
  }
  kmcl::v1::ListPartitionsResponse listed;
  ASSERT_TRUE(kmcl::v1::PartitionService::NewStub(admin)->ListPartitions(Deadline().get(), {}, &listed).ok());
  EXPECT_EQ(listed.partitions_size(), 1) << "no restore took effect";
}

TEST_F(SecurityTest, SighupSwapsThePolicyForNewCallsAndKeepsClients) {
  StartTls();
  auto a = Dial("a");
  auto stranger = Dial("stranger");
  ASSERT_TRUE(GetPartition(a, "default").error_code() == grpc::StatusCode::PERMISSION_DENIED);
  ASSERT_EQ(GetPartition(stranger, "default").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  WriteFile(Cert("policy.textproto"),
            absl::StrCat(kPolicy, R"pb(grant { identity: "spiffe://kmcl.test/stranger" partition: "default" role: OBSERVER })pb"));
  ASSERT_EQ(::kill(daemon_.pid(), SIGHUP), 0);
  ASSERT_TRUE(daemon_.WaitForOutput("kmcld: SIGHUP: policy reloaded").ok()) << daemon_.output();
  EXPECT_TRUE(GetPartition(stranger, "default").ok()) << "the new grant holds for new calls";
  EXPECT_EQ(GetPartition(a, "default").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(a->GetState(false), GRPC_CHANNEL_READY) << "the established connection survived";
  // A broken policy file keeps the one in force.
  WriteFile(Cert("policy.textproto"), "grant { nonsense }");
  ASSERT_EQ(::kill(daemon_.pid(), SIGHUP), 0);
  ASSERT_TRUE(daemon_.WaitForOutput("kmcld: warning: SIGHUP: policy file").ok()) << daemon_.output();
  EXPECT_TRUE(GetPartition(stranger, "default").ok());
}

// A reload that takes a's roles away ends a's Attach and WatchEvents
// streams (PERMISSION_DENIED naming the role) at once; b's streams, and an
// observer's stream over every partition, go on.
TEST_F(SecurityTest, SighupThatRevokesARoleEndsThoseStreamsOnly) {
  auto admin = StartTlsWithPartitionsAB();
  ASSERT_NE(admin, nullptr);
  auto a = Dial("a");
  auto b = Dial("b");
  kmcl::v1::ChannelRef ref_a, ref_b;
  ASSERT_TRUE(Offer(a, "pa", &ref_a).ok());
  ASSERT_TRUE(Offer(b, "pb", &ref_b).ok());
  auto packets_a = kmcl::v1::PacketService::NewStub(a);
  auto packets_b = kmcl::v1::PacketService::NewStub(b);
  AttachStream attach_a(*packets_a, ref_a, kmcl::v1::ENDPOINT_ROLE_HOST);
  AttachStream attach_b(*packets_b, ref_b, kmcl::v1::ENDPOINT_ROLE_HOST);
  ASSERT_TRUE(attach_a.ok() && attach_b.ok());
  struct Watch {
    std::unique_ptr<grpc::ClientContext> ctx = Deadline();
    std::unique_ptr<grpc::ClientReader<kmcl::v1::Event>> reader;
  };
  auto watch = [](const std::shared_ptr<grpc::Channel>& ch, const std::string& partition, Watch& w) {
    kmcl::v1::WatchEventsRequest req;
    req.set_partition_id(partition);
    w.reader = kmcl::v1::EventService::NewStub(ch)->WatchEvents(w.ctx.get(), req);
    kmcl::v1::Event e;
    return w.reader->Read(&e);  // the partition's first event: the stream is open
  };
  Watch watch_a, watch_b, watch_all;
  ASSERT_TRUE(watch(a, "pa", watch_a));
  ASSERT_TRUE(watch(b, "pb", watch_b));
  ASSERT_TRUE(watch(Dial("watcher"), "", watch_all));

  std::string without_a = kPolicy;
  const std::string a_grant = R"(grant { identity: "spiffe://kmcl.test/a" partition: "pa" role: HOST role: GUEST })";
  ASSERT_NE(without_a.find(a_grant), std::string::npos);
  without_a.erase(without_a.find(a_grant), a_grant.size());
  WriteFile(Cert("policy.textproto"), without_a);
  ASSERT_EQ(::kill(daemon_.pid(), SIGHUP), 0);
  ASSERT_TRUE(daemon_.WaitForOutput("kmcld: SIGHUP: policy reloaded").ok()) << daemon_.output();

  kmcl::v1::AttachResponse response;
  while (attach_a.Read(&response)) {
  }
  grpc::Status s = attach_a.Close();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_TRUE(absl::StrContains(s.error_message(), "lost role host on partition 'pa'")) << s.error_message();
  kmcl::v1::Event event;
  while (watch_a.reader->Read(&event)) {
  }
  s = watch_a.reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_TRUE(absl::StrContains(s.error_message(), "lost role observer")) << s.error_message();

  // b's streams go on: its endpoint is still attached, and its watch and the
  // observer's see b's next event.
  kmcl::v1::ChannelRequest get;
  *get.mutable_channel() = ref_b;
  kmcl::v1::ChannelResponse channel;
  ASSERT_TRUE(kmcl::v1::HostChannelService::NewStub(b)->GetChannel(Deadline().get(), get, &channel).ok());
  EXPECT_TRUE(channel.channel().host().attached()) << "b's Attach stream was not cut";
  ASSERT_TRUE(Offer(b, "pb").ok());
  EXPECT_TRUE(watch_b.reader->Read(&event)) << "b's watch goes on";
  bool seen = false;
  while (!seen && watch_all.reader->Read(&event)) seen = event.partition_id() == "pb";
  EXPECT_TRUE(seen) << "the observer's watch goes on";
  EXPECT_TRUE(absl::StrContains(AuditWith("result=revoked:missing-host"), "rpc=Attach object=\"pa\" result=revoked:missing-host"));
  watch_b.ctx->TryCancel();
  watch_all.ctx->TryCancel();
  attach_b.Cancel();
}

// One identity over its request rate gets RESOURCE_EXHAUSTED; another
// identity's calls all complete meanwhile.
TEST_F(SecurityTest, AFloodingIdentityIsLimitedAndTheOthersGoOn) {
  StartTls(R"pb(
    grant { identity: "spiffe://kmcl.test/a" partition: "*" role: OBSERVER
            limits { requests_per_second: 1 burst: 3 } }
    grant { identity: "spiffe://kmcl.test/b" partition: "*" role: OBSERVER }
  )pb");
  auto a = Dial("a");
  auto b = Dial("b");
  auto flood = [this](const std::shared_ptr<grpc::Channel>& ch, int calls, int* exhausted) {
    const absl::Time start = absl::Now();
    for (int i = 0; i < calls; ++i) {
      grpc::Status s;
      ListPartitions(ch, &s);
      if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
        ++*exhausted;
        EXPECT_TRUE(absl::StrContains(s.error_message(), "request rate")) << s.error_message();
      } else {
        EXPECT_TRUE(s.ok()) << s.error_message();
      }
    }
    return calls / absl::ToDoubleSeconds(absl::Now() - start);
  };
  int a_exhausted = 0, b_exhausted = 0;
  std::future<double> a_rate = std::async(std::launch::async, flood, a, 50, &a_exhausted);
  const double b_rate = flood(b, 300, &b_exhausted);
  const double a_calls = a_rate.get();
  std::printf("flooding identity: %.0f calls/s, %d of 50 RESOURCE_EXHAUSTED; other identity: %.0f calls/s, "
              "%d of 300 refused\n",
              a_calls, a_exhausted, b_rate, b_exhausted);
  EXPECT_GE(a_exhausted, 1);
  EXPECT_EQ(b_exhausted, 0);
  EXPECT_TRUE(absl::StrContains(AuditWith("result=limited:request-rate"), "result=limited:request-rate"));
}

// a holds 8 packets in flight at most: its guest sends transactions that
// nobody completes (no host tool attached) until its 9th is refused with
// RESOURCE_EXHAUSTED naming the limit, while b runs guest-to-host round trips
// on its own channel and completes all of them.
TEST_F(SecurityTest, AnIdentityOverItsPacketsInFlightIsLimitedAndTheOthersGoOn) {
  WriteFile(Cert("policy.textproto"), R"pb(
    grant { identity: "spiffe://kmcl.test/admin" partition: "*" role: ADMIN }
    grant { identity: "spiffe://kmcl.test/a" partition: "pa" role: HOST role: GUEST
            limits { packets_in_flight: 8 } }
    grant { identity: "spiffe://kmcl.test/b" partition: "*" role: HOST role: GUEST }
  )pb");
  ASSERT_TRUE(daemon_.Start(TlsFlags()).ok()) << daemon_.output();
  ASSERT_TRUE(CreatePartition(Dial("admin"), "pa").ok());
  auto a = Dial("a");
  kmcl::v1::ChannelRef ref_a;
  ASSERT_TRUE(Offer(a, "pa", &ref_a).ok());
  kmcl::v1::OpenChannelRequest open;
  open.set_partition_id("pa");
  open.mutable_interface_type()->set_value(kEchoType);
  kmcl::v1::ChannelResponse opened;
  ASSERT_TRUE(kmcl::v1::GuestChannelService::NewStub(a)->OpenChannel(Deadline().get(), open, &opened).ok());

  // b's traffic, through the bridge tests' helpers on b's connection.
  Kmcld b;
  b.channel = Dial("b");
  b.host = kmcl::v1::HostChannelService::NewStub(b.channel);
  b.guest = kmcl::v1::GuestChannelService::NewStub(b.channel);
  b.packets = kmcl::v1::PacketService::NewStub(b.channel);
  absl::StatusOr<TrafficChannel> b_channel = OfferAndOpen(b, "b-traffic");
  ASSERT_TRUE(b_channel.ok()) << b_channel.status();
  // In rounds within one attach's send credits (RunTransactions does not
  // wait for credits to come back).
  constexpr int kBRounds = 10, kBPerRound = 200, kBPackets = kBRounds * kBPerRound;
  std::future<std::pair<absl::Status, double>> b_done = std::async(std::launch::async, [&] {
    const absl::Time start = absl::Now();
    absl::Status s;
    for (int round = 0; round < kBRounds && s.ok(); ++round) {
      s = RunTransactions(b, *b_channel, kBPerRound, std::string(64, 'b'));
    }
    return std::make_pair(s, kBPackets / absl::ToDoubleSeconds(absl::Now() - start));
  });

  auto packets_a = kmcl::v1::PacketService::NewStub(a);
  AttachStream guest_a(*packets_a, ref_a, kmcl::v1::ENDPOINT_ROLE_GUEST);
  ASSERT_TRUE(guest_a.ok());
  int accepted = 0;
  for (int tag = 1; tag <= 8; ++tag) {
    ASSERT_TRUE(guest_a.Send({Packet(static_cast<uint64_t>(tag), std::string(64, 'a'))}));
    ++accepted;
  }
  ASSERT_TRUE(guest_a.Send({Packet(9, std::string(64, 'a'))})) << "the write itself goes out";
  kmcl::v1::AttachResponse response;
  while (guest_a.Read(&response)) {
  }
  grpc::Status refused = guest_a.Close();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.error_message();
  EXPECT_TRUE(absl::StrContains(refused.error_message(), "packets_in_flight=8")) << refused.error_message();

  const auto [b_status, b_rate] = b_done.get();
  EXPECT_TRUE(b_status.ok()) << "b's traffic completes: " << b_status;
  std::printf("identity a: %d packets in flight accepted, the next one refused (%s); identity b: %d "
              "round trips at %.0f/s, %s\n",
              accepted, absl::StatusCodeToString(static_cast<absl::StatusCode>(refused.error_code())).c_str(), kBPackets, b_rate,
              b_status.ok() ? "all completed" : b_status.ToString().c_str());
  EXPECT_TRUE(absl::StrContains(AuditWith("limited:packets_in_flight"), "result=limited:packets_in_flight"));
}

// Channels, guest-buffer bytes and message size per identity: a, limited,
// is refused (RESOURCE_EXHAUSTED naming the limit) where b, unlimited, is
// not; what a frees it may take again.
TEST_F(SecurityTest, ChannelsGuestBuffersAndMessageSizeAreBoundedPerIdentity) {
  WriteFile(Cert("policy.textproto"), R"pb(
    grant { identity: "spiffe://kmcl.test/a" partition: "*" role: HOST role: GUEST
            limits { channels: 1 guest_buffer_bytes: 8192 max_message_bytes: 1024 } }
    grant { identity: "spiffe://kmcl.test/b" partition: "*" role: HOST role: GUEST }
  )pb");
  ASSERT_TRUE(daemon_.Start(TlsFlags()).ok()) << daemon_.output();
  auto a = Dial("a");
  auto b = Dial("b");
  ASSERT_TRUE(Offer(a, "default").ok());
  grpc::Status s = Offer(a, "default");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_TRUE(absl::StrContains(s.error_message(), "channels=1")) << s.error_message();
  EXPECT_TRUE(Offer(b, "default").ok() && Offer(b, "default").ok()) << "b's channels are not a's";

  auto allocate = [](const std::shared_ptr<grpc::Channel>& ch, uint64_t bytes, kmcl::v1::GuestBuffer* out) {
    kmcl::v1::AllocateGuestBufferRequest req;
    req.set_partition_id("default");
    req.set_byte_count(bytes);
    return kmcl::v1::GpadlService::NewStub(ch)->AllocateGuestBuffer(Deadline().get(), req, out);
  };
  kmcl::v1::GuestBuffer first, refused_buffer, again;
  ASSERT_TRUE(allocate(a, 8192, &first).ok());
  s = allocate(a, 1, &refused_buffer);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_TRUE(absl::StrContains(s.error_message(), "guest_buffer_bytes=8192")) << s.error_message();
  kmcl::v1::FreeGuestBufferRequest free_req;
  free_req.set_partition_id("default");
  free_req.set_buffer_id(first.buffer_id());
  kmcl::v1::FreeGuestBufferResponse freed;
  ASSERT_TRUE(kmcl::v1::GpadlService::NewStub(a)->FreeGuestBuffer(Deadline().get(), free_req, &freed).ok());
  EXPECT_TRUE(allocate(a, 4096, &again).ok()) << "freed bytes come back";
  EXPECT_TRUE(allocate(b, 65536, &again).ok()) << "b's buffers are not a's";

  kmcl::v1::WriteGuestMemoryRequest write;
  write.set_partition_id("default");
  write.set_gpa(0);
  write.set_data(std::string(2048, 'x'));
  kmcl::v1::WriteGuestMemoryResponse written;
  s = kmcl::v1::GpadlService::NewStub(a)->WriteGuestMemory(Deadline().get(), write, &written);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_TRUE(absl::StrContains(s.error_message(), "max_message_bytes=1024")) << s.error_message();
  s = kmcl::v1::GpadlService::NewStub(b)->WriteGuestMemory(Deadline().get(), write, &written);
  EXPECT_TRUE(s.ok()) << "b's messages are not bounded by a's limit: " << s.error_message();
}

// Limits.streams bounds one identity's open WatchEvents/Attach streams;
// another identity still opens its own.
TEST_F(SecurityTest, AnIdentityHoldsAtMostItsLimitOfStreams) {
  StartTls(R"pb(
    grant { identity: "spiffe://kmcl.test/a" partition: "*" role: OBSERVER limits { streams: 2 } }
    grant { identity: "spiffe://kmcl.test/b" partition: "*" role: OBSERVER }
  )pb");
  // An event to read, so that a stream that answered is known to be counted.
  auto local = grpc::CreateChannel("unix:" + daemon_.uds_path(), grpc::InsecureChannelCredentials());
  ASSERT_TRUE(CreatePartition(local, "pe").ok());
  struct Watch {
    std::unique_ptr<grpc::ClientContext> ctx = Deadline();
    std::unique_ptr<grpc::ClientReader<kmcl::v1::Event>> reader;
  };
  auto open = [](const std::shared_ptr<grpc::Channel>& ch, Watch& w) {
    w.reader = kmcl::v1::EventService::NewStub(ch)->WatchEvents(w.ctx.get(), {});
    kmcl::v1::Event e;
    return w.reader->Read(&e);
  };
  auto a = Dial("a");
  auto b = Dial("b");
  Watch a1, a2, a3, b1, b2, b3;
  ASSERT_TRUE(open(a, a1));
  ASSERT_TRUE(open(a, a2));
  EXPECT_FALSE(open(a, a3));
  grpc::Status s = a3.reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_TRUE(absl::StrContains(s.error_message(), "limit of 2 open streams")) << s.error_message();
  EXPECT_TRUE(open(b, b1) && open(b, b2) && open(b, b3)) << "b's streams are not a's";
  for (Watch* w : {&a1, &a2, &b1, &b2, &b3}) w->ctx->TryCancel();
}

TEST_F(SecurityTest, TheConfigFileCanSecureTheListenerInsteadOfFlags) {
  WriteFile(Cert("policy.textproto"), kPolicy);
  WriteFile(Cert("kmcld.conf"),
            absl::StrCat("listen: \"127.0.0.1:0\"\nuds: \"none\"\nsecurity {\n  tls_cert: \"", Cert("server.pem"),
                         "\"\n  tls_key: \"", Cert("server.key"), "\"\n  tls_ca: \"", Cert("ca.pem"),
                         "\"\n  policy: \"", Cert("policy.textproto"), "\"\n}\n"));
  ASSERT_TRUE(daemon_.Start({"--config=" + Cert("kmcld.conf"), "--runtime_dir=" + Cert("run"), "--devices=none"}).ok())
      << daemon_.output();
  EXPECT_TRUE(absl::StrContains(daemon_.output(), "kmcld: tcp is mutual TLS")) << daemon_.output();
  EXPECT_TRUE(GetPartition(Dial("admin"), "default").ok());
  EXPECT_EQ(GetPartition(Dial("stranger"), "default").error_code(), grpc::StatusCode::PERMISSION_DENIED);

  // The certificates gRPC reads are staged in a private folder of the
  // runtime folder, which kmcld removes when it stops.
  auto staged = [&] {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(Cert("run"))) {
      if (absl::StartsWith(e.path().filename().string(), "tls.")) out.push_back(e.path().string());
    }
    return out;
  };
  EXPECT_EQ(staged().size(), 1u);
  absl::StatusOr<int> code = daemon_.Stop(SIGTERM);
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << daemon_.output();
  EXPECT_TRUE(staged().empty()) << staged()[0];
}

// A kmcld killed with SIGKILL cannot remove its staging folder, which holds
// a copy of the private key; the next kmcld on the same runtime folder does.
TEST_F(SecurityTest, AKilledDaemonsStagedKeyIsRemovedAtTheNextStart) {
  const std::string run = Cert("run-killed");
  std::vector<std::string> flags;
  for (const std::string& f : TlsFlags()) {
    if (!absl::StartsWith(f, "--runtime_dir=")) flags.push_back(f);
  }
  flags.push_back("--runtime_dir=" + run);
  auto staged = [&] {
    std::set<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(run)) {
      if (absl::StartsWith(e.path().filename().string(), "tls.")) out.insert(e.path().filename().string());
    }
    return out;
  };
  DaemonProcess killed;
  ASSERT_TRUE(killed.Start(flags).ok()) << killed.output();
  const std::set<std::string> left = staged();
  ASSERT_EQ(left.size(), 1u);
  ASSERT_EQ(::kill(killed.pid(), SIGKILL), 0);
  ASSERT_TRUE(killed.Stop(SIGKILL).ok());  // reaped: its pid no longer runs
  EXPECT_EQ(staged(), left) << "SIGKILL leaves it behind";

  DaemonProcess next;
  ASSERT_TRUE(next.Start(flags).ok()) << next.output();
  const std::set<std::string> now = staged();
  EXPECT_EQ(now.size(), 1u);
  EXPECT_EQ(now.count(*left.begin()), 0u) << "the killed daemon's folder is still there";
}

// Valid certificates are not enough: without a policy only Unix-socket
// clients would have access, so a TLS listener without one does not start.
TEST_F(SecurityTest, ATlsListenerWithoutAPolicyIsRefused) {
  std::vector<std::string> flags;
  for (const std::string& f : TlsFlags()) {
    if (!absl::StartsWith(f, "--policy=")) flags.push_back(f);
  }
  EXPECT_FALSE(daemon_.Start(flags).ok()) << daemon_.output();
  EXPECT_TRUE(absl::StrContains(daemon_.output(), "needs --policy")) << daemon_.output();
}

TEST_F(SecurityTest, TheUnixSocketIsOwnerOnlyAndLocal) {
  StartTls();
  struct stat st;
  ASSERT_EQ(::stat(daemon_.uds_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(Cert("run").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  auto local = grpc::CreateChannel("unix:" + daemon_.uds_path(), grpc::InsecureChannelCredentials());
  EXPECT_TRUE(CreatePartition(local, "made-locally").ok()) << "local is admin by default";
}

// kmcld accepts its Unix socket's connections itself and names each client
// by its uid (SO_PEERCRED): its own user is "local" (admin without a
// policy), another user let in by --uds_group is "uid:<n>" and needs a
// grant. The other user is nobody, through setpriv (needs root).
TEST_F(SecurityTest, UnixSocketClientsAreNamedByTheirUid) {
  if (::geteuid() != 0 || ::access("/usr/bin/setpriv", X_OK) != 0) {
    GTEST_SKIP() << "needs root and setpriv to connect as another user";
  }
  ShortTempDir dir;
  if (::chown(dir.path().c_str(), static_cast<uid_t>(-1), 65534) != 0) {
    // A user namespace that maps root alone (Bazel's sandbox) has no nobody.
    GTEST_SKIP() << "cannot give a file to group nogroup here: " << std::strerror(errno);
  }
  ASSERT_EQ(::chmod(dir.path().c_str(), 0711), 0);  // nobody may pass through
  const std::string ctl = dir.Join("kmclctl");
  WriteFile(ctl, ReadFile(kmcl::client::testing::Runfile("clients/cpp/kmclctl/kmclctl")));
  ASSERT_EQ(::chmod(ctl.c_str(), 0755), 0);
  ASSERT_TRUE(daemon_
                  .Start({"--runtime_dir=" + dir.Join("run"), "--uds_group=nogroup",
                          "--audit_log=" + dir.Join("audit.log"), "--devices=none"})
                  .ok())
      << daemon_.output();
  struct stat st;
  ASSERT_EQ(::stat(daemon_.uds_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u) << "--uds_group opens the socket to the group";
  EXPECT_EQ(st.st_gid, 65534u);
  ASSERT_EQ(::stat(dir.Join("run").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0710u);
  auto version = [&](bool as_nobody) {
    std::vector<std::string> argv;
    if (as_nobody) argv = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
    argv.insert(argv.end(), {ctl, "--target", "unix:" + daemon_.uds_path(), "--timeout=10", "version"});
    return kmcl::client::testing::Run(argv);
  };
  kmcl::client::testing::RunResult owner = version(false);
  EXPECT_EQ(owner.exit_code, 0) << "kmcld's own user is local, admin without a policy: " << owner.err;
  kmcl::client::testing::RunResult nobody = version(true);
  EXPECT_EQ(nobody.exit_code, 1) << nobody.out << nobody.err;
  EXPECT_TRUE(absl::StrContains(nobody.err, "PERMISSION_DENIED")) << nobody.err;
  EXPECT_TRUE(absl::StrContains(nobody.err, "identity 'uid:65534'")) << nobody.err;
  const std::string audit = AuditWith("identity=\"uid:65534\"", dir.Join("audit.log"));
  EXPECT_TRUE(absl::StrContains(audit, "identity=\"uid:65534\" peer=\"unix:pid=")) << audit;
  std::printf("owner: exit %d; nobody: %s", owner.exit_code, nobody.err.c_str());
}

TEST(SecurityStartup, InsecureOrIncompleteListenersAreRefusedWithAReason) {
  struct Case {
    std::vector<std::string> flags;
    const char* says;
  } cases[] = {
      {{"--listen=0.0.0.0:0", "--insecure_plaintext_tcp"}, "only allowed on a loopback address"},
      {{"--listen=127.0.0.1:0"}, "needs mutual TLS"},
      {{"--listen=127.0.0.1:0", "--tls_cert=/nonexistent.pem", "--tls_key=/x", "--tls_ca=/y"},
       "--tls_cert /nonexistent.pem"},
      {{"--listen=", "--policy=/nonexistent.textproto"}, "policy file /nonexistent.textproto"},
  };
  for (const Case& c : cases) {
    DaemonProcess d;
    std::vector<std::string> flags = c.flags;
    flags.push_back("--uds=none");
    if (c.flags[0] == "--listen=") flags.back() = "--uds=/tmp/kmcld-security-test-never.sock";
    EXPECT_FALSE(d.Start(flags).ok()) << c.says;
    EXPECT_TRUE(absl::StrContains(d.output(), c.says)) << d.output();
  }
}

}  // namespace
}  // namespace kmcld::testing
