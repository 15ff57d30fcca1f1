// daemon/security/identity_budget.h: what each identity holds of the
// resources the policy's Limits bound per identity (policy.proto): channels,
// guest-buffer bytes and packets in flight, over all its connections.
//
// Take(identity, kChannels, 1, limit) either counts the amount against the
// identity or, when that would pass `limit`, is RESOURCE_EXHAUSTED naming
// the limit and the amounts, and counts nothing; Give returns it. A Charge
// gives its amount back when destroyed, for resources that live as long as
// an object (an endpoint, a guest buffer).
//
//   absl::StatusOr<std::unique_ptr<Charge>> c = budget.Charge(id, Resource::kChannels, 1, limit);
//   endpoint.KeepUntilFreed(std::shared_ptr<Charge>(*std::move(c)));
//
// Thread-safe; cheap enough for a reactor thread (one mutex, no I/O). The
// budget must outlive its charges.
#ifndef KMCLD_DAEMON_SECURITY_IDENTITY_BUDGET_H_
#define KMCLD_DAEMON_SECURITY_IDENTITY_BUDGET_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kmcl_core/base/mutex.h"

namespace kmcld::security {

enum class Resource { kChannels, kGuestBufferBytes, kPacketsInFlight };

// "channels", "guest_buffer_bytes", "packets_in_flight": the Limits field.
absl::string_view ResourceName(Resource r);

class IdentityBudget;

class Charge {
 public:
  ~Charge();
  Charge(const Charge&) = delete;
  Charge& operator=(const Charge&) = delete;

 private:
  friend class IdentityBudget;
  Charge(IdentityBudget& budget, std::string identity, Resource r, uint64_t amount)
      : budget_(budget), identity_(std::move(identity)), resource_(r), amount_(amount) {}
  IdentityBudget& budget_;
  const std::string identity_;
  const Resource resource_;
  const uint64_t amount_;
};

class IdentityBudget {
 public:
  // Counts `amount` of `r` against `identity`, or RESOURCE_EXHAUSTED when
  // what it holds plus `amount` would pass `limit` (0: no limit).
  absl::Status Take(const std::string& identity, Resource r, uint64_t amount, uint64_t limit);
  // Returns `amount` (at most what the identity holds).
  void Give(const std::string& identity, Resource r, uint64_t amount);
  // Take, as a Charge that Gives when destroyed.
  absl::StatusOr<std::unique_ptr<Charge>> TakeCharge(const std::string& identity, Resource r, uint64_t amount,
                                                     uint64_t limit);
  uint64_t Held(const std::string& identity, Resource r) const;

 private:
  using Key = std::pair<std::string, Resource>;
  mutable kmcl::Mutex mu_;
  absl::flat_hash_map<Key, uint64_t> held_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kmcld::security

#endif  // KMCLD_DAEMON_SECURITY_IDENTITY_BUDGET_H_
