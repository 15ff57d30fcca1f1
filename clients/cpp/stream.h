// clients/cpp/stream.h: AttachedStream, one channel endpoint's packet
// traffic (kmcl.v1 PacketService.Attach) as a tool wants it. Part of the
// kmcl C++ client library (see clients/cpp/kmcl.h).
//
//   auto stream = AttachedStream::Attach(client, channel.endpoint(), {});
//   (*stream)->Send({.payload = "ping"}, [](absl::StatusOr<SendResult> r) {...});
//   auto done = (*stream)->Send({.payload = "ping"});   // std::future
//   auto d = (*stream)->Receive();                       // blocking receive
//   (*stream)->Complete(d->id, "pong");
//
// What it does for the caller:
// - Credits: sends wait in the stream until the daemon's send credits allow
//   them, so a tool never overruns kmcld (no RESOURCE_EXHAUSTED); delivery
//   credits are handed back as the tool takes deliveries, so kmcld never
//   sends more than the tool has room for (StreamOptions::delivery_credits).
// - Batching: sends, completions and credits queued while a write is in
//   flight go out together in the next message (at most 1 MiB, 1024 items).
// - Reconnect: if the stream breaks (connection dropped, cancelled), it
//   re-attaches within StreamOptions::reconnect_window (keep it below kmcld's
//   --attach_linger_ms). kmcld then sends the deliveries the tool had not
//   completed again with the same ids: the stream drops those it already
//   handed to the tool, re-sends completions kmcld did not get, and passes
//   the rest on once. Completions of sends come back under their tags
//   (recovered_completions), each once: the stream attaches with completion
//   acknowledgement (packet.proto), so kmcld keeps a completion until the
//   stream has seen it, even one lost inside a write when the connection
//   broke, and the stream drops ids it has seen. Sends kmcld never received
//   (per its send window accounting) are sent again. Limits:
//   docs/kmclctl.md, "Library".
// - Bad input fails locally with INVALID_ARGUMENT / NOT_FOUND (payload above
//   max_packet_size, completing an unknown delivery) instead of ending the
//   stream as kmcld would.
//
// Threading: every method is thread-safe. Callbacks (send results,
// on_delivery, on_event, on_reconnect) run one at a time on the stream's own
// thread, never on gRPC's; they may call Send, Complete and Fail, but not
// Close or the destructor. The stream never blocks a gRPC callback thread.
#ifndef KMCLD_CLIENTS_CPP_STREAM_H_
#define KMCLD_CLIENTS_CPP_STREAM_H_

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "clients/cpp/client.h"

namespace kmcl::client {

class AttachedStream;

struct OutgoingPacket {
  std::string payload;
  // A transaction: the result carries the peer's completion payload.
  // Without it the result says the packet entered the ring.
  bool wait_for_completion = true;
};

struct SendResult {
  v1::NtStatus status;   // STATUS_SUCCESS (code 0), STATUS_CANCELLED, ...
  std::string payload;   // the peer's completion bytes, padded to 8
};

// One packet delivered to this endpoint. Complete (or Fail) every one.
struct Delivery {
  uint64_t id = 0;
  std::string payload;  // as delivered: a multiple of 8 bytes
  bool completion_requested = false;
  std::vector<v1::GpaRange> external_ranges;
};

struct ReconnectInfo {
  uint64_t attempt = 0;          // 1 for the first re-attach
  uint32_t redelivered = 0;      // Attached.redelivered
  uint32_t recovered_completions = 0;
  uint64_t resent = 0;           // sends kmcld never received, sent again
  absl::Status cause;            // why the previous stream ended
};

struct StreamOptions {
  // Deliveries kmcld may send before the tool takes them (Receive or
  // on_delivery); also Attach.delivery_credits.
  uint32_t delivery_credits = 64;
  uint32_t max_batch = 64;  // Attach.max_batch
  // Callback receive: each delivery is passed here (on the stream's thread)
  // instead of being queued for Receive(), with the stream to complete it
  // on (the callback may run before Attach() has returned).
  std::function<void(AttachedStream& stream, Delivery delivery)> on_delivery;
  std::function<void(const v1::EndpointEvent&)> on_event;
  std::function<void(const ReconnectInfo&)> on_reconnect;
  bool reconnect = true;
  absl::Duration reconnect_window = absl::Seconds(20);
  absl::Duration reconnect_backoff = absl::Milliseconds(20);  // doubles to 1 s
  // Completions kept for re-sending after a reconnect (the newest N).
  size_t completion_replay = 1024;
};

class AttachedStream {
 public:
  using SendCallback = std::function<void(absl::StatusOr<SendResult>)>;

  struct Stats {
    uint64_t sends = 0, send_results = 0, messages_written = 0, messages_read = 0;
    uint64_t deliveries = 0, duplicates_dropped = 0, completions_replayed = 0;
    uint64_t reconnects = 0, resent = 0, unknown_completions = 0;
    // Send completions kmcld sent again after a reconnect although this
    // stream had seen them (its acknowledgement was lost): dropped.
    uint64_t duplicate_completions = 0;
    // Messages written that only acknowledged completions (nothing else
    // was ready to carry the acknowledgement); part of messages_written.
    uint64_t acks_alone = 0;
    uint64_t credit_stalls = 0;  // times sends waited for credits
  };

  // Attaches (waiting up to the client's call_timeout for Attached). The
  // daemon's refusal (NOT_FOUND, ALREADY_EXISTS, ...) is returned as is.
  static absl::StatusOr<std::unique_ptr<AttachedStream>> Attach(std::shared_ptr<Client> client,
                                                                const v1::EndpointRef& endpoint,
                                                                StreamOptions options = {});
  ~AttachedStream();  // Close(5 s), errors ignored
  AttachedStream(const AttachedStream&) = delete;
  AttachedStream& operator=(const AttachedStream&) = delete;

  // Queues a send; `done` runs once with its result, or with an error if
  // the stream ends first (CANCELLED) or the payload is too large.
  void Send(OutgoingPacket packet, SendCallback done);
  std::future<absl::StatusOr<SendResult>> Send(OutgoingPacket packet);

  // Blocking receive (not with on_delivery): the next delivery, or
  // DEADLINE_EXCEEDED, or the stream's final status once it ended.
  absl::StatusOr<Delivery> Receive(absl::Time deadline = absl::InfiniteFuture());

  // Completes a delivery this stream handed out (NOT_FOUND otherwise).
  absl::Status Complete(uint64_t delivery_id, std::string payload = "");
  // VmbChannelPacketFail (see proto/packet.proto).
  absl::Status Fail(uint64_t delivery_id);

  // Waits up to `drain` for outstanding sends, writes pending completions,
  // then detaches cleanly (kmcld completes still-held deliveries empty).
  // Sends still outstanding get CANCELLED. Returns the stream's status.
  absl::Status Close(absl::Duration drain = absl::Seconds(10));

  v1::Attached attached() const;  // the latest Attached
  uint32_t max_packet_size() const;
  Stats stats() const;

  // Cancels the current gRPC call as if the connection dropped (the daemon
  // sees an unclean end and lingers); the stream then re-attaches.
  void BreakConnectionForTesting();

  class Core;  // the implementation (stream.cc)

 private:
  explicit AttachedStream(std::shared_ptr<Core> core);
  std::shared_ptr<Core> core_;
};

}  // namespace kmcl::client

#endif  // KMCLD_CLIENTS_CPP_STREAM_H_
