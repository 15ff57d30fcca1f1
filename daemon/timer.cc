#include "daemon/timer.h"

namespace kmcld {

Timer::Timer() : thread_([this] { Loop(); }) {}

Timer::~Timer() { Stop(); }

void Timer::Stop() {
  {
    kmcl::MutexLock lock(&mu_);
    stopping_ = true;
    pending_.clear();
    deadlines_.clear();
    cv_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
}

uint64_t Timer::Schedule(absl::Time deadline, std::function<void()> fn) {
  kmcl::MutexLock lock(&mu_);
  const uint64_t id = next_id_++;
  pending_.emplace(std::make_pair(deadline, id), std::move(fn));
  deadlines_.emplace(id, deadline);
  cv_.SignalAll();
  return id;
}

void Timer::Cancel(uint64_t id) {
  kmcl::MutexLock lock(&mu_);
  auto it = deadlines_.find(id);
  if (it == deadlines_.end()) return;
  pending_.erase({it->second, id});
  deadlines_.erase(it);
}

void Timer::Loop() {
  kmcl::MutexLock lock(&mu_);
  while (!stopping_) {
    if (pending_.empty()) {
      cv_.Wait(&mu_);
      continue;
    }
    auto first = pending_.begin();
    if (absl::Now() < first->first.first) {
      cv_.WaitWithDeadline(&mu_, first->first.first);
      continue;
    }
    std::function<void()> fn = std::move(first->second);
    deadlines_.erase(first->first.second);
    pending_.erase(first);
    mu_.Unlock();
    fn();
    mu_.Lock();
  }
}

}  // namespace kmcld
