// kmcl_core/control/vmbus_client.h: the guest side of a partition's VMBus control
// plane at one VTL (the guest's VMBus driver), as a state machine without
// I/O or threads.
//
// Driven by guest calls (Connect, CreateGpadl, TeardownGpadl, Open, Close,
// Release, Unload) and raw host messages (HandleHostMessage). Its effects,
// taken with TakeEffects(), are messages to send to the host and
// notifications for the guest endpoints: connected, offers arrived or
// rescinded, open results, GPADL created / torn down.
//
// Version negotiation follows Linux: INITIATE_CONTACT with the newest
// version, and on refusal the next older one. GPADLs go out as one
// GPADL_HEADER and as many GPADL_BODY messages as needed; a GPADL is usable
// (for OPENCHANNEL or by the host) only after GPADL_CREATED with status 0.
//
// Every request gets its answer before the state it belongs to goes away:
// Release of a rescinded channel holds RELID_RELEASED until each GPADL
// request on it (GPADL_HEADER, GPADL_TEARDOWN) has been answered (in Linux,
// vmbus_establish_gpadl in drivers/hv/channel.c blocks until GPADL_CREATED,
// so a driver cannot let the channel go with the answer in flight), and
// Unload refuses further requests until UNLOAD_RESPONSE, which ends every
// request still open. docs/control-plane.md has the rules per table.
//
// Threading: thread-compatible. The partition serialises all calls.
#ifndef KMCLD_KMCL_CORE_CONTROL_VMBUS_CLIENT_H_
#define KMCLD_KMCL_CORE_CONTROL_VMBUS_CLIENT_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "kmcl_core/base/guid.h"
#include "kmcl_core/base/ntstatus.h"
#include "kmcl_core/wire/gpa_range.h"
#include "kmcl_core/wire/vmbus_messages.h"

namespace kmcl {
namespace saved::v1 {
class Client;
}

enum class ClientChannelState {
  kOffered,  // known, not open
  kOpening,  // OPENCHANNEL sent
  kOpen,
};

enum class ClientGpadlState { kCreating, kCreated, kTearingDown };

struct ClientChannelInfo {
  OfferChannel offer;
  ClientChannelState state = ClientChannelState::kOffered;
  bool rescinded = false;
  bool close_after_open = false;  // Close() while opening
  bool release_pending = false;   // Release() waits for GPADL answers
  uint32_t open_id = 0;
  absl::btree_map<uint32_t, ClientGpadlState> gpadls;
};

// ---- Effects ----------------------------------------------------------------
struct SendToHost {
  VmbusMessage message;
};
struct Connected {
  uint32_t version = 0;
};
struct ConnectFailed {};
struct OfferArrived {
  OfferChannel offer;
};
struct OffersComplete {};
struct OfferRescinded {
  uint32_t relid = 0;
};
struct OpenCompleted {
  uint32_t relid = 0;
  NTSTATUS status = kStatusSuccess;
};
struct GpadlCreateCompleted {
  uint32_t relid = 0;
  uint32_t gpadl_id = 0;
  NTSTATUS status = kStatusSuccess;
};
struct GpadlTeardownCompleted {
  uint32_t relid = 0;
  uint32_t gpadl_id = 0;
};
struct Unloaded {};
struct ClientProtocolError {
  std::string what;
};
using ClientEffect =
    std::variant<SendToHost, Connected, ConnectFailed, OfferArrived, OffersComplete,
                 OfferRescinded, OpenCompleted, GpadlCreateCompleted, GpadlTeardownCompleted,
                 Unloaded, ClientProtocolError>;

struct OpenParams {
  uint32_t ring_gpadl_id = 0;
  uint32_t downstream_page_offset = 0;
  uint32_t target_vp = 0;
  std::array<uint8_t, 120> user_data = {};
};

class VmbusClient {
 public:
  VmbusClient(uint8_t vtl, uint32_t max_version);

  uint8_t vtl() const { return vtl_; }
  std::optional<uint32_t> version() const { return version_; }

