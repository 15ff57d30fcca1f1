// kmcl_core/runtime/channel_test_util.h: helpers for tests that run a host endpoint
// and a guest endpoint against each other in one partition: where the
// channels run (TestExecutors), an ordered, thread-safe event recorder, and
// a fixture that offers and opens a channel.
//
// Most runtime tests run their channels on one ManualExecutor (the default):
// nothing runs until the test drives it, so a test acts, settles the
// channels (runs until idle) and asserts, on its own thread, in one order,
// with no waits. A few run on the process's shared pools (kThreaded) where
// real concurrency is the point; the same Settled() call then waits.
//
//   TestExecutors exec;                       // manual
//   auto ch = *Channel::Allocate(partition, EndpointRole::kHost, exec.channel_executors());
//   ...
//   ASSERT_TRUE(exec.Settled([&] { return rec.Count("host:opened") == 1; }));
#ifndef KMCLD_KMCL_CORE_RUNTIME_CHANNEL_TEST_UTIL_H_
#define KMCLD_KMCL_CORE_RUNTIME_CHANNEL_TEST_UTIL_H_

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "kmcl_core/bus/partition.h"
#include "kmcl_core/runtime/channel.h"
#include "kmcl_core/runtime/executor.h"

namespace kmcl::testing {

inline const Guid kTestType = *Guid::Parse("9d1f7a2e-4b0c-4c51-8a7e-3f5e2d6c1b00");
inline const Guid kTestInstance = *Guid::Parse("00000000-0000-4000-8000-000000000001");

class Recorder {
 public:
  void Add(std::string what) {
    MutexLock lock(&mu_);
    events_.push_back(std::move(what));
    cv_.SignalAll();
  }
  std::vector<std::string> Events() {
    MutexLock lock(&mu_);
    return events_;
  }
  std::vector<std::string> EventsOf(const std::string& prefix) {
    std::vector<std::string> out;
    for (const std::string& e : Events()) {
      if (e.rfind(prefix, 0) == 0) out.push_back(e);
    }
    return out;
  }
  size_t Count(const std::string& what) {
    MutexLock lock(&mu_);
    return std::count(events_.begin(), events_.end(), what);
  }
  // Waits until `what` was recorded `times` times (bounded; false on timeout).
  // For channels on threads; on a ManualExecutor settle them and use Count.
  bool WaitFor(const std::string& what, size_t times = 1,
               absl::Duration timeout = absl::Seconds(20)) {
    MutexLock lock(&mu_);
    const absl::Time deadline = absl::Now() + timeout;
    while (static_cast<size_t>(std::count(events_.begin(), events_.end(), what)) < times) {
      if (cv_.WaitWithDeadline(&mu_, deadline)) {
        return static_cast<size_t>(std::count(events_.begin(), events_.end(), what)) >= times;
      }
    }
    return true;
  }

 private:
  Mutex mu_;
  CondVar cv_;
  std::vector<std::string> events_;
};

// Where a test's channels run.
enum class Execution {
  kManual,    // on one ManualExecutor the test drives: deterministic
  kThreaded,  // on the process's shared pools: real concurrency
};

// For INSTANTIATE_TEST_SUITE_P over Execution: "Manual", "Threaded".
inline std::string ExecutionName(const ::testing::TestParamInfo<Execution>& info) {
  return info.param == Execution::kManual ? "Manual" : "Threaded";
}

// The executors a test's channels run on, and the one way the test lets
// them settle. Outlives the channels allocated on it.
class TestExecutors {
 public:
  explicit TestExecutors(Execution mode = Execution::kManual) : mode_(mode) {}
  Execution mode() const { return mode_; }
  bool manual() const { return mode_ == Execution::kManual; }
  // What to pass to Channel::Allocate.
  ChannelExecutors channel_executors() {
    return manual() ? ChannelExecutors::Manual(&manual_) : ChannelExecutors::Default();
  }
  // The manual executor (drives nothing when kThreaded).
  ManualExecutor& executor() { return manual_; }
  // Manual: runs every pending task on this thread, including those they
  // queue, and returns how many ran. Threaded: 0 (the pools run by themselves).
  size_t RunUntilIdle() { return manual() ? manual_.RunUntilIdle() : 0; }
  // Whether `done` holds once the channels have settled. Manual: runs until
  // idle, then looks once; it never waits, so a false here is final.
  // Threaded: looks again (yielding) until it holds, at most `timeout`.
  bool Settled(const std::function<bool()>& done, absl::Duration timeout = absl::Seconds(20)) {
    if (manual()) {
      manual_.RunUntilIdle();
      return done();
    }
    const absl::Time deadline = absl::Now() + timeout;
    while (!done()) {
      if (absl::Now() >= deadline) return false;
      std::this_thread::yield();
    }
    return true;
  }
  // Settles the channels and says whether `what` was recorded at least
  // `times` times (threaded: waits for it on the recorder, bounded).
  bool Recorded(Recorder& r, const std::string& what, size_t times = 1) {
    if (!manual()) return r.WaitFor(what, times);
    manual_.RunUntilIdle();
    return r.Count(what) >= times;
  }

