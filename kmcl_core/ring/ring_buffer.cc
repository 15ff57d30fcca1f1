#include "kmcl_core/ring/ring_buffer.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kmcl_core/base/status_macros.h"

namespace kmcl {
namespace {

using wire::kPageSize;
using wire::kPacketTrailerSize;
using wire::PacketDescriptor;
using wire::PacketType;

constexpr uint32_t kDescriptorSize = sizeof(PacketDescriptor);
// Largest len8 the 16-bit field can express, in bytes.
constexpr uint32_t kMaxPacketBytes = 0xFFFFu * 8u;

uint32_t LoadAcquire(uint32_t& word) {
  return std::atomic_ref<uint32_t>(word).load(std::memory_order_acquire);
}
uint32_t LoadRelaxed(uint32_t& word) {
  return std::atomic_ref<uint32_t>(word).load(std::memory_order_relaxed);
}
void StoreRelease(uint32_t& word, uint32_t value) {
  std::atomic_ref<uint32_t>(word).store(value, std::memory_order_release);
}
void FullFence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

bool ValidIndex(uint32_t index, uint32_t size) { return index < size && index % 8 == 0; }

// Bytes from `from` forward to `to` in a ring of `size` bytes.
uint32_t Distance(uint32_t from, uint32_t to, uint32_t size) {
  return to >= from ? to - from : size - from + to;
}

// Free bytes for the producer: one 8-byte slot always stays empty so that a
// full ring never looks empty.
uint32_t FreeBytes(uint32_t write, uint32_t read, uint32_t size) {
  uint32_t used = Distance(read, write, size);
  return used + 8 > size ? 0 : size - used - 8;
}

uint32_t HeaderBytes(const OutgoingPacket& p) {
  switch (p.type) {
    case PacketType::kDataUsingGpaDirect: {
      uint64_t bytes = sizeof(wire::GpaDirectHeader);
      for (const GpaRange& r : p.gpa_ranges) {
        bytes += sizeof(wire::GpaRangeHeader) + 8 * r.pfns.size();
      }
      return bytes > kMaxPacketBytes ? kMaxPacketBytes + 1 : static_cast<uint32_t>(bytes);
    }
    case PacketType::kDataUsingTransferPages: {
      uint64_t bytes = sizeof(wire::TransferPageHeader) +
                       sizeof(wire::TransferPageRange) * p.transfer_ranges.size();
      return bytes > kMaxPacketBytes ? kMaxPacketBytes + 1 : static_cast<uint32_t>(bytes);
    }
    default:
      return 0;
  }
}

}  // namespace

// ---- RingMemory -------------------------------------------------------------

absl::StatusOr<RingMemory> RingMemory::Create(void* control, void* data, size_t data_size) {
  if (control == nullptr || data == nullptr) {
    return absl::InvalidArgumentError("ring memory: null control page or data area");
  }
  if (reinterpret_cast<uintptr_t>(control) % 8 != 0 ||
      reinterpret_cast<uintptr_t>(data) % 8 != 0) {
    return absl::InvalidArgumentError("ring memory: control page and data must be 8-byte aligned");
  }
  if (data_size == 0 || data_size % kPageSize != 0 || data_size >= (1u << 31)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ring memory: data size ", data_size, " is not a non-zero multiple of 4096 below 2 GiB"));
  }
  return RingMemory(static_cast<wire::RingControl*>(control), static_cast<uint8_t*>(data),
                    static_cast<uint32_t>(data_size));
}

absl::StatusOr<RingMemory> RingMemory::FromDoubleMappedView(std::span<uint8_t> view) {
  if (view.size() < 3 * kPageSize || view.size() % (2 * kPageSize) != kPageSize) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ring memory: a view of ", view.size(),
        " bytes is not a control page and a data area mapped twice"));
  }
  return Create(view.data(), view.data() + kPageSize, (view.size() - kPageSize) / 2);
}

