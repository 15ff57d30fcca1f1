// libFuzzer target: the ring reader (and writer) over arbitrary ring memory.
//
// Mode 0 (raw): the input is copied over the control words and the data
// area. Mode 1 (structured): packets of fuzzer-chosen types and sizes are
// written by RingWriter, then fuzzer-chosen bytes are poked anywhere into the
// ring, so the reader sees nearly valid rings, where bugs hide. Either way the
// reader must return kOk/kEmpty/kCorrupt without touching memory outside the
// ring (ASan checks; the ring sits between guard pages).
#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fuzz/fuzz_input.h"
#include "kmcl_core/ring_buffer.h"

namespace {

using kmcl::IncomingPacket;
using kmcl::OutgoingPacket;
using kmcl::RingMemory;
using kmcl::RingReader;
using kmcl::RingStatus;
using kmcl::RingWriter;
using kmcl::fuzz::FuzzInput;
namespace wire = kmcl::wire;

// Control page + up to 4 data pages, with PROT_NONE guard pages around them
// so that any out-of-ring access faults even without ASan.
class GuardedRing {
 public:
  explicit GuardedRing(uint32_t data_pages) : pages_(data_pages + 1) {
    total_ = (pages_ + 2) * 4096;
    base_ = static_cast<uint8_t*>(
        mmap(nullptr, total_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (base_ == MAP_FAILED) std::abort();
    if (mprotect(base_ + 4096, pages_ * 4096, PROT_READ | PROT_WRITE) != 0) std::abort();
    memory_ = *RingMemory::FromContiguous({base_ + 4096, pages_ * 4096});
  }
  ~GuardedRing() { munmap(base_, total_); }
  const RingMemory& memory() const { return memory_; }
  uint8_t* ring() { return base_ + 4096; }
  size_t ring_size() const { return pages_ * 4096; }

 private:
  size_t pages_;
  size_t total_;
  uint8_t* base_;
  RingMemory memory_;
};

void DrainAndCheck(const RingMemory& memory) {
  RingReader reader(memory);
  IncomingPacket packet;
  for (int i = 0; i < 10000; ++i) {
    RingStatus s = reader.Read(packet);
    if (s != RingStatus::kOk) {
      if (s == RingStatus::kCorrupt && reader.corruption().ok()) std::abort();
      break;
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
  GuardedRing ring(1 + (mode >> 1) % 4);
  if ((mode & 1) == 0) {
    // Raw: control words, then the data area.
    auto control = in.TakeBytes(16);
    std::memcpy(ring.ring(), control.data(), control.size());
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
    uint16_t pos = in.Take<uint16_t>() % ring.ring_size();
    ring.ring()[pos] = in.Take<uint8_t>();
  }
  DrainAndCheck(ring.memory());
  return 0;
}
