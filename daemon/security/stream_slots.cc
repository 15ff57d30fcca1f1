#include "daemon/security/stream_slots.h"

#include "absl/strings/str_cat.h"

namespace kmcld::security {

StreamSlot::~StreamSlot() { slots_.Release(identity_); }

absl::StatusOr<std::unique_ptr<StreamSlot>> StreamSlots::Acquire(const std::string& identity, uint32_t limit) {
  absl::MutexLock lock(&mu_);
  uint32_t& open = open_[identity];
  if (limit != 0 && open >= limit) {
    if (open == 0) open_.erase(identity);
    return absl::ResourceExhaustedError(
        absl::StrCat("identity '", identity, "' already holds its limit of ", limit, " open streams"));
  }
  ++open;
  return std::make_unique<StreamSlot>(*this, identity);
}

void StreamSlots::Release(const std::string& identity) {
  absl::MutexLock lock(&mu_);
  auto it = open_.find(identity);
  if (it != open_.end() && --it->second == 0) open_.erase(it);
}

}  // namespace kmcld::security
