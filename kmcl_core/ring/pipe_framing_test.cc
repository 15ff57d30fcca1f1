#include "kmcl_core/wire/pipe_framing.h"

#include <cstring>

#include "gtest/gtest.h"
#include "kmcl_core/ring/ring_buffer.h"
#include "kmcl_core/ring/ring_mapping.h"

namespace kmcl {
namespace {

using wire::PipePacketType;

TEST(PipeFraming, DataFramesRoundTripThroughARing) {
  DoubleMappedRing ring = *DoubleMappedRing::Create(1);
  const RingMemory& mem = ring.memory();
  RingWriter writer(mem);
  RingReader reader(mem);
  std::vector<uint8_t> data = {'p', 'i', 'p', 'e'};
  std::vector<uint8_t> framed;
  ASSERT_TRUE(FramePipePacket(PipePacketType::kData, data, framed).ok());
  OutgoingPacket out;
  out.payload = framed;
  ASSERT_EQ(writer.Write(out), RingStatus::kOk);
  writer.CommitWrite();
  IncomingPacket in;
  ASSERT_EQ(reader.Read(in), RingStatus::kOk);
  EXPECT_EQ(in.payload.size(), 16u);  // 8 header + 4 data, padded
  auto frame = ParsePipePacket(in.payload);
  ASSERT_TRUE(frame.ok()) << frame.status();
  EXPECT_EQ(frame->type, PipePacketType::kData);
  EXPECT_EQ(std::vector<uint8_t>(frame->data.begin(), frame->data.end()), data);
}

TEST(PipeFraming, PartialCarriesConsumedBytesInTheHighHalf) {
  std::vector<uint8_t> p(8 + 100);
  wire::PipeHeader h{2, (30u << 16) | 100u};
  std::memcpy(p.data(), &h, 8);
  auto frame = ParsePipePacket(p);
  ASSERT_TRUE(frame.ok());
  EXPECT_EQ(frame->bytes_consumed, 30);
  EXPECT_EQ(frame->data.size(), 100u);
}

TEST(PipeFraming, RejectsHostileFrames) {
  std::vector<uint8_t> small(4);
  EXPECT_EQ(ParsePipePacket(small).status().code(), absl::StatusCode::kDataLoss);
  std::vector<uint8_t> p(16);
  wire::PipeHeader unknown{9, 0};
  std::memcpy(p.data(), &unknown, 8);
  EXPECT_FALSE(ParsePipePacket(p).ok());
  wire::PipeHeader too_long{1, 9};
  std::memcpy(p.data(), &too_long, 8);
  EXPECT_FALSE(ParsePipePacket(p).ok());
  wire::PipeHeader overconsumed{2, (20u << 16) | 8u};
  std::memcpy(p.data(), &overconsumed, 8);
  EXPECT_FALSE(ParsePipePacket(p).ok());
  std::vector<uint8_t> big(wire::kPipeMaxPayload + 1);
  std::vector<uint8_t> out;
  EXPECT_EQ(FramePipePacket(PipePacketType::kData, big, out).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kmcl
