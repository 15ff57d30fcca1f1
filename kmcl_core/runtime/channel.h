// kmcl_core/runtime/channel.h: one KMCL channel endpoint (VMBCHANNEL), its packets
// (VMBPACKET) and its deliveries (VMBPACKETCOMPLETION): the idiomatic C++
// form of the KMCL API. kmcl_api.h wraps it in KMCL's C names.
//
// Lifecycle, as in KMCL: Channel::Allocate(partition, role) gives a
// disabled endpoint; configure it with the Set* calls and callbacks; Enable
// offers it (server) or opens a matching offer, now or when one arrives
// (client); Start/Pause move the run state; Disable closes (client) or
// rescinds (server) and blocks until Suspend and Closed have run; destroying
// the Channel is VmbChannelCleanup and is legal only when disabled.
//
//   auto ch = *Channel::Allocate(partition, EndpointRole::kHost);
//   ch->SetTargetInterface(type, instance);
//   ch->SetCallbacks({.process_packet = ...});
//   ch->Enable(); ch->Start();
//
// Inside, the Channel keeps the state machine, its tasks' queues and the
// configuration; the outgoing side is a SendPath (send_path.h) and the
// incoming side a DeliveryPath (delivery_path.h), each with its own lock.
//
// Threading contract:
// - Channels own no threads. Each enabled channel has two serial tasks on
//   executors shared by all channels (executor.h): its control task, on
//   the passive pool, runs the state callbacks (Opened, Started,
//   PostStarted, Suspend, Closed, PnpFailure) and packets deferred to
//   passive level, one at a time, and may block; its I/O task, on the
//   dispatch pool, runs ProcessPacket, ProcessingComplete and completion
//   routines one at a time ("DISPATCH level": they must not block).
//   PostStarted may run concurrently with ProcessPacket. Allocate with
//   ChannelExecutors::Manual to run both on a test's thread.
// - Packet calls (AllocatePacket, Send, Complete, Fail, GetExternalData,
//   SendSynchronous outside Started) may be made from any thread, callbacks
//   included.
// - Enable, Start, Pause, Disable, the setters and destruction must not be
//   called from this channel's callbacks (KMCL forbids it; here they return
//   FAILED_PRECONDITION instead of deadlocking). Pause and Disable block.
// - Enable, Start, Pause and Disable may be called from several threads at
//   once: they take turns, each running to its end before the next starts
//   (a second Disable waits for the first, then finds the channel
//   disabled). A call that would wait for a turn its own thread holds (a
//   task that a waiting call ran nested on a manual executor) fails with
//   FAILED_PRECONDITION instead.
// - No callback runs after Disable returns, nor after destruction.
#ifndef KMCLD_KMCL_CORE_RUNTIME_CHANNEL_H_
#define KMCLD_KMCL_CORE_RUNTIME_CHANNEL_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "kmcl_core/base/guid.h"
#include "kmcl_core/base/mutex.h"
#include "kmcl_core/base/ntstatus.h"
#include "kmcl_core/bus/bus_endpoint.h"
#include "kmcl_core/control/endpoint_role.h"
#include "kmcl_core/control/endpoint_state.h"
#include "kmcl_core/control/vmbus_server.h"
#include "kmcl_core/memory/guest_memory.h"
#include "kmcl_core/ring/ring_buffer.h"
#include "kmcl_core/runtime/channel_config.h"
#include "kmcl_core/runtime/delivery_path.h"
#include "kmcl_core/runtime/executor.h"
#include "kmcl_core/runtime/send_path.h"
#include "kmcl_core/wire/gpa_range.h"
#include "kmcl_core/wire/vmbus_messages.h"

