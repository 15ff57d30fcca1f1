#include "kmcl_core/ring/ring_buffer.h"

#include <cstring>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kmcl_core/ring/ring_mapping.h"

namespace kmcl {
namespace {

using ::testing::HasSubstr;
using wire::PacketType;

// A zeroed ring of its own, its data area double-mapped as RingMemory needs.
class TestRing {
 public:
  explicit TestRing(uint32_t data_pages = 1) : ring_(*DoubleMappedRing::Create(data_pages)) {}
  const RingMemory& memory() const { return ring_.memory(); }
  wire::RingControl* control() { return memory().control(); }
  uint8_t* data() { return memory().data(); }
  uint32_t data_size() const { return memory().data_size(); }

 private:
  DoubleMappedRing ring_;
};

std::vector<uint8_t> Bytes(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7);
  return v;
}

OutgoingPacket InBand(std::span<const uint8_t> payload, uint64_t tid = 0, bool completion = false) {
  OutgoingPacket p;
  p.type = PacketType::kDataInBand;
  p.payload = payload;
  p.transaction_id = tid;
  p.completion_requested = completion;
  return p;
}

// Writes raw words into the ring's data area (to forge hostile packets).
void Poke(TestRing& ring, uint32_t offset, const void* src, size_t len) {
  std::memcpy(ring.data() + offset, src, len);
}

TEST(RingMemory, RejectsBadGeometry) {
  alignas(4096) static uint8_t buf[5 * 4096];
  EXPECT_FALSE(RingMemory::Create(nullptr, buf, 4096).ok());
  EXPECT_FALSE(RingMemory::Create(buf, buf + 4096, 100).ok());
  EXPECT_FALSE(RingMemory::Create(buf, buf + 4096, 0).ok());
  EXPECT_FALSE(RingMemory::Create(buf + 1, buf + 4096, 4096).ok());
  // A double-mapped view is a control page plus an even number of data pages.
  EXPECT_FALSE(RingMemory::FromDoubleMappedView({buf, 2 * 4096}).ok());
  EXPECT_FALSE(RingMemory::FromDoubleMappedView({buf, 4 * 4096}).ok());
  auto one = RingMemory::FromDoubleMappedView({buf, 3 * 4096});
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->data_size(), 4096u);
  auto two = RingMemory::FromDoubleMappedView({buf, 5 * 4096});
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->data_size(), 2 * 4096u);
}

TEST(DoubleMappedRing, TheDataAreaAppearsTwiceBackToBack) {
  auto ring = DoubleMappedRing::Create(3);
  ASSERT_TRUE(ring.ok()) << ring.status();
  const RingMemory& m = ring->memory();
  ASSERT_EQ(m.data_size(), 3 * 4096u);
  EXPECT_EQ(reinterpret_cast<uint8_t*>(m.control()) + 4096, m.data());
  EXPECT_EQ(ring->ring_bytes().data(), reinterpret_cast<uint8_t*>(m.control()));
  EXPECT_EQ(ring->ring_bytes().size(), 4 * 4096u);
  for (uint32_t i = 0; i < m.data_size(); i += 509) {
    m.data()[i] = static_cast<uint8_t>(i);
    EXPECT_EQ(m.data()[i + m.data_size()], static_cast<uint8_t>(i)) << i;
    m.data()[i + m.data_size()] = static_cast<uint8_t>(~i);
    EXPECT_EQ(m.data()[i], static_cast<uint8_t>(~i)) << i;
  }
  EXPECT_FALSE(DoubleMappedRing::Create(0).ok());
}

TEST(DoubleMappedRingPages, RepeatsEachRingsDataPages) {
  auto pages = DoubleMappedRingPages(6, 2);
  ASSERT_TRUE(pages.ok()) << pages.status();
  // [control 0][data 1][data 1 again] [control 2][data 3 4 5][data 3 4 5 again]
  EXPECT_EQ(*pages, (std::vector<uint32_t>{0, 1, 1, 2, 3, 4, 5, 3, 4, 5}));
  EXPECT_FALSE(DoubleMappedRingPages(6, 1).ok());  // no data page in the first ring
  EXPECT_FALSE(DoubleMappedRingPages(6, 5).ok());  // second ring too small
  // The offset comes from the guest's OPENCHANNEL: offset + 2 must not wrap.
  EXPECT_FALSE(DoubleMappedRingPages(6, 0xFFFFFFFF).ok());
  EXPECT_FALSE(DoubleMappedRingPages(6, 0xFFFFFFFE).ok());
}

