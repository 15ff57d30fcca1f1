#include "clients/cpp/testing/tcp_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace kmcl::client::testing {
namespace {

int ConnectUnix(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    ::close(fd);
    return -1;
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

bool TcpProxy::Pump(int from, int to, Direction direction) {
  char buf[64 * 1024];
  ssize_t n = ::read(from, buf, sizeof(buf));
  if (n <= 0) return false;
  {
    kmcl::MutexLock lock(&mu_);
    if (swallowing_[direction]) {
      swallowed_[direction] += static_cast<uint64_t>(n);
      return true;
    }
  }
  for (ssize_t off = 0; off < n;) {
    ssize_t w = ::write(to, buf + off, static_cast<size_t>(n - off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    off += w;
  }
  return true;
}

TcpProxy::~TcpProxy() {
  {
    kmcl::MutexLock lock(&mu_);
    stop_ = true;
  }
  Wake();
  if (thread_.joinable()) thread_.join();
  for (Pair& p : pairs_) {
    ::close(p.client);
    ::close(p.upstream);
  }
  if (listen_fd_ >= 0) ::close(listen_fd_);
  for (int fd : wake_) {
    if (fd >= 0) ::close(fd);
  }
}

absl::Status TcpProxy::Start(const std::string& upstream) {
  upstream_ = upstream;
  if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) return absl::InternalError("pipe failed");
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      ::listen(listen_fd_, 16) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return absl::InternalError("TcpProxy: cannot listen on 127.0.0.1:0");
  }
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

std::string TcpProxy::address() const { return absl::StrCat("127.0.0.1:", port_); }

void TcpProxy::Wake() {
  char c = 1;
  (void)!::write(wake_[1], &c, 1);
}

void TcpProxy::SetAccepting(bool accepting) {
  kmcl::MutexLock lock(&mu_);
  accepting_ = accepting;
}

int TcpProxy::DropAll() {
  {
    kmcl::MutexLock lock(&mu_);
    drop_ = true;
    drop_done_ = false;
  }
  Wake();
  kmcl::MutexLock lock(&mu_);
  while (!drop_done_) dropped_cv_.Wait(&mu_);
  return dropped_;
}

void TcpProxy::SetSwallowing(Direction direction, bool swallowing) {
  kmcl::MutexLock lock(&mu_);
  swallowing_[direction] = swallowing;
}

uint64_t TcpProxy::swallowed(Direction direction) const {
  kmcl::MutexLock lock(&mu_);
  return swallowed_[direction];
}

int TcpProxy::connections_accepted() const {
  kmcl::MutexLock lock(&mu_);
  return accepted_;
}

void TcpProxy::Loop() {
  for (;;) {
    std::vector<pollfd> fds = {{wake_[0], POLLIN, 0}, {listen_fd_, POLLIN, 0}};
    for (const Pair& p : pairs_) {
      fds.push_back({p.client, POLLIN, 0});
      fds.push_back({p.upstream, POLLIN, 0});
    }
    if (::poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) return;
    bool accepting;
    {
      kmcl::MutexLock lock(&mu_);
      if (stop_) return;
      accepting = accepting_;
      if (drop_) {
        for (Pair& p : pairs_) {
          ::shutdown(p.client, SHUT_RDWR);
          ::close(p.client);
          ::close(p.upstream);
        }
        dropped_ = static_cast<int>(pairs_.size());
        pairs_.clear();
        drop_ = false;
        drop_done_ = true;
        dropped_cv_.SignalAll();
        char buf[64];
        while (::read(wake_[0], buf, sizeof(buf)) > 0) {
        }
        continue;  // the fds polled above are closed
      }
    }
    if (fds[0].revents != 0) {
      char buf[64];
      while (::read(wake_[0], buf, sizeof(buf)) > 0) {
      }
    }
    if (fds[1].revents & POLLIN) {
      int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c >= 0) {
        int u = accepting ? ConnectUnix(upstream_) : -1;
        if (u < 0) {
          ::close(c);
        } else {
          int one = 1;
          ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
          pairs_.push_back({c, u});
          kmcl::MutexLock lock(&mu_);
          ++accepted_;
        }
      }
    }
    std::vector<Pair> alive;
    for (size_t i = 0; i < pairs_.size(); ++i) {
      if (2 + 2 * i >= fds.size()) {  // accepted after this poll
        alive.push_back(pairs_[i]);
        continue;
      }
      const pollfd& c = fds[2 + 2 * i];
      const pollfd& u = fds[3 + 2 * i];
      bool ok = true;
      if (c.revents != 0) ok = Pump(pairs_[i].client, pairs_[i].upstream, kToUpstream);
      if (ok && u.revents != 0) ok = Pump(pairs_[i].upstream, pairs_[i].client, kToClient);
      if (ok) {
        alive.push_back(pairs_[i]);
      } else {
        ::close(pairs_[i].client);
        ::close(pairs_[i].upstream);
      }
    }
    pairs_.swap(alive);
  }
}

}  // namespace kmcl::client::testing
