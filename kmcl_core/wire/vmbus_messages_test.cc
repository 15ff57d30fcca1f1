#include "kmcl_core/wire/vmbus_messages.h"

#include <cstring>

#include "gtest/gtest.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl {
namespace {

TEST(VmbusMessages, OfferChannelHasTheWireLayout) {
  OfferChannel offer;
  offer.interface_type = *Guid::Parse("f8615163-df3e-46c5-913f-f2d2f965ed0e");
  offer.interface_instance = *Guid::Parse("00000000-0000-0000-0000-000000000001");
  offer.channel_flags = wire::kOfferFlagNamedPipeMode;
  offer.mmio_megabytes = 16;
  offer.mmio_megabytes_optional = 4;
  offer.user_defined[0] = 0xAB;
  offer.child_relid = 7;
  offer.connection_id = 0x2007;
  ChannelMessage bytes = Encode(offer);
  ASSERT_EQ(bytes.size(), 196u);
  uint32_t u32;
  uint16_t u16;
  std::memcpy(&u32, bytes.data(), 4);
  EXPECT_EQ(u32, 1u);
  std::memcpy(&u32, bytes.data() + 8, 4);
  EXPECT_EQ(u32, 0xf8615163u) << "interface type at offset 8";
  std::memcpy(&u16, bytes.data() + 56, 2);
  EXPECT_EQ(u16, 0x10);
  std::memcpy(&u16, bytes.data() + 58, 2);
  EXPECT_EQ(u16, 16);
  EXPECT_EQ(bytes[60], 0xAB);
  std::memcpy(&u16, bytes.data() + 182, 2);
  EXPECT_EQ(u16, 4);
  std::memcpy(&u32, bytes.data() + 184, 4);
  EXPECT_EQ(u32, 7u);
  std::memcpy(&u32, bytes.data() + 192, 4);
  EXPECT_EQ(u32, 0x2007u);
  auto back = ParseChannelMessage(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(std::get<OfferChannel>(*back), offer);
}

TEST(VmbusMessages, EveryMessageRoundTrips) {
  InitiateContact contact;
  contact.version_requested = wire::kVersionCopper;
  contact.vtl = 2;
  contact.sint = 2;
  contact.feature_flags = 0x5;
  OpenChannel open;
  open.child_relid = 3;
  open.open_id = 3;
  open.ring_buffer_gpadl = 0xE1E10;
  open.downstream_page_offset = 17;
  open.user_data[119] = 9;
  std::vector<VmbusMessage> all = {
      RescindChannelOffer{4}, RequestOffers{}, AllOffersDelivered{}, open,
      OpenResult{3, 3, 0xC0000001}, CloseChannel{3}, GpadlCreated{3, 9, 0},
      GpadlTeardown{3, 9}, GpadlTorndown{9}, RelIdReleased{4}, contact,
      VersionResponse{true, 0, 4}, Unload{}, UnloadResponse{}};
  for (const VmbusMessage& m : all) {
    SCOPED_TRACE(MessageName(m));
    ChannelMessage bytes = Encode(m);
    EXPECT_LE(bytes.size(), wire::kMaxChannelMessageSize);
    auto back = ParseChannelMessage(bytes);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, m);
  }
  EXPECT_EQ(Encode(open).size(), 148u);
  EXPECT_EQ(Encode(contact).size(), 40u);
}

TEST(VmbusMessages, GpadlMessagesParseToTheirBytes) {
  std::vector<GpaRange> ranges = {{4096 * 30, 0, {}}};
  for (uint64_t i = 0; i < 30; ++i) ranges[0].pfns.push_back(100 + i);
  auto msgs = *EncodeGpadlMessages(5, 77, ranges);
  auto header = ParseChannelMessage(msgs[0]);
  ASSERT_TRUE(header.ok());
  EXPECT_EQ(std::get<GpadlHeader>(*header).gpadl, 77u);
  EXPECT_EQ(std::get<GpadlHeader>(*header).child_relid, 5u);
  EXPECT_EQ(Encode(*header), msgs[0]);
  auto body = ParseChannelMessage(msgs[1]);
  ASSERT_TRUE(body.ok());
  EXPECT_EQ(std::get<GpadlBody>(*body).gpadl, 77u);
}

TEST(VmbusMessages, MalformedMessagesAreClearErrors) {
  EXPECT_FALSE(ParseChannelMessage(ChannelMessage(4)).ok()) << "shorter than a header";
  EXPECT_FALSE(ParseChannelMessage(ChannelMessage(241)).ok()) << "longer than 240";
  ChannelMessage unknown(8, 0);
  unknown[0] = 99;
  auto s = ParseChannelMessage(unknown).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("unknown"), std::string::npos);
  ChannelMessage short_open = Encode(OpenChannel{});
  short_open.resize(100);
  s = ParseChannelMessage(short_open).status();
  EXPECT_NE(s.message().find("OPENCHANNEL"), std::string::npos);
  ChannelMessage longer = Encode(CloseChannel{1});
  longer.resize(40);  // newer versions append fields: accepted
  EXPECT_TRUE(ParseChannelMessage(longer).ok());
}

}  // namespace
}  // namespace kmcl