absl::StatusOr<std::vector<uint32_t>> DoubleMappedRingPages(uint64_t page_count,
                                                            uint32_t downstream_page_offset) {
  // Each ring needs a control page and a data page; each data area stays
  // below 2 GiB (RingMemory's limit), so the indices fit in 32 bits.
  constexpr uint64_t kMaxRingPages = (uint64_t{1} << 31) / kPageSize;
  if (downstream_page_offset < 2 || uint64_t{downstream_page_offset} + 2 > page_count ||
      downstream_page_offset > kMaxRingPages || page_count - downstream_page_offset > kMaxRingPages) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ring GPADL of ", page_count, " pages cannot split at page ", downstream_page_offset,
        ": each ring needs a control page and at least one data page, below 2 GiB"));
  }
  const auto split = downstream_page_offset;
  const auto end = static_cast<uint32_t>(page_count);
  std::vector<uint32_t> pages;
  pages.reserve(2 * page_count - 2);
  auto ring = [&pages](uint32_t first, uint32_t last) {  // [first, last): control, data
    for (uint32_t p = first; p < last; ++p) pages.push_back(p);
    for (uint32_t p = first + 1; p < last; ++p) pages.push_back(p);
  };
  ring(0, split);
  ring(split, end);
  return pages;
}

absl::StatusOr<RingPair> RingPair::FromDoubleMappedView(std::span<uint8_t> view,
                                                        uint32_t downstream_page_offset) {
  // The view holds 2N - 2 pages for a GPADL of N pages.
  if (view.size() % kPageSize != 0 || (view.size() / kPageSize) % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ring GPADL view of ", view.size(), " bytes is not a double-mapped ring pair"));
  }
  const uint64_t pages = (view.size() / kPageSize + 2) / 2;
  RETURN_IF_ERROR(DoubleMappedRingPages(pages, downstream_page_offset).status());
  const size_t first = (2 * size_t{downstream_page_offset} - 1) * kPageSize;
  ASSIGN_OR_RETURN(RingMemory outgoing, RingMemory::FromDoubleMappedView(view.subspan(0, first)));
  ASSIGN_OR_RETURN(RingMemory incoming, RingMemory::FromDoubleMappedView(view.subspan(first)));
  return RingPair{outgoing, incoming};
}

RingSnapshot SnapshotRing(const RingMemory& memory) {
  RingSnapshot s;
  wire::RingControl* c = memory.control();
  if (c == nullptr) return s;
  s.write_index = LoadAcquire(c->write_index);
  s.read_index = LoadAcquire(c->read_index);
  s.interrupt_mask = LoadRelaxed(c->interrupt_mask);
  s.pending_send_size = LoadRelaxed(c->pending_send_sz);
  s.feature_bits = LoadRelaxed(c->feature_bits);
  s.data_size = memory.data_size();
  if (ValidIndex(s.write_index, s.data_size) && ValidIndex(s.read_index, s.data_size)) {
    s.used_bytes = Distance(s.read_index, s.write_index, s.data_size);
    s.free_bytes = FreeBytes(s.write_index, s.read_index, s.data_size);
  }
  return s;
}

uint32_t RingSpaceFor(const OutgoingPacket& packet) {
  uint32_t header = HeaderBytes(packet);
  uint64_t total = uint64_t{kDescriptorSize} + header + wire::RoundUp8(static_cast<uint32_t>(
                       std::min<size_t>(packet.payload.size(), kMaxPacketBytes + 1)));
  if (packet.payload.size() > kMaxPacketBytes || total > kMaxPacketBytes) return 0;
  return static_cast<uint32_t>(total) + kPacketTrailerSize;
}

// ---- RingWriter -------------------------------------------------------------

RingWriter::RingWriter(RingMemory memory) : memory_(memory) {
  wire::RingControl* c = memory_.control();
  std::atomic_ref<uint32_t>(c->feature_bits)
      .fetch_or(wire::kRingFeaturePendingSendSize, std::memory_order_relaxed);
  uint32_t write = LoadAcquire(c->write_index);
  if (!ValidIndex(write, memory_.data_size())) {
    Poison(absl::StrCat("write_index ", write, " is not an 8-byte aligned offset below ",
                        memory_.data_size()));
    return;
  }
  published_ = cursor_ = write;
  uint32_t read = LoadAcquire(c->read_index);
  if (!ValidIndex(read, memory_.data_size())) {
    Poison(absl::StrCat("read_index ", read, " is not an 8-byte aligned offset below ",
                        memory_.data_size()));
    return;
  }
  cached_read_ = read;
}

RingStatus RingWriter::Poison(std::string reason) {
  if (corruption_.ok()) corruption_ = absl::DataLossError(absl::StrCat("ring corrupt: ", reason));
  return RingStatus::kCorrupt;
}

