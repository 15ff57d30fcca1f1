#include "daemon/kmcl_services.h"

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

}  // namespace

KmclServices::KmclServices(const config::KmcldConfig& config,
                           const security::Authorizer* authorizer)
    : config_(config),
      log_(config.event_retention()),
      registry_(std::make_unique<Registry>(LimitsFrom(config), log_, timer_)),
      leases_(timer_, absl::Milliseconds(config.lease_idle_ms())),
      streams_(config.max_streams_per_client()),
      pool_(std::make_unique<BlockingPool>(static_cast<int>(config.max_blocking_calls()))) {
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
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
}

void KmclServices::Shutdown() {
  if (registry_ == nullptr) return;
  // Freeing the endpoints releases what tools hold, so blocked calls return.
  for (const auto& p : registry_->ListPartitions()) {
    p->Unpin();
    registry_->DeletePartition(p->id(), /*force=*/true).IgnoreError();
  }
  pool_.reset();  // waits for running blocking calls
  timer_.Stop();
  registry_.reset();
}

}  // namespace kmcld
