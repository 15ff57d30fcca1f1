// daemon/security/rate_limiter.h: a token bucket per identity, so that one
// caller that floods kmcld with calls gets RESOURCE_EXHAUSTED while the
// others go on (policy.proto, Limits).
//
// Thread-safe. Memory grows with the number of distinct identities, which
// only a CA the policy trusts can mint.
#ifndef KMCLD_DAEMON_SECURITY_RATE_LIMITER_H_
#define KMCLD_DAEMON_SECURITY_RATE_LIMITER_H_

#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "kmcl_core/base/mutex.h"
#include "absl/time/time.h"
#include "daemon/security/policy.pb.h"

namespace kmcld::security {

class RateLimiter {
 public:
  // Takes one call from `identity`'s bucket: OK, or RESOURCE_EXHAUSTED
  // naming the limit. No limit (requests_per_second 0): always OK.
  absl::Status Take(const std::string& identity, const Limits& limits, absl::Time now);

 private:
  struct Bucket {
    double tokens = 0;
    absl::Time refilled;
  };
  kmcl::Mutex mu_;
  absl::flat_hash_map<std::string, Bucket> buckets_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kmcld::security

#endif  // KMCLD_DAEMON_SECURITY_RATE_LIMITER_H_
