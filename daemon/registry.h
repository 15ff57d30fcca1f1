// daemon/registry.h: everything kmcld owns, by the ids the API uses:
// partitions, their guest buffers, and the endpoints kmcld holds for remote
// tools. It resolves a ChannelRef or EndpointRef once, checking the
// partition, the relid and the offer_sequence (FAILED_PRECONDITION when a
// non-zero offer_sequence names another incarnation of a reused relid), so
// the services never repeat those checks.
//
// Ownership: the Registry holds each PartitionEntry until DeletePartition;
// a running call may hold an entry (and its endpoints) longer. The
// kmcl::Partition is shared by its entry and every Endpoint made on it
// (Endpoint::Create), so whichever of them goes last frees it: an endpoint
// a call still holds when DeletePartition returns tears its channel down
// against a live partition, and DeletePartition never waits for such calls
// (it cannot block a gRPC reactor: it runs on the blocking pool, and the
// calls it would wait for may be waiting on it). DeletePartition disables
// every endpoint it finds; an endpoint added later to a deleted entry is
// refused (the adder checks PartitionEntry::deleted under its lock).
//
// Partition ids: ValidatePartitionId (daemon/partition_id.h) is the one
// rule, for every path that names a partition (AddPartition refuses any
// other id).
//
// Threading: thread-safe. Lock order: Registry::mu_, then
// PartitionEntry::mu, then an Endpoint's lock; kmcl_core calls that may block
// are never made under these locks.
#ifndef KMCLD_DAEMON_REGISTRY_H_
#define KMCLD_DAEMON_REGISTRY_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "daemon/endpoint.h"
#include "daemon/event_log.h"
#include "daemon/log.h"
#include "daemon/partition_devices.h"
#include "daemon/partition_id.h"
#include "daemon/timer.h"
#include "kmcl_core/base/mutex.h"
#include "kmcl_core/bus/partition.h"
#include "proto/channel.pb.h"
#include "proto/common.pb.h"

namespace kmcld {

struct RegistryLimits {
  uint32_t max_partitions = 64;
  uint64_t guest_buffer_bytes_per_partition = uint64_t{1} << 30;  // 1 GiB
  EndpointLimits endpoint;
};

struct GuestBuffer {
  uint64_t buffer_id = 0;
  uint64_t byte_count = 0;
  std::vector<uint64_t> pfns;
  std::shared_ptr<void> charge;  // against its allocator's guest_buffer_bytes limit; null: none
  // Calls that looked the buffer up under PartitionEntry::mu and still use
  // its pages after releasing it (BufferUse).
  uint32_t users = 0;
};

class PartitionEntry;

// Keeps guest buffers from being freed while a call that looked them up
// under PartitionEntry::mu goes on using their pages without it (a guest
// memory transfer, a GPADL being created over them). Without it, a
// FreeGuestBuffer in between returns the pages to the allocator, the next
// channel's rings may take them, and the transfer or the new GPADL would
// reach that other channel. PartitionEntry::FreeBuffer refuses a buffer in
// use.
//
// Threading: created under the entry's mu (UseBuffersLocked); destroyed
// anywhere without it (the destructor takes it).
class BufferUse {
 public:
  BufferUse() = default;
  BufferUse(BufferUse&& other) noexcept
      : entry_(std::move(other.entry_)), buffer_ids_(std::move(other.buffer_ids_)) {}
  // Releases what this one held first, which takes that entry's mu: assign
  // under the lock only onto an empty BufferUse.
  BufferUse& operator=(BufferUse&& other) noexcept {
    Release();
    entry_ = std::move(other.entry_);
    buffer_ids_ = std::move(other.buffer_ids_);
    return *this;
  }
  BufferUse(const BufferUse&) = delete;
  BufferUse& operator=(const BufferUse&) = delete;
  ~BufferUse() { Release(); }

