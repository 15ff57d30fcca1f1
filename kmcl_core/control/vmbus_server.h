// kmcl_core/control/vmbus_server.h: the host side of one partition's VMBus control
// plane, as a state machine without I/O or threads.
//
// VmbusServer owns the server-side state of every channel offer (relid,
// state, the guest's open parameters) and the connection state of each guest
// VMBus client (one per VTL). It is driven by two kinds of input:
//   - host calls: Offer, Revoke, AcceptOpen (the host endpoint's
//     EvtVmbChannelOpened result), CloseComplete, GpadlUnmapped;
//   - raw channel messages from the guest at a VTL: HandleGuestMessage.
// It never calls out. Everything it wants done is appended to an effect
// list, which the caller takes with TakeEffects() and carries out in order:
// messages to send to the guest, and requests to the host endpoint (open
// requested, close requested, open cancelled, channel released).
//
// Channel states follow OpenVMM's server (vm/devices/vmbus/vmbus_server/src/channels.rs): a revoked
// channel keeps its relid until the guest sends RELID_RELEASED, so a re-offer
// gets a different relid and offer_sequence distinguishes incarnations; GPADL
// creation is accepted on revoked-but-unreleased channels (openvmm #3959);
// every GPADL_HEADER gets a GPADL_CREATED with a status, failures included
// (LIS #601); teardown of a mapped GPADL answers GPADL_TORNDOWN only when the
// host's lease is gone. Malformed or out-of-state guest messages never
// change another channel: they produce a ProtocolError effect (and, where
// the guest waits for an answer, a failure answer).
//
// What happens to each table below when a relid is released, when a guest
// connection unloads, and across save/restore is written in
// docs/control-plane.md; ForgetRelid, ForgetConnection
// (vmbus_server_rules.cc) and Save/Restore are the one place each rule is
// applied. UNLOAD_RESPONSE goes out only once the
// guest's channels are closed by the host endpoints and its GPADLs are gone
// (OpenVMM's vmbus_server likewise holds the unload until its channels are
// reset), so after it every id the guest used is free again.
//
// Threading: thread-compatible. The partition serialises all calls.
#ifndef KMCLD_KMCL_CORE_CONTROL_VMBUS_SERVER_H_
#define KMCLD_KMCL_CORE_CONTROL_VMBUS_SERVER_H_

#include <cstdint>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "kmcl_core/base/guid.h"
#include "kmcl_core/base/ntstatus.h"
#include "kmcl_core/control/offer.h"
#include "kmcl_core/memory/gpadl_table.h"
#include "kmcl_core/wire/gpadl_messages.h"
#include "kmcl_core/wire/vmbus_messages.h"

