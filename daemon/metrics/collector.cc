#include "daemon/metrics/collector.h"

#include <unistd.h>

#include <cctype>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "daemon/diagnostics.h"
#include "google/protobuf/stubs/common.h"
#include "grpcpp/grpcpp.h"
#include "tools/build_info.h"

namespace kmcld::metrics {

namespace {

using kmcl::v1::ChannelDiagnostics;
using kmcl::v1::EndpointDiagnostics;

// "CONNECTION_STATE_OPENED" -> "opened".
std::string StateName(kmcl::v1::ConnectionState s) {
  std::string name = kmcl::v1::ConnectionState_Name(s);
  absl::string_view v = name;
  absl::ConsumePrefix(&v, "CONNECTION_STATE_");
  return absl::AsciiStrToLower(v);
}

// One endpoint's series, all families at once.
class ChannelFamilies {
 public:
  explicit ChannelFamilies(Exposition& e)
      : packets_sent_(C(e, "packets_sent_total", "Packets the endpoint wrote to its outgoing ring.")),
        bytes_sent_(C(e, "bytes_sent_total", "Payload bytes of the packets sent.")),
        packets_received_(C(e, "packets_received_total", "Packets the endpoint read from its incoming ring (completions excluded).")),
        bytes_received_(C(e, "bytes_received_total", "Payload bytes of the packets received.")),
        completions_sent_(C(e, "completions_sent_total", "Transaction completions the endpoint sent to its peer.")),
        completions_received_(C(e, "completions_received_total", "Transaction completions the endpoint received from its peer.")),
        signals_(C(e, "signals_sent_total", "Interrupts the endpoint signalled to its peer.")),
        sends_queued_(C(e, "sends_queued_total", "Sends parked because the ring was full or not yet open.")),
        ring_full_(C(e, "ring_full_events_total", "Times a send found the outgoing ring full.")),
        quota_stalls_(C(e, "quota_stalls_total", "Times reading stopped because the transaction quota was used up.")),
        corrupt_(C(e, "corrupt_packets_total", "Malformed packets or rings from the peer.")),
        ring_used_(G(e, "ring_used_bytes", "Bytes waiting in a ring (ring=outgoing|incoming).")),
        ring_size_(G(e, "ring_size_bytes", "Size of a ring's data area (ring=outgoing|incoming).")),
        outstanding_(G(e, "outstanding_transactions", "Sends waiting for the peer's completion.")),
        delivered_(G(e, "delivered_uncompleted", "Packets delivered to the endpoint's owner and not yet completed.")),
        queued_(G(e, "queued_sends", "Sends waiting for room in the outgoing ring.")),
        attached_(G(e, "attached", "1 while a tool's Attach stream is attached to the endpoint.")),
        latency_(e.Family("kmcld_channel_completion_latency_seconds", MetricType::kHistogram,
                          "Transaction latency: from the send to the peer's completion.")) {}

  void Add(const Labels& labels, const EndpointDiagnostics& d) {
    const kmcl::v1::EndpointCounters& c = d.counters();
    packets_sent_.Add(labels, c.packets_sent());
    bytes_sent_.Add(labels, c.bytes_sent());
    packets_received_.Add(labels, c.packets_received());
    bytes_received_.Add(labels, c.bytes_received());
    completions_sent_.Add(labels, c.completions_sent());
    completions_received_.Add(labels, c.completions_received());
    signals_.Add(labels, c.signals_sent());
    sends_queued_.Add(labels, c.sends_queued());
    ring_full_.Add(labels, c.ring_full_events());
    quota_stalls_.Add(labels, c.quota_stalls());
    corrupt_.Add(labels, c.corrupt_packets());
    for (const auto& [name, ring] : {std::pair{"outgoing", &d.outgoing()}, std::pair{"incoming", &d.incoming()}}) {
      Labels l = labels;
      l.emplace_back("ring", name);
      ring_used_.Add(l, ring->used_bytes());
      ring_size_.Add(l, ring->data_bytes());
    }
    outstanding_.Add(labels, d.outstanding_transactions());
    delivered_.Add(labels, d.delivered_uncompleted());
    queued_.Add(labels, d.queued_sends());
    attached_.Add(labels, d.state().attached() ? 1 : 0);
    const kmcl::v1::LatencyHistogram& h = d.completion_latency();
    latency_.AddHistogram(
        labels, std::span<const double>(h.upper_bounds_seconds().data(), h.upper_bounds_seconds().size()),
        std::span<const uint64_t>(h.bucket_counts().data(), h.bucket_counts().size()), h.sum_seconds());
  }