TEST(RingPair, SplitsTheDoubleMappedRingGpadlViewAtTheDownstreamOffset) {
  // The view of a 6-page GPADL split at 2: 2 * 6 - 2 = 10 pages.
  alignas(4096) static uint8_t view[10 * 4096];
  auto pair = RingPair::FromDoubleMappedView({view, sizeof(view)}, 2);
  ASSERT_TRUE(pair.ok()) << pair.status();
  EXPECT_EQ(reinterpret_cast<uint8_t*>(pair->guest_to_host.control()), view);
  EXPECT_EQ(pair->guest_to_host.data(), view + 4096);
  EXPECT_EQ(pair->guest_to_host.data_size(), 4096u);
  EXPECT_EQ(reinterpret_cast<uint8_t*>(pair->host_to_guest.control()), view + 3 * 4096);
  EXPECT_EQ(pair->host_to_guest.data(), view + 4 * 4096);
  EXPECT_EQ(pair->host_to_guest.data_size(), 3 * 4096u);
  EXPECT_FALSE(RingPair::FromDoubleMappedView({view, sizeof(view)}, 1).ok());
  EXPECT_FALSE(RingPair::FromDoubleMappedView({view, sizeof(view)}, 5).ok());
  EXPECT_FALSE(RingPair::FromDoubleMappedView({view, sizeof(view)}, 0xFFFFFFFF).ok());
  EXPECT_FALSE(RingPair::FromDoubleMappedView({view, 9 * 4096}, 2).ok());  // odd page count
}

TEST(Ring, EmptyRingReadsEmpty) {
  TestRing ring;
  RingReader reader(ring.memory());
  IncomingPacket p;
  EXPECT_EQ(reader.Read(p), RingStatus::kEmpty);
  EXPECT_FALSE(reader.HasPacket());
}

TEST(Ring, WriterAdvertisesPendingSendSizeFeature) {
  TestRing ring;
  RingWriter writer(ring.memory());
  EXPECT_EQ(ring.control()->feature_bits & wire::kRingFeaturePendingSendSize, 1u);
}

TEST(Ring, PacketLayoutIsByteExact) {
  TestRing ring;
  RingWriter writer(ring.memory());
  auto payload = Bytes(13, 1);
  ASSERT_EQ(writer.Write(InBand(payload, 0x1122334455667788, true)), RingStatus::kOk);
  writer.CommitWrite();
  // 16-byte descriptor + 16 bytes of padded payload + 8-byte trailer.
  EXPECT_EQ(ring.control()->write_index, 40u);
  wire::PacketDescriptor d;
  std::memcpy(&d, ring.data(), 16);
  EXPECT_EQ(d.type, 6);
  EXPECT_EQ(d.offset8, 2);
  EXPECT_EQ(d.len8, 4);
  EXPECT_EQ(d.flags, 1);
  EXPECT_EQ(d.transaction_id, 0x1122334455667788u);
  EXPECT_EQ(std::memcmp(ring.data() + 16, payload.data(), 13), 0);
  for (int i = 29; i < 32; ++i) EXPECT_EQ(ring.data()[i], 0) << "padding byte " << i;
  uint64_t trailer;
  std::memcpy(&trailer, ring.data() + 32, 8);
  EXPECT_EQ(trailer, 0u);  // start offset 0 in the high half

  ASSERT_EQ(writer.Write(InBand(payload)), RingStatus::kOk);
  writer.CommitWrite();
  std::memcpy(&trailer, ring.data() + 72, 8);
  EXPECT_EQ(trailer, uint64_t{40} << 32);
}

TEST(Ring, RoundTripsInBandAndCompletionPackets) {
  TestRing ring;
  RingWriter writer(ring.memory());
  RingReader reader(ring.memory());
  auto a = Bytes(24, 3);
  auto b = Bytes(5, 9);
  OutgoingPacket completion = InBand(b, 77);
  completion.type = PacketType::kCompletion;
  ASSERT_EQ(writer.Write(InBand(a, 42, true)), RingStatus::kOk);
  ASSERT_EQ(writer.Write(completion), RingStatus::kOk);
  writer.CommitWrite();
  IncomingPacket p;
  ASSERT_EQ(reader.Read(p), RingStatus::kOk);
  EXPECT_EQ(p.type, PacketType::kDataInBand);
  EXPECT_TRUE(p.completion_requested());
  EXPECT_EQ(p.transaction_id, 42u);
  EXPECT_EQ(p.payload, a);
  ASSERT_EQ(reader.Read(p), RingStatus::kOk);
  EXPECT_EQ(p.type, PacketType::kCompletion);
  EXPECT_EQ(p.transaction_id, 77u);
  ASSERT_EQ(p.payload.size(), 8u);  // padded to 8 on the wire
  EXPECT_EQ(std::memcmp(p.payload.data(), b.data(), 5), 0);
  EXPECT_EQ(reader.Read(p), RingStatus::kEmpty);
}

