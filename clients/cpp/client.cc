#include "clients/cpp/client.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace kmcl::client {
namespace {

constexpr uint64_t kMaxTransfer = v1::LIMITS_MAX_TRANSFER_BYTES;

bool ValidHost(absl::string_view host) {
  if (host.empty()) return false;
  if (host.front() == '[') return host.size() > 2 && host.back() == ']';
  for (char c : host) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') {
      return false;
    }
  }
  return true;
}

absl::StatusOr<std::string> ReadPem(const std::string& path, absl::string_view what) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  if (!in || text.str().empty()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read the ", what, " file ", path));
  }
  return text.str();
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> Credentials(
    const ClientOptions& options) {
  if (options.tls_ca_file.empty()) {
    if (!options.tls_cert_file.empty() || !options.tls_key_file.empty()) {
      return absl::InvalidArgumentError("a TLS certificate or key needs the CA file too");
    }
    return grpc::InsecureChannelCredentials();
  }
  grpc::SslCredentialsOptions ssl;
  KMCL_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem(options.tls_ca_file, "TLS CA"));
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("give both the TLS certificate and its key");
  }
  if (!options.tls_cert_file.empty()) {
    KMCL_ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadPem(options.tls_cert_file, "TLS certificate"));
    KMCL_ASSIGN_OR_RETURN(ssl.pem_private_key, ReadPem(options.tls_key_file, "TLS key"));
  }
  return grpc::SslCredentials(ssl);
}

// A Unix target whose path is missing, or is not a socket, cannot answer:
// say so before dialling (gRPC would retry it until the timeout).
absl::Status CheckUnixSocket(absl::string_view target) {
  absl::string_view path = target;
  if (!absl::ConsumePrefix(&path, "unix:")) return absl::OkStatus();
  struct stat st {};
  if (::stat(std::string(path).c_str(), &st) != 0) {
    const int err = errno;
    return absl::UnavailableError(absl::StrCat("no kmcld socket at ", path, " (",
                                               std::strerror(err),
                                               "): is kmcld running and listening there "
                                               "(its --uds flag)?"));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return absl::UnavailableError(
        absl::StrCat(path, " is not a socket, so no kmcld listens there (kmcld's --uds flag)"));
  }
  return absl::OkStatus();
}

// Waits up to `timeout` for the connection, failing at once when the dial
// fails (refused, unreachable, TLS handshake): one health check without
// wait_for_ready, which gRPC fails UNAVAILABLE as soon as the channel is in
// TRANSIENT_FAILURE, with the reason.
absl::Status AwaitConnection(const std::string& target,
                             const std::shared_ptr<grpc::Channel>& channel,
                             absl::Duration timeout) {
  KMCL_RETURN_IF_ERROR(CheckUnixSocket(target));
  grpc::ClientContext context;
  context.set_wait_for_ready(false);
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status =
      stub->Check(&context, grpc::health::v1::HealthCheckRequest(), &response);
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      return absl::UnavailableError(
          absl::StrCat("cannot connect to kmcld at ", target, ": ", status.error_message()));
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return absl::UnavailableError(absl::StrCat("cannot connect to kmcld at ", target,
                                                 " within ", absl::FormatDuration(timeout)));
    default:  // it answered (even an error is an answer): connected
      return absl::OkStatus();
  }
}

}  // namespace

absl::Status FromGrpc(const grpc::Status& status, absl::string_view what) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat(what, ": ", status.error_message()));
}

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::StatusOr<std::string> NormalizeTarget(absl::string_view target) {
  absl::string_view t = absl::StripAsciiWhitespace(target);
  if (absl::ConsumePrefix(&t, "unix:")) {
    while (absl::StartsWith(t, "//")) t.remove_prefix(1);
    if (t.empty() || t.front() != '/') {
      return absl::InvalidArgumentError(
          absl::StrCat("target '", target, "': a unix target needs an absolute path (unix:/path)"));
    }
    return absl::StrCat("unix:", t);
  }
  const size_t colon = t.rfind(':');
  if (colon == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("target '", target, "': expected host:port or unix:/path"));
  }
  absl::string_view host = t.substr(0, colon);
  uint32_t port = 0;
  if (!ValidHost(host) || !absl::SimpleAtoi(t.substr(colon + 1), &port) || port == 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("target '", target, "': expected host:port (port 1..65535) or unix:/path"));
  }
  return std::string(t);
}

