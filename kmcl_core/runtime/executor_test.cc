#include "kmcl_core/runtime/executor.h"

#include <atomic>
#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace kmcl {
namespace {

TEST(ManualExecutorTest, RunsNothingUntilDrivenThenEverythingItSubmits) {
  ManualExecutor ex;
  std::vector<int> order;
  ex.Submit([&] {
    order.push_back(1);
    ex.Submit([&] { order.push_back(3); });
  });
  ex.Submit([&] { order.push_back(2); });
  EXPECT_TRUE(order.empty());
  EXPECT_EQ(ex.pending(), 2u);
  EXPECT_EQ(ex.RunUntilIdle(), 3u);
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
  EXPECT_FALSE(ex.RunOneHere());
}

TEST(ManualExecutorTest, RunUntilStopsRightAfterTheTaskThatMadeItTrue) {
  ManualExecutor ex;
  int runs = 0;
  for (int i = 0; i < 5; ++i) ex.Submit([&] { ++runs; });
  EXPECT_TRUE(ex.RunUntil([&] { return runs == 2; }));
  EXPECT_EQ(runs, 2);
  EXPECT_EQ(ex.pending(), 3u) << "the rest wait for the next drive";
  EXPECT_TRUE(ex.RunUntil([&] { return runs >= 1; })) << "already true: runs nothing";
  EXPECT_EQ(runs, 2);
  EXPECT_FALSE(ex.RunUntil([&] { return runs == 10; })) << "idle before it held";
  EXPECT_EQ(runs, 5);
  EXPECT_EQ(ex.pending(), 0u);
}

TEST(SerialTaskTest, KicksWhileIdleOrScheduledCoalesceIntoOneRun) {
  ManualExecutor ex;
  int runs = 0;
  SerialTask task(&ex, [&] { ++runs; });
  task.Kick();
  task.Kick();
  task.Kick();
  EXPECT_EQ(ex.RunUntilIdle(), 1u);
  EXPECT_EQ(runs, 1);
}

TEST(SerialTaskTest, AKickDuringARunRunsItAgainBehindOtherWork) {
  ManualExecutor ex;
  std::vector<char> order;
  SerialTask* a_ptr = nullptr;
  int a_runs = 0;
  SerialTask a(&ex, [&] {
    order.push_back('a');
    if (++a_runs < 3) a_ptr->Kick();  // a busy channel kicks itself
  });
  a_ptr = &a;
  SerialTask b(&ex, [&] { order.push_back('b'); });
  a.Kick();
  b.Kick();
  ex.RunUntilIdle();
  // b is not starved by a's re-runs: a's second run queues behind b.
  EXPECT_EQ(order, (std::vector<char>{'a', 'b', 'a', 'a'}));
}

TEST(SerialTaskTest, NoRunStartsAfterStop) {
  ManualExecutor ex;
  int runs = 0;
  SerialTask task(&ex, [&] { ++runs; });
  task.Kick();  // scheduled, not yet run
  task.Stop();
  task.Kick();
  ex.RunUntilIdle();
  EXPECT_EQ(runs, 0);
}

TEST(SerialTaskTest, InBodyOnlyOnTheRunningThread) {
  ManualExecutor ex;
  bool inside = false;
  SerialTask* self = nullptr;
  SerialTask task(&ex, [&] { inside = self->InBody(); });
  self = &task;
  EXPECT_FALSE(task.InBody());
  task.Kick();
  ex.RunUntilIdle();
  EXPECT_TRUE(inside);
  EXPECT_FALSE(task.InBody());
}

TEST(SerialTaskTest, RunsNeverOverlapOnAPool) {
  ThreadPool pool({.threads = 4});
  std::atomic<int> inside{0};
  std::atomic<bool> overlapped{false};
  std::atomic<int> runs{0};
  absl::Notification saw_last;
  std::atomic<bool> last_kicked{false};
  SerialTask task(&pool, [&] {
    if (inside.fetch_add(1) != 0) overlapped = true;
    runs++;
    if (last_kicked.load()) {
      if (!saw_last.HasBeenNotified()) saw_last.Notify();
    }
    inside.fetch_sub(1);
  });
  std::vector<std::thread> kickers;
  for (int t = 0; t < 4; ++t) {
    kickers.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) task.Kick();
    });
  }
  for (auto& t : kickers) t.join();
  last_kicked = true;
  task.Kick();  // a run starts after this kick, and sees last_kicked
  ASSERT_TRUE(saw_last.WaitForNotificationWithTimeout(absl::Seconds(30)));
  task.Stop();
  EXPECT_FALSE(overlapped.load());
  EXPECT_GE(runs.load(), 1);
}

