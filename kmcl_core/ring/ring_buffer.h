// kmcl_core/ring/ring_buffer.h: one direction of a VMBus channel, the ring buffer
// in its real wire format (Linux include/linux/hyperv.h and
// drivers/hv/ring_buffer.c; docs/wire-format.md).
//
// A ring is a 4 KiB control page plus a data area whose size is a multiple of
// 4 KiB. RingMemory names that memory wherever it lives (a GPADL view of
// guest memory, a ring of the guest's own pages, a DoubleMappedRing in
// ring_mapping.h); the ring never owns it. RingWriter is the producer end and
// RingReader the consumer end; the two may be in different threads or
// processes, or one may be an independent VMBus implementation.
//
// Double mapping (a host-side detail, not part of the wire format): the data
// area is mapped twice back to back, as Linux's hv_ringbuffer_init maps a
// ring's pages twice, so the bytes at data()[i + data_size()] are the bytes
// at data()[i]. A packet that wraps around the end of the ring is then one
// contiguous run of memory: the writer writes it with one copy and the
// reader parses it and hands its payload out in place, wrapped or not.
// DoubleMappedRingPages gives the page order for a channel's ring GPADL.
//
// Batching: Write() and Read() move a private cursor; nothing is visible to
// the peer until CommitWrite()/CommitRead() publish it with one index store.
// The commits say whether the peer must be signalled:
//   - CommitWrite: the ring went from empty to non-empty while the consumer's
//     interrupt_mask was clear;
//   - CommitRead: free space crossed the producer's pending_send_sz (and the
//     producer advertised the pending-send-size feature).
//
// Hostile memory: the peer may write anything at any time. The reader copies
// each descriptor and type-specific header out of the ring before validating
// it (no double fetch) and bounds every index, length, offset, type, flag and
// range count. Corruption is reported as RingStatus::kCorrupt with a reason
// (corruption()); the endpoint is poisoned and never touches memory outside
// the ring. The writer likewise validates the peer-owned read_index.
//
// Threading: a RingWriter and a RingReader are each thread-compatible (one
// thread at a time per object); one writer and one reader may run
// concurrently on the same ring. Control words are accessed with atomic_ref
// (acquire/release plus the full fences the signalling protocol needs).
#ifndef KMCLD_KMCL_CORE_RING_RING_BUFFER_H_
#define KMCLD_KMCL_CORE_RING_RING_BUFFER_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kmcl_core/wire/gpa_range.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl {

// A ring's memory: its control page and its double-mapped data area.
// Copyable; does not own.
class RingMemory {
 public:
  // `control` must be 8-byte aligned and kPageSize long; `data` 8-byte
  // aligned with `data_size` a non-zero multiple of kPageSize below 2 GiB,
  // and mapped twice: 2 * data_size readable (and, for a writer, writable)
  // bytes at `data`, the second half the same memory as the first. The
  // caller guarantees the mapping; a plain buffer is not a ring.
  static absl::StatusOr<RingMemory> Create(void* control, void* data, size_t data_size);
  // The usual layout: one view holding the control page, the data pages,
  // then the data pages again (4096 + 2 * data_size bytes).
  static absl::StatusOr<RingMemory> FromDoubleMappedView(std::span<uint8_t> view);

  RingMemory() = default;
  wire::RingControl* control() const { return control_; }
  uint8_t* data() const { return data_; }
  uint32_t data_size() const { return data_size_; }

 private:
  RingMemory(wire::RingControl* control, uint8_t* data, uint32_t size)
      : control_(control), data_(data), data_size_(size) {}
  wire::RingControl* control_ = nullptr;
  uint8_t* data_ = nullptr;
  uint32_t data_size_ = 0;
};

// The two rings of a channel inside its ring GPADL (docs/wire-format.md): pages
// [0, downstream_page_offset) are the guest-to-host ring, the rest the
// host-to-guest ring, each starting with its control page.
//
// The host view of the GPADL that the rings need repeats each ring's data
// pages: for a GPADL of `page_count` pages split at D it maps, as indices
// into the GPADL's pages,
//   0, 1 .. D-1, 1 .. D-1,  D, D+1 .. N-1, D+1 .. N-1     (N = page_count)
// (2N - 2 pages). INVALID_ARGUMENT if either ring lacks a control page and
// a data page.
absl::StatusOr<std::vector<uint32_t>> DoubleMappedRingPages(uint64_t page_count,
                                                            uint32_t downstream_page_offset);

struct RingPair {
  RingMemory guest_to_host;
  RingMemory host_to_guest;
  // `view` maps the ring GPADL's pages in the order DoubleMappedRingPages
  // gives for the same `downstream_page_offset`.
  static absl::StatusOr<RingPair> FromDoubleMappedView(std::span<uint8_t> view,
                                                       uint32_t downstream_page_offset);
};

enum class RingStatus {
  kOk,
  kEmpty,    // reader: no packet (normal)
  kFull,     // writer: not enough free space (normal); see bytes_needed
  kCorrupt,  // the ring or a packet is malformed; the endpoint is poisoned
};

// A snapshot of a ring's control words and fill, for diagnostics.
struct RingSnapshot {
  uint32_t write_index = 0;
  uint32_t read_index = 0;
  uint32_t interrupt_mask = 0;
  uint32_t pending_send_size = 0;
  uint32_t feature_bits = 0;
  uint32_t data_size = 0;
  uint32_t used_bytes = 0;  // 0 when the indices are invalid
  uint32_t free_bytes = 0;  // data_size - used - 8 (never completely full)
};
RingSnapshot SnapshotRing(const RingMemory& memory);

struct TransferPageRange {
  uint32_t byte_count = 0;
  uint32_t byte_offset = 0;
  friend bool operator==(const TransferPageRange&, const TransferPageRange&) = default;
};