TEST(Ring, RoundTripsGpaDirectAndTransferPagePackets) {
  TestRing ring(2);
  RingWriter writer(ring.memory());
  RingReader reader(ring.memory());
  std::vector<GpaRange> ranges = {{100, 4000, {7, 8}}, {8192, 0, {20, 21}}};
  auto payload = Bytes(16, 5);
  OutgoingPacket gpa = InBand(payload, 5, true);
  gpa.type = PacketType::kDataUsingGpaDirect;
  gpa.gpa_ranges = ranges;
  std::vector<TransferPageRange> xfer = {{1500, 0}, {1500, 4096}, {60, 8192}};
  OutgoingPacket tp = InBand(payload, 6, true);
  tp.type = PacketType::kDataUsingTransferPages;
  tp.transfer_page_set_id = 0xCAFE;
  tp.sender_owns_set = true;
  tp.transfer_ranges = xfer;
  ASSERT_EQ(writer.Write(gpa), RingStatus::kOk);
  ASSERT_EQ(writer.Write(tp), RingStatus::kOk);
  writer.CommitWrite();

  wire::PacketDescriptor d;
  std::memcpy(&d, ring.data(), 16);
  // descriptor 16 + GPA header 8 + (8 + 16) + (8 + 16) = 72 bytes before the payload.
  EXPECT_EQ(d.offset8, 9);

  IncomingPacket p;
  ASSERT_EQ(reader.Read(p), RingStatus::kOk);
  EXPECT_EQ(p.type, PacketType::kDataUsingGpaDirect);
  EXPECT_EQ(p.gpa_ranges, ranges);
  EXPECT_EQ(p.payload, payload);
  ASSERT_EQ(reader.Read(p), RingStatus::kOk);
  EXPECT_EQ(p.type, PacketType::kDataUsingTransferPages);
  EXPECT_EQ(p.transfer_page_set_id, 0xCAFE);
  EXPECT_TRUE(p.sender_owns_set);
  EXPECT_EQ(p.transfer_ranges, xfer);
  EXPECT_TRUE(p.gpa_ranges.empty());
  EXPECT_EQ(p.payload, payload);
}

TEST(Ring, WrapsAroundTheEndOfTheDataArea) {
  TestRing ring;  // 4096 data bytes
  RingWriter writer(ring.memory());
  RingReader reader(ring.memory());
  IncomingPacket p;
  // Move both indices to near the end, then write packets that straddle it.
  auto filler = Bytes(4000, 1);
  ASSERT_EQ(writer.Write(InBand(filler)), RingStatus::kOk);
  writer.CommitWrite();
  ASSERT_EQ(reader.Read(p), RingStatus::kOk);
  reader.CommitRead();
  const uint32_t start = ring.control()->write_index;  // 4024
  for (int round = 0; round < 50; ++round) {
    auto payload = Bytes(100 + round * 13, static_cast<uint8_t>(round));
    ASSERT_EQ(writer.Write(InBand(payload, round)), RingStatus::kOk) << round;
    writer.CommitWrite();
    ASSERT_EQ(reader.Read(p), RingStatus::kOk) << round;
    reader.CommitRead();
    ASSERT_EQ(p.transaction_id, static_cast<uint64_t>(round));
    ASSERT_EQ(p.payload.size(), wire::RoundUp8(payload.size()));
    ASSERT_EQ(std::memcmp(p.payload.data(), payload.data(), payload.size()), 0) << round;
  }
  EXPECT_NE(ring.control()->write_index, start);
  EXPECT_EQ(reader.Read(p), RingStatus::kEmpty);
}

// Forward declaration: the independent writer further down.
void LinuxStyleWrite(TestRing& ring, uint64_t tid, const std::vector<uint8_t>& payload);

