// daemon/metrics/exposition.h: builds one Prometheus text exposition
// (format 0.0.4): metric families with HELP and TYPE, samples with escaped
// labels, histograms as cumulative _bucket/_sum/_count series.
//
//   Exposition e;
//   auto& sent = e.Family("kmcld_channel_packets_sent_total", MetricType::kCounter,
//                         "Packets the endpoint wrote to its outgoing ring.");
//   sent.Add({{"partition", "default"}, {"channel", "3"}}, 42);
//   std::string text = e.Render();
//
// Adding to the same label set twice sums (counters, gauges and histograms
// alike): that is how per-channel series aggregate per partition. The
// output is stable: families in name order, series in label order (labels
// keep the order they were given in), histogram buckets by bound.
//
// Thread-compatible: one thread builds and renders an Exposition.
#ifndef KMCLD_DAEMON_METRICS_EXPOSITION_H_
#define KMCLD_DAEMON_METRICS_EXPOSITION_H_

#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace kmcld::metrics {

enum class MetricType { kCounter, kGauge, kHistogram };

// (name, value) pairs; names must match [a-zA-Z_][a-zA-Z0-9_]*.
using Labels = std::vector<std::pair<std::string, std::string>>;

// Escapes a label value: backslash, double quote and newline.
std::string EscapeLabelValue(absl::string_view value);
// Escapes HELP text: backslash and newline.
std::string EscapeHelp(absl::string_view help);
// A sample value: integers exactly, +Inf/-Inf/NaN by name, else the
// shortest decimal that reads back as the same double.
std::string FormatValue(double value);

class MetricFamily {
 public:
  MetricFamily(std::string name, MetricType type, std::string help)
      : name_(std::move(name)), type_(type), help_(std::move(help)) {}
  // A counter or gauge sample (summed with an earlier one of the same labels).
  void Add(const Labels& labels, double value);
  // A histogram sample: `bounds` ascending (seconds), `counts` per bucket,
  // not cumulative, with one more entry than bounds (above every bound).
  // Bounds must be the same for every sample of the family.
  void AddHistogram(const Labels& labels, std::span<const double> bounds,
                    std::span<const uint64_t> counts, double sum);
  void Render(std::string* out) const;
  const std::string& name() const { return name_; }

 private:
  struct Series {
    double value = 0;
    std::vector<double> bounds;
    std::vector<uint64_t> counts;
    double sum = 0;
  };
  std::string name_;
  MetricType type_;
  std::string help_;
  std::map<Labels, Series> series_;
};

class Exposition {
 public:
  // The family `name`, created on first use (type and help from then).
  MetricFamily& Family(const std::string& name, MetricType type, const std::string& help);
  // Every family, in name order.
  std::string Render() const;

 private:
  std::map<std::string, std::unique_ptr<MetricFamily>> families_;
};

}  // namespace kmcld::metrics

#endif  // KMCLD_DAEMON_METRICS_EXPOSITION_H_
