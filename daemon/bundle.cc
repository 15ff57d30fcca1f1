#include "daemon/bundle.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/convert.h"
#include "kmcl_core/saved/saved_blob.h"
#include "proto/event.pb.h"

namespace kmcld {

namespace {

bool Running(Endpoint& ep) {
  kmcl::ChannelSnapshot s = ep.channel().Snapshot();
  return s.connection == kmcl::ConnectionState::kOpened && s.run == kmcl::RunState::kActive;
}

absl::StatusOr<saved::SavedEndpoint> SaveEndpoint(Endpoint& ep, bool was_running) {
  saved::SavedEndpoint out;
  out.set_role(ep.role());
  kmcl::v1::ChannelRef ref = ep.Ref();
  out.set_relid(ref.channel_id());
  out.set_offer_sequence(ref.offer_sequence());
  out.set_vtl(ep.channel().client_vtl());
  if (ep.role() == kmcl::v1::ENDPOINT_ROLE_HOST) {
    *out.mutable_settings() = ep.settings();
    if (auto offer = ep.offer(); offer.has_value()) *out.mutable_offer() = *offer;
  }
  out.set_max_packet_size(ep.max_packet_size());
  out.set_transaction_quota(ep.channel().Snapshot().transaction_quota);
  out.set_was_running(was_running);
  auto blob = ep.channel().Save();
  if (!blob.ok()) {
    return absl::Status(blob.status().code(), absl::StrCat(EndpointRoleName(ep.role()),
                                                           " endpoint of channel ", ref.channel_id(),
                                                           ": ", blob.status().message()));
  }
  out.set_channel_blob(*std::move(blob));
  return out;
}

// The bundle's bytes, with its CRC (version 3) as their last field.
std::string SealBundle(saved::SavedBundle& bundle) {
  bundle.set_version(kBundleVersion);
  bundle.clear_bundle_crc32();
  std::string bytes = bundle.SerializeAsString();
  saved::SavedBundle crc;
  crc.set_bundle_crc32(kmcl::Crc32(bytes));
  return bytes + crc.SerializeAsString();
}

// The length of a serialized bundle_crc32 field: tag, then 4 bytes.
constexpr size_t kCrcFieldBytes = 5;

absl::StatusOr<saved::SavedBundle> ParseBundle(const std::string& blob, saved::SavedBundle::Kind kind) {
  saved::SavedBundle bundle;
  if (blob.empty() || !bundle.ParseFromString(blob)) {
    return absl::InvalidArgumentError("the blob is not a kmcld saved bundle (truncated or corrupted)");
  }
  if (bundle.version() > kBundleVersion) {
    return absl::FailedPreconditionError(absl::StrCat("the bundle is format version ", bundle.version(),
                                                      "; this kmcld reads up to ", kBundleVersion));
  }
  // Version 3 carries a CRC of all its other bytes; one that says an older
  // version but has a CRC (a flipped version) is checked too.
  if (bundle.version() >= 3 || bundle.has_bundle_crc32()) {
    saved::SavedBundle crc;
    crc.set_bundle_crc32(bundle.bundle_crc32());
    const bool ok = blob.size() > kCrcFieldBytes &&
                    blob.compare(blob.size() - kCrcFieldBytes, kCrcFieldBytes, crc.SerializeAsString()) == 0 &&
                    kmcl::Crc32(absl::string_view(blob).substr(0, blob.size() - kCrcFieldBytes)) ==
                        bundle.bundle_crc32();
    if (!ok) {
      return absl::InvalidArgumentError(
          "the bundle's CRC does not match its content (truncated, corrupted or edited)");
    }
  }
  if (bundle.version() == 0 || bundle.kind() != kind) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the blob is not a kmcld ", kind == saved::SavedBundle::KIND_PARTITION ? "partition" : "channel",
        " bundle"));
  }
  return bundle;
}

absl::Status WasDeleted(const PartitionEntry& p) {
  return absl::NotFoundError(absl::StrCat("partition '", p.id(), "' was deleted"));
}

