// bench/bench_transports.h: the two transports kmcld_bench measures, with
// one interface for its measurement loops, and the in-process echo server
// of the baseline.
//
// - EchoServiceImpl: kmcl.bench.EchoService (bench/echo.proto) as a gRPC
//   callback service that sends every message straight back. Register it
//   with a grpc::ServerBuilder.
// - EchoTransport: the client of that echo, one Echo stream.
// - KmclGuestTransport: the guest tool, one PacketStream attached to a
//   channel's guest endpoint, sending wait_for_completion packets and
//   checking that each completion carries the bytes sent.
// - KmclHostEcho: the host tool, a thread that completes every delivery on
//   the host endpoint with the delivery's own bytes until the guest's stop
//   packet (KmclGuestTransport::Stop) arrives.
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
// KmclGuestTransport are single-threaded: one thread makes every call,
// except Cancel(), which any thread may call. KmclHostEcho's Start, Join,
// Cancel and destructor belong to one owner thread; Start hands its stream
// to a thread of its own until Join; counters() only after Join.
#ifndef KMCLD_BENCH_BENCH_TRANSPORTS_H_
#define KMCLD_BENCH_BENCH_TRANSPORTS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "bench/echo.grpc.pb.h"
#include "examples/remote/kmcl_client.h"
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

// The host tool: a thread that completes every delivery with its own bytes
// until the guest's stop packet arrives.
class KmclHostEcho {
 public:
  explicit KmclHostEcho(kmcld::remote::KmclClient& client) : stream_(&client.packet()) {}
  ~KmclHostEcho();  // cancels and joins a thread not joined yet

  absl::Status Start(const ::kmcl::v1::EndpointRef& endpoint, absl::Time deadline);
  absl::Status Join();
  void Cancel() { stream_.Cancel(); }
  // After Join.
  const kmcld::remote::PacketStream::Counters& counters() const { return stream_.counters(); }

 private:
  kmcld::remote::PacketStream stream_;
  std::thread thread_;
  bool stop_ = false;  // host thread only
  absl::Status status_;
};

class KmclGuestTransport {
 public:
  explicit KmclGuestTransport(kmcld::remote::KmclClient& client) : stream_(&client.packet()) {}

  absl::Status Start(const ::kmcl::v1::EndpointRef& endpoint, const std::string& payload,
                     uint32_t batch, absl::Time deadline);
  absl::Status Send(uint32_t n);
  absl::Status Read();
  uint64_t completed() const { return completed_; }
  // Sends the stop packet, waits for its completion, closes the stream.
  absl::Status Stop();
  void Cancel() { stream_.Cancel(); }
  const kmcld::remote::PacketStream::Counters& counters() const { return stream_.counters(); }
  uint64_t send_credits() const { return stream_.send_credits(); }

 private:
  kmcld::remote::PacketStream stream_;
  std::string payload_;
  std::vector<kmcld::remote::OutgoingPacket> packets_;
  uint64_t next_tag_ = 0;
  uint64_t completed_ = 0;
  bool stopped_ = false;
  absl::Status problem_;
};

}  // namespace kmcld::bench

#endif  // KMCLD_BENCH_BENCH_TRANSPORTS_H_
