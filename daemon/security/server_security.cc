#include "daemon/security/server_security.h"

#include <arpa/inet.h>
#include <grp.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace kmcld::security {
namespace {

struct BioCloser {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioCloser>;

absl::StatusOr<BioPtr> OpenPem(const std::string& what, const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " is not set"));
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (bio == nullptr) {
    return absl::NotFoundError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
  }
  return bio;
}

// Loads the three PEM files once, so that a wrong path, a file that is not
// PEM or a key that does not match its certificate stops kmcld at start-up
// rather than failing every handshake later.
absl::Status CheckTlsFiles(const SecurityOptions& o) {
  auto cert_bio = OpenPem("--tls_cert", o.tls_cert);
  if (!cert_bio.ok()) return cert_bio.status();
  X509* cert = PEM_read_bio_X509(cert_bio->get(), nullptr, nullptr, nullptr);
  if (cert == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("--tls_cert ", o.tls_cert, ": no PEM certificate"));
  }
  auto key_bio = OpenPem("--tls_key", o.tls_key);
  if (!key_bio.ok()) {
    X509_free(cert);
    return key_bio.status();
  }
  EVP_PKEY* key = PEM_read_bio_PrivateKey(key_bio->get(), nullptr, nullptr, nullptr);
  absl::Status status;
  if (key == nullptr) {
    status = absl::InvalidArgumentError(absl::StrCat("--tls_key ", o.tls_key, ": no PEM private key"));
  } else if (X509_check_private_key(cert, key) != 1) {
    status = absl::InvalidArgumentError(
        absl::StrCat("--tls_key ", o.tls_key, " does not match --tls_cert ", o.tls_cert));
  }
  EVP_PKEY_free(key);
  X509_free(cert);
  if (!status.ok()) return status;
  auto ca_bio = OpenPem("--tls_ca", o.tls_ca);
  if (!ca_bio.ok()) return ca_bio.status();
  X509* ca = PEM_read_bio_X509(ca_bio->get(), nullptr, nullptr, nullptr);
  if (ca == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("--tls_ca ", o.tls_ca, ": no PEM certificate"));
  }
  X509_free(ca);
  return absl::OkStatus();
}

FILE* OpenAuditLog(const std::string& path) {
  if (path.empty()) return stderr;
  return std::fopen(path.c_str(), "ae");
}

}  // namespace

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
    if (absl::Status s = CheckTlsFiles(options); !s.ok()) return s;
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
  if (tcp && !options.insecure_plaintext_tcp) {
    auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        options.tls_key, options.tls_cert, options.tls_ca, options.cert_refresh_s);
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
      audit_file_(audit_file),
      policy_(std::move(policy)),
      audit_(audit_file),
      authorizer_(policy_, audit_, limiter_, streams_) {}

ServerSecurity::~ServerSecurity() {
  if (audit_file_ != stderr) std::fclose(audit_file_);
}

void ServerSecurity::AddListeners(grpc::ServerBuilder& builder, int* tcp_port) {
  if (!listen_.tcp_address.empty()) builder.AddListeningPort(listen_.tcp_address, tcp_credentials_, tcp_port);
  // The socket's peers are the daemon's own user (or --uds_group): "local".
  if (!listen_.uds_path.empty()) {
    builder.AddListeningPort("unix:" + listen_.uds_path, grpc::InsecureServerCredentials());
  }
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

absl::Status ServerSecurity::Reload() {
  if (options_.policy_file.empty()) return absl::OkStatus();
  auto loaded = Policy::Load(options_.policy_file);
  if (!loaded.ok()) return loaded.status();
  policy_.Set(*std::move(loaded));
  return absl::OkStatus();
}

}  // namespace kmcld::security