namespace kmcl {
namespace saved::v1 {
class SavedPartition;
}

enum class ServerChannelState {
  kOffered,        // offered (or waiting for the guest to ask); not open
  kOpening,        // OPENCHANNEL received; the host endpoint is accepting
  kOpen,
  kClosing,        // CLOSECHANNEL received; the host endpoint is closing
  kClosingReopen,  // reopened while closing; the open waits for CloseComplete
  kRevoked,        // rescinded; the relid is held until RELID_RELEASED
};
const char* ServerChannelStateName(ServerChannelState state);

// ---- Effects ----------------------------------------------------------------
struct SendToGuest {
  uint8_t vtl = 0;
  VmbusMessage message;
};
// The guest opened the channel: the host endpoint maps the ring GPADL, runs
// EvtVmbChannelOpened and answers with AcceptOpen.
struct OpenRequested {
  uint32_t relid = 0;
  OpenChannel open;
};
// The guest closed the channel: the host endpoint stops (Suspend, Closed)
// and answers with CloseComplete.
struct CloseRequested {
  uint32_t relid = 0;
};
// The channel was revoked while the host endpoint was accepting an open.
struct OpenCancelled {
  uint32_t relid = 0;
};
struct GpadlReady {
  uint32_t relid = 0;
  uint32_t gpadl_id = 0;
};
struct GpadlGone {
  uint32_t relid = 0;
  uint32_t gpadl_id = 0;
};
// The guest released a revoked channel's relid: the offer is gone for good.
struct ChannelReleased {
  uint32_t relid = 0;
  uint64_t offer_sequence = 0;
};
struct ProtocolError {
  uint8_t vtl = 0;
  std::string what;
};
using ServerEffect = std::variant<SendToGuest, OpenRequested, CloseRequested, OpenCancelled,
                                  GpadlReady, GpadlGone, ChannelReleased, ProtocolError>;

struct ServerChannelInfo {
  uint32_t relid = 0;
  uint64_t offer_sequence = 0;
  ServerOffer offer;
  ServerChannelState state = ServerChannelState::kOffered;
  bool offer_sent = false;          // the guest has seen OFFERCHANNEL
  std::optional<OpenChannel> open;  // the guest's open parameters while opening/open
};

struct OfferHandle {
  uint32_t relid = 0;
  uint64_t offer_sequence = 0;
};

class VmbusServer {
 public:
  // `gpadls` is the partition's table (shared with the host endpoints, which
  // map and unmap leases). `client_vtls` are the VTLs at which a guest VMBus
  // client may connect; `max_version` caps protocol negotiation.
  VmbusServer(GpadlTable& gpadls, uint64_t guest_page_count, std::set<uint8_t> client_vtls,
              uint32_t max_version);

  // ---- Host calls ----
  // Allocates the lowest free relid (revoked, unreleased relids stay taken)
  // and sends OFFERCHANNEL if the guest at the target VTL asked for offers.
  // INVALID_ARGUMENT for a VTL without a client.
  absl::StatusOr<OfferHandle> Offer(const ServerOffer& offer);
  // Rescinds. FAILED_PRECONDITION if already revoked; NOT_FOUND if unknown.
  absl::Status Revoke(uint32_t relid);
  // The host endpoint's answer to OpenRequested: success opens the channel;
  // a failure status goes back to the guest and the channel stays offered.
  // FAILED_PRECONDITION if the channel is not opening (e.g. revoked meanwhile).
  absl::Status AcceptOpen(uint32_t relid, NTSTATUS status);
  // The host endpoint finished a close requested by CloseRequested.
  absl::Status CloseComplete(uint32_t relid);
  // The host unmapped a lease; if that finished a teardown the guest asked
  // for, the guest gets GPADL_TORNDOWN (one it did not ask for, or gave up
  // waiting for by releasing the relid or unloading, is finished silently).
  void GpadlUnmapped(const UnmapResult& result);

  // ---- Guest messages ----
  void HandleGuestMessage(uint8_t vtl, std::span<const uint8_t> bytes);

  std::vector<ServerEffect> TakeEffects();

  // ---- Queries ----
  std::optional<ServerChannelInfo> Channel(uint32_t relid) const;
  std::vector<ServerChannelInfo> Channels() const;
  // The negotiated version at `vtl`, or nullopt if not connected.
  std::optional<uint32_t> ConnectedVersion(uint8_t vtl) const;
  // True between UNLOAD and UNLOAD_RESPONSE at `vtl`.
  bool Unloading(uint8_t vtl) const;
  // True if the guest at `vtl` can still get an answer about GPADL
  // `gpadl_id` of channel `relid`: it owns it (a teardown will be answered),
  // its teardown waits for a host unmap and will be answered, or it is
  // being assembled. False means a guest waiting for GPADL_TORNDOWN would
  // wait forever (e.g. after restoring an inconsistent blob).
  bool AnswersGpadl(uint8_t vtl, uint32_t relid, uint32_t gpadl_id) const;

  // The rules of docs/control-plane.md as checks on the tables: no entry
  // names a released relid or a connection that is gone, every open in
  // flight names a ring GPADL its channel owns. For tests and the fuzzer.
  absl::Status CheckInvariants() const;

