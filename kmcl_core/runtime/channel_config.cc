#include "kmcl_core/runtime/channel_config.h"

#include "absl/strings/str_cat.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl {

absl::Status ChannelConfig::Validate(Check check) const {
  if ((flags & ~kChannelInitFlagIsPipe) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("unknown channel flags 0x", absl::Hex(flags)));
  }
  if (client_context_size > kMaxClientContextSize) {
    return absl::InvalidArgumentError("client context above 1 MiB");
  }
  if (max_packet_size == 0 || max_packet_size > kMaxPacketSizeLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("maximum packet size ", max_packet_size, " out of range"));
  }
  if (max_external_bytes != 0 || max_external_chain != 0) {
    if (max_external_bytes == 0) {
      return absl::InvalidArgumentError("maximum external data of 0 bytes");
    }
    if (max_external_chain == 0) {
      return absl::InvalidArgumentError("maximum external chain length of 0");
    }
  }
  if (incoming_pages == 0 || outgoing_pages == 0 || incoming_pages > kMaxRingPages ||
      outgoing_pages > kMaxRingPages) {
    return absl::InvalidArgumentError(absl::StrCat("ring page counts ", incoming_pages, "/",
                                                   outgoing_pages, " must be 1 to ",
                                                   kMaxRingPages));
  }
  if (client_vtl > 2) {
    return absl::InvalidArgumentError(absl::StrCat("VTL ", client_vtl, " is not 0, 1 or 2"));
  }
  if ((server_flags & ~kServerFlags) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown server flags 0x", absl::Hex(server_flags)));
  }
  if (offer.target_vtl > 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("target VTL ", offer.target_vtl, " is not 0, 1 or 2"));
  }
  if (check == Check::kEnable && !IsHost(role) && target_type.IsNull()) {
    return absl::FailedPreconditionError(
        "client channel has no target interface (VmbClientChannelInitSetTargetPnp)");
  }
  return absl::OkStatus();
}

uint16_t ChannelConfig::WireOfferFlags() const {
  uint16_t wire_flags = 0;
  if (server_flags & kServerFlagEnumerateDeviceInterface) {
    wire_flags |= wire::kOfferFlagEnumerateDeviceInterface;
  }
  if (server_flags & kServerFlagOfferAsPipe) wire_flags |= wire::kOfferFlagNamedPipeMode;
  if (server_flags & kServerFlagLoopbackOffer) wire_flags |= wire::kOfferFlagLoopback;
  if (server_flags & kServerFlagForceNewChannel) wire_flags |= wire::kOfferFlagForceNewChannel;
  if (server_flags & kServerFlagTlnpiProviderOffer) wire_flags |= wire::kOfferFlagTlnpiProvider;
  return wire_flags;
}

bool ChannelConfig::PipeMode(uint16_t matched_offer_flags) const {
  if (flags & kChannelInitFlagIsPipe) return true;
  if (IsHost(role)) return (server_flags & kServerFlagOfferAsPipe) != 0;
  return (matched_offer_flags & wire::kOfferFlagNamedPipeMode) != 0;
}

}  // namespace kmcl
