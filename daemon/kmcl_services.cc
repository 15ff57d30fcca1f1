#include "daemon/kmcl_services.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "daemon/log.h"

#include "daemon/services/diagnostics_service.h"
#include "daemon/services/event_service.h"
#include "daemon/services/gpadl_service.h"
#include "daemon/services/guest_channel_service.h"
#include "daemon/services/host_channel_service.h"
#include "daemon/services/partition_service.h"
#include "daemon/services/save_restore_service.h"

namespace kmcld {

namespace {

RegistryLimits LimitsFrom(const config::KmcldConfig& c) {
  RegistryLimits l;
  l.max_partitions = c.max_partitions();
  l.guest_buffer_bytes_per_partition = c.guest_buffer_bytes_per_partition();
  l.endpoint.send_window = c.packets_in_flight_per_stream();
  l.endpoint.delivery_window = c.deliveries_in_flight();
  l.endpoint.linger = absl::Milliseconds(c.attach_linger_ms());
  return l;
}

// Every event of the log as a log line: channel events with their
// partition and channel; what a peer broke at warning level.
void LogEvent(const kmcl::v1::Event& e) {
  std::string name = kmcl::v1::EventKind_Name(e.kind());
  absl::string_view kind = name;
  absl::ConsumePrefix(&kind, "EVENT_KIND_");
  const std::string message = absl::StrReplaceAll(absl::AsciiStrToLower(kind), {{"_", " "}});
  log::Level level = log::Level::kInfo;
  switch (e.kind()) {
    case kmcl::v1::EVENT_KIND_RING_CORRUPT:
    case kmcl::v1::EVENT_KIND_PNP_FAILURE:
    case kmcl::v1::EVENT_KIND_DEVICE_NEGOTIATION_FAILED:
    case kmcl::v1::EVENT_KIND_DEVICE_GUEST_UNRESPONSIVE:
    case kmcl::v1::EVENT_KIND_DEVICE_SHUTDOWN_REFUSED:
      level = log::Level::kWarning;
      break;
    default:
      break;
  }
  const std::string role =
      e.role() == kmcl::v1::ENDPOINT_ROLE_UNSPECIFIED
          ? ""
          : absl::AsciiStrToLower(absl::StripPrefix(kmcl::v1::EndpointRole_Name(e.role()), "ENDPOINT_ROLE_"));
  if (!e.has_channel()) {
    log::Write(level, message, {{"partition", e.partition_id()}, {"sequence", e.sequence()}, {"detail", e.detail()}});
    return;
  }
  log::Channel(level, message, e.partition_id(), e.channel().channel_id(),
               {{"role", role},
                {"status", absl::StrFormat("0x%08x", e.status().code())},
                {"sequence", e.sequence()},
                {"detail", e.detail()}});
}

// Requests a peer got wrong, at warning level with the offender; the
// save/restore calls at info. At most 60 warnings a minute: a hostile peer
// cannot flood the log.
void LogCall(const metrics::RpcRecord& r) {
  static log::Limiter limiter(60);
  const bool bad = r.code == grpc::StatusCode::INVALID_ARGUMENT || r.code == grpc::StatusCode::OUT_OF_RANGE ||
                   r.code == grpc::StatusCode::PERMISSION_DENIED ||
                   r.code == grpc::StatusCode::UNAUTHENTICATED;
  if (bad) {
    uint64_t dropped = 0;
    if (!limiter.Admit(&dropped)) return;
    log::Warn("bad request", {{"method", r.method},
                              {"code", metrics::RpcMetrics::CodeName(r.code)},
                              {"peer", r.peer},
                              {"error", r.message},
                              {"dropped_before", dropped}});
  } else if (absl::StrContains(r.method, "SaveRestoreService")) {
    log::Info("save/restore call", {{"method", r.method},
                                    {"code", metrics::RpcMetrics::CodeName(r.code)},
                                    {"peer", r.peer},
                                    {"error", r.message},
                                    {"seconds", absl::StrCat(absl::ToDoubleSeconds(r.latency))}});
  }
}

}  // namespace

KmclServices::KmclServices(const config::KmcldConfig& config,
                           const security::Authorizer* authorizer)
    : config_(config),
      authorizer_(authorizer),
      rpc_metrics_(&LogCall),
      log_(config.event_retention()),
      registry_(std::make_unique<Registry>(LimitsFrom(config), log_, timer_)),
      leases_(timer_, absl::Milliseconds(config.lease_idle_ms())),
      streams_(config.max_streams_per_client()),
      pool_(std::make_unique<BlockingPool>(static_cast<int>(config.max_blocking_calls()))) {
  log_.SetObserver(&LogEvent);
  ServiceLimits limits;
  limits.max_message_bytes = config.max_message_bytes();
  limits.max_streams_per_client = config.max_streams_per_client();
  limits.device_heartbeat_timeout_ms = config.device_heartbeat_timeout_ms();
  ServiceContext ctx{*registry_, *pool_, limits, authorizer};
  SaveRestoreLimits save_limits;
  save_limits.max_restore_bytes = config.max_restore_bytes();
  services_.push_back(std::make_unique<PartitionService>(ctx));
  services_.push_back(std::make_unique<HostChannelService>(ctx));
  services_.push_back(std::make_unique<GuestChannelService>(ctx));
  services_.push_back(std::make_unique<GpadlService>(ctx, leases_));
  services_.push_back(std::make_unique<PacketService>(ctx, streams_));
  services_.push_back(std::make_unique<EventService>(ctx, streams_));
  services_.push_back(std::make_unique<SaveRestoreService>(ctx, save_limits));
  services_.push_back(std::make_unique<DiagnosticsService>(ctx, leases_));
}

KmclServices::~KmclServices() { Shutdown(); }

void KmclServices::RegisterAll(grpc::ServerBuilder& builder) {
  builder.SetMaxReceiveMessageSize(static_cast<int>(config_.max_message_bytes()));
  builder.SetMaxSendMessageSize(static_cast<int>(config_.max_message_bytes()));
  for (auto& service : services_) builder.RegisterService(service.get());
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(rpc_metrics_.NewInterceptorFactory());
  if (authorizer_ != nullptr) interceptors.push_back(security::NewAuditInterceptorFactory(authorizer_->audit()));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
}

void KmclServices::Shutdown() {
  if (registry_ == nullptr) return;
  // Freeing the endpoints releases what tools hold, so blocked calls return.
  // By entry, not by id: every partition goes, whatever its id or pin.
  registry_->DeleteAll();
  pool_.reset();  // waits for running blocking calls
  timer_.Stop();
  registry_.reset();
}

}  // namespace kmcld
