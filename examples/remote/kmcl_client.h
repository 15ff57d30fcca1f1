// examples/remote/kmcl_client.h: a small client library for tools that drive
// kmcld over its gRPC API (package kmcl.v1), written against the generated
// stubs only.
//
// - KmclClient: one gRPC channel to kmcld ("127.0.0.1:50551" or
//   "unix:/path"), the typed stubs of every kmcl.v1 service, and Call(), which
//   runs a unary method with the client's deadline and turns its grpc::Status
//   into an absl::Status naming the method.
// - PacketStream: a synchronous wrapper around PacketService.Attach, the
//   bidirectional packet stream of one channel endpoint, that keeps the
//   credit books of proto/packet.proto:
//     * send credits: Attached.send_credits is the first allowance, each
//       SendPacket uses one, each SendCredits message ADDS its count. Send()
//       never exceeds the allowance; it reads (and dispatches) responses
//       until credits come back.
//     * delivery credits: Attach.delivery_credits is the daemon's first
//       allowance, each ReceivedPacket uses one. With
//       Options::auto_delivery_credits (the default) the stream hands the
//       used credits back once half of the initial allowance is used up;
//       otherwise call GrantDeliveryCredits() yourself.
//     * payloads arrive rounded up to a multiple of 8 with zero bytes.
//
// Use:
//   auto client = kmcld::remote::KmclClient::Connect("127.0.0.1:50551");
//   auto offer = (*client)->Call(&kmcl::v1::HostChannelService::Stub::OfferChannel,
//                                (*client)->host(), request, "OfferChannel");
//   kmcld::remote::PacketStream stream(&(*client)->packet());
//   PacketStream::Handlers h;
//   h.on_received = [&](const kmcl::v1::ReceivedPacket& p) {
//     stream.Complete(p.delivery_id(), p.payload());   // echo
//   };
//   h.on_send_completion = [&](const kmcl::v1::SendCompletion& c) { ... };
//   stream.Attach(endpoint_ref, h);
//   stream.Send({{.tag = 1, .payload = "hello", .wait_for_completion = true}});
//   while (...) stream.ReadOne();   // blocks for one response, dispatches it
//   stream.Close();                 // WritesDone + drain + Finish
//
// Threading contract: a PacketStream is single-threaded. One thread calls
// Attach, Send, ReadOne, Complete, GrantDeliveryCredits, Flush and Close,
// and the handlers run on that thread, inside ReadOne / Send / Close (a
// handler may call Complete and GrantDeliveryCredits, but not Send, ReadOne
// or Close). There is no hidden thread. The one exception is Cancel(), which
// any thread may call at any time to make a blocked call return (the stream
// then ends CANCELLED). KmclClient and its stubs are thread-safe; separate
// PacketStreams may run on separate threads over one KmclClient.
//
// Writes: Send() writes at once (one SendBatch per call, split only to stay
// within the send credits and a 1 MiB message size). Complete() and
// GrantDeliveryCredits() are coalesced and written before the stream next
// blocks reading, and by Flush() and Close(), so completions issued from the
// handlers of one ReceivedBatch go out as one CompletionBatch.
#ifndef KMCLD_EXAMPLES_REMOTE_KMCL_CLIENT_H_
#define KMCLD_EXAMPLES_REMOTE_KMCL_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/sync_stream.h"
#include "proto/channel.grpc.pb.h"
#include "proto/diagnostics.grpc.pb.h"
#include "proto/event.grpc.pb.h"
#include "proto/gpadl.grpc.pb.h"
#include "proto/packet.grpc.pb.h"
#include "proto/partition.grpc.pb.h"
#include "proto/save_restore.grpc.pb.h"

