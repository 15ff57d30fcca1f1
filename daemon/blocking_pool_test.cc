// Unit tests of BlockingPool's admission: lanes run one job at a time,
// partitions share threads fairly, an urgent job runs past every limit, and
// queued jobs whose callers went are dropped instead of run.
#include "daemon/blocking_pool.h"

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "kmcl_core/base/mutex.h"

namespace kmcld {
namespace {

BlockingPool::Job JobOf(std::string partition, std::string lane, std::function<void()> run,
                        std::function<void(const absl::Status&)> drop = nullptr) {
  BlockingPool::Job job;
  job.partition = std::move(partition);
  job.lane = std::move(lane);
  job.run = std::move(run);
  job.drop = std::move(drop);
  return job;
}

// Submits a job on lane "ch" of vm1 that runs until `release`; returns
// once it runs.
void Block(BlockingPool& pool, absl::Notification& release) {
  auto blocked = std::make_shared<absl::Notification>();
  ASSERT_TRUE(pool.Submit(JobOf("vm1", "ch", [blocked, &release] {
                    blocked->Notify();
                    release.WaitForNotification();
                  })).ok());
  blocked->WaitForNotification();
}

BlockingPool::Limits Small() {
  BlockingPool::Limits limits;
  limits.max_threads = 4;
  limits.per_partition_threads = 2;
  limits.per_partition_queue = 8;
  return limits;
}

// The repro's shape: one call blocks on a channel, many more come for the
// same channel: they wait behind it without a thread each, in order.
TEST(BlockingPoolTest, JobsOfOneLaneQueueBehindTheRunningOne) {
  BlockingPool pool(Small());
  absl::Notification release;
  Block(pool, release);
  // The jobs append under a kmcl::Mutex so that TSan sees the edge to the
  // read below (Debian's absl::BlockingCounter is invisible to it); the
  // lane, not the lock, is what keeps them in order.
  kmcl::Mutex mu;
  std::vector<int> order;
  absl::BlockingCounter done(8);
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(pool.Submit(JobOf("vm1", "ch", [&, i] {
                      {
                        kmcl::MutexLock lock(&mu);
                        order.push_back(i);
                      }
                      done.DecrementCount();
                    })).ok());
  }
  EXPECT_EQ(pool.running(), 1);
  EXPECT_EQ(pool.queued(), 8);
  release.Notify();
  done.Wait();
  kmcl::MutexLock lock(&mu);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
}

// A partition that stalls all the threads it may have leaves the others
// theirs; its own queue overflows with an error naming it, not theirs.
TEST(BlockingPoolTest, AStalledPartitionCannotTakeTheOthersThreads) {
  BlockingPool pool(Small());
  absl::Notification release;
  absl::BlockingCounter blocked(2);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(pool.Submit(JobOf("vm1", "ch" + std::to_string(i), [&] {
                      blocked.DecrementCount();
                      release.WaitForNotification();
                    })).ok());
  }
  blocked.Wait();
  std::atomic<int> dropped = 0;
  for (int i = 0; i < 8; ++i) {  // fills vm1's queue: no thread is free for it
    ASSERT_TRUE(pool.Submit(JobOf("vm1", "", [&] { release.WaitForNotification(); },
                                  [&](const absl::Status&) { ++dropped; })).ok());
  }
  absl::Status refused = pool.Submit(JobOf("vm1", "", [] {}));
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(refused.message().find("partition 'vm1'"), std::string::npos) << refused;
  EXPECT_EQ(pool.running(), 2);

  absl::Notification other_ran;
  ASSERT_TRUE(pool.Submit(JobOf("vm2", "", [&] { other_ran.Notify(); })).ok());
  other_ran.WaitForNotification();  // hangs if vm1 held every thread
  ASSERT_TRUE(pool.Submit(JobOf("", "", [] {})).ok());

  pool.DropQueued("vm1", absl::AbortedError("deleted"));
  EXPECT_EQ(dropped.load(), 8);
  release.Notify();
}

// An urgent job (DeletePartition --force) runs even when the daemon's and
// the partition's threads are all taken and its queue is full.
TEST(BlockingPoolTest, AnUrgentJobRunsPastEveryLimit) {
  BlockingPool::Limits limits = Small();
  limits.per_partition_threads = 4;
  BlockingPool pool(limits);
  absl::Notification release;
  absl::BlockingCounter blocked(4);
  for (int i = 0; i < 4 + 8; ++i) {
    ASSERT_TRUE(pool.Submit(JobOf("vm1", "", [&, i] {
                      if (i < 4) blocked.DecrementCount();
                      release.WaitForNotification();
                    })).ok());
  }
  blocked.Wait();
  EXPECT_EQ(pool.Submit(JobOf("vm1", "", [] {})).code(), absl::StatusCode::kResourceExhausted);
  absl::Notification urgent_ran;
  BlockingPool::Job urgent = JobOf("vm1", "", [&] { urgent_ran.Notify(); });
  urgent.urgent = true;
  ASSERT_TRUE(pool.Submit(std::move(urgent)).ok());
  urgent_ran.WaitForNotification();
  release.Notify();
}

// Queued jobs whose callers went are dropped (CANCELLED), never run, and
// make room in a full queue.
TEST(BlockingPoolTest, CancelledQueuedJobsAreDroppedNotRun) {
  BlockingPool pool(Small());
  absl::Notification release;
  Block(pool, release);
  std::atomic<bool> gone = false;
  std::atomic<int> ran = 0;
  std::atomic<int> cancelled = 0;
  for (int i = 0; i < 8; ++i) {
    BlockingPool::Job job = JobOf("vm1", "ch", [&] { ++ran; }, [&](const absl::Status& why) {
      if (why.code() == absl::StatusCode::kCancelled) ++cancelled;
    });
    job.cancelled = [&] { return gone.load(); };
    ASSERT_TRUE(pool.Submit(std::move(job)).ok());
  }
  gone = true;  // every caller went: the next submission finds room
  absl::Notification last_ran;
  ASSERT_TRUE(pool.Submit(JobOf("vm1", "ch", [&] { last_ran.Notify(); })).ok());
  EXPECT_EQ(cancelled.load(), 8);
  release.Notify();
  last_ran.WaitForNotification();
  EXPECT_EQ(ran.load(), 0);
}

// The destructor drops what waits (UNAVAILABLE) and waits for what runs.
TEST(BlockingPoolTest, DestructionDropsQueuedJobsAndWaitsForRunningOnes) {
  std::atomic<int> finished = 0;
  absl::Status why;
  {
    auto pool = std::make_unique<BlockingPool>(Small());
    absl::Notification blocked;
    absl::Notification release;
    ASSERT_TRUE(pool->Submit(JobOf("vm1", "ch", [&] {
                       blocked.Notify();
                       release.WaitForNotification();
                       ++finished;
                     })).ok());
    blocked.WaitForNotification();
    ASSERT_TRUE(pool->Submit(JobOf("vm1", "ch", [] {}, [&](const absl::Status& s) { why = s; })).ok());
    release.Notify();
    pool.reset();
  }
  EXPECT_EQ(finished.load(), 1);
  // The queued job either ran after the first (the release raced the
  // destructor) or was dropped as the daemon shut down.
  EXPECT_TRUE(why.ok() || why.code() == absl::StatusCode::kUnavailable) << why;
}

}  // namespace
}  // namespace kmcld
