// tests/daemon_process.h: runs the real kmcld binary as a child process for
// end-to-end tests.
//
// Start() launches it with the given flags (typically --listen=127.0.0.1:0
// and a socket in the test's temp folder), reads its stderr until it prints
// "kmcld: ready" and records the addresses it reported. Stop() sends a signal
// and reaps it. No sleeps: start-up is awaited by reading the child's output,
// bounded by a deadline.
//
// Thread-compatible: one test thread drives one DaemonProcess.
#ifndef KMCLD_TESTS_DAEMON_PROCESS_H_
#define KMCLD_TESTS_DAEMON_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kmcld::testing {

class DaemonProcess {
 public:
  DaemonProcess() = default;
  ~DaemonProcess();  // Stop(SIGTERM) for a child still running; SIGKILL after 20 s
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;

  // Path of the kmcld binary in the test's runfiles.
  static std::string BinaryPath();

  absl::Status Start(const std::vector<std::string>& args,
                     absl::Duration timeout = absl::Seconds(30));

  // Reads the daemon's stderr until it contains `text` at least `times`
  // times. DEADLINE_EXCEEDED after `timeout`, UNAVAILABLE if it exited.
  absl::Status WaitForOutput(const std::string& text, int times = 1,
                             absl::Duration timeout = absl::Seconds(30));

  // Sends `signal`, waits for exit, returns the exit code (or 128 + signal
  // number if it was killed by a signal).
  absl::StatusOr<int> Stop(int signal, absl::Duration timeout = absl::Seconds(30));

  pid_t pid() const { return pid_; }  // for signals other than Stop's
  const std::string& tcp_address() const { return tcp_address_; }  // "127.0.0.1:port"
  const std::string& uds_path() const { return uds_path_; }
  // With --metrics_listen: "127.0.0.1:port" of /metrics.
  const std::string& metrics_address() const { return metrics_address_; }
  // The file_sd JSON document kmcld logged at start-up.
  const std::string& sd_entry() const { return sd_entry_; }
  // Everything the daemon wrote to stderr so far.
  const std::string& output() const { return output_; }

 private:
  // Reads available stderr into output_ until `deadline`; false at EOF.
  bool ReadSome(absl::Time deadline);

  pid_t pid_ = -1;
  int stderr_fd_ = -1;
  std::string output_;
  std::string tcp_address_;
  std::string uds_path_;
  std::string metrics_address_;
  std::string sd_entry_;
};

}  // namespace kmcld::testing

#endif  // KMCLD_TESTS_DAEMON_PROCESS_H_
