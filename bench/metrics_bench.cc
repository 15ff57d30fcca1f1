// bench/metrics_bench: what kmcld's /metrics costs, against a real kmcld.
//
//   bazel run -c opt //bench:metrics_bench
//
// 1. The packet path scraped and not, in one run: one channel, a host tool
//    that completes every delivery with its own bytes, a guest tool sending
//    64-byte transactions with --window in flight for --seconds per cell.
//    Cells alternate: off (nothing scrapes), 1 Hz (a scrape a second, well
//    above Prometheus's usual 15 s), busy (a scraper in a tight loop, the
//    worst case on two cores), --rounds times; the medians are compared.
//    kmcl_core's counters and the latency histogram are always collected
//    (relaxed atomics on the ring path), so "off" includes them.
// 2. A scrape with --channels busy channels: that many channels offered,
//    opened and attached at both ends, transactions running round-robin
//    over all of them while --scrapes scrapes are timed (median and max
//    wall time, bytes, series); then the same with
//    --metrics_channel_labels=false on a second kmcld.
//
// Figures and ratios are printed; nothing is asserted.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "bench/kmcld_child.h"
#include "clients/cpp/kmcl.h"
#include "httplib.h"
#include "kmcl_core/base/mutex.h"

ABSL_FLAG(std::string, kmcld, "", "kmcld binary (default: from the runfiles)");
ABSL_FLAG(double, seconds, 2, "measured seconds per packet-path cell");
ABSL_FLAG(int, rounds, 3, "packet path: rounds of off / 1 Hz / busy cells");
ABSL_FLAG(int, window, 64, "packet path: transactions in flight");
ABSL_FLAG(int, channels, 1000, "scrape: busy channels");
ABSL_FLAG(int, scrapes, 20, "scrape: timed scrapes per mode");

