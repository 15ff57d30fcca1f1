#include "tests/tls_probe.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace kmcld::testing {
namespace {

std::string OpenSslErrors() {
  std::string text;
  for (unsigned long e = ERR_get_error(); e != 0; e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    absl::StrAppend(&text, text.empty() ? "" : "; ", buf);
  }
  return text.empty() ? "no OpenSSL error" : text;
}

absl::StatusOr<int> Connect(const std::string& host_port) {
  const size_t colon = host_port.rfind(':');
  int port = 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  if (colon == std::string::npos || !absl::SimpleAtoi(host_port.substr(colon + 1), &port) ||
      inet_pton(AF_INET, host_port.substr(0, colon).c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("not an IPv4 host:port: ", host_port));
  }
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(std::strerror(errno));
  const timeval limit = {10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const std::string error = std::strerror(errno);
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("connect ", host_port, ": ", error));
  }
  return fd;
}

}  // namespace

absl::StatusOr<TlsProbeResult> ProbeTls(const std::string& host_port, const TlsProbeOptions& options) {
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()), &SSL_CTX_free);
  if (ctx == nullptr) return absl::InternalError(OpenSslErrors());
  if ((options.min_version != 0 && SSL_CTX_set_min_proto_version(ctx.get(), options.min_version) != 1) ||
      (options.max_version != 0 && SSL_CTX_set_max_proto_version(ctx.get(), options.max_version) != 1)) {
    return absl::InvalidArgumentError(OpenSslErrors());
  }
  if (!options.cert.empty() &&
      (SSL_CTX_use_certificate_chain_file(ctx.get(), options.cert.c_str()) != 1 ||
       SSL_CTX_use_PrivateKey_file(ctx.get(), options.key.c_str(), SSL_FILETYPE_PEM) != 1)) {
    return absl::InvalidArgumentError(absl::StrCat(options.cert, ": ", OpenSslErrors()));
  }
  if (!options.ca.empty()) {
    if (SSL_CTX_load_verify_locations(ctx.get(), options.ca.c_str(), nullptr) != 1) {
      return absl::InvalidArgumentError(absl::StrCat(options.ca, ": ", OpenSslErrors()));
    }
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  }
  static const unsigned char kAlpn[] = {2, 'h', '2'};
  SSL_CTX_set_alpn_protos(ctx.get(), kAlpn, sizeof(kAlpn));
  absl::StatusOr<int> fd = Connect(host_port);
  if (!fd.ok()) return fd.status();
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx.get()), &SSL_free);
  SSL_set_fd(ssl.get(), *fd);
  const int rc = SSL_connect(ssl.get());
  absl::StatusOr<TlsProbeResult> result;
  if (rc != 1) {
    result = absl::UnavailableError(absl::StrCat("handshake failed: ", OpenSslErrors()));
  } else {
    TlsProbeResult r;
    r.protocol = SSL_get_version(ssl.get());
    if (X509* peer = SSL_get1_peer_certificate(ssl.get()); peer != nullptr) {
      BIO* bio = BIO_new(BIO_s_mem());
      PEM_write_bio_X509(bio, peer);
      char* data = nullptr;
      const long n = BIO_get_mem_data(bio, &data);
      r.server_cert.assign(data, static_cast<size_t>(n));
      BIO_free(bio);
      X509_free(peer);
    }
    SSL_shutdown(ssl.get());
    result = std::move(r);
  }
  ::close(*fd);
  return result;
}

}  // namespace kmcld::testing
