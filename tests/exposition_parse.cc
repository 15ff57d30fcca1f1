#include "tests/exposition_parse.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "httplib.h"

namespace kmcld::testing {

namespace {

// The family a sample belongs to: histogram series drop their suffix.
std::string FamilyOf(const std::string& name, const std::map<std::string, std::string>& type) {
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    if (absl::EndsWith(name, suffix)) {
      std::string base = name.substr(0, name.size() - strlen(suffix));
      auto t = type.find(base);
      if (t != type.end() && t->second == "histogram") return base;
    }
  }
  return name;
}

}  // namespace

absl::StatusOr<ParsedExposition> ParseExposition(const std::string& text) {
  ParsedExposition out;
  int n = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    ++n;
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat("line ", n, " (", line, "): ", why));
    };
    if (absl::ConsumePrefix(&line, "# HELP ")) {
      std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits(' ', 1));
      if (out.help.contains(kv.first)) return bad("HELP twice");
      out.help[kv.first] = kv.second;
      out.family_order.push_back(kv.first);
      continue;
    }
    if (absl::ConsumePrefix(&line, "# TYPE ")) {
      std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits(' ', 1));
      if (out.type.contains(kv.first)) return bad("TYPE twice");
      if (!out.help.contains(kv.first)) return bad("TYPE before HELP");
      out.type[kv.first] = kv.second;
      continue;
    }
    if (absl::StartsWith(line, "#")) continue;
    const size_t space = line.rfind(' ');
    if (space == absl::string_view::npos) return bad("no value");
    const std::string series(line.substr(0, space));
    double value = 0;
    absl::string_view v = line.substr(space + 1);
    if (v == "+Inf") {
      value = HUGE_VAL;
    } else if (!absl::SimpleAtod(v, &value)) {
      return bad("value is not a number");
    }
    const std::string name = series.substr(0, series.find('{'));
    const std::string family = FamilyOf(name, out.type);
    if (!out.help.contains(family) || !out.type.contains(family)) return bad("no HELP/TYPE before it");
    if (out.family_order.empty() || out.family_order.back() != family) return bad("family not contiguous");
    if (out.samples.contains(series)) return bad("series twice");
    out.samples[series] = value;
    out.series_order.push_back(series);
  }
  return out;
}

absl::StatusOr<std::string> Scrape(const std::string& address) {
  httplib::Client client(absl::StrCat("http://", address));
  client.set_read_timeout(30, 0);
  auto res = client.Get("/metrics");
  if (!res) return absl::UnavailableError(absl::StrCat("GET /metrics: ", httplib::to_string(res.error())));
  if (res->status != 200) return absl::UnavailableError(absl::StrCat("GET /metrics: HTTP ", res->status));
  return res->body;
}

}  // namespace kmcld::testing
