// daemon/security/policy.h: who may do what on which partition.
//
// A Policy is loaded from a policy.proto text file (or built in: without a
// file only "local" clients, and with --insecure_plaintext_tcp the
// "insecure-loopback" ones, are ADMIN) and answers one question: does
// `identity` hold `role` on `partition`? ADMIN implies every role; every role
// implies OBSERVER. PolicyHolder keeps the current policy behind a mutex so
// SIGHUP can swap it while calls are checked against the previous one.
//
// Policy: immutable, thread-safe. PolicyHolder: thread-safe.
#ifndef KMCLD_DAEMON_SECURITY_POLICY_H_
#define KMCLD_DAEMON_SECURITY_POLICY_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kmcl_core/base/mutex.h"
#include "daemon/security/policy.pb.h"

namespace kmcld::security {

inline constexpr char kLocalIdentity[] = "local";
inline constexpr char kInsecureLoopbackIdentity[] = "insecure-loopback";

// "observer", "guest", "host", "operator", "admin".
absl::string_view RoleName(Role role);

class Policy {
 public:
  // Checks every grant (a who, a partition, a role each).
  static absl::StatusOr<std::shared_ptr<const Policy>> FromProto(PolicyProto proto);
  static absl::StatusOr<std::shared_ptr<const Policy>> Parse(absl::string_view text);
  // INVALID_ARGUMENT / NOT_FOUND naming the file and what is wrong.
  static absl::StatusOr<std::shared_ptr<const Policy>> Load(const std::string& path);
  // No file: "local" is ADMIN everywhere, and "insecure-loopback" too when
  // plaintext loopback TCP was allowed explicitly.
  static std::shared_ptr<const Policy> BuiltIn(bool insecure_loopback_admin);

  bool Allows(absl::string_view identity, absl::string_view partition, Role role) const;
  // The limits that apply to `identity` (see Limits in policy.proto).
  const Limits& LimitsFor(absl::string_view identity) const;
  // True if `identity` holds `role` on at least one partition.
  bool AllowsAnywhere(absl::string_view identity, Role role) const;

  const PolicyProto& proto() const { return proto_; }

 private:
  explicit Policy(PolicyProto proto) : proto_(std::move(proto)) {}
  bool Matches(const Grant& grant, absl::string_view identity) const;
  static bool Implies(const Grant& grant, Role role);

  const PolicyProto proto_;
};

class PolicyHolder {
 public:
  explicit PolicyHolder(std::shared_ptr<const Policy> policy) : policy_(std::move(policy)) {}
  std::shared_ptr<const Policy> Get() const {
    kmcl::MutexLock lock(&mu_);
    return policy_;
  }
  void Set(std::shared_ptr<const Policy> policy) {
    kmcl::MutexLock lock(&mu_);
    policy_ = std::move(policy);
  }

 private:
  mutable kmcl::Mutex mu_;
  std::shared_ptr<const Policy> policy_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kmcld::security

#endif  // KMCLD_DAEMON_SECURITY_POLICY_H_
