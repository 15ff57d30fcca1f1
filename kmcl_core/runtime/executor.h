// kmcl_core/runtime/executor.h: where channel work runs. Channels no longer
// own threads: each enabled channel has two SerialTasks (its PASSIVE and its
// DISPATCH "thread") that run on executors shared by every channel in the
// process, as OpenVMM runs one task per offer on a shared executor.
//
//   ChannelExecutors& ex = ChannelExecutors::Default();  // process-wide pools
//   SerialTask io(ex.dispatch, [&] { DrainRing(); });
//   io.Kick();   // DrainRing runs soon, never concurrently with itself
//   io.Stop();   // no run after this returns
//
// Two pools, for KMCL's two levels (docs/kmcl.md, "Threading contract"):
// - dispatch: a fixed pool, one thread per core. Tasks must not block
//   (ProcessPacket, ProcessingComplete, completion routines). A task that
//   one of its workers submits (a channel's I/O task kicking its peer's)
//   goes to that worker's "next" slot and runs on the same thread as soon
//   as the current task returns, without waking another thread: the hand-off
//   between the two ends of a busy pair costs no futex call. Only the newest
//   such task waits in the slot (an older one moves to the shared queue), a
//   worker runs at most kMaxNextInARow slot tasks before taking one from the
//   shared queue, and a SerialTask that reschedules itself goes behind the
//   shared queue (SubmitBehind), so a busy pair cannot starve other channels.
//   Because a slot task waits for the task that submitted it, dispatch tasks
//   must not wait for one another (they never block: KMCL's contract).
// - passive: state callbacks and packets deferred to passive level. They may
//   block (a PostStarted waiting in VmbChannelSendSynchronousRequest), so the
//   pool grows when it starves: when tasks wait, no worker is idle and no
//   task has finished for one check interval, it adds threads (doubling, up
//   to a maximum); threads beyond the core count leave after being idle.
//   The thread count therefore follows the number of callbacks blocked at
//   the same moment, not the number of channels.
//
// ManualExecutor runs nothing on its own: a test drives it (RunUntilIdle,
// or RunUntil to stop in the middle of traffic) so that channel tests run
// deterministically on the test's thread. Blocking channel calls (Pause,
// Disable, SendSynchronous, a PostStarted that waits for a synchronous
// request) drive it themselves while they wait, through RunOneHere: work
// that blocks at passive level runs nested on the same thread.
//
// Threading: Executor::Submit, SerialTask::Kick and the statistics are
// thread-safe. SerialTask::Stop must not be called from the task's body.
#ifndef KMCLD_KMCL_CORE_RUNTIME_EXECUTOR_H_
#define KMCLD_KMCL_CORE_RUNTIME_EXECUTOR_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "kmcl_core/base/mutex.h"

namespace kmcl {

class Executor {
 public:
  virtual ~Executor() = default;
  // Runs `task` once, soon, on one of the executor's threads. Never runs it
  // inline. Thread-safe.
  virtual void Submit(std::function<void()> task) = 0;
  // As Submit, but behind every task already waiting (never in a worker's
  // next slot): for a task that reschedules itself to yield its thread.
  virtual void SubmitBehind(std::function<void()> task) { Submit(std::move(task)); }
  // A manual executor runs one pending task on the calling thread and
  // returns true; thread pools return false (the caller waits instead).
  virtual bool RunOneHere() { return false; }
  // The executor whose task the calling thread is running, or nullptr: the
  // emulation's KeGetCurrentIrql (a task of ChannelExecutors::passive runs
  // at PASSIVE_LEVEL, one of dispatch at DISPATCH_LEVEL).
  static const Executor* Current();

 protected:
  // Runs `task` as this executor's (Current() returns this meanwhile).
  void RunAsCurrent(std::function<void()>& task);
};

struct ThreadPoolOptions {
  // The threads' name (as ps and gdb show it; at most 15 characters).
  std::string name = "kmcl";
  // Threads started at once and kept for the pool's life (0: one per core).
  int threads = 0;
  // Add threads while tasks starve (the passive pool); a fixed pool if false.
  bool grow_when_starved = false;
  // Tasks submitted by a worker of this pool go to that worker's next slot
  // (see the file comment). Only for tasks that never block: a task waiting
  // in the slot of a blocked worker would wait with it. Incompatible with
  // grow_when_starved (slot tasks are invisible to the starvation check).
  bool next_slot = false;
  int max_threads = 4096;
  // How often the pool checks for starvation, and how long an extra thread
  // may stay idle before it leaves.
  absl::Duration starvation_check = absl::Milliseconds(5);
  absl::Duration idle_exit = absl::Seconds(2);
};

class ThreadPool final : public Executor {
 public:
  explicit ThreadPool(ThreadPoolOptions options);
  // Runs every task already submitted, then joins the threads.
  ~ThreadPool() override;
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void Submit(std::function<void()> task) override;
  void SubmitBehind(std::function<void()> task) override;

