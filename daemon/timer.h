// daemon/timer.h: one thread that runs short functions at deadlines (the
// Attach linger). Schedule returns an id; Cancel(id) guarantees the function
// will not start afterwards (it may be running: Cancel does not wait, so the
// function must hold what it uses, e.g. a weak_ptr).
//
// Thread-safe. Functions run on the timer thread, one at a time, and must
// not block for long.
#ifndef KMCLD_DAEMON_TIMER_H_
#define KMCLD_DAEMON_TIMER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <thread>
#include <utility>

#include "absl/time/time.h"
#include "kmcl_core/base/mutex.h"

namespace kmcld {

class Timer {
 public:
  Timer();
  ~Timer();  // drops pending functions and joins the thread
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  // Joins the thread; later Schedules never run. Idempotent.
  void Stop();
  uint64_t Schedule(absl::Time deadline, std::function<void()> fn);
  void Cancel(uint64_t id);

 private:
  void Loop();
  kmcl::Mutex mu_;
  kmcl::CondVar cv_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  // (deadline, id) -> function
  std::map<std::pair<absl::Time, uint64_t>, std::function<void()>> pending_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, absl::Time> deadlines_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace kmcld

#endif  // KMCLD_DAEMON_TIMER_H_