namespace kmcl {

class Channel;
class Partition;
struct RingLink;

// KMCL flag values (vmbuskernelmodeclientlibapi.h); the Init flags and
// limits are in channel_config.h, ProcessPacket's in delivery_path.h.
inline constexpr uint32_t kFormatFlagWaitForCompletion = 0x1;
inline constexpr uint32_t kFormatFlagForceMdlLength = 0x2;
inline constexpr uint32_t kFormatFlagPagedBuffer = 0x4;
inline constexpr uint32_t kFormatFlags = 0x7;

// An outgoing packet object (VMBPACKET). Allocated by the channel, or built
// in caller memory of at least Channel::SizeofPacket() bytes.
class Packet {
 public:
  using CompletionRoutine =
      std::function<void(Packet& packet, NTSTATUS status, std::span<const uint8_t> completion)>;

  Channel& channel() const { return *channel_; }
  void set_pointer(void* p) { pointer_ = p; }
  void* pointer() const { return pointer_; }
  // Runs when the transaction ends (see Channel::Send). Packets from
  // AllocatePacket start with a routine that frees the packet; packets built
  // in caller memory start with none and cannot be sent until one is set.
  void set_completion_routine(CompletionRoutine routine) { routine_ = std::move(routine); }
  bool has_completion_routine() const { return static_cast<bool>(routine_); }
  bool in_flight() const { return in_flight_; }
  bool caller_memory() const { return caller_memory_; }
  // The compatibility layer's opaque per-packet context.
  void* kmcl_context = nullptr;

  static constexpr uint32_t kMagic = 0x544B5056;  // "VPKT"
  uint32_t magic() const { return magic_; }

 private:
  friend class Channel;
  friend class SendPath;
  friend struct PacketTestAccess;  // fake_link_test_util.h
  Packet(Channel* channel, uint8_t* storage, uint32_t capacity, bool caller_memory)
      : channel_(channel), storage_(storage), capacity_(capacity), caller_memory_(caller_memory) {}

