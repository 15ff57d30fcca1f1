// kmcl_core/control/offer.cc: ServerOffer <-> OFFERCHANNEL.
#include "kmcl_core/control/offer.h"

namespace kmcl {

OfferChannel ToOfferMessage(const ServerOffer& offer) {
  OfferChannel m;
  m.interface_type = offer.interface_type;
  m.interface_instance = offer.interface_instance;
  m.channel_flags = offer.channel_flags;
  m.mmio_megabytes = offer.mmio_megabytes;
  m.mmio_megabytes_optional = offer.mmio_megabytes_optional;
  m.user_defined = offer.user_defined;
  m.subchannel_index = offer.subchannel_index;
  return m;
}

ServerOffer FromOfferMessage(const OfferChannel& m, uint8_t target_vtl) {
  ServerOffer o;
  o.interface_type = m.interface_type;
  o.interface_instance = m.interface_instance;
  o.target_vtl = target_vtl;
  o.channel_flags = m.channel_flags;
  o.mmio_megabytes = m.mmio_megabytes;
  o.mmio_megabytes_optional = m.mmio_megabytes_optional;
  o.user_defined = m.user_defined;
  o.subchannel_index = m.subchannel_index;
  return o;
}

}  // namespace kmcl
