// daemon/security/server_security.h: how kmcld's listeners are secured, and
// the authorization state they share (docs/security.md).
//
// - TCP is mutual TLS, TLS 1.3 at least (SetMinimumTlsVersion): the server
//   certificate and key, and a CA bundle against which every client
//   certificate is verified
//   (GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY). gRPC reads
//   kmcld's checked copies of the three files (cert_stage.h), which
//   RefreshCertificates updates (SIGHUP, and every `cert_refresh_s`
//   seconds): renewed certificates take effect for new connections without a
//   restart, and connected clients stay.
// - Plaintext TCP only on a loopback address and only with
//   insecure_plaintext_tcp; any other plaintext listener refuses to start.
// - A TLS listener needs a policy file; without one only Unix-socket
//   clients ("local") have access.
// - The Unix socket is made 0600 (0660 and group `uds_group` if set); kmcld
//   accepts its connections itself to learn each client's uid
//   (unix_listener.h).
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
#include "daemon/security/cert_stage.h"
#include "daemon/security/policy.h"
#include "daemon/security/unix_listener.h"
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
  std::string tls_min_version = "1.3";  // "1.3" or "1.2"
};

// "1.3": makes every TLS context kmcld's gRPC creates refuse TLS 1.2 (gRPC
// 1.51 has no minimum-version option; this sets GRPC_SSL_CIPHER_SUITES so
// that no TLS 1.2 cipher suite is usable, see the .cc). "1.2": leaves gRPC's
// default (TLS 1.2 and 1.3). Before any gRPC credentials are made, while
// kmcld has one thread. INVALID_ARGUMENT for anything else.
absl::Status SetMinimumTlsVersion(absl::string_view version);

// True for 127.0.0.0/8, [::1] and localhost (host:port form).
bool IsLoopbackAddress(absl::string_view host_port);

class ServerSecurity {
 public:
  static absl::StatusOr<std::unique_ptr<ServerSecurity>> Create(const SecurityOptions& options,
                                                                const ListenOptions& listen);
  ~ServerSecurity();

  // Adds the TCP listener (credentials per the options) to `builder`, and
  // binds the Unix socket, which kmcld serves itself (unix_listener.h) so
  // that its clients are known by uid.
  absl::Status AddListeners(grpc::ServerBuilder& builder, int* tcp_port);
  // After BuildAndStart: restricts the socket file. A failure is fatal.
  absl::Status SecureSocket();
  // After SecureSocket: hands the socket's connections to `server`, until
  // StopAccepting (before server->Shutdown).
  void StartAccepting(grpc::Server* server);
  void StopAccepting();
  // Re-reads the policy file (SIGHUP) and ends the open streams it no
  // longer allows (Authorizer::RevokeStreams). The old policy stays on error.
  absl::Status Reload();
  // Re-reads the TLS files (SIGHUP, and every cert_refresh_s): true when a
  // new, checked set was published to gRPC (new handshakes use it within
  // CertStage::kWatchSeconds); false when unchanged or without TLS; an
  // error keeps the set in force.
  absl::StatusOr<bool> RefreshCertificates();

  const Authorizer& authorizer() const { return authorizer_; }
  // How often RefreshCertificates should run; 0 without TLS.
  uint32_t cert_refresh_s() const { return stage_ != nullptr ? options_.cert_refresh_s : 0; }
  // "mutual TLS", "plaintext (insecure, loopback only)".
  const char* tcp_mode() const { return credentials_is_tls_ ? "mutual TLS" : "plaintext (insecure, loopback only)"; }

 private:
  ServerSecurity(SecurityOptions options, ListenOptions listen, FILE* audit_file,
                 std::shared_ptr<const Policy> policy);

  std::unique_ptr<CertStage> stage_;  // TLS only; outlives the credentials that read it
  const SecurityOptions options_;
  const ListenOptions listen_;
  PolicyHolder policy_;
  AuditLog audit_;  // owns the audit file
  RateLimiter limiter_;
  StreamSlots streams_;
  IdentityBudget budget_;
  Authorizer authorizer_;
  std::shared_ptr<grpc::ServerCredentials> tcp_credentials_;
  std::unique_ptr<UnixListener> unix_listener_;
  bool credentials_is_tls_ = false;
};

}  // namespace kmcld::security

#endif  // KMCLD_DAEMON_SECURITY_SERVER_SECURITY_H_
