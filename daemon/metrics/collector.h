// daemon/metrics/collector.h: everything kmcld exposes on /metrics, gathered
// at scrape time into one Prometheus text exposition:
// - per channel endpoint (labels partition, channel, interface_type,
//   friendly_name, role), from the same DiagnoseChannels() the
//   DiagnosticsService answers with: packets, bytes, completions, signals,
//   ring-full events, quota stalls, corrupt packets, ring fill, outstanding
//   transactions, delivered-but-uncompleted packets, completion latency;
// - per partition: channels by state, guest memory, GPADLs, leases;
// - per daemon: RPCs (RpcMetrics), attached streams, the event log,
//   process memory, threads and CPU, build info.
// With channel_labels = false the channel series are summed per
// (partition, role), for fleets whose series count matters.
// docs/operations.md lists every metric.
//
//   MetricsCollector collector(services.registry(), services.leases(),
//                              services.event_log(), &services.rpc_metrics(), {});
//   std::string text = collector.Render();
//
// Thread-safe (each Render collects afresh; kmcl_core's locks are held
// only briefly per endpoint). The sources must outlive the collector.
#ifndef KMCLD_DAEMON_METRICS_COLLECTOR_H_
#define KMCLD_DAEMON_METRICS_COLLECTOR_H_

#include <functional>
#include <string>
#include <vector>

#include "daemon/event_log.h"
#include "daemon/leases.h"
#include "daemon/metrics/exposition.h"
#include "daemon/metrics/rpc_metrics.h"
#include "daemon/registry.h"

namespace kmcld::metrics {

struct CollectorOptions {
  bool channel_labels = true;  // false: per-partition sums instead of per-channel series
};

class MetricsCollector {
 public:
  // `rpcs` may be null (no RPC metrics).
  MetricsCollector(const Registry& registry, const LeaseTable& leases, const EventLog& events,
                   const RpcMetrics* rpcs, CollectorOptions options)
      : registry_(registry), leases_(leases), events_(events), rpcs_(rpcs), options_(options) {}

  // Another source of families (e.g. CollectDeviceMetrics), run at every
  // collection after kmcld's own. Call before the first Collect/Render.
  void AddSource(std::function<void(Exposition&)> source) { sources_.push_back(std::move(source)); }

  void Collect(Exposition& out) const;
  std::string Render() const;

 private:
  const Registry& registry_;
  const LeaseTable& leases_;
  const EventLog& events_;
  const RpcMetrics* const rpcs_;
  const CollectorOptions options_;
  std::vector<std::function<void(Exposition&)>> sources_;
};

}  // namespace kmcld::metrics

#endif  // KMCLD_DAEMON_METRICS_COLLECTOR_H_