absl::StatusOr<std::shared_ptr<Client>> Client::Connect(absl::string_view target,
                                                        ClientOptions options) {
  absl::StatusOr<std::string> normalized = NormalizeTarget(target);
  if (!normalized.ok()) return normalized.status();
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);  // a ReceivedBatch of large packets passes 4 MiB
  // Its own connection: two Clients are two tools, as two processes would be.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // Reconnect quickly after a drop (the stream's re-attach depends on it).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials = Credentials(options);
  if (!credentials.ok()) return credentials.status();
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(*normalized, *credentials, args);
  if (options.wait_for_connect) {
    KMCL_RETURN_IF_ERROR(AwaitConnection(*normalized, channel, options.connect_timeout));
  }
  return std::make_shared<Client>(*std::move(normalized), std::move(channel), options);
}

Client::Client(std::string target, std::shared_ptr<grpc::Channel> channel, ClientOptions options)
    : target_(std::move(target)),
      channel_(std::move(channel)),
      options_(options),
      partitions_(v1::PartitionService::NewStub(channel_)),
      host_(v1::HostChannelService::NewStub(channel_)),
      guest_(v1::GuestChannelService::NewStub(channel_)),
      gpadl_(v1::GpadlService::NewStub(channel_)),
      packet_(v1::PacketService::NewStub(channel_)),
      events_(v1::EventService::NewStub(channel_)),
      save_restore_(v1::SaveRestoreService::NewStub(channel_)),
      diagnostics_(v1::DiagnosticsService::NewStub(channel_)),
      health_(grpc::health::v1::Health::NewStub(channel_)) {}

std::unique_ptr<grpc::ClientContext> Client::NewContext(absl::Duration timeout) const {
  auto context = std::make_unique<grpc::ClientContext>();
  if (timeout <= absl::ZeroDuration()) timeout = options_.call_timeout;
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return context;
}

// --- partitions

absl::StatusOr<std::vector<v1::Partition>> Client::ListPartitions() {
  auto r = Call(&v1::PartitionService::Stub::ListPartitions, *partitions_,
                v1::ListPartitionsRequest(), "ListPartitions");
  if (!r.ok()) return r.status();
  return std::vector<v1::Partition>(r->partitions().begin(), r->partitions().end());
}

absl::StatusOr<v1::Partition> Client::GetPartition(const std::string& id) {
  v1::GetPartitionRequest request;
  request.set_id(id);
  return Call(&v1::PartitionService::Stub::GetPartition, *partitions_, request, "GetPartition");
}

absl::StatusOr<v1::Partition> Client::CreatePartition(const v1::CreatePartitionRequest& request) {
  return Call(&v1::PartitionService::Stub::CreatePartition, *partitions_, request,
              "CreatePartition");
}

absl::Status Client::DeletePartition(const std::string& id, bool force) {
  v1::DeletePartitionRequest request;
  request.set_id(id);
  request.set_force(force);
  return Call(&v1::PartitionService::Stub::DeletePartition, *partitions_, request,
              "DeletePartition")
      .status();
}

// --- channels

namespace {
v1::ChannelRequest ChannelReq(const v1::ChannelRef& ref) {
  v1::ChannelRequest request;
  *request.mutable_channel() = ref;
  return request;
}
absl::StatusOr<v1::Channel> ChannelOf(absl::StatusOr<v1::ChannelResponse> r) {
  if (!r.ok()) return r.status();
  return std::move(*r->mutable_channel());
}
}  // namespace

