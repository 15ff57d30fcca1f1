// tests/bridge_fixture.h: a real kmcld process on loopback (port 0) with
// typed stubs for every kmcl.v1 service, plus the few steps most bridge
// tests share: offer an echo channel as the host tool, open it as the guest
// tool, and a synchronous Attach stream.
//
// Thread-compatible: one test thread per fixture; each AttachStream is used
// by one thread.
#ifndef KMCLD_TESTS_BRIDGE_FIXTURE_H_
#define KMCLD_TESTS_BRIDGE_FIXTURE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "proto/channel.grpc.pb.h"
#include "proto/diagnostics.grpc.pb.h"
#include "proto/event.grpc.pb.h"
#include "proto/gpadl.grpc.pb.h"
#include "proto/packet.grpc.pb.h"
#include "proto/partition.grpc.pb.h"
#include "proto/save_restore.grpc.pb.h"
#include "tests/daemon_process.h"

namespace kmcld::testing {

inline constexpr char kEchoType[] = "8e1d0a5e-2a3b-4c5d-9e0f-112233445566";

// One kmcld and its stubs.
struct Kmcld {
  // Starts kmcld with --listen=127.0.0.1:0 --insecure_plaintext_tcp --uds=none plus `flags`.
  absl::Status Start(const std::vector<std::string>& flags = {});

  DaemonProcess process;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<kmcl::v1::PartitionService::Stub> partitions;
  std::unique_ptr<kmcl::v1::HostChannelService::Stub> host;
  std::unique_ptr<kmcl::v1::GuestChannelService::Stub> guest;
  std::unique_ptr<kmcl::v1::GpadlService::Stub> gpadl;
  std::unique_ptr<kmcl::v1::PacketService::Stub> packets;
  std::unique_ptr<kmcl::v1::EventService::Stub> events;
  std::unique_ptr<kmcl::v1::SaveRestoreService::Stub> save_restore;
  std::unique_ptr<kmcl::v1::DiagnosticsService::Stub> diagnostics;

  // A ClientContext with a 60 s deadline (a hung daemon fails the test).
  static std::unique_ptr<grpc::ClientContext> Context(int seconds = 60);

  // OfferChannel of an echo-typed channel (start = true) on `partition`.
  absl::StatusOr<kmcl::v1::Channel> Offer(const std::string& partition = "default",
                                          const std::string& type = kEchoType,
                                          uint32_t max_packet_size = 0, bool start = true);
  // OpenChannel of that type at VTL 0.
  absl::StatusOr<kmcl::v1::Channel> Open(const std::string& partition = "default",
                                         const std::string& type = kEchoType,
                                         uint32_t ring_pages = 0);
};

// A synchronous Attach stream: every call blocks; Read() returns the next
// response. Credits are tracked as increments.
class AttachStream {
 public:
  AttachStream(kmcl::v1::PacketService::Stub& stub, const kmcl::v1::ChannelRef& ref,
               kmcl::v1::EndpointRole role, uint32_t delivery_credits = 0, uint32_t max_batch = 0);
  ~AttachStream();

  const kmcl::v1::Attached& attached() const { return attached_; }
  bool ok() const { return ok_; }
  uint64_t send_credits() const { return send_credits_; }

  // Sends a batch; consumes credits (the test must have them).
  bool Send(const std::vector<kmcl::v1::SendPacket>& packets);
  bool Complete(const std::vector<std::pair<uint64_t, std::string>>& completions);
  bool GrantDeliveries(uint32_t n);
  bool Write(const kmcl::v1::AttachRequest& request);
  // The next response (tracking send credits); false at the end of the stream.
  bool Read(kmcl::v1::AttachResponse* out);
  // Reads until `n` deliveries arrived (collecting completions and events on
  // the way into the given vectors).
  bool ReadDeliveries(size_t n, std::vector<kmcl::v1::ReceivedPacket>* out,
                      std::vector<kmcl::v1::SendCompletion>* completions = nullptr);
  // Reads until `n` send completions arrived.
  bool ReadCompletions(size_t n, std::vector<kmcl::v1::SendCompletion>* out,
                       std::vector<kmcl::v1::ReceivedPacket>* deliveries = nullptr);
  // WritesDone + Finish: the clean close.
  grpc::Status Close();
  // Cancels the call: an unclean end, as a killed tool.
  void Cancel();
  grpc::ClientContext& context() { return *ctx_; }

 private:
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<kmcl::v1::AttachRequest, kmcl::v1::AttachResponse>> rw_;
  kmcl::v1::Attached attached_;
  bool ok_ = false;
  bool closed_ = false;
  uint64_t send_credits_ = 0;
};

// Attaches, retrying while the endpoint is still held by a stream kmcld has
// not yet seen end (a cancelled or killed tool's): ALREADY_EXISTS until
// then. Bounded; the returned stream may still be !ok().
std::unique_ptr<AttachStream> AttachWhenFree(kmcl::v1::PacketService::Stub& stub,
                                             const kmcl::v1::ChannelRef& ref,
                                             kmcl::v1::EndpointRole role,
                                             uint32_t delivery_credits = 0);

kmcl::v1::SendPacket Packet(uint64_t tag, std::string payload, bool wait_for_completion = true);
// Attaches both endpoints of `ref`, sends one packet from the guest and
// reads it on the host: true when it arrives as sent (padded). The channel
// still carries traffic.
bool PacketFlows(kmcl::v1::PacketService::Stub& stub, const kmcl::v1::ChannelRef& ref);
// Zero-pads to a multiple of 8, as VMBus rings deliver.
std::string Padded(std::string s);

}  // namespace kmcld::testing

#endif  // KMCLD_TESTS_BRIDGE_FIXTURE_H_
