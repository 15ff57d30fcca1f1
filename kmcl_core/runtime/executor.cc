// kmcl_core/runtime/executor.cc: the shared pools, the manual executor and
// SerialTask. See executor.h.
#include "kmcl_core/runtime/executor.h"

#include <pthread.h>

#include <algorithm>
#include <mutex>
#include <utility>

namespace kmcl {

// ---- Executor ---------------------------------------------------------------------------

namespace {
thread_local const Executor* current_executor = nullptr;
}  // namespace

const Executor* Executor::Current() { return current_executor; }

void Executor::RunAsCurrent(std::function<void()>& task) {
  const Executor* outer = current_executor;
  current_executor = this;
  task();
  current_executor = outer;
}

// ---- ThreadPool -------------------------------------------------------------------------

namespace {
int CoreThreads(int requested) {
  if (requested > 0) return requested;
  const unsigned n = std::thread::hardware_concurrency();
  return std::max(2, static_cast<int>(n));
}
}  // namespace

ThreadPool::ThreadPool(ThreadPoolOptions options)
    : options_(std::move(options)), core_threads_(CoreThreads(options_.threads)) {
  MutexLock lock(&mu_);
  for (int i = 0; i < core_threads_; ++i) SpawnLocked(/*core=*/true);
  if (options_.grow_when_starved) monitor_ = std::thread([this] { Monitor(); });
}

ThreadPool::~ThreadPool() {
  std::vector<std::thread> threads;
  {
    MutexLock lock(&mu_);
    shutdown_ = true;
  }
  work_cv_.SignalAll();
  monitor_cv_.SignalAll();
  if (monitor_.joinable()) monitor_.join();
  {
    MutexLock lock(&mu_);
    threads = std::move(threads_);
  }
  for (std::thread& t : threads) t.join();
}

void ThreadPool::SpawnLocked(bool core) {
  ++alive_;
  ++idle_;
  peak_ = std::max(peak_, alive_);
  threads_.emplace_back([this, core] { Worker(core); });
}

// A worker's next slot. Only its own thread reads or writes it: Submit
// reaches it through the thread-local pointer, on the worker's thread.
struct ThreadPool::WorkerSlot {
  const ThreadPool* pool;
  std::function<void()> task;  // empty when free
};

thread_local ThreadPool::WorkerSlot* ThreadPool::current_slot_ = nullptr;

void ThreadPool::Submit(std::function<void()> task) {
  WorkerSlot* slot = current_slot_;
  if (slot != nullptr && slot->pool == this) {
    if (!slot->task) {
      slot->task = std::move(task);
      return;
    }
    std::swap(slot->task, task);  // the newest waits in the slot
  }
  Enqueue(std::move(task));
}

void ThreadPool::SubmitBehind(std::function<void()> task) { Enqueue(std::move(task)); }

void ThreadPool::Enqueue(std::function<void()> task) {
  {
    MutexLock lock(&mu_);
    queue_.push_back(std::move(task));
  }
  work_cv_.Signal();
}

void ThreadPool::Worker(bool core) {
  ::pthread_setname_np(::pthread_self(), options_.name.substr(0, 15).c_str());
  WorkerSlot slot{this, nullptr};
  if (options_.next_slot && !options_.grow_when_starved) current_slot_ = &slot;
  int slot_runs_in_a_row = 0;
  mu_.Lock();
  for (;;) {
    std::function<void()> task;
    bool from_slot = false;
    bool wake_another = false;
    if (slot.task && slot_runs_in_a_row < kMaxNextInARow) {
      task = std::move(slot.task);
      slot.task = nullptr;
      from_slot = true;
      ++slot_runs_in_a_row;
    } else {
      slot_runs_in_a_row = 0;
      const bool flushed = static_cast<bool>(slot.task);
      if (flushed) {
        // Enough slot tasks in a row: the shared queue goes first, and the
        // slot's task waits there like any other (an idle worker may take it).
        queue_.push_back(std::move(slot.task));
        slot.task = nullptr;
      }
      while (queue_.empty() && !shutdown_) {
        if (core) {
          work_cv_.Wait(&mu_);
          continue;
        }
        const bool timed_out = work_cv_.WaitWithDeadline(&mu_, absl::Now() + options_.idle_exit);
        if (timed_out && queue_.empty() && !shutdown_) {
          // An extra thread that is no longer needed leaves; the monitor joins it.
          --alive_;
          --idle_;
          exited_.push_back(std::this_thread::get_id());
          mu_.Unlock();
          monitor_cv_.Signal();
          current_slot_ = nullptr;
          return;
        }
      }
      if (queue_.empty()) break;  // shut down and drained
      task = std::move(queue_.front());
      queue_.pop_front();
      wake_another = flushed && !queue_.empty() && idle_ > 1;
    }
    --idle_;
    mu_.Unlock();
    if (wake_another) work_cv_.Signal();
    RunAsCurrent(task);
    task = nullptr;  // destroy captures outside the lock
    mu_.Lock();
    ++idle_;
    ++tasks_run_;
    if (from_slot) ++ran_from_slot_;
  }
  --alive_;
  --idle_;
  mu_.Unlock();
  current_slot_ = nullptr;
}

void ThreadPool::Monitor() {
  uint64_t last_run = 0;
  for (;;) {
    std::vector<std::thread> finished;
    {
      MutexLock lock(&mu_);
      if (shutdown_) return;
      monitor_cv_.WaitWithDeadline(&mu_, absl::Now() + options_.starvation_check);
      if (shutdown_) return;
      for (std::thread::id id : exited_) {
        auto it = std::find_if(threads_.begin(), threads_.end(),
                               [id](const std::thread& t) { return t.get_id() == id; });
        if (it != threads_.end()) {
          finished.push_back(std::move(*it));
          threads_.erase(it);
        }
      }
      exited_.clear();
      // Starving: work waits, nobody is free to take it, and nothing has
      // finished since the last check (every worker is blocked).
      if (!queue_.empty() && idle_ == 0 && tasks_run_ == last_run &&
          alive_ < options_.max_threads) {
        const int add = std::min({std::max(alive_, 1), options_.max_threads - alive_,
                                  static_cast<int>(queue_.size())});
        for (int i = 0; i < add; ++i) SpawnLocked(/*core=*/false);
        added_ += add;
        work_cv_.SignalAll();
      }
      last_run = tasks_run_;
    }
    for (std::thread& t : finished) t.join();
  }
}

ThreadPool::Stats ThreadPool::stats() const {
  MutexLock lock(&mu_);
  return {alive_, peak_, added_, tasks_run_, ran_from_slot_, queue_.size()};
}

// ---- ManualExecutor ---------------------------------------------------------------------

void ManualExecutor::Submit(std::function<void()> task) {
  MutexLock lock(&mu_);
  queue_.push_back(std::move(task));
}

bool ManualExecutor::RunOneHere() {
  std::function<void()> task;
  {
    MutexLock lock(&mu_);
    if (queue_.empty()) return false;
    task = std::move(queue_.front());
    queue_.pop_front();
  }
  RunAsCurrent(task);
  return true;
}

size_t ManualExecutor::RunUntilIdle() {
  size_t ran = 0;
  while (RunOneHere()) ++ran;
  return ran;
}

bool ManualExecutor::RunUntil(const std::function<bool()>& done) {
  while (!done()) {
    if (!RunOneHere()) return done();
  }
  return true;
}

size_t ManualExecutor::pending() const {
  MutexLock lock(&mu_);
  return queue_.size();
}

// ---- ChannelExecutors -------------------------------------------------------------------

namespace {
ThreadPool* DispatchPool(bool create) {
  static ThreadPool* pool = nullptr;
  static std::once_flag once;
  if (create) {
    std::call_once(once, [] { pool = new ThreadPool({.name = "kmcl-dispatch", .next_slot = true}); });
  }
  return pool;
}
ThreadPool* PassivePool(bool create) {
  static ThreadPool* pool = nullptr;
  static std::once_flag once;
  if (create) {
    std::call_once(once, [] {
      pool = new ThreadPool({.name = "kmcl-passive", .grow_when_starved = true});
    });
  }
  return pool;
}
}  // namespace

ChannelExecutors& ChannelExecutors::Default() {
  static ChannelExecutors* executors =
      new ChannelExecutors{DispatchPool(true), PassivePool(true)};
  return *executors;
}

bool ChannelExecutors::RunOneHere() const {
  if (dispatch != nullptr && dispatch->RunOneHere()) return true;
  return passive != nullptr && passive != dispatch && passive->RunOneHere();
}

ThreadPool::Stats ChannelExecutors::DefaultDispatchStats() {
  ThreadPool* p = DispatchPool(false);
  return p == nullptr ? ThreadPool::Stats{} : p->stats();
}

ThreadPool::Stats ChannelExecutors::DefaultPassiveStats() {
  ThreadPool* p = PassivePool(false);
  return p == nullptr ? ThreadPool::Stats{} : p->stats();
}

// ---- SerialTask -------------------------------------------------------------------------

struct SerialTask::State {
  explicit State(Executor* e, std::function<void()> b) : executor(e), body(std::move(b)) {}
  Executor* const executor;
  const std::function<void()> body;
  Mutex mu;
  CondVar idle_cv;
  bool scheduled ABSL_GUARDED_BY(mu) = false;
  bool running ABSL_GUARDED_BY(mu) = false;
  bool again ABSL_GUARDED_BY(mu) = false;
  bool stopped ABSL_GUARDED_BY(mu) = false;
};

namespace {
// The SerialTask state whose body this thread is running (innermost, when
// a manual executor runs tasks nested).
thread_local const void* current_task = nullptr;
}  // namespace

SerialTask::SerialTask(Executor* executor, std::function<void()> body)
    : state_(std::make_shared<State>(executor, std::move(body))) {}

SerialTask::~SerialTask() { Stop(); }

void SerialTask::Kick() {
  {
    MutexLock lock(&state_->mu);
    if (state_->stopped) return;
    if (state_->running) {
      state_->again = true;  // Run resubmits when the current run ends
      return;
    }
    if (state_->scheduled) return;
    state_->scheduled = true;
  }
  std::shared_ptr<State> state = state_;
  state->executor->Submit([state] { Run(state); });
}

void SerialTask::Run(const std::shared_ptr<State>& state) {
  {
    MutexLock lock(&state->mu);
    state->scheduled = false;
    if (state->stopped) {
      state->idle_cv.SignalAll();
      return;
    }
    state->running = true;
    state->again = false;
  }
  const void* outer = current_task;
  current_task = state.get();
  state->body();
  current_task = outer;
  bool resubmit = false;
  {
    MutexLock lock(&state->mu);
    state->running = false;
    if (state->again && !state->stopped && !state->scheduled) {
      // Kicked while running: run again, behind the other tasks waiting
      // for this executor, so one busy channel cannot hold a worker.
      state->scheduled = true;
      resubmit = true;
    }
    state->again = false;
    state->idle_cv.SignalAll();
  }
  if (resubmit) state->executor->SubmitBehind([state] { Run(state); });
}

void SerialTask::Stop() {
  MutexLock lock(&state_->mu);
  state_->stopped = true;
  if (current_task == state_.get()) return;  // from the body: cannot wait for itself
  while (state_->running) state_->idle_cv.Wait(&state_->mu);
}

bool SerialTask::InBody() const { return current_task == state_.get(); }

}  // namespace kmcl
