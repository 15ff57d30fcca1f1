#include "daemon/security/identity_budget.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kmcld::security {

absl::string_view ResourceName(Resource r) {
  switch (r) {
    case Resource::kChannels: return "channels";
    case Resource::kGuestBufferBytes: return "guest_buffer_bytes";
    case Resource::kPacketsInFlight: return "packets_in_flight";
  }
  return "?";
}

Charge::~Charge() { budget_.Give(identity_, resource_, amount_); }

absl::Status IdentityBudget::Take(const std::string& identity, Resource r, uint64_t amount, uint64_t limit) {
  kmcl::MutexLock lock(&mu_);
  uint64_t& held = held_[Key{identity, r}];
  if (limit != 0 && (amount > limit || held > limit - amount)) {
    const uint64_t had = held;
    if (held == 0) held_.erase(Key{identity, r});
    return absl::ResourceExhaustedError(absl::StrCat("identity '", identity, "' holds ", had, " and asked for ",
                                                     amount, " more, over its limit ", ResourceName(r), "=",
                                                     limit));
  }
  held += amount;
  if (held == 0) held_.erase(Key{identity, r});
  return absl::OkStatus();
}

void IdentityBudget::Give(const std::string& identity, Resource r, uint64_t amount) {
  kmcl::MutexLock lock(&mu_);
  auto it = held_.find(Key{identity, r});
  if (it == held_.end()) return;
  it->second -= std::min(it->second, amount);
  if (it->second == 0) held_.erase(it);
}

absl::StatusOr<std::unique_ptr<Charge>> IdentityBudget::TakeCharge(const std::string& identity, Resource r,
                                                                   uint64_t amount, uint64_t limit) {
  if (absl::Status s = Take(identity, r, amount, limit); !s.ok()) return s;
  return std::unique_ptr<Charge>(new Charge(*this, identity, r, amount));
}

uint64_t IdentityBudget::Held(const std::string& identity, Resource r) const {
  kmcl::MutexLock lock(&mu_);
  auto it = held_.find(Key{identity, r});
  return it == held_.end() ? 0 : it->second;
}

}  // namespace kmcld::security
