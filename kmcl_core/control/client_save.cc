// Saving and restoring the guest side of the VMBus control plane
// (VmbusClient); docs/saved-state.md.
#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "kmcl_core/control/offer.h"
#include "kmcl_core/control/saved_convert.h"
#include "kmcl_core/control/vmbus_client.h"
#include "kmcl_core/saved/saved_state.pb.h"

namespace kmcl {

void VmbusClient::Save(saved::v1::Client& out) const {
  out.set_vtl(vtl_);
  out.set_version(version_.value_or(0));
  out.set_next_open_id(next_open_id_);
  out.set_unloading(unloading_);
  for (const auto& [relid, c] : channels_) {
    auto* p = out.add_channels();
    p->set_relid(relid);
    saved_convert::OfferTo(FromOfferMessage(c.offer, vtl_), p->mutable_offer());
    p->set_connection_id(c.offer.connection_id);
    p->set_state(static_cast<uint32_t>(c.state));
    p->set_rescinded(c.rescinded);
    p->set_close_after_open(c.close_after_open);
    p->set_open_id(c.open_id);
    p->set_release_pending(c.release_pending);
    for (const auto& [id, st] : c.gpadls) (*p->mutable_gpadls())[id] = static_cast<uint32_t>(st);
  }
}

absl::Status VmbusClient::Restore(const saved::v1::Client& in) {
  if (in.vtl() != vtl_) return absl::InvalidArgumentError("saved client is for another VTL");
  absl::btree_map<uint32_t, ClientChannelInfo> channels;
  absl::flat_hash_set<uint32_t> gpadl_ids;
  for (const auto& p : in.channels()) {
    if (p.relid() == 0 || channels.contains(p.relid()) ||
        p.state() > static_cast<uint32_t>(ClientChannelState::kOpen)) {
      return absl::InvalidArgumentError(absl::StrCat("saved guest channel ", p.relid(),
                                                     " is inconsistent"));
    }
    absl::StatusOr<ServerOffer> o = saved_convert::OfferFrom(p.offer());
    if (!o.ok()) return o.status();
    ClientChannelInfo c;
    c.offer = ToOfferMessage(*o);
    c.offer.child_relid = p.relid();
    c.offer.connection_id = p.connection_id();
    c.state = static_cast<ClientChannelState>(p.state());
    c.rescinded = p.rescinded();
    c.close_after_open = p.close_after_open();
    c.open_id = p.open_id();
    c.release_pending = p.release_pending();
    for (const auto& [id, st] : p.gpadls()) {
      if (st > static_cast<uint32_t>(ClientGpadlState::kTearingDown)) {
        return absl::InvalidArgumentError("saved guest GPADL state out of range");
      }
      if (!gpadl_ids.insert(id).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("saved guest GPADL id ", id, " belongs to two channels"));
      }
      c.gpadls[id] = static_cast<ClientGpadlState>(st);
    }
    channels.emplace(p.relid(), std::move(c));
  }
  version_ = in.version() == 0 ? std::nullopt : std::optional<uint32_t>(in.version());
  connecting_ = false;
  unloading_ = in.unloading();
  next_open_id_ = std::max<uint32_t>(in.next_open_id(), 1);
  channels_ = std::move(channels);
  Reindex();
  return absl::OkStatus();
}

}  // namespace kmcl
