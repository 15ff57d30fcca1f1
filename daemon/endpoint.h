// daemon/endpoint.h: one KMCL channel endpoint owned by kmcld on behalf of a
// remote tool, and the adapter between its callbacks and an Attach stream.
//
// An Endpoint owns its kmcl::Channel and installs the channel's callbacks.
// The callbacks only queue: deliveries (EvtVmbChannelProcessPacket) wait in
// `held_` until the tool completes them, send completions wait in a queue,
// state callbacks go to the daemon's EventLog and to the stream. An
// attached stream (EndpointStream, implemented by the Attach reactor) is
// woken when there is something to write and pulls one message at a time
// with NextMessage, so a stream has at most one write outstanding.
//
// The endpoint outlives its streams: see packet.proto's "Detach and
// re-attach" for what a clean and an unclean detach do, and the linger.
//
// Memory bound per endpoint (docs/api.md): at most `delivery_window`
// deliveries (each at most the channel's max packet size) and at most
// `send_window` sends (each a pooled packet of max packet size) are held,
// plus at most as many send completions (one per held send; on an
// acknowledging stream sends and kept completions share the window),
// whatever the tool does.
//
// Ownership: an Endpoint shares ownership of its kmcl::Partition, so that
// whoever holds the last reference (a call still running on the blocking
// pool, a stream reactor, a test) may drop it after DeletePartition: the
// channel's teardown (DetachHost, CancelConnect) always finds its partition.
// Destroying an endpoint disables its channel first, so a callback that
// the teardown runs still finds the channel (Ref, relid).
//
// Threading: thread-safe. Callbacks come from the channel's tasks (shared executor threads) and never
// block. Lock order: a stream's own lock before Endpoint::mu_; the endpoint
// never calls into a stream or the channel while holding mu_. Blocking calls
// (Shutdown, and the channel's Pause/Disable through channel()) must not run
// on gRPC's threads.
#ifndef KMCLD_DAEMON_ENDPOINT_H_
#define KMCLD_DAEMON_ENDPOINT_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "daemon/event_log.h"
#include "daemon/log.h"
#include "daemon/timer.h"
#include "kmcl_core/base/mutex.h"
#include "kmcl_core/bus/partition.h"
#include "kmcl_core/runtime/channel.h"
#include "proto/channel.pb.h"
#include "proto/packet.pb.h"

namespace kmcld {

struct EndpointLimits {
  uint32_t send_window = 256;       // sends the daemon holds per endpoint
  uint32_t delivery_window = 1024;  // delivered-but-uncompleted packets
  absl::Duration linger = absl::Seconds(30);
};

// The Attach reactor's side, as the endpoint sees it.
class EndpointStream {
 public:
  virtual ~EndpointStream() = default;
  // Something new may be ready for NextMessage. Never blocks.
  virtual void Wake() = 0;
  // The endpoint is being freed: finish the stream with `why` (OK when the
  // channel or partition goes; UNAVAILABLE when kmcld shuts down). Never
  // blocks.
  virtual void EndpointGone(const absl::Status& why) = 0;
  // A line for diagnostics (writes started and done, ...).
  virtual std::string DebugState() { return ""; }
};

class Endpoint {
 public:
  using Role = kmcl::v1::EndpointRole;

  // Allocates the channel (disabled) with the adapter's callbacks installed.
  // `partition_id` names the partition in events. `peer_log` limits the
  // events a peer's errors cause (shared by the partition's endpoints:
  // PartitionEntry::peer_log); null: a limiter of this endpoint's own.
  //
  // Errors from the peer (a corrupt ring, a malformed pipe frame: the
  // channel's peer_error callback) become EVENT_KIND_RING_CORRUPT events
  // whose detail says what was wrong and the channel's interface type; the
  // event log writes them at warning level. At most
  // kPeerEventsPerMinute a minute per limiter; the next admitted one says
  // how many were left out. The channel counts every one
  // (ChannelStats::corrupt_packets).
  static constexpr int kPeerEventsPerMinute = 10;
  // `partition` is kept alive until the endpoint is destroyed.
  static absl::StatusOr<std::shared_ptr<Endpoint>> Create(std::shared_ptr<kmcl::Partition> partition,
                                                          std::string partition_id, Role role,
                                                          EndpointLimits limits, EventLog& log,
                                                          Timer& timer,
                                                          std::shared_ptr<log::Limiter> peer_log = nullptr);
  // Disables the channel (blocking, if it is still enabled: rather done
  // by FreeEndpoint on the blocking pool), then destroys it.
  ~Endpoint();
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  kmcl::Channel& channel() { return *channel_; }
  Role role() const { return role_; }
  const std::string& partition_id() const { return partition_id_; }
  // The channel's ref (relid and offer sequence once offered or matched).
  // The relid stays known after the channel forgets it (rescind, close),
  // until the endpoint is freed.
  kmcl::v1::ChannelRef Ref() const;
  uint32_t relid() const;
  void set_offer_sequence(uint64_t sequence);

