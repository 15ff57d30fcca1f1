#include "daemon/blocking_pool.h"

#include <thread>
#include <utility>

namespace kmcld {

BlockingPool::~BlockingPool() {
  kmcl::MutexLock lock(&mu_);
  while (running_ > 0) idle_.Wait(&mu_);
}

bool BlockingPool::Run(std::function<void()> task) {
  {
    kmcl::MutexLock lock(&mu_);
    if (running_ >= max_threads_) return false;
    ++running_;
  }
  std::thread([this, task = std::move(task)]() mutable {
    task();
    task = nullptr;  // release what it holds before the pool can be destroyed
    kmcl::MutexLock lock(&mu_);
    if (--running_ == 0) idle_.SignalAll();
  }).detach();
  return true;
}

int BlockingPool::running() const {
  kmcl::MutexLock lock(&mu_);
  return running_;
}

}  // namespace kmcld