  // Saved state (server_save.cc, client_save.cc). Restore validates everything (relids,
  // states, GPADL owners against the table) and, on error, leaves this
  // server as it was.
  void Save(saved::v1::SavedPartition& out) const;
  absl::Status Restore(const saved::v1::SavedPartition& in);

 private:
  struct Connection {
    std::optional<uint32_t> version;
    bool offers_requested = false;
    bool unloading = false;  // UNLOAD received, UNLOAD_RESPONSE not yet sent
  };
  // A GPADL the guest created and has not asked to tear down.
  struct GpadlOwner {
    uint32_t relid;
    uint8_t vtl;
  };
  // A GPADL whose teardown waits for the host to unmap its lease.
  struct PendingTeardown {
    uint32_t relid;  // the channel it belonged to (for GpadlGone)
    uint8_t vtl;
    bool answer;  // the guest asked and still waits for GPADL_TORNDOWN
  };
  // A GPADL_HEADER whose GPADL_BODY messages have not all arrived.
  struct Assembling {
    uint8_t vtl;
    GpadlAssembler assembler;
    std::vector<std::vector<uint8_t>> messages;  // as received, for save/restore
  };

  void Send(uint8_t vtl, VmbusMessage message);
  void Error(uint8_t vtl, std::string what);
  OfferChannel OfferMessage(const ServerChannelInfo& channel) const;
  ServerChannelInfo* Find(uint32_t relid);
  // The channel `relid` if it exists and belongs to `vtl`, else an error effect.
  ServerChannelInfo* FindForGuest(uint8_t vtl, uint32_t relid, const char* message);

  void OnInitiateContact(uint8_t vtl, const InitiateContact& m);
  void OnRequestOffers(uint8_t vtl);
  void OnOpenChannel(uint8_t vtl, const OpenChannel& m);
  void OnCloseChannel(uint8_t vtl, const CloseChannel& m);
  void OnGpadlHeader(uint8_t vtl, const GpadlHeader& m);
  void OnGpadlBody(uint8_t vtl, const GpadlBody& m);
  void OnGpadlTeardown(uint8_t vtl, const GpadlTeardown& m);
  void OnRelIdReleased(uint8_t vtl, const RelIdReleased& m);
  void OnUnload(uint8_t vtl);
  void FinishGpadl(uint8_t vtl, uint32_t relid, GpadlAssembler& assembler);
  void StartOpen(ServerChannelInfo& channel, const OpenChannel& open);
  void ReleaseChannel(uint32_t relid);
  // The rules of docs/control-plane.md for the GPADL tables.
  void ForgetRelid(uint32_t relid);
  void ForgetConnection(uint8_t vtl);
  // The GPADL part of both: `owned(relid, vtl)` selects the entries.
  template <typename Owned>
  void ForgetGpadls(Owned owned);
  // Starts the teardown of a GPADL the guest no longer owns; GpadlGone now,
  // or (mapped) a silent pending teardown.
  void AbandonGpadl(uint32_t gpadl_id, const GpadlOwner& owner);
  // Sends UNLOAD_RESPONSE to every unloading connection that has nothing
  // left to wait for.
  void FinishUnloads();
  bool UnloadDone(uint8_t vtl) const;

  GpadlTable& gpadls_;
  const uint64_t guest_page_count_;
  const uint32_t max_version_;
  absl::btree_map<uint8_t, Connection> connections_;
  absl::btree_map<uint32_t, ServerChannelInfo> channels_;
  absl::btree_map<uint32_t, Assembling> assembling_;  // by GPADL id
  absl::flat_hash_map<uint32_t, GpadlOwner> gpadl_owners_;
  absl::btree_map<uint32_t, PendingTeardown> teardowns_;  // by GPADL id
  uint64_t next_offer_sequence_ = 1;
  std::vector<ServerEffect> effects_;
};

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_CONTROL_VMBUS_SERVER_H_
