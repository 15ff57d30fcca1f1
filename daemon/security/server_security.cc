#include "daemon/security/server_security.h"

#include <arpa/inet.h>
#include <grp.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "daemon/log.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace kmcld::security {
namespace {

FILE* OpenAuditLog(const std::string& path) {
  if (path.empty()) return stderr;
  return std::fopen(path.c_str(), "ae");
}

// What GRPC_SSL_CIPHER_SUITES is set to for a TLS 1.3 minimum: only TLS 1.2
// suites that need a pre-shared key, which kmcld never configures, so
// OpenSSL finds no TLS 1.2 suite it can use and refuses a TLS 1.2 client
// ("no shared cipher"), while TLS 1.3 negotiates its own suites, untouched.
constexpr char kNoUsableTls12Suites[] = "PSK-AES256-GCM-SHA384:PSK-AES128-GCM-SHA256";

}  // namespace

absl::Status SetMinimumTlsVersion(absl::string_view version) {
  if (version == "1.2") return absl::OkStatus();
  if (version != "1.3") {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_min_version: expected 1.3 or 1.2, got '", version, "'"));
  }
  // gRPC 1.51 has no minimum-version setting (TlsCredentialsOptions gained
  // set_min_tls_version in later releases; 1.51 always allows TLS 1.2), but
  // it takes the TLS 1.2 cipher list from this variable, read once when the
  // first TLS context is made: after this, before any credentials exist.
  const char* before = std::getenv("GRPC_SSL_CIPHER_SUITES");
  if (before != nullptr && *before != '\0' && absl::string_view(before) != kNoUsableTls12Suites) {
    log::Warn("GRPC_SSL_CIPHER_SUITES is replaced to keep TLS 1.3 the minimum (--tls_min_version=1.2 keeps it)",
              {{"was", before}});
  }
  if (::setenv("GRPC_SSL_CIPHER_SUITES", kNoUsableTls12Suites, 1) != 0) {
    return absl::InternalError("cannot set GRPC_SSL_CIPHER_SUITES");
  }
  return absl::OkStatus();
}

bool IsLoopbackAddress(absl::string_view host_port) {
  absl::string_view host = host_port.substr(0, host_port.rfind(':'));
  if (absl::ConsumePrefix(&host, "[")) host = absl::StripSuffix(host, "]");
  if (absl::AsciiStrToLower(host) == "localhost") return true;
  std::string h(host);
  in_addr v4;
  if (inet_pton(AF_INET, h.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6;
  if (inet_pton(AF_INET6, h.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

absl::StatusOr<std::unique_ptr<ServerSecurity>> ServerSecurity::Create(const SecurityOptions& options,
                                                                       const ListenOptions& listen) {
  const bool tcp = !listen.tcp_address.empty();
  const bool tls_given = !options.tls_cert.empty() || !options.tls_key.empty() || !options.tls_ca.empty();
  std::unique_ptr<CertStage> stage;  // TLS only
  if (tcp && options.insecure_plaintext_tcp) {
    if (tls_given) {
      return absl::InvalidArgumentError(
          "--insecure_plaintext_tcp and --tls_cert/--tls_key/--tls_ca exclude each other");
    }
    if (!IsLoopbackAddress(listen.tcp_address)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "refusing plaintext TCP on ", listen.tcp_address,
          ": --insecure_plaintext_tcp is only allowed on a loopback address (127.0.0.1, [::1]); "
          "use mutual TLS (--tls_cert, --tls_key, --tls_ca, --policy) anywhere else"));
    }
  } else if (tcp) {
    if (!tls_given) {
      return absl::InvalidArgumentError(absl::StrCat(
          "TCP listener ", listen.tcp_address,
          " needs mutual TLS (--tls_cert, --tls_key, --tls_ca and --policy), or, on a loopback "
          "address only, --insecure_plaintext_tcp; --listen= serves the Unix socket alone"));
    }
    // Checks the three files (a clear start-up error rather than failed
    // handshakes later) and stages the copies gRPC reads.
    auto staged = CertStage::Create({options.tls_cert, options.tls_key, options.tls_ca},
                                    listen.runtime_dir.empty() ? DefaultRuntimeDir() : listen.runtime_dir);
    if (!staged.ok()) return staged.status();
    stage = *std::move(staged);
    if (absl::Status s = SetMinimumTlsVersion(options.tls_min_version); !s.ok()) return s;
    if (options.policy_file.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "TLS listener ", listen.tcp_address,
          " needs --policy: without a policy only Unix-socket clients have access"));
    }
    if (options.cert_refresh_s == 0) {
      return absl::InvalidArgumentError("--tls_refresh_s must be >= 1");
    }
  }
  if (!options.uds_group.empty() && listen.uds_path.empty()) {
    return absl::InvalidArgumentError("--uds_group needs the Unix socket (--uds is none)");
  }
  std::shared_ptr<const Policy> policy = Policy::BuiltIn(options.insecure_plaintext_tcp);
  if (!options.policy_file.empty()) {
    auto loaded = Policy::Load(options.policy_file);
    if (!loaded.ok()) return loaded.status();
    policy = *std::move(loaded);
  }
  FILE* audit = OpenAuditLog(options.audit_log);
  if (audit == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("--audit_log ", options.audit_log, ": ", std::strerror(errno)));
  }
  std::unique_ptr<ServerSecurity> s(new ServerSecurity(options, listen, audit, std::move(policy)));
  if (stage != nullptr) {
    // gRPC reads kmcld's checked copies (cert_stage.h), never the operator's
    // files while they are being rewritten.
    auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        stage->key_path(), stage->cert_path(), stage->ca_path(), CertStage::kWatchSeconds);
    s->stage_ = std::move(stage);
    grpc::experimental::TlsServerCredentialsOptions tls(provider);
    tls.watch_root_certs();
    tls.watch_identity_key_cert_pairs();
    tls.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    s->tcp_credentials_ = grpc::experimental::TlsServerCredentials(tls);
    s->credentials_is_tls_ = true;
  } else {
    s->tcp_credentials_ = grpc::InsecureServerCredentials();
  }
  return s;
}