  uint32_t magic_ = kMagic;
  Channel* channel_;
  uint8_t* storage_;  // in-band bytes, capacity_ = the channel's max packet size
  uint32_t capacity_;
  bool caller_memory_;
  void* pointer_ = nullptr;
  CompletionRoutine routine_;
  // The current send.
  bool in_flight_ = false;
  uint32_t length_ = 0;
  uint32_t flags_ = 0;
  uint64_t transaction_id_ = 0;
  absl::Time outstanding_since_;  // when it became an outstanding transaction
  std::vector<GpaRange> external_;
};

struct ChannelCallbacks {
  std::function<NTSTATUS(Channel&)> opened;
  std::function<void(Channel&)> closed;
  std::function<void(Channel&)> suspend;
  std::function<void(Channel&)> started;
  std::function<void(Channel&)> post_started;
  std::function<void(Channel&, NTSTATUS)> pnp_failure;
  std::function<void(Channel&, Delivery&, std::span<const uint8_t> buffer, uint32_t flags)>
      process_packet;
  std::function<void(Channel&, uint32_t packets)> processing_complete;
  // Save/restore of the driver's own per-packet state (KMCL's
  // EvtVmbChannelSavePacket / EvtVmbChannelRestorePacket): `save_packet`
  // returns the bytes to keep for an in-flight packet; `restore_packet` gets
  // them back with kmcl_core's own part (`lib`), and must allocate a packet
  // and call Channel::RestorePacket(packet, lib).
  std::function<absl::StatusOr<std::vector<uint8_t>>(Channel&, Packet&)> save_packet;
  std::function<absl::Status(Channel&, std::span<const uint8_t> lib,
                             std::span<const uint8_t> saved)>
      restore_packet;
  // The peer broke the protocol (kmcld's extension; KMCL has no such
  // callback): a corrupt incoming ring, a malformed pipe frame, or a bad
  // read_index in the outgoing ring. `what` says what was wrong. Called
  // once per detection (ChannelStats::corrupt_packets counts the same
  // events), on the channel's I/O task, with none of the channel's locks
  // held. Must not block.
  std::function<void(Channel&, absl::string_view what)> peer_error;
};

// What GetExternalData maps: the guest pages of a GPA-direct packet.
struct ExternalData {
  std::vector<GpaRange> ranges;
  std::span<uint8_t> pages;  // all pages of all ranges, mapped contiguously
  uint64_t byte_count = 0;
  bool read_only = true;
};

// How long this endpoint's transactions took: from the send (with
// kFormatFlagWaitForCompletion) to the peer's completion being read.
// buckets[i] counts latencies in (bound[i-1], bound[i]]; the last bucket
// counts those above every bound. Not cumulative. A transaction restored
// from a saved state counts from its restore (its age before is not saved).
struct LatencyHistogram {
  std::array<uint64_t, kCompletionLatencyBoundsNs.size() + 1> buckets{};
  uint64_t count = 0;   // sum of buckets
  uint64_t sum_ns = 0;  // sum of the latencies
};

// Counters and ring state for diagnostics.
struct ChannelStats {
  uint64_t packets_sent = 0, bytes_sent = 0, packets_received = 0, bytes_received = 0;
  uint64_t completions_sent = 0, completions_received = 0, signals_sent = 0;
  uint64_t sends_queued = 0, ring_full_events = 0, quota_stalls = 0, corrupt_packets = 0;
  LatencyHistogram completion_latency;
};
struct ChannelSnapshot {
  EndpointRole role = EndpointRole::kGuest;
  ConnectionState connection = ConnectionState::kDisabled;
  RunState run = RunState::kPaused;
  uint32_t relid = 0;
  uint64_t offer_sequence = 0;
  std::optional<RingSnapshot> outgoing, incoming;
  ChannelStats stats;
  uint32_t queued_sends = 0;
  uint32_t outstanding_transactions = 0;
  // The oldest outstanding transactions, oldest first, at most
  // kMaxSnapshotTransactions of them (outstanding_transactions counts all).
  std::vector<OutstandingTransaction> outstanding;
  uint32_t delivered_uncompleted = 0;
  uint32_t transaction_quota = 0;
  uint16_t interrupt_latency = 0;
  std::string corruption;
  std::string friendly_name;  // VmbChannelInitSetFriendlyName's, "" if none
};

class Channel final : public BusEndpoint {
 public:
  // VmbChannelAllocate: a disabled endpoint with default settings.
  static absl::StatusOr<std::unique_ptr<Channel>> Allocate(Partition& partition, EndpointRole role);
  // As above, running on `executors` instead of the process-wide pools.
  static absl::StatusOr<std::unique_ptr<Channel>> Allocate(Partition& partition, EndpointRole role,
                                                           ChannelExecutors executors);
  // VmbChannelCleanup. The channel must be disabled (Disable it first).
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  Partition& partition() const { return *partition_; }
  // Moves a disabled channel to another partition (the KMCL server binding
  // of VmbServerChannelInitSetVmbusHandle).
  absl::Status BindPartition(Partition& partition);
  EndpointRole role() const { return role_; }
  static constexpr uint32_t kMagic = 0x4C484356;  // "VCHL"
  uint32_t magic() const { return magic_; }

  // ---- Configuration (only while disabled: else FAILED_PRECONDITION) -----
  // Each setter edits the ChannelConfig (channel_config.h) and keeps the
  // edit only if ChannelConfig::Validate accepts it (else INVALID_ARGUMENT);
  // Enable validates the whole configuration once more.
  absl::Status SetCallbacks(ChannelCallbacks callbacks);
  absl::Status SetFlags(uint32_t flags);  // INVALID_ARGUMENT for unknown bits
  absl::Status SetFriendlyName(std::string name);
  absl::Status SetClientContextSize(uint32_t bytes);
  absl::Status SetMaximumPacketSize(uint32_t bytes);
  // Both 0: no limit (the default); otherwise both must be non-zero.
  absl::Status SetMaximumExternalData(uint32_t bytes, uint32_t chain_length);
  // Client only.
  absl::Status SetRingBufferPageCount(uint32_t incoming, uint32_t outgoing);
  absl::Status SetTargetPnp(const Guid& type, std::optional<Guid> instance, uint8_t vtl = 0);
  // Server only.
  absl::Status SetServerFlags(uint32_t flags);
  // Both 0: no MMIO (the default).
  absl::Status SetMmioMegabytes(uint16_t megabytes, uint16_t optional_megabytes);
  absl::Status SetTargetInterfaceId(const Guid& type, const Guid& instance);
  absl::Status SetTargetVtl(uint8_t vtl);
  absl::Status SetUserDefined(std::span<const uint8_t> bytes);

