#include "daemon/listen_options.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "tests/short_temp_dir.h"

namespace kmcld {
namespace {

using ::kmcld::testing::ShortTempDir;


// Binds (and optionally listens on) a Unix socket at `path`; returns the fd.
int BindSocket(const std::string& path, bool listen) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  if (listen) {
    EXPECT_EQ(::listen(fd, 1), 0);
  }
  return fd;
}

TEST(ListenOptions, DefaultSocketGoesInAPrivateRuntimeDir) {
  ShortTempDir tmp;
  std::string dir = tmp.Join("run");
  ListenOptions in;
  in.runtime_dir = dir;
  auto out = ResolveListenOptions(in);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->uds_path, dir + "/kmcld.sock");
  struct stat st;
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST(ListenOptions, NoneDisablesTheSocket) {
  ListenOptions in;
  in.uds_path = "none";
  auto out = ResolveListenOptions(in);
  ASSERT_TRUE(out.ok());
  EXPECT_TRUE(out->uds_path.empty());
}

TEST(ListenOptions, StaleSocketIsRemoved) {
  ShortTempDir tmp;
  std::string path = tmp.Join("stale.sock");
  int fd = BindSocket(path, /*listen=*/false);
  ::close(fd);  // the file stays, nobody accepts on it
  ListenOptions in;
  in.uds_path = path;
  auto out = ResolveListenOptions(in);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_NE(::access(path.c_str(), F_OK), 0);
}

TEST(ListenOptions, LiveSocketIsNotStolen) {
  ShortTempDir tmp;
  std::string path = tmp.Join("live.sock");
  int fd = BindSocket(path, /*listen=*/true);
  ListenOptions in;
  in.uds_path = path;
  auto out = ResolveListenOptions(in);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(out.status().message().find("already listening"), std::string::npos);
  EXPECT_EQ(::access(path.c_str(), F_OK), 0);
  ::close(fd);
}

TEST(ListenOptions, RegularFileIsRefused) {
  ShortTempDir tmp;
  std::string path = tmp.Join("file");
  std::ofstream(path) << "x";
  ListenOptions in;
  in.uds_path = path;
  EXPECT_EQ(ResolveListenOptions(in).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(ListenOptions, OverlongPathIsRefused) {
  ListenOptions in;
  in.uds_path = "/tmp/" + std::string(200, 'x');
  EXPECT_EQ(ResolveListenOptions(in).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kmcld
