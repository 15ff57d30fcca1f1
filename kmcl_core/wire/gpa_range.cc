#include "kmcl_core/wire/gpa_range.h"

#include "absl/strings/str_cat.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl {

absl::Status ValidateGpaRanges(std::span<const GpaRange> ranges, uint64_t page_count) {
  if (ranges.empty()) return absl::InvalidArgumentError("no GPA ranges");
  for (size_t i = 0; i < ranges.size(); ++i) {
    const GpaRange& r = ranges[i];
    if (r.byte_offset >= wire::kPageSize) {
      return absl::InvalidArgumentError(
          absl::StrCat("GPA range ", i, ": byte offset ", r.byte_offset, " is not below 4096"));
    }
    if (r.byte_count == 0) {
      return absl::InvalidArgumentError(absl::StrCat("GPA range ", i, " is empty"));
    }
    uint64_t pages = wire::PagesSpanned(r.byte_offset, r.byte_count);
    if (r.pfns.size() != pages) {
      return absl::InvalidArgumentError(absl::StrCat("GPA range ", i, " spans ", pages,
                                                     " pages but lists ", r.pfns.size(), " PFNs"));
    }
    for (uint64_t pfn : r.pfns) {
      if (pfn >= page_count) {
        return absl::OutOfRangeError(absl::StrCat("GPA range ", i, ": PFN 0x", absl::Hex(pfn),
                                                  " is outside guest memory (", page_count,
                                                  " pages)"));
      }
    }
  }
  return absl::OkStatus();
}

uint64_t TotalBytes(std::span<const GpaRange> ranges) {
  uint64_t total = 0;
  for (const GpaRange& r : ranges) total += r.byte_count;
  return total;
}

}  // namespace kmcl