 private:
  const Execution mode_;
  ManualExecutor manual_;
};

// Callbacks that record "<who>:opened" etc.
inline ChannelCallbacks RecordingCallbacks(Recorder& r, const std::string& who) {
  ChannelCallbacks cb;
  cb.opened = [&r, who](Channel&) {
    r.Add(who + ":opened");
    return kStatusSuccess;
  };
  cb.started = [&r, who](Channel&) { r.Add(who + ":started"); };
  cb.post_started = [&r, who](Channel&) { r.Add(who + ":post_started"); };
  cb.suspend = [&r, who](Channel&) { r.Add(who + ":suspend"); };
  cb.closed = [&r, who](Channel&) { r.Add(who + ":closed"); };
  cb.pnp_failure = [&r, who](Channel&, NTSTATUS) { r.Add(who + ":pnp_failure"); };
  return cb;
}

// A host and a guest in one partition, on a ManualExecutor unless the
// fixture is constructed with Execution::kThreaded.
class ChannelPairTest : public ::testing::Test {
 protected:
  explicit ChannelPairTest(Execution mode = Execution::kManual) : exec_(mode) {}

  // State that callbacks capture must outlive TearDown (which disables the
  // channels and so still runs callbacks): the fixture owns it.
  template <typename T, typename... Args>
  T& Keep(Args&&... args) {
    auto owned = std::make_shared<T>(std::forward<Args>(args)...);
    T& ref = *owned;
    kept_.push_back(std::move(owned));
    return ref;
  }

  void SetUp() override {
    PartitionOptions o;
    o.memory_bytes = 256 << 20;
    partition_ = *Partition::Create(o);
  }
  void TearDown() override {
    if (guest_) {
      EXPECT_TRUE(guest_->Disable().ok());
    }
    if (host_) {
      EXPECT_TRUE(host_->Disable().ok());
    }
    if (exec_.manual()) {
      EXPECT_EQ(exec_.RunUntilIdle(), 0u) << "work queued after both channels were disabled";
    }
    guest_.reset();
    host_.reset();
  }

  void MakeHost(ChannelCallbacks cb, bool start = true) {
    host_ = *Channel::Allocate(*partition_, EndpointRole::kHost, exec_.channel_executors());
    ASSERT_TRUE(host_->SetTargetInterfaceId(kTestType, kTestInstance).ok());
    ASSERT_TRUE(host_->SetCallbacks(std::move(cb)).ok());
    ASSERT_TRUE(host_->Enable().ok());
    if (start) {
      ASSERT_TRUE(host_->Start().ok());
    }
  }
  void MakeGuest(ChannelCallbacks cb, uint32_t ring_pages = 16) {
    guest_ = *Channel::Allocate(*partition_, EndpointRole::kGuest, exec_.channel_executors());
    ASSERT_TRUE(guest_->SetTargetPnp(kTestType, std::nullopt).ok());
    ASSERT_TRUE(guest_->SetRingBufferPageCount(ring_pages, ring_pages).ok());
    ASSERT_TRUE(guest_->SetCallbacks(std::move(cb)).ok());
    ASSERT_TRUE(guest_->Enable().ok());
  }

  TestExecutors exec_;                       // destroyed last
  std::vector<std::shared_ptr<void>> kept_;  // destroyed after the channels
  std::unique_ptr<Partition> partition_;
  std::unique_ptr<Channel> host_;
  std::unique_ptr<Channel> guest_;
};

}  // namespace kmcl::testing

#endif  // KMCLD_KMCL_CORE_RUNTIME_CHANNEL_TEST_UTIL_H_
