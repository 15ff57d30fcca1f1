// kmcl_core/runtime/channel_config.h: a channel endpoint's configuration as a
// plain value, and the one validator for it.
//
// Everything the KMCL Init setters (VmbChannelInitSet*,
// VmbClientChannelInitSet*, VmbServerChannelInitSet*) configure lives in a
// ChannelConfig. The Channel holds one; each setter edits a copy of it and
// keeps the copy only if Validate() accepts it, Enable validates it once more
// with the rules that concern completeness (Check::kEnable), and Restore
// validates a configuration read from a saved blob the same way. The state
// rule ("only while disabled") is the Channel's, checked in one place
// (Channel::Configure), not here.
//
//   ChannelConfig c(EndpointRole::kGuest);
//   c.max_packet_size = 512;
//   c.target_type = type;
//   absl::Status s = c.Validate(ChannelConfig::Check::kEnable);
//
// Threading: a value type (thread-compatible).
#ifndef KMCLD_KMCL_CORE_RUNTIME_CHANNEL_CONFIG_H_
#define KMCLD_KMCL_CORE_RUNTIME_CHANNEL_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "kmcl_core/base/guid.h"
#include "kmcl_core/control/endpoint_role.h"
#include "kmcl_core/control/offer.h"

namespace kmcl {

// KMCL flag values (vmbuskernelmodeclientlibapi.h).
inline constexpr uint32_t kChannelInitFlagIsPipe = 0x1;
inline constexpr uint32_t kServerFlagLoopbackOffer = 0x1;
inline constexpr uint32_t kServerFlagEnumerateDeviceInterface = 0x2;
inline constexpr uint32_t kServerFlagOfferAsPipe = 0x4;
inline constexpr uint32_t kServerFlagForceNewChannel = 0x8;
inline constexpr uint32_t kServerFlagTlnpiProviderOffer = 0x10;
inline constexpr uint32_t kServerFlags = 0x1F;

inline constexpr uint32_t kDefaultMaxPacketSize = 4096;
inline constexpr uint32_t kMaxPacketSizeLimit = 1u << 24;      // 16 MiB
inline constexpr uint32_t kMaxClientContextSize = 1u << 20;    // 1 MiB
inline constexpr uint32_t kDefaultRingPages = 16;
inline constexpr uint32_t kMaxRingPages = 8192;  // 32 MiB per ring

struct ChannelConfig {
  explicit ChannelConfig(EndpointRole r) : role(r) {}

  EndpointRole role;

  // ---- Both sides ----
  uint32_t flags = 0;  // kChannelInitFlag*
  std::string friendly_name;
  uint32_t client_context_size = 0;  // bytes per delivery, at most 1 MiB
  uint32_t max_packet_size = kDefaultMaxPacketSize;  // 1 byte to 16 MiB
  // VmbChannelInitSetMaximumExternalData; both 0 (the default) means no
  // limit, otherwise both must be non-zero.
  uint32_t max_external_bytes = 0;
  uint32_t max_external_chain = 0;

  // ---- Guest (client) only ----
  uint32_t incoming_pages = kDefaultRingPages;  // data pages, 1 to kMaxRingPages
  uint32_t outgoing_pages = kDefaultRingPages;
  Guid target_type;  // required by Enable
  std::optional<Guid> target_instance;
  uint8_t client_vtl = 0;  // 0 to 2

  // ---- Host (server) only ----
  uint32_t server_flags = 0;  // kServerFlag*
  // The offer as configured: interface type and instance, target VTL (0 to
  // 2), MMIO megabytes and the user-defined bytes. channel_flags is derived
  // from server_flags at Enable (WireOfferFlags).
  ServerOffer offer;

  enum class Check {
    kValues,  // every field is in range (after each setter, and for a restore)
    kEnable,  // and nothing Enable needs is missing
  };
  // INVALID_ARGUMENT naming the first field out of range; with kEnable,
  // FAILED_PRECONDITION if a guest has no target interface.
  absl::Status Validate(Check check = Check::kValues) const;

  // The OFFERCHANNEL flags server_flags asks for.
  uint16_t WireOfferFlags() const;
  // Whether packets carry pipe framing: a guest follows the offer it
  // matched (`matched_offer_flags`, its wire channel flags).
  bool PipeMode(uint16_t matched_offer_flags) const;
};

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_RUNTIME_CHANNEL_CONFIG_H_
