// Channel, part 2: the control task and the KMCL state actions it runs
// (the callbacks, ring setup and release, the wire side of open and close).
// Lifecycle and configuration are in channel.cc, packets in channel_send.cc
// and channel_io.cc, save/restore in channel_save.cc.
#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kmcl_core/runtime/channel.h"
#include "kmcl_core/bus/partition.h"
#include "kmcl_core/ring/ring_buffer.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl {

// ---- The control task ------------------------------------------------------------------

void Channel::ControlRun() {
  for (;;) {
    Command cmd;
    {
      MutexLock lock(&mu_);
      if (commands_.empty()) {
        done_cv_.SignalAll();  // WaitControlIdle
        return;
      }
      cmd = commands_.front();
      commands_.pop_front();
    }
    Actions actions;
    switch (cmd.kind) {
      case CommandKind::kStart: {
        MutexLock lock(&mu_);
        absl::StatusOr<Actions> a = fsm_.Start();
        if (a.ok()) actions = *a;
        break;
      }
      case CommandKind::kPause: {
        MutexLock lock(&mu_);
        actions = fsm_.Pause();
        break;
      }
      case CommandKind::kDisable: {
        MutexLock lock(&mu_);
        actions = fsm_.Disable();
        break;
      }
      case CommandKind::kOfferMatched:
        OpenMatchedOffer(cmd.relid);
        break;
      case CommandKind::kPeerOpened: {
        if (!IsHost(role_) && !NtSuccess(cmd.status)) {
          // The host refused the open: a PnP failure of the connection; the
          // endpoint stays enabled (EVT_VMB_CHANNEL_PNP_FAILURE; docs/kmcl.md).
          AbandonClientOpen();
          OnPnpFailure(cmd.status);
          break;
        }
        bool ok;
        {
          MutexLock lock(&mu_);
          absl::StatusOr<Actions> a = fsm_.PeerOpened();
          ok = a.ok();
          if (ok) actions = *a;
        }
        if (!ok) {
          // Opened after a Disable raced with it: take it back down.
          if (IsHost(role_)) {
            uint32_t relid;
            {
              MutexLock lock(&mu_);
              relid = relid_;
            }
            if (relid != 0) partition_->AcceptOpen(relid, kStatusDeviceRemoved).IgnoreError();
          } else {
            AbandonClientOpen();
          }
        }
        break;
      }
      case CommandKind::kPeerClosed: {
        MutexLock lock(&mu_);
        actions = fsm_.PeerClosed();
        break;
      }
      case CommandKind::kOpenCancelled: {
        MutexLock lock(&mu_);
        actions = fsm_.OpenCancelled();
        break;
      }
      case CommandKind::kDeliverPassive:
        delivery_.Deliver(*cmd.delivery);
        break;
      case CommandKind::kRestoredOpen: {
        // Back from a restore: what the driver hears is the state
        // machine's (EndpointStateMachine::Restore).
        MutexLock lock(&mu_);
        actions = std::exchange(restore_actions_, {});
        break;
      }
    }
    Execute(actions);
    if (cmd.ticket != 0) {
      MutexLock lock(&mu_);
      done_ticket_ = std::max(done_ticket_, cmd.ticket);
      done_cv_.SignalAll();
    }
  }
}

void Channel::Execute(const Actions& actions) {
  for (EndpointAction action : actions) RunAction(action);
}

