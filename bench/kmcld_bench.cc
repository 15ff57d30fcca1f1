// bench/kmcld_bench: kmcld's remote packet path against a plain gRPC echo
// service, side by side in one run, over loopback TCP.
//
//   bazel run -c opt //bench:kmcld_bench                    # starts kmcld itself
//   bazel run -c opt //bench:kmcld_bench -- --kmcld=/path/to/kmcld
//   bazel run -c opt //bench:kmcld_bench -- --target=127.0.0.1:50551   # no memory figures
//
// kmcld: the bench starts kmcld from its runfiles (--listen=127.0.0.1:0
// --uds=none, the port read from its "kmcld: listening on tcp" line) and
// plays both tools with the C++ client library (//clients/cpp, AttachedStream
// with completion acknowledgement, as any tool would): per payload size
// one channel is offered and opened; a host-tool thread attaches the host
// endpoint and completes every delivery with the delivery's own bytes; the
// guest tool sends wait_for_completion packets and checks each completion.
// A round trip is guest -> kmcld -> host tool -> kmcld -> guest.
//
// echo: an in-process gRPC callback server on 127.0.0.1:0 (kmcl.bench
// EchoService, bench/echo.proto) sends every message straight back; the
// client sends the same payloads in the same shape (one packet per message,
// or `--batch` per message) and checks them the same way.
//
// Per payload (64 B, 1 KiB, 16 KiB by default):
//   unbatched: one packet per message, one in flight: round trips/s and
//              median / p99 round-trip latency;
//   batched:   --batch packets per message, --window in flight: packets/s.
// Then kmcld's resident memory (VmRSS) right after start, with
// --idle_channels channels offered and opened, and with both endpoints of
// each attached by an idle stream (a fresh kmcld for this).
//
// Benchmarks print figures and ratios; nothing is asserted. Exit status 1
// if a measurement failed (the table says which), else 0.
#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/bench_transports.h"
#include "bench/echo.grpc.pb.h"
#include "bench/kmcld_child.h"
#include "bench/kmcld_memory.h"
#include "clients/cpp/kmcl.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "grpcpp/support/channel_arguments.h"
#include "kmcl_core/base/mutex.h"

ABSL_FLAG(std::string, kmcld, "",
          "kmcld binary to start; empty: //daemon:kmcld from this binary's runfiles");
ABSL_FLAG(std::string, target, "",
          "benchmark an already running kmcld at this address instead of starting one "
          "(the memory figures need a child kmcld and are skipped)");
ABSL_FLAG(std::string, partition, "default", "partition for the benchmark channels");
ABSL_FLAG(std::string, payloads, "64,1024,16384", "payload sizes in bytes, comma separated (>= 16)");
ABSL_FLAG(double, seconds, 1.5, "measured seconds per cell");
ABSL_FLAG(double, warmup_seconds, 0.25, "unmeasured seconds before each cell");
ABSL_FLAG(uint32_t, window, 256, "batched: packets in flight");
ABSL_FLAG(uint32_t, batch, 64, "batched: packets per message");
ABSL_FLAG(uint32_t, ring_pages, 256, "data pages per ring of the throughput channels");
ABSL_FLAG(uint32_t, mmio_megabytes, 0,
          "ServerChannelSettings.mmio_megabytes of every offer (0 = KMCL's default)");
ABSL_FLAG(int32_t, idle_channels, 500,
          "memory: channels offered and opened, both endpoints attached (0 skips)");
ABSL_FLAG(int32_t, streams_per_connection, 200,
          "memory: idle streams per client connection (kmcld allows 256 per connection)");
ABSL_FLAG(double, stall_seconds, 10,
          "a kmcld cell that has not finished this long after its time is up fails");
ABSL_FLAG(int32_t, max_seconds, 110,
          "time budget: no new measurement starts after this many seconds");

namespace {

namespace v1 = ::kmcl::v1;
using kmcld::bench::EchoServiceImpl;
using kmcld::bench::EchoTransport;
using kmcld::bench::FindKmcld;
using kmcld::bench::KmclGuestTransport;
using kmcld::bench::KmclHostEcho;
using kmcld::bench::KmcldChild;
using kmcld::bench::MemoryPhase;
using kmcld::bench::OfferAndOpen;
using kmcld::bench::CloseRescindCleanup;
using kmcld::bench::Endpoint;
using ::kmcl::client::Client;
using SteadyClock = std::chrono::steady_clock;

#define BENCH_RETURN_IF_ERROR(expr) \
  do {                              \
    absl::Status _st = (expr);      \
    if (!_st.ok()) return _st;      \
  } while (0)

// ---------------------------------------------------------------------------
// Measurement loops.

struct Cell {
  bool done = false;
  std::string error;  // set when the measurement failed
  double rate = 0;    // round trips/s or packets/s
  double median_us = 0;
  double p99_us = 0;
  uint64_t count = 0;
};

double Percentile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  size_t k = static_cast<size_t>(q * (v.size() - 1) + 0.5);
  std::nth_element(v.begin(), v.begin() + k, v.end());
  return v[k];
}