absl::StatusOr<v1::Channel> Client::OfferChannel(const std::string& partition_id,
                                                 const v1::ServerChannelSettings& settings) {
  v1::OfferChannelRequest request;
  request.set_partition_id(partition_id);
  *request.mutable_settings() = settings;
  return ChannelOf(
      Call(&v1::HostChannelService::Stub::OfferChannel, *host_, request, "OfferChannel"));
}

absl::StatusOr<v1::Channel> Client::StartChannel(const v1::ChannelRef& ref) {
  return ChannelOf(
      Call(&v1::HostChannelService::Stub::StartChannel, *host_, ChannelReq(ref), "StartChannel"));
}

absl::StatusOr<v1::Channel> Client::PauseChannel(const v1::ChannelRef& ref) {
  return ChannelOf(
      Call(&v1::HostChannelService::Stub::PauseChannel, *host_, ChannelReq(ref), "PauseChannel"));
}

absl::StatusOr<v1::Channel> Client::RescindChannel(const v1::ChannelRef& ref) {
  return ChannelOf(Call(&v1::HostChannelService::Stub::RescindChannel, *host_, ChannelReq(ref),
                        "RescindChannel"));
}

absl::Status Client::CleanupChannel(const v1::ChannelRef& ref) {
  return Call(&v1::HostChannelService::Stub::CleanupChannel, *host_, ChannelReq(ref),
              "CleanupChannel")
      .status();
}

absl::StatusOr<v1::Channel> Client::GetChannel(const v1::ChannelRef& ref) {
  return ChannelOf(
      Call(&v1::HostChannelService::Stub::GetChannel, *host_, ChannelReq(ref), "GetChannel"));
}

absl::StatusOr<std::vector<v1::Channel>> Client::ListChannels(const std::string& partition_id) {
  v1::ListChannelsRequest request;
  request.set_partition_id(partition_id);
  auto r = Call(&v1::HostChannelService::Stub::ListChannels, *host_, request, "ListChannels");
  if (!r.ok()) return r.status();
  return std::vector<v1::Channel>(r->channels().begin(), r->channels().end());
}

absl::StatusOr<std::vector<v1::Offer>> Client::ListOffers(const v1::ListOffersRequest& request) {
  auto r = Call(&v1::GuestChannelService::Stub::ListOffers, *guest_, request, "ListOffers");
  if (!r.ok()) return r.status();
  return std::vector<v1::Offer>(r->offers().begin(), r->offers().end());
}

absl::StatusOr<v1::Channel> Client::OpenChannel(const v1::OpenChannelRequest& request,
                                                absl::Duration timeout) {
  return ChannelOf(Call(&v1::GuestChannelService::Stub::OpenChannel, *guest_, request,
                        "OpenChannel", timeout));
}

absl::StatusOr<v1::Channel> Client::CloseChannel(const v1::ChannelRef& ref) {
  return ChannelOf(Call(&v1::GuestChannelService::Stub::CloseChannel, *guest_, ChannelReq(ref),
                        "CloseChannel"));
}

// --- GPADLs and guest memory

absl::StatusOr<v1::GuestBuffer> Client::AllocateGuestBuffer(const std::string& partition_id,
                                                            uint64_t bytes) {
  v1::AllocateGuestBufferRequest request;
  request.set_partition_id(partition_id);
  request.set_byte_count(bytes);
  return Call(&v1::GpadlService::Stub::AllocateGuestBuffer, *gpadl_, request,
              "AllocateGuestBuffer");
}

absl::Status Client::FreeGuestBuffer(const std::string& partition_id, uint64_t buffer_id) {
  v1::FreeGuestBufferRequest request;
  request.set_partition_id(partition_id);
  request.set_buffer_id(buffer_id);
  return Call(&v1::GpadlService::Stub::FreeGuestBuffer, *gpadl_, request, "FreeGuestBuffer")
      .status();
}