void Channel::RunAction(EndpointAction action) {
  switch (action) {
    case EndpointAction::kOffer:
    case EndpointAction::kConnect:
      return;  // done by Enable in the caller's thread
    case EndpointAction::kCallOpened:
      CallOpened();
      return;
    case EndpointAction::kCallStarted: {
      {
        MutexLock lock(&mu_);
        in_started_callback_ = true;
      }
      if (callbacks_.started) callbacks_.started(*this);
      MutexLock lock(&mu_);
      in_started_callback_ = false;
      return;
    }
    case EndpointAction::kIncomingOn: {
      delivery_.Start();
      MutexLock lock(&mu_);
      KickIo();
      return;
    }
    case EndpointAction::kCallPostStarted:
      if (callbacks_.post_started) callbacks_.post_started(*this);
      return;
    case EndpointAction::kIncomingOff: {
      delivery_.Stop();
      MutexLock lock(&mu_);
      WaitDone([this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return delivery_.idle(); });
      return;
    }
    case EndpointAction::kCallSuspend:
      if (callbacks_.suspend) callbacks_.suspend(*this);
      return;
    case EndpointAction::kWaitIncomingDrained: {
      MutexLock lock(&mu_);
      WaitDone([this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return delivery_.delivered() == 0; });
      return;
    }
    case EndpointAction::kCancelTransactions:
      send_.CancelAll(kStatusCancelled);
      return;
    case EndpointAction::kCallClosed: {
      {
        MutexLock lock(&mu_);
        in_closed_callback_ = true;
      }
      if (callbacks_.closed) callbacks_.closed(*this);
      MutexLock lock(&mu_);
      in_closed_callback_ = false;
      return;
    }
    case EndpointAction::kReleaseRings:
      ReleaseRings();
      return;
    case EndpointAction::kRejectOpen: {
      uint32_t relid;
      NTSTATUS status;
      {
        MutexLock lock(&mu_);
        relid = relid_;
        status = open_status_;
        open_.reset();
      }
      partition_->AcceptOpen(relid, status).IgnoreError();
      return;
    }
    case EndpointAction::kRescind: {
      uint32_t relid;
      {
        MutexLock lock(&mu_);
        relid = relid_;
      }
      if (relid != 0) partition_->Revoke(relid).IgnoreError();
      return;
    }
    case EndpointAction::kDisconnect:
      Disconnect();
      return;
    case EndpointAction::kCallOpenedAgain:
      if (callbacks_.opened) callbacks_.opened(*this);
      return;
    case EndpointAction::kSignalBoth:
      NotifyIo();
      send_.SignalPeer();
      return;
  }
}

void Channel::OpenMatchedOffer(uint32_t relid) {
  uint32_t in_pages, out_pages;
  uint8_t vtl;
  {
    MutexLock lock(&mu_);
    if (fsm_.connection() != ConnectionState::kEnabled || relid_ != relid) return;
    in_pages = config_.incoming_pages;
    out_pages = config_.outgoing_pages;
    vtl = config_.client_vtl;
  }
  // The guest donates both rings: [control + outgoing][control + incoming].
  const uint32_t downstream = 1 + out_pages;
  const uint32_t total = downstream + 1 + in_pages;
  auto fail = [&](const absl::Status& s) {
    AbandonClientOpen();
    OnPnpFailure(ToNtStatus(s));
  };
  absl::StatusOr<std::vector<uint64_t>> pfns = partition_->memory().AllocatePages(total);
  if (!pfns.ok()) return fail(pfns.status());
  ring_pfns_ = *pfns;
  // The guest's own view of its rings, each ring's data pages mapped twice.
  absl::StatusOr<std::vector<uint32_t>> order = DoubleMappedRingPages(total, downstream);
  if (!order.ok()) return fail(order.status());
  absl::StatusOr<GuestView> view =
      partition_->memory().MapPages(ring_pfns_, *order, /*writable=*/true);
  if (!view.ok()) return fail(view.status());
  ring_view_ = *std::move(view);
  ring_gpadl_ = partition_->gpadls().AllocateId();
  std::vector<GpaRange> ranges = {{total * wire::kPageSize, 0, ring_pfns_}};
  if (absl::Status s = partition_->CreateGuestGpadl(vtl, relid, ring_gpadl_, ranges); !s.ok()) {
    ring_gpadl_ = 0;
    return fail(s);
  }
  if (absl::Status s = SetUpRings(ring_view_->bytes(), downstream); !s.ok()) return fail(s);
  OpenParams params;
  params.ring_gpadl_id = ring_gpadl_;
  params.downstream_page_offset = downstream;
  {
    MutexLock lock(&mu_);
    client_open_sent_ = true;
  }
  if (absl::Status s = partition_->OpenGuest(vtl, relid, params); !s.ok()) {
    {
      MutexLock lock(&mu_);
      client_open_sent_ = false;
    }
    return fail(s);
  }
}

