// clients/cpp/testing/tcp_proxy.h: a loopback TCP proxy in front of a Unix
// socket (kmcld's), which a test controls: it gives clients a host:port
// target, drops their connections under them (as a network failure would)
// and keeps them out for as long as the test wants.
//
//   TcpProxy proxy;
//   ASSERT_TRUE(proxy.Start(daemon.process.uds_path()).ok());
//   client connects to proxy.address();
//   proxy.SetAccepting(false);  // new connections are closed at once
//   proxy.DropAll();            // every open connection is closed
//   proxy.SetAccepting(true);
//   proxy.SetSwallowing(TcpProxy::kToClient, true);  // bytes to clients vanish
//
// Thread-safe: one internal thread moves the bytes (poll); the methods may
// be called from any thread.
#ifndef KMCLD_CLIENTS_CPP_TESTING_TCP_PROXY_H_
#define KMCLD_CLIENTS_CPP_TESTING_TCP_PROXY_H_

#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "kmcl_core/base/mutex.h"

namespace kmcl::client::testing {

class TcpProxy {
 public:
  TcpProxy() = default;
  ~TcpProxy();
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  // Listens on 127.0.0.1:0 and forwards to the Unix socket `upstream`.
  absl::Status Start(const std::string& upstream);
  std::string address() const;  // "127.0.0.1:<port>"

  void SetAccepting(bool accepting);
  // While on, bytes going that way are read and thrown away (counted), as
  // when a connection dies with data in flight: the sender sees its writes
  // succeed, the receiver never gets them.
  enum Direction { kToUpstream = 0, kToClient = 1 };
  void SetSwallowing(Direction direction, bool swallowing);
  uint64_t swallowed(Direction direction) const;  // bytes thrown away so far
  // Closes every forwarded connection; returns how many there were.
  int DropAll();
  int connections_accepted() const;

 private:
  struct Pair {
    int client = -1;
    int upstream = -1;
  };
  void Loop();
  // Moves what `from` has to `to`, or throws it away when that direction
  // swallows. False when either end is done.
  bool Pump(int from, int to, Direction direction);
  void Wake();

  std::string upstream_;
  uint16_t port_ = 0;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  std::thread thread_;
  mutable kmcl::Mutex mu_;
  kmcl::CondVar dropped_cv_;
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool drop_ ABSL_GUARDED_BY(mu_) = false;
  int dropped_ ABSL_GUARDED_BY(mu_) = 0;
  bool drop_done_ ABSL_GUARDED_BY(mu_) = false;
  int accepted_ ABSL_GUARDED_BY(mu_) = 0;
  bool swallowing_[2] ABSL_GUARDED_BY(mu_) = {false, false};
  uint64_t swallowed_[2] ABSL_GUARDED_BY(mu_) = {0, 0};
  std::vector<Pair> pairs_;  // the loop thread's only
};

}  // namespace kmcl::client::testing

#endif  // KMCLD_CLIENTS_CPP_TESTING_TCP_PROXY_H_
