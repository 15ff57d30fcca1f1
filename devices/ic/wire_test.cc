// The IC wire format byte by byte, KVP bodies and strings, and version
// negotiation across version lists (docs/devices.md).
#include <string>

#include "devices/ic/ic_wire.h"
#include "devices/ic/kvp_wire.h"
#include "devices/ic/negotiation.h"
#include "gtest/gtest.h"

namespace kmcl::devices::ic {
namespace {

TEST(IcWire, HeaderFieldsSitAtTheirLinuxOffsets) {
  IcHeader h;
  h.pipe_flags = 0x11223344;
  h.framework = {3, 1};
  h.type = kMsgShutdown;
  h.message = {0x0203, 0x0405};
  h.status = 0x80004005;
  h.transaction_id = 0xAB;
  h.flags = kFlagTransaction | kFlagRequest;
  const uint8_t body[5] = {1, 2, 3, 4, 5};
  Bytes b = EncodeIcMessage(h, body);
  ASSERT_EQ(b.size(), 33u);
  const Bytes expect = {0x44, 0x33, 0x22, 0x11,  // pipe flags
                        25, 0, 0, 0,             // pipe msgsize: 20 + 5
                        3, 0, 1, 0,              // icverframe 3.1
                        3, 0,                    // icmsgtype
                        3, 2, 5, 4,              // icvermsg
                        5, 0,                    // icmsgsize
                        0x05, 0x40, 0x00, 0x80,  // status
                        0xAB, 3, 0, 0,           // transaction id, flags, reserved
                        1, 2, 3, 4, 5};
  EXPECT_EQ(b, expect);
  auto m = ParseIcMessage(b);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->header.framework, (IcVersion{3, 1}));
  EXPECT_EQ(m->header.message, (IcVersion{0x0203, 0x0405}));
  EXPECT_EQ(m->header.status, 0x80004005u);
  EXPECT_EQ(m->header.transaction_id, 0xAB);
  EXPECT_EQ(m->header.size, 5);
  EXPECT_EQ(m->body.size(), 5u);
}

TEST(IcWire, ShortPacketIsAnError) {
  Bytes b(27, 0);
  EXPECT_FALSE(ParseIcMessage(b).ok());
  b.push_back(0);
  EXPECT_TRUE(ParseIcMessage(b).ok());
}

TEST(IcWire, NegotiateBodyLayoutAndLimits) {
  Bytes b = EncodeNegotiateBody({{{3, 0}, {1, 0}}, {{4, 0}}});
  const Bytes expect = {2, 0, 1, 0, 0, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0};
  EXPECT_EQ(b, expect);
  auto d = DecodeNegotiateBody(b);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->framework.size(), 2u);
  EXPECT_EQ(d->message[0], (IcVersion{4, 0}));
  b.pop_back();
  EXPECT_FALSE(DecodeNegotiateBody(b).ok()) << "versions do not fit";
  Bytes too_many(8 + 4 * 202, 0);
  too_many[0] = 101;
  EXPECT_FALSE(DecodeNegotiateBody(too_many).ok()) << "more than 100 versions";
  EXPECT_FALSE(DecodeNegotiateBody(Bytes(7, 0)).ok());
}

TEST(IcWire, HeartbeatShutdownTimeSyncBodies) {
  Bytes hb = EncodeHeartbeatBody(0x0102030405060708ull);
  ASSERT_EQ(hb.size(), 40u);
  EXPECT_EQ(hb[0], 8);
  EXPECT_EQ(hb[7], 1);
  EXPECT_EQ(*DecodeHeartbeatBody(std::span(hb).first(8)), 0x0102030405060708ull);
  EXPECT_FALSE(DecodeHeartbeatBody(std::span(hb).first(7)).ok());

  auto sd = EncodeShutdownBody({7, 30, kShutdownFlagRestart | kShutdownFlagForce, "bye"});
  ASSERT_TRUE(sd.ok());
  ASSERT_EQ(sd->size(), 2060u);
  EXPECT_EQ((*sd)[0], 7);
  EXPECT_EQ((*sd)[4], 30);
  EXPECT_EQ((*sd)[8], 3);
  EXPECT_EQ((*sd)[12], 'b');
  auto back = DecodeShutdownBody(*sd);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->display_message, "bye");
  EXPECT_FALSE(DecodeShutdownBody(std::span(*sd).first(2059)).ok());
  EXPECT_FALSE(EncodeShutdownBody({0, 0, 0, std::string(2048, 'x')}).ok());
  EXPECT_TRUE(EncodeShutdownBody({0, 0, 0, std::string(2047, 'x')}).ok());

  TimeSyncBody t{0x1111, 0x2222, 0x3333, 0x4444, kTimeSyncSample, -1, 3};
  Bytes v3 = EncodeTimeSyncBody(t, {3, 0});
  ASSERT_EQ(v3.size(), 25u);
  EXPECT_EQ(v3[8], 0x22);
  EXPECT_EQ(v3[24], kTimeSyncSample);
  Bytes v4 = EncodeTimeSyncBody(t, {4, 0});
  ASSERT_EQ(v4.size(), 22u);
  EXPECT_EQ(v4[8], 0x44);
  EXPECT_EQ(v4[16], kTimeSyncSample);
  EXPECT_EQ(v4[17], 0xFF);
  EXPECT_EQ(v4[18], 3);
  EXPECT_EQ(DecodeTimeSyncBody(v4, {4, 0})->reference_time, 0x4444u);
  EXPECT_EQ(DecodeTimeSyncBody(v3, {3, 0})->child_time, 0x2222u);
  EXPECT_FALSE(DecodeTimeSyncBody(v4, {3, 0}).ok()) << "22 bytes are short for the 3.0 layout";
}