TEST(Ring, WrappedPacketsAreReadInPlaceAndWrittenInTheWireLayout) {
  // Every start offset from 256 bytes before the end of the ring: packets
  // that fit, that end exactly at the end, and that wrap at every point
  // (descriptor, payload, padding, trailer).
  for (uint32_t start = 4096 - 256; start < 4096; start += 8) {
    SCOPED_TRACE(start);
    TestRing ring, reference;
    for (TestRing* r : {&ring, &reference}) {
      r->control()->write_index = start;
      r->control()->read_index = start;
    }
    RingWriter writer(ring.memory());
    RingReader reader(ring.memory());
    auto payload = Bytes(100, static_cast<uint8_t>(start));
    ASSERT_EQ(writer.Write(InBand(payload, 7, true)), RingStatus::kOk);
    writer.CommitWrite();
    // Byte for byte what a writer that knows nothing of the double mapping
    // puts in the ring (Linux's hv_ringbuffer_write, modulo the ring size).
    LinuxStyleWrite(reference, 7, payload);
    ASSERT_EQ(ring.control()->write_index, reference.control()->write_index);
    ASSERT_EQ(std::memcmp(ring.data(), reference.data(), ring.data_size()), 0);

    IncomingPacket p;
    std::span<const uint8_t> view;
    ASSERT_EQ(reader.ReadInPlace(p, view), RingStatus::kOk) << reader.corruption();
    // In place: the payload is the ring's own memory, through the second
    // mapping when it wraps, never a private copy.
    EXPECT_EQ(view.data(), ring.data() + start + 16);
    ASSERT_EQ(view.size(), 104u);
    EXPECT_EQ(std::memcmp(view.data(), payload.data(), payload.size()), 0);
    EXPECT_EQ(p.ring_offset, start);
    EXPECT_EQ(p.transaction_id, 7u);
    reader.CommitRead();
    EXPECT_EQ(ring.control()->read_index, ring.control()->write_index);
  }
}

TEST(Ring, PacketsWithHeadersRoundTripAcrossTheEndAtEveryOffset) {
  const std::vector<GpaRange> ranges = {{3 * 4096 - 100, 100, {11, 12, 13}}, {8, 0, {99}}};
  const std::vector<TransferPageRange> transfers = {{64, 0}, {128, 4096}, {7, 9}};
  for (uint32_t start = 4096 - 200; start < 4096; start += 8) {
    SCOPED_TRACE(start);
    TestRing ring;
    ring.control()->write_index = start;
    ring.control()->read_index = start;
    RingWriter writer(ring.memory());
    RingReader reader(ring.memory());
    auto payload = Bytes(40, static_cast<uint8_t>(start));
    OutgoingPacket gpa;
    gpa.type = PacketType::kDataUsingGpaDirect;
    gpa.payload = payload;
    gpa.gpa_ranges = ranges;
    OutgoingPacket xfer;
    xfer.type = PacketType::kDataUsingTransferPages;
    xfer.payload = payload;
    xfer.transfer_page_set_id = 3;
    xfer.transfer_ranges = transfers;
    ASSERT_EQ(writer.Write(gpa), RingStatus::kOk);
    ASSERT_EQ(writer.Write(xfer), RingStatus::kOk);
    writer.CommitWrite();
    IncomingPacket p;
    std::span<const uint8_t> view;
    ASSERT_EQ(reader.ReadInPlace(p, view), RingStatus::kOk) << reader.corruption();
    EXPECT_EQ(p.type, PacketType::kDataUsingGpaDirect);
    ASSERT_EQ(p.gpa_ranges.size(), 2u);
    EXPECT_EQ(p.gpa_ranges[0].pfns, ranges[0].pfns);
    EXPECT_EQ(p.gpa_ranges[1].byte_count, 8u);
    EXPECT_EQ(std::memcmp(view.data(), payload.data(), payload.size()), 0);
    ASSERT_EQ(reader.Read(p), RingStatus::kOk) << reader.corruption();
    EXPECT_EQ(p.type, PacketType::kDataUsingTransferPages);
    EXPECT_EQ(p.transfer_page_set_id, 3);
    EXPECT_EQ(p.transfer_ranges, transfers);
    EXPECT_EQ(std::memcmp(p.payload.data(), payload.data(), payload.size()), 0);
    EXPECT_EQ(reader.Read(p), RingStatus::kEmpty);
  }
}

TEST(Ring, ExactlyFullIsSizeMinusEightAndNeverLooksEmpty) {
  TestRing ring;
  RingWriter writer(ring.memory());
  RingReader reader(ring.memory());
  // 4096 - 8 free; a 4064-byte payload needs 16 + 4064 + 8 = 4088.
  auto big = Bytes(4064, 2);
  ASSERT_EQ(writer.Write(InBand(big)), RingStatus::kOk);
  writer.CommitWrite();
  EXPECT_EQ(SnapshotRing(ring.memory()).free_bytes, 0u);
  EXPECT_EQ(SnapshotRing(ring.memory()).used_bytes, 4088u);
  auto one = Bytes(1, 0);
  EXPECT_EQ(writer.Write(InBand(one)), RingStatus::kFull);
  EXPECT_EQ(writer.bytes_needed(), 32u);
  IncomingPacket p;
  ASSERT_EQ(reader.Read(p), RingStatus::kOk);
  EXPECT_EQ(p.payload, big);
  reader.CommitRead();
  EXPECT_EQ(writer.Write(InBand(one)), RingStatus::kOk);
}

