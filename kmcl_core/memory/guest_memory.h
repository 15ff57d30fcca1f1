// kmcl_core/memory/guest_memory.h: a partition's emulated guest physical memory.
//
// Memory is a sparse memfd of 4 KiB pages (allocated by the kernel only when
// touched), so a 4 GiB partition costs nothing until used. The guest side
// names memory only by guest page frame numbers (PFNs). Like a real host,
// kmcl_core maps any list of guest pages as one contiguous host view without
// copying (MapPages: one mmap per run of consecutive PFNs into a reserved
// range; a page may appear twice, as a double-mapped ring's data pages do);
// a read-only view is mapped without write permission, so a stray
// write faults instead of silently succeeding.
//
// The page allocator hands out pages for guest buffers (rings, GPADL
// buffers); a buffer's pages need not be contiguous.
//
// Threading: thread-safe. Read/Write/MapPages may run concurrently with each
// other and with the allocator; memory contents are shared like real RAM, so
// callers synchronise their own use of the bytes.
#ifndef KMCLD_KMCL_CORE_MEMORY_GUEST_MEMORY_H_
#define KMCLD_KMCL_CORE_MEMORY_GUEST_MEMORY_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kmcl_core/base/mutex.h"

namespace kmcl {

inline constexpr uint64_t kDefaultGuestMemoryBytes = uint64_t{4} << 30;  // 4 GiB
inline constexpr uint64_t kMaxGuestMemoryBytes = uint64_t{64} << 30;

// A contiguous host mapping of guest pages. Move-only; unmaps on destruction.
namespace guest_memory_internal {
struct ViewCache;
}  // namespace guest_memory_internal

class GuestView {
 public:
  GuestView() = default;
  GuestView(GuestView&& other) noexcept;
  GuestView& operator=(GuestView&& other) noexcept;
  GuestView(const GuestView&) = delete;
  GuestView& operator=(const GuestView&) = delete;

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool writable() const { return writable_; }
  std::span<uint8_t> bytes() const { return {data_, size_}; }

 private:
  friend class GuestMemory;
  friend struct guest_memory_internal::ViewCache;
  // One host range mapped by MapPages, unmapped when its last view goes.
  struct Mapping;
  GuestView(std::shared_ptr<const Mapping> mapping, uint8_t* data, size_t size, bool writable)
      : mapping_(std::move(mapping)), data_(data), size_(size), writable_(writable) {}
  std::shared_ptr<const Mapping> mapping_;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool writable_ = false;
};

class GuestMemory {
 public:
  // `size_bytes`: a non-zero multiple of 4096, at most kMaxGuestMemoryBytes.
  static absl::StatusOr<std::unique_ptr<GuestMemory>> Create(uint64_t size_bytes);
  ~GuestMemory();
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;

  uint64_t size_bytes() const { return size_; }
  uint64_t page_count() const { return size_ >> 12; }

  // Copies between guest physical addresses and host buffers. OUT_OF_RANGE
  // if [gpa, gpa + length) is not inside guest memory.
  absl::Status Read(uint64_t gpa, std::span<uint8_t> out) const;
  absl::Status Write(uint64_t gpa, std::span<const uint8_t> data) const;
  // Writes whole pages: pages[i] (4,096 bytes) into page pfns[i]; the spans
  // have the same length. Goes through the memory file (pwritev, one call
  // per run of consecutive PFNs) instead of the mapping, so the kernel fills
  // the pages without a page fault each in this process: a restore writes
  // tens of thousands of pages, and each fault costs microseconds (far more
  // in a virtual machine). OUT_OF_RANGE naming the first PFN outside guest
  // memory (nothing is written then); RESOURCE_EXHAUSTED (with the
  // kernel's reason) if the memory file takes no more pages.
  absl::Status WritePages(std::span<const uint64_t> pfns,
                          std::span<const uint8_t* const> pages) const;

  // The host address of a guest physical address in the whole-memory
  // mapping (what an emulated guest driver uses as its "virtual address"),
  // and the reverse; nullptr / nullopt outside guest memory.
  uint8_t* HostAddress(uint64_t gpa) const { return gpa < size_ ? base_ + gpa : nullptr; }
  std::optional<uint64_t> GpaOf(const void* host) const {
    auto p = static_cast<const uint8_t*>(host);
    if (p < base_ || p >= base_ + size_) return std::nullopt;
    return static_cast<uint64_t>(p - base_);
  }

  // OUT_OF_RANGE naming the first PFN outside guest memory.
  absl::Status CheckPages(std::span<const uint64_t> pfns) const;

  // Maps `pfns`, in order, as one contiguous view. A page may appear more
  // than once (a double-mapped ring repeats its data pages). RESOURCE_EXHAUSTED
  // if the list is too fragmented to map (more than kMaxViewRuns runs of
  // consecutive pages). Each run is one kernel mapping (VMA), and a process
  // has a limited number of those (vm.max_map_count, 65,530 by default), so
  // views of the same page list with the same access share one mapping:
  // while a view is alive, mapping the same list again returns the same
  // host range (both endpoints of a channel map its ring GPADL, and in
  // kmcld both are in this process). The range is unmapped with its last
  // view; the views may be destroyed on any thread.
  absl::StatusOr<GuestView> MapPages(std::span<const uint64_t> pfns, bool writable) const;
  // The same for pfns[order[0]], pfns[order[1]], ...: a view of a page list
  // in another order (RingPair's layout of a ring GPADL, from
  // DoubleMappedRingPages). INVALID_ARGUMENT for an index past `pfns`.
  absl::StatusOr<GuestView> MapPages(std::span<const uint64_t> pfns,
                                     std::span<const uint32_t> order, bool writable) const;
  static constexpr size_t kMaxViewRuns = 16384;

  // Allocates `count` pages (zeroed), contiguous where possible.
  // RESOURCE_EXHAUSTED when guest memory is full.
  absl::StatusOr<std::vector<uint64_t>> AllocatePages(uint64_t count);
  // Returns pages to the allocator (their contents are discarded).
  // FAILED_PRECONDITION for a page that is not allocated; nothing is freed
  // then.
  absl::Status FreePages(std::span<const uint64_t> pfns);
  uint64_t free_page_count() const;
  // Bytes of guest memory actually backed by host memory (pages the guest
  // or the host touched since they were last freed); 0 if unknown.
  uint64_t resident_bytes() const;

  // Every allocated PFN, ascending (for saving a partition).
  std::vector<uint64_t> AllocatedPages() const;
  // Marks pages allocated without zeroing them (restore of a saved layout).
  absl::Status ClaimPages(std::span<const uint64_t> pfns);
  bool IsAllocated(uint64_t pfn) const;

 private:
  GuestMemory(int fd, uint8_t* base, uint64_t size);
  bool IsAllocatedLocked(uint64_t pfn) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetAllocatedLocked(uint64_t pfn, bool allocated) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveFromFreeLocked(uint64_t pfn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddToFreeLocked(uint64_t pfn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int fd_;
  uint8_t* const base_;  // the whole memory, mapped read-write
  const uint64_t size_;
  // Live views by (page list, access), shared with their mappings so that a
  // view may outlive the GuestMemory.
  std::shared_ptr<guest_memory_internal::ViewCache> views_;

  mutable Mutex mu_;
  // Free extents: first PFN -> page count, non-adjacent (coalesced).
  absl::btree_map<uint64_t, uint64_t> free_extents_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> allocated_bits_ ABSL_GUARDED_BY(mu_);
  uint64_t free_pages_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_MEMORY_GUEST_MEMORY_H_
