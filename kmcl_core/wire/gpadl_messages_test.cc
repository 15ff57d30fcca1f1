#include "kmcl_core/wire/gpadl_messages.h"

#include <cstring>
#include <numeric>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl {
namespace {

using ::testing::HasSubstr;

GpaRange Range(uint32_t offset, uint32_t count, uint64_t first_pfn) {
  GpaRange r{count, offset, {}};
  uint64_t pages = wire::PagesSpanned(offset, count);
  for (uint64_t i = 0; i < pages; ++i) r.pfns.push_back(first_pfn + i);
  return r;
}

absl::StatusOr<std::vector<GpaRange>> Assemble(const std::vector<ChannelMessage>& msgs,
                                               uint64_t pages = 1 << 20) {
  auto a = GpadlAssembler::FromHeader(msgs[0], pages);
  if (!a.ok()) return a.status();
  for (size_t i = 1; i < msgs.size(); ++i) {
    if (absl::Status s = a->AddBody(msgs[i]); !s.ok()) return s;
  }
  return a->Finish();
}

TEST(GpadlMessages, SingleSmallRangeFitsInTheHeader) {
  std::vector<GpaRange> ranges = {Range(0, 8192, 100)};
  auto msgs = EncodeGpadlMessages(7, 0xE1E10, ranges);
  ASSERT_TRUE(msgs.ok());
  ASSERT_EQ(msgs->size(), 1u);
  const ChannelMessage& m = (*msgs)[0];
  ASSERT_EQ(m.size(), 20u + 8 + 16);
  wire::GpadlHeaderMessage h;
  std::memcpy(&h, m.data(), sizeof(h));
  EXPECT_EQ(h.header.message_type, 8u);
  EXPECT_EQ(h.child_relid, 7u);
  EXPECT_EQ(h.gpadl, 0xE1E10u);
  EXPECT_EQ(h.range_buflen, 24);
  EXPECT_EQ(h.range_count, 1);
  uint32_t bc, bo;
  std::memcpy(&bc, m.data() + 20, 4);
  std::memcpy(&bo, m.data() + 24, 4);
  EXPECT_EQ(bc, 8192u);
  EXPECT_EQ(bo, 0u);
  auto back = Assemble(*msgs);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, ranges);
}

TEST(GpadlMessages, SplitsLikeLinux26PfnsThen28PerBody) {
  // 100 pages: header holds 26 PFNs, then bodies of 28, 28, 18.
  std::vector<GpaRange> ranges = {Range(0, 100 * 4096, 1000)};
  auto msgs = EncodeGpadlMessages(1, 5, ranges);
  ASSERT_TRUE(msgs.ok());
  ASSERT_EQ(msgs->size(), 4u);
  EXPECT_EQ((*msgs)[0].size(), 20u + 8 + 26 * 8);
  EXPECT_EQ((*msgs)[1].size(), 16u + 28 * 8);
  EXPECT_EQ((*msgs)[2].size(), 16u + 28 * 8);
  EXPECT_EQ((*msgs)[3].size(), 16u + 18 * 8);
  for (const auto& m : *msgs) EXPECT_LE(m.size(), wire::kMaxChannelMessageSize);
  uint32_t type;
  std::memcpy(&type, (*msgs)[1].data(), 4);
  EXPECT_EQ(type, 9u);
  auto back = Assemble(*msgs);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, ranges);
}

TEST(GpadlMessages, MultiRangeWithByteOffsetsRoundTrips) {
  std::vector<GpaRange> ranges = {Range(100, 5000, 10), Range(0, 4096 * 40, 500),
                                  Range(4000, 200, 77)};
  auto msgs = EncodeGpadlMessages(3, 9, ranges);
  ASSERT_TRUE(msgs.ok());
  auto back = Assemble(*msgs);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, ranges);
}

