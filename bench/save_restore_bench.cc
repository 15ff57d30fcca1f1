// bench/save_restore_bench.cc: save and restore time for 10, 100, 1,000 and
// 10,000 channel pairs with traffic in flight, to show whether the cost per
// channel stays flat as the count grows.
//
// Each pair is a real KMCL host endpoint (VSP) and a real guest endpoint
// (VSC) in one partition, on the shared executor (two threads per endpoint
// used to make 10,000 pairs impossible under pid_max 32,768). In flight at
// save time: 4 host transactions in the host-to-guest ring waiting for the
// paused guest's completions, and 2 guest transactions in the guest-to-host
// ring that the paused host has not read.
//
// Save = pause every endpoint, Channel::Save each, Partition::Save.
// Restore = Partition::Restore, then per endpoint Allocate + Restore +
// Enable, until every endpoint is back in the opened state. Per-channel
// figures divide by the number of pairs; restore is also split into the
// partition's part (Partition::Restore, a fixed cost plus the guest pages)
// and the endpoints' part, since a fixed cost spread over 10 pairs says
// nothing about the cost of a channel.
//
// Each count runs --repeats rounds (default 5), round-robin across the
// counts, and each count's median round is the one compared.
//
// Usage: bazel run -c opt //bench:save_restore_bench [-- --counts=10,100,1000,10000 --repeats=5]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "kmcl_core/base/mutex.h"
#include "kmcl_core/bus/partition.h"
#include "kmcl_core/runtime/channel.h"

ABSL_FLAG(std::string, counts, "10,100,1000,10000", "channel counts to measure");
ABSL_FLAG(int, repeats, 5, "rounds per count; the median round is compared");

namespace {

using Clock = std::chrono::steady_clock;
double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

const kmcl::Guid kType = *kmcl::Guid::Parse("5a1e5a1e-0000-4000-8000-000000000001");

template <typename Channels>
void WaitOpened(const Channels& channels) {
  for (const auto& c : channels) {
    while (c->connection() != kmcl::ConnectionState::kOpened) std::this_thread::yield();
  }
}

// Restore microseconds per pair: all of it, and the endpoints' part (after
// Partition::Restore). Zero on failure.
struct Restored {
  double total_us = 0;
  double endpoints_us = 0;
};

Restored RunOnce(int n) {
  kmcl::PartitionOptions o;
  o.memory_bytes = uint64_t{4} << 30;
  auto partition = *kmcl::Partition::Create(o);
  std::vector<std::unique_ptr<kmcl::Channel>> hosts, guests;
  for (int i = 0; i < n; ++i) {
    const kmcl::Guid instance = kmcl::Guid::Random();
    auto h = *kmcl::Channel::Allocate(*partition, kmcl::EndpointRole::kHost);
    if (!h->SetTargetInterfaceId(kType, instance).ok() || !h->Enable().ok() || !h->Start().ok()) {
      return {};
    }
    auto g = *kmcl::Channel::Allocate(*partition, kmcl::EndpointRole::kGuest);
    // Rings of 2 data pages each way.
    if (!g->SetTargetPnp(kType, instance).ok() || !g->SetRingBufferPageCount(2, 2).ok() ||
        !g->Enable().ok()) {
      return {};
    }
    hosts.push_back(std::move(h));
    guests.push_back(std::move(g));
  }
  WaitOpened(guests);
  WaitOpened(hosts);
  std::vector<uint8_t> payload(64, 0xAB);
  for (int i = 0; i < n; ++i) {
    if (!guests[i]->Pause().ok()) return {};
    for (int k = 0; k < 4; ++k) {  // waits in the ring for the paused guest
      kmcl::Packet* pkt = hosts[i]->AllocatePacket();
      if (!hosts[i]->Send(*pkt, payload, {}, kmcl::kFormatFlagWaitForCompletion).ok()) return {};
    }
    if (!hosts[i]->Pause().ok()) return {};
    for (int k = 0; k < 2; ++k) {  // waits in the ring for the paused host
      kmcl::Packet* pkt = guests[i]->AllocatePacket();
      if (!guests[i]->Send(*pkt, payload, {}, kmcl::kFormatFlagWaitForCompletion).ok()) return {};
    }
  }
  // Every send is in its ring before the save.
  for (int i = 0; i < n; ++i) {
    while (hosts[i]->Snapshot().queued_sends + guests[i]->Snapshot().queued_sends != 0) {
      std::this_thread::yield();
    }
  }

  auto t0 = Clock::now();
  std::vector<std::string> host_blobs, guest_blobs;
  size_t channel_bytes = 0;
  for (int i = 0; i < n; ++i) {
    host_blobs.push_back(*hosts[i]->Save());
    guest_blobs.push_back(*guests[i]->Save());
    channel_bytes += host_blobs.back().size() + guest_blobs.back().size();
  }
  std::string partition_blob = *partition->Save();
  auto t1 = Clock::now();
  guests.clear();  // handed over
  hosts.clear();
  partition.reset();

  auto t2 = Clock::now();
  auto restored = *kmcl::Partition::Restore(partition_blob);
  auto t2e = Clock::now();  // the partition is back; now its endpoints
  std::vector<std::unique_ptr<kmcl::Channel>> hosts2, guests2;
  for (int i = 0; i < n; ++i) {
    auto h = *kmcl::Channel::Allocate(*restored, kmcl::EndpointRole::kHost);
    auto g = *kmcl::Channel::Allocate(*restored, kmcl::EndpointRole::kGuest);
    if (!h->Restore(host_blobs[i]).ok() || !g->Restore(guest_blobs[i]).ok() || !h->Enable().ok() ||
        !g->Enable().ok()) {
      return {};
    }
    hosts2.push_back(std::move(h));
    guests2.push_back(std::move(g));
  }
  WaitOpened(hosts2);
  WaitOpened(guests2);
  auto t3 = Clock::now();
  size_t outstanding = 0;
  for (int i = 0; i < n; ++i) {
    outstanding += hosts2[i]->Snapshot().outstanding_transactions +
                   guests2[i]->Snapshot().outstanding_transactions;
  }
  std::printf("%6d pairs  save %9.2f ms (%7.1f us/pair)  restore %9.2f ms (%7.1f us/pair: "
              "partition %7.1f + endpoints %7.1f)  partition blob %7.2f MiB  channel blobs "
              "%7.2f MiB  restored outstanding %zu\n",
              n, Ms(t0, t1), 1000 * Ms(t0, t1) / n, Ms(t2, t3), 1000 * Ms(t2, t3) / n,
              1000 * Ms(t2, t2e) / n, 1000 * Ms(t2e, t3) / n, partition_blob.size() / 1048576.0,
              channel_bytes / 1048576.0, outstanding);
  std::fflush(stdout);
  for (auto& g : guests2) g->Disable().IgnoreError();
  for (auto& h : hosts2) h->Disable().IgnoreError();
  if (outstanding != static_cast<size_t>(6 * n)) return {};
  return Restored{1000 * Ms(t2, t3) / n, 1000 * Ms(t2e, t3) / n};
}

}  // namespace