absl::Status Client::WriteGuestMemory(const v1::WriteGuestMemoryRequest& where,
                                      absl::string_view data) {
  uint64_t done = 0;
  do {
    const uint64_t n = std::min<uint64_t>(kMaxTransfer, data.size() - done);
    v1::WriteGuestMemoryRequest request = where;
    if (request.target_case() == v1::WriteGuestMemoryRequest::kGpa) {
      request.set_gpa(where.gpa() + done);
    } else {
      request.set_offset(where.offset() + done);
    }
    request.set_data(std::string(data.substr(done, n)));
    KMCL_RETURN_IF_ERROR(
        Call(&v1::GpadlService::Stub::WriteGuestMemory, *gpadl_, request, "WriteGuestMemory")
            .status());
    done += n;
  } while (done < data.size());
  return absl::OkStatus();
}

absl::StatusOr<std::string> Client::ReadGuestMemory(const v1::ReadGuestMemoryRequest& where,
                                                    uint64_t length) {
  std::string out;
  while (out.size() < length) {
    const uint64_t n = std::min<uint64_t>(kMaxTransfer, length - out.size());
    v1::ReadGuestMemoryRequest request = where;
    if (request.source_case() == v1::ReadGuestMemoryRequest::kGpa) {
      request.set_gpa(where.gpa() + out.size());
    } else {
      request.set_offset(where.offset() + out.size());
    }
    request.set_length(static_cast<uint32_t>(n));
    auto r = Call(&v1::GpadlService::Stub::ReadGuestMemory, *gpadl_, request, "ReadGuestMemory");
    if (!r.ok()) return r.status();
    if (r->data().empty()) break;
    out += r->data();
  }
  return out;
}

absl::StatusOr<v1::Gpadl> Client::CreateGpadl(const v1::CreateGpadlRequest& request) {
  return Call(&v1::GpadlService::Stub::CreateGpadl, *gpadl_, request, "CreateGpadl");
}

absl::StatusOr<v1::Gpadl> Client::TeardownGpadl(const v1::ChannelRef& ref, uint32_t gpadl_id,
                                                bool wait) {
  v1::TeardownGpadlRequest request;
  *request.mutable_channel() = ref;
  request.set_gpadl_id(gpadl_id);
  request.set_wait(wait);
  return Call(&v1::GpadlService::Stub::TeardownGpadl, *gpadl_, request, "TeardownGpadl");
}

absl::StatusOr<v1::Gpadl> Client::GetGpadl(const v1::ChannelRef& ref, uint32_t gpadl_id) {
  v1::GetGpadlRequest request;
  *request.mutable_channel() = ref;
  request.set_gpadl_id(gpadl_id);
  return Call(&v1::GpadlService::Stub::GetGpadl, *gpadl_, request, "GetGpadl");
}

absl::StatusOr<std::vector<v1::Gpadl>> Client::ListGpadls(const v1::ListGpadlsRequest& request) {
  auto r = Call(&v1::GpadlService::Stub::ListGpadls, *gpadl_, request, "ListGpadls");
  if (!r.ok()) return r.status();
  return std::vector<v1::Gpadl>(r->gpadls().begin(), r->gpadls().end());
}

absl::StatusOr<v1::GpadlLease> Client::MapGpadl(const v1::ChannelRef& ref, uint32_t gpadl_id,
                                                bool read_only) {
  v1::MapGpadlRequest request;
  *request.mutable_channel() = ref;
  request.set_gpadl_id(gpadl_id);
  request.set_read_only(read_only);
  return Call(&v1::GpadlService::Stub::MapGpadl, *gpadl_, request, "MapGpadl");
}

absl::StatusOr<std::string> Client::ReadLease(uint64_t lease_id, uint64_t offset,
                                              uint64_t length) {
  std::string out;
  while (out.size() < length) {
    v1::LeaseIoRequest request;
    request.set_lease_id(lease_id);
    request.set_offset(offset + out.size());
    request.set_length(static_cast<uint32_t>(std::min<uint64_t>(kMaxTransfer, length - out.size())));
    auto r = Call(&v1::GpadlService::Stub::ReadLease, *gpadl_, request, "ReadLease");
    if (!r.ok()) return r.status();
    if (r->data().empty()) break;
    out += r->data();
  }
  return out;
}

