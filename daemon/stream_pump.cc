#include "daemon/stream_pump.h"

#include <utility>

namespace kmcld {

StreamPump::StreamPump(int threads) {
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
}

StreamPump::~StreamPump() {
  {
    kmcl::MutexLock lock(&mu_);
    stopping_ = true;
    cv_.SignalAll();
  }
  for (auto& t : threads_) t.join();
}

void StreamPump::Post(std::function<void()> task) {
  kmcl::MutexLock lock(&mu_);
  tasks_.push_back(std::move(task));
  cv_.Signal();
}

void StreamPump::Loop() {
  for (;;) {
    std::function<void()> task;
    {
      kmcl::MutexLock lock(&mu_);
      while (tasks_.empty() && !stopping_) cv_.Wait(&mu_);
      if (tasks_.empty()) return;
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
  }
}

StreamPump& StreamPump::Default() {
  static StreamPump* pump = new StreamPump(2);  // never destroyed: outlives every stream
  return *pump;
}

}  // namespace kmcld
