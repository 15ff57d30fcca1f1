// The client library against a real kmcld: targets, errors with their gRPC
// code, default deadlines, and handles that release what they hold.
#include "clients/cpp/client.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "clients/cpp/handles.h"
#include "clients/cpp/testing/kmcld.h"
#include "clients/cpp/testing/subprocess.h"
#include "clients/cpp/testing/tcp_proxy.h"
#include "gtest/gtest.h"
#include "tests/daemon_process.h"
#include "tests/short_temp_dir.h"

namespace kmcl::client {
namespace {

using testing::TestDaemon;

TEST(NormalizeTargetTest, AcceptsUnixAndHostPortOnly) {
  EXPECT_EQ(*NormalizeTarget("unix:/run/kmcld/kmcld.sock"), "unix:/run/kmcld/kmcld.sock");
  EXPECT_EQ(*NormalizeTarget("unix:///run/k.sock"), "unix:/run/k.sock");
  EXPECT_EQ(*NormalizeTarget(" 127.0.0.1:50551 "), "127.0.0.1:50551");
  EXPECT_EQ(*NormalizeTarget("[::1]:7"), "[::1]:7");
  EXPECT_EQ(*NormalizeTarget("kmcld-host.example:443"), "kmcld-host.example:443");
  for (const char* bad : {"", "unix:", "unix:relative", "localhost", "host:0", "host:65536",
                          "host:port", ":50551", "a b:1", "[::1:5"}) {
    absl::StatusOr<std::string> r = NormalizeTarget(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

// TCP through a proxy in front of the socket (kmcld's own TCP listener may
// require TLS, which this library does not speak yet).
TEST(ClientTest, ConnectsOverUnixSocketAndTcp) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.process.output();
  testing::TcpProxy proxy;
  ASSERT_TRUE(proxy.Start(d.process.uds_path()).ok());
  for (const std::string& target : {d.target(), "unix://" + d.process.uds_path(), proxy.address()}) {
    auto client = Client::Connect(target);
    ASSERT_TRUE(client.ok()) << target << ": " << client.status();
    auto parts = (*client)->ListPartitions();
    ASSERT_TRUE(parts.ok()) << parts.status();
    ASSERT_EQ(parts->size(), 1u);
    EXPECT_EQ((*parts)[0].id(), "default");
    auto health = (*client)->Health();
    ASSERT_TRUE(health.ok()) << health.status();
    EXPECT_EQ(*health, grpc::health::v1::HealthCheckResponse::SERVING);
  }
}

TEST(ClientTest, NothingListeningIsUnavailable) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), len), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  ::close(fd);  // bound, never listened: nothing answers on that port
  ClientOptions options;
  // A refused port fails at once, with gRPC's reason, not after this.
  options.connect_timeout = absl::Seconds(30);
  const std::string target = absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
  auto client = Client::Connect(target, options);
  EXPECT_EQ(client.status().code(), absl::StatusCode::kUnavailable) << client.status();
  EXPECT_TRUE(absl::StrContains(client.status().message(), target)) << client.status();
  EXPECT_TRUE(absl::StrContains(client.status().message(), "refused")) << client.status();
  EXPECT_FALSE(absl::StrContains(client.status().message(), "within")) << client.status();
  options.wait_for_connect = false;
  options.call_timeout = absl::Seconds(2);
  client = Client::Connect(absl::StrCat("127.0.0.1:", ntohs(addr.sin_port)), options);
  ASSERT_TRUE(client.ok());
  EXPECT_EQ((*client)->ListPartitions().status().code(), absl::StatusCode::kUnavailable);
}

// A Unix target that cannot answer fails at once, naming the path and why:
// missing, not a socket, or a socket nobody listens on (a daemon that died).
TEST(ClientTest, UnixSocketThatCannotAnswerFailsAtOnceNamingThePath) {
  kmcld::testing::ShortTempDir dir;
  ClientOptions options;
  options.connect_timeout = absl::Seconds(30);  // never reached
  auto missing = Client::Connect("unix:" + dir.Join("missing.sock"), options);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(missing.status().message(), dir.Join("missing.sock")))
      << missing.status();
  EXPECT_TRUE(absl::StrContains(missing.status().message(), "No such file")) << missing.status();