TEST(KvpWire, BodyLayoutsPerOperation) {
  EXPECT_EQ(KvpBodySize(kKvpOpGet), 2576u);
  EXPECT_EQ(KvpBodySize(kKvpOpSet), 2576u);
  EXPECT_EQ(KvpBodySize(kKvpOpDelete), 520u);
  EXPECT_EQ(KvpBodySize(kKvpOpEnumerate), 2580u);
  KvpBody set{kKvpOpSet, kKvpPoolGuest, 0, kKvpRegSz, *EncodeKvpString("k", 512), *EncodeKvpString("vv", 2048)};
  Bytes b = *EncodeKvpBody(set);
  EXPECT_EQ(b[0], kKvpOpSet);
  EXPECT_EQ(b[1], kKvpPoolGuest);
  EXPECT_EQ(GetU32(&b[4]), kKvpRegSz);
  EXPECT_EQ(GetU32(&b[8]), 4u) << "key_size: 'k' + NUL in UTF-16";
  EXPECT_EQ(GetU32(&b[12]), 6u);
  EXPECT_EQ(b[16], 'k');
  EXPECT_EQ(b[528], 'v');
  KvpBody en{kKvpOpEnumerate, 0, 9, kKvpRegSz, *EncodeKvpString("a", 512), *EncodeKvpString("b", 2048)};
  Bytes e = *EncodeKvpBody(en);
  EXPECT_EQ(GetU32(&e[4]), 9u);
  EXPECT_EQ(e[20], 'a');
  EXPECT_EQ(e[532], 'b');
  auto back = DecodeKvpBody(e);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->index, 9u);
  EXPECT_EQ(*DecodeKvpString(back->value), "b");
  Bytes d = *EncodeKvpBody({kKvpOpDelete, 4, 0, 0, *EncodeKvpString("z", 512), {}});
  EXPECT_EQ(GetU32(&d[4]), 4u);
  EXPECT_EQ(d[8], 'z');
}

TEST(KvpWire, DecodeRejectsBadBodies) {
  Bytes b = *EncodeKvpBody({kKvpOpSet, 0, 0, kKvpRegSz, *EncodeKvpString("k", 512), {}});
  EXPECT_FALSE(DecodeKvpBody(std::span(b).first(2575)).ok()) << "short";
  Bytes bad_pool = b;
  bad_pool[1] = 5;
  EXPECT_FALSE(DecodeKvpBody(bad_pool).ok());
  Bytes big_key = b;
  PutU32(&big_key[8], 513);
  EXPECT_FALSE(DecodeKvpBody(big_key).ok());
  Bytes big_value = b;
  PutU32(&big_value[12], 2049);
  EXPECT_FALSE(DecodeKvpBody(big_value).ok());
  Bytes ip = b;
  ip[0] = 4;
  EXPECT_TRUE(absl::IsUnimplemented(DecodeKvpBody(ip).status()));
  EXPECT_FALSE(DecodeKvpBody(std::span(b).first(3)).ok());
}

