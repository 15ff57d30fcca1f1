#include "daemon/metrics/exposition.h"

#include <charconv>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace kmcld::metrics {

namespace {

const char* TypeName(MetricType t) {
  switch (t) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

// {a="x",b="y"} with an extra label appended (le for buckets), or "" for none.
std::string LabelText(const Labels& labels, absl::string_view extra_name = "",
                      absl::string_view extra_value = "") {
  if (labels.empty() && extra_name.empty()) return "";
  std::string out = "{";
  for (const auto& [k, v] : labels) {
    if (out.size() > 1) out += ',';
    absl::StrAppend(&out, k, "=\"", EscapeLabelValue(v), "\"");
  }
  if (!extra_name.empty()) {
    if (out.size() > 1) out += ',';
    absl::StrAppend(&out, extra_name, "=\"", extra_value, "\"");
  }
  out += '}';
  return out;
}

// Backslash and newline always; the double quote in label values only.
std::string Escape(absl::string_view text, bool quotes) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quotes) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

std::string EscapeLabelValue(absl::string_view value) { return Escape(value, /*quotes=*/true); }

std::string EscapeHelp(absl::string_view help) { return Escape(help, /*quotes=*/false); }

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 9.007199254740992e15) {
    return absl::StrCat(static_cast<int64_t>(v));
  }
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);  // shortest that reads back exactly
  return std::string(buf, r.ptr);
}

void MetricFamily::Add(const Labels& labels, double value) { series_[labels].value += value; }

void MetricFamily::AddHistogram(const Labels& labels, std::span<const double> bounds,
                                std::span<const uint64_t> counts, double sum) {
  Series& s = series_[labels];
  if (s.counts.empty()) {
    s.bounds.assign(bounds.begin(), bounds.end());
    s.counts.assign(bounds.size() + 1, 0);
  }
  for (size_t i = 0; i < counts.size() && i < s.counts.size(); ++i) s.counts[i] += counts[i];
  s.sum += sum;
}

void MetricFamily::Render(std::string* out) const {
  absl::StrAppend(out, "# HELP ", name_, " ", EscapeHelp(help_), "\n");
  absl::StrAppend(out, "# TYPE ", name_, " ", TypeName(type_), "\n");
  for (const auto& [labels, s] : series_) {
    if (type_ != MetricType::kHistogram) {
      absl::StrAppend(out, name_, LabelText(labels), " ", FormatValue(s.value), "\n");
      continue;
    }
    uint64_t cumulative = 0;
    for (size_t i = 0; i < s.counts.size(); ++i) {
      cumulative += s.counts[i];
      const std::string le = i < s.bounds.size() ? FormatValue(s.bounds[i]) : "+Inf";
      absl::StrAppend(out, name_, "_bucket", LabelText(labels, "le", le), " ", cumulative, "\n");
    }
    absl::StrAppend(out, name_, "_sum", LabelText(labels), " ", FormatValue(s.sum), "\n");
    absl::StrAppend(out, name_, "_count", LabelText(labels), " ", cumulative, "\n");
  }
}

MetricFamily& Exposition::Family(const std::string& name, MetricType type, const std::string& help) {
  auto& f = families_[name];
  if (f == nullptr) f = std::make_unique<MetricFamily>(name, type, help);
  return *f;
}

std::string Exposition::Render() const {
  std::string out;
  for (const auto& [name, f] : families_) f->Render(&out);
  return out;
}

}  // namespace kmcld::metrics