// Re-creates one endpoint from its saved form in `partition`; NOT_FOUND
// when a DeletePartition of it runs meanwhile.
absl::StatusOr<std::shared_ptr<Endpoint>> RestoreEndpoint(Registry& registry,
                                                          const std::shared_ptr<PartitionEntry>& p,
                                                          const saved::SavedEndpoint& saved) {
  if (saved.role() != kmcl::v1::ENDPOINT_ROLE_HOST && saved.role() != kmcl::v1::ENDPOINT_ROLE_GUEST) {
    return absl::InvalidArgumentError("a saved endpoint has no role");
  }
  auto ep = Endpoint::Create(p->shared_partition(), p->id(), saved.role(), registry.limits().endpoint,
                             registry.log(), registry.timer(), p->peer_log);
  if (!ep.ok()) return ep.status();
  if (saved.max_packet_size() != 0) (*ep)->set_max_packet_size(saved.max_packet_size());
  if (absl::Status s = (*ep)->channel().Restore(saved.channel_blob()); !s.ok()) return s;
  // Restore brought back the quota KMCL saved; cap it by the window again.
  (*ep)->SetQuota(saved.transaction_quota());
  {
    kmcl::MutexLock lock(&p->mu);  // a deletion already under way: no endpoint to disable
    if (p->deleted) return WasDeleted(*p);
  }
  if (absl::Status s = (*ep)->channel().Enable(); !s.ok()) return s;
  const uint32_t relid = (*ep)->channel().relid();
  uint64_t sequence = saved.offer_sequence();
  for (const kmcl::ServerChannelInfo& info : p->partition().ServerChannels()) {
    if (info.relid == relid) sequence = info.offer_sequence;
  }
  if (saved.role() == kmcl::v1::ENDPOINT_ROLE_HOST) {
    kmcl::v1::Offer offer = saved.offer();
    offer.mutable_channel()->set_partition_id(p->id());
    offer.mutable_channel()->set_channel_id(relid);
    offer.mutable_channel()->set_offer_sequence(sequence);
    (*ep)->set_offer(saved.settings(), offer);
  } else {
    (*ep)->set_offer_sequence(sequence);
  }
  bool deleted;
  {
    kmcl::MutexLock lock(&p->mu);
    deleted = p->deleted;
    if (!deleted && saved.role() == kmcl::v1::ENDPOINT_ROLE_HOST) {
      p->hosts[{relid, sequence}] = *ep;
    } else if (!deleted) {
      p->guests.push_back(*ep);
    }
  }
  if (deleted) {
    // DeletePartition freed the endpoints it found, not this one: it is
    // disabled here, before anyone sees it.
    (*ep)->channel().Disable().IgnoreError();
    return WasDeleted(*p);
  }
  (*ep)->Event(kmcl::v1::EVENT_KIND_RESTORED, 0);
  return ep;
}

void ToSaved(const PartitionDevices& devices, const SavedDevices& blobs, saved::SavedDevices* out) {
  out->set_emulated_guest(devices.options().emulated_guest);
  out->set_heartbeat_timeout_ms(
      static_cast<uint32_t>(absl::ToInt64Milliseconds(devices.options().host.heartbeat_timeout)));
  for (const SavedDevices::Device& d : blobs.devices) {
    saved::SavedDevice* o = out->add_devices();
    o->set_name(kmcl::devices::ic::ServiceInfo(d.service).name);
    o->set_host_blob(d.host);
    o->set_guest_blob(d.guest);
  }
}