TEST(Ring, OversizedPacketIsFullForeverNotCorrupt) {
  TestRing ring;
  RingWriter writer(ring.memory());
  auto huge = Bytes(4065, 0);
  EXPECT_EQ(writer.Write(InBand(huge)), RingStatus::kFull);
  EXPECT_GT(writer.bytes_needed(), ring.data_size() - 8);
  EXPECT_TRUE(writer.corruption().ok());
}

TEST(Ring, NothingIsVisibleBeforeCommitAndOneCommitPublishesABatch) {
  TestRing ring;
  RingWriter writer(ring.memory());
  RingReader reader(ring.memory());
  auto payload = Bytes(8, 1);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(writer.Write(InBand(payload, i)), RingStatus::kOk);
  IncomingPacket p;
  EXPECT_EQ(ring.control()->write_index, 0u);
  EXPECT_EQ(reader.Read(p), RingStatus::kEmpty);
  writer.CommitWrite();
  EXPECT_EQ(ring.control()->write_index, 3u * 32);
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(reader.Read(p), RingStatus::kOk);
    EXPECT_EQ(p.transaction_id, static_cast<uint64_t>(i));
  }
  EXPECT_EQ(ring.control()->read_index, 0u);  // reads are private until committed
  reader.RevertRead();
  ASSERT_EQ(reader.Read(p), RingStatus::kOk);
  EXPECT_EQ(p.transaction_id, 0u) << "revert rewinds to the committed position";
  writer.RevertWrite();  // nothing uncommitted: no effect
  EXPECT_EQ(ring.control()->write_index, 96u);
}

TEST(Ring, RevertWriteDropsUncommittedPackets) {
  TestRing ring;
  RingWriter writer(ring.memory());
  RingReader reader(ring.memory());
  auto payload = Bytes(8, 1);
  ASSERT_EQ(writer.Write(InBand(payload, 1)), RingStatus::kOk);
  writer.RevertWrite();
  ASSERT_EQ(writer.Write(InBand(payload, 2)), RingStatus::kOk);
  writer.CommitWrite();
  IncomingPacket p;
  ASSERT_EQ(reader.Read(p), RingStatus::kOk);
  EXPECT_EQ(p.transaction_id, 2u);
  EXPECT_EQ(reader.Read(p), RingStatus::kEmpty);
}

TEST(Ring, WriterSignalsOnlyOnEmptyToNonEmptyWhileUnmasked) {
  TestRing ring;
  RingWriter writer(ring.memory());
  RingReader reader(ring.memory());
  auto payload = Bytes(8, 1);
  ASSERT_EQ(writer.Write(InBand(payload)), RingStatus::kOk);
  EXPECT_TRUE(writer.CommitWrite()) << "empty -> non-empty, unmasked";
  ASSERT_EQ(writer.Write(InBand(payload)), RingStatus::kOk);
  EXPECT_FALSE(writer.CommitWrite()) << "ring was already non-empty";
  EXPECT_FALSE(writer.CommitWrite()) << "nothing new";
  IncomingPacket p;
  while (reader.Read(p) == RingStatus::kOk) {
  }
  reader.CommitRead();
  reader.BeginDrain();
  ASSERT_EQ(writer.Write(InBand(payload)), RingStatus::kOk);
  EXPECT_FALSE(writer.CommitWrite()) << "consumer has interrupts masked";
  EXPECT_TRUE(reader.EndDrain()) << "the packet that raced in is reported";
}

TEST(Ring, EndDrainPublishesReadsSoTheWriterStillSignals) {
  // The interleaving that lost wakeups: the reader drained everything but had
  // not committed when it unmasked; the writer then saw a stale read_index,
  // decided the ring was not empty, and did not signal.
  TestRing ring;
  RingWriter writer(ring.memory());
  RingReader reader(ring.memory());
  auto payload = Bytes(8, 1);
  ASSERT_EQ(writer.Write(InBand(payload)), RingStatus::kOk);
  writer.CommitWrite();
  reader.BeginDrain();
  IncomingPacket p;
  ASSERT_EQ(reader.Read(p), RingStatus::kOk);
  ASSERT_EQ(reader.Read(p), RingStatus::kEmpty);
  EXPECT_FALSE(reader.EndDrain());  // no CommitRead before it
  EXPECT_EQ(ring.control()->read_index, ring.control()->write_index) << "published by EndDrain";
  ASSERT_EQ(writer.Write(InBand(payload)), RingStatus::kOk);
  EXPECT_TRUE(writer.CommitWrite()) << "empty -> non-empty: the reader must be woken";
}

