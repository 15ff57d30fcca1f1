#include "kmcl_core/control/endpoint_state.h"

#include "absl/strings/str_cat.h"

namespace kmcl {

const char* ConnectionStateName(ConnectionState state) {
  switch (state) {
    case ConnectionState::kDisabled: return "disabled";
    case ConnectionState::kEnabled: return "enabled";
    case ConnectionState::kOpening: return "opening";
    case ConnectionState::kOpened: return "opened";
    case ConnectionState::kClosed: return "closed";
  }
  return "?";
}

const char* EndpointActionName(EndpointAction action) {
  switch (action) {
    case EndpointAction::kOffer: return "offer";
    case EndpointAction::kConnect: return "connect";
    case EndpointAction::kCallOpened: return "Opened";
    case EndpointAction::kCallStarted: return "Started";
    case EndpointAction::kIncomingOn: return "incoming-on";
    case EndpointAction::kCallPostStarted: return "PostStarted";
    case EndpointAction::kIncomingOff: return "incoming-off";
    case EndpointAction::kCallSuspend: return "Suspend";
    case EndpointAction::kWaitIncomingDrained: return "wait-drained";
    case EndpointAction::kCancelTransactions: return "cancel-transactions";
    case EndpointAction::kCallClosed: return "Closed";
    case EndpointAction::kReleaseRings: return "release-rings";
    case EndpointAction::kRejectOpen: return "reject-open";
    case EndpointAction::kRescind: return "rescind";
    case EndpointAction::kDisconnect: return "disconnect";
    case EndpointAction::kCallOpenedAgain: return "Opened-again";
    case EndpointAction::kSignalBoth: return "signal-both";
  }
  return "?";
}

void EndpointStateMachine::EnterRunning(Actions& out) const {
  out.push_back(EndpointAction::kCallStarted);
  out.push_back(EndpointAction::kIncomingOn);
  out.push_back(EndpointAction::kCallPostStarted);
}

void EndpointStateMachine::LeaveRunning(Actions& out) const {
  out.push_back(EndpointAction::kIncomingOff);
  out.push_back(EndpointAction::kCallSuspend);
  out.push_back(EndpointAction::kWaitIncomingDrained);
}

void EndpointStateMachine::CloseOpened(Actions& out) {
  if (running()) LeaveRunning(out);
  // A client tells the host before its Closed callback: drivers delete their
  // GPADLs there, which waits for the host to unmap, which it does on close.
  if (!host()) out.push_back(EndpointAction::kDisconnect);
  out.push_back(EndpointAction::kCancelTransactions);
  out.push_back(EndpointAction::kCallClosed);
  out.push_back(EndpointAction::kReleaseRings);
}

Actions EndpointStateMachine::Restore(ConnectionState connection, RunState run) {
  connection_ = connection;
  run_ = run;
  Actions out;
  if (connection_ != ConnectionState::kOpened) return out;
  out.push_back(EndpointAction::kCallOpenedAgain);
  if (running()) EnterRunning(out);
  out.push_back(EndpointAction::kSignalBoth);
  return out;
}

absl::StatusOr<Actions> EndpointStateMachine::Enable() {
  if (connection_ != ConnectionState::kDisabled) {
    return absl::FailedPreconditionError(
        absl::StrCat("channel is ", ConnectionStateName(connection_), ", not disabled"));
  }
  connection_ = ConnectionState::kEnabled;
  // Servers come up paused; clients active unless an auto-pause was armed.
  run_ = host() || auto_pause_ ? RunState::kPaused : RunState::kActive;
  auto_pause_ = false;
  return Actions{host() ? EndpointAction::kOffer : EndpointAction::kConnect};
}

absl::StatusOr<Actions> EndpointStateMachine::Start() {
  if (connection_ == ConnectionState::kDisabled) {
    return absl::FailedPreconditionError("VmbChannelStart on a disabled channel");
  }
  Actions out;
  if (run_ == RunState::kActive) return out;
  run_ = RunState::kActive;
  if (running()) EnterRunning(out);
  return out;
}

Actions EndpointStateMachine::Pause() {
  Actions out;
  if (connection_ == ConnectionState::kDisabled) {
    auto_pause_ = true;
    return out;
  }
  if (run_ == RunState::kPaused) return out;
  if (running()) LeaveRunning(out);
  run_ = RunState::kPaused;
  return out;
}

Actions EndpointStateMachine::Disable() {
  Actions out;
  if (connection_ == ConnectionState::kDisabled) return out;
  // A server withdraws the offer first, so the guest starts closing at once.
  if (host()) out.push_back(EndpointAction::kRescind);
  if (connection_ == ConnectionState::kOpened) {
    CloseOpened(out);
  } else if (!host()) {
    // Stop waiting for an offer, or abandon an open in flight.
    out.push_back(EndpointAction::kDisconnect);
    out.push_back(EndpointAction::kReleaseRings);
  }
  connection_ = ConnectionState::kDisabled;
  run_ = RunState::kPaused;
  return out;
}

absl::StatusOr<Actions> EndpointStateMachine::PeerOpened() {
  const bool can_open = connection_ == ConnectionState::kEnabled ||
                        (host() && connection_ == ConnectionState::kClosed);
  if (!can_open) {
    return absl::FailedPreconditionError(
        absl::StrCat("open while ", ConnectionStateName(connection_)));
  }
  connection_ = ConnectionState::kOpening;
  return Actions{EndpointAction::kCallOpened};
}

Actions EndpointStateMachine::OpenedResult(bool success) {
  Actions out;
  if (connection_ != ConnectionState::kOpening) return out;
  if (!success) {
    // Roll back to where no traffic flows: the server refuses the open and
    // its offer stays out; the client closes and gives the channel back.
    if (host()) {
      out.push_back(EndpointAction::kRejectOpen);
      out.push_back(EndpointAction::kReleaseRings);
      connection_ = ConnectionState::kEnabled;
    } else {
      out.push_back(EndpointAction::kDisconnect);
      out.push_back(EndpointAction::kReleaseRings);
      connection_ = ConnectionState::kDisabled;
      run_ = RunState::kPaused;
    }
    return out;
  }
  connection_ = ConnectionState::kOpened;
  if (running()) EnterRunning(out);
  return out;
}

Actions EndpointStateMachine::OpenCancelled() {
  Actions out;
  if (connection_ == ConnectionState::kOpening) {
    out.push_back(EndpointAction::kReleaseRings);
    connection_ = host() ? ConnectionState::kEnabled : ConnectionState::kDisabled;
  }
  return out;
}

Actions EndpointStateMachine::PeerClosed() {
  Actions out;
  if (connection_ == ConnectionState::kDisabled) return out;
  if (connection_ == ConnectionState::kOpened) {
    CloseOpened(out);
  } else {
    if (!host()) out.push_back(EndpointAction::kDisconnect);
    out.push_back(EndpointAction::kReleaseRings);
  }
  if (host()) {
    connection_ = ConnectionState::kClosed;
  } else {
    connection_ = ConnectionState::kDisabled;
    run_ = RunState::kPaused;
  }
  return out;
}

}  // namespace kmcl
