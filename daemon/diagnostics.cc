#include "daemon/diagnostics.h"

#include "absl/time/clock.h"
#include "daemon/convert.h"

namespace kmcld {

namespace {

void DiagnoseEndpoint(Endpoint& ep, kmcl::v1::EndpointDiagnostics* out) {
  kmcl::ChannelSnapshot s = ep.channel().Snapshot();
  *out->mutable_state() = ToProto(s, ep.role(), ep.rescinded(), ep.attached());
  if (s.outgoing.has_value()) ToProto(*s.outgoing, out->mutable_outgoing());
  if (s.incoming.has_value()) ToProto(*s.incoming, out->mutable_incoming());
  if (!s.corruption.empty()) out->mutable_incoming()->set_corruption(s.corruption);
  ToProto(s.stats, out->mutable_counters());
  ToProto(s.stats.completion_latency, out->mutable_completion_latency());
  out->set_queued_sends(s.queued_sends);
  out->set_delivered_uncompleted(s.delivered_uncompleted);
  out->set_transaction_quota(s.transaction_quota);
  out->set_interrupt_latency_100ns(s.interrupt_latency);
  out->set_outstanding_transactions(s.outstanding_transactions);
  for (const kmcl::OutstandingTransaction& t : s.outstanding) {
    kmcl::v1::OutstandingTransaction* o = out->add_outstanding();
    o->set_transaction_id(t.transaction_id);
    o->set_payload_bytes(t.payload_bytes);
    o->set_age_micros(static_cast<uint64_t>(absl::ToInt64Microseconds(t.age)));
  }
  out->set_held_deliveries(ep.held_deliveries());
  out->set_stream_state(ep.StreamState());
}

}  // namespace

kmcl::v1::ChannelDiagnostics DiagnoseChannel(const Registry& registry, const ResolvedChannel& c,
                                             const std::vector<LeaseRecord>& leases) {
  kmcl::v1::ChannelDiagnostics out;
  *out.mutable_channel() = registry.Describe(c);
  if (c.host != nullptr) DiagnoseEndpoint(*c.host, out.mutable_host());
  if (c.guest != nullptr) DiagnoseEndpoint(*c.guest, out.mutable_guest());
  out.set_gpadl_count(
      static_cast<uint32_t>(c.partition->partition().gpadls().ListForChannel(c.relid).size()));
  const absl::Time now = absl::Now();
  for (const LeaseRecord& l : leases) {
    if (l.partition.lock() != c.partition || l.relid != c.relid) continue;
    kmcl::v1::LeaseDiagnostics* d = out.add_leases();
    d->set_lease_id(l.lease_id);
    d->set_gpadl_id(l.gpadl_id);
    d->set_read_only(l.read_only);
    d->set_age_micros(absl::ToInt64Microseconds(now - l.last_used));
  }
  return out;
}

std::vector<kmcl::v1::ChannelDiagnostics> DiagnoseChannels(
    const Registry& registry, const LeaseTable& leases,
    const std::vector<std::shared_ptr<PartitionEntry>>& partitions) {
  const std::vector<LeaseRecord> all_leases = leases.List();
  std::vector<kmcl::v1::ChannelDiagnostics> out;
  for (const auto& p : partitions) {
    for (const ResolvedChannel& c : registry.Channels(p)) out.push_back(DiagnoseChannel(registry, c, all_leases));
  }
  return out;
}

}  // namespace kmcld