ServerSecurity::ServerSecurity(SecurityOptions options, ListenOptions listen, FILE* audit_file,
                               std::shared_ptr<const Policy> policy)
    : options_(std::move(options)),
      listen_(std::move(listen)),
      policy_(std::move(policy)),
      audit_(audit_file),
      authorizer_(policy_, audit_, limiter_, streams_, budget_) {}

ServerSecurity::~ServerSecurity() = default;

absl::Status ServerSecurity::AddListeners(grpc::ServerBuilder& builder, int* tcp_port) {
  if (!listen_.tcp_address.empty()) builder.AddListeningPort(listen_.tcp_address, tcp_credentials_, tcp_port);
  if (!listen_.uds_path.empty()) {
    auto listener = UnixListener::Listen(listen_.uds_path);
    if (!listener.ok()) return listener.status();
    unix_listener_ = *std::move(listener);
  }
  return absl::OkStatus();
}

void ServerSecurity::StartAccepting(grpc::Server* server) {
  if (unix_listener_ != nullptr) unix_listener_->Start(server);
}

void ServerSecurity::StopAccepting() {
  if (unix_listener_ != nullptr) unix_listener_->Stop();
}

absl::Status ServerSecurity::SecureSocket() {
  if (listen_.uds_path.empty()) return absl::OkStatus();
  const std::string& path = listen_.uds_path;
  mode_t mode = 0600;
  if (!options_.uds_group.empty()) {
    group* g = ::getgrnam(options_.uds_group.c_str());
    if (g == nullptr) return absl::NotFoundError(absl::StrCat("--uds_group ", options_.uds_group, ": no such group"));
    if (::chown(path.c_str(), static_cast<uid_t>(-1), g->gr_gid) != 0) {
      return absl::PermissionDeniedError(absl::StrCat("chgrp ", options_.uds_group, " ", path, ": ", std::strerror(errno)));
    }
    mode = 0660;
    // The runtime folder kmcld made (0700) must let the group reach the socket.
    if (!listen_.runtime_dir.empty() &&
        (::chown(listen_.runtime_dir.c_str(), static_cast<uid_t>(-1), g->gr_gid) != 0 ||
         ::chmod(listen_.runtime_dir.c_str(), 0710) != 0)) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot open ", listen_.runtime_dir, " to group ", options_.uds_group, ": ", std::strerror(errno)));
    }
  }
  if (::chmod(path.c_str(), mode) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("chmod ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> ServerSecurity::RefreshCertificates() {
  if (stage_ == nullptr) return false;
  return stage_->Refresh();
}

absl::Status ServerSecurity::Reload() {
  if (options_.policy_file.empty()) return absl::OkStatus();
  auto loaded = Policy::Load(options_.policy_file);
  if (!loaded.ok()) return loaded.status();
  policy_.Set(*std::move(loaded));
  authorizer_.RevokeStreams();
  return absl::OkStatus();
}

}  // namespace kmcld::security