 private:
  void Release();
  friend BufferUse UseBuffersLocked(const std::shared_ptr<PartitionEntry>& entry,
                                    std::vector<uint64_t> buffer_ids);
  std::shared_ptr<PartitionEntry> entry_;
  std::vector<uint64_t> buffer_ids_;
};

class PartitionEntry {
 public:
  friend class Registry;
  explicit PartitionEntry(std::unique_ptr<kmcl::Partition> partition)
      : partition_(std::move(partition)) {}
  ~PartitionEntry();
  kmcl::Partition& partition() const { return *partition_; }
  // For Endpoint::Create: an endpoint keeps the partition alive.
  const std::shared_ptr<kmcl::Partition>& shared_partition() const { return partition_; }
  const std::string& id() const { return partition_->id(); }

  kmcl::Mutex mu;
  // Host endpoints by (relid, offer_sequence): a relid is reused once the
  // guest released it, while the old endpoint may await CleanupChannel.
  std::map<std::pair<uint32_t, uint64_t>, std::shared_ptr<Endpoint>> hosts ABSL_GUARDED_BY(mu);
  std::vector<std::shared_ptr<Endpoint>> guests ABSL_GUARDED_BY(mu);
  std::map<uint64_t, GuestBuffer> buffers ABSL_GUARDED_BY(mu);
  uint64_t next_buffer_id ABSL_GUARDED_BY(mu) = 1;
  uint64_t buffer_bytes ABSL_GUARDED_BY(mu) = 0;
  bool deleted ABSL_GUARDED_BY(mu) = false;
  // Limits the events and warnings its guest's protocol errors cause, for
  // all of the partition's endpoints (Endpoint::Create) and built-in
  // devices (DeviceOptions::peer_log) together.
  const std::shared_ptr<log::Limiter> peer_log =
      std::make_shared<log::Limiter>(Endpoint::kPeerEventsPerMinute);
  // Something in-process (the --demo traffic) uses the partition directly:
  // DeletePartition refuses until unpinned.
  void Pin() {
    kmcl::MutexLock lock(&mu);
    pinned_ = true;
  }
  void Unpin() {
    kmcl::MutexLock lock(&mu);
    pinned_ = false;
  }
  bool pinned() {
    kmcl::MutexLock lock(&mu);
    return pinned_;
  }
  // FreeGuestBuffer: returns the buffer's pages to the partition's
  // allocator. NOT_FOUND for an unknown id; FAILED_PRECONDITION while a
  // GPADL covers one of its pages or a call uses it (BufferUse).
  absl::Status FreeBuffer(uint64_t buffer_id);

  // The partition's built-in devices (Registry::AttachDevices), or null.
  // A caller that waits on them holds this pointer and the entry, so the
  // devices always go before the partition.
  std::shared_ptr<PartitionDevices> devices() {
    kmcl::MutexLock lock(&mu);
    return devices_;
  }

 private:
  bool pinned_ ABSL_GUARDED_BY(mu) = false;
  std::shared_ptr<kmcl::Partition> partition_;
  // Declared after partition_, so destroyed before it.
  std::shared_ptr<PartitionDevices> devices_ ABSL_GUARDED_BY(mu);
};

// Marks `buffer_ids` (each a key of entry->buffers) in use until the
// returned BufferUse is destroyed.
BufferUse UseBuffersLocked(const std::shared_ptr<PartitionEntry>& entry,
                           std::vector<uint64_t> buffer_ids) ABSL_EXCLUSIVE_LOCKS_REQUIRED(entry->mu);

// A ChannelRef resolved: the partition, the relid, the incarnation and the
// endpoints kmcld holds for it (either may be null).
struct ResolvedChannel {
  std::shared_ptr<PartitionEntry> partition;
  uint32_t relid = 0;
  uint64_t offer_sequence = 0;
  std::optional<kmcl::ServerChannelInfo> info;  // while the control plane knows it
  std::shared_ptr<Endpoint> host;
  std::shared_ptr<Endpoint> guest;
};

class Registry {
 public:
  Registry(RegistryLimits limits, EventLog& log, Timer& timer);
  ~Registry();  // frees every endpoint and partition (blocking)
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  const RegistryLimits& limits() const { return limits_; }
  EventLog& log() { return log_; }
  Timer& timer() { return timer_; }