  // What OfferChannel asked for and the offer it made (host endpoints), for
  // describing the channel after the control plane has forgotten it.
  void set_offer(kmcl::v1::ServerChannelSettings settings, kmcl::v1::Offer offer);
  kmcl::v1::ServerChannelSettings settings() const;
  std::optional<kmcl::v1::Offer> offer() const;

  // KMCL's transaction quota as the tool asked for it (0 = none); the
  // channel's real quota is also capped by the delivery window.
  void SetQuota(uint32_t quota);
  // The channel's maximum packet size, as configured (Attached reports it).
  void set_max_packet_size(uint32_t bytes);
  uint32_t max_packet_size() const;

  // The connection dimension's RESCINDED, which the channel has no state
  // for: the host rescinded (MarkRescinded), or the guest saw the rescind
  // (its Closed callback ran although the tool never asked to close).
  bool rescinded() const;
  void MarkRescinded();
  // The tool asked to close (CloseChannel): the next Closed is not a rescind.
  void ExpectClose();
  bool attached() const;
  // Guest endpoints: waits until the endpoint is opened and running (its
  // Started callback ran; guests start active), a PnP failure or a rescind
  // ends the open, or `deadline`. OK when running; the failure otherwise.
  absl::Status WaitOpened(absl::Time deadline);

  // ---- The stream side (the Attach reactor) ----
  // ALREADY_EXISTS if another stream is attached.
  // `first` is the stream's first message (its Attach, and the tool's
  // completions_acked_through); INVALID_ARGUMENT for an acknowledgement of a
  // completion never written.
  absl::StatusOr<kmcl::v1::Attached> Attach(std::shared_ptr<EndpointStream> stream,
                                            const kmcl::v1::AttachRequest& first);
  // `clean`: the tool half-closed; else the linger starts.
  void Detach(const EndpointStream* stream, bool clean);
  // One request after Attach. An error ends the stream with that status.
  absl::Status Handle(const EndpointStream* stream, const kmcl::v1::AttachRequest& request);
  // The next message for `stream`, if any.
  bool NextMessage(const EndpointStream* stream, kmcl::v1::AttachResponse* out);

  // Ends the stream with `why` (OK: the endpoint goes; an error tells the
  // tool why, e.g. UNAVAILABLE at shutdown) and completes every held
  // delivery with an empty payload, so that Disable does not wait on a
  // tool. Before freeing: from then on a delivery is completed as it
  // arrives (the peer may still send until the Disable turns incoming off),
  // and no stream takes it.
  void EndStreamAndRelease(const absl::Status& why = absl::OkStatus());

  // Appends an event of this endpoint to the log (and the stream).
  void Event(kmcl::v1::EventKind kind, kmcl::NTSTATUS status, std::string detail = "");

  // Keeps `held` (a charge against its creator's per-identity limits)
  // until the endpoint is freed.
  void KeepUntilFreed(std::shared_ptr<void> held);

  // Counters for diagnostics.
  uint32_t held_deliveries() const;
  std::string StreamState() const;

