// daemon/security/unix_listener.h: kmcld's Unix socket, owned by kmcld
// rather than by gRPC, so that every client's credentials are known.
//
// gRPC 1.51 tells a server nothing about a Unix-socket peer (its peer
// string is "unix:" and its AuthContext is empty: no SO_PEERCRED). So
// kmcld binds and listens itself, accepts on a thread of its own, reads
// each connection's SO_PEERCRED (pid, uid, gid), and hands the connected
// socket to gRPC (grpc::AddInsecureChannelFromFd), whose peer string for it
// is "fd:<n>". PeerCredentials("fd:<n>") gives back what was read, so the
// authorizer names the caller by uid (authorizer.h: "local" for kmcld's own
// user, "uid:<n>" for another, e.g. a --uds_group member).
//
//   auto l = UnixListener::Listen("/run/kmcld/kmcld.sock");  // before the server starts
//   l->Start(server.get());                                    // after BuildAndStart
//   l->Stop();                                                 // before server->Shutdown
//
// The credentials table keeps one entry per open descriptor: gRPC closes a
// connection's descriptor only after its last call is gone, and a reused
// number is overwritten by the accept that reuses it before gRPC sees the
// new connection.
//
// Thread-safe: Start and Stop from one thread; PeerCredentials from any.
#ifndef KMCLD_DAEMON_SECURITY_UNIX_LISTENER_H_
#define KMCLD_DAEMON_SECURITY_UNIX_LISTENER_H_

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/server.h"

namespace kmcld::security {

struct UnixCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

// What SO_PEERCRED said of the connection gRPC calls `grpc_peer` ("fd:12");
// nullopt for any other peer (TCP, an unknown descriptor).
std::optional<UnixCredentials> PeerCredentials(absl::string_view grpc_peer);

class UnixListener {
 public:
  // Binds and listens on `path` (which must not exist; the folder should be
  // private, as kmcld's runtime folder is). INTERNAL naming the path and
  // the error.
  static absl::StatusOr<std::unique_ptr<UnixListener>> Listen(const std::string& path);
  ~UnixListener();  // Stop()
  UnixListener(const UnixListener&) = delete;
  UnixListener& operator=(const UnixListener&) = delete;

  // Accepts connections for `server` (started) on a thread until Stop.
  void Start(grpc::Server* server);
  // Stops accepting and closes the listening socket (connections already
  // handed to gRPC stay). Idempotent.
  void Stop();

 private:
  UnixListener(int fd, int wake_read, int wake_write) : fd_(fd), wake_read_(wake_read), wake_write_(wake_write) {}
  void Loop(grpc::Server* server);

  int fd_;
  const int wake_read_;
  const int wake_write_;
  std::thread thread_;
};

}  // namespace kmcld::security

#endif  // KMCLD_DAEMON_SECURITY_UNIX_LISTENER_H_
