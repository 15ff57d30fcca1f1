#include "tests/daemon_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace kmcld::testing {

DaemonProcess::~DaemonProcess() {
  // Stopped as an operator would, so that kmcld removes what it made (its
  // socket, its TLS staging folder); killed only if it does not exit.
  if (pid_ > 0) Stop(SIGTERM, absl::Seconds(20)).IgnoreError();
  if (stderr_fd_ >= 0) ::close(stderr_fd_);
}

std::string DaemonProcess::BinaryPath() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  return absl::StrCat(srcdir ? srcdir : ".", "/", workspace ? workspace : "kmcld",
                      "/daemon/kmcld");
}

bool DaemonProcess::ReadSome(absl::Time deadline) {
  pollfd pfd{stderr_fd_, POLLIN, 0};
  int64_t wait_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
  if (wait_ms <= 0) return true;
  if (::poll(&pfd, 1, static_cast<int>(wait_ms)) <= 0) return true;
  char buf[4096];
  ssize_t n = ::read(stderr_fd_, buf, sizeof(buf));
  if (n <= 0) return false;
  output_.append(buf, static_cast<size_t>(n));
  return true;
}

absl::Status DaemonProcess::Start(const std::vector<std::string>& args, absl::Duration timeout) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError("pipe failed");
  std::string binary = BinaryPath();
  std::vector<std::string> argv_storage = {binary};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_ = ::fork();
  if (pid_ < 0) return absl::InternalError("fork failed");
  if (pid_ == 0) {
    ::dup2(fds[1], STDERR_FILENO);
    ::execv(binary.c_str(), argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  stderr_fd_ = fds[0];
  absl::Time deadline = absl::Now() + timeout;
  // Text lines ("kmcld: ready") or, with --log_format=json, JSON lines.
  while (!absl::StrContains(output_, "kmcld: ready\n") &&
         !absl::StrContains(output_, "\"msg\":\"ready\"")) {
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("kmcld did not get ready: ", output_));
    }
    if (!ReadSome(deadline)) {
      return absl::UnavailableError(absl::StrCat("kmcld exited during start-up: ", output_));
    }
  }
  for (absl::string_view line : absl::StrSplit(output_, '\n')) {
    // A JSON line's message (these carry no escapes) as the text form.
    std::string text;
    if (const size_t at = line.find("\"msg\":\""); absl::StartsWith(line, "{") && at != line.npos) {
      const size_t start = at + 7;
      text = absl::StrCat("kmcld: ", line.substr(start, line.find('"', start) - start));
      line = text;
    }
    if (absl::ConsumePrefix(&line, "kmcld: listening on tcp ")) tcp_address_ = std::string(line);
    if (absl::ConsumePrefix(&line, "kmcld: listening on unix ")) uds_path_ = std::string(line);
    if (absl::ConsumePrefix(&line, "kmcld: listening on metrics ")) metrics_address_ = std::string(line);
    if (absl::ConsumePrefix(&line, "kmcld: file_sd entry ")) sd_entry_ = std::string(line);
  }
  return absl::OkStatus();
}

absl::Status DaemonProcess::WaitForOutput(const std::string& text, int times,
                                          absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  auto count = [&] {
    int n = 0;
    for (size_t at = output_.find(text); at != std::string::npos; at = output_.find(text, at + 1)) ++n;
    return n;
  };
  while (count() < times) {
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("no '", text, "' in: ", output_));
    }
    if (!ReadSome(deadline)) {
      return absl::UnavailableError(absl::StrCat("kmcld exited: ", output_));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int> DaemonProcess::Stop(int signal, absl::Duration timeout) {
  if (pid_ <= 0) return absl::FailedPreconditionError("not running");
  ::kill(pid_, signal);
  absl::Time deadline = absl::Now() + timeout;
  // Drain stderr until EOF (the daemon closed it by exiting) or the deadline.
  while (absl::Now() < deadline && ReadSome(deadline)) {
  }
  int status = 0;
  if (absl::Now() >= deadline) {
    ::kill(pid_, SIGKILL);
  }
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

}  // namespace kmcld::testing
