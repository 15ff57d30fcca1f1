#include "daemon/diagnostics.h"

#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/time/clock.h"
#include "daemon/convert.h"
#include "kmcl_core/runtime/channel.h"

namespace kmcld {

namespace {

// The kmcl_core channels of the endpoints kmcld holds for tools.
absl::flat_hash_set<const kmcl::BusEndpoint*> ToolEndpoints(PartitionEntry& p) {
  absl::flat_hash_set<const kmcl::BusEndpoint*> out;
  kmcl::MutexLock lock(&p.mu);
  for (const auto& [key, ep] : p.hosts) out.insert(&ep->channel());
  for (const auto& ep : p.guests) out.insert(&ep->channel());
  return out;
}

// Snapshots of the partition's built-in endpoints: those attached to its
// VMBus that no tool's Endpoint wraps (kmcld's devices and their emulated
// guest, the --demo traffic). With `relid`, only that channel's.
struct BuiltinSnapshots {
  std::vector<kmcl::ChannelSnapshot> hosts, guests;
};

BuiltinSnapshots SnapshotBuiltins(PartitionEntry& p, std::optional<uint32_t> relid) {
  const absl::flat_hash_set<const kmcl::BusEndpoint*> tools = ToolEndpoints(p);
  std::vector<std::pair<const kmcl::BusEndpoint*, kmcl::EndpointRole>> seen;
  std::vector<kmcl::ChannelSnapshot> snapshots;
  // Under the partition's lock, which keeps each endpoint alive; a snapshot
  // takes only the endpoint's own locks, as the partition allows.
  p.partition().ForEachEndpoint([&](const kmcl::AttachedEndpoint& e) {
    if ((relid.has_value() && e.relid != *relid) || tools.contains(e.endpoint)) return;
    const auto* channel = dynamic_cast<const kmcl::Channel*>(e.endpoint);
    if (channel == nullptr) return;
    seen.emplace_back(e.endpoint, e.role);
    snapshots.push_back(channel->Snapshot());
  });
  // A tool's endpoint attached in between is the tool's, not a built-in.
  const absl::flat_hash_set<const kmcl::BusEndpoint*> tools_now = ToolEndpoints(p);
  BuiltinSnapshots out;
  for (size_t i = 0; i < seen.size(); ++i) {
    if (tools_now.contains(seen[i].first)) continue;
    (kmcl::IsHost(seen[i].second) ? out.hosts : out.guests).push_back(std::move(snapshots[i]));
  }
  return out;
}

// One endpoint from its one snapshot. `ep`: the tool's Endpoint, or null
// for a built-in endpoint.
void DiagnoseEndpoint(const kmcl::ChannelSnapshot& s, const Endpoint* ep, kmcl::v1::EndpointRole role,
                      kmcl::v1::EndpointDiagnostics* out) {
  *out->mutable_state() =
      ToProto(s, role, ep != nullptr && ep->rescinded(), ep != nullptr && ep->attached());
  out->mutable_state()->set_builtin(ep == nullptr);
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
  if (ep != nullptr) {
    out->set_held_deliveries(ep->held_deliveries());
    out->set_stream_state(ep->StreamState());
  }
}

// A channel with the snapshots of its built-in endpoints, if any.
struct Target {
  ResolvedChannel channel;
  const kmcl::ChannelSnapshot* builtin_host = nullptr;
  const kmcl::ChannelSnapshot* builtin_guest = nullptr;
};

// Every view of an endpoint (the Channel description, its diagnostics)
// reads the one snapshot taken here.
kmcl::v1::ChannelDiagnostics Diagnose(const Registry& registry, const Target& t, uint32_t gpadl_count,
                                      const std::vector<LeaseRecord>& leases) {
  const ResolvedChannel& c = t.channel;
  std::optional<kmcl::ChannelSnapshot> host_snapshot, guest_snapshot;
  if (c.host != nullptr) host_snapshot = c.host->channel().Snapshot();
  if (c.guest != nullptr) guest_snapshot = c.guest->channel().Snapshot();
  kmcl::v1::ChannelDiagnostics out;
  *out.mutable_channel() = registry.Describe(c, host_snapshot.has_value() ? &*host_snapshot : nullptr,
                                             guest_snapshot.has_value() ? &*guest_snapshot : nullptr);
  const kmcl::ChannelSnapshot* host = host_snapshot.has_value() ? &*host_snapshot : t.builtin_host;
  const kmcl::ChannelSnapshot* guest = guest_snapshot.has_value() ? &*guest_snapshot : t.builtin_guest;
  if (c.host == nullptr && t.builtin_host != nullptr && out.channel().offer().friendly_name().empty()) {
    out.mutable_channel()->mutable_offer()->set_friendly_name(t.builtin_host->friendly_name);
  }
  if (host != nullptr) DiagnoseEndpoint(*host, c.host.get(), kmcl::v1::ENDPOINT_ROLE_HOST, out.mutable_host());
  if (guest != nullptr) DiagnoseEndpoint(*guest, c.guest.get(), kmcl::v1::ENDPOINT_ROLE_GUEST, out.mutable_guest());
  out.set_gpadl_count(gpadl_count);
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

}  // namespace

kmcl::v1::ChannelDiagnostics DiagnoseChannel(const Registry& registry, const ResolvedChannel& c,
                                             const std::vector<LeaseRecord>& leases) {
  const BuiltinSnapshots builtins = SnapshotBuiltins(*c.partition, c.relid);
  Target t{c};
  for (const kmcl::ChannelSnapshot& s : builtins.hosts) {
    if (c.host == nullptr && s.offer_sequence == c.offer_sequence) t.builtin_host = &s;
  }
  if (c.guest == nullptr && !builtins.guests.empty()) t.builtin_guest = &builtins.guests.front();
  const auto gpadls = static_cast<uint32_t>(c.partition->partition().gpadls().ListForChannel(c.relid).size());
  return Diagnose(registry, t, gpadls, leases);
}

std::vector<kmcl::v1::ChannelDiagnostics> DiagnoseChannels(
    const Registry& registry, const LeaseTable& leases,
    const std::vector<std::shared_ptr<PartitionEntry>>& partitions) {
  const std::vector<LeaseRecord> all_leases = leases.List();
  std::vector<kmcl::v1::ChannelDiagnostics> out;
  for (const auto& p : partitions) {
    const BuiltinSnapshots builtins = SnapshotBuiltins(*p, std::nullopt);
    std::map<std::pair<uint32_t, uint64_t>, Target> targets;
    for (ResolvedChannel& c : registry.Channels(p)) {
      targets[{c.relid, c.offer_sequence}].channel = std::move(c);
    }
    auto target = [&](uint32_t relid, uint64_t offer_sequence) -> Target& {
      Target& t = targets[{relid, offer_sequence}];
      if (t.channel.partition == nullptr) t.channel = {.partition = p, .relid = relid, .offer_sequence = offer_sequence};
      return t;
    };
    for (const kmcl::ChannelSnapshot& s : builtins.hosts) {
      Target& t = target(s.relid, s.offer_sequence);
      if (t.channel.host == nullptr) t.builtin_host = &s;
    }
    for (const kmcl::ChannelSnapshot& s : builtins.guests) {
      // The newest incarnation of the relid, as Registry::Channels does.
      auto next = targets.upper_bound({s.relid, std::numeric_limits<uint64_t>::max()});
      Target& t = next != targets.begin() && std::prev(next)->first.first == s.relid
                      ? std::prev(next)->second
                      : target(s.relid, s.offer_sequence);
      if (t.channel.guest == nullptr) t.builtin_guest = &s;
    }
    // GPADLs by channel, listed once.
    absl::flat_hash_map<uint32_t, uint32_t> gpadls;
    for (const kmcl::GpadlInfo& g : p->partition().gpadls().List()) ++gpadls[g.channel_id];
    for (const auto& [key, t] : targets) {
      out.push_back(Diagnose(registry, t, gpadls[key.first], all_leases));
    }
  }
  return out;
}

}  // namespace kmcld