TEST(Ring, ReaderSignalsWhenFreeSpaceCrossesPendingSendSize) {
  TestRing ring;
  RingWriter writer(ring.memory());
  RingReader reader(ring.memory());
  auto payload = Bytes(984, 1);  // 1008 bytes per packet in the ring
  int written = 0;
  while (writer.Write(InBand(payload, written)) == RingStatus::kOk) ++written;
  writer.CommitWrite();
  ASSERT_EQ(written, 4);  // 4032 of 4088 bytes
  // Needs 1008 bytes: blocked; nothing drained yet.
  EXPECT_FALSE(writer.ArmPendingSend(writer.bytes_needed()));
  EXPECT_EQ(ring.control()->pending_send_sz, 1008u);
  IncomingPacket p;
  ASSERT_EQ(reader.Read(p), RingStatus::kOk);
  EXPECT_TRUE(reader.CommitRead()) << "free went 56 -> 1064, crossing 1008";
  ASSERT_EQ(reader.Read(p), RingStatus::kOk);
  EXPECT_FALSE(reader.CommitRead()) << "already above pending_send_sz before this read";
  writer.ClearPendingSend();
  ASSERT_EQ(reader.Read(p), RingStatus::kOk);
  EXPECT_FALSE(reader.CommitRead()) << "no pending send";
}

TEST(Ring, ArmPendingSendReportsSpaceThatFreedMeanwhile) {
  TestRing ring;
  RingWriter writer(ring.memory());
  RingReader reader(ring.memory());
  auto payload = Bytes(984, 1);
  while (writer.Write(InBand(payload)) == RingStatus::kOk) {
  }
  writer.CommitWrite();
  IncomingPacket p;
  ASSERT_EQ(reader.Read(p), RingStatus::kOk);
  reader.CommitRead();  // the writer has not looked at read_index since
  EXPECT_TRUE(writer.ArmPendingSend(1008));
}

TEST(Ring, ReaderDoesNotSignalAProducerWithoutTheFeature) {
  TestRing ring;
  RingWriter writer(ring.memory());
  RingReader reader(ring.memory());
  auto payload = Bytes(984, 1);
  while (writer.Write(InBand(payload)) == RingStatus::kOk) {
  }
  writer.CommitWrite();
  writer.ArmPendingSend(1008);
  ring.control()->feature_bits = 0;  // an old peer that never advertised it
  IncomingPacket p;
  ASSERT_EQ(reader.Read(p), RingStatus::kOk);
  EXPECT_FALSE(reader.CommitRead());
}

TEST(Ring, PendingSendSizeLowBitsAreIgnored) {
  TestRing ring;
  RingWriter writer(ring.memory());
  RingReader reader(ring.memory());
  auto payload = Bytes(984, 1);
  while (writer.Write(InBand(payload)) == RingStatus::kOk) {
  }
  writer.CommitWrite();
  ring.control()->pending_send_sz = 1008 + 7;  // a peer that writes size - 1 style values
  IncomingPacket p;
  ASSERT_EQ(reader.Read(p), RingStatus::kOk);
  EXPECT_TRUE(reader.CommitRead());
}

// ---- Corruption: every malformed input is a typed error, never a crash. ----

struct CorruptionCase {
  const char* name;
  void (*forge)(TestRing&);
  const char* message;
};

void Descriptor(TestRing& ring, uint16_t type, uint16_t offset8, uint16_t len8, uint16_t flags,
                uint32_t write_index) {
  wire::PacketDescriptor d{type, offset8, len8, flags, 0};
  Poke(ring, 0, &d, sizeof(d));
  ring.control()->write_index = write_index;
}