  // ---- State ----
  absl::Status Enable();
  absl::Status Disable();
  absl::Status Start();
  absl::Status Pause();

  // ---- Packets ----
  uint32_t SizeofPacket() const;
  // Never fails for lack of memory once the channel exists (a free list).
  Packet* AllocatePacket();
  // Builds a packet in caller memory; INVALID_ARGUMENT if `bytes` is too small.
  absl::StatusOr<Packet*> InitializePacket(void* memory, size_t bytes);
  // Frees an allocated packet (or forgets a caller-memory one).
  // FAILED_PRECONDITION while it is in flight.
  absl::Status FreePacket(Packet* packet);

  // VmbPacketSend*: queues `buffer` (and `external` guest ranges, sent as a
  // GPA-direct packet) in order; it is written to the ring once the channel
  // is open and there is room. With kFormatFlagWaitForCompletion the
  // completion routine runs with the peer's completion; without it, once the
  // packet is in the ring. Outstanding sends are cancelled (STATUS_CANCELLED)
  // when the channel closes.
  absl::Status Send(Packet& packet, std::span<const uint8_t> buffer,
                    std::span<const GpaRange> external, uint32_t flags);
  // VmbChannelSendSynchronousRequest. `timeout` nullopt waits forever; zero
  // means "fail with STATUS_BUFFER_OVERFLOW if it does not fit now".
  // Returns the NTSTATUS KMCL documents and fills `completion`.
  NTSTATUS SendSynchronous(std::span<const uint8_t> buffer, std::span<const GpaRange> external,
                           uint32_t flags, std::vector<uint8_t>* completion,
                           std::optional<absl::Duration> timeout);

  // ---- Deliveries ----
  void Complete(Delivery& delivery, std::span<const uint8_t> completion);
  void Fail(Delivery& delivery);
  // Only inline in ProcessPacket; FAILED_PRECONDITION otherwise.
  absl::Status DeferToPassive(Delivery& delivery);
  absl::StatusOr<ExternalData> GetExternalData(Delivery& delivery, bool read_only);
  void SetTransactionQuota(uint32_t quota);
  void SetIncomingProcessingAtPassive(bool passive);

  // ---- Save and restore (channel_save.cc, docs/saved-state.md) ----
  // The endpoint's state as a blob. FAILED_PRECONDITION while running or
  // opening (Pause first). Freezes the send queue until Thaw(), so the rings
  // saved with the partition match the blob. A saved channel that is not
  // thawed has handed its transactions over: disabling it ends them
  // silently (they complete in the restored channel); Thaw() instead
  // resumes this channel as if nothing happened (a failed migration).
  absl::StatusOr<std::string> Save();
  void Thaw();
  // Restores a blob into a disabled channel; Enable then re-attaches it.
  // INVALID_ARGUMENT for a bad blob, FAILED_PRECONDITION for a newer format
  // or a channel in the wrong state; nothing changes on failure.
  absl::Status Restore(const std::string& blob);
  // From restore_packet: gives `packet` the saved state `lib`.
  absl::Status RestorePacket(Packet& packet, std::span<const uint8_t> lib);
  bool restored() const;

  // ---- Misc ----
  void set_pointer(void* p) { pointer_ = p; }
  void* pointer() const { return pointer_; }
  Guid interface_instance() const;
  // Valid once opened: FAILED_PRECONDITION otherwise.
  absl::StatusOr<std::pair<uint64_t, uint64_t>> MmioSpace() const;
  // Valid from Opened through Closed; returns the previous latency.
  absl::StatusOr<uint16_t> SetInterruptLatency(uint16_t latency_100ns);
  ChannelSnapshot Snapshot() const;
  static constexpr size_t kMaxSnapshotTransactions = 64;
  // The VMBus channel id while offered (server) or matched (client), else 0.
  uint32_t relid() const;
  uint8_t client_vtl() const;
  ConnectionState connection() const;
  // The compatibility layer's handle context.
  void* kmcl_context = nullptr;

