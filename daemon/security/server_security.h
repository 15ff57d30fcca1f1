// daemon/security/server_security.h: how kmcld's listeners are secured, and
// the authorization state they share (docs/security.md).
//
// - TCP is mutual TLS: the server certificate and key, and a CA bundle
//   against which every client certificate is verified
//   (GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY). gRPC's file
//   watcher re-reads the three files every `cert_refresh_s` seconds, so
//   renewed certificates take effect for new connections without a restart.
// - Plaintext TCP only on a loopback address and only with
//   insecure_plaintext_tcp; any other plaintext listener refuses to start.
// - A TLS listener needs a policy file; without one only Unix-socket
//   clients ("local") have access.
// - The Unix socket is made 0600 (0660 and group `uds_group` if set).
//
// ServerSecurity::Create checks all of it before anything listens, so a bad
// path or a malformed file is a clear start-up error. Reload (SIGHUP)
// re-reads the policy; a bad new policy keeps the old one.
//
// Thread-safe after Create.
#ifndef KMCLD_DAEMON_SECURITY_SERVER_SECURITY_H_
#define KMCLD_DAEMON_SECURITY_SERVER_SECURITY_H_

#include <cstdio>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "daemon/listen_options.h"
#include "daemon/security/authorizer.h"
#include "daemon/security/policy.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace kmcld::security {

struct SecurityOptions {
  std::string tls_cert;  // PEM server certificate chain
  std::string tls_key;   // PEM private key
  std::string tls_ca;    // PEM CA bundle that client certificates must chain to
  bool insecure_plaintext_tcp = false;
  std::string uds_group;    // group allowed on the Unix socket; empty: owner only
  std::string policy_file;  // policy.proto text; empty: the built-in policy
  std::string audit_log;    // file the audit lines are appended to; empty: stderr
  uint32_t cert_refresh_s = 60;
};

// True for 127.0.0.0/8, [::1] and localhost (host:port form).
bool IsLoopbackAddress(absl::string_view host_port);

class ServerSecurity {
 public:
  static absl::StatusOr<std::unique_ptr<ServerSecurity>> Create(const SecurityOptions& options,
                                                                const ListenOptions& listen);
  ~ServerSecurity();

  // Adds the TCP (credentials per the options) and Unix listeners.
  void AddListeners(grpc::ServerBuilder& builder, int* tcp_port);
  // After BuildAndStart: restricts the socket file. A failure is fatal.
  absl::Status SecureSocket();
  // Re-reads the policy file (SIGHUP). The old policy stays on error.
  absl::Status Reload();

  const Authorizer& authorizer() const { return authorizer_; }
  // "mutual TLS", "plaintext (insecure, loopback only)".
  const char* tcp_mode() const { return credentials_is_tls_ ? "mutual TLS" : "plaintext (insecure, loopback only)"; }

 private:
  ServerSecurity(SecurityOptions options, ListenOptions listen, FILE* audit_file,
                 std::shared_ptr<const Policy> policy);

  const SecurityOptions options_;
  const ListenOptions listen_;
  FILE* const audit_file_;  // owned unless stderr
  PolicyHolder policy_;
  AuditLog audit_;
  RateLimiter limiter_;
  StreamSlots streams_;
  Authorizer authorizer_;
  std::shared_ptr<grpc::ServerCredentials> tcp_credentials_;
  bool credentials_is_tls_ = false;
};

}  // namespace kmcld::security

#endif  // KMCLD_DAEMON_SECURITY_SERVER_SECURITY_H_
