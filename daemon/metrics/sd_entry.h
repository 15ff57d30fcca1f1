// daemon/metrics/sd_entry.h: kmcld's own entry in a Prometheus file_sd
// inventory, the same file kmclctl reads with --targets-file, so an operator
// keeps one inventory for both (docs/operations.md):
//
//   [{"targets": ["host1:50551"],
//     "labels": {"__kmcld_metrics_address": "host1:9464"}}]
//
// The target is kmcld's gRPC address (what kmclctl dials); the label, when
// the metrics listener is on, is where Prometheus scrapes (a relabel rule
// moves it to __address__; labels starting with "__" do not reach the
// stored series). A wildcard host (0.0.0.0, [::], empty) becomes this
// machine's host name.
//
// Thread-safe: free functions.
#ifndef KMCLD_DAEMON_METRICS_SD_ENTRY_H_
#define KMCLD_DAEMON_METRICS_SD_ENTRY_H_

#include <string>

namespace kmcld::metrics {

inline constexpr char kMetricsAddressLabel[] = "__kmcld_metrics_address";

// `grpc_target`: "host:port" or "unix:/path"; `metrics_address`: "host:port"
// or empty (no label). Returns the JSON document (one group), one line.
std::string SdEntryJson(const std::string& grpc_target, const std::string& metrics_address);

// "0.0.0.0:50551" -> "myhost:50551"; other addresses unchanged.
std::string Reachable(const std::string& address);

}  // namespace kmcld::metrics

#endif  // KMCLD_DAEMON_METRICS_SD_ENTRY_H_