absl::Status Client::WriteLease(uint64_t lease_id, uint64_t offset, absl::string_view data) {
  uint64_t done = 0;
  do {
    const uint64_t n = std::min<uint64_t>(kMaxTransfer, data.size() - done);
    v1::LeaseIoRequest request;
    request.set_lease_id(lease_id);
    request.set_offset(offset + done);
    request.set_data(std::string(data.substr(done, n)));
    KMCL_RETURN_IF_ERROR(
        Call(&v1::GpadlService::Stub::WriteLease, *gpadl_, request, "WriteLease").status());
    done += n;
  } while (done < data.size());
  return absl::OkStatus();
}

absl::Status Client::UnmapGpadl(uint64_t lease_id) {
  v1::UnmapGpadlRequest request;
  request.set_lease_id(lease_id);
  return Call(&v1::GpadlService::Stub::UnmapGpadl, *gpadl_, request, "UnmapGpadl").status();
}

// --- diagnostics, health

absl::StatusOr<v1::ChannelDiagnostics> Client::GetChannelDiagnostics(const v1::ChannelRef& ref) {
  v1::GetChannelDiagnosticsRequest request;
  *request.mutable_channel() = ref;
  return Call(&v1::DiagnosticsService::Stub::GetChannelDiagnostics, *diagnostics_, request,
              "GetChannelDiagnostics");
}

absl::StatusOr<std::vector<v1::ChannelDiagnostics>> Client::ListChannelDiagnostics(
    const std::string& partition_id) {
  v1::ListChannelDiagnosticsRequest request;
  request.set_partition_id(partition_id);
  auto r = Call(&v1::DiagnosticsService::Stub::ListChannelDiagnostics, *diagnostics_, request,
                "ListChannelDiagnostics");
  if (!r.ok()) return r.status();
  return std::vector<v1::ChannelDiagnostics>(r->channels().begin(), r->channels().end());
}

absl::StatusOr<v1::DaemonVersion> Client::GetVersion() {
  return Call(&v1::DiagnosticsService::Stub::GetVersion, *diagnostics_, v1::GetVersionRequest(),
              "GetVersion");
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> Client::Health() {
  auto r = Call(&grpc::health::v1::Health::Stub::Check, *health_,
                grpc::health::v1::HealthCheckRequest(), "Health.Check");
  if (!r.ok()) return r.status();
  return r->status();
}

// --- events

absl::Status Client::WatchEvents(const v1::WatchEventsRequest& request,
                                 const std::function<bool(const v1::Event&)>& on_event,
                                 absl::Time deadline, uint64_t* last_sequence) {
  grpc::ClientContext context;
  if (deadline != absl::InfiniteFuture()) context.set_deadline(absl::ToChronoTime(deadline));
  std::unique_ptr<grpc::ClientReader<v1::Event>> reader = events_->WatchEvents(&context, request);
  v1::Event event;
  bool stopped = false;
  while (reader->Read(&event)) {
    if (last_sequence != nullptr) *last_sequence = event.sequence();
    if (!on_event(event)) {
      stopped = true;
      context.TryCancel();
      break;
    }
  }
  grpc::Status status = reader->Finish();
  if (stopped) return absl::OkStatus();
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && absl::Now() >= deadline) {
    return absl::OkStatus();  // the caller's own end of the watch
  }
  return FromGrpc(status, "WatchEvents");
}

// --- save / restore

absl::StatusOr<uint64_t> Client::ReadSaveStream(grpc::ClientContext& context,
                                                grpc::ClientReaderInterface<v1::SaveChunk>& reader,
                                                std::ostream& out, const ProgressFn& progress,
                                                absl::string_view name) {
  v1::SaveChunk chunk;
  uint64_t bytes = 0;
  bool last = false;
  absl::Status local;
  while (reader.Read(&chunk)) {
    if (chunk.offset() != bytes) {
      local = absl::DataLossError(absl::StrCat(name, ": chunk at offset ", chunk.offset(),
                                               " after ", bytes, " bytes"));
      context.TryCancel();
      break;
    }
    out.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
    if (!out) {
      local = absl::InternalError(absl::StrCat(name, ": writing the blob failed"));
      context.TryCancel();
      break;
    }
    bytes += chunk.data().size();
    last = chunk.last();
    if (progress) progress(bytes, last ? chunk.total_bytes() : 0);
  }
  grpc::Status status = reader.Finish();
  if (!local.ok()) return local;
  if (!status.ok()) return FromGrpc(status, name);
  if (!last) return absl::DataLossError(absl::StrCat(name, ": the stream ended without a last chunk"));
  return bytes;
}