const CorruptionCase kCorruptions[] = {
    {"misaligned write_index", [](TestRing& r) { r.control()->write_index = 12; }, "aligned"},
    {"write_index beyond data", [](TestRing& r) { r.control()->write_index = 8192; }, "below"},
    {"partial packet", [](TestRing& r) { r.control()->write_index = 16; }, "less than a packet"},
    {"offset8 below 2", [](TestRing& r) { Descriptor(r, 6, 1, 3, 0, 32); }, "offset8"},
    {"len8 below offset8", [](TestRing& r) { Descriptor(r, 6, 3, 2, 0, 32); }, "len8"},
    {"unknown flag", [](TestRing& r) { Descriptor(r, 6, 2, 2, 2, 24); }, "unknown flags"},
    {"longer than written", [](TestRing& r) { Descriptor(r, 6, 2, 100, 0, 32); }, "were written"},
    {"unsupported type", [](TestRing& r) { Descriptor(r, 4, 2, 2, 0, 24); }, "unsupported type"},
    {"GPA direct without header",
     [](TestRing& r) { Descriptor(r, 9, 2, 2, 0, 24); }, "too short"},
    {"GPA direct with zero ranges",
     [](TestRing& r) {
       Descriptor(r, 9, 3, 3, 0, 32);
       wire::GpaDirectHeader h{0, 0};
       Poke(r, 16, &h, 8);
     },
     "no ranges"},
    {"GPA direct range count beyond header",
     [](TestRing& r) {
       Descriptor(r, 9, 4, 4, 0, 40);
       wire::GpaDirectHeader h{0, 1000000};
       Poke(r, 16, &h, 8);
     },
     "claims"},
    {"GPA direct range offset beyond page",
     [](TestRing& r) {
       Descriptor(r, 9, 5, 5, 0, 48);
       wire::GpaDirectHeader h{0, 1};
       wire::GpaRangeHeader rh{8, 4096};
       Poke(r, 16, &h, 8);
       Poke(r, 24, &rh, 8);
     },
     "offset 4096"},
    {"GPA direct PFNs past header",
     [](TestRing& r) {
       Descriptor(r, 9, 5, 5, 0, 48);
       wire::GpaDirectHeader h{0, 1};
       wire::GpaRangeHeader rh{3 * 4096, 0};  // needs 3 PFNs, header has room for 1
       Poke(r, 16, &h, 8);
       Poke(r, 24, &rh, 8);
     },
     "PFNs past the end"},
    {"transfer ranges beyond header",
     [](TestRing& r) {
       Descriptor(r, 7, 4, 4, 0, 40);
       wire::TransferPageHeader h{1, 0, 0, 50};
       Poke(r, 16, &h, 8);
     },
     "claims"},
};

TEST(RingCorruption, EveryMalformedInputIsATypedErrorThatSticks) {
  for (const CorruptionCase& c : kCorruptions) {
    SCOPED_TRACE(c.name);
    TestRing ring;
    c.forge(ring);
    RingReader reader(ring.memory());
    IncomingPacket p;
    EXPECT_EQ(reader.Read(p), RingStatus::kCorrupt);
    EXPECT_EQ(reader.corruption().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(std::string(reader.corruption().message()), HasSubstr(c.message));
    // Poisoned: it stays corrupt, publishes nothing, never signals.
    EXPECT_EQ(reader.Read(p), RingStatus::kCorrupt);
    EXPECT_FALSE(reader.CommitRead());
    EXPECT_EQ(ring.control()->read_index, 0u);
  }
}

TEST(RingCorruption, ReaderRejectsAWriteIndexThatMovesBackwards) {
  TestRing ring;
  RingWriter writer(ring.memory());
  RingReader reader(ring.memory());
  auto payload = Bytes(8, 1);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(writer.Write(InBand(payload)), RingStatus::kOk);
  writer.CommitWrite();
  IncomingPacket p;
  ASSERT_EQ(reader.Read(p), RingStatus::kOk);
  ASSERT_EQ(reader.Read(p), RingStatus::kOk);
  ASSERT_EQ(reader.Read(p), RingStatus::kOk);
  ring.control()->write_index = 32;  // behind the cursor at 96
  EXPECT_EQ(reader.Read(p), RingStatus::kCorrupt);
  EXPECT_THAT(std::string(reader.corruption().message()), HasSubstr("moved back"));
}

TEST(RingCorruption, WriterRejectsABadReadIndex) {
  {
    TestRing ring;
    ring.control()->read_index = 4095;
    RingWriter writer(ring.memory());
    auto payload = Bytes(8, 1);
    EXPECT_EQ(writer.Write(InBand(payload)), RingStatus::kCorrupt);
    EXPECT_THAT(std::string(writer.corruption().message()), HasSubstr("read_index"));
  }
  {
    TestRing ring;
    RingWriter writer(ring.memory());
    auto payload = Bytes(4000, 1);
    ASSERT_EQ(writer.Write(InBand(payload)), RingStatus::kOk);
    writer.CommitWrite();
    ring.control()->read_index = 4088;  // beyond what was ever published (4024)
    EXPECT_EQ(writer.Write(InBand(payload)), RingStatus::kCorrupt);
    EXPECT_THAT(std::string(writer.corruption().message()), HasSubstr("outside the published"));
    EXPECT_FALSE(writer.CommitWrite());
  }
}

// ---- A reader for rings written by an independent implementation ----------

// Writes one in-band packet the way Linux's hv_ringbuffer_write does, without
// using RingWriter: descriptor, payload, zero padding, then the u64 trailer
// holding the previous write index in its high half.
void LinuxStyleWrite(TestRing& ring, uint64_t tid, const std::vector<uint8_t>& payload) {
  uint32_t w = ring.control()->write_index;
  uint32_t packetlen = 16 + payload.size();
  uint32_t aligned = (packetlen + 7) & ~7u;
  std::vector<uint8_t> pkt(aligned + 8, 0);
  wire::PacketDescriptor d{6, 2, static_cast<uint16_t>(aligned / 8), 1, tid};
  std::memcpy(pkt.data(), &d, 16);
  std::memcpy(pkt.data() + 16, payload.data(), payload.size());
  uint64_t prev = uint64_t{w} << 32;
  std::memcpy(pkt.data() + aligned, &prev, 8);
  for (size_t i = 0; i < pkt.size(); ++i) ring.data()[(w + i) % ring.data_size()] = pkt[i];
  ring.control()->write_index = (w + pkt.size()) % ring.data_size();
}

TEST(RingInterop, ReadsPacketsWrittenByAnIndependentWriter) {
  TestRing ring;
  RingReader reader(ring.memory());
  IncomingPacket p;
  for (int i = 0; i < 100; ++i) {  // wraps several times
    auto payload = Bytes(50 + i, static_cast<uint8_t>(i));
    LinuxStyleWrite(ring, i, payload);
    ASSERT_EQ(reader.Read(p), RingStatus::kOk) << reader.corruption();
    reader.CommitRead();
    EXPECT_EQ(p.transaction_id, static_cast<uint64_t>(i));
    EXPECT_EQ(std::memcmp(p.payload.data(), payload.data(), payload.size()), 0);
  }
}

// ---- Two threads, ten million packets ---------------------------------------

uint64_t Checksum(const uint8_t* data, size_t n) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (size_t i = 0; i < n; ++i) h = (h ^ data[i]) * 1099511628211ull;
  return h;
}

