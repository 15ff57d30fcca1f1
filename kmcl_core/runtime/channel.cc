// Channel lifecycle: configuration, Enable/Start/Pause/Disable, the control
// thread and the KMCL state actions. Packets and the I/O task are in
// channel_io.cc.
#include "kmcl_core/runtime/channel.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kmcl_core/base/status_macros.h"
#include "kmcl_core/bus/partition.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl {

absl::StatusOr<std::unique_ptr<Channel>> Channel::Allocate(Partition& partition,
                                                           EndpointRole role) {
  return Allocate(partition, role, ChannelExecutors::Default());
}

absl::StatusOr<std::unique_ptr<Channel>> Channel::Allocate(Partition& partition, EndpointRole role,
                                                           ChannelExecutors executors) {
  if (executors.dispatch == nullptr || executors.passive == nullptr) {
    return absl::InvalidArgumentError("a channel needs a dispatch and a passive executor");
  }
  return std::unique_ptr<Channel>(new Channel(partition, role, executors));
}

Channel::Channel(Partition& partition, EndpointRole role, ChannelExecutors executors)
    : partition_(&partition),
      role_(role),
      send_(this, {.gate =
                       [this] {
                         MutexLock lock(&mu_);
                         return SendPath::Gate{
                             .open = fsm_.connection() != ConnectionState::kDisabled,
                             .pipe = pipe_mode()};
                       },
                   .finished = [this] { NotifyIo(); }}),
      delivery_(this, &send_, DeliveryHooks()),
      fsm_(role),
      config_(role),
      executors_(executors) {
  MutexLock lock(&mu_);
  config_.offer.interface_instance = Guid::Random();
}

Channel::~Channel() {
  // VmbChannelCleanup on an enabled channel is a driver bug; close it down
  // rather than leave threads running over freed memory.
  Disable().IgnoreError();
  StopThreads();
  uint32_t relid;
  uint8_t vtl;
  {
    MutexLock lock(&mu_);
    relid = relid_;
    vtl = config_.client_vtl;
  }
  if (IsHost(role_)) {
    if (relid != 0) partition_->DetachHost(relid, this);
  } else {
    partition_->CancelConnect(this);
    if (relid != 0) partition_->DetachGuest(vtl, relid, this);
  }
  MutexLock lock(&mu_);
  // Pooled packets were placement-constructed in raw blocks.
  for (auto& block : packet_memory_) reinterpret_cast<Packet*>(block.get())->~Packet();
  magic_ = 0;
}

bool Channel::OnOwnThread() const {
  const std::thread::id self = std::this_thread::get_id();
  return self == control_id_.load() || self == io_id_.load();
}

// Enable, Start, Pause and Disable take turns. Without turns two Disables
// could both find the tasks running and both stop them, the second on
// tasks the first had already destroyed; an Enable could start between a
// Disable's command and its stop and lose its tasks to that stop; a Pause
// could queue its command after a stop drained the queue and wait forever.
class Channel::UserCallTurn {
 public:
  UserCallTurn(Channel& channel, absl::string_view call) : channel_(channel) {
    if (channel_.OnOwnThread()) {
      status_ = absl::FailedPreconditionError(
          absl::StrCat(call, " must not be called from the channel's own callbacks"));
      return;
    }
    const std::thread::id self = std::this_thread::get_id();
    MutexLock lock(&channel_.mu_);
    if (channel_.user_call_owner_ == self) {
      status_ = absl::FailedPreconditionError(absl::StrCat(
          call, " while this thread's own Enable/Start/Pause/Disable of the channel runs"));
      return;
    }
    channel_.WaitDone([this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(channel_.mu_) {
      return channel_.user_call_owner_ == std::thread::id();
    });
    channel_.user_call_owner_ = self;
  }
  ~UserCallTurn() {
    if (!status_.ok()) return;
    MutexLock lock(&channel_.mu_);
    channel_.user_call_owner_ = std::thread::id();
    channel_.done_cv_.SignalAll();
  }
  UserCallTurn(const UserCallTurn&) = delete;
  UserCallTurn& operator=(const UserCallTurn&) = delete;

  // FAILED_PRECONDITION if the call may not run (it has no turn).
  const absl::Status& status() const { return status_; }

 private:
  Channel& channel_;
  absl::Status status_;
};

absl::Status Channel::CheckConfigurable() const {
  if (!fsm_.configurable() || threads_running_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "channel is ", ConnectionStateName(fsm_.connection()), "; configure it while disabled"));
  }
  return absl::OkStatus();
}

