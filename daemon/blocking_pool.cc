#include "daemon/blocking_pool.h"

#include <algorithm>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"

namespace kmcld {

BlockingPool::Limits BlockingPool::LimitsFor(int max_threads) {
  Limits limits;
  limits.max_threads = std::max(1, max_threads);
  limits.per_partition_threads = std::max(2, max_threads / 8);
  limits.per_partition_queue = limits.max_threads;
  return limits;
}

BlockingPool::~BlockingPool() {
  Dropped dropped;
  {
    kmcl::MutexLock lock(&mu_);
    for (auto& [id, p] : partitions_) {
      for (Job& job : p.queue) dropped.emplace_back(std::move(job), absl::UnavailableError("kmcld is shutting down"));
      p.queue.clear();
    }
    queued_ = 0;
  }
  Drop(dropped);
  kmcl::MutexLock lock(&mu_);
  while (running_ > 0) idle_.Wait(&mu_);
}

absl::Status BlockingPool::Submit(Job job) {
  Dropped dropped;
  absl::Status status;
  {
    kmcl::MutexLock lock(&mu_);
    if (job.urgent) {
      Start(job.partition, std::move(job));
      return absl::OkStatus();
    }
    const std::string partition = job.partition;
    if (partitions_[partition].queue.size() >= static_cast<size_t>(limits_.per_partition_queue)) {
      Pump(dropped);  // the queued jobs whose callers went leave room
    }
    PartitionState& p = partitions_[partition];  // Pump may have erased it
    if (p.queue.size() >= static_cast<size_t>(limits_.per_partition_queue)) {
      status = absl::ResourceExhaustedError(absl::StrCat(
          "partition '", partition, "' has ", p.queue.size(), " blocking calls waiting behind its ",
          p.running, " running ones in kmcld (at most ", limits_.per_partition_queue,
          "); try again when they finish"));
    } else {
      p.queue.push_back(std::move(job));
      ++queued_;
      Pump(dropped);
    }
  }
  Drop(dropped);
  return status;
}

void BlockingPool::DropQueued(const std::string& partition, const absl::Status& why) {
  Dropped dropped;
  {
    kmcl::MutexLock lock(&mu_);
    auto it = partitions_.find(partition);
    if (it == partitions_.end()) return;
    for (Job& job : it->second.queue) dropped.emplace_back(std::move(job), why);
    queued_ -= static_cast<int>(it->second.queue.size());
    it->second.queue.clear();
    if (it->second.running == 0) partitions_.erase(it);
  }
  Drop(dropped);
}

void BlockingPool::Pump(Dropped& dropped) {
  bool progress = true;
  while (progress) {
    progress = false;
    // One pass: each partition, from where the last pass stopped, may start
    // one job.
    std::vector<std::string> order;
    for (auto it = partitions_.lower_bound(next_); it != partitions_.end(); ++it) order.push_back(it->first);
    for (auto it = partitions_.begin(); it != partitions_.end() && it->first < next_; ++it) {
      order.push_back(it->first);
    }
    for (const std::string& id : order) {
      auto it = partitions_.find(id);
      PartitionState& p = it->second;
      for (auto q = p.queue.begin(); q != p.queue.end();) {
        if (q->cancelled && q->cancelled()) {
          dropped.emplace_back(std::move(*q), absl::CancelledError("the call was cancelled before it ran"));
          q = p.queue.erase(q);
          --queued_;
        } else {
          ++q;
        }
      }
      if (running_limited_ < limits_.max_threads && p.running < limits_.per_partition_threads) {
        auto ready = std::find_if(p.queue.begin(), p.queue.end(), [&p](const Job& job) {
          return job.lane.empty() || !p.busy_lanes.contains(job.lane);
        });
        if (ready != p.queue.end()) {
          Job job = std::move(*ready);
          p.queue.erase(ready);
          --queued_;
          Start(id, std::move(job));
          next_ = id + '\0';  // the next pass starts after this partition
          progress = true;
        }
      }
      if (p.running == 0 && p.queue.empty()) partitions_.erase(it);
    }
  }
}

void BlockingPool::Start(const std::string& partition, Job job) {
  ++running_;
  if (!job.urgent) {
    ++running_limited_;
    PartitionState& p = partitions_[partition];
    ++p.running;
    if (!job.lane.empty()) p.busy_lanes.insert(job.lane);
  }
  std::thread([this, partition, lane = job.lane, urgent = job.urgent, run = std::move(job.run)]() mutable {
    run();
    run = nullptr;  // release what it holds before the pool can be destroyed
    Finished(partition, lane, urgent);
  }).detach();
}

void BlockingPool::Finished(const std::string& partition, const std::string& lane, bool urgent) {
  Dropped dropped;
  {
    kmcl::MutexLock lock(&mu_);
    if (!urgent) {
      --running_limited_;
      auto it = partitions_.find(partition);
      if (it != partitions_.end()) {
        --it->second.running;
        if (!lane.empty()) it->second.busy_lanes.erase(lane);
        if (it->second.running == 0 && it->second.queue.empty()) partitions_.erase(it);
      }
      Pump(dropped);
    }
    // Signalled under the lock: the destructor cannot return before.
    if (--running_ == 0) idle_.SignalAll();
  }
  Drop(dropped);  // touches no member: the pool may be gone
}

void BlockingPool::Drop(Dropped& dropped) {
  for (auto& [job, why] : dropped) {
    if (job.drop) job.drop(why);
  }
  dropped.clear();
}

int BlockingPool::running() const {
  kmcl::MutexLock lock(&mu_);
  return running_;
}

int BlockingPool::queued() const {
  kmcl::MutexLock lock(&mu_);
  return queued_;
}

}  // namespace kmcld