namespace kmcld::remote {

// grpc::Status -> absl::Status (the codes are the same numbers); the message
// is "<what>: <grpc message>".
absl::Status FromGrpc(const grpc::Status& status, absl::string_view what);

// VMBus pads in-band payloads to 8-byte units (proto/packet.proto, "Payload
// padding"): the size a receiver sees for `n` sent bytes.
constexpr size_t PaddedSize(size_t n) { return (n + 7) & ~size_t{7}; }
// True when `received` is `sent` followed by zero bytes up to PaddedSize.
bool EqualsPadded(absl::string_view sent, absl::string_view received);

// The channel KmclClient uses: no limit on received message size (a
// ReceivedBatch of 1024 large packets exceeds gRPC's 4 MiB default), and a
// connection of its own (one KmclClient = one TCP/UDS connection).
std::shared_ptr<grpc::Channel> CreateKmclChannel(const std::string& target);

class KmclClient {
 public:
  // Dials `target` and waits up to `connect_timeout` for the connection;
  // UNAVAILABLE naming the target if nothing answers.
  static absl::StatusOr<std::unique_ptr<KmclClient>> Connect(
      const std::string& target, absl::Duration connect_timeout = absl::Seconds(10));

  explicit KmclClient(std::shared_ptr<grpc::Channel> channel);

  // Deadline of every Call() (default 30 s).
  void set_call_timeout(absl::Duration timeout) { call_timeout_ = timeout; }
  absl::Duration call_timeout() const { return call_timeout_; }

  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  kmcl::v1::PartitionService::Stub& partitions() { return *partitions_; }
  kmcl::v1::HostChannelService::Stub& host() { return *host_; }
  kmcl::v1::GuestChannelService::Stub& guest() { return *guest_; }
  kmcl::v1::GpadlService::Stub& gpadl() { return *gpadl_; }
  kmcl::v1::PacketService::Stub& packet() { return *packet_; }
  kmcl::v1::EventService::Stub& events() { return *events_; }
  kmcl::v1::SaveRestoreService::Stub& save_restore() { return *save_restore_; }
  kmcl::v1::DiagnosticsService::Stub& diagnostics() { return *diagnostics_; }

  // Runs a unary method of a stub with the call deadline:
  //   client.Call(&kmcl::v1::GpadlService::Stub::MapGpadl, client.gpadl(), req, "MapGpadl")
  template <typename Stub, typename Request, typename Response>
  absl::StatusOr<Response> Call(grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                                             Response*),
                                Stub& stub, const Request& request, absl::string_view name) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + call_timeout_));
    Response response;
    grpc::Status status = (stub.*method)(&context, request, &response);
    if (!status.ok()) return FromGrpc(status, name);
    return response;
  }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  absl::Duration call_timeout_ = absl::Seconds(30);
  std::unique_ptr<kmcl::v1::PartitionService::Stub> partitions_;
  std::unique_ptr<kmcl::v1::HostChannelService::Stub> host_;
  std::unique_ptr<kmcl::v1::GuestChannelService::Stub> guest_;
  std::unique_ptr<kmcl::v1::GpadlService::Stub> gpadl_;
  std::unique_ptr<kmcl::v1::PacketService::Stub> packet_;
  std::unique_ptr<kmcl::v1::EventService::Stub> events_;
  std::unique_ptr<kmcl::v1::SaveRestoreService::Stub> save_restore_;
  std::unique_ptr<kmcl::v1::DiagnosticsService::Stub> diagnostics_;
};

// One packet to send: SendPacket without external data.
struct OutgoingPacket {
  uint64_t tag = 0;
  std::string payload;
  bool wait_for_completion = false;
};

class PacketStream {
 public:
  struct Handlers {
    // One call per delivered packet, in order. The tool must complete every
    // delivery (Complete), whether or not completion_requested is set.
    std::function<void(const kmcl::v1::ReceivedPacket&)> on_received;
    // One call per completion of the tool's own sends.
    std::function<void(const kmcl::v1::SendCompletion&)> on_send_completion;
    // Endpoint state changes (OPENED, SUSPEND, RESCINDED, ...).
    std::function<void(const kmcl::v1::EndpointEvent&)> on_event;
  };
  struct Options {
    uint32_t delivery_credits = 64;  // Attach.delivery_credits (0 = daemon's 64)
    uint32_t max_batch = 64;         // Attach.max_batch (0 = 64, at most 1024)
    bool auto_delivery_credits = true;
    // Deadline of the whole stream (ClientContext deadline); infinite if not set.
    absl::Time deadline = absl::InfiniteFuture();
  };

