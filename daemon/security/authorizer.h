// daemon/security/authorizer.h: the one authorization check of kmcld.
//
// Every kmcl.v1 (and devices) RPC entry calls Check (through
// kmcld::Authorize in service_context.h) before it has any effect. Check
// names the caller (PeerOf: certificate URI SAN, else DNS SAN, else CN;
// "local" on the Unix socket; "insecure-loopback" on plaintext TCP), finds
// the role the RPC needs (RequiredRole: one table for the whole API) and the
// partition it acts on (the request's partition_id, nested or not, or id for
// partition RPCs; none means every partition, "*"), asks the current policy,
// and writes an audit line for every denial and every privileged (non
// observer) call. A denial is PERMISSION_DENIED naming the missing role; a
// caller over its request rate (RateLimiter) gets RESOURCE_EXHAUSTED.
//
// Thread-safe; cheap enough for a reactor thread (one mutex to read the
// policy pointer, one to write an audit line).
#ifndef KMCLD_DAEMON_SECURITY_AUTHORIZER_H_
#define KMCLD_DAEMON_SECURITY_AUTHORIZER_H_

#include <cstdio>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "daemon/security/policy.h"
#include "daemon/security/rate_limiter.h"
#include "daemon/security/stream_slots.h"
#include "google/protobuf/message.h"
#include "grpcpp/server_context.h"

namespace kmcld::security {

struct Peer {
  std::string identity;  // see the file comment
  std::string address;   // grpc's peer string, "ipv4:127.0.0.1:40000"
};
Peer PeerOf(const grpc::ServerContextBase& ctx);

// The role `rpc` (the method name, "OfferChannel") needs; nullopt for a
// name the table does not know (Check denies those). Attach depends on the
// endpoint role and is checked with CheckRole.
std::optional<Role> RequiredRole(absl::string_view rpc);

// The partition `request` acts on; "" when it names none.
std::string PartitionOf(absl::string_view rpc, const google::protobuf::Message& request);

// One structured line per event, to a FILE (stderr or --audit_log):
//   kmcld audit: time=... identity="..." peer="..." rpc=... object="..." result=...
class AuditLog {
 public:
  explicit AuditLog(FILE* out) : out_(out) {}
  void Record(const Peer& peer, absl::string_view rpc, absl::string_view object,
              absl::string_view result);

 private:
  absl::Mutex mu_;
  FILE* const out_ ABSL_PT_GUARDED_BY(mu_);  // the pointer is const; writes to it take mu_
};

class Authorizer {
 public:
  Authorizer(const PolicyHolder& policy, AuditLog& audit, RateLimiter& limiter, StreamSlots& streams)
      : policy_(policy), audit_(audit), limiter_(limiter), streams_(streams) {}

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
  void FilterVisible(const grpc::ServerContextBase& ctx, google::protobuf::Message& response) const;

 private:
  // The caller's request rate, audited when exceeded.
  absl::Status Limit(const Peer& peer, const Policy& policy, absl::string_view rpc,
                     absl::string_view object) const;

  const PolicyHolder& policy_;
  AuditLog& audit_;
  RateLimiter& limiter_;
  StreamSlots& streams_;
};

}  // namespace kmcld::security

#endif  // KMCLD_DAEMON_SECURITY_AUTHORIZER_H_
