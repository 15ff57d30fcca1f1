// clients/cpp/client.h: the connection to one kmcld and every kmcl.v1 call
// as a typed method. Part of the kmcl C++ client library; start with
// clients/cpp/kmcl.h, which includes this file and says how the pieces fit.
//
//   auto client = kmcl::client::Client::Connect("unix:/run/kmcld/kmcld.sock");
//   if (!client.ok()) return client.status();
//   auto parts = (*client)->ListPartitions();          // StatusOr<vector<Partition>>
//
// Every unary call carries a deadline: ClientOptions::call_timeout (30 s)
// unless the method takes its own. Streaming calls (save, restore, watch)
// use ClientOptions::stream_timeout. Errors are absl::Status with the gRPC
// code and "<Method>: <daemon message>".
//
// Targets: "unix:/path/to/kmcld.sock", "unix:///abs/path", "host:port",
// "[v6addr]:port" (anything else is INVALID_ARGUMENT before dialling);
// ClientOptions::tls_* for kmcld's mutual TLS on TCP.
//
// Threading: Client is thread-safe; share one std::shared_ptr<Client> across
// threads and handles (every handle keeps the client alive).
#ifndef KMCLD_CLIENTS_CPP_CLIENT_H_
#define KMCLD_CLIENTS_CPP_CLIENT_H_

#include <cstdint>
#include <functional>
#include <istream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "clients/cpp/grpc_health.grpc.pb.h"
#include "clients/cpp/status.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "proto/channel.grpc.pb.h"
#include "proto/diagnostics.grpc.pb.h"
#include "proto/event.grpc.pb.h"
#include "proto/gpadl.grpc.pb.h"
#include "proto/packet.grpc.pb.h"
#include "proto/partition.grpc.pb.h"
#include "proto/save_restore.grpc.pb.h"

namespace kmcl::client {

namespace v1 = ::kmcl::v1;

// Checks and canonicalises a target string (see the banner). "unix:/p" and
// "unix:///p" both become "unix:/p"; "host:port" needs a port in 1..65535.
absl::StatusOr<std::string> NormalizeTarget(absl::string_view target);

struct ClientOptions {
  absl::Duration call_timeout = absl::Seconds(30);     // every unary call
  absl::Duration stream_timeout = absl::Minutes(10);   // save / restore
  // Connect() waits this long for the connection; UNAVAILABLE after it.
  // It fails at once (UNAVAILABLE, naming the address and why) when the
  // dial fails: a Unix socket path that does not exist or is not a
  // socket, a refused or unreachable port, a failed TLS handshake.
  absl::Duration connect_timeout = absl::Seconds(10);
  // false: Connect() returns at once and the first call dials (and fails
  // UNAVAILABLE if nothing answers).
  bool wait_for_connect = true;
  // Mutual TLS for a kmcld whose TCP listener requires it (docs/security.md):
  // PEM files of the CA that signed kmcld's certificate, and of this
  // client's certificate and key. Empty tls_ca_file: plaintext (Unix socket,
  // or TCP on loopback with --insecure_plaintext_tcp).
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
};

// Progress of a save or restore: bytes moved so far (total once known).
using ProgressFn = std::function<void(uint64_t bytes, uint64_t total)>;

class Client : public std::enable_shared_from_this<Client> {
 public:
  static absl::StatusOr<std::shared_ptr<Client>> Connect(absl::string_view target,
                                                         ClientOptions options = {});

  const std::string& target() const { return target_; }
  const ClientOptions& options() const { return options_; }

  // --- PartitionService
  absl::StatusOr<std::vector<v1::Partition>> ListPartitions();
  absl::StatusOr<v1::Partition> GetPartition(const std::string& id);
  absl::StatusOr<v1::Partition> CreatePartition(const v1::CreatePartitionRequest& request);
  absl::Status DeletePartition(const std::string& id, bool force);

  // --- HostChannelService (the VSP role)
  absl::StatusOr<v1::Channel> OfferChannel(const std::string& partition_id,
                                           const v1::ServerChannelSettings& settings);
  absl::StatusOr<v1::Channel> StartChannel(const v1::ChannelRef& ref);
  absl::StatusOr<v1::Channel> PauseChannel(const v1::ChannelRef& ref);
  absl::StatusOr<v1::Channel> RescindChannel(const v1::ChannelRef& ref);
  absl::Status CleanupChannel(const v1::ChannelRef& ref);
  absl::StatusOr<v1::Channel> GetChannel(const v1::ChannelRef& ref);
  absl::StatusOr<std::vector<v1::Channel>> ListChannels(const std::string& partition_id);

  // --- GuestChannelService (the VSC role)
  absl::StatusOr<std::vector<v1::Offer>> ListOffers(const v1::ListOffersRequest& request);
  // Opening waits for the host; `timeout` (default: call_timeout) bounds it.
  absl::StatusOr<v1::Channel> OpenChannel(const v1::OpenChannelRequest& request,
                                          absl::Duration timeout = absl::ZeroDuration());
  absl::StatusOr<v1::Channel> CloseChannel(const v1::ChannelRef& ref);