  // ---- BusEndpoint: called by the Partition under its lock; they only
  // queue work for the channel's tasks (see bus_endpoint.h) ----
  void OnOffered(const OfferHandle& handle) override;
  void OnOpenRequested(const OpenChannel& open) override;
  void OnOpenCompleted(NTSTATUS status) override;
  void OnPeerClosed() override;
  void OnOpenCancelled() override;
  void OnOfferMatched(uint32_t relid, const OfferChannel& offer) override;
  void OnReleased() override;
  // Ring interrupts from the peer endpoint (any thread).
  void NotifyIo() override;

  // A PnP failure of the connection: runs the pnp_failure callback (KMCL's
  // EVT_VMB_CHANNEL_PNP_FAILURE, kmcl_api.h).
  void OnPnpFailure(NTSTATUS status);

 private:
  enum class CommandKind {
    kStart, kPause, kDisable,  // user calls: the caller waits for them
    kOfferMatched,             // client: an offer to open was claimed
    kPeerOpened,               // server: OPENCHANNEL; client: open result
    kPeerClosed,               // server: the guest closed; client: rescind
    kOpenCancelled,            // server: rescinded while opening
    kDeliverPassive,           // a delivery deferred to passive level
    kRestoredOpen,             // a restored, opened channel comes back up
  };
  struct Command {
    CommandKind kind;
    uint64_t ticket = 0;  // non-zero: a user call waits for it
    NTSTATUS status = 0;
    uint32_t relid = 0;
    Delivery* delivery = nullptr;
  };
  Channel(Partition& partition, EndpointRole role, ChannelExecutors executors);
  // A user call's turn (see user_call_owner_), held for its whole run.
  class UserCallTurn;
  // Waits on done_cv_ until `done` holds; with a manual executor, runs its
  // tasks on this thread meanwhile instead.
  void WaitDone(const std::function<bool()>& done) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void KickIo() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WaitControlIdle();
  // The one state check of every setter: disabled and its tasks stopped.
  absl::Status CheckConfigurable() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A setter: checks the state (and, with `only`, the role), applies `edit`
  // to a copy of the configuration and keeps it if it validates.
  absl::Status Configure(std::optional<EndpointRole> only,
                         absl::FunctionRef<void(ChannelConfig&)> edit);
  bool OnOwnThread() const;
  // With the caller's UserCallTurn held.
  absl::Status RunUserCommand(CommandKind kind);
  void Post(Command command) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ControlRun();  // the control task's body: runs the queued commands
  void IoRun();       // the I/O task's body: one pass over the rings
  void Execute(const Actions& actions);
  void RunAction(EndpointAction action);
  // With the caller's UserCallTurn held (StopThreads also from the
  // destructor, once no call can run).
  void StartThreads();
  void StopThreads();
  bool pipe_mode() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Control-thread steps.
  absl::Status AttachRestored();
  // Enable's restore path: true if it re-attached (Enable is done).
  absl::StatusOr<bool> EnableRestored();
  void OpenMatchedOffer(uint32_t relid);
  void CallOpened();
  void ReleaseRings();
  void Disconnect();
  void AbandonClientOpen();

  // I/O (channel_io.cc).
  // `view`: the ring GPADL mapped in DoubleMappedRingPages order.
  absl::Status SetUpRings(std::span<uint8_t> view, uint32_t downstream_offset);
  // Runs callbacks_.peer_error for what the delivery path and the send
  // path found since the last call (on the I/O task, no lock held).
  void ReportPeerErrors();
  DeliveryPath::Hooks DeliveryHooks();
  absl::Status ValidateSend(Packet& packet, std::span<const uint8_t> buffer,
                            std::span<const GpaRange> external, uint32_t flags);