bool RingWriter::RefreshReadIndex() {
  uint32_t size = memory_.data_size();
  uint32_t read = LoadAcquire(memory_.control()->read_index);
  if (!ValidIndex(read, size)) {
    Poison(absl::StrCat("read_index ", read, " is not an 8-byte aligned offset below ", size));
    return false;
  }
  // The consumer only moves forward, and never past what was published.
  if (Distance(read, published_, size) > Distance(cached_read_, published_, size)) {
    Poison(absl::StrCat("read_index moved from ", cached_read_, " to ", read,
                        ", outside the published data ending at ", published_));
    return false;
  }
  cached_read_ = read;
  return true;
}

uint32_t RingWriter::cached_free_bytes() const {
  return FreeBytes(cursor_, cached_read_, memory_.data_size());
}

RingStatus RingWriter::Write(const OutgoingPacket& packet) {
  if (!corruption_.ok()) return RingStatus::kCorrupt;
  const uint32_t size = memory_.data_size();
  const bool in_band = packet.type != PacketType::kDataUsingGpaDirect &&
                       packet.type != PacketType::kDataUsingTransferPages;
  const size_t len = packet.payload.size();
  const uint32_t space = in_band && len <= kMaxPacketBytes - kDescriptorSize
                             ? kDescriptorSize + wire::RoundUp8(static_cast<uint32_t>(len)) +
                                   kPacketTrailerSize
                             : RingSpaceFor(packet);
  if (space == 0 || space > size - 8) {
    bytes_needed_ = space == 0 ? UINT32_MAX : space;  // can never fit
    return RingStatus::kFull;
  }
  if (space > FreeBytes(cursor_, cached_read_, size)) {
    if (!RefreshReadIndex()) return RingStatus::kCorrupt;
    if (space > FreeBytes(cursor_, cached_read_, size)) {
      bytes_needed_ = space;
      return RingStatus::kFull;
    }
  }
  // The packet is written at data() + cursor_ in one piece even when it runs
  // past the end of the ring: the second mapping of the data area takes the
  // wrapped part to the start of the ring.
  uint8_t* const at = memory_.data() + cursor_;
  const uint32_t next = cursor_ + space >= size ? cursor_ + space - size : cursor_ + space;
  if (in_band) {
    // Fast path: an in-band or completion packet.
    const uint32_t padded = space - kDescriptorSize - kPacketTrailerSize;
    PacketDescriptor desc;
    desc.type = static_cast<uint16_t>(packet.type);
    desc.offset8 = kDescriptorSize / 8;
    desc.len8 = static_cast<uint16_t>((kDescriptorSize + padded) / 8);
    desc.flags = packet.completion_requested ? wire::kPacketFlagCompletionRequested : 0;
    desc.transaction_id = packet.transaction_id;
    std::memcpy(at, &desc, sizeof(desc));
    if (padded != len) {
      const uint64_t zero = 0;
      std::memcpy(at + kDescriptorSize + padded - 8, &zero, 8);
    }
    if (len != 0) std::memcpy(at + kDescriptorSize, packet.payload.data(), len);
    const uint64_t trailer = wire::PacketTrailer(cursor_);
    std::memcpy(at + kDescriptorSize + padded, &trailer, sizeof(trailer));
    cursor_ = next;
    return RingStatus::kOk;
  }
  const uint32_t header = HeaderBytes(packet);
  const uint32_t payload_padded = wire::RoundUp8(static_cast<uint32_t>(packet.payload.size()));
  PacketDescriptor desc{};
  desc.type = static_cast<uint16_t>(packet.type);
  desc.offset8 = static_cast<uint16_t>((kDescriptorSize + header) / 8);
  desc.len8 = static_cast<uint16_t>((kDescriptorSize + header + payload_padded) / 8);
  desc.flags = packet.completion_requested ? wire::kPacketFlagCompletionRequested : 0;
  desc.transaction_id = packet.transaction_id;

  uint8_t* pos = at;
  auto put = [&pos](const void* src, uint32_t len) {
    std::memcpy(pos, src, len);
    pos += len;
  };
  put(&desc, sizeof(desc));
  if (packet.type == PacketType::kDataUsingGpaDirect) {
    wire::GpaDirectHeader h{0, static_cast<uint32_t>(packet.gpa_ranges.size())};
    put(&h, sizeof(h));
    for (const GpaRange& r : packet.gpa_ranges) {
      wire::GpaRangeHeader rh{r.byte_count, r.byte_offset};
      put(&rh, sizeof(rh));
      put(r.pfns.data(), static_cast<uint32_t>(8 * r.pfns.size()));
    }
  } else if (packet.type == PacketType::kDataUsingTransferPages) {
    wire::TransferPageHeader h{packet.transfer_page_set_id,
                               static_cast<uint8_t>(packet.sender_owns_set ? 1 : 0), 0,
                               static_cast<uint32_t>(packet.transfer_ranges.size())};
    put(&h, sizeof(h));
    put(packet.transfer_ranges.data(),
        static_cast<uint32_t>(sizeof(wire::TransferPageRange) * packet.transfer_ranges.size()));
  }
  if (!packet.payload.empty()) put(packet.payload.data(), static_cast<uint32_t>(packet.payload.size()));
  static constexpr uint8_t kZeros[8] = {};
  if (uint32_t pad = payload_padded - static_cast<uint32_t>(packet.payload.size()); pad != 0) {
    put(kZeros, pad);
  }
  const uint64_t trailer = wire::PacketTrailer(cursor_);
  put(&trailer, sizeof(trailer));
  cursor_ = next;
  return RingStatus::kOk;
}

