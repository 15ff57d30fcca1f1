// daemon/diagnostics.h: the one place kmcld gathers what it knows about a
// channel from kmcl_core (both endpoints' snapshots: states, ring control
// words and fill, counters, the completion-latency histogram; GPADLs; host
// leases) into kmcl.v1.ChannelDiagnostics. DiagnosticsService answers with
// it and the metrics exporter (daemon/metrics/) renders it, so the RPC and
// /metrics never disagree.
//
// Endpoints: those kmcld holds for tools, and the built-in ones that kmcld
// runs itself (its devices and their emulated guest, the --demo traffic:
// every endpoint attached to the partition that no tool's Endpoint wraps),
// marked EndpointState.builtin. Each endpoint is snapshotted once per call
// (Channel::Snapshot), and that snapshot feeds every field.
//
//   auto channels = DiagnoseChannels(registry, leases, *registry.PartitionsFor(""));
//
// Thread-safe; never blocks (snapshots take kmcl_core's locks briefly; the
// built-in endpoints' under their partition's lock).
#ifndef KMCLD_DAEMON_DIAGNOSTICS_H_
#define KMCLD_DAEMON_DIAGNOSTICS_H_

#include <memory>
#include <vector>

#include "daemon/leases.h"
#include "daemon/registry.h"
#include "proto/diagnostics.pb.h"

namespace kmcld {

// One channel. `leases`: LeaseTable::List(), taken once per call.
kmcl::v1::ChannelDiagnostics DiagnoseChannel(const Registry& registry, const ResolvedChannel& channel,
                                             const std::vector<LeaseRecord>& leases);

// Every channel of `partitions` (Registry::Channels order, partitions in
// the given order).
std::vector<kmcl::v1::ChannelDiagnostics> DiagnoseChannels(
    const Registry& registry, const LeaseTable& leases,
    const std::vector<std::shared_ptr<PartitionEntry>>& partitions);

}  // namespace kmcld

#endif  // KMCLD_DAEMON_DIAGNOSTICS_H_