  // --- GpadlService
  absl::StatusOr<v1::GuestBuffer> AllocateGuestBuffer(const std::string& partition_id,
                                                      uint64_t bytes);
  absl::Status FreeGuestBuffer(const std::string& partition_id, uint64_t buffer_id);
  // Any size: split into 1 MiB transfers.
  absl::Status WriteGuestMemory(const v1::WriteGuestMemoryRequest& where, absl::string_view data);
  absl::StatusOr<std::string> ReadGuestMemory(const v1::ReadGuestMemoryRequest& where,
                                              uint64_t length);
  absl::StatusOr<v1::Gpadl> CreateGpadl(const v1::CreateGpadlRequest& request);
  absl::StatusOr<v1::Gpadl> TeardownGpadl(const v1::ChannelRef& ref, uint32_t gpadl_id, bool wait);
  absl::StatusOr<v1::Gpadl> GetGpadl(const v1::ChannelRef& ref, uint32_t gpadl_id);
  // Not torn down GPADLs of a partition (every partition when empty), or of
  // one channel (channel_id != 0), by channel then id. Ranges only with
  // include_ranges (range_count and page_count are always set).
  absl::StatusOr<std::vector<v1::Gpadl>> ListGpadls(const v1::ListGpadlsRequest& request);
  absl::StatusOr<v1::GpadlLease> MapGpadl(const v1::ChannelRef& ref, uint32_t gpadl_id,
                                          bool read_only);
  // Any size: split into 1 MiB transfers.
  absl::StatusOr<std::string> ReadLease(uint64_t lease_id, uint64_t offset, uint64_t length);
  absl::Status WriteLease(uint64_t lease_id, uint64_t offset, absl::string_view data);
  absl::Status UnmapGpadl(uint64_t lease_id);

  // --- DiagnosticsService
  absl::StatusOr<v1::ChannelDiagnostics> GetChannelDiagnostics(const v1::ChannelRef& ref);
  absl::StatusOr<std::vector<v1::ChannelDiagnostics>> ListChannelDiagnostics(
      const std::string& partition_id);
  // The daemon's build (version, git commit of --stamp builds, API
  // revision) and uptime.
  absl::StatusOr<v1::DaemonVersion> GetVersion();

  // --- EventService. Calls `on_event` for each event in order until it
  // returns false, the backlog ends (request.backlog_only), `deadline`
  // passes (OK then), or the stream fails. Returns the last sequence seen
  // via `last_sequence` (for resuming) when non-null.
  absl::Status WatchEvents(const v1::WatchEventsRequest& request,
                           const std::function<bool(const v1::Event&)>& on_event,
                           absl::Time deadline = absl::InfiniteFuture(),
                           uint64_t* last_sequence = nullptr);

  // --- SaveRestoreService. Save streams the blob into `out`; restore reads
  // `in` to its end. `progress` (may be empty) sees the bytes so far.
  absl::StatusOr<uint64_t> SaveChannel(const v1::ChannelRef& ref, std::ostream& out,
                                       const ProgressFn& progress = {});
  absl::StatusOr<uint64_t> SavePartition(const std::string& partition_id, bool stay_paused,
                                         std::ostream& out, const ProgressFn& progress = {});
  absl::StatusOr<v1::ChannelRef> RestoreChannel(const std::string& partition_id, std::istream& in,
                                                const ProgressFn& progress = {});
  absl::StatusOr<v1::Partition> RestorePartition(const std::string& new_partition_id,
                                                 std::istream& in, const ProgressFn& progress = {});

  // --- grpc.health.v1.Health/Check of the whole server: SERVING etc.
  absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> Health();

  // The generated stubs, for what the methods above do not cover.
  v1::PacketService::Stub& packet_stub() { return *packet_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

  // A context with the unary deadline (or `timeout` when non-zero).
  std::unique_ptr<grpc::ClientContext> NewContext(absl::Duration timeout = absl::ZeroDuration()) const;

  Client(std::string target, std::shared_ptr<grpc::Channel> channel, ClientOptions options);

 private:
  template <typename Stub, typename Request, typename Response>
  absl::StatusOr<Response> Call(grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                                             Response*),
                                Stub& stub, const Request& request, absl::string_view name,
                                absl::Duration timeout = absl::ZeroDuration()) {
    std::unique_ptr<grpc::ClientContext> context = NewContext(timeout);
    Response response;
    grpc::Status status = (stub.*method)(context.get(), request, &response);
    if (!status.ok()) return FromGrpc(status, name);
    return response;
  }
  absl::StatusOr<uint64_t> ReadSaveStream(grpc::ClientContext& context,
                                          grpc::ClientReaderInterface<v1::SaveChunk>& reader,
                                          std::ostream& out, const ProgressFn& progress,
                                          absl::string_view name);
  template <typename Response>
  absl::StatusOr<Response> Restore(
      std::unique_ptr<grpc::ClientWriter<v1::RestoreChunk>> (v1::SaveRestoreService::Stub::*method)(
          grpc::ClientContext*, Response*),
      const std::string& partition_id, std::istream& in, const ProgressFn& progress,
      absl::string_view name);
  absl::Status WriteRestoreStream(grpc::ClientWriterInterface<v1::RestoreChunk>& writer,
                                  const std::string& partition_id, std::istream& in,
                                  const ProgressFn& progress);

  const std::string target_;
  const std::shared_ptr<grpc::Channel> channel_;
  const ClientOptions options_;
  std::unique_ptr<v1::PartitionService::Stub> partitions_;
  std::unique_ptr<v1::HostChannelService::Stub> host_;
  std::unique_ptr<v1::GuestChannelService::Stub> guest_;
  std::unique_ptr<v1::GpadlService::Stub> gpadl_;
  std::unique_ptr<v1::PacketService::Stub> packet_;
  std::unique_ptr<v1::EventService::Stub> events_;
  std::unique_ptr<v1::SaveRestoreService::Stub> save_restore_;
  std::unique_ptr<v1::DiagnosticsService::Stub> diagnostics_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

}  // namespace kmcl::client

#endif  // KMCLD_CLIENTS_CPP_CLIENT_H_
