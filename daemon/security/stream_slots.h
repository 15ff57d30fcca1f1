// daemon/security/stream_slots.h: open streams (Attach, WatchEvents) per
// identity, bounded by the policy's Limits.streams, so one identity cannot
// hold every stream kmcld will serve; and what each stream needs to stay
// open, so that a policy reload that revokes it ends it.
//
// A StreamSlot is held by the stream's reactor and gives its place back when
// destroyed. Once the stream knows what it acts on, Require records the
// role it needs on which partition and the stream to end when that role is
// revoked; StreamSlots::Revoked lists the streams a new policy no longer
// allows.
//
// Thread-safe.
#ifndef KMCLD_DAEMON_SECURITY_STREAM_SLOTS_H_
#define KMCLD_DAEMON_SECURITY_STREAM_SLOTS_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "kmcl_core/base/mutex.h"
#include "daemon/security/audit_log.h"
#include "daemon/security/policy.pb.h"

namespace kmcld::security {

class StreamSlots;

// The reactor's side: ends the stream when its role was revoked.
class RevocableStream {
 public:
  virtual ~RevocableStream() = default;
  // Ends the stream with `status` (PERMISSION_DENIED). From the thread that
  // reloaded the policy, never with a lock of StreamSlots held; must not
  // block. A stream that already ended ignores it.
  virtual void Revoke(const absl::Status& status) = 0;
};

class StreamSlot {
 public:
  ~StreamSlot();
  StreamSlot(const StreamSlot&) = delete;
  StreamSlot& operator=(const StreamSlot&) = delete;

  // The stream needs `role` on `partition` ("" = observer of at least one
  // partition, for a stream that spans partitions) to stay open.
  void Require(std::string rpc, std::string partition, Role role, std::weak_ptr<RevocableStream> stream);

  const Peer& peer() const { return peer_; }

 private:
  friend class StreamSlots;
  StreamSlot(StreamSlots& slots, Peer peer);

  StreamSlots& slots_;
  const Peer peer_;
  bool counted_ = true;  // false for a slot refused by Acquire (never handed out)
  // Guarded by slots_.mu_ (set once by Require).
  std::string rpc_;
  std::string partition_;
  Role role_ = ROLE_UNSPECIFIED;  // unspecified: nothing to revoke yet
  std::weak_ptr<RevocableStream> stream_;
};

class StreamSlots {
 public:
  // One more stream for `identity`: RESOURCE_EXHAUSTED naming the limit when
  // it already holds `limit` (0: no limit).
  absl::StatusOr<std::unique_ptr<StreamSlot>> Acquire(const Peer& peer, uint32_t limit);

  struct Revocation {
    Peer peer;
    std::string rpc, partition;
    Role role;
    std::weak_ptr<RevocableStream> stream;
  };
  // The open streams for which `still_allowed(identity, partition, role)`
  // is false (each to be ended by the caller, outside any lock here).
  std::vector<Revocation> Revoked(
      const std::function<bool(const std::string&, const std::string&, Role)>& still_allowed);

 private:
  friend class StreamSlot;
  void Release(StreamSlot* slot);

  kmcl::Mutex mu_;
  absl::flat_hash_map<std::string, uint32_t> open_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<StreamSlot*> live_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kmcld::security

#endif  // KMCLD_DAEMON_SECURITY_STREAM_SLOTS_H_
