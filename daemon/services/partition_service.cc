#include "daemon/services/partition_service.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcld {

kmcl::v1::Partition DescribePartition(PartitionEntry& entry) {
  kmcl::Partition& p = entry.partition();
  kmcl::v1::Partition out;
  out.set_id(p.id());
  const kmcl::PartitionOptions& o = p.options();
  for (uint8_t vtl : o.client_vtls) {
    out.add_client_vtls(vtl);
    if (out.vmbus_version() == 0) {
      if (auto v = p.NegotiatedVersion(vtl); v.has_value()) {
        out.set_vmbus_version(static_cast<kmcl::v1::VmbusVersion>(*v));
      }
    }
  }
  out.mutable_mmio()->set_base(o.mmio_base);
  out.mutable_mmio()->set_size_bytes(o.mmio_size);
  out.set_guest_memory_bytes(p.memory().size_bytes());
  out.set_channel_count(static_cast<uint32_t>(p.ServerChannels().size()));
  out.set_vmbus_handle(p.vmbus_handle());
  if (std::shared_ptr<PartitionDevices> devices = entry.devices(); devices != nullptr) {
    for (std::string& name : DeviceNames(devices->options().services)) out.add_devices(std::move(name));
    out.set_devices_remote_guest(!devices->options().emulated_guest);
  }
  return out;
}

absl::StatusOr<DeviceOptions> DeviceOptionsFrom(const kmcl::v1::CreatePartitionRequest& request,
                                                const ServiceLimits& limits) {
  auto services = ParseDeviceNames({request.devices().begin(), request.devices().end()});
  if (!services.ok()) return absl::InvalidArgumentError(absl::StrCat("devices: ", services.status().message()));
  DeviceOptions d;
  d.services = *std::move(services);
  d.emulated_guest = !request.devices_remote_guest();
  d.host.heartbeat_timeout = absl::Milliseconds(limits.device_heartbeat_timeout_ms);
  return d;
}

absl::StatusOr<kmcl::PartitionOptions> PartitionOptionsFrom(
    const kmcl::v1::CreatePartitionRequest& r) {
  kmcl::PartitionOptions o;
  o.id = r.id();
  if (!o.id.empty()) {
    if (absl::Status s = ValidatePartitionId(o.id); !s.ok()) return s;
  }
  if (!kmcl::v1::VmbusVersion_IsValid(r.vmbus_version())) {
    return absl::InvalidArgumentError(absl::StrCat("vmbus_version ", r.vmbus_version(),
                                                   " is not a VMBus protocol version"));
  }
  o.max_version = r.vmbus_version() == kmcl::v1::VMBUS_VERSION_UNSPECIFIED
                      ? kmcl::wire::kVersionCopper
                      : static_cast<uint32_t>(r.vmbus_version());
  if (r.client_vtls_size() > 0) {
    o.client_vtls.clear();
    for (uint32_t vtl : r.client_vtls()) {
      if (vtl > 2) return absl::InvalidArgumentError(absl::StrCat("client_vtls: VTL ", vtl, " is above 2"));
      o.client_vtls.insert(static_cast<uint8_t>(vtl));
    }
  }
  if (r.guest_memory_bytes() != 0) {
    if (r.guest_memory_bytes() % 4096 != 0 || r.guest_memory_bytes() > kmcl::kMaxGuestMemoryBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "guest_memory_bytes ", r.guest_memory_bytes(),
          " must be a multiple of 4096 and at most ", kmcl::kMaxGuestMemoryBytes));
    }
    o.memory_bytes = r.guest_memory_bytes();
  }
  if (r.mmio().base() != 0 || r.mmio().size_bytes() != 0) {
    if (r.mmio().size_bytes() == 0 || r.mmio().size_bytes() % 4096 != 0 ||
        r.mmio().base() % 4096 != 0) {
      return absl::InvalidArgumentError("mmio: base and size_bytes must be non-zero multiples of 4096");
    }
    if (r.mmio().base() < o.memory_bytes || r.mmio().base() + r.mmio().size_bytes() < r.mmio().base()) {
      return absl::InvalidArgumentError(absl::StrCat("mmio: the window at 0x", absl::Hex(r.mmio().base()),
                                                     " overlaps guest memory or wraps"));
    }
    o.mmio_base = r.mmio().base();
    o.mmio_size = r.mmio().size_bytes();
  }
  return o;
}

