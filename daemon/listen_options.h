// daemon/listen_options.h: where kmcld listens, and how the defaults are found.
//
// kmcld listens on a Unix domain socket in a runtime folder it creates (mode
// 0700, so only its user can connect) and optionally on a TCP address
// (secured by daemon/security/server_security.h). Both are set by flags; ResolveListenOptions fills in the defaults and prepares the
// socket path (creating the folder, removing a stale socket left by a dead
// daemon, refusing to steal one a live daemon still serves).
//
// Thread-compatible: plain functions, called once at start-up.
#ifndef KMCLD_DAEMON_LISTEN_OPTIONS_H_
#define KMCLD_DAEMON_LISTEN_OPTIONS_H_

#include <string>

#include "absl/status/statusor.h"

namespace kmcld {

struct ListenOptions {
  // host:port; empty disables TCP. Port 0 picks a free port.
  std::string tcp_address;
  // Folder for the socket; empty picks the default (see DefaultRuntimeDir).
  std::string runtime_dir;
  // Socket path; empty means <runtime_dir>/kmcld.sock. "none" disables UDS.
  std::string uds_path;
};

// $XDG_RUNTIME_DIR/kmcld, else /run/kmcld for root, else /tmp/kmcld-<uid>.
std::string DefaultRuntimeDir();

// Fills defaults, creates the runtime folder and clears a stale socket.
// FAILED_PRECONDITION if a live daemon already serves the socket.
absl::StatusOr<ListenOptions> ResolveListenOptions(ListenOptions options);

}  // namespace kmcld

#endif  // KMCLD_DAEMON_LISTEN_OPTIONS_H_
