// bench/save_restore_bench.cc: save and restore time for 10, 100, 1,000 and
// 10,000 channels with traffic in flight, to show whether the cost per
// channel stays flat as the count grows.
//
// Each channel is a real KMCL host endpoint (VSP side). The guest side is
// driven directly through the partition's control plane (ring GPADL,
// OPENCHANNEL) without a guest endpoint, because two threads per endpoint
// would exceed this machine's pid_max (32768) at 10,000 channel pairs. In
// flight at save time: 4 host transactions waiting in the host-to-guest ring
// for completions, and 2 guest packets waiting in the guest-to-host ring.
//
// Save = pause every host endpoint, Channel::Save each, Partition::Save.
// Restore = Partition::Restore, then per channel Allocate + Restore + Enable,
// until every endpoint is back in the opened state.
//
// Usage: bazel run -c opt //bench:save_restore_bench [-- --counts=10,100,1000,10000]
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
#include "kmcl_core/bus/partition.h"
#include "kmcl_core/runtime/channel.h"

ABSL_FLAG(std::string, counts, "10,100,1000,10000", "channel counts to measure");

namespace {

using Clock = std::chrono::steady_clock;
double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

const kmcl::Guid kType = *kmcl::Guid::Parse("5a1e5a1e-0000-4000-8000-000000000001");

void WaitOpened(const std::vector<std::unique_ptr<kmcl::Channel>>& hosts) {
  for (const auto& h : hosts) {
    while (h->connection() != kmcl::ConnectionState::kOpened) std::this_thread::yield();
  }
}

bool RunOnce(int n) {
  kmcl::PartitionOptions o;
  o.memory_bytes = uint64_t{1} << 30;
  auto partition = *kmcl::Partition::Create(o);
  std::vector<std::unique_ptr<kmcl::Channel>> hosts;
  std::vector<kmcl::GuestView> guest_views;
  for (int i = 0; i < n; ++i) {
    auto h = *kmcl::Channel::Allocate(*partition, true);
    kmcl::Guid instance = kmcl::Guid::Random();
    if (!h->SetTargetInterfaceId(kType, instance).ok() || !h->Enable().ok() || !h->Start().ok()) return false;
    const uint32_t relid = h->relid();
    // The guest: rings of 1 data page each, in its memory, opened raw.
    auto pfns = *partition->memory().AllocatePages(4);
    uint32_t gpadl = partition->gpadls().AllocateId();
    if (!partition->CreateGuestGpadl(0, relid, gpadl, {{4 * 4096, 0, pfns}}).ok()) return false;
    kmcl::OpenParams params;
    params.ring_gpadl_id = gpadl;
    params.downstream_page_offset = 2;
    if (!partition->OpenGuest(0, relid, params).ok()) return false;
    auto order = *kmcl::DoubleMappedRingPages(pfns.size(), 2);
    guest_views.push_back(*partition->memory().MapPages(pfns, order, true));
    hosts.push_back(std::move(h));
  }
  WaitOpened(hosts);
  std::vector<uint8_t> payload(64, 0xAB);
  for (int i = 0; i < n; ++i) {
    auto& h = hosts[i];
    if (!h->Pause().ok()) return false;
    // Guest-to-host: two packets the paused host has not read.
    auto pair = *kmcl::RingPair::FromDoubleMappedView(guest_views[i].bytes(), 2);
    kmcl::RingWriter guest_writer(pair.guest_to_host);
    kmcl::OutgoingPacket p;
    p.payload = payload;
    for (int k = 0; k < 2; ++k) guest_writer.Write(p);
    guest_writer.CommitWrite();
    // Host-to-guest: four transactions awaiting completions.
    for (int k = 0; k < 4; ++k) {
      kmcl::Packet* pkt = h->AllocatePacket();
      if (!h->Send(*pkt, payload, {}, kmcl::kFormatFlagWaitForCompletion).ok()) return false;
    }
  }
  guest_views.clear();

  auto t0 = Clock::now();
  std::vector<std::string> blobs;
  size_t channel_bytes = 0;
  for (auto& h : hosts) {
    blobs.push_back(*h->Save());
    channel_bytes += blobs.back().size();
  }
  std::string partition_blob = *partition->Save();
  auto t1 = Clock::now();
  hosts.clear();  // handed over
  partition.reset();

  auto t2 = Clock::now();
  auto restored = *kmcl::Partition::Restore(partition_blob);
  std::vector<std::unique_ptr<kmcl::Channel>> again;
  for (const std::string& blob : blobs) {
    auto h = *kmcl::Channel::Allocate(*restored, true);
    if (!h->Restore(blob).ok() || !h->Enable().ok()) return false;
    again.push_back(std::move(h));
  }
  WaitOpened(again);
  auto t3 = Clock::now();
  size_t outstanding = 0;
  for (auto& h : again) outstanding += h->Snapshot().outstanding_transactions;
  std::printf("%6d channels  save %9.2f ms (%7.1f us/ch)  restore %9.2f ms (%7.1f us/ch)  "
              "partition blob %7.2f MiB  channel blobs %7.2f MiB  restored outstanding %zu\n",
              n, Ms(t0, t1), 1000 * Ms(t0, t1) / n, Ms(t2, t3), 1000 * Ms(t2, t3) / n,
              partition_blob.size() / 1048576.0, channel_bytes / 1048576.0, outstanding);
  std::fflush(stdout);
  for (auto& h : again) h->Disable().IgnoreError();
  return outstanding == static_cast<size_t>(4 * n);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  bool ok = true;
  for (absl::string_view c : absl::StrSplit(absl::GetFlag(FLAGS_counts), ',')) {
    int n;
    if (!absl::SimpleAtoi(c, &n) || n <= 0) continue;
    if (!RunOnce(n)) {
      std::printf("%6d channels  FAILED\n", n);
      ok = false;
    }
  }
  return ok ? 0 : 1;
}