bool RingWriter::CommitWrite() {
  if (cursor_ == published_ || !corruption_.ok()) return false;
  wire::RingControl* c = memory_.control();
  const uint32_t old_write = published_;
  StoreRelease(c->write_index, cursor_);
  published_ = cursor_;
  FullFence();
  // Signal only on empty -> non-empty while the consumer is not draining.
  if (LoadAcquire(c->interrupt_mask) != 0) return false;
  return LoadAcquire(c->read_index) == old_write;
}

void RingWriter::RevertWrite() { cursor_ = published_; }

bool RingWriter::ArmPendingSend(uint32_t bytes) {
  wire::RingControl* c = memory_.control();
  StoreRelease(c->pending_send_sz, bytes);
  FullFence();
  if (!RefreshReadIndex()) return false;
  return FreeBytes(cursor_, cached_read_, memory_.data_size()) >= bytes;
}

void RingWriter::ClearPendingSend() { StoreRelease(memory_.control()->pending_send_sz, 0); }

// ---- RingReader -------------------------------------------------------------

RingReader::RingReader(RingMemory memory) : memory_(memory) {
  uint32_t read = LoadAcquire(memory_.control()->read_index);
  if (!ValidIndex(read, memory_.data_size())) {
    Poison(absl::StrCat("read_index ", read, " is not an 8-byte aligned offset below ",
                        memory_.data_size()));
    return;
  }
  published_ = cursor_ = cached_write_ = read;
}

RingStatus RingReader::Poison(std::string reason) {
  if (corruption_.ok()) corruption_ = absl::DataLossError(absl::StrCat("ring corrupt: ", reason));
  return RingStatus::kCorrupt;
}

bool RingReader::RefreshWriteIndex() {
  uint32_t size = memory_.data_size();
  uint32_t write = LoadAcquire(memory_.control()->write_index);
  if (!ValidIndex(write, size)) {
    Poison(absl::StrCat("write_index ", write, " is not an 8-byte aligned offset below ", size));
    return false;
  }
  // The producer only moves forward and never over data not yet consumed.
  if (Distance(published_, write, size) < Distance(published_, cursor_, size)) {
    Poison(absl::StrCat("write_index moved back to ", write, " behind the read cursor ", cursor_));
    return false;
  }
  cached_write_ = write;
  return true;
}

bool RingReader::HasPacket() {
  if (!corruption_.ok()) return true;  // so the caller reads and sees kCorrupt
  if (cursor_ != cached_write_) return true;
  if (!RefreshWriteIndex()) return true;
  return cursor_ != cached_write_;
}