  uint32_t magic_ = kMagic;
  Partition* partition_;  // changes only while disabled (BindPartition)
  const EndpointRole role_;
  void* pointer_ = nullptr;

  // The outgoing side (send_path.h): its lock comes before mu_ (its gate
  // asks the state machine), so nothing calls into send_ under mu_.
  SendPath send_;
  // The incoming side (delivery_path.h): its drain lock comes before the
  // send path's and mu_ (ProcessPacket sends); its bookkeeping lock after
  // mu_ (the control task's waits ask it under mu_).
  DeliveryPath delivery_;
  mutable Mutex mu_ ABSL_ACQUIRED_AFTER(send_.mu_, delivery_.drain_mu_)
      ABSL_ACQUIRED_BEFORE(delivery_.mu_);
  CondVar done_cv_;  // user-call completion, drain progress
  EndpointStateMachine fsm_ ABSL_GUARDED_BY(mu_);
  ChannelCallbacks callbacks_;  // set while disabled, read by the threads
  // What the Init setters configure; changes only while disabled.
  ChannelConfig config_ ABSL_GUARDED_BY(mu_);
  // Identity once offered (server) or matched (client).
  uint32_t relid_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t offer_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  OfferChannel matched_offer_ ABSL_GUARDED_BY(mu_);
  std::optional<OpenChannel> open_ ABSL_GUARDED_BY(mu_);  // server: the guest's open
  bool client_open_sent_ ABSL_GUARDED_BY(mu_) = false;
  NTSTATUS open_status_ ABSL_GUARDED_BY(mu_) = kStatusSuccess;
  std::optional<std::pair<uint64_t, uint64_t>> mmio_ ABSL_GUARDED_BY(mu_);
  uint16_t interrupt_latency_ ABSL_GUARDED_BY(mu_) = 0;
  bool in_closed_callback_ ABSL_GUARDED_BY(mu_) = false;
  // Save/restore (Save freezes send_ until Thaw).
  bool restored_ ABSL_GUARDED_BY(mu_) = false;
  ConnectionState restored_connection_ ABSL_GUARDED_BY(mu_) = ConnectionState::kDisabled;
  RunState restored_run_ ABSL_GUARDED_BY(mu_) = RunState::kPaused;
  Actions restore_actions_ ABSL_GUARDED_BY(mu_);  // for the kRestoredOpen command
  bool in_started_callback_ ABSL_GUARDED_BY(mu_) = false;

  // Tasks and their queues.
  const ChannelExecutors executors_;
  std::unique_ptr<SerialTask> control_task_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<SerialTask> io_task_ ABSL_GUARDED_BY(mu_);
  // The threads running the two tasks' bodies now (none: default id).
  std::atomic<std::thread::id> control_id_{}, io_id_{};
  bool threads_running_ ABSL_GUARDED_BY(mu_) = false;
  // The thread whose Enable, Start, Pause or Disable is running (none:
  // default id). Only that call starts or stops the tasks, so a stop never
  // races another stop or a start.
  std::thread::id user_call_owner_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<Command> commands_ ABSL_GUARDED_BY(mu_);
  uint64_t next_ticket_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t done_ticket_ ABSL_GUARDED_BY(mu_) = 0;
  bool io_work_ ABSL_GUARDED_BY(mu_) = false;

  // The outgoing ring's corruption, as the send path reported it (the
  // incoming ring's is the delivery path's).
  std::string send_corruption_ ABSL_GUARDED_BY(mu_);

  // Packet objects.
  std::vector<std::unique_ptr<uint8_t[]>> packet_memory_ ABSL_GUARDED_BY(mu_);
  std::vector<Packet*> free_packets_ ABSL_GUARDED_BY(mu_);

  // Ring memory (control task; the send path holds the link to the peer).
  std::optional<GpadlLease> ring_lease_;  // server: the guest's ring GPADL
  std::optional<GuestView> ring_view_;    // client: its own ring pages
  std::vector<uint64_t> ring_pfns_;       // client
  uint32_t ring_gpadl_ = 0;               // client
};

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_RUNTIME_CHANNEL_H_
