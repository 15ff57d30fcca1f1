// daemon/blocking_pool.h: where kmcld runs calls that may block (KMCL's
// Pause and Disable wait for callbacks and for remote tools to complete
// deliveries; guest GPADL teardown waits for host unmaps), so that they never
// run on gRPC's threads.
//
// Each task gets a thread of its own, up to `max_threads` at once; Run
// refuses beyond that (the caller answers RESOURCE_EXHAUSTED), so a tool that
// stalls many calls cannot take the daemon's memory. The destructor waits
// for running tasks.
//
// Thread-safe.
#ifndef KMCLD_DAEMON_BLOCKING_POOL_H_
#define KMCLD_DAEMON_BLOCKING_POOL_H_

#include <functional>

#include "kmcl_core/base/mutex.h"

namespace kmcld {

class BlockingPool {
 public:
  explicit BlockingPool(int max_threads) : max_threads_(max_threads) {}
  ~BlockingPool();
  BlockingPool(const BlockingPool&) = delete;
  BlockingPool& operator=(const BlockingPool&) = delete;

  // Runs `task` on a new thread; false (and `task` not run) when
  // max_threads tasks are running already.
  bool Run(std::function<void()> task);
  int running() const;

 private:
  const int max_threads_;
  mutable kmcl::Mutex mu_;
  kmcl::CondVar idle_;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kmcld

#endif  // KMCLD_DAEMON_BLOCKING_POOL_H_
