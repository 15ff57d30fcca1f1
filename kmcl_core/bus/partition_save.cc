// Saving and restoring a whole partition (docs/saved-state.md).
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kmcl_core/base/status_macros.h"
#include "kmcl_core/bus/partition.h"
#include "kmcl_core/control/saved_convert.h"
#include "kmcl_core/saved/saved_blob.h"

namespace kmcl {

namespace pb = saved::v1;

absl::StatusOr<std::string> Partition::Save() const {
  pb::SavedPartition out;
  out.set_id(options_.id);
  out.set_memory_bytes(options_.memory_bytes);
  for (uint8_t vtl : options_.client_vtls) out.add_client_vtls(vtl);
  out.set_max_version(options_.max_version);
  out.set_mmio_base(options_.mmio_base);
  out.set_mmio_size(options_.mmio_size);
  MutexLock lock(&mu_);
  out.set_mmio_next(mmio_next_);
  for (const auto& [relid, range] : mmio_) {
    pb::MmioRange& r = (*out.mutable_channel_mmio())[relid];
    r.set_base(range.first);
    r.set_size(range.second);
  }
  static const std::string kZeroPage(wire::kPageSize, '\0');
  std::string page(wire::kPageSize, '\0');
  for (uint64_t pfn : memory_->AllocatedPages()) {
    out.add_allocated_pfns(pfn);
    if (!memory_->Read(pfn * wire::kPageSize,
                       {reinterpret_cast<uint8_t*>(page.data()), page.size()}).ok()) {
      return absl::InternalError("cannot read guest memory");
    }
    if (page == kZeroPage) continue;
    pb::MemoryPage* p = out.add_pages();
    p->set_pfn(pfn);
    p->set_data(page);
  }
  for (const GpadlInfo& g : gpadls_.List()) {
    pb::Gpadl* p = out.add_gpadls();
    p->set_gpadl_id(g.gpadl_id);
    p->set_channel_id(g.channel_id);
    saved_convert::RangesTo(g.ranges, p->mutable_ranges());
    p->set_read_only(g.read_only);
    p->set_teardown_pending(g.state == GpadlState::kTearingDown);
  }
  out.set_next_gpadl_id(gpadls_.next_id());
  server_.Save(out);
  for (const auto& [vtl, client] : clients_) client.Save(*out.add_clients());
  return SealBlob(pb::SavedBlob::KIND_PARTITION, out.SerializeAsString());
}

absl::StatusOr<std::unique_ptr<Partition>> Partition::Restore(const std::string& blob,
                                                              const std::string& id) {
  // In place: a partition's body is most of the blob (its guest pages).
  absl::StatusOr<absl::string_view> body = OpenBlobInPlace(blob, pb::SavedBlob::KIND_PARTITION);
  if (!body.ok()) return body.status();
  pb::SavedPartition in;
  if (!in.ParseFromArray(body->data(), static_cast<int>(body->size()))) {
    return absl::InvalidArgumentError("saved partition is corrupt");
  }
  PartitionOptions o;
  o.id = id.empty() ? in.id() : id;
  o.memory_bytes = in.memory_bytes();
  o.client_vtls.clear();
  for (uint32_t vtl : in.client_vtls()) {
    if (vtl > 2) return absl::InvalidArgumentError(absl::StrCat("saved VTL ", vtl));
    o.client_vtls.insert(static_cast<uint8_t>(vtl));
  }
  if (o.client_vtls.empty()) return absl::InvalidArgumentError("saved partition has no client VTL");
  o.max_version = in.max_version();
  o.mmio_base = in.mmio_base();
  o.mmio_size = in.mmio_size();
  if (in.mmio_next() > o.mmio_size) return absl::InvalidArgumentError("saved MMIO use beyond the window");
  auto memory = GuestMemory::Create(o.memory_bytes);
  if (!memory.ok()) return memory.status();
  auto p = std::unique_ptr<Partition>(new Partition(std::move(o), *std::move(memory)));
  std::vector<uint64_t> allocated(in.allocated_pfns().begin(), in.allocated_pfns().end());
  if (absl::Status s = p->memory_->ClaimPages(allocated); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("saved guest pages: ", s.message()));
  }
  std::vector<uint64_t> page_pfns;
  std::vector<const uint8_t*> page_data;
  page_pfns.reserve(in.pages_size());
  page_data.reserve(in.pages_size());
  for (const pb::MemoryPage& page : in.pages()) {
    if (page.data().size() != wire::kPageSize || !p->memory_->IsAllocated(page.pfn())) {
      return absl::InvalidArgumentError(absl::StrCat("saved page ", page.pfn(), " is malformed"));
    }
    page_pfns.push_back(page.pfn());
    page_data.push_back(reinterpret_cast<const uint8_t*>(page.data().data()));
  }
  RETURN_IF_ERROR(p->memory_->WritePages(page_pfns, page_data));
  std::vector<uint32_t> pending_teardowns;
  for (const pb::Gpadl& g : in.gpadls()) {
    absl::Status s = p->gpadls_.Create(g.gpadl_id(), g.channel_id(),
                                       saved_convert::RangesFrom(g.ranges()), g.read_only());
    if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("saved GPADL: ", s.message()));
    if (g.teardown_pending()) pending_teardowns.push_back(g.gpadl_id());
  }
  p->gpadls_.set_next_id(in.next_gpadl_id());
  MutexLock lock(&p->mu_);
  if (absl::Status s = p->server_.Restore(in); !s.ok()) return s;
  for (const pb::Client& c : in.clients()) {
    auto it = p->clients_.find(static_cast<uint8_t>(c.vtl()));
    if (c.vtl() > 2 || it == p->clients_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("saved guest client at VTL ", c.vtl()));
    }
    if (absl::Status s = it->second.Restore(c); !s.ok()) return s;
  }
  if (absl::Status s = p->CheckRestoredReferencesLocked(); !s.ok()) return s;
  p->mmio_next_ = in.mmio_next();
  for (const auto& [relid, r] : in.channel_mmio()) p->mmio_[relid] = {r.base(), r.size()};
  for (const ServerChannelInfo& c : p->server_.Channels()) {
    p->links_[c.relid] = std::make_shared<RingLink>();
  }
  // A teardown that waited for a lease completes now: leases are not saved.
  for (uint32_t gpadl : pending_teardowns) {
    absl::StatusOr<TeardownResult> r = p->gpadls_.Teardown(gpadl);
    if (r.ok()) p->server_.GpadlUnmapped(UnmapResult{gpadl, true});
  }
  p->PumpLocked();
  return p;
}

