// devices/ic/host_services.h: the host logic of the four integration
// services on top of IcHostCore, as state machines without threads, clocks
// or I/O (every call takes `now`; packets to send come back in IcOutput):
//
// - HeartbeatHost: every `interval` sends heartbeat_msg_data carrying the
//   last sequence the guest answered (0 at first); the guest answers with it
//   plus one (hv_util.c). The guest is alive while its last good answer (or
//   the channel's opening) is at most `timeout` old; crossing that raises
//   kGuestUnresponsive once, a later answer kGuestResponsive.
// - ShutdownHost: RequestShutdown sends shutdown_msg_data; the result is the
//   guest's status (S_OK: it is shutting down / restarting / hibernating).
// - TimeSyncHost: SendSample sends the host's UTC time (ictimesync_data, or
//   ictimesync_ref_data from message version 4.0) with SYNC or SAMPLE; the
//   result holds what was sent and when the guest answered.
// - KvpHost: Get/Set/Delete/Enumerate on a pool (kvp_wire.h); the result
//   holds the guest's status (S_OK, HV_S_CONT for a missing key or the end
//   of an enumeration, ...) and the key/value it returned.
//
// Requests return an op id at once; the result is taken later with
// TakeResult(op) once it finished (a transport failure is the result's
// error status: UNAVAILABLE when the channel closed, DEADLINE_EXCEEDED on
// timeout, FAILED_PRECONDITION when negotiation failed).
//
// Threading: not thread-safe; the KMCL glue (vsp.h) serialises calls.
#ifndef KMCLD_DEVICES_IC_HOST_SERVICES_H_
#define KMCLD_DEVICES_IC_HOST_SERVICES_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "devices/ic/host_core.h"
#include "devices/ic/kvp_wire.h"

namespace kmcl::devices::ic {

struct HostOptions {
  // How long a request may wait for its answer.
  absl::Duration request_timeout = absl::Seconds(10);
  // Heartbeat only.
  absl::Duration heartbeat_interval = absl::Seconds(1);
  absl::Duration heartbeat_timeout = absl::Seconds(5);
  // Test hook: the versions the host offers (empty: the service's defaults).
  std::vector<IcVersion> framework_versions;
  std::vector<IcVersion> message_versions;
};

// The common part of the four services: the core, and the generic calls the
// KMCL glue drives.
class IcHostService {
 public:
  virtual ~IcHostService() = default;
  const IcServiceInfo& info() const { return core_.service(); }
  const IcHostCore& core() const { return core_; }

  virtual void Open(absl::Time now, IcOutput& out);
  void Close(IcOutput& out);
  void OnPacket(std::span<const uint8_t> packet, absl::Time now, IcOutput& out);
  virtual void Tick(absl::Time now, IcOutput& out);
  // The channel runs again after a pause for a save that was not a
  // migration (IcVsp::Resume): the paused time was not the guest's silence.
  virtual void Resumed(absl::Time now) {}

  // Core state plus the service's own; Restore treats outstanding requests
  // as sent at `now`. INVALID_ARGUMENT for bytes another service saved.
  std::string Save() const;
  absl::Status Restore(std::string_view saved, absl::Time now);

 protected:
  IcHostService(IcService service, const HostOptions& options);
  // Consumes the core's completions, leaving other outputs in place.
  void Finish(absl::Time now, IcOutput& out);
  virtual void OnCompletion(IcCompletion& completion, absl::Time now, IcOutput& out) = 0;
  virtual void SaveExtra(std::string& out) const {}
  virtual absl::Status RestoreExtra(std::string_view in) { return absl::OkStatus(); }

  IcHostCore core_;
  std::optional<absl::Time> opened_at_;
};

// Finished results by op id.
template <typename T>
class ResultTable {
 public:
  void Put(uint64_t op, absl::StatusOr<T> result) { results_.insert_or_assign(op, std::move(result)); }
  // The result once finished (removed), else nullopt.
  std::optional<absl::StatusOr<T>> Take(uint64_t op) {
    auto it = results_.find(op);
    if (it == results_.end()) return std::nullopt;
    absl::StatusOr<T> r = std::move(it->second);
    results_.erase(it);
    return r;
  }

 private:
  absl::flat_hash_map<uint64_t, absl::StatusOr<T>> results_;
};

struct HeartbeatStatus {
  bool negotiated = false;
  bool alive = false;
  uint64_t last_sequence = 0;             // the guest's last good answer
  std::optional<absl::Time> last_answer;  // when it came
  uint64_t answers = 0;
  uint64_t unresponsive_events = 0;
};

class HeartbeatHost final : public IcHostService {
 public:
  explicit HeartbeatHost(const HostOptions& options = {});
  void Open(absl::Time now, IcOutput& out) override;
  void Tick(absl::Time now, IcOutput& out) override;
  HeartbeatStatus Status(absl::Time now) const;
  // The guest gets `timeout` to answer from `now`.
  void Resumed(absl::Time now) override { resumed_at_ = now; }

