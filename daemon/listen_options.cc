#include "daemon/listen_options.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kmcld {
namespace {

absl::Status ErrnoStatus(absl::string_view what, const std::string& path) {
  return absl::FailedPreconditionError(
      absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

// True if something accepts connections on the socket at `path`.
bool SocketIsLive(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  bool live = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return live;
}

absl::Status MakePrivateDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return ErrnoStatus("cannot create runtime folder", dir);
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) return ErrnoStatus("cannot stat", dir);
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(dir, " is not a folder"));
  }
  if (st.st_uid != ::getuid()) {
    return absl::FailedPreconditionError(
        absl::StrCat("runtime folder ", dir, " belongs to another user"));
  }
  return absl::OkStatus();
}

}  // namespace

std::string DefaultRuntimeDir() {
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && *xdg != '\0') {
    return absl::StrCat(xdg, "/kmcld");
  }
  if (::getuid() == 0 && ::access("/run", W_OK) == 0) return "/run/kmcld";
  return absl::StrCat("/tmp/kmcld-", ::getuid());
}

absl::StatusOr<ListenOptions> ResolveListenOptions(ListenOptions options) {
  if (options.uds_path == "none") {
    options.uds_path.clear();
    return options;
  }
  if (options.uds_path.empty()) {
    if (options.runtime_dir.empty()) options.runtime_dir = DefaultRuntimeDir();
    if (absl::Status s = MakePrivateDir(options.runtime_dir); !s.ok()) return s;
    options.uds_path = absl::StrCat(options.runtime_dir, "/kmcld.sock");
  }
  if (options.uds_path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("socket path too long (max ", sizeof(sockaddr_un{}.sun_path) - 1,
                     " bytes): ", options.uds_path));
  }
  struct stat st;
  if (::lstat(options.uds_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat(options.uds_path, " exists and is not a socket"));
    }
    if (SocketIsLive(options.uds_path)) {
      return absl::FailedPreconditionError(
          absl::StrCat("another kmcld is already listening on ", options.uds_path));
    }
    if (::unlink(options.uds_path.c_str()) != 0) {
      return ErrnoStatus("cannot remove stale socket", options.uds_path);
    }
  }
  return options;
}

}  // namespace kmcld