// What a writer sends. `payload` is padded with zeros to 8 bytes on the wire.
struct OutgoingPacket {
  wire::PacketType type = wire::PacketType::kDataInBand;
  bool completion_requested = false;
  uint64_t transaction_id = 0;
  std::span<const uint8_t> payload;
  // kDataUsingGpaDirect: at least one range.
  std::span<const GpaRange> gpa_ranges;
  // kDataUsingTransferPages.
  uint16_t transfer_page_set_id = 0;
  bool sender_owns_set = false;
  std::span<const TransferPageRange> transfer_ranges;
};

// Bytes a packet occupies in the ring, trailer included (0 if unencodable:
// len8 would overflow 16 bits).
uint32_t RingSpaceFor(const OutgoingPacket& packet);

// A packet as read. Buffers are reused across reads (capacity is kept).
struct IncomingPacket {
  wire::PacketType type = wire::PacketType::kInvalid;
  uint16_t flags = 0;
  uint64_t transaction_id = 0;
  // The payload bytes after the type-specific header: (len8 - offset8) * 8.
  std::vector<uint8_t> payload;
  std::vector<GpaRange> gpa_ranges;  // kDataUsingGpaDirect
  uint16_t transfer_page_set_id = 0;  // kDataUsingTransferPages
  bool sender_owns_set = false;
  std::vector<TransferPageRange> transfer_ranges;
  uint32_t ring_offset = 0;  // where the packet started in the data area

  bool completion_requested() const {
    return (flags & wire::kPacketFlagCompletionRequested) != 0;
  }
};

// Each end keeps its private cursor on its own cache line (alignas), so a
// writer and a reader in neighbouring memory never false-share.
inline constexpr size_t kCacheLineSize = 64;

// The producer end of a ring.
class alignas(kCacheLineSize) RingWriter {
 public:
  // Sets the pending-send-size feature bit in the control page (this writer
  // honours the protocol) and starts its cursor at the published write_index.
  explicit RingWriter(RingMemory memory);

  // Writes `packet` at the private cursor. kFull leaves the ring untouched and
  // sets bytes_needed(); kCorrupt means the peer's read_index is invalid.
  RingStatus Write(const OutgoingPacket& packet);
  // Publishes everything written since the last commit. Returns true if the
  // consumer must be signalled.
  bool CommitWrite();
  // Drops uncommitted writes.
  void RevertWrite();

  // After kFull: ask the consumer to signal once `bytes` are free. Returns
  // true if that much is already free (the consumer drained in between), in
  // which case the caller should simply retry.
  bool ArmPendingSend(uint32_t bytes);
  void ClearPendingSend();

  uint32_t bytes_needed() const { return bytes_needed_; }
  // Free bytes as of the last look at read_index (cheap; may be stale-low).
  uint32_t cached_free_bytes() const;
  const absl::Status& corruption() const { return corruption_; }
  const RingMemory& memory() const { return memory_; }

 private:
  bool RefreshReadIndex();  // false (and poisons) if the peer's index is bad
  RingStatus Poison(std::string reason);

  RingMemory memory_;
  uint32_t published_ = 0;    // write_index as last published
  uint32_t cursor_ = 0;       // private write position
  uint32_t cached_read_ = 0;  // read_index as last loaded
  uint32_t bytes_needed_ = 0;
  absl::Status corruption_;
};

// The consumer end of a ring.
class alignas(kCacheLineSize) RingReader {
 public:
  explicit RingReader(RingMemory memory);

  // Reads the next packet at the private cursor into `packet`, copying the
  // payload out of the ring.
  RingStatus Read(IncomingPacket& packet);
  // Like Read, but without copying the payload: `payload` points at the bytes
  // in the ring, one contiguous span whether or not the packet wraps around
  // the end (the data area is double-mapped), and packet.payload is left
  // empty. The view is valid until the next read, RevertRead or CommitRead
  // (after which the producer may overwrite it). The peer can change the
  // bytes under the view: copy before validating.
  RingStatus ReadInPlace(IncomingPacket& packet, std::span<const uint8_t>& payload);
  // Publishes the cursor as read_index. Returns true if the producer must be
  // signalled (free space crossed its pending_send_sz).
  bool CommitRead();
  // Rewinds to the last committed position (packets will be read again).
  void RevertRead();

  // The consumer's interrupt mask. EndDrain publishes any uncommitted reads
  // (a producer signal that earns is returned by the next CommitRead), then
  // clears the mask and returns true if a packet raced in, so the caller
  // must keep draining instead of sleeping.
  void BeginDrain();
  bool EndDrain();
  // True if a packet is available beyond the cursor (reloads write_index).
  bool HasPacket();

  const absl::Status& corruption() const { return corruption_; }
  const RingMemory& memory() const { return memory_; }

 private:
  bool RefreshWriteIndex();
  // Validates and consumes the next packet's descriptor and header; the
  // payload is the `payload_len` bytes at ring offset `payload_at`.
  // `payload_at` is below 2 * data_size: read it through the second mapping.
  RingStatus Next(IncomingPacket& packet, uint32_t& payload_at, uint32_t& payload_len);
  RingStatus Poison(std::string reason);
  RingStatus ParseHeader(const wire::PacketDescriptor& desc, uint32_t header_bytes,
                         IncomingPacket& packet);

  RingMemory memory_;
  uint32_t published_ = 0;     // read_index as last published
  uint32_t cursor_ = 0;        // private read position
  uint32_t cached_write_ = 0;  // write_index as last loaded
  std::vector<uint8_t> header_scratch_;
  bool owed_signal_ = false;  // a producer signal earned inside EndDrain
  absl::Status corruption_;
};

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_RING_RING_BUFFER_H_