  // ---- Partitions ----
  // INVALID_ARGUMENT for an id ValidatePartitionId refuses; ALREADY_EXISTS
  // for a taken id; RESOURCE_EXHAUSTED past max_partitions.
  absl::StatusOr<std::shared_ptr<PartitionEntry>> AddPartition(
      std::unique_ptr<kmcl::Partition> partition);
  // NOT_FOUND naming the id; INVALID_ARGUMENT for an empty one.
  absl::StatusOr<std::shared_ptr<PartitionEntry>> GetPartition(const std::string& id) const;
  std::vector<std::shared_ptr<PartitionEntry>> ListPartitions() const;
  // The partition `id`, or every partition when `id` is empty (the List*
  // calls' rule for an empty partition_id).
  absl::StatusOr<std::vector<std::shared_ptr<PartitionEntry>>> PartitionsFor(
      const std::string& id) const;
  // "p-<n>" not in use.
  std::string NextPartitionId();
  bool HasPartition(const std::string& id) const;
  // Blocking: frees every endpoint (rescinding first with `force`), the
  // built-in devices and the partition. FAILED_PRECONDITION with channels
  // other than the built-in devices' and no force.
  absl::Status DeletePartition(const std::string& id, bool force);
  // Blocking: deletes every partition (force, pinned or not), by entry
  // rather than by id. At shutdown, after the in-process users stopped.
  void DeleteAll();

  // Blocking: gives `partition` its built-in devices (`saved`: restored
  // from a partition bundle); their events go to the log. An empty
  // options.services is a no-op. ALREADY_EXISTS if it has devices already.
  absl::Status AttachDevices(const std::shared_ptr<PartitionEntry>& partition, DeviceOptions options,
                             const SavedDevices* saved = nullptr);

  // ---- Channels and endpoints ----
  absl::StatusOr<ResolvedChannel> Resolve(const kmcl::v1::ChannelRef& ref) const;
  absl::StatusOr<std::shared_ptr<Endpoint>> ResolveEndpoint(const kmcl::v1::EndpointRef& ref) const;
  // Every channel of a partition: each host endpoint, each offer the
  // control plane knows, and each guest endpoint's channel.
  std::vector<ResolvedChannel> Channels(const std::shared_ptr<PartitionEntry>& partition) const;
  // The Channel message GetChannel returns (snapshots each endpoint).
  kmcl::v1::Channel Describe(const ResolvedChannel& channel) const;
  // The same from snapshots the caller took of channel.host and
  // channel.guest (non-null where that endpoint is), so that one snapshot
  // serves every view of the endpoint (diagnostics, /metrics).
  kmcl::v1::Channel Describe(const ResolvedChannel& channel, const kmcl::ChannelSnapshot* host,
                             const kmcl::ChannelSnapshot* guest) const;

  // Ends every Attach stream with `why` (kmcld passes UNAVAILABLE "kmcld is
  // shutting down", so a tool tells it apart from its channel going, which
  // ends the stream OK) and releases what the tools held, so that blocked
  // KMCL calls return (at shutdown, before the server stops).
  void ReleaseAllStreams(const absl::Status& why);

  // Blocking: ends the endpoint's stream, releases its held deliveries,
  // disables it (close or rescind) and forgets it.
  // NOT_FOUND when another call is freeing (or has freed) it already.
  absl::Status FreeEndpoint(const std::shared_ptr<PartitionEntry>& partition,
                            const std::shared_ptr<Endpoint>& endpoint);

 private:
  // DeletePartition's work, for an entry already looked up.
  absl::Status Delete(const std::shared_ptr<PartitionEntry>& p, bool force, bool even_pinned);

  const RegistryLimits limits_;
  EventLog& log_;
  Timer& timer_;
  mutable kmcl::Mutex mu_;
  std::map<std::string, std::shared_ptr<PartitionEntry>> partitions_ ABSL_GUARDED_BY(mu_);
  uint64_t next_partition_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace kmcld

#endif  // KMCLD_DAEMON_REGISTRY_H_
