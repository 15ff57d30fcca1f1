// clients/cpp/testing/kmcld.h: a real kmcld for the client library's tests,
// serving its Unix socket only (in a private folder), plus the channel every
// stream test needs: an offered, started echo-typed host channel opened by a
// guest. Tests that need TCP put a TcpProxy (tcp_proxy.h) in front of the
// socket: kmcld's own TCP listener may demand TLS, the proxy never does.
//
// Thread-compatible: one test thread drives one TestDaemon.
#ifndef KMCLD_CLIENTS_CPP_TESTING_KMCLD_H_
#define KMCLD_CLIENTS_CPP_TESTING_KMCLD_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "clients/cpp/kmcl.h"
#include "tests/daemon_process.h"
#include "tests/short_temp_dir.h"

namespace kmcl::client::testing {

inline constexpr char kTestType[] = "5a3c1e2d-7b6f-4a8e-9c0d-1e2f3a4b5c6d";

struct TestDaemon {
  // kmcld --listen= --uds=<private folder>/kmcld.sock plus `flags`.
  absl::Status Start(const std::vector<std::string>& flags = {});
  std::string target() const { return "unix:" + process.uds_path(); }
  kmcld::testing::ShortTempDir dir;
  kmcld::testing::DaemonProcess process;
};

// A host channel of kTestType offered with start = true on `partition` by
// `host`, and opened by `guest` (two clients: two tools).
struct EchoChannel {
  HostChannel host;
  GuestChannel guest;
};
absl::StatusOr<EchoChannel> OfferAndOpen(std::shared_ptr<Client> host,
                                         std::shared_ptr<Client> guest,
                                         const std::string& partition = "default",
                                         uint32_t max_packet_size = 0);

// VMBus pads payloads to 8 bytes with zeros.
std::string Padded(std::string s);

}  // namespace kmcl::client::testing

#endif  // KMCLD_CLIENTS_CPP_TESTING_KMCLD_H_
