// daemon/blocking_pool.h: where kmcld runs calls that may block (KMCL's
// Pause and Disable wait for callbacks and for remote tools to complete
// deliveries; guest GPADL teardown waits for host unmaps), so that they never
// run on gRPC's threads, and how those calls share threads fairly between
// partitions.
//
// Admission policy (docs/api.md, "Blocking calls"):
//  - Every job names its partition (its fairness key; "" for calls that
//    have none yet) and a lane inside it (e.g. one channel; "" for none).
//  - At most one job of a lane runs at once: the others queue behind it
//    in order instead of each taking a thread (a pause that waits for a
//    held delivery holds one thread, however many calls follow it).
//  - A partition runs at most `per_partition_threads` jobs at once, the
//    daemon at most `max_threads`; jobs beyond either wait in their
//    partition's queue and are started round-robin between partitions.
//  - A partition queues at most `per_partition_queue` jobs; Submit refuses
//    more (RESOURCE_EXHAUSTED naming the partition), after first dropping
//    the queued jobs whose callers have gone.
//  - A queued job whose caller has gone (Job::cancelled) is dropped when
//    its turn comes, never run.
//  - An urgent job (an admin's DeletePartition --force) runs at once on a
//    thread of its own, past every limit; DropQueued then ends what waits
//    on that partition.
//
// Each running job has a thread of its own. The destructor drops what is
// queued and waits for running jobs. Callbacks (run, drop) are called
// without the pool's lock held.
//
// Thread-safe.
#ifndef KMCLD_DAEMON_BLOCKING_POOL_H_
#define KMCLD_DAEMON_BLOCKING_POOL_H_

#include <deque>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kmcl_core/base/mutex.h"

namespace kmcld {

class BlockingPool {
 public:
  struct Limits {
    int max_threads = 256;           // jobs running in the daemon at once
    int per_partition_threads = 32;  // jobs running for one partition at once
    int per_partition_queue = 256;   // jobs waiting for one partition
  };
  // The limits kmcld derives from --max_blocking_calls: a partition may run
  // an eighth of them (at least 2) and queue as many as the daemon runs.
  static Limits LimitsFor(int max_threads);

  struct Job {
    std::string partition;  // fairness key; "" = no partition
    std::string lane;       // serialisation key inside the partition; "" = none
    bool urgent = false;    // runs at once past every limit (see above)
    std::function<void()> run;
    // Called instead of `run` when the job is dropped (its caller went,
    // its partition is being deleted, the pool is destroyed). May be null.
    std::function<void(const absl::Status&)> drop;
    // True once nobody waits for the job's result. May be null (= never).
    std::function<bool()> cancelled;
  };

  explicit BlockingPool(Limits limits) : limits_(limits) {}
  explicit BlockingPool(int max_threads) : BlockingPool(LimitsFor(max_threads)) {}
  ~BlockingPool();
  BlockingPool(const BlockingPool&) = delete;
  BlockingPool& operator=(const BlockingPool&) = delete;

  // Runs `job` now or queues it; RESOURCE_EXHAUSTED (and the job neither
  // run nor dropped) when its partition's queue is full.
  absl::Status Submit(Job job);
  // Drops every queued job of `partition` with `why` (running ones go on).
  void DropQueued(const std::string& partition, const absl::Status& why);

  int running() const;
  int queued() const;

 private:
  struct PartitionState {
    int running = 0;
    std::set<std::string> busy_lanes;
    std::deque<Job> queue;
  };
  using Dropped = std::vector<std::pair<Job, absl::Status>>;

  // Starts what the limits allow, round-robin between partitions; moves
  // queued jobs whose callers went to `dropped`.
  void Pump(Dropped& dropped) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Start(const std::string& partition, Job job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Finished(const std::string& partition, const std::string& lane, bool urgent);
  static void Drop(Dropped& dropped);

  const Limits limits_;
  mutable kmcl::Mutex mu_;
  kmcl::CondVar idle_;
  int running_ ABSL_GUARDED_BY(mu_) = 0;          // all running jobs
  int running_limited_ ABSL_GUARDED_BY(mu_) = 0;  // the non-urgent ones
  int queued_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, PartitionState> partitions_ ABSL_GUARDED_BY(mu_);
  std::string next_ ABSL_GUARDED_BY(mu_);  // where the next round-robin pass starts
};

}  // namespace kmcld

#endif  // KMCLD_DAEMON_BLOCKING_POOL_H_
