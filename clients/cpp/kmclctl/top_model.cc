#include "clients/cpp/kmclctl/top_model.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "clients/cpp/kmclctl/output.h"

namespace kmclctl {

namespace {

using kmcl::v1::ChannelDiagnostics;
using kmcl::v1::EndpointDiagnostics;

struct Totals {
  uint64_t h2g_packets = 0, h2g_bytes = 0, g2h_packets = 0, g2h_bytes = 0;
};

// Counted at the host endpoint when kmcld holds one, else at the guest's.
Totals TotalsOf(const ChannelDiagnostics& c) {
  Totals t;
  if (c.host().state().present()) {
    const auto& n = c.host().counters();
    t = {n.packets_sent(), n.bytes_sent(), n.packets_received(), n.bytes_received()};
  } else if (c.guest().state().present()) {
    const auto& n = c.guest().counters();
    t = {n.packets_received(), n.bytes_received(), n.packets_sent(), n.bytes_sent()};
  }
  return t;
}

double Fill(const kmcl::v1::RingDiagnostics& r) {
  return r.data_bytes() == 0 ? 0 : static_cast<double>(r.used_bytes()) / r.data_bytes();
}

std::string StateOf(const EndpointDiagnostics& e) {
  return e.state().present() ? EnumSuffix(kmcl::v1::ConnectionState_Name(e.state().connection()), "CONNECTION_STATE_")
                             : "-";
}

using Key = std::tuple<std::string, uint32_t, uint64_t>;
Key KeyOf(const ChannelDiagnostics& c) {
  const auto& ref = c.channel().offer().channel();
  return {ref.partition_id(), ref.channel_id(), ref.offer_sequence()};
}

std::string Rate(double v) { return absl::StrFormat("%.1f", v); }

}  // namespace

absl::StatusOr<TopSort> ParseTopSort(const std::string& name) {
  for (TopSort s : {TopSort::kTraffic, TopSort::kRing, TopSort::kOutstanding, TopSort::kName}) {
    if (name == TopSortName(s)) return s;
  }
  return absl::InvalidArgumentError(absl::StrCat("sort '", name, "': want traffic, ring, outstanding or name"));
}

const char* TopSortName(TopSort sort) {
  switch (sort) {
    case TopSort::kTraffic:
      return "traffic";
    case TopSort::kRing:
      return "ring";
    case TopSort::kOutstanding:
      return "outstanding";
    case TopSort::kName:
      return "name";
  }
  return "traffic";
}

TopSort NextTopSort(TopSort sort) {
  return static_cast<TopSort>((static_cast<int>(sort) + 1) % 4);
}

std::vector<TopRow> TopRows(const std::vector<TopSample>& before, const std::vector<TopSample>& after,
                            TopSort sort) {
  std::vector<TopRow> rows;
  for (size_t i = 0; i < after.size(); ++i) {
    const TopSample& b = before[i];
    const TopSample& a = after[i];
    if (!a.channels.ok()) continue;
    std::map<Key, Totals> earlier;
    if (b.channels.ok()) {
      for (const ChannelDiagnostics& c : *b.channels) earlier[KeyOf(c)] = TotalsOf(c);
    }
    const double seconds = std::max(absl::ToDoubleSeconds(a.time - b.time), 1e-3);
    for (const ChannelDiagnostics& c : *a.channels) {
      const Totals now = TotalsOf(c);
      const Totals then = earlier.contains(KeyOf(c)) ? earlier[KeyOf(c)] : Totals{};
      auto rate = [&](uint64_t n, uint64_t m) { return n >= m ? (n - m) / seconds : 0.0; };
      TopRow r;
      r.target = a.target;
      r.partition = c.channel().offer().channel().partition_id();
      r.channel = c.channel().offer().channel().channel_id();
      r.interface = c.channel().offer().friendly_name().empty() ? c.channel().offer().interface_type().value()
                                                                : c.channel().offer().friendly_name();
      r.state = absl::StrCat(StateOf(c.host()), "/", StateOf(c.guest()));
      r.h2g_packets = rate(now.h2g_packets, then.h2g_packets);
      r.h2g_bytes = rate(now.h2g_bytes, then.h2g_bytes);
      r.g2h_packets = rate(now.g2h_packets, then.g2h_packets);
      r.g2h_bytes = rate(now.g2h_bytes, then.g2h_bytes);
      for (const EndpointDiagnostics* e : {&c.host(), &c.guest()}) {
        r.ring_fill = std::max({r.ring_fill, Fill(e->outgoing()), Fill(e->incoming())});
        r.outstanding += e->outstanding_transactions();
      }
      rows.push_back(std::move(r));
    }
  }
  auto name = [](const TopRow& r) { return std::tie(r.target, r.partition, r.channel); };
  std::stable_sort(rows.begin(), rows.end(), [&](const TopRow& x, const TopRow& y) {
    switch (sort) {
      case TopSort::kTraffic: {
        const double tx = x.h2g_bytes + x.g2h_bytes, ty = y.h2g_bytes + y.g2h_bytes;
        if (tx != ty) return tx > ty;
        break;
      }
      case TopSort::kRing:
        if (x.ring_fill != y.ring_fill) return x.ring_fill > y.ring_fill;
        break;
      case TopSort::kOutstanding:
        if (x.outstanding != y.outstanding) return x.outstanding > y.outstanding;
        break;
      case TopSort::kName:
        break;
    }
    return name(x) < name(y);
  });
  return rows;
}

std::string RingBar(double fill, int width) {
  fill = std::clamp(fill, 0.0, 1.0);
  const int full = static_cast<int>(fill * width + 0.5);
  return absl::StrCat("[", std::string(full, '#'), std::string(width - full, '.'), "]",
                      static_cast<int>(fill * 100 + 0.5), "%");
}

std::string TopFrame(const std::vector<TopRow>& rows, const std::vector<std::string>& errors, TopSort sort,
                     absl::Duration window) {
  Table t;
  t.columns = {{"TARGET"},    {"PARTITION"}, {"CHANNEL"}, {"INTERFACE"}, {"STATE"},
               {"H2G_PKT/S"}, {"H2G_B/S"},   {"G2H_PKT/S"}, {"G2H_B/S"}, {"RING"},
               {"OUTSTANDING"}};
  for (const TopRow& r : rows) {
    t.Add({r.target, r.partition, absl::StrCat(r.channel), r.interface, r.state, Rate(r.h2g_packets),
           Rate(r.h2g_bytes), Rate(r.g2h_packets), Rate(r.g2h_bytes), RingBar(r.ring_fill),
           absl::StrCat(r.outstanding)});
  }
  std::string out = absl::StrFormat(
      "kmclctl top: %d channels, rates over %.2f s, sorted by %s (keys: s sort, t traffic, r ring, "
      "o outstanding, n name, q quit)\n",
      rows.size(), absl::ToDoubleSeconds(window), TopSortName(sort));
  out += RenderTable({&t}, {}, /*wide=*/false);
  for (const std::string& e : errors) absl::StrAppend(&out, e, "\n");
  return out;
}

}  // namespace kmclctl