RingStatus RingReader::ParseHeader(const PacketDescriptor& desc, uint32_t header_bytes,
                                   IncomingPacket& packet) {
  const auto type = static_cast<PacketType>(desc.type);
  if (type != PacketType::kDataUsingGpaDirect && type != PacketType::kDataUsingTransferPages) {
    return RingStatus::kOk;  // in-band and completions: extra header bytes are skipped
  }
  if (header_bytes < 8) {
    return Poison(absl::StrCat("packet type ", desc.type, " at ", cursor_,
                               " has a ", header_bytes, "-byte header, too short"));
  }
  // Copy the whole header out once, then parse only the copy. Next checked
  // that the packet fits in what was written, so the header lies within
  // [cursor_, cursor_ + data_size), inside the double mapping.
  header_scratch_.resize(header_bytes);
  std::memcpy(header_scratch_.data(), memory_.data() + cursor_ + kDescriptorSize, header_bytes);
  const uint8_t* h = header_scratch_.data();
  if (type == PacketType::kDataUsingTransferPages) {
    wire::TransferPageHeader th;
    std::memcpy(&th, h, sizeof(th));
    if (uint64_t{th.range_count} * 8 > header_bytes - 8) {
      return Poison(absl::StrCat("transfer-page packet at ", cursor_, " claims ", th.range_count,
                                 " ranges in a ", header_bytes, "-byte header"));
    }
    packet.transfer_page_set_id = th.transfer_page_set_id;
    packet.sender_owns_set = th.sender_owns_set != 0;
    packet.transfer_ranges.resize(th.range_count);
    std::memcpy(packet.transfer_ranges.data(), h + 8, size_t{th.range_count} * 8);
    return RingStatus::kOk;
  }
  wire::GpaDirectHeader gh;
  std::memcpy(&gh, h, sizeof(gh));
  if (gh.range_count == 0) {
    return Poison(absl::StrCat("GPA-direct packet at ", cursor_, " has no ranges"));
  }
  if (gh.range_count > (header_bytes - 8) / 8) {
    return Poison(absl::StrCat("GPA-direct packet at ", cursor_, " claims ", gh.range_count,
                               " ranges in a ", header_bytes, "-byte header"));
  }
  packet.gpa_ranges.resize(gh.range_count);
  uint32_t off = 8;
  for (uint32_t i = 0; i < gh.range_count; ++i) {
    if (header_bytes - off < 8) {
      return Poison(absl::StrCat("GPA-direct packet at ", cursor_, ": range ", i,
                                 " runs past the header"));
    }
    wire::GpaRangeHeader rh;
    std::memcpy(&rh, h + off, sizeof(rh));
    off += 8;
    if (rh.byte_offset >= wire::kPageSize || rh.byte_count == 0) {
      return Poison(absl::StrCat("GPA-direct packet at ", cursor_, ": range ", i, " has offset ",
                                 rh.byte_offset, " and count ", rh.byte_count));
    }
    uint64_t pages = wire::PagesSpanned(rh.byte_offset, rh.byte_count);
    if (pages * 8 > header_bytes - off) {
      return Poison(absl::StrCat("GPA-direct packet at ", cursor_, ": range ", i, " needs ",
                                 pages, " PFNs past the end of the header"));
    }
    GpaRange& r = packet.gpa_ranges[i];
    r.byte_count = rh.byte_count;
    r.byte_offset = rh.byte_offset;
    r.pfns.resize(pages);
    std::memcpy(r.pfns.data(), h + off, pages * 8);
    off += static_cast<uint32_t>(pages * 8);
  }
  return RingStatus::kOk;
}

