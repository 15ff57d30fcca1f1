#include "daemon/security/authorizer.h"

#include <unistd.h>

#include <deque>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpc/grpc_security_constants.h"
#include "daemon/security/unix_listener.h"
#include "grpcpp/security/auth_context.h"

namespace kmcld::security {
namespace {

// The role each RPC needs. An RPC missing here is denied to everyone.
const absl::flat_hash_map<absl::string_view, Role>& RoleTable() {
  static const auto* table = new absl::flat_hash_map<absl::string_view, Role>{
      // Reading: observer.
      {"GetChannel", OBSERVER}, {"ListChannels", OBSERVER}, {"ListOffers", OBSERVER},
      {"ListDevices", OBSERVER}, {"GetHeartbeat", OBSERVER}, {"KvpGet", OBSERVER},
      {"KvpEnumerate", OBSERVER}, {"GetChannelDiagnostics", OBSERVER},
      {"ListChannelDiagnostics", OBSERVER}, {"WatchEvents", OBSERVER}, {"GetGpadl", OBSERVER},
      {"ListPartitions", OBSERVER}, {"GetPartition", OBSERVER}, {"ListGpadls", OBSERVER},
      {"GetVersion", OBSERVER},
      // The guest's side.
      {"OpenChannel", GUEST}, {"CloseChannel", GUEST}, {"AllocateGuestBuffer", GUEST},
      {"FreeGuestBuffer", GUEST}, {"WriteGuestMemory", GUEST}, {"ReadGuestMemory", GUEST},
      {"CreateGpadl", GUEST}, {"TeardownGpadl", GUEST},
      // The host's side, the devices' host end included.
      {"OfferChannel", HOST}, {"StartChannel", HOST}, {"PauseChannel", HOST},
      {"RescindChannel", HOST}, {"CleanupChannel", HOST}, {"MapGpadl", HOST},
      {"ReadLease", HOST}, {"WriteLease", HOST}, {"UnmapGpadl", HOST},
      {"RequestShutdown", HOST}, {"SendTimeSample", HOST}, {"KvpSet", HOST},
      {"KvpDelete", HOST},
      // Save and restore.
      {"SaveChannel", OPERATOR}, {"RestoreChannel", OPERATOR}, {"SavePartition", OPERATOR},
      {"RestorePartition", OPERATOR},
      // Partitions themselves.
      {"CreatePartition", ADMIN}, {"DeletePartition", ADMIN},
  };
  return *table;
}

// List RPCs that, given no partition, list every partition's entries: any
// observer may call them and sees what FilterVisible keeps (WatchEvents:
// the events of the partitions Visible admits, checked per event).
bool IsFilteredList(absl::string_view rpc) {
  return rpc == "ListChannels" || rpc == "ListOffers" || rpc == "ListChannelDiagnostics" ||
         rpc == "ListDevices" || rpc == "ListGpadls" || rpc == "WatchEvents";
}

// RPCs about the daemon itself, no partition's: any caller that may observe
// some partition may call them.
bool IsDaemonWide(absl::string_view rpc) { return rpc == "GetVersion"; }

// Partition RPCs name their partition "id".
bool NamesPartitionById(absl::string_view rpc) {
  return rpc == "GetPartition" || rpc == "CreatePartition" || rpc == "DeletePartition";
}

uint64_t LimitOf(const Limits& limits, Resource r) {
  switch (r) {
    case Resource::kChannels: return limits.channels();
    case Resource::kGuestBufferBytes: return limits.guest_buffer_bytes();
    case Resource::kPacketsInFlight: return limits.packets_in_flight();
  }
  return 0;
}

std::string FirstProperty(const grpc::AuthContext& auth, const char* name) {
  for (const grpc::string_ref& value : auth.FindPropertyValues(name)) {
    if (!value.empty()) return std::string(value.data(), value.size());
  }
  return "";
}

}  // namespace

Peer PeerOf(const grpc::ServerContextBase& ctx) {
  Peer peer;
  peer.address = ctx.peer();
  std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
  if (auth != nullptr && auth->IsPeerAuthenticated()) {
    for (const char* name : {GRPC_PEER_URI_PROPERTY_NAME, GRPC_PEER_DNS_PROPERTY_NAME,
                             GRPC_X509_CN_PROPERTY_NAME}) {
      peer.identity = FirstProperty(*auth, name);
      if (!peer.identity.empty()) return peer;
    }
    peer.identity = "unnamed-certificate";  // verified, but names nobody a policy can grant
    return peer;
  }
  if (std::optional<UnixCredentials> unix = PeerCredentials(peer.address); unix.has_value()) {
    // kmcld's own Unix socket (unix_listener.h): named by the client's uid.
    peer.address = absl::StrCat("unix:pid=", unix->pid, ",uid=", unix->uid);
    peer.identity = unix->uid == ::geteuid() ? std::string(kLocalIdentity) : absl::StrCat("uid:", unix->uid);
    return peer;
  }
  peer.identity = absl::StartsWith(peer.address, "unix:") ? kLocalIdentity : kInsecureLoopbackIdentity;
  return peer;
}

std::optional<Role> RequiredRole(absl::string_view rpc) {
  auto it = RoleTable().find(rpc);
  if (it == RoleTable().end()) return std::nullopt;
  return it->second;
}

std::string PartitionOf(absl::string_view rpc, const google::protobuf::Message& request) {
  const google::protobuf::Descriptor* d = request.GetDescriptor();
  const google::protobuf::Reflection* r = request.GetReflection();
  if (NamesPartitionById(rpc)) {
    const google::protobuf::FieldDescriptor* id = d->FindFieldByName("id");
    return id != nullptr && id->type() == google::protobuf::FieldDescriptor::TYPE_STRING
               ? r->GetString(request, id)
               : "";
  }
  // Breadth first through the set message fields: partition_id may sit in a
  // ChannelRef, an EndpointRef, a RestoreTarget...
  std::deque<const google::protobuf::Message*> queue = {&request};
  while (!queue.empty()) {
    const google::protobuf::Message& m = *queue.front();
    queue.pop_front();
    const google::protobuf::Descriptor* md = m.GetDescriptor();
    const google::protobuf::Reflection* mr = m.GetReflection();
    const google::protobuf::FieldDescriptor* pid = md->FindFieldByName("partition_id");
    if (pid != nullptr && pid->type() == google::protobuf::FieldDescriptor::TYPE_STRING &&
        !pid->is_repeated()) {
      return mr->GetString(m, pid);
    }
    for (int i = 0; i < md->field_count(); ++i) {
      const google::protobuf::FieldDescriptor* f = md->field(i);
      if (f->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE && !f->is_repeated() &&
          mr->HasField(m, f)) {
        queue.push_back(&mr->GetMessage(m, f));
      }
    }
  }
  return "";
}

absl::Status Authorizer::Check(const grpc::ServerContextBase& ctx, absl::string_view rpc,
                               const google::protobuf::Message& request) const {
  std::optional<Role> role = RequiredRole(rpc);
  if (!role.has_value()) {
    Peer peer = PeerOf(ctx);
    audit_.Record(peer, rpc, "", "denied:unknown-rpc");
    return absl::PermissionDeniedError(absl::StrCat(rpc, " is not in kmcld's authorization table"));
  }
  std::string partition = PartitionOf(rpc, request);
  absl::Status s = partition.empty() && (IsFilteredList(rpc) || IsDaemonWide(rpc))
                       ? CheckList(ctx, rpc)
                       : CheckRole(ctx, rpc, partition, *role);
  if (s.ok()) s = CheckMessageSize(PeerOf(ctx), rpc, request.ByteSizeLong());
  return s;
}

absl::Status Authorizer::CheckMessageSize(const Peer& peer, absl::string_view rpc, size_t bytes) const {
  const uint32_t limit = policy_.Get()->LimitsFor(peer.identity).max_message_bytes();
  if (limit == 0 || bytes <= limit) return absl::OkStatus();
  audit_.Record(peer, rpc, "*", "limited:max_message_bytes");
  return absl::ResourceExhaustedError(absl::StrCat("identity '", peer.identity, "' sent a message of ", bytes,
                                                   " bytes to ", rpc, ", over its limit max_message_bytes=",
                                                   limit));
}

absl::StatusOr<std::unique_ptr<Charge>> Authorizer::ChargeFor(const grpc::ServerContextBase& ctx,
                                                              absl::string_view rpc, Resource r,
                                                              uint64_t amount) const {
  const Peer peer = PeerOf(ctx);
  const uint64_t limit = LimitOf(policy_.Get()->LimitsFor(peer.identity), r);
  auto charge = budget_.TakeCharge(peer.identity, r, amount, limit);
  if (!charge.ok()) audit_.Record(peer, rpc, "*", absl::StrCat("limited:", ResourceName(r)));
  return charge;
}

absl::Status Authorizer::Take(const Peer& peer, absl::string_view rpc, Resource r, uint64_t amount) const {
  const uint64_t limit = LimitOf(policy_.Get()->LimitsFor(peer.identity), r);
  absl::Status s = budget_.Take(peer.identity, r, amount, limit);
  if (!s.ok()) audit_.Record(peer, rpc, "*", absl::StrCat("limited:", ResourceName(r)));
  return s;
}

void Authorizer::Give(const Peer& peer, Resource r, uint64_t amount) const { budget_.Give(peer.identity, r, amount); }

absl::Status Authorizer::CheckRole(const grpc::ServerContextBase& ctx, absl::string_view rpc,
                                   absl::string_view partition, Role role) const {
  Peer peer = PeerOf(ctx);
  const absl::string_view object = partition.empty() ? "*" : partition;
  std::shared_ptr<const Policy> policy = policy_.Get();
  if (absl::Status s = Limit(peer, *policy, rpc, object); !s.ok()) return s;
  if (!policy->Allows(peer.identity, object, role)) {
    audit_.Record(peer, rpc, object, absl::StrCat("denied:missing-", RoleName(role)));
    return absl::PermissionDeniedError(absl::StrCat(
        "identity '", peer.identity, "' lacks role ", RoleName(role), " on partition '", object,
        "' needed by ", rpc));
  }
  if (role != OBSERVER) audit_.Begin(&ctx, peer, rpc, object);  // written when the call ends
  return absl::OkStatus();
}

absl::Status Authorizer::CheckList(const grpc::ServerContextBase& ctx, absl::string_view rpc) const {
  Peer peer = PeerOf(ctx);
  std::shared_ptr<const Policy> policy = policy_.Get();
  if (absl::Status s = Limit(peer, *policy, rpc, "*"); !s.ok()) return s;
  if (policy->AllowsAnywhere(peer.identity, OBSERVER)) return absl::OkStatus();
  audit_.Record(peer, rpc, "*", "denied:missing-observer");
  return absl::PermissionDeniedError(absl::StrCat("identity '", peer.identity,
                                                  "' lacks role observer on every partition, needed by ", rpc));
}

absl::Status Authorizer::Limit(const Peer& peer, const Policy& policy, absl::string_view rpc,
                               absl::string_view object) const {
  absl::Status s = limiter_.Take(peer.identity, policy.LimitsFor(peer.identity), absl::Now());
  if (!s.ok()) audit_.Record(peer, rpc, object, "limited:request-rate");
  return s;
}

absl::StatusOr<std::unique_ptr<StreamSlot>> Authorizer::AcquireStream(const grpc::ServerContextBase& ctx,
                                                                      absl::string_view rpc) const {
  Peer peer = PeerOf(ctx);
  auto slot = streams_.Acquire(peer, policy_.Get()->LimitsFor(peer.identity).streams());
  if (!slot.ok()) audit_.Record(peer, rpc, "*", "limited:streams");
  return slot;
}

namespace {

bool StillAllowed(const Policy& policy, const std::string& identity, const std::string& partition, Role role) {
  return partition.empty() ? policy.AllowsAnywhere(identity, role) : policy.Allows(identity, partition, role);
}

absl::Status Revocation(const std::string& identity, absl::string_view rpc, const std::string& partition,
                        Role role) {
  return absl::PermissionDeniedError(absl::StrCat(
      "identity '", identity, "' lost role ", RoleName(role), partition.empty() ? " on every partition" : "",
      partition.empty() ? "" : absl::StrCat(" on partition '", partition, "'"), ", needed by ", rpc,
      " (policy reloaded)"));
}

}  // namespace

absl::Status Authorizer::HoldStream(StreamSlot& slot, absl::string_view rpc, absl::string_view partition,
                                    Role role, std::weak_ptr<RevocableStream> stream) const {
  slot.Require(std::string(rpc), std::string(partition), role, std::move(stream));
  // Registered first, checked second: a reload either sees the stream or
  // happened before this check.
  const std::string p(partition);
  if (StillAllowed(*policy_.Get(), slot.peer().identity, p, role)) return absl::OkStatus();
  return Revocation(slot.peer().identity, rpc, p, role);
}

size_t Authorizer::RevokeStreams() const {
  std::shared_ptr<const Policy> policy = policy_.Get();
  std::vector<StreamSlots::Revocation> revoked =
      streams_.Revoked([&policy](const std::string& identity, const std::string& partition, Role role) {
        return StillAllowed(*policy, identity, partition, role);
      });
  for (const StreamSlots::Revocation& r : revoked) {
    audit_.Record(r.peer, r.rpc, r.partition.empty() ? "*" : r.partition,
                  absl::StrCat("revoked:missing-", RoleName(r.role)));
    if (std::shared_ptr<RevocableStream> stream = r.stream.lock()) {
      stream->Revoke(Revocation(r.peer.identity, r.rpc, r.partition, r.role));
    }
  }
  return revoked.size();
}

void Authorizer::FilterVisible(const grpc::ServerContextBase& ctx,
                               google::protobuf::Message& response) const {
  const std::string identity = PeerOf(ctx).identity;
  std::shared_ptr<const Policy> policy = policy_.Get();
  const google::protobuf::Descriptor* d = response.GetDescriptor();
  const google::protobuf::Reflection* r = response.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* f = d->field(i);
    if (!f->is_repeated() || f->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) continue;
    const int n = r->FieldSize(response, f);
    int kept = 0;
    for (int j = 0; j < n; ++j) {
      // An entry that names no partition is not shown: fail closed.
      const std::string partition = PartitionOf("", r->GetRepeatedMessage(response, f, j));
      if (partition.empty() || !policy->Allows(identity, partition, OBSERVER)) continue;
      if (kept != j) r->SwapElements(&response, f, kept, j);
      ++kept;
    }
    while (r->FieldSize(response, f) > kept) r->RemoveLast(&response, f);
  }
}

bool Authorizer::Visible(const grpc::ServerContextBase& ctx, absl::string_view partition) const {
  return Visible(PeerOf(ctx), partition);
}

bool Authorizer::Visible(const Peer& peer, absl::string_view partition) const {
  return policy_.Get()->Allows(peer.identity, partition, OBSERVER);
}

}  // namespace kmcld::security