absl::Status Channel::Configure(std::optional<EndpointRole> only,
                                absl::FunctionRef<void(ChannelConfig&)> edit) {
  MutexLock lock(&mu_);
  RETURN_IF_ERROR(CheckConfigurable());
  if (only.has_value() && *only != role_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "a ", EndpointRoleName(*only), "-only setting on a ", EndpointRoleName(role_), " channel"));
  }
  ChannelConfig next = config_;
  edit(next);
  RETURN_IF_ERROR(next.Validate());
  config_ = std::move(next);
  return absl::OkStatus();
}

// ---- Configuration -------------------------------------------------------------------

absl::Status Channel::BindPartition(Partition& partition) {
  MutexLock lock(&mu_);
  RETURN_IF_ERROR(CheckConfigurable());
  if (relid_ != 0) {
    return absl::FailedPreconditionError("the channel's previous offer has not been released yet");
  }
  partition_ = &partition;
  return absl::OkStatus();
}

absl::Status Channel::SetCallbacks(ChannelCallbacks callbacks) {
  MutexLock lock(&mu_);
  RETURN_IF_ERROR(CheckConfigurable());
  callbacks_ = std::move(callbacks);
  return absl::OkStatus();
}

absl::Status Channel::SetFlags(uint32_t flags) {
  return Configure(std::nullopt, [&](ChannelConfig& c) { c.flags = flags; });
}

absl::Status Channel::SetFriendlyName(std::string name) {
  return Configure(std::nullopt, [&](ChannelConfig& c) { c.friendly_name = std::move(name); });
}

absl::Status Channel::SetClientContextSize(uint32_t bytes) {
  return Configure(std::nullopt, [&](ChannelConfig& c) { c.client_context_size = bytes; });
}

absl::Status Channel::SetMaximumPacketSize(uint32_t bytes) {
  return Configure(std::nullopt, [&](ChannelConfig& c) { c.max_packet_size = bytes; });
}

absl::Status Channel::SetMaximumExternalData(uint32_t bytes, uint32_t chain_length) {
  return Configure(std::nullopt, [&](ChannelConfig& c) {
    c.max_external_bytes = bytes;
    c.max_external_chain = chain_length;
  });
}

absl::Status Channel::SetRingBufferPageCount(uint32_t incoming, uint32_t outgoing) {
  return Configure(EndpointRole::kGuest, [&](ChannelConfig& c) {
    c.incoming_pages = incoming;
    c.outgoing_pages = outgoing;
  });
}

absl::Status Channel::SetTargetPnp(const Guid& type, std::optional<Guid> instance, uint8_t vtl) {
  return Configure(EndpointRole::kGuest, [&](ChannelConfig& c) {
    c.target_type = type;
    c.target_instance = instance;
    c.client_vtl = vtl;
  });
}

absl::Status Channel::SetServerFlags(uint32_t flags) {
  return Configure(EndpointRole::kHost, [&](ChannelConfig& c) { c.server_flags = flags; });
}

absl::Status Channel::SetMmioMegabytes(uint16_t megabytes, uint16_t optional_megabytes) {
  return Configure(EndpointRole::kHost, [&](ChannelConfig& c) {
    c.offer.mmio_megabytes = megabytes;
    c.offer.mmio_megabytes_optional = optional_megabytes;
  });
}

absl::Status Channel::SetTargetInterfaceId(const Guid& type, const Guid& instance) {
  return Configure(EndpointRole::kHost, [&](ChannelConfig& c) {
    c.offer.interface_type = type;
    c.offer.interface_instance = instance;
  });
}

absl::Status Channel::SetTargetVtl(uint8_t vtl) {
  return Configure(EndpointRole::kHost, [&](ChannelConfig& c) { c.offer.target_vtl = vtl; });
}

absl::Status Channel::SetUserDefined(std::span<const uint8_t> bytes) {
  if (bytes.size() > wire::kOfferUserDefinedBytes) {
    // Not a configuration value: the offer's field has room for 120 bytes.
    return absl::InvalidArgumentError(absl::StrCat("offer data of ", bytes.size(),
                                                   " bytes; at most 120"));
  }
  return Configure(std::nullopt, [&](ChannelConfig& c) {
    c.offer.user_defined.fill(0);
    std::copy(bytes.begin(), bytes.end(), c.offer.user_defined.begin());
  });
}

bool Channel::pipe_mode() const { return config_.PipeMode(matched_offer_.channel_flags); }