RingStatus RingReader::Next(IncomingPacket& packet, uint32_t& payload_at,
                            uint32_t& payload_len) {
  if (!corruption_.ok()) return RingStatus::kCorrupt;
  if (cursor_ == cached_write_) {
    if (!RefreshWriteIndex()) return RingStatus::kCorrupt;
    if (cursor_ == cached_write_) return RingStatus::kEmpty;
  }
  const uint32_t size = memory_.data_size();
  const uint32_t available = Distance(cursor_, cached_write_, size);
  if (available < kDescriptorSize + kPacketTrailerSize) {
    return Poison(absl::StrCat("only ", available, " bytes at ", cursor_,
                               ", less than a packet descriptor and trailer"));
  }
  // One copy of the descriptor, read once: the peer may rewrite the ring.
  PacketDescriptor desc;
  std::memcpy(&desc, memory_.data() + cursor_, sizeof(desc));
  if (desc.offset8 < 2 || desc.len8 < desc.offset8) {
    return Poison(absl::StrCat("packet at ", cursor_, " has offset8 ", desc.offset8,
                               " and len8 ", desc.len8));
  }
  if ((desc.flags & ~wire::kPacketFlagsMask) != 0) {
    return Poison(absl::StrCat("packet at ", cursor_, " has unknown flags 0x",
                               absl::Hex(desc.flags)));
  }
  const uint32_t total = uint32_t{desc.len8} * 8 + kPacketTrailerSize;
  if (total > available) {
    return Poison(absl::StrCat("packet at ", cursor_, " is ", total, " bytes but only ",
                               available, " were written"));
  }
  const auto type = static_cast<PacketType>(desc.type);
  switch (type) {
    case PacketType::kDataInBand:
    case PacketType::kCompletion:
      if (!packet.gpa_ranges.empty()) packet.gpa_ranges.clear();
      if (!packet.transfer_ranges.empty()) packet.transfer_ranges.clear();
      break;
    case PacketType::kDataUsingTransferPages:
    case PacketType::kDataUsingGpaDirect: {
      packet.gpa_ranges.clear();
      packet.transfer_ranges.clear();
      const uint32_t header_bytes = uint32_t{desc.offset8} * 8 - kDescriptorSize;
      if (RingStatus s = ParseHeader(desc, header_bytes, packet); s != RingStatus::kOk) return s;
      break;
    }
    default:
      return Poison(absl::StrCat("packet at ", cursor_, " has unsupported type 0x",
                                 absl::Hex(desc.type)));
  }
  packet.type = type;
  packet.flags = desc.flags;
  packet.transaction_id = desc.transaction_id;
  packet.ring_offset = cursor_;
  payload_at = cursor_ + uint32_t{desc.offset8} * 8;  // < 2 * size: the second mapping
  payload_len = (uint32_t{desc.len8} - desc.offset8) * 8;
  cursor_ = cursor_ + total >= size ? cursor_ + total - size : cursor_ + total;
  return RingStatus::kOk;
}

RingStatus RingReader::Read(IncomingPacket& packet) {
  uint32_t at = 0, len = 0;
  RingStatus s = Next(packet, at, len);
  if (s != RingStatus::kOk) return s;
  packet.payload.resize(len);
  if (len != 0) std::memcpy(packet.payload.data(), memory_.data() + at, len);
  return RingStatus::kOk;
}

RingStatus RingReader::ReadInPlace(IncomingPacket& packet, std::span<const uint8_t>& payload) {
  uint32_t at = 0, len = 0;
  RingStatus s = Next(packet, at, len);
  if (s != RingStatus::kOk) return s;
  packet.payload.clear();
  payload = {memory_.data() + at, len};  // in place, wrapped or not
  return RingStatus::kOk;
}

bool RingReader::CommitRead() {
  const bool owed = std::exchange(owed_signal_, false);
  if (cursor_ == published_ || !corruption_.ok()) return owed;
  wire::RingControl* c = memory_.control();
  const uint32_t size = memory_.data_size();
  const uint32_t old_read = published_;
  StoreRelease(c->read_index, cursor_);
  published_ = cursor_;
  FullFence();
  if ((LoadRelaxed(c->feature_bits) & wire::kRingFeaturePendingSendSize) == 0) return owed;
  // Some peers write ring size - 1; only 8-byte granularity is meaningful.
  const uint32_t pending = LoadAcquire(c->pending_send_sz) & ~7u;
  if (pending == 0) return owed;
  const uint32_t write = LoadAcquire(c->write_index);
  if (!ValidIndex(write, size)) return owed;  // the next Read reports it
  const uint32_t free_before = FreeBytes(write, old_read, size);
  const uint32_t free_after = FreeBytes(write, cursor_, size);
  return owed || (free_before < pending && free_after >= pending);
}

void RingReader::RevertRead() { cursor_ = published_; }

void RingReader::BeginDrain() {
  std::atomic_ref<uint32_t>(memory_.control()->interrupt_mask).store(1, std::memory_order_relaxed);
}

bool RingReader::EndDrain() {
  // Publish what was read before unmasking: a writer decides whether to
  // signal by comparing read_index with its old write index, so a stale
  // read_index would make it skip the interrupt (a lost wakeup).
  if (cursor_ != published_) owed_signal_ |= CommitRead();
  StoreRelease(memory_.control()->interrupt_mask, 0);
  FullFence();
  return HasPacket();
}

}  // namespace kmcl
