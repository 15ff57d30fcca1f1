// bench/channel_scale_bench.cc: many channel pairs in one process on the
// shared executor (kmcl_core/runtime/executor.h).
//
// For each count N (default 100, 1,000, 10,000) it enables N host (VSP) and
// N guest (VSC) endpoints in one partition, waits until all are open, then
// echoes packets on every pair (each guest sends, its host completes with
// the same bytes) and prints:
// - threads in the process (from /proc/self/status) idle and while echoing:
//   they must not grow with N (the thread-per-channel runtime had 2N);
// - heap bytes per opened pair (mallinfo2 in-use bytes before and after,
//   divided by N): daemon-side memory without the guest ring pages, which
//   live in the partition's guest memory and are not heap;
// - echo round trips per second across all pairs.
// Then the blocking case: N_b guests (default 1,000) whose PostStarted all
// block at once in VmbChannelSendSynchronousRequest, first with hosts that
// complete at dispatch level, then with hosts that process at passive level
// (the passive pool must grow for them to finish); it prints how long until
// every PostStarted returned and the passive pool's peak threads.
//
// Usage: bazel run -c opt //bench:channel_scale_bench [-- --counts=100,1000,10000
//        --blocking=1000 --rounds=20]
#include <malloc.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "kmcl_core/base/mutex.h"
#include "kmcl_core/bus/partition.h"
#include "kmcl_core/runtime/channel.h"
#include "kmcl_core/runtime/executor.h"

ABSL_FLAG(std::string, counts, "100,1000,10000", "channel pair counts to measure");
ABSL_FLAG(int, rounds, 20, "echo rounds per pair");
ABSL_FLAG(int, blocking, 1000, "guests whose PostStarted blocks on a synchronous request");

namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

const kmcl::Guid kType = *kmcl::Guid::Parse("5ca1e000-0000-4000-8000-000000000001");
constexpr uint32_t kRingPages = 2;  // per direction: one header page and one data page

int Threads() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
  }
  return -1;
}

size_t HeapInUse() { return mallinfo2().uordblks; }

// Spins (yielding) until `done` holds; a benchmark's wait, not a test's.
template <typename F>
bool WaitUntil(F done, double seconds = 600) {
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  while (!done()) {
    if (Clock::now() > end) return false;
    std::this_thread::yield();
  }
  return true;
}

struct Pairs {
  std::unique_ptr<kmcl::Partition> partition;
  std::vector<std::unique_ptr<kmcl::Channel>> hosts, guests;
  ~Pairs() {
    for (auto& g : guests) g->Disable().IgnoreError();
    for (auto& h : hosts) h->Disable().IgnoreError();
    guests.clear();
    hosts.clear();
  }
};

kmcl::ChannelCallbacks EchoHost(bool at_passive) {
  kmcl::ChannelCallbacks cb;
  cb.process_packet = [](kmcl::Channel& ch, kmcl::Delivery& d, std::span<const uint8_t> buf,
                         uint32_t) { ch.Complete(d, buf); };
  cb.opened = [at_passive](kmcl::Channel& ch) {
    ch.SetIncomingProcessingAtPassive(at_passive);
    return kmcl::kStatusSuccess;
  };
  return cb;
}

bool MakePairs(Pairs& p, int n, kmcl::ChannelCallbacks host_cb, kmcl::ChannelCallbacks guest_cb) {
  kmcl::PartitionOptions o;
  o.memory_bytes = uint64_t{4} << 30;
  auto partition = kmcl::Partition::Create(o);
  if (!partition.ok()) return false;
  p.partition = *std::move(partition);
  for (int i = 0; i < n; ++i) {
    const kmcl::Guid instance = kmcl::Guid::Random();
    auto h = *kmcl::Channel::Allocate(*p.partition, kmcl::EndpointRole::kHost);
    if (!h->SetTargetInterfaceId(kType, instance).ok() || !h->SetCallbacks(host_cb).ok() ||
        !h->Enable().ok() || !h->Start().ok()) {
      return false;
    }
    auto g = *kmcl::Channel::Allocate(*p.partition, kmcl::EndpointRole::kGuest);
    if (!g->SetTargetPnp(kType, instance).ok() ||
        !g->SetRingBufferPageCount(kRingPages, kRingPages).ok() || !g->SetCallbacks(guest_cb).ok() ||
        !g->Enable().ok()) {
      return false;
    }
    p.hosts.push_back(std::move(h));
    p.guests.push_back(std::move(g));
  }
  return WaitUntil([&] {
    for (auto& g : p.guests) {
      if (g->connection() != kmcl::ConnectionState::kOpened) return false;
    }
    return true;
  });
}

