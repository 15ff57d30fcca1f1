#include "daemon/security/stream_slots.h"

#include "absl/strings/str_cat.h"

namespace kmcld::security {

StreamSlot::StreamSlot(StreamSlots& slots, Peer peer) : slots_(slots), peer_(std::move(peer)) {}

StreamSlot::~StreamSlot() { slots_.Release(this); }

void StreamSlot::Require(std::string rpc, std::string partition, Role role,
                         std::weak_ptr<RevocableStream> stream) {
  kmcl::MutexLock lock(&slots_.mu_);
  rpc_ = std::move(rpc);
  partition_ = std::move(partition);
  role_ = role;
  stream_ = std::move(stream);
}

absl::StatusOr<std::unique_ptr<StreamSlot>> StreamSlots::Acquire(const Peer& peer, uint32_t limit) {
  const std::string& identity = peer.identity;
  auto slot = std::unique_ptr<StreamSlot>(new StreamSlot(*this, peer));
  kmcl::MutexLock lock(&mu_);
  uint32_t& open = open_[identity];
  if (limit != 0 && open >= limit) {
    if (open == 0) open_.erase(identity);
    slot->counted_ = false;
    return absl::ResourceExhaustedError(
        absl::StrCat("identity '", identity, "' already holds its limit of ", limit, " open streams"));
  }
  ++open;
  live_.insert(slot.get());
  return slot;
}

void StreamSlots::Release(StreamSlot* slot) {
  kmcl::MutexLock lock(&mu_);
  if (!slot->counted_) return;
  live_.erase(slot);
  auto it = open_.find(slot->peer_.identity);
  if (it != open_.end() && --it->second == 0) open_.erase(it);
}

std::vector<StreamSlots::Revocation> StreamSlots::Revoked(
    const std::function<bool(const std::string&, const std::string&, Role)>& still_allowed) {
  std::vector<Revocation> out;
  kmcl::MutexLock lock(&mu_);
  for (StreamSlot* slot : live_) {
    if (slot->role_ == ROLE_UNSPECIFIED) continue;
    if (still_allowed(slot->peer_.identity, slot->partition_, slot->role_)) continue;
    out.push_back({slot->peer_, slot->rpc_, slot->partition_, slot->role_, slot->stream_});
  }
  return out;
}

}  // namespace kmcld::security
