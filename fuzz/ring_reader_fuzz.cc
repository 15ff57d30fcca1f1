// libFuzzer target: the ring reader (and writer) over arbitrary ring memory.
//
// Mode 0 (raw): the input is copied over the control words and the data
// area. Mode 1 (structured): packets of fuzzer-chosen types and sizes are
// written by RingWriter, then fuzzer-chosen bytes are poked anywhere into the
// ring, so the reader sees nearly valid rings, where bugs hide. Either way the
// reader must return kOk/kEmpty/kCorrupt without touching memory outside the
// ring (ASan checks; the ring, double-mapped as kmcld maps rings, sits between
// guard pages).
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "fuzz/fuzz_input.h"
#include "kmcl_core/ring/ring_buffer.h"
#include "kmcl_core/ring/ring_mapping.h"

namespace {

using kmcl::IncomingPacket;
using kmcl::OutgoingPacket;
using kmcl::RingMemory;
using kmcl::RingReader;
using kmcl::RingStatus;
using kmcl::RingWriter;
using kmcl::fuzz::FuzzInput;
namespace wire = kmcl::wire;

// Control page + 1 to 4 data pages, double-mapped as in kmcld, with PROT_NONE
// guard pages around them so that any out-of-ring access faults even without
// ASan. One ring per size, made once and zeroed for each input.
kmcl::DoubleMappedRing& RingOf(uint32_t data_pages) {
  static std::array<std::optional<kmcl::DoubleMappedRing>, 5> rings;
  std::optional<kmcl::DoubleMappedRing>& ring = rings[data_pages];
  if (!ring.has_value()) {
    absl::StatusOr<kmcl::DoubleMappedRing> made = kmcl::DoubleMappedRing::Create(data_pages);
    if (!made.ok()) std::abort();
    ring.emplace(*std::move(made));
  }
  std::memset(ring->ring_bytes().data(), 0, ring->ring_bytes().size());
  return *ring;
}

void DrainAndCheck(const RingMemory& memory) {
  RingReader reader(memory);
  IncomingPacket packet;
  std::span<const uint8_t> view;
  for (int i = 0; i < 10000; ++i) {
    // Alternate the copying read and the in-place read.
    const bool in_place = i % 2 == 1;
    RingStatus s = in_place ? reader.ReadInPlace(packet, view) : reader.Read(packet);
    if (s != RingStatus::kOk) {
      if (s == RingStatus::kCorrupt && reader.corruption().ok()) std::abort();
      break;
    }
    if (in_place) {
      // The view lies inside the double-mapped data area; touch every byte
      // so a view past it faults on the guard page.
      if (view.data() < memory.data() ||
          view.data() + view.size() > memory.data() + 2 * size_t{memory.data_size()}) {
        std::abort();
      }
      uint8_t sum = 0;
      for (uint8_t b : view) sum ^= b;
      packet.payload.assign(view.size(), sum);
    }
    if (packet.payload.size() > memory.data_size()) std::abort();
    if (packet.payload.size() % 8 != 0) std::abort();
    if (i % 3 == 0) reader.CommitRead();
  }
  reader.CommitRead();
  reader.BeginDrain();
  reader.EndDrain();
  (void)kmcl::SnapshotRing(memory);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const uint8_t mode = in.Take<uint8_t>();
  kmcl::DoubleMappedRing& ring = RingOf(1 + (mode >> 1) % 4);
  const std::span<uint8_t> bytes = ring.ring_bytes();
  if ((mode & 1) == 0) {
    // Raw: control words, then the data area.
    auto control = in.TakeBytes(16);
    std::memcpy(bytes.data(), control.data(), control.size());
    auto rest = in.TakeBytes(ring.memory().data_size());
    std::memcpy(ring.memory().data(), rest.data(), rest.size());
    DrainAndCheck(ring.memory());
    // A writer facing the same hostile control page must not overrun either.
    RingWriter writer(ring.memory());
    std::vector<uint8_t> payload(64, 0xAB);
    OutgoingPacket p;
    p.payload = payload;
    for (int i = 0; i < 100 && writer.Write(p) == RingStatus::kOk; ++i) {
    }
    writer.CommitWrite();
    return 0;
  }
  // Structured: valid packets, then pokes.
  RingWriter writer(ring.memory());
  std::vector<uint8_t> payload(512);
  std::vector<kmcl::GpaRange> ranges;
  std::vector<kmcl::TransferPageRange> xfer;
  const uint8_t count = in.Take<uint8_t>() % 32;
  for (uint8_t i = 0; i < count; ++i) {
    OutgoingPacket p;
    const uint8_t kind = in.Take<uint8_t>() % 4;
    const uint16_t len = in.Take<uint16_t>() % payload.size();
    std::memset(payload.data(), i, len);
    p.payload = {payload.data(), len};
    p.transaction_id = i;
    p.completion_requested = kind & 1;
    if (kind == 1) p.type = wire::PacketType::kCompletion;
    if (kind == 2) {
      p.type = wire::PacketType::kDataUsingGpaDirect;
      uint32_t offset = in.Take<uint16_t>() % 4096;
      uint32_t bytes = 1 + in.Take<uint16_t>() % 20000;
      ranges.assign(1, {bytes, offset, std::vector<uint64_t>(wire::PagesSpanned(offset, bytes), i)});
      p.gpa_ranges = ranges;
    }
    if (kind == 3) {
      p.type = wire::PacketType::kDataUsingTransferPages;
      xfer.assign(1 + in.Take<uint8_t>() % 8, {100, 200});
      p.transfer_ranges = xfer;
    }
    if (writer.Write(p) != RingStatus::kOk) break;
    if (in.Take<uint8_t>() & 1) writer.CommitWrite();
  }
  writer.CommitWrite();
  while (in.remaining() >= 3) {
    uint16_t pos = in.Take<uint16_t>() % bytes.size();
    bytes[pos] = in.Take<uint8_t>();
  }
  DrainAndCheck(ring.memory());
  return 0;
}