  std::ofstream(dir.Join("plain")) << "not a socket";
  auto plain = Client::Connect("unix:" + dir.Join("plain"), options);
  EXPECT_EQ(plain.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(plain.status().message(), "not a socket")) << plain.status();

  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string stale = dir.Join("stale.sock");
  ASSERT_LT(stale.size(), sizeof(addr.sun_path));
  std::strncpy(addr.sun_path, stale.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ::close(fd);  // the socket file stays; nothing listens on it
  auto refused = Client::Connect("unix:" + stale, options);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(refused.status().message(), stale)) << refused.status();
  EXPECT_FALSE(absl::StrContains(refused.status().message(), "within")) << refused.status();
}

// kmcld's TCP listener with mutual TLS (certificates from
// tools/make-certs.sh): the client's certificate gets in, none does not.
TEST(ClientTest, ConnectsWithMutualTls) {
  kmcld::testing::ShortTempDir dir;
  const std::string script = testing::Runfile("tools/make-certs.sh");
  ASSERT_EQ(std::system((script + " " + dir.path() + " admin=spiffe://kmcl.test/admin >/dev/null 2>&1")
                            .c_str()),
            0);
  std::ofstream(dir.Join("policy.textproto"))
      << R"pb(grant { identity: "spiffe://kmcl.test/admin" partition: "*" role: ADMIN })pb";
  kmcld::testing::DaemonProcess d;
  ASSERT_TRUE(d.Start({"--listen=127.0.0.1:0", "--uds=none", "--tls_cert=" + dir.Join("server.pem"),
                       "--tls_key=" + dir.Join("server.key"), "--tls_ca=" + dir.Join("ca.pem"),
                       "--policy=" + dir.Join("policy.textproto")})
                  .ok())
      << d.output();
  ClientOptions tls;
  tls.tls_ca_file = dir.Join("ca.pem");
  tls.tls_cert_file = dir.Join("admin.pem");
  tls.tls_key_file = dir.Join("admin.key");
  auto client = Client::Connect(d.tcp_address(), tls);
  ASSERT_TRUE(client.ok()) << client.status();
  auto parts = (*client)->ListPartitions();
  ASSERT_TRUE(parts.ok()) << parts.status();
  EXPECT_FALSE(parts->empty());

  ClientOptions no_cert;
  no_cert.tls_ca_file = dir.Join("ca.pem");
  no_cert.connect_timeout = absl::Seconds(2);
  EXPECT_FALSE(Client::Connect(d.tcp_address(), no_cert).ok()) << "kmcld demands a client certificate";
  ClientOptions plaintext;
  plaintext.connect_timeout = absl::Seconds(2);
  EXPECT_FALSE(Client::Connect(d.tcp_address(), plaintext).ok());
  ClientOptions half;
  half.tls_ca_file = dir.Join("ca.pem");
  half.tls_cert_file = dir.Join("admin.pem");
  EXPECT_EQ(Client::Connect(d.tcp_address(), half).status().code(),
            absl::StatusCode::kInvalidArgument);
  half.tls_ca_file = dir.Join("missing.pem");
  half.tls_key_file = dir.Join("admin.key");
  EXPECT_EQ(Client::Connect(d.tcp_address(), half).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ClientTest, ErrorsKeepTheGrpcCodeAndNameTheMethod) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.process.output();
  auto client = Client::Connect(d.target());
  ASSERT_TRUE(client.ok());
  absl::StatusOr<v1::Partition> p = (*client)->GetPartition("no-such");
  EXPECT_EQ(p.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StartsWith(p.status().message(), "GetPartition: ")) << p.status();
  v1::CreatePartitionRequest bad;
  bad.set_id("Not Valid!");
  EXPECT_EQ((*client)->CreatePartition(bad).status().code(), absl::StatusCode::kInvalidArgument);
  v1::ChannelRef ref;
  ref.set_partition_id("default");
  ref.set_channel_id(77);
  EXPECT_EQ((*client)->GetChannel(ref).status().code(), absl::StatusCode::kNotFound);
}