TEST(GpadlMessages, EncoderRejectsWhatTheWireCannotCarry) {
  EXPECT_FALSE(EncodeGpadlMessages(1, 1, {}).ok());
  std::vector<GpaRange> bad = {{100, 0, {1, 2}}};  // 100 bytes span 1 page, not 2
  EXPECT_EQ(EncodeGpadlMessages(1, 1, bad).status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<GpaRange> huge = {Range(0, 9000 * 4096u, 0)};  // 72 KB of PFNs > u16
  auto s = EncodeGpadlMessages(1, 1, huge).status();
  EXPECT_THAT(std::string(s.message()), HasSubstr("65535"));
}

TEST(GpadlMessages, PfnsOutsideGuestMemoryAreOutOfRange) {
  std::vector<GpaRange> ranges = {Range(0, 4096, 99)};
  auto msgs = *EncodeGpadlMessages(1, 1, ranges);
  EXPECT_EQ(Assemble(msgs, 99).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(Assemble(msgs, 100).ok());
}

// Hostile header and body messages.
ChannelMessage Header(uint16_t buflen, uint16_t count, std::vector<uint64_t> words,
                      uint32_t type = 8) {
  wire::GpadlHeaderMessage h{};
  h.header.message_type = type;
  h.gpadl = 1;
  h.range_buflen = buflen;
  h.range_count = count;
  ChannelMessage m(sizeof(h));
  std::memcpy(m.data(), &h, sizeof(h));
  auto* p = reinterpret_cast<uint8_t*>(words.data());
  m.insert(m.end(), p, p + words.size() * 8);
  return m;
}

ChannelMessage Body(uint32_t gpadl, std::vector<uint64_t> words) {
  wire::GpadlBodyMessage b{};
  b.header.message_type = 9;
  b.gpadl = gpadl;
  ChannelMessage m(sizeof(b));
  std::memcpy(m.data(), &b, sizeof(b));
  auto* p = reinterpret_cast<uint8_t*>(words.data());
  m.insert(m.end(), p, p + words.size() * 8);
  return m;
}

TEST(GpadlAssembler, RejectsMalformedHeaders) {
  const uint64_t one_page = 4096;  // byte_count 4096, offset 0
  EXPECT_FALSE(GpadlAssembler::FromHeader(ChannelMessage(10), 100).ok()) << "short";
  EXPECT_FALSE(GpadlAssembler::FromHeader(ChannelMessage(300), 100).ok()) << "long";
  EXPECT_FALSE(GpadlAssembler::FromHeader(Header(16, 1, {one_page, 1}, 9), 100).ok()) << "type";
  EXPECT_FALSE(GpadlAssembler::FromHeader(Header(16, 0, {one_page, 1}), 100).ok()) << "0 ranges";
  EXPECT_FALSE(GpadlAssembler::FromHeader(Header(0, 1, {}), 100).ok()) << "empty list";
  EXPECT_FALSE(GpadlAssembler::FromHeader(Header(12, 1, {one_page, 1}), 100).ok()) << "unaligned";
  EXPECT_FALSE(GpadlAssembler::FromHeader(Header(8, 1, {one_page, 1}), 100).ok())
      << "more words than range_buflen";
  ChannelMessage ragged = Header(16, 1, {one_page, 1});
  ragged.push_back(0);
  EXPECT_FALSE(GpadlAssembler::FromHeader(ragged, 100).ok()) << "partial word";
}

TEST(GpadlAssembler, RejectsMalformedRangeLists) {
  auto finish = [](ChannelMessage m) { return (*GpadlAssembler::FromHeader(m, 100)).Finish(); };
  // Offset >= 4096.
  EXPECT_FALSE(finish(Header(16, 1, {(uint64_t{4096} << 32) | 8, 1})).ok());
  // Zero byte count.
  EXPECT_FALSE(finish(Header(16, 1, {0, 1})).ok());
  // Range needs 2 PFNs, list has 1.
  auto s = finish(Header(16, 1, {8192, 1})).status();
  EXPECT_THAT(std::string(s.message()), HasSubstr("past the end"));
  // Words left over.
  s = finish(Header(24, 1, {4096, 1, 2})).status();
  EXPECT_THAT(std::string(s.message()), HasSubstr("left over"));
  // Second range missing.
  s = finish(Header(16, 2, {4096, 1})).status();
  EXPECT_THAT(std::string(s.message()), HasSubstr("ends at range 1"));
}

TEST(GpadlAssembler, RejectsBadBodies) {
  auto a = *GpadlAssembler::FromHeader(Header(32, 1, {3 * 4096, 1}), 100);
  EXPECT_FALSE(a.complete());
  EXPECT_EQ(a.Finish().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(a.AddBody(Body(2, {2})).ok()) << "other GPADL";
  EXPECT_FALSE(a.AddBody(Body(1, {2, 3, 4})).ok()) << "overflow";
  EXPECT_FALSE(a.AddBody(Body(1, {})).ok()) << "empty body";
  ASSERT_TRUE(a.AddBody(Body(1, {2, 3})).ok());
  EXPECT_TRUE(a.complete());
  auto ranges = a.Finish();
  ASSERT_TRUE(ranges.ok()) << ranges.status();
  EXPECT_EQ((*ranges)[0].pfns, (std::vector<uint64_t>{1, 2, 3}));
}

}  // namespace
}  // namespace kmcl
