#include "kmcl_core/gpadl_table.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kmcl_core/status_macros.h"
#include "kmcl_core/vmbus_wire.h"

namespace kmcl {

uint32_t GpadlTable::AllocateId() {
  MutexLock lock(&mu_);
  while (next_gpadl_id_ == 0 || gpadls_.contains(next_gpadl_id_)) ++next_gpadl_id_;
  return next_gpadl_id_++;
}

uint32_t GpadlTable::next_id() const {
  MutexLock lock(&mu_);
  return next_gpadl_id_;
}

void GpadlTable::set_next_id(uint32_t id) {
  MutexLock lock(&mu_);
  next_gpadl_id_ = id;
}

absl::Status GpadlTable::Create(uint32_t gpadl_id, uint32_t channel_id,
                                std::vector<GpaRange> ranges, bool read_only) {
  if (absl::Status s = ValidateGpaRanges(ranges, memory_.page_count()); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("GPADL ", gpadl_id, ": ", s.message()));
  }
  MutexLock lock(&mu_);
  if (gpadls_.contains(gpadl_id)) {
    return absl::AlreadyExistsError(absl::StrCat("GPADL id ", gpadl_id, " is already in use"));
  }
  GpadlInfo info;
  info.gpadl_id = gpadl_id;
  info.channel_id = channel_id;
  info.byte_count = TotalBytes(ranges);
  info.ranges = std::move(ranges);
  info.read_only = read_only;
  gpadls_.emplace(gpadl_id, std::move(info));
  return absl::OkStatus();
}

absl::StatusOr<GpadlLease> GpadlTable::Map(uint32_t gpadl_id, bool read_only) {
  std::vector<uint64_t> pfns;
  std::vector<GpadlSegment> segments;
  uint64_t byte_count = 0;
  {
    MutexLock lock(&mu_);
    auto it = gpadls_.find(gpadl_id);
    if (it == gpadls_.end()) {
      return absl::NotFoundError(absl::StrCat("no GPADL with id ", gpadl_id));
    }
    const GpadlInfo& g = it->second;
    if (g.state == GpadlState::kTearingDown) {
      return absl::FailedPreconditionError(
          absl::StrCat("GPADL ", gpadl_id, " is being torn down"));
    }
    if (g.lease_id != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "GPADL ", gpadl_id, " is already mapped (lease ", g.lease_id, "); unmap it first"));
    }
    if (g.read_only && !read_only) {
      return absl::FailedPreconditionError(
          absl::StrCat("GPADL ", gpadl_id, " was created read-only; map it read-only"));
    }
    for (const GpaRange& r : g.ranges) {
      segments.push_back({pfns.size() * wire::kPageSize + r.byte_offset, r.byte_count});
      pfns.insert(pfns.end(), r.pfns.begin(), r.pfns.end());
    }
    byte_count = g.byte_count;
    // Reserve the GPADL while the (slow) mapping is made outside the lock.
    it->second.lease_id = UINT64_MAX;
  }
  absl::StatusOr<GuestView> view = memory_.MapPages(pfns, /*writable=*/!read_only);
  MutexLock lock(&mu_);
  GpadlInfo& g = gpadls_.at(gpadl_id);  // a reserved GPADL cannot be removed
  if (!view.ok()) {
    g.lease_id = 0;
    return view.status();
  }
  auto lease = std::make_shared<Lease>();
  lease->gpadl_id = gpadl_id;
  lease->read_only = read_only;
  lease->byte_count = byte_count;
  lease->view = std::make_shared<GuestView>(*std::move(view));
  lease->segments = segments;
  lease->mapped_at = absl::Now();
  const uint64_t lease_id = next_lease_id_++;
  g.lease_id = lease_id;
  GpadlLease out;
  out.lease_id = lease_id;
  out.gpadl_id = gpadl_id;
  out.read_only = read_only;
  out.byte_count = byte_count;
  out.pages = lease->view->bytes();
  out.segments = std::move(segments);
  leases_.emplace(lease_id, std::move(lease));
  return out;
}

absl::StatusOr<UnmapResult> GpadlTable::Unmap(uint64_t lease_id) {
  std::shared_ptr<const Lease> lease;  // unmapped outside the lock when last ref drops
  MutexLock lock(&mu_);
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) {
    return absl::NotFoundError(
        absl::StrCat("no lease ", lease_id, " (never mapped, or already unmapped)"));
  }
  lease = std::move(it->second);
  leases_.erase(it);
  UnmapResult result;
  result.gpadl_id = lease->gpadl_id;
  auto g = gpadls_.find(lease->gpadl_id);
  if (g != gpadls_.end()) {
    g->second.lease_id = 0;
    if (g->second.state == GpadlState::kTearingDown) {
      gpadls_.erase(g);
      result.completed_teardown = true;
    }
  }
  return result;
}