void Channel::CallOpened() {
  uint32_t relid;
  std::optional<OpenChannel> open;
  {
    MutexLock lock(&mu_);
    relid = relid_;
    open = open_;
  }
  NTSTATUS status = kStatusSuccess;
  if (IsHost(role_)) {
    // Map the guest's ring GPADL, each ring's data pages twice, and build
    // the rings before the callback.
    absl::StatusOr<GpadlLease> lease =
        open.has_value()
            ? partition_->MapGpadl(relid, open->ring_buffer_gpadl, false,
                                   [d = open->downstream_page_offset](uint64_t pages) {
                                     return DoubleMappedRingPages(pages, d);
                                   })
            : absl::FailedPreconditionError("no open parameters");
    if (lease.ok()) {
      ring_lease_ = *lease;
      absl::Status s = SetUpRings(lease->pages, open->downstream_page_offset);
      if (!s.ok()) status = ToNtStatus(s);
    } else {
      status = ToNtStatus(lease.status());
    }
  }
  uint64_t mmio_bytes;
  {
    MutexLock lock(&mu_);
    const uint32_t megabytes =
        IsHost(role_)
            ? uint32_t{config_.offer.mmio_megabytes} + config_.offer.mmio_megabytes_optional
                   : uint32_t{matched_offer_.mmio_megabytes} + matched_offer_.mmio_megabytes_optional;
    mmio_bytes = uint64_t{megabytes} << 20;
  }
  if (NtSuccess(status) && mmio_bytes != 0) {
    absl::StatusOr<std::pair<uint64_t, uint64_t>> mmio = partition_->MmioFor(relid, mmio_bytes);
    if (mmio.ok()) {
      MutexLock lock(&mu_);
      mmio_ = *mmio;
    } else {
      status = ToNtStatus(mmio.status());
    }
  }
  if (NtSuccess(status) && callbacks_.opened) status = callbacks_.opened(*this);
  Actions next;
  {
    MutexLock lock(&mu_);
    open_status_ = NtSuccess(status) ? kStatusSuccess : status;
    next = fsm_.OpenedResult(NtSuccess(status));
  }
  if (IsHost(role_) && NtSuccess(status)) {
    partition_->AcceptOpen(relid, kStatusSuccess).IgnoreError();
  }
  // Sends queued before the open can go now.
  send_.Flush();
  Execute(next);
}

void Channel::ReleaseRings() {
  delivery_.Detach();
  if (std::shared_ptr<RingLink> link = send_.Detach()) link->Detach(this);
  uint32_t relid;
  uint8_t vtl;
  {
    MutexLock lock(&mu_);
    relid = relid_;
    vtl = config_.client_vtl;
    mmio_.reset();
    open_.reset();
  }
  if (IsHost(role_)) {
    if (ring_lease_.has_value()) {
      partition_->UnmapGpadl(ring_lease_->lease_id).IgnoreError();
      ring_lease_.reset();
    }
    if (relid != 0) partition_->CloseComplete(relid).IgnoreError();
    return;
  }
  // Client: give the ring GPADL back (waits for the host's unmap), free the
  // pages, and let the partition forget this endpoint.
  if (ring_gpadl_ != 0 && relid != 0) {
    partition_
        ->TeardownGuestGpadl(vtl, relid, ring_gpadl_, std::nullopt,
                             [this] { return executors_.RunOneHere(); })
        .IgnoreError();
  }
  ring_gpadl_ = 0;
  ring_view_.reset();
  if (!ring_pfns_.empty()) {
    partition_->memory().FreePages(ring_pfns_).IgnoreError();
    ring_pfns_.clear();
  }
  if (relid != 0) partition_->DetachGuest(vtl, relid, this);
  MutexLock lock(&mu_);
  relid_ = 0;
}

void Channel::Disconnect() {
  uint32_t relid;
  uint8_t vtl;
  bool open_sent;
  {
    MutexLock lock(&mu_);
    relid = relid_;
    vtl = config_.client_vtl;
    open_sent = client_open_sent_;
    client_open_sent_ = false;
  }
  partition_->CancelConnect(this);
  // CLOSECHANNEL; if the open is still in flight the guest client sends it
  // as soon as the host accepts.
  if (open_sent && relid != 0) partition_->CloseGuest(vtl, relid).IgnoreError();
}

void Channel::AbandonClientOpen() {
  Disconnect();
  ReleaseRings();
}

}  // namespace kmcl