TEST(ThreadPoolTest, AStarvedPoolGrowsSoBlockedTasksFinish) {
  // Two workers both block until a third task runs: a fixed pool of two
  // would never run it. The growing pool adds a thread and all three end.
  ThreadPool pool({.threads = 2, .grow_when_starved = true});
  absl::Notification release;
  absl::Notification a_done, b_done;
  pool.Submit([&] {
    release.WaitForNotification();
    a_done.Notify();
  });
  pool.Submit([&] {
    release.WaitForNotification();
    b_done.Notify();
  });
  pool.Submit([&] { release.Notify(); });
  ASSERT_TRUE(a_done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  ASSERT_TRUE(b_done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_GT(pool.stats().added_for_starvation, 0);
  EXPECT_GT(pool.stats().peak_threads, 2);
}

TEST(ThreadPoolTest, AFixedPoolKeepsItsSize) {
  ThreadPool pool({.threads = 3});
  absl::Notification done;
  std::atomic<int> n{0};
  for (int i = 0; i < 100; ++i) {
    pool.Submit([&] {
      if (++n == 100) done.Notify();
    });
  }
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(pool.stats().threads, 3);
  EXPECT_EQ(pool.stats().peak_threads, 3);
}

TEST(ThreadPoolTest, DestructionRunsWhatWasSubmitted) {
  std::atomic<int> n{0};
  {
    ThreadPool pool({.threads = 1});
    for (int i = 0; i < 50; ++i) pool.Submit([&] { n++; });
  }
  EXPECT_EQ(n.load(), 50);
}

// The dispatch pool's next slot: a task a worker submits runs on that
// worker as soon as the submitting task returns, with no other thread
// woken, and only the newest waits there.
TEST(ThreadPoolTest, ATaskAWorkerSubmitsRunsNextOnThatWorker) {
  ThreadPool pool({.threads = 2, .next_slot = true});
  absl::Notification done;
  std::thread::id submitter, c_ran_on;
  std::atomic<int> left{2};
  pool.Submit([&] {
    submitter = std::this_thread::get_id();
    pool.Submit([&] {  // older: moves to the shared queue when c arrives
      if (--left == 0) done.Notify();
    });
    pool.Submit([&] {  // newest: waits in the slot
      c_ran_on = std::this_thread::get_id();
      if (--left == 0) done.Notify();
    });
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  // Through the atomic, so that TSan sees the writes ordered before the
  // reads (it cannot see Debian's uninstrumented absl::Notification).
  ASSERT_EQ(left.load(), 0);
  EXPECT_EQ(c_ran_on, submitter);
}

// On one worker the order shows it: the slot's task runs before the one
// that went to the shared queue earlier.
TEST(ThreadPoolTest, TheSlotsTaskRunsBeforeTheSharedQueue) {
  std::vector<char> order;  // written by the pool's one thread only
  uint64_t from_slot = 0;
  {
    ThreadPool pool({.threads = 1, .next_slot = true});
    absl::Notification gate;
    pool.Submit([&] { gate.WaitForNotification(); });  // until a and z are queued
    pool.Submit([&] {
      order.push_back('a');
      pool.Submit([&] { order.push_back('b'); });  // to the queue when c comes
      pool.Submit([&] { order.push_back('c'); });  // the slot
    });
    absl::Notification last;
    // Queued before b; by the time it runs, c's run is counted.
    pool.Submit([&] {
      order.push_back('z');
      last.Notify();
    });
    gate.Notify();
    ASSERT_TRUE(last.WaitForNotificationWithTimeout(absl::Seconds(30)));
    from_slot = pool.stats().ran_from_next_slot;
  }
  EXPECT_EQ(order, (std::vector<char>{'a', 'c', 'z', 'b'}));
  EXPECT_EQ(from_slot, 1u);
}

// A pair of channels handing work to each other through the slot forever
// must not starve a task waiting in the shared queue: after kMaxNextInARow
// slot tasks the worker takes the queue's first.
TEST(ThreadPoolTest, ASlotChainYieldsToTheSharedQueue) {
  ThreadPool pool({.threads = 1, .next_slot = true});
  absl::Notification chain_started, queued, x_ran;
  std::atomic<int> steps{0};
  std::atomic<int> steps_when_x_ran{-1};
  std::function<void()> step = [&] {
    if (x_ran.HasBeenNotified() || ++steps > 10 * ThreadPool::kMaxNextInARow) return;
    pool.Submit(step);
  };
  pool.Submit([&] {
    pool.Submit(step);  // into this worker's slot
    chain_started.Notify();
    queued.WaitForNotification();  // x is in the shared queue now
  });
  chain_started.WaitForNotification();
  pool.Submit([&] {
    steps_when_x_ran = steps.load();
    x_ran.Notify();
  });
  queued.Notify();
  ASSERT_TRUE(x_ran.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(steps_when_x_ran.load(), ThreadPool::kMaxNextInARow);
}

// SubmitBehind (a SerialTask yielding after a busy run) never uses the slot.
TEST(ThreadPoolTest, SubmitBehindQueuesBehindWaitingTasks) {
  std::vector<char> order;  // written by the pool's one thread only
  uint64_t from_slot = 1;
  {
    ThreadPool pool({.threads = 1, .next_slot = true});
    absl::Notification started, queued, done;
    pool.Submit([&] {
      started.Notify();
      queued.WaitForNotification();
      pool.SubmitBehind([&] {
        order.push_back('y');
        done.Notify();
      });
    });
    started.WaitForNotification();
    pool.Submit([&] { order.push_back('x'); });
    queued.Notify();
    ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(30)));
    from_slot = pool.stats().ran_from_next_slot;
  }  // joined: the pool's writes are visible (to TSan too)
  EXPECT_EQ(order, (std::vector<char>{'x', 'y'}));
  EXPECT_EQ(from_slot, 0u);
}

}  // namespace
}  // namespace kmcl
