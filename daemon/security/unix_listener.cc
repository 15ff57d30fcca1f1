#include "daemon/security/unix_listener.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "kmcl_core/base/mutex.h"
#include "daemon/log.h"
#include "grpcpp/server_posix.h"

namespace kmcld::security {
namespace {

class CredentialsTable {
 public:
  void Set(int fd, UnixCredentials c) {
    kmcl::MutexLock lock(&mu_);
    by_fd_[fd] = c;
  }
  std::optional<UnixCredentials> Get(int fd) {
    kmcl::MutexLock lock(&mu_);
    auto it = by_fd_.find(fd);
    if (it == by_fd_.end()) return std::nullopt;
    return it->second;
  }

 private:
  kmcl::Mutex mu_;
  absl::flat_hash_map<int, UnixCredentials> by_fd_ ABSL_GUARDED_BY(mu_);
};

CredentialsTable& Table() {
  static auto* table = new CredentialsTable();
  return *table;
}

absl::Status ErrnoError(absl::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

}  // namespace

std::optional<UnixCredentials> PeerCredentials(absl::string_view grpc_peer) {
  int fd = 0;
  if (!absl::ConsumePrefix(&grpc_peer, "fd:") || !absl::SimpleAtoi(grpc_peer, &fd)) return std::nullopt;
  return Table().Get(fd);
}

absl::StatusOr<std::unique_ptr<UnixListener>> UnixListener::Listen(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("socket path too long (", path.size(), " bytes): ", path));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoError("socket for", path);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 128) != 0) {
    absl::Status s = ErrnoError("cannot listen on", path);
    ::close(fd);
    return s;
  }
  int wake[2];
  if (::pipe2(wake, O_CLOEXEC) != 0) {
    absl::Status s = ErrnoError("pipe for", path);
    ::close(fd);
    return s;
  }
  return std::unique_ptr<UnixListener>(new UnixListener(fd, wake[0], wake[1]));
}

UnixListener::~UnixListener() {
  Stop();
  ::close(wake_read_);
  ::close(wake_write_);
}

void UnixListener::Start(grpc::Server* server) {
  thread_ = std::thread([this, server] { Loop(server); });
}

void UnixListener::Stop() {
  if (thread_.joinable()) {
    const char byte = 0;
    while (::write(wake_write_, &byte, 1) < 0 && errno == EINTR) {
    }
    thread_.join();
  }
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

void UnixListener::Loop(grpc::Server* server) {
  while (true) {
    pollfd fds[2] = {{fd_, POLLIN, 0}, {wake_read_, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      log::Error(absl::StrCat("unix socket: poll: ", std::strerror(errno)));
      return;
    }
    if (fds[1].revents != 0) return;  // Stop
    const int conn = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);  // gRPC polls it
    if (conn < 0) {
      if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) {
        log::Warn(absl::StrCat("unix socket: accept: ", std::strerror(errno)));
      }
      continue;
    }
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (::getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      log::Warn(absl::StrCat("unix socket: SO_PEERCRED: ", std::strerror(errno), "; connection refused"));
      ::close(conn);
      continue;
    }
    // Recorded before gRPC can see a call on this descriptor.
    Table().Set(conn, UnixCredentials{cred.pid, cred.uid, cred.gid});
    grpc::AddInsecureChannelFromFd(server, conn);
  }
}

}  // namespace kmcld::security