grpc::ServerUnaryReactor* PartitionService::ListPartitions(
    grpc::CallbackServerContext* ctx, const kmcl::v1::ListPartitionsRequest*,
    kmcl::v1::ListPartitionsResponse* response) {
  const security::Authorizer* authz = ctx_.authorizer;  // lists only what the caller may see
  if (absl::Status s = authz ? authz->CheckList(*ctx, "ListPartitions") : absl::OkStatus(); !s.ok()) {
    return FinishNow(ctx, s);
  }
  for (auto& p : ctx_.registry.ListPartitions()) {
    if (authz == nullptr || authz->Visible(*ctx, p->id())) *response->add_partitions() = DescribePartition(*p);
  }
  return FinishNow(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* PartitionService::CreatePartition(
    grpc::CallbackServerContext* ctx, const kmcl::v1::CreatePartitionRequest* request,
    kmcl::v1::Partition* response) {
  if (absl::Status s = Authorize(ctx_, ctx, "CreatePartition", *request); !s.ok()) return FinishNow(ctx, s);
  return FinishBlocking(ctx, ctx_.pool, {request->id(), ""}, [this, request, response]() -> absl::Status {
    auto options = PartitionOptionsFrom(*request);
    if (!options.ok()) return options.status();
    auto devices = DeviceOptionsFrom(*request, ctx_.limits);
    if (!devices.ok()) return devices.status();
    if (options->id.empty()) options->id = ctx_.registry.NextPartitionId();
    if (ctx_.registry.HasPartition(options->id)) {
      return absl::AlreadyExistsError(absl::StrCat("partition '", options->id, "' already exists"));
    }
    auto partition = kmcl::Partition::Create(*options);
    if (!partition.ok()) return partition.status();
    auto entry = ctx_.registry.AddPartition(*std::move(partition));
    if (!entry.ok()) return entry.status();
    if (absl::Status s = ctx_.registry.AttachDevices(*entry, *std::move(devices)); !s.ok()) {
      ctx_.registry.DeletePartition((*entry)->id(), /*force=*/true).IgnoreError();
      return s;
    }
    *response = DescribePartition(**entry);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* PartitionService::GetPartition(grpc::CallbackServerContext* ctx,
                                                         const kmcl::v1::GetPartitionRequest* request,
                                                         kmcl::v1::Partition* response) {
  if (absl::Status s = Authorize(ctx_, ctx, "GetPartition", *request); !s.ok()) return FinishNow(ctx, s);
  auto entry = ctx_.registry.GetPartition(request->id());
  if (entry.ok()) *response = DescribePartition(**entry);
  return FinishNow(ctx, entry.status());
}

grpc::ServerUnaryReactor* PartitionService::DeletePartition(
    grpc::CallbackServerContext* ctx, const kmcl::v1::DeletePartitionRequest* request,
    kmcl::v1::DeletePartitionResponse*) {
  if (absl::Status s = Authorize(ctx_, ctx, "DeletePartition", *request); !s.ok()) return FinishNow(ctx, s);
  // A forced delete runs at once past the pool's limits (so a partition's
  // stalled calls cannot keep it out), ends the calls queued on the
  // partition, and its release of the tools' deliveries unblocks the
  // running ones.
  return FinishBlocking(ctx, ctx_.pool, {request->id(), "", /*urgent=*/request->force()}, [this, request] {
    absl::Status s = ctx_.registry.DeletePartition(request->id(), request->force());
    if (s.ok()) {
      ctx_.pool.DropQueued(request->id(), absl::AbortedError(absl::StrCat(
                                              "partition '", request->id(), "' was deleted")));
    }
    return s;
  });
}

}  // namespace kmcld
