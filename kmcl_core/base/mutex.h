// kmcl_core/base/mutex.h: absl::Mutex, absl::MutexLock and absl::CondVar as
// kmcl_core uses them, made visible to ThreadSanitizer.
//
// Debian's libabsl is not built with -fsanitize=thread, so TSan cannot see
// absl::Mutex's happens-before edges and reports every access to state that
// absl::Mutex guards as a race. These thin wrappers keep absl's
// implementation and Clang thread-safety annotations (ABSL_GUARDED_BY works
// with kmcl::Mutex as with absl::Mutex) and, in TSan builds only, tell TSan
// that Lock acquires and Unlock releases. Outside TSan they compile to the
// absl calls alone. Use them instead of the absl types in kmcl_core, the
// daemon and clients.
//
// Thread-safe, like the absl types they wrap.
#ifndef KMCLD_KMCL_CORE_BASE_MUTEX_H_
#define KMCLD_KMCL_CORE_BASE_MUTEX_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

#if defined(__SANITIZE_THREAD__)
#define KMCL_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KMCL_TSAN 1
#endif
#endif

#ifdef KMCL_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace kmcl {

// Debian's Abseil is built with its debug deadlock detector on: every
// absl::Mutex acquisition is checked against a process-wide lock-order graph
// under one global lock, which the threads of a busy channel then contend
// for (the C echo demo runs 1.9-2.1x as fast without it; docs/performance.md,
// "Channels on the shared executor"). Programs call this once at start: in
// release builds (NDEBUG) it turns the detector off, since the clang
// thread-safety build and TSan check lock order; debug and test builds keep it.
inline void DisableAbslDeadlockDetectionInReleaseBuilds() {
#ifdef NDEBUG
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
}

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    mu_.Lock();
    Acquired();
  }
  void Unlock() ABSL_UNLOCK_FUNCTION() {
    Releasing();
    mu_.Unlock();
  }
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() { mu_.AssertHeld(); }

 private:
  friend class CondVar;
  void Acquired() {
#ifdef KMCL_TSAN
    __tsan_acquire(this);
#endif
  }
  void Releasing() {
#ifdef KMCL_TSAN
    __tsan_release(this);
#endif
  }
  absl::Mutex mu_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

class CondVar {
 public:
  // Atomically releases `mu`, waits for a signal, and re-acquires it.
  void Wait(Mutex* mu) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    mu->Releasing();
    cv_.Wait(&mu->mu_);
    mu->Acquired();
  }
  // As Wait, giving up at `deadline`; true if the deadline passed.
  bool WaitWithDeadline(Mutex* mu, absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    mu->Releasing();
    bool timed_out = cv_.WaitWithDeadline(&mu->mu_, deadline);
    mu->Acquired();
    return timed_out;
  }
  void Signal() { cv_.Signal(); }
  void SignalAll() { cv_.SignalAll(); }

 private:
  absl::CondVar cv_;
};

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_BASE_MUTEX_H_
