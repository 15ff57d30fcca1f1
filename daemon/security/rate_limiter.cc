#include "daemon/security/rate_limiter.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace kmcld::security {

absl::Status RateLimiter::Take(const std::string& identity, const Limits& limits, absl::Time now) {
  if (limits.requests_per_second() == 0) return absl::OkStatus();
  const double rate = limits.requests_per_second();
  const double burst = limits.burst() == 0 ? rate : limits.burst();
  kmcl::MutexLock lock(&mu_);
  auto [it, added] = buckets_.try_emplace(identity);
  Bucket& b = it->second;
  if (added) {
    b.tokens = burst;
  } else {
    b.tokens = std::min(burst, b.tokens + absl::ToDoubleSeconds(now - b.refilled) * rate);
  }
  b.refilled = now;
  if (b.tokens < 1) {
    return absl::ResourceExhaustedError(absl::StrCat("identity '", identity, "' exceeded its request rate (",
                                                     limits.requests_per_second(), "/s, burst ", burst,
                                                     "); try again later"));
  }
  b.tokens -= 1;
  return absl::OkStatus();
}

}  // namespace kmcld::security
