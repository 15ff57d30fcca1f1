// kmcl_core/control/endpoint_state.h: KMCL's channel state machine for one endpoint
// (docs/kmcl.md, "A channel's life"), pure: no I/O, no threads, no callbacks called.
//
// Two independent dimensions: connection (Disabled -> Enabled -> Opened ⇄
// Closed on a server / Disabled on a client) and run (Paused ⇄ Active). The
// endpoint is running when Opened and Active. Each input returns the actions
// the runtime must perform, in order; the callback order KMCL documents is
// encoded here once:
//   entering running:  Started, incoming queue on, PostStarted
//   leaving running:   incoming queue off, Suspend, wait until every
//                      delivered packet is completed
//   closing:           (leave running), [client: CLOSECHANNEL], cancel
//                      outstanding transactions, Closed, release the rings
//   server Disable:    rescind first, then close as above
//   restored, opened:  Opened again, (entering running if it was), signal
//                      both directions once
// Servers start paused (VmbChannelStart runs them); clients start active
// unless VmbChannelPause armed an auto-pause while disabled.
//
// Threading: thread-compatible; the endpoint runtime serialises inputs.
#ifndef KMCLD_KMCL_CORE_CONTROL_ENDPOINT_STATE_H_
#define KMCLD_KMCL_CORE_CONTROL_ENDPOINT_STATE_H_

#include <vector>

#include "absl/status/statusor.h"
#include "kmcl_core/control/endpoint_role.h"

namespace kmcl {

enum class ConnectionState {
  kDisabled,
  kEnabled,  // server: offered; client: waiting for or opening an offer
  kOpening,  // the Opened callback is running
  kOpened,
  kClosed,   // server only: the guest closed; the offer is still out
};
enum class RunState { kPaused, kActive };

const char* ConnectionStateName(ConnectionState state);

enum class EndpointAction {
  kOffer,               // server Enable: publish the offer
  kConnect,             // client Enable: open a matching offer (now or when it arrives)
  kCallOpened,          // run EvtVmbChannelOpened, then feed OpenedResult()
  kCallStarted,         // EvtVmbChannelStarted
  kIncomingOn,          // start delivering packets
  kCallPostStarted,     // EvtVmbChannelPostStarted
  kIncomingOff,         // stop delivering packets
  kCallSuspend,         // EvtVmbChannelSuspend
  kWaitIncomingDrained, // every delivered packet completed
  kCancelTransactions,  // complete outstanding sends with STATUS_CANCELLED
  kCallClosed,          // EvtVmbChannelClosed
  kReleaseRings,        // unmap the ring GPADL; server: CloseComplete
  kRejectOpen,          // the Opened callback failed: answer the peer
  kRescind,             // server Disable: withdraw the offer
  kDisconnect,          // client: CLOSECHANNEL if open / stop waiting; release if rescinded
  kCallOpenedAgain,     // restored: EvtVmbChannelOpened again (the driver rebuilds its
                        // mappings; the rings are already up, its result is no verdict)
  kSignalBoth,          // restored: interrupt both directions once, in case one was lost
};
const char* EndpointActionName(EndpointAction action);

using Actions = std::vector<EndpointAction>;

class EndpointStateMachine {
 public:
  explicit EndpointStateMachine(EndpointRole role) : role_(role) {}

  EndpointRole role() const { return role_; }
  ConnectionState connection() const { return connection_; }
  RunState run() const { return run_; }
  bool running() const {
    return connection_ == ConnectionState::kOpened && run_ == RunState::kActive;
  }
  bool auto_pause() const { return auto_pause_; }
  // Init* setters are legal only while disabled.
  bool configurable() const { return connection_ == ConnectionState::kDisabled; }

  // VmbChannelEnable. FAILED_PRECONDITION unless disabled.
  absl::StatusOr<Actions> Enable();
  // VmbChannelStart / VmbChannelPause. Start is FAILED_PRECONDITION while
  // disabled; Pause while disabled arms the auto-pause.
  absl::StatusOr<Actions> Start();
  Actions Pause();
  // VmbChannelDisable. Disabling a disabled endpoint does nothing.
  Actions Disable();

  // The peer opened (server: OPENCHANNEL; client: open result success).
  // FAILED_PRECONDITION unless enabled (or closed, on a server).
  absl::StatusOr<Actions> PeerOpened();
  // The Opened callback's verdict.
  Actions OpenedResult(bool success);
  // The peer went away: server: the guest closed; client: the host
  // rescinded. A client always ends disabled; a server ends closed.
  Actions PeerClosed();
  // The open was cancelled before the Opened callback ran (rescind during open).
  Actions OpenCancelled();

  // Restores a saved state (Channel::Restore, re-attached by Enable) into
  // a disabled machine. Returns what the driver hears as the endpoint comes
  // back: nothing unless it was opened; then Opened again, the running
  // entry if it was running, and a signal both ways.
  Actions Restore(ConnectionState connection, RunState run);

 private:
  void EnterRunning(Actions& out) const;
  void LeaveRunning(Actions& out) const;
  void CloseOpened(Actions& out);

  bool host() const { return role_ == EndpointRole::kHost; }

  const EndpointRole role_;
  ConnectionState connection_ = ConnectionState::kDisabled;
  RunState run_ = RunState::kPaused;
  bool auto_pause_ = false;
};

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_CONTROL_ENDPOINT_STATE_H_