  // Slot tasks a worker runs one after another before it takes a task from
  // the shared queue.
  static constexpr int kMaxNextInARow = 32;

  struct Stats {
    int threads = 0;         // alive now
    int peak_threads = 0;    // most alive at once
    int added_for_starvation = 0;
    uint64_t tasks_run = 0;  // including slot tasks
    uint64_t ran_from_next_slot = 0;
    size_t queued = 0;       // in the shared queue
  };
  Stats stats() const;

 private:
  struct WorkerSlot;
  // The slot of the pool worker this thread is, if its pool has next slots.
  static thread_local WorkerSlot* current_slot_;
  void Worker(bool core);
  void Enqueue(std::function<void()> task);
  void Monitor();
  void SpawnLocked(bool core) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ThreadPoolOptions options_;
  const int core_threads_;
  mutable Mutex mu_;
  CondVar work_cv_;
  CondVar monitor_cv_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  int alive_ ABSL_GUARDED_BY(mu_) = 0;
  int idle_ ABSL_GUARDED_BY(mu_) = 0;
  int peak_ ABSL_GUARDED_BY(mu_) = 0;
  int added_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t tasks_run_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t ran_from_slot_ ABSL_GUARDED_BY(mu_) = 0;
  // Every thread ever started and not yet joined; an exiting extra thread
  // moves its id to exited_ and the monitor joins it.
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread::id> exited_ ABSL_GUARDED_BY(mu_);
  std::thread monitor_;
};

// Runs tasks only when driven, on the driving thread. For tests.
class ManualExecutor final : public Executor {
 public:
  void Submit(std::function<void()> task) override;
  bool RunOneHere() override;
  // Runs tasks, including those they submit, until none is pending; returns
  // how many ran.
  size_t RunUntilIdle();
  // Runs tasks one at a time until `done` holds or none is pending, and
  // returns done(). `done` is checked before the first task and after each
  // one, on the calling thread, so a test can stop channels at an exact
  // point (say, after the host has received 2,000 packets) and act there.
  bool RunUntil(const std::function<bool()>& done);
  size_t pending() const;

 private:
  mutable Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
};

// The two executors a channel runs on.
struct ChannelExecutors {
  Executor* dispatch = nullptr;
  Executor* passive = nullptr;
  // The process-wide pools (created on first use, never destroyed, so a
  // channel torn down during static destruction still has them).
  static ChannelExecutors& Default();
  // Both levels on one manual executor.
  static ChannelExecutors Manual(ManualExecutor* executor) { return {executor, executor}; }
  // Runs one task of either executor on this thread if they are manual.
  bool RunOneHere() const;
  // Statistics of the default pools (zeros before first use).
  static ThreadPool::Stats DefaultDispatchStats();
  static ThreadPool::Stats DefaultPassiveStats();
};

// A body that runs on an executor, at most one run at a time, again after
// every Kick: a channel's "thread" without a thread. Runs never overlap and
// each Kick is followed by a run that starts after it.
class SerialTask {
 public:
  SerialTask(Executor* executor, std::function<void()> body);
  // Stops it (see Stop).
  ~SerialTask();
  SerialTask(const SerialTask&) = delete;
  SerialTask& operator=(const SerialTask&) = delete;

  // Schedules a run. Thread-safe; a no-op once stopped.
  void Kick();
  // No run starts after this returns, and one in progress has ended. Must
  // not be called from the body (it would wait for itself).
  void Stop();
  // True on the thread running the body now.
  bool InBody() const;

 private:
  struct State;
  static void Run(const std::shared_ptr<State>& state);
  std::shared_ptr<State> state_;
};

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_RUNTIME_EXECUTOR_H_
