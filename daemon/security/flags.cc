#include "daemon/security/flags.h"

#include <string>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"

ABSL_FLAG(std::string, tls_cert, "", "PEM server certificate (chain) for the TCP listener's mutual TLS.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA bundle; every TCP client must present a certificate that chains to it.");
ABSL_FLAG(uint32_t, tls_refresh_s, 60,
          "How often the TLS files are re-read (SIGHUP re-reads them at once), so renewed "
          "certificates apply to new connections.");
ABSL_FLAG(std::string, tls_min_version, "1.3",
          "Oldest TLS version the TCP listener accepts: 1.3, or 1.2 for clients that cannot do 1.3.");
ABSL_FLAG(bool, insecure_plaintext_tcp, false,
          "Serve --listen without TLS: allowed only on a loopback address. Its clients are "
          "'insecure-loopback', ADMIN unless --policy says otherwise.");
ABSL_FLAG(std::string, uds_group, "",
          "Group that may also use the Unix socket (socket 0660, folder 0710); empty: owner only (0600).");
ABSL_FLAG(std::string, policy, "",
          "Authorization policy (daemon/security/policy.proto, text format; docs/security.md). "
          "Needed by a TLS listener; SIGHUP re-reads it.");
ABSL_FLAG(std::string, audit_log, "",
          "Append the audit lines (denials and privileged calls) to this file; empty: stderr.");

namespace kmcld::security {

SecurityOptions SecurityOptionsFromFlags(const config::Security& file) {
  SecurityOptions o;
  o.tls_cert = file.tls_cert();
  o.tls_key = file.tls_key();
  o.tls_ca = file.tls_ca();
  if (file.tls_refresh_s() != 0) o.cert_refresh_s = file.tls_refresh_s();
  if (!file.tls_min_version().empty()) o.tls_min_version = file.tls_min_version();
  o.insecure_plaintext_tcp = file.insecure_plaintext_tcp();
  o.uds_group = file.uds_group();
  o.policy_file = file.policy();
  o.audit_log = file.audit_log();
  auto given = [](absl::string_view name) {
    const absl::CommandLineFlag* f = absl::FindCommandLineFlag(name);
    return f != nullptr && f->CurrentValue() != f->DefaultValue();
  };
  if (given("tls_cert")) o.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  if (given("tls_key")) o.tls_key = absl::GetFlag(FLAGS_tls_key);
  if (given("tls_ca")) o.tls_ca = absl::GetFlag(FLAGS_tls_ca);
  if (given("tls_refresh_s")) o.cert_refresh_s = absl::GetFlag(FLAGS_tls_refresh_s);
  if (given("tls_min_version")) o.tls_min_version = absl::GetFlag(FLAGS_tls_min_version);
  if (given("insecure_plaintext_tcp")) o.insecure_plaintext_tcp = absl::GetFlag(FLAGS_insecure_plaintext_tcp);
  if (given("uds_group")) o.uds_group = absl::GetFlag(FLAGS_uds_group);
  if (given("policy")) o.policy_file = absl::GetFlag(FLAGS_policy);
  if (given("audit_log")) o.audit_log = absl::GetFlag(FLAGS_audit_log);
  return o;
}

}  // namespace kmcld::security
