// Under --config=tsan these tests fail if Mutex/CondVar stop telling TSan
// about their happens-before edges (remove the __tsan_* calls to see it):
// plain data guarded by them is then reported as racing.
#include "kmcl_core/base/mutex.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace kmcl {
namespace {

TEST(Mutex, GuardsPlainDataAcrossThreads) {
  Mutex mu;
  long counter = 0;  // deliberately not atomic
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        MutexLock lock(&mu);
        ++counter;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(counter, 40000);
}

TEST(CondVar, HandsDataOverThroughWait) {
  Mutex mu;
  CondVar cv;
  std::vector<int> box;  // guarded by mu
  bool ready = false;
  std::thread producer([&] {
    MutexLock lock(&mu);
    box = {1, 2, 3};
    ready = true;
    cv.Signal();
  });
  {
    MutexLock lock(&mu);
    while (!ready) cv.Wait(&mu);
    EXPECT_EQ(box.size(), 3u);
  }
  producer.join();
}

TEST(CondVar, WaitWithDeadlineTimesOut) {
  Mutex mu;
  CondVar cv;
  MutexLock lock(&mu);
  EXPECT_TRUE(cv.WaitWithDeadline(&mu, absl::Now() + absl::Milliseconds(1)));
}

}  // namespace
}  // namespace kmcl