  explicit PacketStream(kmcl::v1::PacketService::Stub* stub);
  // Cancels and reaps a stream that was not closed.
  ~PacketStream();
  PacketStream(const PacketStream&) = delete;
  PacketStream& operator=(const PacketStream&) = delete;

  // Opens the stream, sends Attach and waits for Attached. The daemon's
  // error (NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, ...) is returned
  // as is. Handlers may be empty; an empty on_received is a protocol error
  // as soon as a packet arrives (the delivery could never be completed).
  absl::Status Attach(const kmcl::v1::EndpointRef& endpoint, Handlers handlers,
                      Options options);
  absl::Status Attach(const kmcl::v1::EndpointRef& endpoint, Handlers handlers) {
    return Attach(endpoint, std::move(handlers), Options());
  }

  // Sends `packets` in order, without exceeding the send credits: when they
  // run out it reads and dispatches responses until SendCredits arrive, and
  // sends the rest. Payloads above max_packet_size are INVALID_ARGUMENT
  // before anything is written.
  absl::Status Send(std::span<const OutgoingPacket> packets);
  absl::Status Send(const std::vector<OutgoingPacket>& packets) {
    return Send(std::span<const OutgoingPacket>(packets));
  }

  // Queues a completion of delivery `delivery_id` (see "Writes" above).
  void Complete(uint64_t delivery_id, std::string payload);
  // Queues DeliveryCredits(n).
  void GrantDeliveryCredits(uint32_t n);
  // Writes what Complete / GrantDeliveryCredits queued.
  absl::Status Flush();

  // Flushes, then blocks for the next response and dispatches it to the
  // handlers. FAILED_PRECONDITION "stream ended" once the daemon finished
  // the stream OK (the endpoint was freed); the daemon's status if it ended
  // with an error.
  absl::Status ReadOne();

  // Flushes, half-closes (WritesDone: a clean detach), drains the remaining
  // responses (send completions and events are still dispatched; packets
  // delivered after the half-close are left to the daemon, which completes
  // them with an empty payload) and returns the stream's final status.
  absl::Status Close();

  // Thread-safe: makes a blocked call on another thread return.
  void Cancel();

  bool attached() const { return attached_; }
  bool finished() const { return finished_; }
  const kmcl::v1::Attached& attached_info() const { return attached_info_; }
  uint32_t max_packet_size() const { return attached_info_.max_packet_size(); }
  // Sends the tool may still make.
  uint64_t send_credits() const { return send_credits_; }
  // Deliveries received and not yet completed by Complete().
  uint64_t uncompleted_deliveries() const { return uncompleted_; }

  struct Counters {
    uint64_t messages_written = 0;
    uint64_t messages_read = 0;
    uint64_t packets_sent = 0;
    uint64_t packets_received = 0;
    uint64_t completions_sent = 0;
    uint64_t send_completions = 0;
    uint64_t events = 0;
    uint64_t credit_waits = 0;  // times Send() had to read for credits
  };
  const Counters& counters() const { return counters_; }

 private:
  absl::Status Write(const kmcl::v1::AttachRequest& request, absl::string_view what);
  absl::Status Dispatch(const kmcl::v1::AttachResponse& response, bool closing);
  // Reads to the end and finishes the call; returns the final status.
  absl::Status FinishStream();
  absl::Status Ended();  // the status to report after the stream ended

  kmcl::v1::PacketService::Stub* stub_;
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReaderWriter<kmcl::v1::AttachRequest, kmcl::v1::AttachResponse>>
      stream_;
  Handlers handlers_;
  Options options_;
  kmcl::v1::Attached attached_info_;
  bool attached_ = false;
  bool writes_done_ = false;
  bool finished_ = false;
  absl::Status final_status_;
  uint64_t send_credits_ = 0;
  uint64_t uncompleted_ = 0;
  uint64_t delivery_credits_used_ = 0;  // since the last grant (auto mode)
  kmcl::v1::AttachRequest pending_completions_;
  size_t pending_completion_bytes_ = 0;
  uint64_t pending_credit_grant_ = 0;
  Counters counters_;
};

}  // namespace kmcld::remote

#endif  // KMCLD_EXAMPLES_REMOTE_KMCL_CLIENT_H_
