// kmcl_core/ring/ring_mapping.h: a ring of its own memory, double-mapped, for
// code that owns a ring outside guest memory (tests, benchmarks, fuzz
// targets, a ring shared with another process through the memfd).
//
// A DoubleMappedRing is a memfd of one control page and `data_pages` data
// pages, mapped as [guard][control][data][data again][guard]: the layout
// RingMemory requires (ring_buffer.h), between two PROT_NONE guard pages so
// that any access outside the ring faults even without a sanitizer. Rings in
// guest memory are mapped by GuestMemory / GpadlTable in the order
// DoubleMappedRingPages gives instead.
//
//   absl::StatusOr<DoubleMappedRing> ring = DoubleMappedRing::Create(4);
//   RingWriter writer(ring->memory());
//   RingReader reader(ring->memory());
//
// Threading: the object is thread-compatible; the ring memory it maps is
// shared like any memory (RingWriter/RingReader's rules apply).
#ifndef KMCLD_KMCL_CORE_RING_RING_MAPPING_H_
#define KMCLD_KMCL_CORE_RING_RING_MAPPING_H_

#include <cstddef>
#include <cstdint>
#include <span>

#include "absl/status/statusor.h"
#include "kmcl_core/ring/ring_buffer.h"

namespace kmcl {

class DoubleMappedRing {
 public:
  // A zeroed ring of `data_pages` 4 KiB data pages (1 to 524287).
  // INVALID_ARGUMENT for a bad count, RESOURCE_EXHAUSTED if the kernel
  // refuses the memfd or a mapping.
  static absl::StatusOr<DoubleMappedRing> Create(uint32_t data_pages);

  DoubleMappedRing(DoubleMappedRing&& other) noexcept;
  DoubleMappedRing& operator=(DoubleMappedRing&& other) noexcept;
  DoubleMappedRing(const DoubleMappedRing&) = delete;
  DoubleMappedRing& operator=(const DoubleMappedRing&) = delete;
  ~DoubleMappedRing();

  const RingMemory& memory() const { return memory_; }
  // The control page followed by the data area once: the ring's bytes as the
  // wire format lays them out (4096 + data_size bytes). The second mapping
  // follows it in memory.
  std::span<uint8_t> ring_bytes() const;
  // The file descriptor of the backing memfd (owned by this object).
  int fd() const { return fd_; }

 private:
  DoubleMappedRing(int fd, uint8_t* reservation, size_t reservation_bytes, RingMemory memory)
      : fd_(fd), reservation_(reservation), reservation_bytes_(reservation_bytes), memory_(memory) {}
  void Release();

  int fd_ = -1;
  uint8_t* reservation_ = nullptr;  // guard + control + 2 * data + guard
  size_t reservation_bytes_ = 0;
  RingMemory memory_;
};

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_RING_RING_MAPPING_H_
