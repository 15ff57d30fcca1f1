// clients/cpp/testing/subprocess.h: runs a program for a test, with its
// stdout and stderr captured apart and its exit code, and no shell in
// between (arguments are passed as they are).
//
//   RunResult r = Run({Runfile("clients/cpp/kmclctl/kmclctl"), "--json", "health"});
//   Background host({Runfile("examples/kmcl_echo_host"), "--count=10"});
//   host.WaitForStdout("echoing");   // reads until the text appears
//   int code = host.Wait();
//
// Thread-compatible. No sleeps: waits are reads bounded by a deadline.
#ifndef KMCLD_CLIENTS_CPP_TESTING_SUBPROCESS_H_
#define KMCLD_CLIENTS_CPP_TESTING_SUBPROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace kmcl::client::testing {

// A file of the test's runfiles, e.g. "examples/kmcl_guest_tool".
std::string Runfile(const std::string& path);

struct RunResult {
  int exit_code = -1;  // 128 + signal when killed
  std::string out;
  std::string err;
};

// Runs `argv` to completion (killed after `timeout`), feeding it `input`.
RunResult Run(const std::vector<std::string>& argv, absl::Duration timeout = absl::Seconds(60),
              const std::string& input = "");

// Runs `argv` with a pseudo-terminal as its stdin, stdout and stderr (so
// isatty() is true); `out` gets everything it wrote, `err` stays empty.
RunResult RunOnTerminal(const std::vector<std::string>& argv,
                        absl::Duration timeout = absl::Seconds(60));

class Background {
 public:
  // `with_stderr`: the child's stderr goes to the same pipe as its stdout
  // (out() and WaitForStdout see both, in the order written).
  explicit Background(const std::vector<std::string>& argv, bool with_stderr = false);
  ~Background();  // SIGKILLs a child that still runs
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;

  // Reads stdout until it contains `text`; DEADLINE_EXCEEDED or
  // UNAVAILABLE (the child closed stdout) otherwise.
  absl::Status WaitForStdout(const std::string& text, absl::Duration timeout = absl::Seconds(30));
  // Waits for the exit (reading the rest of stdout); the exit code.
  int Wait(absl::Duration timeout = absl::Seconds(60));
  void Signal(int signal);
  const std::string& out() const { return out_; }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string out_;
};

}  // namespace kmcl::client::testing

#endif  // KMCLD_CLIENTS_CPP_TESTING_SUBPROCESS_H_
