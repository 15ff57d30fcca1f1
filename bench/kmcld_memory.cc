#include "bench/kmcld_memory.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bench/bench_transports.h"
#include "bench/kmcld_child.h"
#include "clients/cpp/kmcl.h"

namespace kmcld::bench {

namespace v1 = ::kmcl::v1;
using ::kmcl::client::AttachedStream;
using ::kmcl::client::Client;
using ::kmcl::client::StreamOptions;

bool MemoryPhase(const std::string& binary, int channels, const std::string& partition,
                 uint32_t mmio_megabytes, int streams_per_connection) {
  KmcldChild child;
  if (absl::Status s = child.Start(binary, absl::Seconds(30)); !s.ok()) {
    std::printf("memory: cannot start kmcld: %s\n", s.ToString().c_str());
    return false;
  }
  const int64_t rss_start = RssKib(child.pid());
  auto host = Client::Connect(child.address());
  auto guest = Client::Connect(child.address());
  if (!host.ok() || !guest.ok()) {
    std::printf("memory: %s\n", (!host.ok() ? host.status() : guest.status()).ToString().c_str());
    return false;
  }
  // With --mmio_megabytes every channel takes MMIO space, and the default
  // partition's 128 MiB window runs out at 128 channels: use a partition of
  // our own with a window that fits.
  std::string idle_partition = partition;
  const uint64_t mmio_mb = mmio_megabytes;
  if (mmio_mb > 0 && static_cast<uint64_t>(channels) * mmio_mb > 64) {
    v1::CreatePartitionRequest create;
    create.set_id("kmcld-bench-idle");
    create.mutable_mmio()->set_base(uint64_t{64} << 30);
    create.mutable_mmio()->set_size_bytes((static_cast<uint64_t>(channels) * mmio_mb + 64) << 20);
    auto p = (*host)->CreatePartition(create);
    if (p.ok()) {
      idle_partition = p->id();
      std::printf("\nmemory: channels in partition %s (MMIO window %" PRIu64 " MiB)\n",
                  idle_partition.c_str(), p->mmio().size_bytes() >> 20);
    } else {
      std::printf("\nmemory: %s; staying in %s\n", p.status().ToString().c_str(),
                  partition.c_str());
    }
  }
  const absl::Time t0 = absl::Now();
  std::vector<v1::ChannelRef> refs;
  absl::Status open_status;
  for (int i = 0; i < channels && open_status.ok(); ++i) {
    auto ref =
        OfferAndOpen(**host, **guest, idle_partition, 4096, 0, absl::StrCat("idle ", i),
                     mmio_megabytes);
    if (ref.ok()) {
      refs.push_back(*ref);
    } else {
      open_status = ref.status();  // measure with the channels we have
    }
  }
  absl::Status status;
  const double open_s = absl::ToDoubleSeconds(absl::Now() - t0);
  absl::SleepFor(absl::Milliseconds(300));
  const int64_t rss_opened = RssKib(child.pid());
  // The endpoints are attached from several connections: kmcld allows
  // max_streams_per_client (256) streams per connection.
  const size_t per_connection =
      static_cast<size_t>(std::max(1, streams_per_connection));
  std::vector<std::shared_ptr<Client>> tools;
  std::vector<std::unique_ptr<AttachedStream>> streams;
  const absl::Time t1 = absl::Now();
  for (const v1::ChannelRef& ref : refs) {
    if (!status.ok()) break;
    for (auto role : {v1::ENDPOINT_ROLE_HOST, v1::ENDPOINT_ROLE_GUEST}) {
      if (streams.size() % per_connection == 0) {
        auto tool = Client::Connect(child.address());
        if (!tool.ok()) {
          status = tool.status();
          break;
        }
        tools.push_back(*std::move(tool));
      }
      StreamOptions o;
      o.reconnect = false;
      auto stream = AttachedStream::Attach(tools.back(), Endpoint(ref, role), std::move(o));
      if (!stream.ok()) {
        status = stream.status();
        break;
      }
      streams.push_back(*std::move(stream));
    }
  }
  const double attach_s = absl::ToDoubleSeconds(absl::Now() - t1);
  absl::SleepFor(absl::Milliseconds(500));
  const int64_t rss_attached = RssKib(child.pid());

  std::printf("\nkmcld resident memory (VmRSS, pid %d; streams over %zu connections):\n\n",
              static_cast<int>(child.pid()), tools.size());
  std::printf("| state | VmRSS | delta from start | per endpoint |\n|---|---|---|---|\n");
  std::printf("| right after start | %.1f MiB | | |\n", rss_start / 1024.0);
  std::printf("| %zu channels offered + opened (%.2f s) | %.1f MiB | +%.1f MiB | %.1f KiB |\n",
              refs.size(), open_s, rss_opened / 1024.0, (rss_opened - rss_start) / 1024.0,
              refs.empty() ? 0.0 : double(rss_opened - rss_start) / (2 * refs.size()));
  std::printf("| + %zu endpoints attached, idle (%.2f s) | %.1f MiB | +%.1f MiB | %.1f KiB |\n",
              streams.size(), attach_s, rss_attached / 1024.0,
              (rss_attached - rss_start) / 1024.0,
              streams.empty() ? 0.0 : double(rss_attached - rss_start) / streams.size());
  std::printf("\nEach opened channel holds 2 rings of 16 data pages + 1 control page of\n"
              "emulated guest memory inside kmcld (%.1f MiB for %zu channels if touched);\n"
              "the attach row's increase over the opened row is the streams' own cost:\n"
              "%.1f KiB per attached endpoint.\n",
              refs.size() * 2 * 17 * 4096 / 1048576.0, refs.size(),
              streams.empty() ? 0.0 : double(rss_attached - rss_opened) / streams.size());
  if (!open_status.ok()) {
    std::printf("memory: only %zu of %d channels opened: %s\n", refs.size(), channels,
                open_status.ToString().c_str());
  }
  if (!status.ok()) {
    std::printf("memory: attaching stopped early: %s\n", status.ToString().c_str());
  }
  for (auto& s : streams) s->Close(absl::ZeroDuration()).IgnoreError();
  streams.clear();
  child.Stop(absl::Seconds(5));
  return open_status.ok() && status.ok();
}


}  // namespace kmcld::bench
