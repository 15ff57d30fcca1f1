// tests/traffic.h: known traffic on one channel of a real kmcld, for the
// tests that check what kmcld reports about it (/metrics, Prometheus,
// kmclctl top): an echo-typed channel offered with a chosen friendly name
// and opened, then `packets` transactions from the guest to the host, each
// delivered, completed by the host and its completion read by the guest.
//
// Thread-compatible.
#ifndef KMCLD_TESTS_TRAFFIC_H_
#define KMCLD_TESTS_TRAFFIC_H_

#include <string>

#include "absl/status/statusor.h"
#include "tests/bridge_fixture.h"

namespace kmcld::testing {

struct TrafficChannel {
  kmcl::v1::ChannelRef ref;
  uint64_t payload_bytes_each = 0;  // as delivered (padded to 8)
};

// Offers (start = true) and opens a channel of `type` named `friendly_name`.
absl::StatusOr<TrafficChannel> OfferAndOpen(Kmcld& k, const std::string& friendly_name,
                                            const std::string& type = kEchoType);

// `packets` guest-to-host transactions of `payload` bytes (a multiple of 8),
// each completed by the host; returns when the guest has every completion.
absl::Status RunTransactions(Kmcld& k, const TrafficChannel& channel, int packets,
                             const std::string& payload);

}  // namespace kmcld::testing

#endif  // KMCLD_TESTS_TRAFFIC_H_