absl::StatusOr<TeardownResult> GpadlTable::Teardown(uint32_t gpadl_id) {
  MutexLock lock(&mu_);
  auto it = gpadls_.find(gpadl_id);
  if (it == gpadls_.end()) {
    return absl::NotFoundError(absl::StrCat("no GPADL with id ", gpadl_id));
  }
  if (it->second.state == GpadlState::kTearingDown) {
    return absl::FailedPreconditionError(
        absl::StrCat("GPADL ", gpadl_id, " already has a teardown pending"));
  }
  if (it->second.lease_id != 0) {
    it->second.state = GpadlState::kTearingDown;
    return TeardownResult::kPending;
  }
  gpadls_.erase(it);
  return TeardownResult::kTornDown;
}

absl::StatusOr<std::shared_ptr<const GpadlTable::Lease>> GpadlTable::FindLease(
    uint64_t lease_id) const {
  MutexLock lock(&mu_);
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) return absl::NotFoundError(absl::StrCat("no lease ", lease_id));
  return it->second;
}

absl::Status GpadlTable::CopyLease(const Lease& lease, uint64_t offset, uint8_t* buf,
                                   size_t len, bool to_guest) {
  if (offset > lease.byte_count || len > lease.byte_count - offset) {
    return absl::OutOfRangeError(absl::StrCat("lease of GPADL ", lease.gpadl_id, ": ", len,
                                              " bytes at offset ", offset, " exceed its ",
                                              lease.byte_count, " bytes"));
  }
  uint64_t seg_start = 0;  // GPADL byte offset where the segment begins
  for (const GpadlSegment& seg : lease.segments) {
    if (len == 0) break;
    uint64_t seg_end = seg_start + seg.length;
    if (offset < seg_end) {
      uint64_t within = offset - seg_start;
      size_t n = static_cast<size_t>(std::min<uint64_t>(len, seg.length - within));
      uint8_t* at = lease.view->data() + seg.view_offset + within;
      if (to_guest) {
        std::memcpy(at, buf, n);
      } else {
        std::memcpy(buf, at, n);
      }
      buf += n;
      len -= n;
      offset += n;
    }
    seg_start = seg_end;
  }
  return absl::OkStatus();
}

absl::Status GpadlTable::ReadLease(uint64_t lease_id, uint64_t offset,
                                   std::span<uint8_t> out) const {
  ASSIGN_OR_RETURN(std::shared_ptr<const Lease> lease, FindLease(lease_id));
  return CopyLease(*lease, offset, out.data(), out.size(), /*to_guest=*/false);
}

absl::Status GpadlTable::WriteLease(uint64_t lease_id, uint64_t offset,
                                    std::span<const uint8_t> data) const {
  ASSIGN_OR_RETURN(std::shared_ptr<const Lease> lease, FindLease(lease_id));
  if (lease->read_only) {
    return absl::PermissionDeniedError(
        absl::StrCat("lease ", lease_id, " of GPADL ", lease->gpadl_id, " is read-only"));
  }
  return CopyLease(*lease, offset, const_cast<uint8_t*>(data.data()), data.size(),
                   /*to_guest=*/true);
}

absl::Status GpadlTable::MarkReadOnly(uint32_t gpadl_id) {
  MutexLock lock(&mu_);
  auto it = gpadls_.find(gpadl_id);
  if (it == gpadls_.end()) return absl::NotFoundError(absl::StrCat("no GPADL with id ", gpadl_id));
  it->second.read_only = true;
  return absl::OkStatus();
}

std::optional<GpadlInfo> GpadlTable::Get(uint32_t gpadl_id) const {
  MutexLock lock(&mu_);
  auto it = gpadls_.find(gpadl_id);
  if (it == gpadls_.end()) return std::nullopt;
  return it->second;
}

std::vector<GpadlInfo> GpadlTable::List() const {
  MutexLock lock(&mu_);
  std::vector<GpadlInfo> out;
  for (const auto& [id, g] : gpadls_) out.push_back(g);
  return out;
}

std::vector<GpadlInfo> GpadlTable::ListForChannel(uint32_t channel_id) const {
  MutexLock lock(&mu_);
  std::vector<GpadlInfo> out;
  for (const auto& [id, g] : gpadls_) {
    if (g.channel_id == channel_id) out.push_back(g);
  }
  return out;
}

std::vector<LeaseInfo> GpadlTable::Leases() const {
  MutexLock lock(&mu_);
  std::vector<LeaseInfo> out;
  for (const auto& [id, l] : leases_) out.push_back({id, l->gpadl_id, l->read_only, l->mapped_at});
  return out;
}

bool GpadlTable::CoversPage(uint64_t pfn) const {
  MutexLock lock(&mu_);
  for (const auto& [id, g] : gpadls_) {
    for (const GpaRange& r : g.ranges) {
      for (uint64_t p : r.pfns) {
        if (p == pfn) return true;
      }
    }
  }
  return false;
}

}  // namespace kmcl
