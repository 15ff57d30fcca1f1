// bench/kmcld_child.h: kmcld as a child process for kmcld_bench (what
// tests/daemon_process does, plus a thread that keeps draining its stderr so
// a chatty daemon never blocks on it), and where to find the kmcld binary.
//
// Use:
//   std::string binary = FindKmcld(absl::GetFlag(FLAGS_kmcld), argv[0]);
//   KmcldChild child;
//   if (absl::Status s = child.Start(binary, absl::Seconds(30)); !s.ok()) ...
//   auto client = kmcl::client::Client::Connect(child.address());
//   int64_t rss = RssKib(child.pid());
//   child.Stop(absl::Seconds(5));   // or let the destructor SIGKILL it
//
// Start runs kmcld with --listen=127.0.0.1:0 --insecure_plaintext_tcp --uds=none and waits for its
// "kmcld: ready" line; address() is the port it printed. The child gets
// SIGKILL if the bench dies first.
//
// Threading contract: one thread owns a KmcldChild and calls Start, Stop,
// pid, address and the destructor; output() may be called from any thread.
// After Start a hidden thread drains the child's stderr into output(); Stop
// and the destructor join it. FindKmcld and RssKib are thread-safe.
#ifndef KMCLD_BENCH_KMCLD_CHILD_H_
#define KMCLD_BENCH_KMCLD_CHILD_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace kmcld::bench {

class KmcldChild {
 public:
  KmcldChild() = default;
  ~KmcldChild();  // SIGKILLs a child still running
  KmcldChild(const KmcldChild&) = delete;
  KmcldChild& operator=(const KmcldChild&) = delete;

  // `extra_args` follow the listening flags (e.g. --metrics_listen=127.0.0.1:0).
  absl::Status Start(const std::string& binary, absl::Duration timeout,
                     const std::vector<std::string>& extra_args = {});

  // SIGTERM, then SIGKILL after `timeout`; returns the exit code (128 + signal).
  int Stop(absl::Duration timeout);

  pid_t pid() const { return pid_; }
  const std::string& address() const { return address_; }
  // Everything the child wrote to stderr (the newest 512 KiB to 1 MiB of it).
  std::string output();

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  std::string address_;
  std::thread drain_;
  absl::Mutex mu_;
  std::string output_ ABSL_GUARDED_BY(mu_);
};

// The kmcld binary to start: `kmcld_flag` when it is not empty, else
// //daemon:kmcld from this binary's runfiles; "" when not found.
std::string FindKmcld(const std::string& kmcld_flag, const char* argv0);

// VmRSS of `pid` in KiB, or -1.
int64_t RssKib(pid_t pid);

}  // namespace kmcld::bench

#endif  // KMCLD_BENCH_KMCLD_CHILD_H_
