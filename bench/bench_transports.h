// bench/bench_transports.h: the two transports kmcld_bench measures, with
// one interface for its measurement loops, and the in-process echo server
// of the baseline.
//
// - EchoServiceImpl: kmcl.bench.EchoService (bench/echo.proto) as a gRPC
//   callback service that sends every message straight back. Register it
//   with a grpc::ServerBuilder.
// - EchoTransport: the client of that echo, one Echo stream.
// - KmclGuestTransport: the guest tool, one AttachedStream of the C++ client
//   library (clients/cpp) attached to a channel's guest endpoint, sending
//   wait_for_completion packets and checking that each completion carries
//   the bytes sent.
// - KmclHostEcho: the host tool, an AttachedStream whose delivery callback
//   completes every delivery with the delivery's own bytes until the guest's
//   stop packet (KmclGuestTransport::Stop) arrives.
//
// The transport interface (EchoTransport, KmclGuestTransport): Send(n)
// writes n packets (one message when n <= --batch), Read() blocks for one
// message and accounts what it carried, completed() counts verified echoes:
//   KmclHostEcho host(client);  host.Start(host_endpoint, deadline);
//   KmclGuestTransport guest(client);
//   guest.Start(guest_endpoint, payload, batch, deadline);
//   guest.Send(1);  while (guest.completed() < 1) guest.Read();
//   guest.Stop();  host.Join();
//
// Threading contract: EchoServiceImpl is thread-safe (gRPC calls it from its
// own threads; each stream's reactor serializes itself). EchoTransport and
// KmclGuestTransport are driven by one thread (KmclGuestTransport's results
// arrive on its stream's own thread, under its mutex). KmclHostEcho's
// Start, Join, Cancel and destructor belong to one owner thread; its
// stream's thread completes the deliveries.
#ifndef KMCLD_BENCH_BENCH_TRANSPORTS_H_
#define KMCLD_BENCH_BENCH_TRANSPORTS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "bench/echo.grpc.pb.h"
#include "clients/cpp/kmcl.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/sync_stream.h"

namespace kmcld::bench {

// The echo baseline: an in-process callback server.
class EchoServiceImpl final : public ::kmcl::bench::EchoService::CallbackService {
  class Reactor;

 public:
  grpc::ServerBidiReactor<::kmcl::bench::EchoMessage, ::kmcl::bench::EchoMessage>* Echo(
      grpc::CallbackServerContext*) override;
};

class EchoTransport {
 public:
  absl::Status Start(::kmcl::bench::EchoService::Stub& stub, const std::string& payload,
                     absl::Time deadline);
  absl::Status Send(uint32_t n);
  absl::Status Read();
  uint64_t completed() const { return completed_; }
  absl::Status Close();

 private:
  absl::Status Broken(const char* what);
  grpc::ClientContext context_;
  std::unique_ptr<
      grpc::ClientReaderWriter<::kmcl::bench::EchoMessage, ::kmcl::bench::EchoMessage>>
      stream_;
  ::kmcl::bench::EchoMessage in_;
  std::string payload_;
  uint64_t completed_ = 0;
};

// The host tool: an AttachedStream whose delivery callback completes every
// delivery with its own bytes, until the guest's stop packet arrives.
class KmclHostEcho {
 public:
  explicit KmclHostEcho(std::shared_ptr<::kmcl::client::Client> client)
      : client_(std::move(client)) {}

  absl::Status Start(const ::kmcl::v1::EndpointRef& endpoint, absl::Time deadline);
  // Waits (until the Start deadline) for the stop packet, then detaches.
  absl::Status Join();
  // Detaches at once (after a failure elsewhere).
  void Cancel();
  ::kmcl::client::AttachedStream::Stats stats() const;

 private:
  const std::shared_ptr<::kmcl::client::Client> client_;
  std::unique_ptr<::kmcl::client::AttachedStream> stream_;
  absl::Time deadline_;
  absl::Notification stopped_;
};

// The guest tool: sends wait_for_completion packets through an
// AttachedStream and checks that each completion carries the bytes sent.
// Send and Read belong to one thread; the results arrive on the stream's.
class KmclGuestTransport {
 public:
  explicit KmclGuestTransport(std::shared_ptr<::kmcl::client::Client> client)
      : client_(std::move(client)) {}

  absl::Status Start(const ::kmcl::v1::EndpointRef& endpoint, const std::string& payload,
                     uint32_t batch, absl::Time deadline);
  absl::Status Send(uint32_t n);
  // Blocks until at least one more send has completed since the last Read
  // (or a check failed, or the deadline passed).
  absl::Status Read();
  uint64_t completed() const;
  // Sends the stop packet, waits for its completion, detaches.
  absl::Status Stop();
  void Cancel();
  ::kmcl::client::AttachedStream::Stats stats() const;

 private:
  void OnResult(absl::StatusOr<::kmcl::client::SendResult> r);

  const std::shared_ptr<::kmcl::client::Client> client_;
  std::unique_ptr<::kmcl::client::AttachedStream> stream_;
  std::string payload_;
  absl::Time deadline_;
  uint64_t read_through_ = 0;  // the Read thread's
  mutable absl::Mutex mu_;
  uint64_t completed_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status problem_ ABSL_GUARDED_BY(mu_);
};

// A channel for the bench: offered by `host` (started) and opened by `guest`
// with the given maximum packet size and ring pages (0: kmcld's default).
absl::StatusOr<::kmcl::v1::ChannelRef> OfferAndOpen(::kmcl::client::Client& host,
                                                    ::kmcl::client::Client& guest,
                                                    const std::string& partition,
                                                    uint32_t max_packet, uint32_t ring_pages,
                                                    const std::string& name,
                                                    uint32_t mmio_megabytes);
// Closes the guest endpoint, rescinds and frees the host's; the first error.
absl::Status CloseRescindCleanup(::kmcl::client::Client& host, ::kmcl::client::Client& guest,
                                 const ::kmcl::v1::ChannelRef& ref);
::kmcl::v1::EndpointRef Endpoint(const ::kmcl::v1::ChannelRef& ref, ::kmcl::v1::EndpointRole role);

// Whether `got` is `sent` padded with zeros to a multiple of 8 bytes (how
// VMBus carries payloads).
bool EqualsPadded(const std::string& sent, const std::string& got);
// `n` rounded up to a multiple of 8.
uint32_t PaddedSize(size_t n);

}  // namespace kmcld::bench

#endif  // KMCLD_BENCH_BENCH_TRANSPORTS_H_
