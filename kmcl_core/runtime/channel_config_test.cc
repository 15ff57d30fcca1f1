// The channel configuration's one validator and what it derives (flags, pipe
// mode), without a channel.
#include "kmcl_core/runtime/channel_config.h"

#include <gtest/gtest.h>

#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl {
namespace {

TEST(ChannelConfigTest, DefaultsAreValidButAGuestNeedsATargetToEnable) {
  ChannelConfig host(EndpointRole::kHost);
  EXPECT_TRUE(host.Validate().ok());
  EXPECT_TRUE(host.Validate(ChannelConfig::Check::kEnable).ok());
  ChannelConfig guest(EndpointRole::kGuest);
  EXPECT_TRUE(guest.Validate().ok());
  EXPECT_EQ(guest.Validate(ChannelConfig::Check::kEnable).code(),
            absl::StatusCode::kFailedPrecondition);
  guest.target_type = Guid::Random();
  EXPECT_TRUE(guest.Validate(ChannelConfig::Check::kEnable).ok());
}

// Each case breaks one field of a valid configuration: the validator names
// it, and restoring the field makes the configuration valid again.
TEST(ChannelConfigTest, EachFieldOutOfRangeIsInvalidArgument) {
  struct Case {
    const char* field;
    void (*breaks)(ChannelConfig&);
  };
  const Case cases[] = {
      {"channel flags", [](ChannelConfig& c) { c.flags = 0x2; }},
      {"client context", [](ChannelConfig& c) { c.client_context_size = kMaxClientContextSize + 1; }},
      {"packet size 0", [](ChannelConfig& c) { c.max_packet_size = 0; }},
      {"packet size", [](ChannelConfig& c) { c.max_packet_size = kMaxPacketSizeLimit + 1; }},
      {"external bytes", [](ChannelConfig& c) { c.max_external_chain = 1; }},
      {"external chain", [](ChannelConfig& c) { c.max_external_bytes = 4096; }},
      {"incoming pages", [](ChannelConfig& c) { c.incoming_pages = 0; }},
      {"outgoing pages", [](ChannelConfig& c) { c.outgoing_pages = kMaxRingPages + 1; }},
      {"client VTL", [](ChannelConfig& c) { c.client_vtl = 3; }},
      {"server flags", [](ChannelConfig& c) { c.server_flags = 0x20; }},
      {"target VTL", [](ChannelConfig& c) { c.offer.target_vtl = 3; }},
  };
  for (const Case& tc : cases) {
    for (EndpointRole role : {EndpointRole::kHost, EndpointRole::kGuest}) {
      ChannelConfig c(role);
      c.target_type = Guid::Random();
      ASSERT_TRUE(c.Validate(ChannelConfig::Check::kEnable).ok()) << tc.field;
      tc.breaks(c);
      EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument) << tc.field;
      EXPECT_EQ(c.Validate(ChannelConfig::Check::kEnable).code(),
                absl::StatusCode::kInvalidArgument)
          << tc.field;
    }
  }
}

TEST(ChannelConfigTest, LimitsAreInclusive) {
  ChannelConfig c(EndpointRole::kGuest);
  c.client_context_size = kMaxClientContextSize;
  c.max_packet_size = kMaxPacketSizeLimit;
  c.max_external_bytes = 1;
  c.max_external_chain = 1;
  c.incoming_pages = kMaxRingPages;
  c.outgoing_pages = 1;
  c.client_vtl = 2;
  c.offer.target_vtl = 2;
  c.server_flags = kServerFlags;
  c.flags = kChannelInitFlagIsPipe;
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
}

TEST(ChannelConfigTest, WireOfferFlagsMapEachServerFlag) {
  ChannelConfig c(EndpointRole::kHost);
  EXPECT_EQ(c.WireOfferFlags(), 0);
  const std::pair<uint32_t, uint16_t> map[] = {
      {kServerFlagEnumerateDeviceInterface, wire::kOfferFlagEnumerateDeviceInterface},
      {kServerFlagOfferAsPipe, wire::kOfferFlagNamedPipeMode},
      {kServerFlagLoopbackOffer, wire::kOfferFlagLoopback},
      {kServerFlagForceNewChannel, wire::kOfferFlagForceNewChannel},
      {kServerFlagTlnpiProviderOffer, wire::kOfferFlagTlnpiProvider},
  };
  uint16_t all = 0;
  for (auto [kmcl_flag, wire_flag] : map) {
    c.server_flags = kmcl_flag;
    EXPECT_EQ(c.WireOfferFlags(), wire_flag) << kmcl_flag;
    all |= wire_flag;
  }
  c.server_flags = kServerFlags;
  EXPECT_EQ(c.WireOfferFlags(), all);
}

TEST(ChannelConfigTest, PipeModeFollowsTheFlagsTheServerFlagsOrTheMatchedOffer) {
  ChannelConfig host(EndpointRole::kHost);
  EXPECT_FALSE(host.PipeMode(wire::kOfferFlagNamedPipeMode)) << "a host ignores offer flags";
  host.server_flags = kServerFlagOfferAsPipe;
  EXPECT_TRUE(host.PipeMode(0));
  ChannelConfig guest(EndpointRole::kGuest);
  EXPECT_FALSE(guest.PipeMode(0));
  EXPECT_TRUE(guest.PipeMode(wire::kOfferFlagNamedPipeMode));
  guest.flags = kChannelInitFlagIsPipe;
  EXPECT_TRUE(guest.PipeMode(0));
}

}  // namespace
}  // namespace kmcl
