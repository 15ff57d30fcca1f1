#include "daemon/security/cert_stage.h"

#include <fcntl.h>
#include <signal.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kmcld::security {
namespace {

struct BioCloser {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Closer {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyCloser {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using BioPtr = std::unique_ptr<BIO, BioCloser>;
using X509Ptr = std::unique_ptr<X509, X509Closer>;
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyCloser>;

BioPtr MemoryBio(const std::string& pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

X509Ptr FirstCertificate(const std::string& pem) {
  BioPtr bio = MemoryBio(pem);
  return X509Ptr(bio == nullptr ? nullptr : PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

absl::StatusOr<std::string> ReadWhole(const std::string& flag, const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat(flag, " is not set"));
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(flag, " ", path, ": ", std::strerror(errno)));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::Status ErrnoError(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status WriteFile(const std::string& path, const std::string& contents, time_t mtime) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoError("cannot create", path);
  size_t done = 0;
  while (done < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      return ErrnoError("cannot write", path);
    }
    done += static_cast<size_t>(n);
  }
  const timespec times[2] = {{mtime, 0}, {mtime, 0}};
  const bool stamped = ::futimens(fd, times) == 0;
  ::close(fd);
  return stamped ? absl::OkStatus() : ErrnoError("cannot set the time of", path);
}

}  // namespace

absl::Status CheckTlsContents(const TlsFiles& names, const TlsFiles& contents) {
  X509Ptr cert = FirstCertificate(contents.cert);
  if (cert == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("--tls_cert ", names.cert, ": no PEM certificate"));
  }
  BioPtr key_bio = MemoryBio(contents.key);
  KeyPtr key(key_bio == nullptr ? nullptr : PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("--tls_key ", names.key, ": no PEM private key"));
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_key ", names.key, " does not match --tls_cert ", names.cert));
  }
  if (FirstCertificate(contents.ca) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("--tls_ca ", names.ca, ": no PEM certificate"));
  }
  return absl::OkStatus();
}

void CertStage::RemoveStaleFolders(const std::string& parent) {
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(parent, error)) {
    // tls.<pid>.XXXXXX: a folder whose kmcld no longer runs (it was killed
    // or crashed) still holds a copy of the private key.
    const std::string name = entry.path().filename().string();
    int pid = 0;
    char rest = 0;
    if (std::sscanf(name.c_str(), "tls.%d.%c", &pid, &rest) != 2 || pid <= 0 || pid == ::getpid()) continue;
    if (::kill(pid, 0) == 0 || errno != ESRCH) continue;  // alive, or not ours to judge
    std::error_code ignored;
    std::filesystem::remove_all(entry.path(), ignored);
  }
}

absl::StatusOr<std::unique_ptr<CertStage>> CertStage::Create(TlsFiles sources, const std::string& parent) {
  if (::mkdir(parent.c_str(), 0700) != 0 && errno != EEXIST) return ErrnoError("cannot create", parent);
  RemoveStaleFolders(parent);
  std::string pattern = absl::StrCat(parent, "/tls.", ::getpid(), ".XXXXXX");
  if (::mkdtemp(pattern.data()) == nullptr) return ErrnoError("cannot create a folder in", parent);
  std::unique_ptr<CertStage> stage(new CertStage(std::move(sources), pattern));
  absl::StatusOr<bool> first = stage->Refresh();
  if (!first.ok()) return first.status();
  return stage;
}

CertStage::~CertStage() {
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

absl::StatusOr<bool> CertStage::Refresh() {
  TlsFiles contents;
  for (auto [flag, path, out] : {std::tuple{"--tls_cert", &sources_.cert, &contents.cert},
                                 std::tuple{"--tls_key", &sources_.key, &contents.key},
                                 std::tuple{"--tls_ca", &sources_.ca, &contents.ca}}) {
    absl::StatusOr<std::string> text = ReadWhole(flag, *path);
    if (!text.ok()) return text.status();
    *out = *std::move(text);
  }
  if (generation_ > 0 && contents.cert == published_.cert && contents.key == published_.key &&
      contents.ca == published_.ca) {
    return false;
  }
  if (absl::Status s = CheckTlsContents(sources_, contents); !s.ok()) return s;
  if (absl::Status s = Publish(contents); !s.ok()) return s;
  published_ = std::move(contents);
  return true;
}

absl::Status CertStage::Publish(const TlsFiles& contents) {
  const uint64_t generation = generation_ + 1;
  const std::string name = absl::StrCat("gen-", generation);
  const std::string gen_dir = absl::StrCat(dir_, "/", name);
  std::error_code ignored;
  std::filesystem::remove_all(gen_dir, ignored);  // a leftover of a failed attempt
  if (::mkdir(gen_dir.c_str(), 0700) != 0) return ErrnoError("cannot create", gen_dir);
  // One modification time per generation, later than the previous one's:
  // gRPC's watcher retries a read during which a file's mtime changed, so
  // it cannot pair this key with the previous certificate.
  const time_t mtime = std::max(::time(nullptr), last_mtime_ + 1);
  for (auto [file, text] : {std::pair{"server.pem", &contents.cert}, std::pair{"server.key", &contents.key},
                            std::pair{"ca.pem", &contents.ca}}) {
    if (absl::Status s = WriteFile(absl::StrCat(gen_dir, "/", file), *text, mtime); !s.ok()) return s;
  }
  const std::string link = absl::StrCat(dir_, "/current");
  const std::string next_link = absl::StrCat(dir_, "/current.next");
  ::unlink(next_link.c_str());
  if (::symlink(name.c_str(), next_link.c_str()) != 0) return ErrnoError("cannot link", next_link);
  if (::rename(next_link.c_str(), link.c_str()) != 0) return ErrnoError("cannot publish", link);
  generation_ = generation;
  last_mtime_ = mtime;
  // The generation before the previous one can no longer be read through
  // `current` by a read that would then pass the mtime check.
  if (generation >= 3) std::filesystem::remove_all(absl::StrCat(dir_, "/gen-", generation - 2), ignored);
  return absl::OkStatus();
}

}  // namespace kmcld::security
