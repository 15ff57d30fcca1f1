// daemon/security/cert_stage.h: the TLS files gRPC actually reads, kept by
// kmcld in a private folder so that certificates change only when kmcld
// says so (start-up, SIGHUP, every --tls_refresh_s) and only to a checked,
// consistent set.
//
// gRPC 1.51 cannot be told to reload certificates; its
// FileWatcherCertificateProvider re-reads three files on a timer and
// publishes whatever it finds, a key that no longer matches its
// certificate included (a renewal written file by file). So kmcld points
// the watcher at copies: Refresh() reads the operator's --tls_cert,
// --tls_key and --tls_ca, checks them (PEM, the key matches the
// certificate, the CA parses), and only then publishes them as a new
// generation folder that the `current` symlink is swapped to. Every file of
// a generation carries that generation's own modification time, so the
// watcher's read (which retries when a file's mtime changes under it) never
// mixes two generations. The watcher polls `current` every second
// (kWatchSeconds): a published change reaches new handshakes within about
// a second; connections already up keep the certificate they shook hands
// with.
//
// Usage:
//   auto stage = CertStage::Create({cert, key, ca}, runtime_dir);  // checks, publishes
//   FileWatcherCertificateProvider(stage->key_path(), stage->cert_path(),
//                                  stage->ca_path(), CertStage::kWatchSeconds);
//   stage->Refresh();  // on SIGHUP: true when a new set was published
//
// The folder (mode 0700, files 0600), tls.<pid>.XXXXXX, is removed by the
// destructor; one that a killed kmcld left (its pid no longer runs) is
// removed by the next Create in the same parent.
// Thread-compatible: Refresh from one thread (kmcld's signal thread).
#ifndef KMCLD_DAEMON_SECURITY_CERT_STAGE_H_
#define KMCLD_DAEMON_SECURITY_CERT_STAGE_H_

#include <cstdint>
#include <ctime>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace kmcld::security {

struct TlsFiles {
  std::string cert;  // PEM certificate chain, leaf first
  std::string key;   // PEM private key of the leaf
  std::string ca;    // PEM CA bundle for client certificates
};

// Checks PEM contents (not paths): the certificate and CA parse, the key
// parses and matches the certificate. INVALID_ARGUMENT naming `names`' file.
absl::Status CheckTlsContents(const TlsFiles& names, const TlsFiles& contents);

class CertStage {
 public:
  static constexpr unsigned kWatchSeconds = 1;

  // Makes a private folder under `parent` (created 0700 if missing) and
  // publishes the first generation. NOT_FOUND / INVALID_ARGUMENT for a
  // missing or bad file, naming it.
  static absl::StatusOr<std::unique_ptr<CertStage>> Create(TlsFiles sources, const std::string& parent);
  ~CertStage();
  CertStage(const CertStage&) = delete;
  // Removes `parent`'s tls.<pid>.* folders whose process no longer runs.
  static void RemoveStaleFolders(const std::string& parent);
  CertStage& operator=(const CertStage&) = delete;

  // Re-reads the sources: false when they are unchanged, true when a new
  // generation was published; an error (the published set stays) when a
  // file is missing or the set does not check.
  absl::StatusOr<bool> Refresh();

  std::string cert_path() const { return dir_ + "/current/server.pem"; }
  std::string key_path() const { return dir_ + "/current/server.key"; }
  std::string ca_path() const { return dir_ + "/current/ca.pem"; }
  const std::string& dir() const { return dir_; }

 private:
  CertStage(TlsFiles sources, std::string dir) : sources_(std::move(sources)), dir_(std::move(dir)) {}
  absl::Status Publish(const TlsFiles& contents);

  const TlsFiles sources_;
  const std::string dir_;
  TlsFiles published_;     // contents of the current generation
  uint64_t generation_ = 0;
  time_t last_mtime_ = 0;  // every generation's mtime is later than the last one's
};

}  // namespace kmcld::security

#endif  // KMCLD_DAEMON_SECURITY_CERT_STAGE_H_