bool Scale(int n, int rounds) {
  const size_t heap_before = HeapInUse();
  const auto t0 = Clock::now();
  Pairs p;
  if (!MakePairs(p, n, EchoHost(false), {})) {
    std::printf("channel_scale: %d pairs failed to open\n", n);
    return false;
  }
  const auto t1 = Clock::now();
  const size_t heap_open = HeapInUse();
  const int threads_idle = Threads();
  // Echo: every guest keeps one transaction in flight, `rounds` times.
  std::atomic<int64_t> left{int64_t{n} * rounds};
  std::atomic<int> max_threads{0};
  std::vector<uint8_t> payload(64, 0x5A);
  std::vector<std::function<void(kmcl::Packet&, NTSTATUS, std::span<const uint8_t>)>> again(n);
  std::vector<int> sent(n, 0);
  for (int i = 0; i < n; ++i) {
    again[i] = [&, i](kmcl::Packet& pk, NTSTATUS, std::span<const uint8_t>) {
      left--;
      if (++sent[i] < rounds) {
        pk.set_completion_routine(again[i]);
        pk.channel().Send(pk, payload, {}, kmcl::kFormatFlagWaitForCompletion).IgnoreError();
      } else {
        pk.channel().FreePacket(&pk).IgnoreError();
      }
    };
  }
  const auto e0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    kmcl::Packet* pk = p.guests[i]->AllocatePacket();
    pk->set_completion_routine(again[i]);
    if (!p.guests[i]->Send(*pk, payload, {}, kmcl::kFormatFlagWaitForCompletion).ok()) return false;
  }
  const bool echoed = WaitUntil([&] {
    max_threads = std::max(max_threads.load(), Threads());
    return left.load() == 0;
  });
  const auto e1 = Clock::now();
  if (!echoed) {
    std::printf("channel_scale: %d pairs: echo did not finish\n", n);
    return false;
  }
  const double per_pair = static_cast<double>(heap_open - heap_before) / n;
  std::printf(
      "pairs=%-6d open=%.2fs threads_idle=%d threads_echoing_max=%d (thread-per-channel: %d) "
      "heap_per_pair=%.1f KiB (goal <= 32 KiB) echo=%.0f round trips/s\n",
      n, Seconds(t0, t1), threads_idle, max_threads.load(), 2 * 2 * n, per_pair / 1024,
      static_cast<double>(n) * rounds / Seconds(e0, e1));
  return true;
}

// Guests whose PostStarted blocks on a synchronous request, all at once.
bool Blocking(int n, bool host_at_passive) {
  std::atomic<int> returned{0}, ok{0};
  kmcl::ChannelCallbacks guest_cb;
  guest_cb.post_started = [&](kmcl::Channel& ch) {
    const uint8_t req[16] = {1};
    std::vector<uint8_t> reply;
    if (ch.SendSynchronous(req, {}, kmcl::kFormatFlagWaitForCompletion, &reply, std::nullopt) ==
        kmcl::kStatusSuccess) {
      ok++;
    }
    returned++;
  };
  const auto before = kmcl::ChannelExecutors::DefaultPassiveStats();
  const auto t0 = Clock::now();
  Pairs p;
  if (!MakePairs(p, n, EchoHost(host_at_passive), guest_cb)) return false;
  const bool done = WaitUntil([&] { return returned.load() == n; });
  const auto t1 = Clock::now();
  const auto after = kmcl::ChannelExecutors::DefaultPassiveStats();
  std::printf(
      "blocking PostStarted: guests=%d host_at_passive=%d all_returned=%s ok=%d in %.2fs "
      "passive_pool_peak_threads=%d threads_added_for_starvation=%d\n",
      n, host_at_passive, done ? "yes" : "NO", ok.load(), Seconds(t0, t1), after.peak_threads,
      after.added_for_starvation - before.added_for_starvation);
  return done && ok.load() == n;
}

}  // namespace

int main(int argc, char** argv) {
  kmcl::DisableAbslDeadlockDetectionInReleaseBuilds();  // as kmcld does (-c opt)
  absl::ParseCommandLine(argc, argv);
  std::printf("channel_scale_bench: %u cores, threads at start %d\n",
              std::thread::hardware_concurrency(), Threads());
  bool good = true;
  for (absl::string_view c : absl::StrSplit(absl::GetFlag(FLAGS_counts), ',')) {
    int n = 0;
    if (!absl::SimpleAtoi(c, &n) || n <= 0) {
      std::fprintf(stderr, "bad --counts entry '%s'\n", std::string(c).c_str());
      return 2;
    }
    good = Scale(n, absl::GetFlag(FLAGS_rounds)) && good;
  }
  const int b = absl::GetFlag(FLAGS_blocking);
  if (b > 0) {
    good = Blocking(b, false) && good;
    good = Blocking(b, true) && good;
  }
  return good ? 0 : 1;
}