TEST(HandlesTest, ReleaseWhatTheyHoldInKmcld) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.process.output();
  auto client = Client::Connect(d.target());
  ASSERT_TRUE(client.ok());
  std::shared_ptr<Client> c = *client;
  {
    v1::CreatePartitionRequest create;
    create.set_id("lib-handles");
    auto partition = Partition::Create(c, create);
    ASSERT_TRUE(partition.ok()) << partition.status();
    EXPECT_EQ(partition->id(), "lib-handles");
    {
      auto channel = testing::OfferAndOpen(c, c, "lib-handles");
      ASSERT_TRUE(channel.ok()) << channel.status();
      auto buffer = GuestBuffer::Allocate(c, "lib-handles", 3 * 4096);
      ASSERT_TRUE(buffer.ok()) << buffer.status();
      const std::string pattern(3 * 4096, 'k');
      ASSERT_TRUE(buffer->Write(0, pattern).ok());
      auto gpadl = Gpadl::Create(c, channel->guest.ref(), *buffer);
      ASSERT_TRUE(gpadl.ok()) << gpadl.status();
      {
        auto lease = GpadlLease::Map(c, channel->host.ref(), gpadl->id(), /*read_only=*/true);
        ASSERT_TRUE(lease.ok()) << lease.status();
        auto read = lease->Read(0, pattern.size());
        ASSERT_TRUE(read.ok()) << read.status();
        EXPECT_EQ(*read, pattern);
        // A second map while leased: the daemon's FAILED_PRECONDITION.
        EXPECT_EQ(GpadlLease::Map(c, channel->host.ref(), gpadl->id(), true).status().code(),
                  absl::StatusCode::kFailedPrecondition);
      }
      // The lease is gone: the GPADL maps again.
      auto again = GpadlLease::Map(c, channel->host.ref(), gpadl->id(), true);
      ASSERT_TRUE(again.ok()) << again.status();
      ASSERT_TRUE(again->Unmap().ok());
      auto moved = std::move(*gpadl);
      EXPECT_FALSE(gpadl->owned());
      ASSERT_TRUE(moved.Teardown().ok());
      EXPECT_EQ(moved.Teardown().code(), absl::StatusCode::kFailedPrecondition);
      auto listed = c->ListChannels("lib-handles");
      ASSERT_TRUE(listed.ok());
      EXPECT_EQ(listed->size(), 1u);
    }  // buffer freed, guest closed, host rescinded and cleaned up
    auto listed = c->ListChannels("lib-handles");
    ASSERT_TRUE(listed.ok());
    EXPECT_EQ(listed->size(), 0u);
  }  // partition deleted
  EXPECT_EQ(c->GetPartition("lib-handles").status().code(), absl::StatusCode::kNotFound);
}

TEST(ClientTest, SavesAndRestoresThroughStreams) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.process.output();
  std::shared_ptr<Client> c = *Client::Connect(d.target());
  v1::CreatePartitionRequest create;
  create.set_id("lib-save");
  auto partition = Partition::Create(c, create);
  ASSERT_TRUE(partition.ok());
  auto channel = testing::OfferAndOpen(c, c, "lib-save");
  ASSERT_TRUE(channel.ok()) << channel.status();
  std::stringstream blob;
  uint64_t last_progress = 0;
  auto saved = c->SavePartition("lib-save", false, blob,
                                [&](uint64_t bytes, uint64_t) { last_progress = bytes; });
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_GT(*saved, 0u);
  EXPECT_EQ(last_progress, *saved);
  EXPECT_EQ(blob.str().size(), *saved);
  auto restored = c->RestorePartition("lib-save-copy", blob);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(restored->id(), "lib-save-copy");
  EXPECT_EQ(restored->channel_count(), 1u);
  ASSERT_TRUE(c->DeletePartition("lib-save-copy", true).ok());
  std::stringstream garbage("not a blob");
  EXPECT_EQ(c->RestorePartition("lib-garbage", garbage).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kmcl::client
