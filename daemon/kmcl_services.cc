#include "daemon/kmcl_services.h"

#include "proto/channel.grpc.pb.h"
#include "proto/diagnostics.grpc.pb.h"
#include "proto/event.grpc.pb.h"
#include "proto/gpadl.grpc.pb.h"
#include "proto/packet.grpc.pb.h"
#include "proto/partition.grpc.pb.h"
#include "proto/save_restore.grpc.pb.h"

namespace kmcld {

KmclServices::KmclServices() {
  services_.push_back(std::make_unique<kmcl::v1::PartitionService::Service>());
  services_.push_back(std::make_unique<kmcl::v1::HostChannelService::Service>());
  services_.push_back(std::make_unique<kmcl::v1::GuestChannelService::Service>());
  services_.push_back(std::make_unique<kmcl::v1::GpadlService::Service>());
  services_.push_back(std::make_unique<kmcl::v1::PacketService::Service>());
  services_.push_back(std::make_unique<kmcl::v1::EventService::Service>());
  services_.push_back(std::make_unique<kmcl::v1::SaveRestoreService::Service>());
  services_.push_back(std::make_unique<kmcl::v1::DiagnosticsService::Service>());
}

KmclServices::~KmclServices() = default;

void KmclServices::RegisterAll(grpc::ServerBuilder& builder) {
  for (auto& service : services_) builder.RegisterService(service.get());
}

}  // namespace kmcld
