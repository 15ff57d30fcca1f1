// daemon/stream_pump.h: the threads that start gRPC stream writes on behalf
// of kmcl_core's threads.
//
// A channel's tasks must never call into gRPC themselves: gRPC may run
// completion callbacks (OnWriteDone, OnReadDone, even of other calls)
// inline, on the thread that started an operation, before the call returns.
// On a channel's I/O or control task, which may hold kmcl_core locks up
// its stack, such a callback could re-enter the channel and deadlock (seen
// as Attach streams and event watchers that stopped under load). So when a
// KMCL callback has something for a stream, it posts a task here, and these
// threads, which hold no locks, start the write.
//
// Thread-safe. Tasks run in FIFO order on `threads` threads and must not
// block; the destructor runs what is queued and joins.
#ifndef KMCLD_DAEMON_STREAM_PUMP_H_
#define KMCLD_DAEMON_STREAM_PUMP_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "kmcl_core/base/mutex.h"

namespace kmcld {

class StreamPump {
 public:
  explicit StreamPump(int threads);
  ~StreamPump();
  StreamPump(const StreamPump&) = delete;
  StreamPump& operator=(const StreamPump&) = delete;

  void Post(std::function<void()> task);

  // The daemon's pump (created on first use, lives until exit).
  static StreamPump& Default();

 private:
  void Loop();
  kmcl::Mutex mu_;
  kmcl::CondVar cv_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
};

}  // namespace kmcld

#endif  // KMCLD_DAEMON_STREAM_PUMP_H_
