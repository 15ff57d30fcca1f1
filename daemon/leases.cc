#include "daemon/leases.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace kmcld {

LeaseTable::~LeaseTable() {
  kmcl::MutexLock lock(&mu_);
  for (auto& [lease, timer] : timers_) timer_.Cancel(timer);
  timers_.clear();
}

absl::StatusOr<LeaseRecord> LeaseTable::Map(const std::shared_ptr<PartitionEntry>& partition,
                                            uint32_t relid, uint32_t gpadl_id, bool read_only) {
  auto lease = partition->partition().MapGpadl(relid, gpadl_id, read_only);
  if (absl::IsFailedPrecondition(lease.status())) {
    // The partition names its own lease numbers; say which API lease holds
    // it, or that kmcld itself does (a channel's ring, a built-in device).
    kmcl::MutexLock lock(&mu_);
    for (const auto& [id, r] : leases_) {
      if (r.relid == relid && r.gpadl_id == gpadl_id && r.partition.lock() == partition) {
        return absl::FailedPreconditionError(absl::StrCat("GPADL ", gpadl_id, " of channel ", relid,
                                                          " is already mapped by lease_id ", id,
                                                          "; UnmapGpadl it first"));
      }
    }
  }
  if (!lease.ok()) return lease.status();
  LeaseRecord r;
  r.local_lease_id = lease->lease_id;
  r.relid = relid;
  r.gpadl_id = gpadl_id;
  r.byte_count = lease->byte_count;
  r.read_only = lease->read_only;
  r.partition = partition;
  r.last_used = absl::Now();
  kmcl::MutexLock lock(&mu_);
  r.lease_id = next_id_++;
  leases_.emplace(r.lease_id, r);
  ScheduleExpiry(r.lease_id, r.last_used + idle_);
  return r;
}

void LeaseTable::ScheduleExpiry(uint64_t lease_id, absl::Time when) {
  timers_[lease_id] = timer_.Schedule(when, [this, lease_id] { Expire(lease_id); });
}

void LeaseTable::Expire(uint64_t lease_id) {
  {
    kmcl::MutexLock lock(&mu_);
    timers_.erase(lease_id);
    auto it = leases_.find(lease_id);
    if (it == leases_.end()) return;
    const absl::Time due = it->second.last_used + idle_;
    if (absl::Now() < due) {
      ScheduleExpiry(lease_id, due);
      return;
    }
  }
  Unmap(lease_id).IgnoreError();
}

absl::StatusOr<LeaseRecord> LeaseTable::Use(uint64_t lease_id) {
  kmcl::MutexLock lock(&mu_);
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) {
    return absl::NotFoundError(absl::StrCat("lease ", lease_id, " does not exist (unmapped or expired)"));
  }
  it->second.last_used = absl::Now();
  return it->second;
}

absl::Status LeaseTable::Read(uint64_t lease_id, uint64_t offset, std::span<uint8_t> out) {
  auto r = Use(lease_id);
  if (!r.ok()) return r.status();
  auto p = r->partition.lock();
  if (p == nullptr) return absl::NotFoundError(absl::StrCat("lease ", lease_id, ": its partition is gone"));
  return p->partition().gpadls().ReadLease(r->local_lease_id, offset, out);
}

absl::Status LeaseTable::Write(uint64_t lease_id, uint64_t offset, std::span<const uint8_t> data) {
  auto r = Use(lease_id);
  if (!r.ok()) return r.status();
  if (r->read_only) {
    return absl::PermissionDeniedError(absl::StrCat("lease ", lease_id, " is read-only"));
  }
  auto p = r->partition.lock();
  if (p == nullptr) return absl::NotFoundError(absl::StrCat("lease ", lease_id, ": its partition is gone"));
  return p->partition().gpadls().WriteLease(r->local_lease_id, offset, data);
}

absl::Status LeaseTable::Unmap(uint64_t lease_id) {
  LeaseRecord r;
  {
    kmcl::MutexLock lock(&mu_);
    auto it = leases_.find(lease_id);
    if (it == leases_.end()) {
      return absl::NotFoundError(absl::StrCat("lease ", lease_id, " does not exist (unmapped or expired)"));
    }
    r = it->second;
    leases_.erase(it);
    if (auto t = timers_.find(lease_id); t != timers_.end()) {
      timer_.Cancel(t->second);
      timers_.erase(t);
    }
  }
  auto p = r.partition.lock();
  if (p == nullptr) return absl::OkStatus();
  return p->partition().UnmapGpadl(r.local_lease_id);
}

std::vector<LeaseRecord> LeaseTable::List() const {
  kmcl::MutexLock lock(&mu_);
  std::vector<LeaseRecord> out;
  for (auto& [id, r] : leases_) out.push_back(r);
  return out;
}

}  // namespace kmcld