template <typename T>
absl::Status RoundTrip(T& t) {
  const uint64_t target = t.completed() + 1;
  BENCH_RETURN_IF_ERROR(t.Send(1));
  while (t.completed() < target) BENCH_RETURN_IF_ERROR(t.Read());
  return absl::OkStatus();
}

template <typename T>
absl::StatusOr<Cell> MeasureUnbatched(T& t, double warmup_s, double seconds) {
  const auto warm_end = SteadyClock::now() + std::chrono::duration<double>(warmup_s);
  while (SteadyClock::now() < warm_end) BENCH_RETURN_IF_ERROR(RoundTrip(t));
  std::vector<double> us;
  us.reserve(1 << 20);
  const auto start = SteadyClock::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  auto now = start;
  while (now < end) {
    const auto t0 = now;
    BENCH_RETURN_IF_ERROR(RoundTrip(t));
    now = SteadyClock::now();
    us.push_back(std::chrono::duration<double, std::micro>(now - t0).count());
  }
  Cell c;
  c.done = true;
  c.count = us.size();
  c.rate = us.size() / std::chrono::duration<double>(now - start).count();
  c.median_us = Percentile(us, 0.5);
  c.p99_us = Percentile(us, 0.99);
  return c;
}

template <typename T>
absl::StatusOr<Cell> MeasureBatched(T& t, uint32_t window, uint32_t batch, double warmup_s,
                                    double seconds) {
  uint64_t sent = t.completed();
  const auto warm_end = SteadyClock::now() + std::chrono::duration<double>(warmup_s);
  const auto end = warm_end + std::chrono::duration<double>(seconds);
  bool measuring = false;
  uint64_t base = 0;
  SteadyClock::time_point start, now;
  while (true) {
    now = SteadyClock::now();
    if (!measuring && now >= warm_end) {
      measuring = true;
      start = now;
      base = t.completed();
    }
    if (now >= end) break;
    if (sent - t.completed() + batch <= window) {
      BENCH_RETURN_IF_ERROR(t.Send(batch));
      sent += batch;
    } else {
      BENCH_RETURN_IF_ERROR(t.Read());
    }
  }
  Cell c;
  c.done = true;
  c.count = t.completed() - base;
  c.rate = c.count / std::chrono::duration<double>(now - start).count();
  while (t.completed() < sent) BENCH_RETURN_IF_ERROR(t.Read());  // drain, untimed
  return c;
}

// ---------------------------------------------------------------------------

struct Row {
  size_t payload = 0;
  Cell kmcld_unbatched, echo_unbatched, kmcld_batched, echo_batched;
};

struct Budget {
  absl::Time end;
  bool Left() const { return absl::Now() < end; }
};

std::string Human(double v) {
  if (v >= 1e6) return absl::StrFormat("%.2f M", v / 1e6);
  if (v >= 1e4) return absl::StrFormat("%.1f k", v / 1e3);
  return absl::StrFormat("%.0f", v);
}

std::string Fig(const Cell& c, double Cell::*field, bool human, int decimals = 1) {
  if (!c.error.empty()) return "error";
  if (!c.done) return "-";
  return human ? Human(c.*field) : absl::StrFormat("%.*f", decimals, c.*field);
}

std::string Ratio(const Cell& k, const Cell& e, double Cell::*field, double target,
                  bool at_least) {
  if (!k.done || !e.done || e.*field <= 0) return "-";
  const double r = k.*field / e.*field;
  const bool met = at_least ? r >= target : r <= target;
  return absl::StrFormat("%.2fx %s", r, met ? "met" : "**not met**");
}

std::string PayloadName(size_t p) {
  if (p >= 1024 && p % 1024 == 0) return absl::StrCat(p / 1024, " KiB");
  return absl::StrCat(p, " B");
}

