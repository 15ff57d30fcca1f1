// daemon/services/partition_service.h: kmcl.v1.PartitionService (see
// proto/partition.proto): list, create, get and delete emulated partitions.
//
// Thread-safe; DeletePartition runs on the blocking pool.
#ifndef KMCLD_DAEMON_SERVICES_PARTITION_SERVICE_H_
#define KMCLD_DAEMON_SERVICES_PARTITION_SERVICE_H_

#include "daemon/services/service_context.h"
#include "proto/partition.grpc.pb.h"

namespace kmcld {

// The Partition message describing `entry`.
kmcl::v1::Partition DescribePartition(PartitionEntry& entry);

// CreatePartitionRequest -> PartitionOptions, validated (id rules, VTLs,
// memory size, MMIO window outside guest memory, known version).
absl::StatusOr<kmcl::PartitionOptions> PartitionOptionsFrom(
    const kmcl::v1::CreatePartitionRequest& request);

// The built-in devices a CreatePartitionRequest asks for (an empty
// services list for none); INVALID_ARGUMENT naming a bad entry.
absl::StatusOr<DeviceOptions> DeviceOptionsFrom(const kmcl::v1::CreatePartitionRequest& request,
                                                const ServiceLimits& limits);

class PartitionService final : public kmcl::v1::PartitionService::CallbackService {
 public:
  explicit PartitionService(ServiceContext ctx) : ctx_(ctx) {}
  grpc::ServerUnaryReactor* ListPartitions(grpc::CallbackServerContext* ctx,
                                           const kmcl::v1::ListPartitionsRequest* request,
                                           kmcl::v1::ListPartitionsResponse* response) override;
  grpc::ServerUnaryReactor* CreatePartition(grpc::CallbackServerContext* ctx,
                                            const kmcl::v1::CreatePartitionRequest* request,
                                            kmcl::v1::Partition* response) override;
  grpc::ServerUnaryReactor* GetPartition(grpc::CallbackServerContext* ctx,
                                         const kmcl::v1::GetPartitionRequest* request,
                                         kmcl::v1::Partition* response) override;
  grpc::ServerUnaryReactor* DeletePartition(grpc::CallbackServerContext* ctx,
                                            const kmcl::v1::DeletePartitionRequest* request,
                                            kmcl::v1::DeletePartitionResponse* response) override;

 private:
  ServiceContext ctx_;
};

}  // namespace kmcld

#endif  // KMCLD_DAEMON_SERVICES_PARTITION_SERVICE_H_
