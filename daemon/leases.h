// daemon/leases.h: host GPADL leases that kmcld holds for remote tools.
//
// A remote host tool maps a GPADL (KMCL's VmbChannelMapGpadl) and reads or
// writes through the lease in chunks. Lease ids are unique across the daemon
// (each partition's GpadlTable numbers its own leases from 1). A lease that
// its tool stops using is released after `idle` (kmcld --lease_idle_ms,
// default 60 s; every ReadLease/WriteLease renews it), so a crashed tool
// never blocks the guest's teardown forever. Unmapping by id, expiry, or the
// partition going away all end in the partition's UnmapGpadl.
//
// Thread-safe. Lock order: LeaseTable::mu_ before the partition's locks.
#ifndef KMCLD_DAEMON_LEASES_H_
#define KMCLD_DAEMON_LEASES_H_

#include <cstdint>
#include <map>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "daemon/registry.h"
#include "daemon/timer.h"
#include "kmcl_core/base/mutex.h"

namespace kmcld {

struct LeaseRecord {
  uint64_t lease_id = 0;        // the daemon-wide id the API uses
  uint64_t local_lease_id = 0;  // the partition's GpadlTable id
  uint32_t relid = 0;
  uint32_t gpadl_id = 0;
  uint64_t byte_count = 0;
  bool read_only = false;
  std::weak_ptr<PartitionEntry> partition;
  absl::Time last_used;
};

class LeaseTable {
 public:
  LeaseTable(Timer& timer, absl::Duration idle) : timer_(timer), idle_(idle) {}
  ~LeaseTable();
  LeaseTable(const LeaseTable&) = delete;
  LeaseTable& operator=(const LeaseTable&) = delete;

  // Maps GPADL `gpadl_id` of channel `relid` (the partition's rules:
  // FAILED_PRECONDITION if mapped, tearing down, or read-only and
  // !read_only; NOT_FOUND for an unknown GPADL).
  absl::StatusOr<LeaseRecord> Map(const std::shared_ptr<PartitionEntry>& partition,
                                  uint32_t relid, uint32_t gpadl_id, bool read_only);
  // Copies through the lease and renews it. NOT_FOUND for an unknown lease,
  // OUT_OF_RANGE beyond the GPADL, PERMISSION_DENIED writing a read-only one.
  absl::Status Read(uint64_t lease_id, uint64_t offset, std::span<uint8_t> out);
  absl::Status Write(uint64_t lease_id, uint64_t offset, std::span<const uint8_t> data);
  absl::Status Unmap(uint64_t lease_id);
  std::vector<LeaseRecord> List() const;

 private:
  absl::StatusOr<LeaseRecord> Use(uint64_t lease_id);
  void Expire(uint64_t lease_id);
  void ScheduleExpiry(uint64_t lease_id, absl::Time when) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Timer& timer_;
  const absl::Duration idle_;
  mutable kmcl::Mutex mu_;
  std::map<uint64_t, LeaseRecord> leases_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, uint64_t> timers_ ABSL_GUARDED_BY(mu_);  // lease -> timer id
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace kmcld

#endif  // KMCLD_DAEMON_LEASES_H_