 private:
  // Since when the guest has been silent: its last answer, the opening, or
  // the last resume after a save, whichever is latest.
  absl::Time SilentSince() const;
  void OnCompletion(IcCompletion& completion, absl::Time now, IcOutput& out) override;
  void SaveExtra(std::string& out) const override;
  absl::Status RestoreExtra(std::string_view in) override;

  absl::Duration interval_, timeout_;
  uint64_t last_sequence_ = 0;
  std::optional<absl::Time> last_answer_;
  std::optional<absl::Time> resumed_at_;
  std::optional<absl::Time> next_send_;
  std::optional<uint64_t> outstanding_op_;
  bool alive_ = false;
  uint64_t answers_ = 0;
  uint64_t unresponsive_events_ = 0;
};

struct ShutdownResult {
  uint32_t guest_status = 0;  // kHvSOk: the guest is acting on it
};

class ShutdownHost final : public IcHostService {
 public:
  explicit ShutdownHost(const HostOptions& options = {});
  // INVALID_ARGUMENT if the message exceeds 2047 bytes.
  absl::StatusOr<uint64_t> RequestShutdown(const ShutdownBody& request, absl::Time now, IcOutput& out);
  std::optional<absl::StatusOr<ShutdownResult>> TakeResult(uint64_t op) { return results_.Take(op); }

 private:
  void OnCompletion(IcCompletion& completion, absl::Time now, IcOutput& out) override;
  ResultTable<ShutdownResult> results_;
};

struct TimeSyncResult {
  TimeSyncBody sent;
  absl::Time answered_at;
  uint32_t guest_status = 0;
};

class TimeSyncHost final : public IcHostService {
 public:
  explicit TimeSyncHost(const HostOptions& options = {});
  // Sends `now` as parenttime with `flags` (kTimeSyncSync or kTimeSyncSample)
  // and, from version 4.0, the reference time (100 ns since the channel
  // opened: the emulated partition reference counter). FAILED_PRECONDITION
  // before negotiation finished (the layout depends on the version).
  absl::StatusOr<uint64_t> SendSample(uint8_t flags, absl::Time now, IcOutput& out);
  std::optional<absl::StatusOr<TimeSyncResult>> TakeResult(uint64_t op) { return results_.Take(op); }
  uint64_t samples_answered() const { return answered_; }

 private:
  void OnCompletion(IcCompletion& completion, absl::Time now, IcOutput& out) override;
  absl::flat_hash_map<uint64_t, TimeSyncBody> sent_;
  ResultTable<TimeSyncResult> results_;
  uint64_t answered_ = 0;
};

struct KvpResult {
  uint32_t guest_status = 0;  // kHvSOk, kHvSCont (no such key / no more items), ...
  std::string key;            // ENUMERATE
  std::string value;          // GET, ENUMERATE (REG_SZ as text)
};

class KvpHost final : public IcHostService {
 public:
  explicit KvpHost(const HostOptions& options = {});
  // INVALID_ARGUMENT for a pool outside 0..4 or a key/value that is not
  // UTF-8 or longer than 255/1023 UTF-16 units.
  absl::StatusOr<uint64_t> Get(uint8_t pool, std::string_view key, absl::Time now, IcOutput& out);
  absl::StatusOr<uint64_t> Set(uint8_t pool, std::string_view key, std::string_view value, absl::Time now,
                               IcOutput& out);
  absl::StatusOr<uint64_t> Delete(uint8_t pool, std::string_view key, absl::Time now, IcOutput& out);
  absl::StatusOr<uint64_t> Enumerate(uint8_t pool, uint32_t index, absl::Time now, IcOutput& out);
  std::optional<absl::StatusOr<KvpResult>> TakeResult(uint64_t op) { return results_.Take(op); }

 private:
  absl::StatusOr<uint64_t> Submit(KvpBody body, absl::Time now, IcOutput& out);
  void OnCompletion(IcCompletion& completion, absl::Time now, IcOutput& out) override;
  void SaveExtra(std::string& out) const override;
  absl::Status RestoreExtra(std::string_view in) override;
  absl::flat_hash_map<uint64_t, uint8_t> operations_;  // op id -> KVP operation
  ResultTable<KvpResult> results_;
};

// A new host state machine for `service`.
std::unique_ptr<IcHostService> MakeHostService(IcService service, const HostOptions& options);

}  // namespace kmcl::devices::ic

#endif  // KMCLD_DEVICES_IC_HOST_SERVICES_H_
