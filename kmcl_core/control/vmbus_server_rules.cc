// The rules of docs/control-plane.md for VmbusServer: what each table does
// when a relid is released or a guest connection unloads, and the checks
// that state them (vmbus_server.h).
#include <algorithm>
#include <utility>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "kmcl_core/control/vmbus_server.h"

namespace kmcl {

template <typename Owned>
void VmbusServer::ForgetGpadls(Owned owned) {
  // GPADLs being assembled: dropped. Nothing is created and nothing answered;
  // a late GPADL_BODY is a protocol error, whoever holds the relid by then.
  absl::erase_if(assembling_, [&](const auto& entry) {
    return owned(entry.second.assembler.child_relid(), entry.second.vtl);
  });
  // GPADL owners: torn down (when the host unmaps, if it holds a lease),
  // without GPADL_TORNDOWN: the guest did not ask.
  std::vector<std::pair<uint32_t, GpadlOwner>> abandoned;
  for (const auto& [id, o] : gpadl_owners_) {
    if (owned(o.relid, o.vtl)) abandoned.emplace_back(id, o);
  }
  std::sort(abandoned.begin(), abandoned.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [id, o] : abandoned) AbandonGpadl(id, o);
  // Pending teardowns: still finish at unmap, but nobody waits for an answer.
  for (auto& [id, t] : teardowns_) {
    if (owned(t.relid, t.vtl)) t.answer = false;
  }
}

void VmbusServer::AbandonGpadl(uint32_t gpadl_id, const GpadlOwner& owner) {
  gpadl_owners_.erase(gpadl_id);
  absl::StatusOr<TeardownResult> r = gpadls_.Teardown(gpadl_id);
  if (r.ok() && *r == TeardownResult::kPending) {
    teardowns_[gpadl_id] = PendingTeardown{owner.relid, owner.vtl, false};
    return;
  }
  effects_.push_back(GpadlGone{owner.relid, gpadl_id});
}

void VmbusServer::ForgetRelid(uint32_t relid) {
  ForgetGpadls([relid](uint32_t r, uint8_t) { return r == relid; });
}

void VmbusServer::ForgetConnection(uint8_t vtl) {
  // Open requests in flight are cancelled (the guest no longer waits for
  // OPENCHANNEL_RESULT), open channels are closed by their host endpoints,
  // rescinded channels are released, and every offer is sent again after
  // the next REQUESTOFFERS.
  std::vector<uint32_t> released;
  for (auto& [relid, c] : channels_) {
    if (c.offer.target_vtl != vtl) continue;
    switch (c.state) {
      case ServerChannelState::kOpen:
        c.state = ServerChannelState::kClosing;
        effects_.push_back(CloseRequested{relid});
        break;
      case ServerChannelState::kClosingReopen:
        c.state = ServerChannelState::kClosing;
        break;
      case ServerChannelState::kOpening:
        c.state = ServerChannelState::kOffered;
        c.open.reset();
        effects_.push_back(OpenCancelled{relid});
        break;
      case ServerChannelState::kRevoked:
        released.push_back(relid);
        break;
      default:
        break;
    }
    c.offer_sent = false;
  }
  for (uint32_t relid : released) ReleaseChannel(relid);
  ForgetGpadls([vtl](uint32_t, uint8_t v) { return v == vtl; });
  connections_[vtl] = Connection{};
}

bool VmbusServer::UnloadDone(uint8_t vtl) const {
  for (const auto& [relid, c] : channels_) {
    if (c.offer.target_vtl == vtl && (c.state == ServerChannelState::kOpening ||
                                      c.state == ServerChannelState::kClosing ||
                                      c.state == ServerChannelState::kClosingReopen)) {
      return false;
    }
  }
  for (const auto& [id, t] : teardowns_) {
    if (t.vtl == vtl) return false;
  }
  return true;
}

void VmbusServer::FinishUnloads() {
  for (auto& [vtl, conn] : connections_) {
    if (!conn.unloading || !UnloadDone(vtl)) continue;
    conn.unloading = false;
    Send(vtl, UnloadResponse{});
  }
}

absl::Status VmbusServer::CheckInvariants() const {
  // A relid is live while its channel exists; a connection's GPADL entries
  // live while it is connected.
  auto live = [&](uint32_t relid, uint8_t vtl) {
    auto c = channels_.find(relid);
    auto conn = connections_.find(vtl);
    return c != channels_.end() && c->second.offer.target_vtl == vtl && c->second.offer_sent &&
           conn != connections_.end() && conn->second.version.has_value();
  };
  for (const auto& [id, a] : assembling_) {
    if (!live(a.assembler.child_relid(), a.vtl)) {
      return absl::InternalError(absl::StrCat("GPADL ", id, " being assembled for released relid ",
                                              a.assembler.child_relid()));
    }
  }
  for (const auto& [id, o] : gpadl_owners_) {
    std::optional<GpadlInfo> info = gpadls_.Get(id);
    if (!live(o.relid, o.vtl) || !info.has_value() || info->channel_id != o.relid) {
      return absl::InternalError(absl::StrCat("GPADL ", id, " owned by released relid ", o.relid));
    }
  }
  for (const auto& [id, t] : teardowns_) {
    if (t.answer && !live(t.relid, t.vtl)) {
      return absl::InternalError(
          absl::StrCat("GPADL_TORNDOWN of ", id, " owed to released relid ", t.relid));
    }
    if (!gpadls_.Get(id).has_value()) {
      return absl::InternalError(absl::StrCat("pending teardown of unknown GPADL ", id));
    }
  }
  for (const auto& [relid, c] : channels_) {
    const bool in_flight = c.state == ServerChannelState::kOpening ||
                           c.state == ServerChannelState::kClosingReopen;
    if (in_flight && !c.open.has_value()) {
      return absl::InternalError(absl::StrCat("channel ", relid, " opens without parameters"));
    }
  }
  for (const auto& [vtl, conn] : connections_) {
    if (conn.unloading && conn.version.has_value()) {
      return absl::InternalError(absl::StrCat("VTL ", vtl, " unloading while connected"));
    }
  }
  return absl::OkStatus();
}

}  // namespace kmcl
