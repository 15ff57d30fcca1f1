// kmcl_core/bus/partition.h: an emulated VM: its guest physical memory, GPADLs,
// the host's VMBus server, a guest VMBus client per VTL, and the message
// transport between them (the SynIC), plus the registry that routes control
// plane events to the endpoints of both sides through BusEndpoint (the KMCL
// runtime's Channel implements it; the bus never sees the runtime).
//
// Create() builds the partition and connects each guest client (version
// negotiation, REQUESTOFFERS), so offers reach guests as soon as hosts make
// them. Channels call the partition for control-plane work; the partition
// pumps every resulting message synchronously to quiescence under its lock,
// then hands events to endpoints through their On*() methods, which only
// queue work for the endpoints' threads.
//
// Threading: thread-safe. Lock order: Partition before endpoint; an endpoint
// never calls the partition while holding its own lock. Ring interrupts go
// through RingLink and never take the partition lock.
#ifndef KMCLD_KMCL_CORE_BUS_PARTITION_H_
#define KMCLD_KMCL_CORE_BUS_PARTITION_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kmcl_core/base/mutex.h"
#include "kmcl_core/bus/bus_endpoint.h"
#include "kmcl_core/control/endpoint_role.h"
#include "kmcl_core/control/vmbus_client.h"
#include "kmcl_core/control/vmbus_server.h"
#include "kmcl_core/memory/gpadl_table.h"
#include "kmcl_core/memory/guest_memory.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl {

struct PartitionOptions {
  std::string id = "default";
  uint64_t memory_bytes = kDefaultGuestMemoryBytes;
  std::set<uint8_t> client_vtls = {0};
  uint32_t max_version = wire::kVersionCopper;
  // Above the largest guest memory (64 GiB), so it never overlaps RAM.
  uint64_t mmio_base = uint64_t{64} << 30;
  uint64_t mmio_size = uint64_t{128} << 20;
};

// The ring interrupt path between the two endpoints of one channel.
struct RingLink {
  Mutex mu;
  BusEndpoint* host ABSL_GUARDED_BY(mu) = nullptr;
  BusEndpoint* guest ABSL_GUARDED_BY(mu) = nullptr;
  // Interrupts the endpoint opposite `from`, if attached.
  void Signal(const BusEndpoint* from);
  void Attach(BusEndpoint* endpoint, EndpointRole role);
  void Detach(const BusEndpoint* endpoint);
};

// An endpoint attached to the partition (ForEachEndpoint).
struct AttachedEndpoint {
  uint32_t relid = 0;
  EndpointRole role = EndpointRole::kHost;
  uint8_t vtl = 0;  // guests: the client's VTL
  const BusEndpoint* endpoint = nullptr;
};

struct PartitionCounters {
  uint64_t messages_to_guest = 0;
  uint64_t messages_to_host = 0;
  uint64_t protocol_errors = 0;
  std::string last_protocol_error;
};

class Partition {
 public:
  static absl::StatusOr<std::unique_ptr<Partition>> Create(PartitionOptions options);

  // The whole partition as one blob: guest memory (allocated pages), GPADLs
  // and the VMBus control plane of host and guests. Channel endpoints are
  // saved separately (Channel::Save) and re-attach after Restore.
  // Call while the endpoints are paused so the rings are quiescent.
  absl::StatusOr<std::string> Save() const;
  // A new partition from Save()'s blob; `id` overrides the saved id when not
  // empty. A truncated, corrupted or foreign blob is INVALID_ARGUMENT and a
  // newer format FAILED_PRECONDITION; nothing is left behind on failure.
  static absl::StatusOr<std::unique_ptr<Partition>> Restore(const std::string& blob,
                                                             const std::string& id = "");
  // Every channel must have been destroyed first.
  ~Partition();
  Partition(const Partition&) = delete;
  Partition& operator=(const Partition&) = delete;

  const PartitionOptions& options() const { return options_; }
  const std::string& id() const { return options_.id; }
  GuestMemory& memory() { return *memory_; }
  GpadlTable& gpadls() { return gpadls_; }
  // The partition's VMBus handle (VmbServerChannelInitSetVmbusHandle).
  uint64_t vmbus_handle() const { return handle_; }
  static Partition* FromVmbusHandle(uint64_t handle);

  std::optional<uint32_t> NegotiatedVersion(uint8_t vtl) const;
  std::vector<ServerChannelInfo> ServerChannels() const;
  std::vector<ClientChannelInfo> GuestOffers(uint8_t vtl) const;
  PartitionCounters counters() const;
  // Calls `visit` for every endpoint attached to the partition, hosts by
  // relid then guests by (vtl, relid), with the partition's lock held:
  // `visit` may take the endpoint's locks (Partition before endpoint) but
  // must not call the partition. Each endpoint outlives the call (its
  // teardown detaches it under the same lock). For diagnostics of
  // endpoints whose owners run in-process (kmcld's built-in devices).
  void ForEachEndpoint(absl::FunctionRef<void(const AttachedEndpoint&)> visit) const;
  // Carves MMIO space from the partition's window.
  absl::StatusOr<uint64_t> AllocateMmio(uint64_t bytes);
  // The MMIO range the guest reserved for channel `relid`: allocated on first
  // use, the same for both endpoints, freed when the channel is released.
  absl::StatusOr<std::pair<uint64_t, uint64_t>> MmioFor(uint32_t relid, uint64_t bytes);