// ---- Threads ---------------------------------------------------------------------------

// "Threads" are the channel's two serial tasks on the shared executors.
void Channel::StartThreads() {
  MutexLock lock(&mu_);
  if (threads_running_) return;
  threads_running_ = true;
  stopping_ = false;
  control_task_ = std::make_unique<SerialTask>(executors_.passive, [this] {
    const std::thread::id outer = control_id_.exchange(std::this_thread::get_id());
    ControlRun();
    control_id_ = outer;
  });
  io_task_ = std::make_unique<SerialTask>(executors_.dispatch, [this] {
    const std::thread::id outer = io_id_.exchange(std::this_thread::get_id());
    IoRun();
    io_id_ = outer;
  });
  if (!commands_.empty()) control_task_->Kick();
  if (io_work_) io_task_->Kick();
}

void Channel::StopThreads() {
  SerialTask* control;
  SerialTask* io;
  {
    MutexLock lock(&mu_);
    if (!threads_running_) return;
    stopping_ = true;
    control = control_task_.get();
    io = io_task_.get();
    // The control task drains the commands already queued (as a thread
    // would before it exits); the I/O task sees stopping_ and returns.
    if (!commands_.empty()) control->Kick();
  }
  // The tasks live until threads_running_ is cleared below, and only this
  // function replaces them, called by the one user call whose turn it is
  // (or by the destructor, once no call can run), so the pointers stay
  // valid without the lock.
  WaitControlIdle();
  control->Stop();
  io->Stop();
  std::unique_ptr<SerialTask> old_control, old_io;
  MutexLock lock(&mu_);
  old_control = std::move(control_task_);
  old_io = std::move(io_task_);
  threads_running_ = false;
  commands_.clear();
}

void Channel::WaitControlIdle() {
  MutexLock lock(&mu_);
  WaitDone([this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return commands_.empty(); });
}

void Channel::Post(Command command) {
  commands_.push_back(command);
  if (control_task_ != nullptr) control_task_->Kick();
}

void Channel::KickIo() {
  io_work_ = true;
  if (io_task_ != nullptr) io_task_->Kick();
}

void Channel::WaitDone(const std::function<bool()>& done) {
  while (!done()) {
    mu_.Unlock();
    const bool ran = executors_.RunOneHere();
    mu_.Lock();
    if (!ran && !done()) done_cv_.Wait(&mu_);
  }
}

// ---- State ----------------------------------------------------------------------------

absl::Status Channel::Enable() {
  UserCallTurn turn(*this, "VmbChannelEnable");
  RETURN_IF_ERROR(turn.status());
  Actions actions;
  ServerOffer offer;
  uint8_t vtl;
  Guid type;
  std::optional<Guid> instance;
  {
    MutexLock lock(&mu_);
    RETURN_IF_ERROR(config_.Validate(ChannelConfig::Check::kEnable));
    absl::StatusOr<Actions> a = fsm_.Enable();
    if (!a.ok()) return a.status();
    actions = *a;
    config_.offer.channel_flags = config_.WireOfferFlags();
    offer = config_.offer;
    vtl = config_.client_vtl;
    type = config_.target_type;
    instance = config_.target_instance;
    send_corruption_.clear();
    delivery_.ClearErrors();  // after mu_ (lock order)
  }
  // A restored endpoint re-attaches to its channel instead of offering or
  // opening anew.
  if (absl::StatusOr<bool> reattached = EnableRestored(); !reattached.ok()) {
    return reattached.status();
  } else if (*reattached) {
    return absl::OkStatus();
  }
  StartThreads();
  for (EndpointAction action : actions) {
    if (action == EndpointAction::kOffer) {
      // The partition hands this endpoint its relid (OnOffered) before the
      // guest can see the offer: a guest that opens at once must find it.
      absl::StatusOr<OfferHandle> handle = partition_->Offer(this, offer);
      if (!handle.ok()) {
        MutexLock lock(&mu_);
        fsm_.Disable();
        return handle.status();
      }
    } else if (action == EndpointAction::kConnect) {
      partition_->Connect(this, vtl, type, instance);
    }
  }
  return absl::OkStatus();
}

