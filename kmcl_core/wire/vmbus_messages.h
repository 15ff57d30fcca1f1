// kmcl_core/wire/vmbus_messages.h: the VMBus channel (control) messages as typed
// values, their encoding to the exact wire bytes, and a validating parser.
//
// Every message that crosses between the partition's guest VMBus driver
// (vmbus_client.h) and the host's VMBus server (vmbus_server.h) goes through
// Encode and ParseChannelMessage, so both sides speak the real format and a
// malformed message from either side is a clear error, never a crash.
// GPADL_HEADER and GPADL_BODY carry range lists and are assembled by
// GpadlAssembler (gpadl_messages.h); here they parse to their raw bytes.
//
// Thread-compatible; plain values and functions.
#ifndef KMCLD_KMCL_CORE_WIRE_VMBUS_MESSAGES_H_
#define KMCLD_KMCL_CORE_WIRE_VMBUS_MESSAGES_H_

#include <array>
#include <cstdint>
#include <span>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "kmcl_core/base/guid.h"
#include "kmcl_core/wire/gpadl_messages.h"

namespace kmcl {

struct OfferChannel {
  Guid interface_type;
  Guid interface_instance;
  uint16_t channel_flags = 0;  // wire flags (kOfferFlag*)
  uint16_t mmio_megabytes = 0;
  uint16_t mmio_megabytes_optional = 0;
  std::array<uint8_t, 120> user_defined = {};
  uint16_t subchannel_index = 0;
  uint32_t child_relid = 0;
  uint8_t monitor_id = 0xFF;
  bool monitor_allocated = false;
  bool dedicated_interrupt = false;
  uint32_t connection_id = 0;
  friend bool operator==(const OfferChannel&, const OfferChannel&) = default;
};
struct RescindChannelOffer {
  uint32_t child_relid = 0;
  friend bool operator==(const RescindChannelOffer&, const RescindChannelOffer&) = default;
};
struct RequestOffers {
  friend bool operator==(const RequestOffers&, const RequestOffers&) = default;
};
struct AllOffersDelivered {
  friend bool operator==(const AllOffersDelivered&, const AllOffersDelivered&) = default;
};
struct OpenChannel {
  uint32_t child_relid = 0;
  uint32_t open_id = 0;
  uint32_t ring_buffer_gpadl = 0;
  uint32_t target_vp = 0;
  uint32_t downstream_page_offset = 0;
  std::array<uint8_t, 120> user_data = {};
  friend bool operator==(const OpenChannel&, const OpenChannel&) = default;
};
struct OpenResult {
  uint32_t child_relid = 0;
  uint32_t open_id = 0;
  uint32_t status = 0;
  friend bool operator==(const OpenResult&, const OpenResult&) = default;
};
struct CloseChannel {
  uint32_t child_relid = 0;
  friend bool operator==(const CloseChannel&, const CloseChannel&) = default;
};
struct GpadlHeader {
  std::vector<uint8_t> bytes;  // assembled by GpadlAssembler
  uint32_t child_relid = 0;
  uint32_t gpadl = 0;
  friend bool operator==(const GpadlHeader&, const GpadlHeader&) = default;
};
struct GpadlBody {
  std::vector<uint8_t> bytes;
  uint32_t gpadl = 0;
  friend bool operator==(const GpadlBody&, const GpadlBody&) = default;
};
struct GpadlCreated {
  uint32_t child_relid = 0;
  uint32_t gpadl = 0;
  uint32_t creation_status = 0;
  friend bool operator==(const GpadlCreated&, const GpadlCreated&) = default;
};
struct GpadlTeardown {
  uint32_t child_relid = 0;
  uint32_t gpadl = 0;
  friend bool operator==(const GpadlTeardown&, const GpadlTeardown&) = default;
};
struct GpadlTorndown {
  uint32_t gpadl = 0;
  friend bool operator==(const GpadlTorndown&, const GpadlTorndown&) = default;
};
struct RelIdReleased {
  uint32_t child_relid = 0;
  friend bool operator==(const RelIdReleased&, const RelIdReleased&) = default;
};
struct InitiateContact {
  uint32_t version_requested = 0;
  uint32_t target_vcpu = 0;
  uint8_t sint = 2;  // from 5.0
  uint8_t vtl = 0;   // from 5.1
  uint32_t feature_flags = 0;  // from 6.0
  uint64_t monitor_page1 = 0;
  uint64_t monitor_page2 = 0;
  friend bool operator==(const InitiateContact&, const InitiateContact&) = default;
};
struct VersionResponse {
  bool version_supported = false;
  uint8_t connection_state = 0;
  uint32_t message_connection_id = 0;
  friend bool operator==(const VersionResponse&, const VersionResponse&) = default;
};
struct Unload {
  friend bool operator==(const Unload&, const Unload&) = default;
};
struct UnloadResponse {
  friend bool operator==(const UnloadResponse&, const UnloadResponse&) = default;
};

using VmbusMessage =
    std::variant<OfferChannel, RescindChannelOffer, RequestOffers, AllOffersDelivered,
                 OpenChannel, OpenResult, CloseChannel, GpadlHeader, GpadlBody, GpadlCreated,
                 GpadlTeardown, GpadlTorndown, RelIdReleased, InitiateContact, VersionResponse,
                 Unload, UnloadResponse>;

// The exact wire bytes of `message` (GPADL header/body: their stored bytes).
ChannelMessage Encode(const VmbusMessage& message);

// Parses one message. INVALID_ARGUMENT for an unknown type, a size below the
// type's fixed layout or above 240 bytes. Extra trailing bytes beyond the
// fixed layout are accepted (newer protocol versions append fields).
absl::StatusOr<VmbusMessage> ParseChannelMessage(std::span<const uint8_t> bytes);

// "OFFERCHANNEL", "OPENCHANNEL", ... for logs and errors.
const char* MessageName(const VmbusMessage& message);

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_WIRE_VMBUS_MESSAGES_H_
