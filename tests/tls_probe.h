// tests/tls_probe.h: one raw TLS handshake with a listener (OpenSSL, no
// gRPC), for the tests that check what kmcld's TCP listener accepts (the
// TLS versions) and which certificate it presents (after a renewal).
//
//   TlsProbeOptions o{.max_version = TLS1_2_VERSION, .cert = "a.pem", ...};
//   absl::StatusOr<TlsProbeResult> r = ProbeTls("127.0.0.1:5000", o);
//
// Thread-compatible; blocking, with a 10 s limit on every socket operation.
#ifndef KMCLD_TESTS_TLS_PROBE_H_
#define KMCLD_TESTS_TLS_PROBE_H_

#include <string>

#include "absl/status/statusor.h"

namespace kmcld::testing {

struct TlsProbeOptions {
  int min_version = 0;  // OpenSSL's TLS1_2_VERSION, TLS1_3_VERSION; 0: no bound
  int max_version = 0;
  std::string cert;  // PEM client certificate file; empty: none
  std::string key;
  std::string ca;    // PEM CA file that must have signed the server's certificate
};

struct TlsProbeResult {
  std::string protocol;     // "TLSv1.3"
  std::string server_cert;  // the server's leaf certificate, PEM
};

// Connects to `host_port` (IPv4), offers ALPN h2 (as gRPC does) and shakes
// hands. UNAVAILABLE with OpenSSL's reason when the handshake fails.
absl::StatusOr<TlsProbeResult> ProbeTls(const std::string& host_port, const TlsProbeOptions& options);

}  // namespace kmcld::testing

#endif  // KMCLD_TESTS_TLS_PROBE_H_