int main(int argc, char** argv) {
  kmcl::DisableAbslDeadlockDetectionInReleaseBuilds();  // as kmcld does (-c opt)
  absl::ParseCommandLine(argc, argv);
  bool ok = true;
  // One unmeasured round first: the first partition and channels in the
  // process pay for starting the executor's threads and warming the heap,
  // which is no channel's restore cost (it made 10 pairs look 2.5x dearer).
  std::printf("warm-up (not counted):\n");
  if (RunOnce(10).total_us <= 0) ok = false;
  std::vector<int> counts;
  for (absl::string_view c : absl::StrSplit(absl::GetFlag(FLAGS_counts), ',')) {
    int n;
    if (absl::SimpleAtoi(c, &n) && n > 0) counts.push_back(n);
  }
  // Rounds go round-robin across the counts (10, 100, ..., 10, 100, ...)
  // rather than all of one count and then the next, as the echo comparison
  // alternates its builds: a slow spell of the machine, or the heap state a
  // round leaves behind, then falls on every count alike instead of on
  // whichever count happened to run during it.
  std::vector<std::vector<Restored>> rounds(counts.size());
  std::vector<bool> failed(counts.size(), false);
  for (int round = 0; round < std::max(1, absl::GetFlag(FLAGS_repeats)); ++round) {
    std::printf("round %d:\n", round + 1);
    for (size_t i = 0; i < counts.size(); ++i) {
      if (failed[i]) continue;
      const Restored one = RunOnce(counts[i]);
      if (one.total_us <= 0) {
        failed[i] = true;
        continue;
      }
      rounds[i].push_back(one);
    }
  }
  double lo = 0, hi = 0, ep_lo = 0, ep_hi = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const int n = counts[i];
    if (failed[i]) {
      std::printf("%6d pairs  FAILED\n", n);
      ok = false;
      continue;
    }
    // The median round: one round of 10 pairs takes a few milliseconds, so
    // one scheduling delay on a busy machine would otherwise decide the ratio.
    std::vector<Restored>& r_all = rounds[i];
    std::sort(r_all.begin(), r_all.end(),
              [](const Restored& a, const Restored& b) { return a.total_us < b.total_us; });
    const Restored r = r_all[r_all.size() / 2];
    std::printf("%6d pairs  median of %zu rounds: restore %7.1f us/pair (endpoints %7.1f; rounds "
                "%.1f-%.1f)\n",
                n, r_all.size(), r.total_us, r.endpoints_us, r_all.front().total_us,
                r_all.back().total_us);
    lo = lo == 0 ? r.total_us : std::min(lo, r.total_us);
    hi = std::max(hi, r.total_us);
    ep_lo = ep_lo == 0 ? r.endpoints_us : std::min(ep_lo, r.endpoints_us);
    ep_hi = std::max(ep_hi, r.endpoints_us);
  }
  if (lo > 0) {
    std::printf(
        "restore cost per pair: max/min across counts = %.2fx all of it, %.2fx the endpoints' "
        "part (goal <= 1.3x)\n",
        hi / lo, ep_hi / ep_lo);
  }
  return ok ? 0 : 1;
}
