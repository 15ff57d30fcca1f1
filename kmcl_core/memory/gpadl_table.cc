#include "kmcl_core/memory/gpadl_table.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kmcl_core/base/status_macros.h"
#include "kmcl_core/wire/vmbus_wire.h"

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

namespace {

// Where each range's bytes sit in a view that holds the GPADL's pages in
// `order` (indices into `pfns`, every page at least once): each page is read
// and written through its first appearance. Consecutive pieces of one range
// merge, so the identity order gives one segment per range.
absl::StatusOr<std::vector<GpadlSegment>> SegmentsFor(const std::vector<GpaRange>& ranges,
                                                      uint64_t page_count,
                                                      std::span<const uint32_t> order) {
  constexpr uint64_t kPage = wire::kPageSize;
  std::vector<uint64_t> first_at(page_count, UINT64_MAX);
  for (size_t view_page = 0; view_page < order.size(); ++view_page) {
    if (order[view_page] >= page_count) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layout names page ", order[view_page], " of a GPADL of ", page_count, " pages"));
    }
    if (first_at[order[view_page]] == UINT64_MAX) first_at[order[view_page]] = view_page;
  }
  std::vector<GpadlSegment> segments;
  uint64_t range_first_page = 0;
  for (const GpaRange& r : ranges) {
    const size_t first_segment = segments.size();
    for (uint64_t at = r.byte_offset, end = uint64_t{r.byte_offset} + r.byte_count; at < end;) {
      const uint64_t page = range_first_page + at / kPage;
      if (first_at[page] == UINT64_MAX) {
        return absl::InvalidArgumentError(
            absl::StrCat("layout leaves out page ", page, " of the GPADL"));
      }
      const uint64_t view_offset = first_at[page] * kPage + at % kPage;
      const auto length = static_cast<uint32_t>(std::min(end - at, kPage - at % kPage));
      if (segments.size() > first_segment &&
          segments.back().view_offset + segments.back().length == view_offset) {
        segments.back().length += length;
      } else {
        segments.push_back({view_offset, length});
      }
      at += length;
    }
    range_first_page += r.pfns.size();
  }
  return segments;
}

}  // namespace

absl::StatusOr<GpadlLease> GpadlTable::Map(uint32_t gpadl_id, bool read_only,
                                           const GpadlViewLayout& layout) {
  std::vector<uint64_t> pfns;
  std::vector<GpaRange> ranges;
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
    for (const GpaRange& r : g.ranges) pfns.insert(pfns.end(), r.pfns.begin(), r.pfns.end());
    ranges = g.ranges;
    byte_count = g.byte_count;
    // Reserve the GPADL while the (slow) mapping is made outside the lock.
    it->second.lease_id = UINT64_MAX;
  }
  // Everything from here to the lease runs on a reserved GPADL: its ranges
  // cannot change, and a failure must release the reservation.
  auto view = [&]() -> absl::StatusOr<std::pair<GuestView, std::vector<GpadlSegment>>> {
    std::vector<uint32_t> order;
    if (layout) {
      ASSIGN_OR_RETURN(order, layout(pfns.size()));
    } else {
      order.resize(pfns.size());
      for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
    }
    ASSIGN_OR_RETURN(std::vector<GpadlSegment> segments, SegmentsFor(ranges, pfns.size(), order));
    ASSIGN_OR_RETURN(GuestView mapped, memory_.MapPages(pfns, order, /*writable=*/!read_only));
    return std::make_pair(std::move(mapped), std::move(segments));
  }();
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
  lease->view = std::make_shared<GuestView>(std::move(view->first));
  lease->segments = std::move(view->second);
  lease->mapped_at = absl::Now();
  const uint64_t lease_id = next_lease_id_++;
  g.lease_id = lease_id;
  GpadlLease out;
  out.lease_id = lease_id;
  out.gpadl_id = gpadl_id;
  out.read_only = read_only;
  out.byte_count = byte_count;
  out.pages = lease->view->bytes();
  out.segments = lease->segments;
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