// Each side of the control plane was validated on its own; what one side
// waits for, the other must be able to give, or a teardown after the
// restore waits forever (a guest's GPADL without its owner on the host, a
// connected guest without the host's connection record).
absl::Status Partition::CheckRestoredReferencesLocked() const {
  for (const auto& [vtl, client] : clients_) {
    const std::optional<uint32_t> host_version = server_.ConnectedVersion(vtl);
    if (client.version().has_value() && client.version() != host_version) {
      return absl::InvalidArgumentError(absl::StrCat(
          "saved partition is inconsistent: the guest at VTL ", vtl, " is connected with version ",
          *client.version(), " but the host's connection record at that VTL says ",
          host_version.has_value() ? absl::StrCat("version ", *host_version) : "not connected"));
    }
    // While unloading, the host forgets the connection's GPADLs first.
    if (client.unloading() || server_.Unloading(vtl)) continue;
    for (const ClientChannelInfo& c : client.Channels()) {
      const uint32_t relid = c.offer.child_relid;
      for (const auto& [gpadl, state] : c.gpadls) {
        if (!server_.AnswersGpadl(vtl, relid, gpadl)) {
          return absl::InvalidArgumentError(absl::StrCat(
              "saved partition is inconsistent: GPADL ", gpadl, " of the guest's channel ", relid,
              " at VTL ", vtl, " has no owner (gpadl_owners) or pending teardown on the host side"));
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Partition::AttachHost(uint32_t relid, uint64_t offer_sequence, BusEndpoint* host) {
  MutexLock lock(&mu_);
  std::optional<ServerChannelInfo> c = server_.Channel(relid);
  if (!c.has_value() || c->offer_sequence != offer_sequence) {
    return absl::FailedPreconditionError(absl::StrCat(
        "channel ", relid, " (offer ", offer_sequence, ") is not in this partition"));
  }
  if (hosts_.contains(relid)) {
    return absl::FailedPreconditionError(absl::StrCat("channel ", relid, " already has a host endpoint"));
  }
  hosts_[relid] = host;
  if (!links_.contains(relid)) links_[relid] = std::make_shared<RingLink>();
  return absl::OkStatus();
}

absl::Status Partition::AttachGuest(uint8_t vtl, uint32_t relid, BusEndpoint* guest) {
  MutexLock lock(&mu_);
  auto it = clients_.find(vtl);
  if (it == clients_.end() || !it->second.Channel(relid).has_value()) {
    return absl::FailedPreconditionError(absl::StrCat("the guest at VTL ", vtl,
                                                      " has no channel ", relid));
  }
  if (guests_.contains({vtl, relid})) {
    return absl::FailedPreconditionError(absl::StrCat("channel ", relid, " already has a guest endpoint"));
  }
  guests_[{vtl, relid}] = guest;
  return absl::OkStatus();
}

}  // namespace kmcl