absl::Status Channel::RunUserCommand(CommandKind kind) {
  MutexLock lock(&mu_);
  if (!threads_running_) {
    // Disabled: nothing runs, so answer here.
    switch (kind) {
      case CommandKind::kStart: {
        absl::StatusOr<Actions> a = fsm_.Start();
        return a.status();
      }
      case CommandKind::kPause:
        fsm_.Pause();
        return absl::OkStatus();
      default:
        return absl::OkStatus();
    }
  }
  const uint64_t ticket = next_ticket_++;
  Post({kind, ticket});
  WaitDone([this, ticket]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done_ticket_ >= ticket; });
  return absl::OkStatus();
}

absl::Status Channel::Start() {
  UserCallTurn turn(*this, "VmbChannelStart");
  RETURN_IF_ERROR(turn.status());
  {
    MutexLock lock(&mu_);
    if (fsm_.connection() == ConnectionState::kDisabled) {
      return absl::FailedPreconditionError("VmbChannelStart on a disabled channel");
    }
  }
  // Starting a saved channel means it keeps running here (a checkpoint, or
  // a migration that failed): its transactions are its own again.
  Thaw();
  return RunUserCommand(CommandKind::kStart);
}

absl::Status Channel::Pause() {
  UserCallTurn turn(*this, "VmbChannelPause");
  RETURN_IF_ERROR(turn.status());
  return RunUserCommand(CommandKind::kPause);
}

absl::Status Channel::Disable() {
  // One turn for the command and the stop: no other call starts or stops
  // the tasks in between.
  UserCallTurn turn(*this, "VmbChannelDisable");
  RETURN_IF_ERROR(turn.status());
  RETURN_IF_ERROR(RunUserCommand(CommandKind::kDisable));
  StopThreads();
  return absl::OkStatus();
}

// ---- Events from the partition (under its lock: only queue work) -----------------------

void Channel::OnOffered(const OfferHandle& handle) {
  MutexLock lock(&mu_);
  relid_ = handle.relid;
  offer_sequence_ = handle.offer_sequence;
}

void Channel::OnOpenRequested(const OpenChannel& open) {
  MutexLock lock(&mu_);
  open_ = open;
  Post({CommandKind::kPeerOpened});
}

void Channel::OnOpenCompleted(NTSTATUS status) {
  MutexLock lock(&mu_);
  Post({CommandKind::kPeerOpened, 0, status});
}

void Channel::OnPeerClosed() {
  MutexLock lock(&mu_);
  Post({CommandKind::kPeerClosed});
}

void Channel::OnOpenCancelled() {
  MutexLock lock(&mu_);
  Post({CommandKind::kOpenCancelled});
}

void Channel::OnOfferMatched(uint32_t relid, const OfferChannel& offer) {
  MutexLock lock(&mu_);
  relid_ = relid;
  matched_offer_ = offer;
  Post({CommandKind::kOfferMatched, 0, 0, relid});
}

void Channel::OnReleased() {
  MutexLock lock(&mu_);
  relid_ = 0;  // the relid belongs to the next offer now
}

void Channel::OnPnpFailure(NTSTATUS status) {
  if (callbacks_.pnp_failure) callbacks_.pnp_failure(*this, status);
}

// ---- Misc -----------------------------------------------------------------------------------

uint32_t Channel::relid() const {
  MutexLock lock(&mu_);
  return relid_;
}

uint8_t Channel::client_vtl() const {
  MutexLock lock(&mu_);
  return config_.client_vtl;
}

ConnectionState Channel::connection() const {
  MutexLock lock(&mu_);
  return fsm_.connection();
}

Guid Channel::interface_instance() const {
  MutexLock lock(&mu_);
  return IsHost(role_) ? config_.offer.interface_instance : matched_offer_.interface_instance;
}

absl::StatusOr<std::pair<uint64_t, uint64_t>> Channel::MmioSpace() const {
  MutexLock lock(&mu_);
  if (fsm_.connection() != ConnectionState::kOpened &&
      fsm_.connection() != ConnectionState::kOpening) {
    return absl::FailedPreconditionError("MMIO space is known only while opened");
  }
  if (!mmio_.has_value()) return std::pair<uint64_t, uint64_t>{0, 0};
  return *mmio_;
}

absl::StatusOr<uint16_t> Channel::SetInterruptLatency(uint16_t latency_100ns) {
  MutexLock lock(&mu_);
  const bool opened = fsm_.connection() == ConnectionState::kOpened ||
                      fsm_.connection() == ConnectionState::kOpening || in_closed_callback_;
  if (!opened) {
    return absl::FailedPreconditionError(
        "interrupt latency can be set only from Opened through Closed");
  }
  return std::exchange(interrupt_latency_, latency_100ns);
}

}  // namespace kmcl
