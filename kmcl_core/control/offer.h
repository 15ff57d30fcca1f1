// kmcl_core/control/offer.h: what a host offers, in kmcl_core's terms
// (ServerOffer: the VmbServerChannelInit* settings), and the one mapping
// between it and the OFFERCHANNEL wire message (wire/vmbus_messages.h).
// Used by the server, the client and the saved-state conversions alike, so
// it sits below all three.
//
// Threading: plain values and pure functions.
#ifndef KMCLD_KMCL_CORE_CONTROL_OFFER_H_
#define KMCLD_KMCL_CORE_CONTROL_OFFER_H_

#include <array>
#include <cstdint>

#include "kmcl_core/base/guid.h"
#include "kmcl_core/wire/vmbus_messages.h"

namespace kmcl {

// What the host offers (VmbServerChannelInit* settings, in wire terms).
struct ServerOffer {
  Guid interface_type;
  Guid interface_instance;
  uint8_t target_vtl = 0;
  uint16_t channel_flags = 0;  // wire offer flags
  uint16_t mmio_megabytes = 0;
  uint16_t mmio_megabytes_optional = 0;
  std::array<uint8_t, 120> user_defined = {};
  uint16_t subchannel_index = 0;
};

// The one mapping between an offer and its OFFERCHANNEL message. The message
// from ToOfferMessage has no relid or connection id yet; FromOfferMessage
// takes the target VTL the message itself does not carry.
OfferChannel ToOfferMessage(const ServerOffer& offer);
ServerOffer FromOfferMessage(const OfferChannel& message, uint8_t target_vtl);

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_CONTROL_OFFER_H_