absl::StatusOr<uint64_t> Client::SaveChannel(const v1::ChannelRef& ref, std::ostream& out,
                                             const ProgressFn& progress) {
  std::unique_ptr<grpc::ClientContext> context = NewContext(options_.stream_timeout);
  v1::SaveChannelRequest request;
  *request.mutable_channel() = ref;
  auto reader = save_restore_->SaveChannel(context.get(), request);
  return ReadSaveStream(*context, *reader, out, progress, "SaveChannel");
}

absl::StatusOr<uint64_t> Client::SavePartition(const std::string& partition_id, bool stay_paused,
                                               std::ostream& out, const ProgressFn& progress) {
  std::unique_ptr<grpc::ClientContext> context = NewContext(options_.stream_timeout);
  v1::SavePartitionRequest request;
  request.set_partition_id(partition_id);
  request.set_stay_paused(stay_paused);
  auto reader = save_restore_->SavePartition(context.get(), request);
  return ReadSaveStream(*context, *reader, out, progress, "SavePartition");
}

absl::Status Client::WriteRestoreStream(grpc::ClientWriterInterface<v1::RestoreChunk>& writer,
                                        const std::string& partition_id, std::istream& in,
                                        const ProgressFn& progress) {
  v1::RestoreChunk first;
  first.mutable_target()->set_partition_id(partition_id);
  if (!writer.Write(first)) return absl::OkStatus();  // Finish() says why
  std::string buffer(256 * 1024, '\0');
  uint64_t bytes = 0;
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const std::streamsize n = in.gcount();
    if (n <= 0) break;
    v1::RestoreChunk chunk;
    chunk.set_data(buffer.data(), static_cast<size_t>(n));
    if (!writer.Write(chunk)) return absl::OkStatus();
    bytes += static_cast<uint64_t>(n);
    if (progress) progress(bytes, 0);
  }
  if (in.bad()) return absl::InternalError("reading the blob failed");
  writer.WritesDone();
  return absl::OkStatus();
}

template <typename Response>
absl::StatusOr<Response> Client::Restore(
    std::unique_ptr<grpc::ClientWriter<v1::RestoreChunk>> (v1::SaveRestoreService::Stub::*method)(
        grpc::ClientContext*, Response*),
    const std::string& partition_id, std::istream& in, const ProgressFn& progress,
    absl::string_view name) {
  std::unique_ptr<grpc::ClientContext> context = NewContext(options_.stream_timeout);
  Response response;
  auto writer = ((*save_restore_).*method)(context.get(), &response);
  absl::Status local = WriteRestoreStream(*writer, partition_id, in, progress);
  if (!local.ok()) context->TryCancel();
  grpc::Status status = writer->Finish();
  if (!local.ok()) return local;
  if (!status.ok()) return FromGrpc(status, name);
  return response;
}

absl::StatusOr<v1::ChannelRef> Client::RestoreChannel(const std::string& partition_id,
                                                      std::istream& in,
                                                      const ProgressFn& progress) {
  auto r = Restore(&v1::SaveRestoreService::Stub::RestoreChannel, partition_id, in, progress,
                   "RestoreChannel");
  if (!r.ok()) return r.status();
  return r->channel();
}

absl::StatusOr<v1::Partition> Client::RestorePartition(const std::string& new_partition_id,
                                                       std::istream& in,
                                                       const ProgressFn& progress) {
  return Restore(&v1::SaveRestoreService::Stub::RestorePartition, new_partition_id, in, progress,
                 "RestorePartition");
}

}  // namespace kmcl::client