TEST(RingThreads, TenMillionPacketsOfRandomSizesArriveInOrderAndIntact) {
  constexpr uint64_t kPackets = 10'000'000;
  TestRing ring(16);  // 64 KiB of data
  RingWriter writer(ring.memory());
  RingReader reader(ring.memory());
  std::thread producer([&] {
    std::mt19937_64 rng(12345);
    std::vector<uint8_t> payload(256);
    uint64_t seq = 0;
    while (seq < kPackets) {
      // Payload: 8-byte sequence, 8-byte checksum of the rest, random bytes.
      size_t len = 16 + rng() % 200;
      for (size_t i = 16; i < len; ++i) payload[i] = static_cast<uint8_t>(rng());
      uint64_t sum = Checksum(payload.data() + 16, len - 16);
      std::memcpy(payload.data(), &seq, 8);
      std::memcpy(payload.data() + 8, &sum, 8);
      OutgoingPacket p = InBand({payload.data(), len}, seq, seq % 3 == 0);
      while (writer.Write(p) == RingStatus::kFull) {
        writer.CommitWrite();
        std::this_thread::yield();
      }
      ++seq;
      if (seq % 16 == 0) writer.CommitWrite();  // batches of 16
    }
    writer.CommitWrite();
  });
  uint64_t expected = 0;
  uint64_t bad = 0;
  IncomingPacket p;
  while (expected < kPackets) {
    RingStatus s = reader.Read(p);
    if (s == RingStatus::kEmpty) {
      reader.CommitRead();
      std::this_thread::yield();
      continue;
    }
    ASSERT_EQ(s, RingStatus::kOk) << reader.corruption();
    uint64_t seq, sum;
    std::memcpy(&seq, p.payload.data(), 8);
    std::memcpy(&sum, p.payload.data() + 8, 8);
    // The checksum covers the unpadded bytes; recompute over each candidate
    // length within the 8-byte padding (the wire keeps no exact length).
    bool ok = false;
    for (size_t pad = 0; pad < 8 && !ok; ++pad) {
      if (p.payload.size() - pad < 16) break;
      ok = Checksum(p.payload.data() + 16, p.payload.size() - 16 - pad) == sum;
    }
    if (seq != expected || p.transaction_id != expected || !ok ||
        p.completion_requested() != (expected % 3 == 0)) {
      ++bad;
    }
    ++expected;
    if (expected % 32 == 0) reader.CommitRead();
  }
  reader.CommitRead();
  producer.join();
  EXPECT_EQ(bad, 0u);
  EXPECT_EQ(reader.Read(p), RingStatus::kEmpty);
}

}  // namespace
}  // namespace kmcl