namespace {

namespace kc = kmcl::client;
namespace v1 = kmcl::v1;
using kmcld::bench::KmcldChild;

constexpr char kType[] = "3e8a1c52-6b1d-4f0a-9c2e-7d5b4a3f2e10";

std::string MetricsAddress(KmcldChild& child) {
  for (absl::string_view line : absl::StrSplit(child.output(), '\n')) {
    if (absl::ConsumePrefix(&line, "kmcld: listening on metrics ")) return std::string(line);
  }
  return "";
}

// A channel with a host tool echoing every delivery and the guest's stream.
struct Echo {
  std::unique_ptr<kc::HostChannel> host;
  std::unique_ptr<kc::GuestChannel> guest;
  std::unique_ptr<kc::AttachedStream> host_stream, guest_stream;
};

absl::StatusOr<Echo> MakeEcho(std::shared_ptr<kc::Client> host, std::shared_ptr<kc::Client> guest,
                              int index) {
  Echo e;
  v1::ServerChannelSettings settings;
  settings.mutable_interface_type()->set_value(kType);
  settings.set_start(true);
  settings.set_friendly_name(absl::StrCat("bench-", index));
  const std::string instance = absl::StrFormat("00000000-0000-4000-8000-%012x", index + 1);
  settings.mutable_interface_instance()->set_value(instance);
  auto h = kc::HostChannel::Offer(host, "default", settings);
  if (!h.ok()) return h.status();
  e.host = std::make_unique<kc::HostChannel>(*std::move(h));
  v1::OpenChannelRequest open;
  open.set_partition_id("default");
  open.mutable_interface_type()->set_value(kType);
  open.mutable_interface_instance()->set_value(instance);
  auto g = kc::GuestChannel::Open(guest, open);
  if (!g.ok()) return g.status();
  e.guest = std::make_unique<kc::GuestChannel>(*std::move(g));
  kc::StreamOptions echo;
  echo.on_delivery = [](kc::AttachedStream& s, kc::Delivery d) {
    s.Complete(d.id, d.payload).IgnoreError();
  };
  auto hs = kc::AttachedStream::Attach(host, e.host->endpoint(), echo);
  if (!hs.ok()) return hs.status();
  e.host_stream = *std::move(hs);
  auto gs = kc::AttachedStream::Attach(guest, e.guest->endpoint());
  if (!gs.ok()) return gs.status();
  e.guest_stream = *std::move(gs);
  return e;
}

// Transactions per second on `e` for `seconds`, `window` in flight.
double Transactions(Echo& e, double seconds, int window) {
  const std::string payload(64, 'x');
  absl::Mutex mu;
  absl::CondVar changed;
  int in_flight = 0;
  uint64_t done = 0;
  const absl::Time start = absl::Now();
  const absl::Time end = start + absl::Seconds(seconds);
  while (absl::Now() < end) {
    {
      absl::MutexLock lock(&mu);
      while (in_flight >= window) changed.Wait(&mu);
      ++in_flight;
    }
    e.guest_stream->Send({payload, true}, [&](absl::StatusOr<kc::SendResult>) {
      absl::MutexLock lock(&mu);
      --in_flight;
      ++done;
      changed.Signal();
    });
  }
  absl::MutexLock lock(&mu);
  while (in_flight > 0) changed.Wait(&mu);
  return done / absl::ToDoubleSeconds(absl::Now() - start);
}

struct Scrape {
  double seconds = 0;
  size_t bytes = 0, series = 0;
};

Scrape ScrapeOnce(httplib::Client& client) {
  Scrape s;
  const absl::Time t0 = absl::Now();
  auto res = client.Get("/metrics");
  s.seconds = absl::ToDoubleSeconds(absl::Now() - t0);
  if (!res || res->status != 200) return s;
  s.bytes = res->body.size();
  for (absl::string_view line : absl::StrSplit(res->body, '\n', absl::SkipEmpty())) {
    if (!absl::StartsWith(line, "#")) ++s.series;
  }
  return s;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

int PacketPath(const std::string& binary) {
  KmcldChild child;
  if (absl::Status s = child.Start(binary, absl::Seconds(30), {"--metrics_listen=127.0.0.1:0"}); !s.ok()) {
    std::fprintf(stderr, "metrics_bench: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  auto host = kc::Client::Connect(child.address());
  auto guest = kc::Client::Connect(child.address());
  if (!host.ok() || !guest.ok()) return 1;
  auto echo = MakeEcho(*host, *guest, 0);
  if (!echo.ok()) {
    std::fprintf(stderr, "metrics_bench: %s\n", std::string(echo.status().message()).c_str());
    return 1;
  }
  const std::string address = MetricsAddress(child);
  std::vector<double> off, slow, busy;
  uint64_t scrapes = 0;
  for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
    for (int mode = 0; mode < 3; ++mode) {
      std::atomic<bool> stop{false};
      std::thread scraper([&] {
        if (mode == 0) return;
        httplib::Client c(absl::StrCat("http://", address));
        while (!stop.load()) {
          ScrapeOnce(c);
          ++scrapes;
          if (mode == 1) {
            for (int i = 0; i < 100 && !stop.load(); ++i) absl::SleepFor(absl::Milliseconds(10));
          }
        }
      });
      const double rate = Transactions(*echo, absl::GetFlag(FLAGS_seconds), absl::GetFlag(FLAGS_window));
      stop = true;
      scraper.join();
      (mode == 0 ? off : mode == 1 ? slow : busy).push_back(rate);
    }
  }
  const double o = Median(off), s = Median(slow), b = Median(busy);
  std::printf("packet path, 64 B transactions, window %d, %d rounds of %.1f s cells (%lu scrapes):\n",
              absl::GetFlag(FLAGS_window), absl::GetFlag(FLAGS_rounds), absl::GetFlag(FLAGS_seconds),
              static_cast<unsigned long>(scrapes));
  std::printf("| scraping | transactions/s (median) | vs off |\n|---|---|---|\n");
  std::printf("| off | %.0f | 1.00x |\n| 1 Hz | %.0f | %.3fx |\n| tight loop | %.0f | %.3fx |\n", o, s,
              s / o, b, b / o);
  echo->guest_stream->Close().IgnoreError();
  echo->host_stream->Close().IgnoreError();
  child.Stop(absl::Seconds(10));
  return 0;
}

int ScrapeCost(const std::string& binary, bool channel_labels) {
  KmcldChild child;
  std::vector<std::string> flags = {"--metrics_listen=127.0.0.1:0", "--max_streams_per_client=100000"};
  if (!channel_labels) flags.push_back("--metrics_channel_labels=false");
  if (absl::Status s = child.Start(binary, absl::Seconds(30), flags); !s.ok()) return 1;
  const std::string address = MetricsAddress(child);  // before the log scrolls it away
  // Tools spread over several connections (kmcld bounds streams per connection).
  std::vector<std::shared_ptr<kc::Client>> clients;
  for (int i = 0; i < 8; ++i) {
    auto c = kc::Client::Connect(child.address());
    if (!c.ok()) return 1;
    clients.push_back(*c);
  }
  const int n = absl::GetFlag(FLAGS_channels);
  std::vector<Echo> echoes;
  for (int i = 0; i < n; ++i) {
    auto e = MakeEcho(clients[i % 4], clients[4 + i % 4], i);
    if (!e.ok()) {
      std::fprintf(stderr, "metrics_bench: channel %d: %s\n", i, std::string(e.status().message()).c_str());
      return 1;
    }
    echoes.push_back(*std::move(e));
  }
  // Traffic round-robin over every channel while scraping.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> sent{0};
  std::thread traffic([&] {
    const std::string payload(64, 't');
    for (size_t i = 0; !stop.load(); i = (i + 1) % echoes.size()) {
      auto f = echoes[i].guest_stream->Send({payload, true});
      if (i % 64 == 63) f.wait();  // keep a bounded number in flight
      ++sent;
    }
  });
  httplib::Client c(absl::StrCat("http://", address));
  c.set_read_timeout(60, 0);
  ScrapeOnce(c);  // warm-up
  std::vector<double> times;
  Scrape last;
  for (int i = 0; i < absl::GetFlag(FLAGS_scrapes); ++i) {
    last = ScrapeOnce(c);
    times.push_back(last.seconds);
  }
  stop = true;
  traffic.join();
  std::printf("| %d | %s | %.1f ms | %.1f ms | %.1f MiB | %zu | %lu |\n", n,
              channel_labels ? "per channel" : "per partition", Median(times) * 1e3,
              *std::max_element(times.begin(), times.end()) * 1e3, last.bytes / 1048576.0, last.series,
              static_cast<unsigned long>(sent.load()));
  for (Echo& e : echoes) {
    e.guest_stream->Close(absl::ZeroDuration()).IgnoreError();
    e.host_stream->Close(absl::ZeroDuration()).IgnoreError();
  }
  child.Stop(absl::Seconds(10));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  kmcl::DisableAbslDeadlockDetectionInReleaseBuilds();  // as kmcld does (-c opt)
  absl::ParseCommandLine(argc, argv);
  const std::string binary = kmcld::bench::FindKmcld(absl::GetFlag(FLAGS_kmcld), argv[0]);
  if (binary.empty()) {
    std::fprintf(stderr, "metrics_bench: kmcld not found (--kmcld)\n");
    return 1;
  }
  int rc = PacketPath(binary);
  std::printf("\nscrape with busy channels (%d timed scrapes each):\n", absl::GetFlag(FLAGS_scrapes));
  std::printf("| channels | series by | scrape median | scrape max | exposition | series | transactions sent meanwhile |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  rc |= ScrapeCost(binary, true);
  rc |= ScrapeCost(binary, false);
  return rc;
}
