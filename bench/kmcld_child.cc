#include "bench/kmcld_child.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"

namespace kmcld::bench {

KmcldChild::~KmcldChild() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  if (drain_.joinable()) drain_.join();
  if (fd_ >= 0) ::close(fd_);
}

absl::Status KmcldChild::Start(const std::string& binary, absl::Duration timeout,
                              const std::vector<std::string>& extra_args) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");
  std::vector<std::string> args = {binary, "--listen=127.0.0.1:0", "--insecure_plaintext_tcp", "--uds=none"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_ = ::fork();
  if (pid_ < 0) return absl::InternalError("fork failed");
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the bench
    ::dup2(fds[1], STDERR_FILENO);
    ::execv(binary.c_str(), argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  fd_ = fds[0];
  const absl::Time deadline = absl::Now() + timeout;
  std::string out;
  while (!absl::StrContains(out, "kmcld: ready\n")) {
    const int64_t wait_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (wait_ms <= 0) {
      return absl::DeadlineExceededError(absl::StrCat("kmcld did not get ready: ", out));
    }
    pollfd pfd{fd_, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(wait_ms)) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::read(fd_, buf, sizeof(buf));
    if (n <= 0) {
      return absl::UnavailableError(
          absl::StrCat("kmcld (", binary, ") exited during start-up: ", out));
    }
    out.append(buf, static_cast<size_t>(n));
  }
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    if (absl::ConsumePrefix(&line, "kmcld: listening on tcp ")) address_ = std::string(line);
  }
  if (address_.empty()) return absl::InternalError("kmcld printed no tcp address: " + out);
  {
    absl::MutexLock lock(&mu_);
    output_ = out;
  }
  drain_ = std::thread([this] {
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd_, buf, sizeof(buf))) > 0) {
      absl::MutexLock lock(&mu_);
      output_.append(buf, static_cast<size_t>(n));
      if (output_.size() > (1 << 20)) output_.erase(0, output_.size() - (1 << 19));
    }
  });
  return absl::OkStatus();
}

int KmcldChild::Stop(absl::Duration timeout) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  const absl::Time deadline = absl::Now() + timeout;
  int status = 0;
  while (::waitpid(pid_, &status, WNOHANG) == 0) {
    if (absl::Now() >= deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  pid_ = -1;
  if (drain_.joinable()) drain_.join();
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string KmcldChild::output() {
  absl::MutexLock lock(&mu_);
  return output_;
}

std::string FindKmcld(const std::string& kmcld_flag, const char* argv0) {
  if (!kmcld_flag.empty()) return kmcld_flag;
  std::vector<std::string> candidates;
  if (const char* r = std::getenv("RUNFILES_DIR")) candidates.push_back(absl::StrCat(r, "/kmcld/daemon/kmcld"));
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) candidates.push_back(absl::StrCat(std::string(self, n), ".runfiles/kmcld/daemon/kmcld"));
  candidates.push_back(absl::StrCat(argv0, ".runfiles/kmcld/daemon/kmcld"));
  if (const char* t = std::getenv("TEST_SRCDIR")) candidates.push_back(absl::StrCat(t, "/kmcld/daemon/kmcld"));
  candidates.push_back("daemon/kmcld");  // bazel run's working folder is the runfiles tree
  candidates.push_back("bazel-bin/daemon/kmcld");
  for (const std::string& c : candidates) {
    if (::access(c.c_str(), X_OK) == 0) return c;
  }
  return "";
}

int64_t RssKib(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view v = line;
    if (absl::ConsumePrefix(&v, "VmRSS:")) {
      v = absl::StripAsciiWhitespace(v);
      absl::ConsumeSuffix(&v, "kB");
      int64_t kib = -1;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(v), &kib)) return kib;
    }
  }
  return -1;
}

}  // namespace kmcld::bench