  // ---- Host endpoints ----
  absl::StatusOr<OfferHandle> Offer(BusEndpoint* host, const ServerOffer& offer);
  absl::Status Revoke(uint32_t relid);
  absl::Status AcceptOpen(uint32_t relid, NTSTATUS status);
  absl::Status CloseComplete(uint32_t relid);
  // Maps a GPADL of channel `relid` (VmbChannelMapGpadl; with a `layout`,
  // the channel's ring GPADL with its data pages twice, see GpadlTable::Map).
  absl::StatusOr<GpadlLease> MapGpadl(uint32_t relid, uint32_t gpadl_id, bool read_only,
                                      const GpadlViewLayout& layout = nullptr);
  absl::Status UnmapGpadl(uint64_t lease_id);
  void DetachHost(uint32_t relid, const BusEndpoint* host);

  // ---- Guest endpoints ----
  // Claims an offer matching (type, instance) at `vtl` for `guest`, now or
  // when one arrives; guest->OnOfferMatched follows.
  void Connect(BusEndpoint* guest, uint8_t vtl, const Guid& type, std::optional<Guid> instance);
  void CancelConnect(const BusEndpoint* guest);
  // GPADL_HEADER/BODY and the answer (synchronous in-process).
  absl::Status CreateGuestGpadl(uint8_t vtl, uint32_t relid, uint32_t gpadl_id,
                                std::vector<GpaRange> ranges);
  // GPADL_TEARDOWN; waits for GPADL_TORNDOWN (the host may hold a lease)
  // up to `wait` (nullopt: forever). DEADLINE_EXCEEDED if it did not come.
  // `make_progress`, if given, is called (without the partition's lock)
  // before each wait and the wait is skipped while it returns true: an
  // endpoint on a manual executor runs the host's pending work with it.
  absl::Status TeardownGuestGpadl(uint8_t vtl, uint32_t relid, uint32_t gpadl_id,
                                  std::optional<absl::Duration> wait,
                                  const std::function<bool()>& make_progress = nullptr);
  absl::Status OpenGuest(uint8_t vtl, uint32_t relid, const OpenParams& params);
  absl::Status CloseGuest(uint8_t vtl, uint32_t relid);
  // Forgets the guest endpoint; releases the relid if it was rescinded.
  void DetachGuest(uint8_t vtl, uint32_t relid, const BusEndpoint* guest);
  // A restored endpoint re-attaches to its channel (no wire traffic).
  // FAILED_PRECONDITION if the channel is not in the restored control plane
  // or another endpoint holds it.
  absl::Status AttachHost(uint32_t relid, uint64_t offer_sequence, BusEndpoint* host);
  absl::Status AttachGuest(uint8_t vtl, uint32_t relid, BusEndpoint* guest);
  std::shared_ptr<RingLink> LinkFor(uint32_t relid);

 private:
  explicit Partition(PartitionOptions options, std::unique_ptr<GuestMemory> memory);
  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After a restore: what each side of the control plane waits for, the
  // other can give (partition_save.cc). INVALID_ARGUMENT naming the gap.
  absl::Status CheckRestoredReferencesLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void HandleServerEffect(ServerEffect& effect) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void HandleClientEffect(uint8_t vtl, ClientEffect& effect) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MatchWaitersLocked(uint8_t vtl) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  VmbusClient& client(uint8_t vtl) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const PartitionOptions options_;
  std::unique_ptr<GuestMemory> memory_;
  GpadlTable gpadls_;
  uint64_t handle_ = 0;

  mutable Mutex mu_;
  CondVar changed_;  // GPADL answers and teardowns
  VmbusServer server_ ABSL_GUARDED_BY(mu_);
  std::map<uint8_t, VmbusClient> clients_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint32_t, BusEndpoint*> hosts_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<uint8_t, uint32_t>, BusEndpoint*> guests_ ABSL_GUARDED_BY(mu_);
  struct Waiter {
    BusEndpoint* guest;
    uint8_t vtl;
    Guid type;
    std::optional<Guid> instance;
  };
  std::vector<Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  // GPADL answers by id: creation status, or torn down.
  absl::flat_hash_map<uint32_t, NTSTATUS> gpadl_created_ ABSL_GUARDED_BY(mu_);
  std::set<uint32_t> gpadl_torn_down_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint32_t, std::shared_ptr<RingLink>> links_ ABSL_GUARDED_BY(mu_);
  uint64_t mmio_next_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<uint32_t, std::pair<uint64_t, uint64_t>> mmio_ ABSL_GUARDED_BY(mu_);
  PartitionCounters counters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_BUS_PARTITION_H_
