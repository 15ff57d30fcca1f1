// clients/cpp/kmclctl/top_model.h: what kmclctl top shows, computed from
// two rounds of ListChannelDiagnostics across the targets: one row per
// channel with its rates over the window between the rounds, sorted, and
// the frame as text (the same text --once prints and the ncurses view
// draws).
//
//   std::vector<TopRow> rows = TopRows(before, after, TopSort::kTraffic);
//   std::string frame = TopFrame(rows, errors, TopSort::kTraffic, window);
//
// Thread-safe: free functions.
#ifndef KMCLD_CLIENTS_CPP_KMCLCTL_TOP_MODEL_H_
#define KMCLD_CLIENTS_CPP_KMCLCTL_TOP_MODEL_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/diagnostics.pb.h"

namespace kmclctl {

// One target's round.
struct TopSample {
  std::string target;
  absl::Time time;
  absl::StatusOr<std::vector<kmcl::v1::ChannelDiagnostics>> channels;
};

enum class TopSort { kTraffic, kRing, kOutstanding, kName };
// "traffic", "ring", "outstanding", "name"; nullopt-like INVALID_ARGUMENT otherwise.
absl::StatusOr<TopSort> ParseTopSort(const std::string& name);
const char* TopSortName(TopSort sort);
TopSort NextTopSort(TopSort sort);

struct TopRow {
  std::string target, partition, interface, state;
  uint32_t channel = 0;
  // Per second over the window. H2G: host to guest; G2H: guest to host.
  double h2g_packets = 0, h2g_bytes = 0, g2h_packets = 0, g2h_bytes = 0;
  double ring_fill = 0;  // the fullest ring of the channel, 0..1
  uint32_t outstanding = 0;  // transactions in flight, both endpoints
};

// Rows for every channel of `after` (a channel new since `before` counts
// from zero; targets that failed have none). `before` and `after` hold the
// same targets in the same order.
std::vector<TopRow> TopRows(const std::vector<TopSample>& before,
                            const std::vector<TopSample>& after, TopSort sort);

// "[###.......]30%": `width` cells.
std::string RingBar(double fill, int width = 10);

// The frame: a title line (channel count, window, sort, keys), the table,
// and one line per failed target ("<target>: <error>").
std::string TopFrame(const std::vector<TopRow>& rows, const std::vector<std::string>& errors,
                     TopSort sort, absl::Duration window);

}  // namespace kmclctl

#endif  // KMCLD_CLIENTS_CPP_KMCLCTL_TOP_MODEL_H_
