// kmcl_core/wire/gpa_range.h: a range of guest physical memory as VMBus describes
// it, in GPA-direct packets and GPADLs: byte_count bytes starting byte_offset
// bytes into the first of `pfns` (4 KiB guest page frame numbers).
//
// ValidateGpaRanges is the one check every peer-supplied range list goes
// through before use.
#ifndef KMCLD_KMCL_CORE_WIRE_GPA_RANGE_H_
#define KMCLD_KMCL_CORE_WIRE_GPA_RANGE_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"

namespace kmcl {

struct GpaRange {
  uint32_t byte_count = 0;
  uint32_t byte_offset = 0;
  std::vector<uint64_t> pfns;
  friend bool operator==(const GpaRange&, const GpaRange&) = default;
};

// OK if `ranges` is non-empty and every range has byte_offset < 4096, a
// non-zero byte_count and exactly the PFNs its bytes span, each below
// `page_count` (pass UINT64_MAX to skip the memory bound). INVALID_ARGUMENT
// or OUT_OF_RANGE naming the offending range otherwise.
absl::Status ValidateGpaRanges(std::span<const GpaRange> ranges, uint64_t page_count);

// Sum of byte_count over `ranges`.
uint64_t TotalBytes(std::span<const GpaRange> ranges);

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_WIRE_GPA_RANGE_H_
