// devices/ic/guest.h: the guest side (what Linux's hv_utils does) of one
// integration service, as a state machine without threads or I/O: a packet
// from the host goes in, the answer to send (or nothing) comes out.
//
// Behaviour, following drivers/hv/hv_util.c and hv_kvp.c (plus the KVP
// daemon's pools, tools/hv/hv_kvp_daemon.c):
// - every answer is the request buffer edited in place, with icflags =
//   TRANSACTION|RESPONSE, so the transaction id and pipe header come back;
// - NEGOTIATE: the first of the guest's versions the host offers, for the
//   framework and the message; none in common -> both counts 0 (and
//   kmcld's guest also sets status E_FAIL, so the failure is explicit);
// - heartbeat: sequence + 1; shutdown: S_OK for shutdown (0/1) and restart
//   (2/3), hibernate (4/5) only if supported, E_FAIL otherwise; time sync:
//   SYNC sets the guest clock, SAMPLE records the sample;
// - KVP: GET/SET/DELETE/ENUMERATE on five in-memory pools of UTF-8 keys
//   and values (at most `kvp_pool_capacity` records each); a missing key or
//   an index past the end is HV_S_CONT, a full pool HV_ERROR_DISK_FULL,
//   bad sizes or pool HV_INVALIDARG, IP-info operations HV_ERROR_NOT_SUPPORTED;
// - a packet shorter than its 28-byte header, or a heartbeat, shutdown or
//   time-sync body shorter than its layout, or a KVP body under 4 bytes, is
//   dropped and counted (Linux logs and drops it); a KVP body too short for
//   its operation is answered HV_INVALIDARG; an unknown type is answered
//   E_FAIL (KVP: dropped, as hv_kvp.c does).
//
// Threading: not thread-safe; the VSC glue (vsc.h) serialises calls.
#ifndef KMCLD_DEVICES_IC_GUEST_H_
#define KMCLD_DEVICES_IC_GUEST_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "devices/ic/ic_wire.h"
#include "devices/ic/kvp_wire.h"
#include "devices/ic/negotiation.h"

namespace kmcl::devices::ic {

struct GuestOptions {
  // Versions the guest accepts, in preference order (empty: Linux's lists).
  std::vector<IcVersion> framework_versions;
  std::vector<IcVersion> message_versions;
  size_t kvp_pool_capacity = 1024;
  bool hibernation_supported = false;
};

struct GuestCounters {
  uint64_t requests = 0;       // packets from the host
  uint64_t answered = 0;
  uint64_t short_packets = 0;  // dropped: shorter than the header or the type's body
  uint64_t wrong_type = 0;     // answered E_FAIL (KVP: dropped)
  uint64_t bad_body = 0;       // answered with an error status (bad version list, KVP sizes, ...)
  uint64_t negotiation_failures = 0;
  uint64_t ignored = 0;        // dropped while not answering (set_answering(false))
};

// One KVP pool: records in insertion order (ENUMERATE's index order).
class KvpPool {
 public:
  explicit KvpPool(size_t capacity) : capacity_(capacity) {}
  const std::string* Find(std::string_view key) const;
  // FAILED_PRECONDITION (resource) when adding a new key to a full pool.
  absl::Status Set(std::string key, std::string value);
  bool Delete(std::string_view key);
  const std::vector<std::pair<std::string, std::string>>& records() const { return records_; }

 private:
  friend class IcGuest;
  size_t capacity_;
  std::vector<std::pair<std::string, std::string>> records_;
};

struct ShutdownSeen {
  ShutdownBody request;
  uint32_t status = 0;  // what the guest answered
};

class IcGuest {
 public:
  explicit IcGuest(IcService service, GuestOptions options = {});

  IcService service() const { return service_; }
  // One packet from the host: the answer, or nullopt when dropped.
  std::optional<Bytes> OnPacket(std::span<const uint8_t> packet, absl::Time now);
  // A guest that stops answering (hung): every packet is dropped.
  void set_answering(bool answering) { answering_ = answering; }

  const GuestCounters& counters() const { return counters_; }
  std::optional<NegotiatedVersions> negotiated() const { return negotiated_; }
  uint64_t last_heartbeat() const { return last_heartbeat_; }
  const std::vector<ShutdownSeen>& shutdowns() const { return shutdowns_; }
  std::optional<TimeSyncBody> last_time_sample() const { return last_sample_; }
  uint64_t time_syncs() const { return time_syncs_; }
  // The guest's clock: `now` plus the offset the last SYNC set.
  absl::Time GuestTime(absl::Time now) const { return now + clock_offset_; }
  KvpPool& pool(uint8_t index) { return pools_[index]; }

  // Negotiated versions, KVP pools and time state; counters are not kept.
  std::string Save() const;
  absl::Status Restore(std::string_view saved);

 private:
  void Negotiate(std::span<uint8_t> answer, IcMessage& m);
  bool Heartbeat(std::span<uint8_t> answer, IcMessage& m);
  bool Shutdown(IcMessage& m);
  bool TimeSync(IcMessage& m, absl::Time now);
  bool Kvp(Bytes& answer, IcMessage& m);

  const IcService service_;
  const IcServiceInfo info_;
  GuestOptions options_;
  bool answering_ = true;
  GuestCounters counters_;
  std::optional<NegotiatedVersions> negotiated_;
  uint64_t last_heartbeat_ = 0;
  std::vector<ShutdownSeen> shutdowns_;
  std::optional<TimeSyncBody> last_sample_;
  uint64_t time_syncs_ = 0;
  absl::Duration clock_offset_;
  std::vector<KvpPool> pools_;
};

}  // namespace kmcl::devices::ic

#endif  // KMCLD_DEVICES_IC_GUEST_H_
