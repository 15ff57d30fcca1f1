// kmcl_core/memory/gpadl_table.h: the GPADLs of one partition and the host's
// mappings of them.
//
// The guest creates a GPADL (an id it chose, unique per partition, over
// ranges of its memory); the host maps it as a lease: a zero-copy contiguous
// view of the GPADL's pages, one lease per GPADL at a time (KMCL's
// VmbChannelMapGpadl rule), mapped without write permission when read-only.
// A GPADL created READ_ONLY can only be mapped read-only. Teardown of a
// mapped GPADL is pending until the lease is unmapped; meanwhile new maps
// fail. Unmap reports when it completed a pending teardown, so the caller can
// send GPADL_TORNDOWN then.
//
// Lease views stay valid until Unmap returns; after that, using the span is
// a use-after-unmap, exactly as with a real MDL. ReadLease/WriteLease copy by
// GPADL byte offset and are safe against a concurrent Unmap.
//
// Threading: thread-safe (one internal mutex, never held across callbacks;
// lease copies run outside it).
#ifndef KMCLD_KMCL_CORE_MEMORY_GPADL_TABLE_H_
#define KMCLD_KMCL_CORE_MEMORY_GPADL_TABLE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kmcl_core/base/mutex.h"
#include "kmcl_core/memory/guest_memory.h"
#include "kmcl_core/wire/gpa_range.h"

namespace kmcl {

enum class GpadlState {
  kCreated,      // mappable
  kTearingDown,  // teardown requested while mapped; completes at unmap
};

struct GpadlInfo {
  uint32_t gpadl_id = 0;
  uint32_t channel_id = 0;
  std::vector<GpaRange> ranges;
  uint64_t byte_count = 0;
  bool read_only = false;
  GpadlState state = GpadlState::kCreated;
  uint64_t lease_id = 0;  // 0 = not mapped
};

// Where a piece of the GPADL's bytes sits inside a lease's page view: one
// per range when the view keeps the GPADL's page order; a range may take
// several when a layout reorders its pages.
struct GpadlSegment {
  uint64_t view_offset = 0;
  uint32_t length = 0;
};

struct GpadlLease {
  uint64_t lease_id = 0;
  uint32_t gpadl_id = 0;
  bool read_only = false;
  uint64_t byte_count = 0;
  // Every page of every range, in order (or in the order the map's layout
  // gave), as one mapping.
  std::span<uint8_t> pages;
  std::vector<GpadlSegment> segments;
  // The GPADL's bytes as one span: valid when they are one segment (the
  // common case, a buffer of one range); empty otherwise (use the segments).
  std::span<uint8_t> bytes() const {
    return segments.size() == 1 ? pages.subspan(segments[0].view_offset, segments[0].length)
                                : std::span<uint8_t>();
  }
};

// How a lease lays out the GPADL's pages in its view. Called with the
// GPADL's page count (every page of every range, in order), it returns the
// view's pages as indices into that list; every page must appear at least
// once and may appear more often. Used to map a ring GPADL with each ring's
// data pages twice (DoubleMappedRingPages in ring_buffer.h). Its error is
// Map's error.
using GpadlViewLayout =
    std::function<absl::StatusOr<std::vector<uint32_t>>(uint64_t page_count)>;

enum class TeardownResult { kTornDown, kPending };

struct UnmapResult {
  uint32_t gpadl_id = 0;
  bool completed_teardown = false;  // a pending teardown finished now
};

struct LeaseInfo {
  uint64_t lease_id = 0;
  uint32_t gpadl_id = 0;
  bool read_only = false;
  absl::Time mapped_at;
};

class GpadlTable {
 public:
  explicit GpadlTable(GuestMemory& memory) : memory_(memory) {}
  GpadlTable(const GpadlTable&) = delete;
  GpadlTable& operator=(const GpadlTable&) = delete;

  // An id not in use, for a guest that lets kmcl_core choose.
  uint32_t AllocateId();
  // Where AllocateId continues (saved with the partition).
  uint32_t next_id() const;
  void set_next_id(uint32_t id);

  // ALREADY_EXISTS if the id is in use; INVALID_ARGUMENT / OUT_OF_RANGE for
  // bad ranges.
  absl::Status Create(uint32_t gpadl_id, uint32_t channel_id, std::vector<GpaRange> ranges,
                      bool read_only);

  // NOT_FOUND for an unknown id; FAILED_PRECONDITION if it is already mapped,
  // being torn down, or read-only and `read_only` is false. Without a
  // `layout` the view holds the pages in order; with one, in its order
  // (INVALID_ARGUMENT if it names a page past the GPADL or leaves one out).
  absl::StatusOr<GpadlLease> Map(uint32_t gpadl_id, bool read_only,
                                 const GpadlViewLayout& layout = nullptr);

  // NOT_FOUND for an unknown or already-unmapped lease.
  absl::StatusOr<UnmapResult> Unmap(uint64_t lease_id);

  // kTornDown: gone now. kPending: mapped; finishes at Unmap. NOT_FOUND for
  // an unknown id, FAILED_PRECONDITION if a teardown is already pending.
  absl::StatusOr<TeardownResult> Teardown(uint32_t gpadl_id);

  // Copies by byte offset within the GPADL. OUT_OF_RANGE beyond byte_count,
  // PERMISSION_DENIED for a write through a read-only lease.
  absl::Status ReadLease(uint64_t lease_id, uint64_t offset, std::span<uint8_t> out) const;
  absl::Status WriteLease(uint64_t lease_id, uint64_t offset,
                          std::span<const uint8_t> data) const;

  // The creator declared it read-only (VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY);
  // the host may then map it only read-only. NOT_FOUND for an unknown id.
  absl::Status MarkReadOnly(uint32_t gpadl_id);

  std::optional<GpadlInfo> Get(uint32_t gpadl_id) const;
  std::vector<GpadlInfo> List() const;
  std::vector<GpadlInfo> ListForChannel(uint32_t channel_id) const;
  std::vector<LeaseInfo> Leases() const;
  // True if some GPADL covers the page (guest buffers in use cannot be freed).
  bool CoversPage(uint64_t pfn) const;

 private:
  struct Lease {
    uint32_t gpadl_id;
    bool read_only;
    uint64_t byte_count;
    std::shared_ptr<GuestView> view;
    std::vector<GpadlSegment> segments;
    absl::Time mapped_at;
  };
  absl::StatusOr<std::shared_ptr<const Lease>> FindLease(uint64_t lease_id) const;
  static absl::Status CopyLease(const Lease& lease, uint64_t offset, uint8_t* buf, size_t len,
                                bool to_guest);

  GuestMemory& memory_;
  mutable Mutex mu_;
  absl::btree_map<uint32_t, GpadlInfo> gpadls_ ABSL_GUARDED_BY(mu_);
  absl::btree_map<uint64_t, std::shared_ptr<const Lease>> leases_ ABSL_GUARDED_BY(mu_);
  uint64_t next_lease_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint32_t next_gpadl_id_ ABSL_GUARDED_BY(mu_) = 0xE1E10;  // where Linux starts
};

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_MEMORY_GPADL_TABLE_H_