 private:
  static MetricFamily& C(Exposition& e, const char* name, const char* help) {
    return e.Family(absl::StrCat("kmcld_channel_", name), MetricType::kCounter, help);
  }
  static MetricFamily& G(Exposition& e, const char* name, const char* help) {
    return e.Family(absl::StrCat("kmcld_channel_", name), MetricType::kGauge, help);
  }
  MetricFamily &packets_sent_, &bytes_sent_, &packets_received_, &bytes_received_;
  MetricFamily &completions_sent_, &completions_received_, &signals_, &sends_queued_;
  MetricFamily &ring_full_, &quota_stalls_, &corrupt_, &ring_used_, &ring_size_;
  MetricFamily &outstanding_, &delivered_, &queued_, &attached_, &latency_;
};

// /proc/self: resident and virtual memory, threads, CPU time, start time.
void CollectProcess(Exposition& out) {
  const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  std::ifstream statm("/proc/self/statm");
  double size_pages = 0, resident_pages = 0;
  if (statm >> size_pages >> resident_pages) {
    out.Family("kmcld_process_resident_memory_bytes", MetricType::kGauge,
               "Resident memory of the kmcld process.")
        .Add({}, resident_pages * page);
    out.Family("kmcld_process_virtual_memory_bytes", MetricType::kGauge,
               "Virtual memory of the kmcld process (guest memory is mapped, not resident).")
        .Add({}, size_pages * page);
  }
  std::ifstream stat_file("/proc/self/stat");
  std::stringstream buffer;
  buffer << stat_file.rdbuf();
  const std::string stat = buffer.str();
  // Fields after the command name, which is in parentheses and may hold spaces.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return;
  std::vector<absl::string_view> f = absl::StrSplit(absl::string_view(stat).substr(close + 2), ' ');
  // f[0] is field 3 (state): utime 14, stime 15, num_threads 20, starttime 22.
  double utime = 0, stime = 0, threads = 0, start = 0;
  if (f.size() < 20 || !absl::SimpleAtod(f[11], &utime) || !absl::SimpleAtod(f[12], &stime) ||
      !absl::SimpleAtod(f[17], &threads) || !absl::SimpleAtod(f[19], &start)) {
    return;
  }
  out.Family("kmcld_process_threads", MetricType::kGauge, "Threads of the kmcld process.").Add({}, threads);
  out.Family("kmcld_process_cpu_seconds_total", MetricType::kCounter,
             "User and system CPU time of the kmcld process.")
      .Add({}, (utime + stime) / ticks);
  std::ifstream uptime_file("/proc/uptime");
  double uptime = 0;
  if (uptime_file >> uptime) {
    out.Family("kmcld_process_start_time_seconds", MetricType::kGauge,
               "When kmcld started, seconds since the Unix epoch.")
        .Add({}, static_cast<double>(::time(nullptr)) - uptime + start / ticks);
  }
}

}  // namespace

void MetricsCollector::Collect(Exposition& out) const {
  std::vector<std::shared_ptr<PartitionEntry>> partitions = registry_.ListPartitions();
  const std::vector<ChannelDiagnostics> channels = DiagnoseChannels(registry_, leases_, partitions);

  ChannelFamilies families(out);
  MetricFamily& by_state = out.Family("kmcld_partition_channels", MetricType::kGauge,
                                      "Channel endpoints kmcld holds, by role and connection state.");
  uint64_t attached = 0;
  for (const ChannelDiagnostics& c : channels) {
    const kmcl::v1::Offer& offer = c.channel().offer();
    const std::string& partition = offer.channel().partition_id();
    for (const auto& [role, d] : {std::pair{"host", &c.host()}, std::pair{"guest", &c.guest()}}) {
      if (!d->state().present()) continue;
      by_state.Add({{"partition", partition}, {"role", role}, {"state", StateName(d->state().connection())}}, 1);
      if (d->state().attached()) ++attached;
      Labels labels = {{"partition", partition}};
      if (options_.channel_labels) {
        labels.emplace_back("channel", absl::StrCat(offer.channel().channel_id()));
        labels.emplace_back("interface_type", offer.interface_type().value());
        labels.emplace_back("friendly_name", offer.friendly_name());
      }
      labels.emplace_back("role", role);
      families.Add(labels, *d);
    }
  }

  MetricFamily& memory = out.Family("kmcld_partition_guest_memory_bytes", MetricType::kGauge,
                                    "Size of the partition's emulated guest memory.");
  MetricFamily& touched = out.Family("kmcld_partition_guest_memory_touched_bytes", MetricType::kGauge,
                                     "Guest memory backed by host memory (touched since last freed).");
  MetricFamily& allocated = out.Family("kmcld_partition_guest_memory_allocated_bytes", MetricType::kGauge,
                                       "Guest memory allocated to rings and guest buffers.");
  MetricFamily& gpadls = out.Family("kmcld_partition_gpadls", MetricType::kGauge,
                                    "GPADLs the partition's guest has created.");
  MetricFamily& leases = out.Family("kmcld_partition_leases", MetricType::kGauge,
                                    "GPADL leases kmcld holds for remote host tools.");
  for (const auto& p : partitions) {
    const Labels l = {{"partition", p->id()}};
    const kmcl::GuestMemory& m = p->partition().memory();
    memory.Add(l, static_cast<double>(m.size_bytes()));
    touched.Add(l, static_cast<double>(m.resident_bytes()));
    allocated.Add(l, static_cast<double>((m.page_count() - m.free_page_count()) * 4096));
    gpadls.Add(l, static_cast<double>(p->partition().gpadls().List().size()));
    leases.Add(l, 0);  // every partition has a series, leases or not
  }
  for (const LeaseRecord& r : leases_.List()) {
    if (auto p = r.partition.lock(); p != nullptr) leases.Add({{"partition", p->id()}}, 1);
  }
  out.Family("kmcld_partitions", MetricType::kGauge, "Partitions kmcld hosts.")
      .Add({}, static_cast<double>(partitions.size()));

  out.Family("kmcld_attached_streams", MetricType::kGauge,
             "Endpoints with a tool's Attach stream attached.")
      .Add({}, static_cast<double>(attached));
  const uint64_t last = events_.last_sequence(), oldest = events_.oldest_sequence();
  out.Family("kmcld_events_total", MetricType::kCounter, "Events appended to kmcld's event log.")
      .Add({}, static_cast<double>(last));
  out.Family("kmcld_event_log_events", MetricType::kGauge,
             "Events the log retains for WatchEvents resumption.")
      .Add({}, oldest == 0 ? 0 : static_cast<double>(last - oldest + 1));
  if (rpcs_ != nullptr) rpcs_->Collect(out);
  for (const auto& source : sources_) source(out);
  CollectProcess(out);
  out.Family("kmcld_build_info", MetricType::kGauge,
             "Always 1; the labels say what kmcld was built with.")
      .Add({{"version", std::string(kmcl::build::Version())},
            {"commit", std::string(kmcl::build::GitCommit())},
            {"grpc", grpc::Version()},
            {"protobuf", google::protobuf::internal::VersionString(GOOGLE_PROTOBUF_VERSION)},
            {"compiler", __VERSION__}},
           1);
}

std::string MetricsCollector::Render() const {
  Exposition e;
  Collect(e);
  return e.Render();
}

}  // namespace kmcld::metrics