  // Starts version negotiation; after VERSION_RESPONSE it asks for offers.
  // Does nothing while negotiating, connected or unloading.
  void Connect();
  // GPADL_HEADER + GPADL_BODY messages for `ranges`. FAILED_PRECONDITION if
  // not connected, NOT_FOUND for an unknown channel, ALREADY_EXISTS for an id
  // in use, INVALID_ARGUMENT for ranges the wire cannot carry.
  absl::Status CreateGpadl(uint32_t relid, uint32_t gpadl_id, std::span<const GpaRange> ranges);
  absl::Status TeardownGpadl(uint32_t relid, uint32_t gpadl_id);
  // OPENCHANNEL. The ring GPADL must be created on this channel.
  absl::Status Open(uint32_t relid, const OpenParams& params);
  // CLOSECHANNEL (no reply). While the open is in flight, the close is
  // sent as soon as a successful OPENCHANNEL_RESULT arrives.
  absl::Status Close(uint32_t relid);
  // RELID_RELEASED for a rescinded channel that is closed; forgets it. If a
  // GPADL request on it is unanswered, RELID_RELEASED follows the last answer.
  absl::Status Release(uint32_t relid);
  // UNLOAD, if connected; until UNLOAD_RESPONSE every other call fails.
  void Unload();
  bool unloading() const { return unloading_; }

  void HandleHostMessage(std::span<const uint8_t> bytes);
  std::vector<ClientEffect> TakeEffects();

  std::optional<ClientChannelInfo> Channel(uint32_t relid) const;
  std::vector<ClientChannelInfo> Channels() const;
  // Calls `visit` for every channel offered with interface `type` (and
  // `instance`, if given), by instance then relid, without copying: O(log n
  // + matches), so a partition with 10,000 offers matches a new guest
  // endpoint without scanning them all.
  void ForEachOfferOf(const Guid& type, const std::optional<Guid>& instance,
                      absl::FunctionRef<void(const ClientChannelInfo&)> visit) const;

  // The rules of docs/control-plane.md as checks (tests and the fuzzer).
  absl::Status CheckInvariants() const;

  // Saved state (server_save.cc, client_save.cc).
  void Save(saved::v1::Client& out) const;
  absl::Status Restore(const saved::v1::Client& in);

 private:
  void Emit(ClientEffect effect);
  void Send(VmbusMessage message);
  void Error(std::string what);
  absl::Status CheckConnected() const;
  ClientChannelInfo* Find(uint32_t relid);
  // The channel if it exists and was not released; NOT_FOUND otherwise.
  absl::StatusOr<ClientChannelInfo*> Usable(uint32_t relid);
  void SendContact();
  // Sends RELID_RELEASED for `relid` if its release waits for nothing more.
  void FinishRelease(uint32_t relid);
  // The only ways channels_ and its GPADL maps change, so the indexes below
  // follow them: a new offer; a GPADL added or removed; a channel forgotten.
  void AddChannel(const OfferChannel& offer);
  void ForgetChannel(uint32_t relid);
  void AddGpadl(ClientChannelInfo& c, uint32_t gpadl_id, ClientGpadlState state);
  void EraseGpadl(ClientChannelInfo& c, uint32_t gpadl_id);
  // Rebuilds the indexes from channels_ (Restore, UNLOAD_RESPONSE).
  void Reindex();

  const uint8_t vtl_;
  size_t version_index_ = 0;  // into wire::kSupportedVersions
  const uint32_t max_version_;
  bool connecting_ = false;
  bool unloading_ = false;
  std::optional<uint32_t> version_;
  uint32_t next_open_id_ = 1;
  absl::btree_map<uint32_t, ClientChannelInfo> channels_;
  // Indexes over channels_ (CheckInvariants verifies them): every offer by
  // (interface type, interface instance, relid), and every GPADL id's channel.
  absl::btree_set<std::tuple<Guid, Guid, uint32_t>> by_interface_;
  absl::flat_hash_map<uint32_t, uint32_t> gpadl_channel_;
  std::vector<ClientEffect> effects_;
};

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_CONTROL_VMBUS_CLIENT_H_
