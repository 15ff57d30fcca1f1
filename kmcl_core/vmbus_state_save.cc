// Saving and restoring the VMBus control plane: VmbusServer and VmbusClient.
#include <algorithm>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "kmcl_core/saved_convert.h"
#include "kmcl_core/saved_state.pb.h"
#include "kmcl_core/vmbus_client.h"
#include "kmcl_core/vmbus_server.h"
#include "kmcl_core/vmbus_wire.h"

namespace kmcl {

using saved_convert::pb::SavedPartition;

void VmbusServer::Save(SavedPartition& out) const {
  for (const auto& [vtl, conn] : connections_) {
    auto* c = out.add_connections();
    c->set_vtl(vtl);
    c->set_version(conn.version.value_or(0));
    c->set_offers_requested(conn.offers_requested);
  }
  for (const auto& [relid, ch] : channels_) {
    auto* c = out.add_server_channels();
    c->set_relid(relid);
    c->set_offer_sequence(ch.offer_sequence);
    saved_convert::OfferTo(ch.offer, c->mutable_offer());
    c->set_state(static_cast<uint32_t>(ch.state));
    c->set_offer_sent(ch.offer_sent);
    if (ch.open.has_value()) saved_convert::OpenTo(*ch.open, c->mutable_open());
  }
  for (const auto& [id, owner] : gpadl_owners_) {
    auto* g = out.add_gpadl_owners();
    g->set_gpadl_id(id);
    g->set_relid(owner.relid);
    g->set_vtl(owner.vtl);
  }
  out.set_next_offer_sequence(next_offer_sequence_);
}

absl::Status VmbusServer::Restore(const SavedPartition& in) {
  absl::btree_map<uint8_t, Connection> connections = connections_;
  for (const auto& c : in.connections()) {
    auto it = connections.find(static_cast<uint8_t>(c.vtl()));
    if (c.vtl() > 2 || it == connections.end()) {
      return absl::InvalidArgumentError(absl::StrCat("saved connection at VTL ", c.vtl(),
                                                     ", which this partition has no client for"));
    }
    if (c.version() != 0 &&
        std::find(std::begin(wire::kSupportedVersions), std::end(wire::kSupportedVersions),
                  c.version()) == std::end(wire::kSupportedVersions)) {
      return absl::InvalidArgumentError(absl::StrCat("saved VMBus version ", c.version()));
    }
    it->second.version = c.version() == 0 ? std::nullopt : std::optional<uint32_t>(c.version());
    it->second.offers_requested = c.offers_requested();
  }
  absl::btree_map<uint32_t, ServerChannelInfo> channels;
  for (const auto& c : in.server_channels()) {
    if (c.relid() == 0 || channels.contains(c.relid()) ||
        c.state() > static_cast<uint32_t>(ServerChannelState::kRevoked) ||
        c.offer_sequence() == 0 || c.offer_sequence() >= in.next_offer_sequence()) {
      return absl::InvalidArgumentError(absl::StrCat("saved server channel ", c.relid(),
                                                     " is inconsistent"));
    }
    absl::StatusOr<ServerOffer> offer = saved_convert::OfferFrom(c.offer());
    if (!offer.ok()) return offer.status();
    if (!connections.contains(offer->target_vtl)) {
      return absl::InvalidArgumentError(absl::StrCat("saved channel ", c.relid(),
                                                     " targets a VTL without a client"));
    }
    ServerChannelInfo info;
    info.relid = c.relid();
    info.offer_sequence = c.offer_sequence();
    info.offer = *offer;
    info.state = static_cast<ServerChannelState>(c.state());
    info.offer_sent = c.offer_sent();
    if (c.has_open()) {
      absl::StatusOr<OpenChannel> open = saved_convert::OpenFrom(c.relid(), c.open());
      if (!open.ok()) return open.status();
      info.open = *open;
    }
    const bool needs_open = info.state == ServerChannelState::kOpening ||
                            info.state == ServerChannelState::kOpen ||
                            info.state == ServerChannelState::kClosing ||
                            info.state == ServerChannelState::kClosingReopen;
    if (needs_open && !info.open.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat("saved channel ", c.relid(),
                                                     " is open without open parameters"));
    }
    channels.emplace(info.relid, std::move(info));
  }
  absl::flat_hash_map<uint32_t, GpadlOwner> owners;
  for (const auto& g : in.gpadl_owners()) {
    std::optional<GpadlInfo> info = gpadls_.Get(g.gpadl_id());
    if (!info.has_value() || info->channel_id != g.relid() || !channels.contains(g.relid()) ||
        g.vtl() > 2) {
      return absl::InvalidArgumentError(absl::StrCat("saved GPADL owner of ", g.gpadl_id(),
                                                     " does not match the GPADL table"));
    }
    owners[g.gpadl_id()] = GpadlOwner{g.relid(), static_cast<uint8_t>(g.vtl())};
  }
  for (const auto& [relid, ch] : channels) {
    if (ch.open.has_value() && !owners.contains(ch.open->ring_buffer_gpadl)) {
      return absl::InvalidArgumentError(absl::StrCat("saved channel ", relid,
                                                     " names a ring GPADL it does not own"));
    }
  }
  connections_ = std::move(connections);
  channels_ = std::move(channels);
  gpadl_owners_ = std::move(owners);
  next_offer_sequence_ = in.next_offer_sequence();
  assembling_.clear();
  return absl::OkStatus();
}

void VmbusClient::Save(saved::v1::Client& out) const {
  out.set_vtl(vtl_);
  out.set_version(version_.value_or(0));
  out.set_next_open_id(next_open_id_);
  for (const auto& [relid, c] : channels_) {
    auto* p = out.add_channels();
    p->set_relid(relid);
    saved_convert::OfferTo(FromOfferMessage(c.offer, vtl_), p->mutable_offer());
    p->set_connection_id(c.offer.connection_id);
    p->set_state(static_cast<uint32_t>(c.state));
    p->set_rescinded(c.rescinded);
    p->set_close_after_open(c.close_after_open);
    p->set_open_id(c.open_id);
    for (const auto& [id, st] : c.gpadls) (*p->mutable_gpadls())[id] = static_cast<uint32_t>(st);
  }
}

absl::Status VmbusClient::Restore(const saved::v1::Client& in) {
  if (in.vtl() != vtl_) return absl::InvalidArgumentError("saved client is for another VTL");
  absl::btree_map<uint32_t, ClientChannelInfo> channels;
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
    for (const auto& [id, st] : p.gpadls()) {
      if (st > static_cast<uint32_t>(ClientGpadlState::kTearingDown)) {
        return absl::InvalidArgumentError("saved guest GPADL state out of range");
      }
      c.gpadls[id] = static_cast<ClientGpadlState>(st);
    }
    channels.emplace(p.relid(), std::move(c));
  }
  version_ = in.version() == 0 ? std::nullopt : std::optional<uint32_t>(in.version());
  connecting_ = false;
  next_open_id_ = std::max<uint32_t>(in.next_open_id(), 1);
  channels_ = std::move(channels);
  return absl::OkStatus();
}

}  // namespace kmcl
