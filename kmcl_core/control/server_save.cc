// Saving and restoring the host side of the VMBus control plane (VmbusServer);
// docs/saved-state.md. The guest side is client_save.cc.
#include <algorithm>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "kmcl_core/control/saved_convert.h"
#include "kmcl_core/control/vmbus_server.h"
#include "kmcl_core/saved/saved_state.pb.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl {

using saved_convert::pb::SavedPartition;

void VmbusServer::Save(SavedPartition& out) const {
  for (const auto& [vtl, conn] : connections_) {
    auto* c = out.add_connections();
    c->set_vtl(vtl);
    c->set_version(conn.version.value_or(0));
    c->set_offers_requested(conn.offers_requested);
    c->set_unloading(conn.unloading);
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
  // In id order, so the same state always saves to the same bytes.
  const absl::btree_map<uint32_t, GpadlOwner> owners(gpadl_owners_.begin(), gpadl_owners_.end());
  for (const auto& [id, owner] : owners) {
    auto* g = out.add_gpadl_owners();
    g->set_gpadl_id(id);
    g->set_relid(owner.relid);
    g->set_vtl(owner.vtl);
  }
  for (const auto& [id, t] : teardowns_) {
    auto* p = out.add_pending_teardowns();
    p->set_gpadl_id(id);
    p->set_relid(t.relid);
    p->set_vtl(t.vtl);
    p->set_answer(t.answer);
  }
  for (const auto& [id, a] : assembling_) {
    auto* p = out.add_assembling_gpadls();
    p->set_vtl(a.vtl);
    for (const auto& m : a.messages) p->add_messages(m.data(), m.size());
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
    if (c.unloading() && c.version() != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("saved connection at VTL ", c.vtl(), " is unloading while connected"));
    }
    it->second.version = c.version() == 0 ? std::nullopt : std::optional<uint32_t>(c.version());
    it->second.offers_requested = c.offers_requested();
    it->second.unloading = c.unloading();
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
  // The table's teardowns that wait for a lease (finished by the partition
  // right after the restore, since leases are not saved).
  absl::flat_hash_map<uint32_t, bool> table_pending;
  for (const auto& g : in.gpadls()) table_pending[g.gpadl_id()] = g.teardown_pending();
  absl::flat_hash_map<uint32_t, GpadlOwner> owners;
  absl::btree_map<uint32_t, PendingTeardown> teardowns;
  for (const auto& g : in.gpadl_owners()) {
    std::optional<GpadlInfo> info = gpadls_.Get(g.gpadl_id());
    if (!info.has_value() || info->channel_id != g.relid() || !channels.contains(g.relid()) ||
        g.vtl() > 2) {
      return absl::InvalidArgumentError(absl::StrCat("saved GPADL owner of ", g.gpadl_id(),
                                                     " does not match the GPADL table"));
    }
    GpadlOwner owner{g.relid(), static_cast<uint8_t>(g.vtl())};
    if (table_pending[g.gpadl_id()]) {
      // Saved before pending teardowns had their own table: the guest asked.
      teardowns[g.gpadl_id()] = PendingTeardown{owner.relid, owner.vtl, true};
    } else {
      owners[g.gpadl_id()] = owner;
    }
  }
  for (const auto& t : in.pending_teardowns()) {
    const bool live = channels.contains(t.relid());
    // Pending in the saved table (a partition restore) or in the live one.
    std::optional<GpadlInfo> info = gpadls_.Get(t.gpadl_id());
    const bool pending = table_pending[t.gpadl_id()] ||
                         (info.has_value() && info->state == GpadlState::kTearingDown);
    if (!pending || owners.contains(t.gpadl_id()) ||
        teardowns.contains(t.gpadl_id()) || t.vtl() > 2 || (t.answer() && !live)) {
      return absl::InvalidArgumentError(absl::StrCat("saved pending teardown of ", t.gpadl_id(),
                                                     " does not match the GPADL table"));
    }
    teardowns[t.gpadl_id()] =
        PendingTeardown{t.relid(), static_cast<uint8_t>(t.vtl()), t.answer()};
  }
  absl::btree_map<uint32_t, Assembling> assembling;
  for (const auto& a : in.assembling_gpadls()) {
    std::vector<std::vector<uint8_t>> messages;
    for (const std::string& m : a.messages()) messages.emplace_back(m.begin(), m.end());
    if (messages.empty()) {
      return absl::InvalidArgumentError("saved GPADL being assembled has no header");
    }
    absl::StatusOr<GpadlAssembler> assembler =
        GpadlAssembler::FromHeader(messages[0], guest_page_count_);
    for (size_t i = 1; assembler.ok() && i < messages.size(); ++i) {
      if (absl::Status s = assembler->AddBody(messages[i]); !s.ok()) assembler = s;
    }
    if (!assembler.ok()) return assembler.status();
    auto ch = channels.find(assembler->child_relid());
    const uint32_t id = assembler->gpadl_id();
    if (assembler->complete() || ch == channels.end() || ch->second.offer.target_vtl != a.vtl() ||
        gpadls_.Get(id).has_value() || assembling.contains(id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("saved GPADL ", id, " being assembled is inconsistent"));
    }
    assembling.emplace(id, Assembling{static_cast<uint8_t>(a.vtl()), *std::move(assembler),
                                      std::move(messages)});
  }
  // An open's ring GPADL is not checked here: the guest may have torn it
  // down (a closing channel, an unload) and a host endpoint re-attaching
  // maps it through Partition::MapGpadl, which checks the owner.
  connections_ = std::move(connections);
  channels_ = std::move(channels);
  gpadl_owners_ = std::move(owners);
  teardowns_ = std::move(teardowns);
  assembling_ = std::move(assembling);
  next_offer_sequence_ = in.next_offer_sequence();
  return absl::OkStatus();
}

}  // namespace kmcl