// One kmcld cell of `row` (unbatched or batched): a fresh channel, a host
// echo thread and a guest stream, torn down afterwards.
absl::Status RunKmcldCells(const std::shared_ptr<Client>& host_client,
                           const std::shared_ptr<Client>& guest_client,
                           const std::string& partition, Row& row, uint32_t window,
                           uint32_t batch, double warmup_s, double seconds, uint32_t ring_pages,
                           const Budget& budget, bool batched) {
  std::string bytes(row.payload, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7 + 3);
  const uint32_t max_packet = std::max<uint32_t>(4096, kmcld::bench::PaddedSize(row.payload));
  auto ref = OfferAndOpen(*host_client, *guest_client, partition, max_packet, ring_pages,
                          absl::StrCat("kmcld_bench ", row.payload),
                          absl::GetFlag(FLAGS_mmio_megabytes));
  if (!ref.ok()) return ref.status();
  // A stalled cell fails after this instead of eating the whole budget.
  const absl::Time deadline =
      absl::Now() + absl::Seconds(warmup_s + seconds + absl::GetFlag(FLAGS_stall_seconds));
  absl::Status result;
  {
    KmclHostEcho host(host_client);
    KmclGuestTransport guest(guest_client);
    result = host.Start(Endpoint(*ref, v1::ENDPOINT_ROLE_HOST), deadline);
    if (result.ok()) {
      result = guest.Start(Endpoint(*ref, v1::ENDPOINT_ROLE_GUEST), bytes, batch, deadline);
    }
    if (result.ok()) {
      Cell& cell = batched ? row.kmcld_batched : row.kmcld_unbatched;
      auto c = batched ? MeasureBatched(guest, window, batch, warmup_s, seconds)
                       : MeasureUnbatched(guest, warmup_s, seconds);
      if (c.ok()) {
        cell = *c;
        result = guest.Stop();
        if (result.ok()) result = host.Join();
      } else {
        result = c.status();
      }
    }
    if (!result.ok()) {
      // Say where it stood, for whoever debugs kmcld.
      const auto g = guest.stats();
      std::printf("\nkmcld %s %s: %s\n  guest tool: %" PRIu64 " sent, %" PRIu64
                  " completed, %" PRIu64 " credit stalls, %" PRIu64 " messages out (%" PRIu64
                  " acknowledgements alone), %" PRIu64 " in\n",
                  PayloadName(row.payload).c_str(), batched ? "batched" : "unbatched",
                  result.ToString().c_str(), g.sends, guest.completed(), g.credit_stalls,
                  g.messages_written, g.acks_alone, g.messages_read);
      auto diag = host_client->GetChannelDiagnostics(*ref);
      if (diag.ok()) {
        for (const auto* e : {&diag->host(), &diag->guest()}) {
          std::printf("  kmcld %s endpoint: queued_sends %u, delivered_uncompleted %u, quota %u, "
                      "outgoing ring used %u, incoming ring used %u, counters {%s}, stream {%s}\n",
                      e == &diag->host() ? "host" : "guest", e->queued_sends(),
                      e->delivered_uncompleted(), e->transaction_quota(),
                      e->outgoing().used_bytes(), e->incoming().used_bytes(),
                      e->counters().ShortDebugString().c_str(), e->stream_state().c_str());
        }
      } else {
        std::printf("  (no diagnostics: %s)\n", diag.status().ToString().c_str());
      }
      guest.Cancel();
      host.Cancel();
      const auto h = host.stats();
      std::printf("  host tool: %" PRIu64 " received, %" PRIu64 " messages out, %" PRIu64 " in\n",
                  h.deliveries, h.messages_written, h.messages_read);
    }
  }
  absl::Status teardown = CloseRescindCleanup(*host_client, *guest_client, *ref);
  return result.ok() ? teardown : result;
}

absl::Status RunEchoCell(kmcl::bench::EchoService::Stub& stub, Row& row, uint32_t window,
                         uint32_t batch, double warmup_s, double seconds, const Budget& budget,
                         bool batched) {
  std::string bytes(row.payload, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7 + 3);
  EchoTransport echo;
  BENCH_RETURN_IF_ERROR(echo.Start(stub, bytes, budget.end + absl::Seconds(30)));
  auto c = batched ? MeasureBatched(echo, window, batch, warmup_s, seconds)
                   : MeasureUnbatched(echo, warmup_s, seconds);
  if (!c.ok()) return c.status();
  (batched ? row.echo_batched : row.echo_unbatched) = *c;
  return echo.Close();
}

}  // namespace

