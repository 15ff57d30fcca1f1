#include "clients/cpp/testing/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace kmcl::client::testing {
namespace {

pid_t Spawn(const std::vector<std::string>& argv, int in_fd, int out_fd, int err_fd) {
  std::vector<std::string> storage = argv;
  std::vector<char*> args;
  for (std::string& a : storage) args.push_back(a.data());
  args.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (in_fd >= 0) ::dup2(in_fd, STDIN_FILENO);
    ::dup2(out_fd, STDOUT_FILENO);
    ::dup2(err_fd, STDERR_FILENO);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

int ExitCode(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

// Reads what is ready on `fd` into `out`; false at EOF.
bool ReadInto(int fd, std::string* out) {
  char buf[8192];
  ssize_t n = ::read(fd, buf, sizeof(buf));
  if (n <= 0) return false;
  out->append(buf, static_cast<size_t>(n));
  return true;
}

}  // namespace

std::string Runfile(const std::string& path) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir == nullptr || workspace == nullptr) return path;
  return absl::StrCat(srcdir, "/", workspace, "/", path);
}

RunResult Run(const std::vector<std::string>& argv, absl::Duration timeout,
              const std::string& input) {
  RunResult result;
  int in[2], out[2], err[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0 ||
      ::pipe2(err, O_CLOEXEC) != 0) {
    result.err = "pipe failed";
    return result;
  }
  const pid_t pid = Spawn(argv, in[0], out[1], err[1]);
  ::close(in[0]);
  ::close(out[1]);
  ::close(err[1]);
  // Small inputs only (the pipe buffer holds them); then EOF.
  if (!input.empty()) (void)!::write(in[1], input.data(), input.size());
  ::close(in[1]);
  const absl::Time deadline = absl::Now() + timeout;
  bool out_open = true, err_open = true;
  while ((out_open || err_open) && absl::Now() < deadline) {
    pollfd fds[2] = {{out_open ? out[0] : -1, POLLIN, 0}, {err_open ? err[0] : -1, POLLIN, 0}};
    const int ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (::poll(fds, 2, ms > 0 ? ms : 0) <= 0) continue;
    if (fds[0].revents != 0) out_open = ReadInto(out[0], &result.out);
    if (fds[1].revents != 0) err_open = ReadInto(err[0], &result.err);
  }
  if (out_open || err_open) ::kill(pid, SIGKILL);
  ::close(out[0]);
  ::close(err[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  result.exit_code = ExitCode(status);
  return result;
}

RunResult RunOnTerminal(const std::vector<std::string>& argv, absl::Duration timeout) {
  RunResult result;
  std::vector<std::string> storage = argv;
  std::vector<char*> args;
  for (std::string& a : storage) args.push_back(a.data());
  args.push_back(nullptr);
  int master = -1;
  const pid_t pid = ::forkpty(&master, nullptr, nullptr, nullptr);
  if (pid < 0) {
    result.err = "forkpty failed";
    return result;
  }
  if (pid == 0) {
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    const int ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (ms <= 0) {
      ::kill(pid, SIGKILL);
      break;
    }
    pollfd pfd{master, POLLIN, 0};
    if (::poll(&pfd, 1, ms) > 0 && !ReadInto(master, &result.out)) break;  // EIO: child gone
  }
  ::close(master);
  int status = 0;
  ::waitpid(pid, &status, 0);
  result.exit_code = ExitCode(status);
  return result;
}

Background::Background(const std::vector<std::string>& argv, bool with_stderr) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return;
  pid_ = Spawn(argv, -1, out[1], with_stderr ? out[1] : STDERR_FILENO);
  ::close(out[1]);
  out_fd_ = out[0];
}

Background::~Background() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  if (out_fd_ >= 0) ::close(out_fd_);
}

void Background::Signal(int signal) {
  if (pid_ > 0) ::kill(pid_, signal);
}

absl::Status Background::WaitForStdout(const std::string& text, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!absl::StrContains(out_, text)) {
    const int ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (ms <= 0) return absl::DeadlineExceededError(absl::StrCat("no '", text, "' in: ", out_));
    pollfd pfd{out_fd_, POLLIN, 0};
    if (::poll(&pfd, 1, ms) > 0 && !ReadInto(out_fd_, &out_)) {
      return absl::UnavailableError(absl::StrCat("exited without '", text, "': ", out_));
    }
  }
  return absl::OkStatus();
}

int Background::Wait(absl::Duration timeout) {
  if (pid_ <= 0) return -1;
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    const int ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (ms <= 0) {
      ::kill(pid_, SIGKILL);
      break;
    }
    pollfd pfd{out_fd_, POLLIN, 0};
    if (::poll(&pfd, 1, ms) > 0 && !ReadInto(out_fd_, &out_)) break;
  }
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  return ExitCode(status);
}

}  // namespace kmcl::client::testing
