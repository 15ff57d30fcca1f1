// kmcl_core/control/saved_convert.h: conversions between kmcl_core's types and their
// saved-state messages (saved_state.proto). Internal to kmcl_core.
#ifndef KMCLD_KMCL_CORE_CONTROL_SAVED_CONVERT_H_
#define KMCLD_KMCL_CORE_CONTROL_SAVED_CONVERT_H_

#include <cstring>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kmcl_core/base/guid.h"
#include "kmcl_core/control/offer.h"
#include "kmcl_core/saved/saved_state.pb.h"
#include "kmcl_core/wire/gpa_range.h"
#include "kmcl_core/wire/vmbus_messages.h"

namespace kmcl::saved_convert {

namespace pb = ::kmcl::saved::v1;

inline std::string GuidBytes(const Guid& g) {
  std::string out(16, '\0');
  std::memcpy(out.data(), &g.data1, 4);
  std::memcpy(out.data() + 4, &g.data2, 2);
  std::memcpy(out.data() + 6, &g.data3, 2);
  std::memcpy(out.data() + 8, g.data4, 8);
  return out;
}
inline absl::StatusOr<Guid> GuidFrom(const std::string& b) {
  if (b.size() != 16) return absl::InvalidArgumentError("saved GUID is not 16 bytes");
  Guid g;
  std::memcpy(&g.data1, b.data(), 4);
  std::memcpy(&g.data2, b.data() + 4, 2);
  std::memcpy(&g.data3, b.data() + 6, 2);
  std::memcpy(g.data4, b.data() + 8, 8);
  return g;
}

inline void RangesTo(const std::vector<GpaRange>& in,
                     google::protobuf::RepeatedPtrField<pb::GpaRange>* out) {
  for (const GpaRange& r : in) {
    pb::GpaRange* p = out->Add();
    p->set_byte_count(r.byte_count);
    p->set_byte_offset(r.byte_offset);
    p->mutable_pfns()->Add(r.pfns.begin(), r.pfns.end());
  }
}
inline std::vector<GpaRange> RangesFrom(const google::protobuf::RepeatedPtrField<pb::GpaRange>& in) {
  std::vector<GpaRange> out;
  for (const pb::GpaRange& p : in) {
    out.push_back({p.byte_count(), p.byte_offset(), {p.pfns().begin(), p.pfns().end()}});
  }
  return out;
}

inline void OfferTo(const ServerOffer& o, pb::Offer* p) {
  p->set_interface_type(GuidBytes(o.interface_type));
  p->set_interface_instance(GuidBytes(o.interface_instance));
  p->set_target_vtl(o.target_vtl);
  p->set_channel_flags(o.channel_flags);
  p->set_mmio_megabytes(o.mmio_megabytes);
  p->set_mmio_megabytes_optional(o.mmio_megabytes_optional);
  p->set_user_defined(std::string(o.user_defined.begin(), o.user_defined.end()));
  p->set_subchannel_index(o.subchannel_index);
}
inline absl::StatusOr<ServerOffer> OfferFrom(const pb::Offer& p) {
  ServerOffer o;
  auto type = GuidFrom(p.interface_type());
  auto instance = GuidFrom(p.interface_instance());
  if (!type.ok() || !instance.ok()) return absl::InvalidArgumentError("saved offer has a bad GUID");
  if (p.target_vtl() > 2 || p.channel_flags() > 0xFFFF || p.mmio_megabytes() > 0xFFFF ||
      p.mmio_megabytes_optional() > 0xFFFF || p.subchannel_index() > 0xFFFF ||
      p.user_defined().size() > o.user_defined.size()) {
    return absl::InvalidArgumentError("saved offer has a field out of range");
  }
  o.interface_type = *type;
  o.interface_instance = *instance;
  o.target_vtl = static_cast<uint8_t>(p.target_vtl());
  o.channel_flags = static_cast<uint16_t>(p.channel_flags());
  o.mmio_megabytes = static_cast<uint16_t>(p.mmio_megabytes());
  o.mmio_megabytes_optional = static_cast<uint16_t>(p.mmio_megabytes_optional());
  std::memcpy(o.user_defined.data(), p.user_defined().data(), p.user_defined().size());
  o.subchannel_index = static_cast<uint16_t>(p.subchannel_index());
  return o;
}

inline void OpenTo(const OpenChannel& o, pb::OpenParams* p) {
  p->set_open_id(o.open_id);
  p->set_ring_gpadl(o.ring_buffer_gpadl);
  p->set_target_vp(o.target_vp);
  p->set_downstream_page_offset(o.downstream_page_offset);
  p->set_user_data(std::string(o.user_data.begin(), o.user_data.end()));
}
inline absl::StatusOr<OpenChannel> OpenFrom(uint32_t relid, const pb::OpenParams& p) {
  OpenChannel o;
  if (p.user_data().size() > o.user_data.size()) {
    return absl::InvalidArgumentError("saved open parameters are out of range");
  }
  o.child_relid = relid;
  o.open_id = p.open_id();
  o.ring_buffer_gpadl = p.ring_gpadl();
  o.target_vp = p.target_vp();
  o.downstream_page_offset = p.downstream_page_offset();
  std::memcpy(o.user_data.data(), p.user_data().data(), p.user_data().size());
  return o;
}

}  // namespace kmcl::saved_convert

#endif  // KMCLD_KMCL_CORE_CONTROL_SAVED_CONVERT_H_