int main(int argc, char** argv) {
  kmcl::DisableAbslDeadlockDetectionInReleaseBuilds();  // as kmcld does (-c opt)
  absl::SetProgramUsageMessage(
      "kmcld_bench: kmcld's packet path vs. a plain gRPC echo, over loopback TCP.\n"
      "Usage: bazel run -c opt //bench:kmcld_bench [-- --kmcld=PATH | --target=HOST:PORT]");
  absl::ParseCommandLine(argc, argv);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows up even if killed
  const double seconds = absl::GetFlag(FLAGS_seconds);
  const double warmup = absl::GetFlag(FLAGS_warmup_seconds);
  const uint32_t window = absl::GetFlag(FLAGS_window);
  const uint32_t batch = absl::GetFlag(FLAGS_batch);
  const std::string partition = absl::GetFlag(FLAGS_partition);
  std::vector<size_t> payloads;
  for (absl::string_view p : absl::StrSplit(absl::GetFlag(FLAGS_payloads), ',', absl::SkipEmpty())) {
    size_t v = 0;
    if (!absl::SimpleAtoi(p, &v) || v < 16 || v > (1 << 20)) {
      std::fprintf(stderr, "kmcld_bench: bad payload size '%s' (16 to 1048576)\n",
                   std::string(p).c_str());
      return 2;
    }
    payloads.push_back(v);
  }
  if (payloads.empty() || seconds <= 0 || warmup < 0 || batch < 1 || window < batch) {
    std::fprintf(stderr, "kmcld_bench: need payloads, --seconds > 0, --warmup_seconds >= 0, "
                         "1 <= --batch <= --window\n");
    return 2;
  }
  const absl::Time begin = absl::Now();
  Budget budget{begin + absl::Seconds(absl::GetFlag(FLAGS_max_seconds))};

  // kmcld under test.
  std::string target = absl::GetFlag(FLAGS_target);
  std::string binary;
  std::unique_ptr<KmcldChild> child;
  if (target.empty()) {
    binary = FindKmcld(absl::GetFlag(FLAGS_kmcld), argv[0]);
    if (binary.empty()) {
      std::fprintf(stderr, "kmcld_bench: kmcld not found in the runfiles; pass --kmcld=PATH\n");
      return 2;
    }
    child = std::make_unique<KmcldChild>();
    if (absl::Status s = child->Start(binary, absl::Seconds(30)); !s.ok()) {
      std::fprintf(stderr, "kmcld_bench: %s\n", s.ToString().c_str());
      return 1;
    }
    target = child->address();
  }
  ::kmcl::client::ClientOptions options;
  options.call_timeout = absl::Seconds(10);
  auto host_client = Client::Connect(target, options);
  auto guest_client = Client::Connect(target, options);
  if (!host_client.ok() || !guest_client.ok()) {
    std::fprintf(stderr, "kmcld_bench: %s\n",
                 (!host_client.ok() ? host_client.status() : guest_client.status())
                     .ToString()
                     .c_str());
    return 1;
  }

  // The echo baseline.
  EchoServiceImpl echo_service;
  grpc::ServerBuilder builder;
  int echo_port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &echo_port);
  builder.SetMaxReceiveMessageSize(-1);
  builder.RegisterService(&echo_service);
  std::unique_ptr<grpc::Server> echo_server = builder.BuildAndStart();
  if (echo_server == nullptr || echo_port == 0) {
    std::fprintf(stderr, "kmcld_bench: cannot start the echo server on 127.0.0.1:0\n");
    return 1;
  }
  const std::string echo_target = absl::StrCat("127.0.0.1:", echo_port);
  grpc::ChannelArguments echo_args;
  echo_args.SetMaxReceiveMessageSize(-1);
  auto echo_stub = kmcl::bench::EchoService::NewStub(
      grpc::CreateCustomChannel(echo_target, grpc::InsecureChannelCredentials(), echo_args));

  std::printf("kmcld_bench: kmcld at %s%s%s, echo server at %s\n", target.c_str(),
              child ? absl::StrCat(" (pid ", child->pid(), ", ").c_str() : "",
              child ? (binary + ")").c_str() : "", echo_target.c_str());
  std::printf("kmcld_bench: %.2f s per cell after %.2f s warm-up; batched = %u packets per "
              "message, %u in flight; kmcld rings %u pages\n",
              seconds, warmup, batch, window, absl::GetFlag(FLAGS_ring_pages));
  std::fflush(stdout);

  std::vector<Row> rows;
  std::vector<std::string> errors;
  bool kmcld_usable = true;
  for (size_t payload : payloads) {
    Row row;
    row.payload = payload;
    for (bool batched : {false, true}) {
      if (kmcld_usable && budget.Left()) {
        absl::Status s = RunKmcldCells(*host_client, *guest_client, partition, row, window, batch,
                                       warmup, seconds, absl::GetFlag(FLAGS_ring_pages), budget,
                                       batched);
        if (!s.ok()) {
          (batched ? row.kmcld_batched : row.kmcld_unbatched).error = s.ToString();
          errors.push_back(absl::StrCat("kmcld ", PayloadName(payload),
                                        batched ? " batched: " : " unbatched: ", s.ToString()));
          if (absl::IsUnimplemented(s)) kmcld_usable = false;  // don't repeat the obvious
        }
      }
      if (budget.Left()) {
        absl::Status s = RunEchoCell(*echo_stub, row, window, batch, warmup, seconds, budget,
                                     batched);
        if (!s.ok()) {
          (batched ? row.echo_batched : row.echo_unbatched).error = s.ToString();
          errors.push_back(absl::StrCat("echo ", PayloadName(payload),
                                        batched ? " batched: " : " unbatched: ", s.ToString()));
        }
      }
      std::printf(".");
      std::fflush(stdout);
    }
    rows.push_back(row);
  }
  std::printf("\n\n");

  std::printf("| payload | kmcld RT/s | echo RT/s | ratio (>= 1.0x) | kmcld median us | echo median "
              "us | ratio (<= 1.2x) | kmcld p99 us | echo p99 us | kmcld batched pkt/s | echo "
              "batched pkt/s | ratio (>= 5x) | kmcld batched/unbatched |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (Row& r : rows) {
    std::string gain = "-";
    if (r.kmcld_batched.done && r.kmcld_unbatched.done && r.kmcld_unbatched.rate > 0) {
      gain = absl::StrFormat("%.1fx", r.kmcld_batched.rate / r.kmcld_unbatched.rate);
    }
    std::printf("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
                PayloadName(r.payload).c_str(), Fig(r.kmcld_unbatched, &Cell::rate, true).c_str(),
                Fig(r.echo_unbatched, &Cell::rate, true).c_str(),
                Ratio(r.kmcld_unbatched, r.echo_unbatched, &Cell::rate, 1.0, true).c_str(),
                Fig(r.kmcld_unbatched, &Cell::median_us, false).c_str(),
                Fig(r.echo_unbatched, &Cell::median_us, false).c_str(),
                Ratio(r.kmcld_unbatched, r.echo_unbatched, &Cell::median_us, 1.2, false).c_str(),
                Fig(r.kmcld_unbatched, &Cell::p99_us, false).c_str(),
                Fig(r.echo_unbatched, &Cell::p99_us, false).c_str(),
                Fig(r.kmcld_batched, &Cell::rate, true).c_str(),
                Fig(r.echo_batched, &Cell::rate, true).c_str(),
                Ratio(r.kmcld_batched, r.echo_batched, &Cell::rate, 5.0, true).c_str(),
                gain.c_str());
  }
  std::printf("\nRT = round trip (kmcld: guest tool -> kmcld -> host tool -> kmcld -> guest "
              "tool;\necho: client -> server -> client). Ratios are kmcld/echo.\n");
  std::fflush(stdout);

  echo_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  host_client->reset();
  guest_client->reset();
  if (child) child->Stop(absl::Seconds(10));

  const int idle = absl::GetFlag(FLAGS_idle_channels);
  if (idle > 0) {
    if (binary.empty()) {
      std::printf("\nmemory: skipped (--target given; the figures need a kmcld child)\n");
    } else if (!kmcld_usable) {
      std::printf("\nmemory: skipped (kmcld answers UNIMPLEMENTED)\n");
    } else if (!budget.Left()) {
      std::printf("\nmemory: skipped (--max_seconds used up)\n");
    } else {
      if (!MemoryPhase(binary, idle, partition, absl::GetFlag(FLAGS_mmio_megabytes),
                       absl::GetFlag(FLAGS_streams_per_connection))) {
        errors.push_back("memory: see above");
      }
    }
  }

  std::printf("\nkmcld_bench: done in %.1f s\n", absl::ToDoubleSeconds(absl::Now() - begin));
  if (!errors.empty()) {
    std::printf("\nerrors:\n");
    for (const std::string& e : errors) std::printf("  %s\n", e.c_str());
    if (child) {
      std::string out = child->output();
      if (out.size() > 4000) out = out.substr(out.size() - 4000);
      std::printf("\nkmcld stderr (tail):\n%s\n", out.c_str());
    }
    return 1;
  }
  return 0;
}