 private:
  Endpoint(std::string partition_id, Role role, EndpointLimits limits, EventLog& log,
           Timer& timer);
  void InstallCallbacks();
  // The channel's peer_error: an EVENT_KIND_RING_CORRUPT event, rate-limited.
  void OnPeerError(absl::string_view what);
  absl::StatusOr<std::vector<uint8_t>> SavePacket(kmcl::Packet& packet);
  absl::Status RestorePacket(std::span<const uint8_t> lib, std::span<const uint8_t> saved);
  void SetSendRoutine(kmcl::Packet& packet, uint64_t tag, uint64_t epoch);
  void OnDelivery(kmcl::Delivery& delivery);
  void OnSendDone(uint64_t tag, uint64_t epoch, kmcl::NTSTATUS status,
                  std::span<const uint8_t> completion);
  absl::Status HandleSends(const kmcl::v1::SendBatch& batch);
  absl::Status HandleCompletions(const kmcl::v1::CompletionBatch& batch);
  absl::Status HandleFail(uint64_t delivery_id);
  // Drops the unacknowledged completions up to `through` and, on an
  // acknowledging stream, returns their send credits.
  absl::Status HandleAck(uint64_t through) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::vector<kmcl::GpaRange>> ResolveExternal(const kmcl::v1::ExternalData& ext);
  // Completes every held delivery with an empty payload and forgets the
  // sends so far.
  void ReleaseHeld();
  void WakeStream();
  void LingerExpired();

  const std::string partition_id_;
  const Role role_;
  const EndpointLimits limits_;
  EventLog& log_;
  Timer& timer_;
  std::shared_ptr<log::Limiter> peer_log_;
  // Declared before channel_, so that the channel goes first.
  std::shared_ptr<kmcl::Partition> partition_;
  std::unique_ptr<kmcl::Channel> channel_;

  mutable kmcl::Mutex mu_;
  kmcl::CondVar state_cv_;
  uint64_t offer_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  mutable uint32_t relid_ ABSL_GUARDED_BY(mu_) = 0;
  kmcl::v1::ServerChannelSettings settings_ ABSL_GUARDED_BY(mu_);
  std::optional<kmcl::v1::Offer> offer_ ABSL_GUARDED_BY(mu_);
  uint32_t max_packet_size_ ABSL_GUARDED_BY(mu_) = kmcl::kDefaultMaxPacketSize;
  bool opened_ ABSL_GUARDED_BY(mu_) = false;
  bool rescinded_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  // EndStreamAndRelease ran: deliveries are completed as they arrive.
  bool released_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<kmcl::NTSTATUS> open_failure_ ABSL_GUARDED_BY(mu_);

  std::shared_ptr<EndpointStream> stream_ ABSL_GUARDED_BY(mu_);
  uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;            // the current (or last) stream
  uint64_t forgotten_through_ ABSL_GUARDED_BY(mu_) = 0;  // sends of these epochs are dropped
  uint64_t linger_timer_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t max_batch_ ABSL_GUARDED_BY(mu_) = 64;
  int next_kind_ ABSL_GUARDED_BY(mu_) = 0;  // round robin in NextMessage

  // Deliveries: held until completed, by id; `undelivered_` are not yet
  // written to the current stream.
  uint64_t next_delivery_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<uint64_t, kmcl::Delivery*> held_ ABSL_GUARDED_BY(mu_);
  std::deque<uint64_t> undelivered_ ABSL_GUARDED_BY(mu_);
  uint64_t delivery_credits_ ABSL_GUARDED_BY(mu_) = 0;

  // Sends: every send not yet completed counts against the window.
  uint32_t held_sends_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t send_credits_ ABSL_GUARDED_BY(mu_) = 0;  // the current stream's allowance
  uint32_t credits_to_return_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<kmcl::v1::SendCompletion> completions_ ABSL_GUARDED_BY(mu_);
  // Completion acknowledgement (packet.proto): whether the current stream
  // acknowledges; completions written to it and not yet acknowledged, in id
  // order (they count against the send window in that mode); ids.
  bool ack_mode_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<kmcl::v1::SendCompletion> unacked_ ABSL_GUARDED_BY(mu_);
  uint64_t next_completion_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t last_written_completion_id_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<kmcl::v1::EndpointEvent> events_ ABSL_GUARDED_BY(mu_);
  // The tool's tag of every packet in flight (saved with the channel).
  std::map<const kmcl::Packet*, uint64_t> tags_ ABSL_GUARDED_BY(mu_);

  std::weak_ptr<Endpoint> self_;
  std::vector<std::shared_ptr<void>> kept_ ABSL_GUARDED_BY(mu_);  // KeepUntilFreed
};

}  // namespace kmcld

#endif  // KMCLD_DAEMON_ENDPOINT_H_
