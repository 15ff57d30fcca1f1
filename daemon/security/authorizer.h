// daemon/security/authorizer.h: the one authorization check of kmcld.
//
// Every kmcl.v1 (and devices) RPC entry calls Check (through
// kmcld::Authorize in service_context.h) before it has any effect. Check
// names the caller (PeerOf: certificate URI SAN, else DNS SAN, else CN;
// on the Unix socket "local" for kmcld's own uid, else "uid:<n>"
// (unix_listener.h); "insecure-loopback" on plaintext TCP), finds
// the role the RPC needs (RequiredRole: one table for the whole API) and the
// partition it acts on (the request's partition_id, nested or not, or id for
// partition RPCs; none means every partition, "*"), asks the current policy,
// and writes an audit line for every denial and every privileged (non
// observer) call (audit_log.h: a denial at once, an allowed call when it
// ends, with its status). A denial is PERMISSION_DENIED naming the missing
// role; a caller over its request rate (RateLimiter) gets RESOURCE_EXHAUSTED.
//
// Thread-safe; cheap enough for a reactor thread (one mutex to read the
// policy pointer, one to queue an audit line; no I/O).
#ifndef KMCLD_DAEMON_SECURITY_AUTHORIZER_H_
#define KMCLD_DAEMON_SECURITY_AUTHORIZER_H_

#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "daemon/security/audit_log.h"
#include "daemon/security/identity_budget.h"
#include "daemon/security/policy.h"
#include "daemon/security/rate_limiter.h"
#include "daemon/security/stream_slots.h"
#include "google/protobuf/message.h"
#include "grpcpp/server_context.h"

namespace kmcld::security {

Peer PeerOf(const grpc::ServerContextBase& ctx);

// The role `rpc` (the method name, "OfferChannel") needs; nullopt for a
// name the table does not know (Check denies those). Attach depends on the
// endpoint role and is checked with CheckRole.
std::optional<Role> RequiredRole(absl::string_view rpc);

// The partition `request` acts on; "" when it names none.
std::string PartitionOf(absl::string_view rpc, const google::protobuf::Message& request);

class Authorizer {
 public:
  Authorizer(const PolicyHolder& policy, AuditLog& audit, RateLimiter& limiter, StreamSlots& streams,
             IdentityBudget& budget)
      : policy_(policy), audit_(audit), limiter_(limiter), streams_(streams), budget_(budget) {}

  AuditLog& audit() const { return audit_; }

  absl::Status Check(const grpc::ServerContextBase& ctx, absl::string_view rpc,
                     const google::protobuf::Message& request) const;
  // For calls whose role depends on their content (Attach as host or guest).
  absl::Status CheckRole(const grpc::ServerContextBase& ctx, absl::string_view rpc,
                         absl::string_view partition, Role role) const;
  // For list calls that filter: OK if the caller may observe at least one
  // partition (then Visible filters), PERMISSION_DENIED otherwise.
  absl::Status CheckList(const grpc::ServerContextBase& ctx, absl::string_view rpc) const;
  bool Visible(const grpc::ServerContextBase& ctx, absl::string_view partition) const;
  // The same for a caller identified earlier (a stream that outlives its
  // first look at the context): evaluated against the current policy, so a
  // grant revoked by a reload hides that partition from then on.
  bool Visible(const Peer& peer, absl::string_view partition) const;
  // For the list RPCs that span partitions (ListChannels, ListOffers,
  // ListChannelDiagnostics, ListDevices, ListGpadls) called without a
  // partition, which Check lets through for any observer (as it does
  // GetVersion, which names none): drops from every repeated field of
  // `response` the entries whose partition the caller may not observe.
  // A place for one more stream of the caller (Limits.streams), held by the
  // stream until it ends; RESOURCE_EXHAUSTED (audited) past the limit.
  absl::StatusOr<std::unique_ptr<StreamSlot>> AcquireStream(const grpc::ServerContextBase& ctx,
                                                            absl::string_view rpc) const;
  // The stream holding `slot` needs `role` on `partition` ("": observer of
  // some partition) to stay open: from now on a policy reload that revokes
  // it ends `stream` (RevokeStreams). PERMISSION_DENIED if the policy in
  // force already does not allow it (a reload raced the first check).
  absl::Status HoldStream(StreamSlot& slot, absl::string_view rpc, absl::string_view partition, Role role,
                          std::weak_ptr<RevocableStream> stream) const;
  // After a policy reload: ends every open stream the new policy no longer
  // allows (PERMISSION_DENIED naming the role, and an audit line
  // result=revoked:missing-<role>). Returns how many.
  size_t RevokeStreams() const;
  void FilterVisible(const grpc::ServerContextBase& ctx, google::protobuf::Message& response) const;

  // ---- Limits per identity beyond the rate and streams (policy.proto) ----
  // `amount` of `r` for the caller, held by the returned Charge until it is
  // destroyed (an endpoint's channel, a guest buffer); RESOURCE_EXHAUSTED
  // (audited as limited:<resource>) naming the limit.
  absl::StatusOr<std::unique_ptr<Charge>> ChargeFor(const grpc::ServerContextBase& ctx, absl::string_view rpc,
                                                    Resource r, uint64_t amount) const;
  // The same for a caller identified earlier (a stream's packets in
  // flight), counted until Give.
  absl::Status Take(const Peer& peer, absl::string_view rpc, Resource r, uint64_t amount) const;
  void Give(const Peer& peer, Resource r, uint64_t amount) const;
  // A message of `bytes` from the caller: RESOURCE_EXHAUSTED (audited as
  // limited:max_message_bytes) over its Limits.max_message_bytes. Check does
  // it for every unary request; streams call it per message.
  absl::Status CheckMessageSize(const Peer& peer, absl::string_view rpc, size_t bytes) const;

 private:
  // The caller's request rate, audited when exceeded.
  absl::Status Limit(const Peer& peer, const Policy& policy, absl::string_view rpc,
                     absl::string_view object) const;

  const PolicyHolder& policy_;
  AuditLog& audit_;
  RateLimiter& limiter_;
  StreamSlots& streams_;
  IdentityBudget& budget_;
};

}  // namespace kmcld::security

#endif  // KMCLD_DAEMON_SECURITY_AUTHORIZER_H_