TEST(KvpWire, Utf16StringsAndLimits) {
  auto s = EncodeKvpString("h\xC3\xA9\xF0\x9F\x98\x80", 512);  // h, e-acute, U+1F600
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->size(), 2u * (1 + 1 + 2 + 1)) << "surrogate pair + terminator";
  EXPECT_EQ(*DecodeKvpString(*s), "h\xC3\xA9\xF0\x9F\x98\x80");
  EXPECT_TRUE(EncodeKvpString(std::string(255, 'k'), 512).ok()) << "255 units + NUL = 512 bytes";
  EXPECT_FALSE(EncodeKvpString(std::string(256, 'k'), 512).ok());
  EXPECT_TRUE(EncodeKvpString(std::string(1023, 'v'), 2048).ok());
  EXPECT_FALSE(EncodeKvpString(std::string(1024, 'v'), 2048).ok());
  EXPECT_FALSE(EncodeKvpString("\xFF", 512).ok()) << "invalid UTF-8";
  EXPECT_FALSE(DecodeKvpString(Bytes{0x41}).ok()) << "odd size";
  EXPECT_FALSE(DecodeKvpString(Bytes{0x00, 0xDC, 0, 0}).ok()) << "lone low surrogate";
  EXPECT_EQ(*DecodeKvpString(Bytes{'a', 0, 0, 0, 'b', 0}), "a") << "stops at NUL";
  uint8_t u32[4] = {0x2A, 0, 0, 0};
  EXPECT_EQ(*KvpValueText(kKvpRegU32, u32), "42");
  uint8_t u64[8] = {0, 0, 0, 0, 1, 0, 0, 0};
  EXPECT_EQ(*KvpValueText(kKvpRegU64, u64), "4294967296");
  EXPECT_FALSE(KvpValueText(3, u32).ok()) << "REG_BINARY";
}

TEST(Negotiation, ServicesUseTheLinuxGuids) {
  EXPECT_EQ(ServiceInfo(IcService::kHeartbeat).interface_type.ToString(), "57164f39-9115-4e78-ab55-382f3bd5422d");
  EXPECT_EQ(ServiceInfo(IcService::kShutdown).interface_type.ToString(), "0e0b6031-5213-4934-818b-38d90ced39db");
  EXPECT_EQ(ServiceInfo(IcService::kTimeSync).interface_type.ToString(), "9527e630-d0ae-497b-adce-e80ab0175caf");
  EXPECT_EQ(ServiceInfo(IcService::kKvp).interface_type.ToString(), "a9a0f4e7-5a45-4d96-b827-8a841e8c03e6");
  EXPECT_EQ(ServiceForType(kKvpInterfaceType), IcService::kKvp);
  EXPECT_FALSE(ServiceForType(Guid{}).has_value());
}

TEST(Negotiation, GuestPicksTheHighestCommonVersions) {
  const std::vector<IcVersion> fw = {{3, 0}, {1, 0}};
  const std::vector<IcVersion> shutdown = ServiceInfo(IcService::kShutdown).guest_message;
  auto all = ChooseVersions({{{1, 0}, {3, 0}}, {{1, 0}, {3, 0}, {3, 1}, {3, 2}}}, fw, shutdown);
  ASSERT_TRUE(all.has_value());
  EXPECT_EQ(*all, (NegotiatedVersions{{3, 0}, {3, 2}})) << "host order does not matter";
  auto old = ChooseVersions({{{1, 0}}, {{1, 0}, {2, 7}}}, fw, shutdown);
  ASSERT_TRUE(old.has_value());
  EXPECT_EQ(*old, (NegotiatedVersions{{1, 0}, {1, 0}}));
  EXPECT_FALSE(ChooseVersions({{{2, 0}}, {{3, 0}}}, fw, shutdown)) << "no common framework";
  EXPECT_FALSE(ChooseVersions({{{3, 0}}, {{5, 0}}}, fw, shutdown)) << "no common message version";
  EXPECT_FALSE(ChooseVersions({{}, {}}, fw, shutdown)) << "empty lists";
}

TEST(Negotiation, HostValidatesTheAnswer) {
  const std::vector<IcVersion> fw = {{3, 0}, {1, 0}};
  const std::vector<IcVersion> msg = {{4, 0}, {3, 0}};
  auto ok = AcceptNegotiateAnswer({{{3, 0}}, {{4, 0}}}, kHvSOk, fw, msg);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->message, (IcVersion{4, 0}));
  auto none = AcceptNegotiateAnswer({{}, {}}, kHvSOk, fw, msg);
  EXPECT_TRUE(absl::IsFailedPrecondition(none.status()));
  EXPECT_NE(none.status().message().find("no common version"), std::string::npos);
  EXPECT_TRUE(absl::IsFailedPrecondition(AcceptNegotiateAnswer({{{3, 0}}, {{4, 0}}}, kHvEFail, fw, msg).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(AcceptNegotiateAnswer({{{3, 0}, {1, 0}}, {{4, 0}}}, kHvSOk, fw, msg).status()))
      << "two framework versions";
  EXPECT_TRUE(absl::IsInvalidArgument(AcceptNegotiateAnswer({{{3, 0}}, {{9, 0}}}, kHvSOk, fw, msg).status()))
      << "a version never offered";
}

}  // namespace
}  // namespace kmcl::devices::ic