// The saved devices back as options and blobs; INVALID_ARGUMENT for a bad
// name or timeout.
absl::Status FromSaved(const saved::SavedDevices& in, DeviceOptions* options, SavedDevices* blobs) {
  std::vector<std::string> names;
  for (const saved::SavedDevice& d : in.devices()) names.push_back(d.name());
  auto services = ParseDeviceNames(names);
  if (!services.ok()) return absl::InvalidArgumentError(absl::StrCat("saved devices: ", services.status().message()));
  if (in.heartbeat_timeout_ms() == 0) return absl::InvalidArgumentError("saved devices: no heartbeat timeout");
  options->services = *services;
  options->emulated_guest = in.emulated_guest();
  options->host.heartbeat_timeout = absl::Milliseconds(in.heartbeat_timeout_ms());
  for (size_t i = 0; i < services->size(); ++i) {
    blobs->devices.push_back({(*services)[i], in.devices(i).host_blob(), in.devices(i).guest_blob()});
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> SavePartitionBundle(Registry& registry, const std::string& id,
                                                bool stay_paused) {
  auto p = registry.GetPartition(id);
  if (!p.ok()) return p.status();
  std::vector<std::shared_ptr<Endpoint>> endpoints;
  {
    kmcl::MutexLock lock(&(*p)->mu);
    for (auto& [key, ep] : (*p)->hosts) {
      if (ep->channel().connection() != kmcl::ConnectionState::kDisabled) endpoints.push_back(ep);
    }
    for (auto& ep : (*p)->guests) endpoints.push_back(ep);
  }
  std::vector<bool> was_running;
  absl::Status status;
  for (auto& ep : endpoints) {
    was_running.push_back(Running(*ep));
    if (was_running.back() && status.ok()) status = ep->channel().Pause();
  }
  saved::SavedBundle bundle;
  bundle.set_kind(saved::SavedBundle::KIND_PARTITION);
  // The devices next: their rings are saved with the partition below.
  std::shared_ptr<PartitionDevices> devices = (*p)->devices();
  bool devices_saved = false;
  if (devices != nullptr && status.ok()) {
    absl::StatusOr<SavedDevices> blobs = devices->Save();  // resumes them itself on failure
    if (blobs.ok()) {
      devices_saved = true;
      ToSaved(*devices, *blobs, bundle.mutable_devices());
    } else {
      status = absl::Status(blobs.status().code(), absl::StrCat("devices: ", blobs.status().message()));
    }
  }
  for (size_t i = 0; i < endpoints.size() && status.ok(); ++i) {
    auto e = SaveEndpoint(*endpoints[i], was_running[i]);
    if (e.ok()) {
      *bundle.add_endpoints() = *std::move(e);
    } else {
      status = e.status();
    }
  }
  if (status.ok()) {
    auto blob = (*p)->partition().Save();
    if (blob.ok()) {
      bundle.set_partition_blob(*std::move(blob));
    } else {
      status = blob.status();
    }
  }
  {
    kmcl::MutexLock lock(&(*p)->mu);
    for (auto& [bid, b] : (*p)->buffers) {
      saved::SavedBuffer* out = bundle.add_buffers();
      out->set_buffer_id(bid);
      out->set_byte_count(b.byte_count);
      for (uint64_t pfn : b.pfns) out->add_pfns(pfn);
    }
    bundle.set_next_buffer_id((*p)->next_buffer_id);
  }
  if (!status.ok() || !stay_paused) {
    for (size_t i = 0; i < endpoints.size(); ++i) {
      endpoints[i]->channel().Thaw();
      if (was_running[i]) endpoints[i]->channel().Start().IgnoreError();
    }
    if (devices_saved) devices->Resume();
  }
  if (!status.ok()) return status;
  return SealBundle(bundle);
}

absl::StatusOr<std::shared_ptr<PartitionEntry>> RestorePartitionBundle(Registry& registry,
                                                                       const std::string& blob,
                                                                       const std::string& id) {
  // The saved id (id empty) is checked by AddPartition.
  if (!id.empty()) {
    if (absl::Status s = ValidatePartitionId(id); !s.ok()) return s;
  }
  auto bundle = ParseBundle(blob, saved::SavedBundle::KIND_PARTITION);
  if (!bundle.ok()) return bundle.status();
  if (!id.empty() && registry.HasPartition(id)) {
    return absl::AlreadyExistsError(absl::StrCat("partition '", id, "' already exists"));
  }
  auto partition = kmcl::Partition::Restore(bundle->partition_blob(), id);
  if (!partition.ok()) return partition.status();
  auto entry = registry.AddPartition(*std::move(partition));
  if (!entry.ok()) return entry.status();
  std::shared_ptr<PartitionEntry> p = *entry;
  absl::Status status;
  {
    kmcl::MutexLock lock(&p->mu);
    p->next_buffer_id = bundle->next_buffer_id();
    for (const saved::SavedBuffer& b : bundle->buffers()) {
      GuestBuffer buffer;
      buffer.buffer_id = b.buffer_id();
      buffer.byte_count = b.byte_count();
      buffer.pfns.assign(b.pfns().begin(), b.pfns().end());
      bool ok = buffer.byte_count == buffer.pfns.size() * 4096 && buffer.buffer_id != 0 &&
                buffer.buffer_id < p->next_buffer_id;
      for (uint64_t pfn : buffer.pfns) ok = ok && p->partition().memory().IsAllocated(pfn);
      if (!ok) {
        status = absl::InvalidArgumentError(absl::StrCat("saved guest buffer ", b.buffer_id(),
                                                         " is inconsistent with guest memory"));
        break;
      }
      p->buffer_bytes += buffer.byte_count;
      p->buffers.emplace(buffer.buffer_id, std::move(buffer));
    }
  }
  // The devices before the endpoints: a remote tool's guest endpoint on a
  // device's offer re-attaches to the restored VSP's channel.
  if (status.ok() && bundle->has_devices()) {
    DeviceOptions options;
    SavedDevices blobs;
    status = FromSaved(bundle->devices(), &options, &blobs);
    if (status.ok()) status = registry.AttachDevices(p, std::move(options), &blobs);
    if (!status.ok()) status = absl::Status(status.code(), absl::StrCat("restoring the devices: ", status.message()));
  }
  std::vector<std::pair<std::shared_ptr<Endpoint>, bool>> restored;
  for (const saved::SavedEndpoint& saved : bundle->endpoints()) {
    if (!status.ok()) break;
    auto ep = RestoreEndpoint(registry, p, saved);
    if (!ep.ok()) {
      status = absl::Status(ep.status().code(),
                            absl::StrCat("restoring the ", EndpointRoleName(saved.role()),
                                         " endpoint of channel ", saved.relid(), ": ",
                                         ep.status().message()));
      break;
    }
    restored.emplace_back(*ep, saved.was_running());
  }
  for (auto& [ep, was_running] : restored) {
    if (!status.ok()) break;
    if (was_running && !Running(*ep)) status = ep->channel().Start();
  }
  if (!status.ok()) {
    // NOT_FOUND: a DeletePartition of it ran meanwhile, which is why the
    // restore failed (its endpoints disabled under it): say so.
    if (absl::IsNotFound(registry.DeletePartition(p->id(), /*force=*/true))) return WasDeleted(*p);
    return status;
  }
  return p;
}

absl::StatusOr<std::string> SaveChannelBundle(Registry& registry, const kmcl::v1::ChannelRef& ref) {
  kmcl::v1::EndpointRef er;
  *er.mutable_channel() = ref;
  er.set_role(kmcl::v1::ENDPOINT_ROLE_HOST);
  auto ep = registry.ResolveEndpoint(er);
  if (!ep.ok()) return ep.status();
  kmcl::ChannelSnapshot snap = (*ep)->channel().Snapshot();
  if (snap.connection == kmcl::ConnectionState::kDisabled) {
    return absl::FailedPreconditionError("a disabled or rescinded channel has nothing to save");
  }
  if (snap.run == kmcl::RunState::kActive) {
    return absl::FailedPreconditionError("the host endpoint is running; PauseChannel first");
  }
  saved::SavedBundle bundle;
  bundle.set_kind(saved::SavedBundle::KIND_CHANNEL);
  auto e = SaveEndpoint(**ep, /*was_running=*/false);
  if (!e.ok()) return e.status();
  *bundle.add_endpoints() = *std::move(e);
  return SealBundle(bundle);
}

absl::StatusOr<kmcl::v1::ChannelRef> RestoreChannelBundle(Registry& registry,
                                                          const std::string& partition_id,
                                                          const std::string& blob) {
  auto p = registry.GetPartition(partition_id);
  if (!p.ok()) return p.status();
  auto bundle = ParseBundle(blob, saved::SavedBundle::KIND_CHANNEL);
  if (!bundle.ok()) return bundle.status();
  if (bundle->endpoints_size() != 1 || bundle->endpoints(0).role() != kmcl::v1::ENDPOINT_ROLE_HOST) {
    return absl::InvalidArgumentError("a channel bundle holds exactly one host endpoint");
  }
  auto ep = RestoreEndpoint(registry, *p, bundle->endpoints(0));
  if (!ep.ok()) return ep.status();
  return (*ep)->Ref();
}

}  // namespace kmcld
