#include "daemon/registry.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/convert.h"
#include "kmcl_core/base/status_macros.h"

namespace kmcld {

PartitionEntry::~PartitionEntry() = default;

absl::Status PartitionEntry::FreeBuffer(uint64_t buffer_id) {
  kmcl::MutexLock lock(&mu);
  auto it = buffers.find(buffer_id);
  if (it == buffers.end()) {
    return absl::NotFoundError(absl::StrCat("guest buffer ", buffer_id, " does not exist"));
  }
  if (it->second.users != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "guest buffer ", buffer_id,
        " is in use by a call in progress (a memory transfer or a GPADL being created over it); "
        "try again when it has finished"));
  }
  for (uint64_t pfn : it->second.pfns) {
    if (partition().gpadls().CoversPage(pfn)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "guest buffer ", buffer_id, " is still covered by a GPADL; tear it down first"));
    }
  }
  RETURN_IF_ERROR(partition().memory().FreePages(it->second.pfns));
  buffer_bytes -= it->second.byte_count;
  buffers.erase(it);
  return absl::OkStatus();
}

BufferUse UseBuffersLocked(const std::shared_ptr<PartitionEntry>& entry,
                           std::vector<uint64_t> buffer_ids) {
  for (uint64_t id : buffer_ids) ++entry->buffers.at(id).users;
  BufferUse use;
  use.entry_ = entry;
  use.buffer_ids_ = std::move(buffer_ids);
  return use;
}

void BufferUse::Release() {
  if (entry_ == nullptr) return;
  kmcl::MutexLock lock(&entry_->mu);
  for (uint64_t id : buffer_ids_) {
    // A buffer in use cannot be freed; only DeletePartition drops it,
    // when no channel of the partition is left for its pages to reach.
    auto it = entry_->buffers.find(id);
    if (it != entry_->buffers.end() && it->second.users > 0) --it->second.users;
  }
  entry_.reset();
  buffer_ids_.clear();
}

Registry::Registry(RegistryLimits limits, EventLog& log, Timer& timer)
    : limits_(limits), log_(log), timer_(timer) {}

Registry::~Registry() { DeleteAll(); }

void Registry::DeleteAll() {
  for (const auto& p : ListPartitions()) Delete(p, /*force=*/true, /*even_pinned=*/true).IgnoreError();
}

absl::StatusOr<std::shared_ptr<PartitionEntry>> Registry::AddPartition(
    std::unique_ptr<kmcl::Partition> partition) {
  if (partition == nullptr) return absl::InvalidArgumentError("no partition");
  if (absl::Status s = ValidatePartitionId(partition->id()); !s.ok()) return s;
  auto entry = std::make_shared<PartitionEntry>(std::move(partition));
  {
    kmcl::MutexLock lock(&mu_);
    if (partitions_.contains(entry->id())) {
      return absl::AlreadyExistsError(absl::StrCat("partition '", entry->id(), "' already exists"));
    }
    if (partitions_.size() >= limits_.max_partitions) {
      return absl::ResourceExhaustedError(absl::StrCat("kmcld holds ", partitions_.size(),
                                                       " partitions, its limit (max_partitions)"));
    }
    partitions_.emplace(entry->id(), entry);
  }
  kmcl::v1::Event e;
  e.set_kind(kmcl::v1::EVENT_KIND_PARTITION_CREATED);
  e.set_partition_id(entry->id());
  log_.Append(std::move(e));
  return entry;
}

absl::StatusOr<std::shared_ptr<PartitionEntry>> Registry::GetPartition(const std::string& id) const {
  if (id.empty()) return absl::InvalidArgumentError("partition_id is required");
  if (absl::Status s = ValidatePartitionId(id); !s.ok()) return s;
  kmcl::MutexLock lock(&mu_);
  auto it = partitions_.find(id);
  if (it == partitions_.end()) {
    return absl::NotFoundError(absl::StrCat("partition '", id.substr(0, 64), "' does not exist"));
  }
  return it->second;
}

bool Registry::HasPartition(const std::string& id) const {
  kmcl::MutexLock lock(&mu_);
  return partitions_.contains(id);
}

std::vector<std::shared_ptr<PartitionEntry>> Registry::ListPartitions() const {
  kmcl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<PartitionEntry>> out;
  for (auto& [id, p] : partitions_) out.push_back(p);
  return out;
}

absl::StatusOr<std::vector<std::shared_ptr<PartitionEntry>>> Registry::PartitionsFor(
    const std::string& id) const {
  if (id.empty()) return ListPartitions();
  auto p = GetPartition(id);
  if (!p.ok()) return p.status();
  return std::vector<std::shared_ptr<PartitionEntry>>{*p};
}

std::string Registry::NextPartitionId() {
  kmcl::MutexLock lock(&mu_);
  for (;;) {
    std::string id = absl::StrCat("p-", next_partition_++);
    if (!partitions_.contains(id)) return id;
  }
}

absl::Status Registry::DeletePartition(const std::string& id, bool force) {
  auto entry = GetPartition(id);
  if (!entry.ok()) return entry.status();
  return Delete(*entry, force, /*even_pinned=*/false);
}

absl::Status Registry::Delete(const std::shared_ptr<PartitionEntry>& p, bool force, bool even_pinned) {
  const std::string id = p->id();
  std::vector<std::shared_ptr<Endpoint>> endpoints;
  {
    kmcl::MutexLock lock(&p->mu);
    if (p->deleted) return absl::NotFoundError(absl::StrCat("partition '", id, "' is being deleted"));
    if (p->pinned_ && !even_pinned) {
      return absl::FailedPreconditionError(absl::StrCat(
          "partition '", id, "' is in use by kmcld's in-process demo (--demo)"));
    }
    const size_t device_offers = p->devices_ == nullptr ? 0 : p->devices_->options().services.size();
    const bool has_channels = !p->hosts.empty() || !p->guests.empty() ||
                              p->partition().ServerChannels().size() > device_offers;
    if (has_channels && !force) {
      return absl::FailedPreconditionError(absl::StrCat(
          "partition '", id, "' has channels; rescind and clean them up, or delete with force"));
    }
    p->deleted = true;
    for (auto& [key, ep] : p->hosts) endpoints.push_back(ep);
    for (auto& ep : p->guests) endpoints.push_back(ep);
  }
  {
    kmcl::MutexLock lock(&mu_);
    auto it = partitions_.find(id);
    if (it != partitions_.end() && it->second == p) partitions_.erase(it);
  }
  // Release what every tool holds first: a guest's close waits for the host
  // to unmap the ring, which waits for the deliveries the host tool holds.
  for (auto& ep : endpoints) ep->EndStreamAndRelease();
  // Guests first (their close lets the host side finish quickly), then hosts.
  std::stable_sort(endpoints.begin(), endpoints.end(), [](const auto& a, const auto& b) {
    return a->role() == kmcl::v1::ENDPOINT_ROLE_GUEST && b->role() != kmcl::v1::ENDPOINT_ROLE_GUEST;
  });
  for (auto& ep : endpoints) FreeEndpoint(p, ep).IgnoreError();  // a racing close may win
  // Then the built-in devices (their guests close, their offers are
  // rescinded), unless a device call still holds them: it holds the entry
  // too, and drops them first.
  std::shared_ptr<PartitionDevices> devices;
  {
    kmcl::MutexLock lock(&p->mu);
    devices.swap(p->devices_);
  }
  devices.reset();
  {
    kmcl::MutexLock lock(&p->mu);
    for (auto& [bid, buffer] : p->buffers) p->partition().memory().FreePages(buffer.pfns).IgnoreError();
    p->buffers.clear();
  }
  kmcl::v1::Event e;
  e.set_kind(kmcl::v1::EVENT_KIND_PARTITION_DELETED);
  e.set_partition_id(id);
  log_.Append(std::move(e));
  return absl::OkStatus();
}

absl::Status Registry::AttachDevices(const std::shared_ptr<PartitionEntry>& partition, DeviceOptions options,
                                     const SavedDevices* saved) {
  if (options.services.empty()) return absl::OkStatus();
  if (partition->devices() != nullptr) {
    return absl::AlreadyExistsError(absl::StrCat("partition '", partition->id(), "' has devices already"));
  }
  options.log = &log_;
  options.peer_log = partition->peer_log;  // one budget with its endpoints
  auto created = PartitionDevices::Create(partition->partition(), std::move(options), saved);
  if (!created.ok()) return created.status();
  std::shared_ptr<PartitionDevices> devices = *std::move(created);
  {
    kmcl::MutexLock lock(&partition->mu);
    if (!partition->deleted) {
      partition->devices_ = std::move(devices);
      return absl::OkStatus();
    }
  }
  devices.reset();  // blocking: outside the lock
  return absl::NotFoundError(absl::StrCat("partition '", partition->id(), "' was deleted"));
}

void Registry::ReleaseAllStreams(const absl::Status& why) {
  for (const auto& p : ListPartitions()) {
    std::vector<std::shared_ptr<Endpoint>> endpoints;
    {
      kmcl::MutexLock lock(&p->mu);
      for (auto& [key, ep] : p->hosts) endpoints.push_back(ep);
      for (auto& ep : p->guests) endpoints.push_back(ep);
    }
    for (auto& ep : endpoints) ep->EndStreamAndRelease(why);
  }
}

absl::Status Registry::FreeEndpoint(const std::shared_ptr<PartitionEntry>& partition,
                                    const std::shared_ptr<Endpoint>& endpoint) {
  // Claim the endpoint first: of concurrent frees (two CloseChannel calls, a
  // close racing a partition deletion) exactly one proceeds.
  {
    kmcl::MutexLock lock(&partition->mu);
    bool found = false;
    for (auto it = partition->hosts.begin(); it != partition->hosts.end(); ++it) {
      if (it->second == endpoint) {
        partition->hosts.erase(it);
        found = true;
        break;
      }
    }
    auto& guests = partition->guests;
    auto it = std::find(guests.begin(), guests.end(), endpoint);
    if (it != guests.end()) {
      guests.erase(it);
      found = true;
    }
    if (!found) {
      return absl::NotFoundError(absl::StrCat("the ", EndpointRoleName(endpoint->role()),
                                              " endpoint of channel ", endpoint->relid(),
                                              " is already being freed"));
    }
  }
  endpoint->ExpectClose();
  endpoint->EndStreamAndRelease();
  const bool was_enabled = endpoint->channel().connection() != kmcl::ConnectionState::kDisabled;
  endpoint->channel().Disable().IgnoreError();  // already disabled is fine
  if (was_enabled && endpoint->role() == kmcl::v1::ENDPOINT_ROLE_HOST) endpoint->MarkRescinded();
  kmcl::v1::Event e;
  e.set_kind(kmcl::v1::EVENT_KIND_CLEANED_UP);
  e.set_partition_id(partition->id());
  *e.mutable_channel() = endpoint->Ref();
  e.set_role(endpoint->role());
  log_.Append(std::move(e));
  return absl::OkStatus();
}

namespace {

// FAILED_PRECONDITION for a ChannelRef whose offer_sequence is not the
// channel's current incarnation: stale (older) or not yet given (newer: a
// sequence of another kmcld, or from before a restart), with the current.
absl::Status OfferSequenceMismatch(const kmcl::v1::ChannelRef& ref, uint64_t current) {
  return absl::FailedPreconditionError(absl::StrCat(
      "channel ", ref.channel_id(), " of partition '", ref.partition_id(), "': offer_sequence ",
      ref.offer_sequence(),
      ref.offer_sequence() < current ? " is stale (an older incarnation; the current one is "
                                     : " is in the future (no offer had it yet; the current one is ",
      current, ")"));
}

}  // namespace

absl::StatusOr<ResolvedChannel> Registry::Resolve(const kmcl::v1::ChannelRef& ref) const {
  if (ref.partition_id().empty()) return absl::InvalidArgumentError("channel.partition_id is required");
  auto partition = GetPartition(ref.partition_id());
  if (!partition.ok()) return partition.status();
  if (ref.channel_id() == 0) return absl::InvalidArgumentError("channel.channel_id is required");
  ResolvedChannel out;
  out.partition = *partition;
  out.relid = ref.channel_id();
  std::optional<kmcl::ServerChannelInfo> current;  // the control plane's incarnation of the relid
  for (kmcl::ServerChannelInfo& info : out.partition->partition().ServerChannels()) {
    if (info.relid == ref.channel_id()) current = std::move(info);
  }
  kmcl::MutexLock lock(&out.partition->mu);
  // A relid is reused once the guest released it, while kmcld may still hold
  // an older incarnation's endpoints (a host awaiting CleanupChannel, a
  // rescinded guest awaiting CloseChannel). The ref names one incarnation:
  // its offer_sequence, else the current offer, else the newest kmcld holds.
  uint64_t newest = 0;
  for (const auto& [key, ep] : out.partition->hosts) {
    if (key.first == out.relid) newest = std::max(newest, key.second);
  }
  std::vector<std::pair<uint64_t, std::shared_ptr<Endpoint>>> guests;  // (sequence, endpoint)
  for (const auto& ep : out.partition->guests) {
    if (ep->relid() == out.relid) guests.emplace_back(ep->Ref().offer_sequence(), ep);
  }
  for (const auto& [sequence, ep] : guests) newest = std::max(newest, sequence);
  const uint64_t known = current.has_value() ? current->offer_sequence : newest;
  const uint64_t sequence = ref.offer_sequence() != 0 ? ref.offer_sequence() : known;
  out.offer_sequence = sequence;
  if (current.has_value() && current->offer_sequence == sequence) out.info = std::move(current);
  if (auto it = out.partition->hosts.find({out.relid, sequence}); it != out.partition->hosts.end()) {
    out.host = it->second;
  }
  for (const auto& [guest_sequence, ep] : guests) {
    // 0: a guest that opened with wait_for_offer, whose incarnation kmcld
    // did not record; it goes with the current one.
    if (guest_sequence == sequence || (guest_sequence == 0 && sequence == known)) out.guest = ep;
  }
  if (out.info.has_value() || out.host != nullptr || out.guest != nullptr) return out;
  if (known != 0) return OfferSequenceMismatch(ref, known);
  return absl::NotFoundError(absl::StrCat("channel ", ref.channel_id(), " of partition '",
                                          ref.partition_id(), "' does not exist"));
}

absl::StatusOr<std::shared_ptr<Endpoint>> Registry::ResolveEndpoint(
    const kmcl::v1::EndpointRef& ref) const {
  auto channel = Resolve(ref.channel());
  if (!channel.ok()) return channel.status();
  std::shared_ptr<Endpoint> ep;
  switch (ref.role()) {
    case kmcl::v1::ENDPOINT_ROLE_HOST:
      ep = channel->host;
      break;
    case kmcl::v1::ENDPOINT_ROLE_GUEST:
      ep = channel->guest;
      break;
    default:
      return absl::InvalidArgumentError("endpoint.role must be HOST or GUEST");
  }
  if (ep == nullptr) {
    return absl::NotFoundError(absl::StrCat("channel ", channel->relid, " of partition '",
                                            channel->partition->id(), "' has no ",
                                            EndpointRoleName(ref.role()), " endpoint in kmcld"));
  }
  return ep;
}

std::vector<ResolvedChannel> Registry::Channels(const std::shared_ptr<PartitionEntry>& partition) const {
  std::map<std::pair<uint32_t, uint64_t>, ResolvedChannel> out;
  for (kmcl::ServerChannelInfo& info : partition->partition().ServerChannels()) {
    ResolvedChannel& c = out[{info.relid, info.offer_sequence}];
    c.partition = partition;
    c.relid = info.relid;
    c.offer_sequence = info.offer_sequence;
    c.info = std::move(info);
  }
  kmcl::MutexLock lock(&partition->mu);
  for (auto& [key, ep] : partition->hosts) {
    ResolvedChannel& c = out[key];
    c.partition = partition;
    c.relid = key.first;
    c.offer_sequence = key.second;
    c.host = ep;
  }
  for (auto& ep : partition->guests) {
    const kmcl::v1::ChannelRef ref = ep->Ref();
    if (ref.channel_id() == 0) continue;
    // Its own incarnation (one kmcld did not record, wait_for_offer: the
    // newest), never a newer offer that reused the relid.
    ResolvedChannel* own = nullptr;
    for (auto& [key, c] : out) {
      if (key.first == ref.channel_id() && (ref.offer_sequence() == 0 || key.second == ref.offer_sequence())) {
        own = &c;
      }
    }
    if (own != nullptr) own->guest = ep;
  }
  std::vector<ResolvedChannel> list;
  for (auto& [key, c] : out) list.push_back(std::move(c));
  return list;
}

kmcl::v1::Channel Registry::Describe(const ResolvedChannel& c) const {
  std::optional<kmcl::ChannelSnapshot> host, guest;
  if (c.host != nullptr) host = c.host->channel().Snapshot();
  if (c.guest != nullptr) guest = c.guest->channel().Snapshot();
  return Describe(c, host.has_value() ? &*host : nullptr, guest.has_value() ? &*guest : nullptr);
}

kmcl::v1::Channel Registry::Describe(const ResolvedChannel& c, const kmcl::ChannelSnapshot* host_snapshot,
                                     const kmcl::ChannelSnapshot* guest_snapshot) const {
  kmcl::v1::Channel out;
  if (c.info.has_value()) {
    *out.mutable_offer() = ToProto(*c.info, c.partition->id());
  } else if (c.host != nullptr && c.host->offer().has_value()) {
    *out.mutable_offer() = *c.host->offer();
    out.mutable_offer()->set_opened(false);
  } else {
    out.mutable_offer()->mutable_channel()->set_partition_id(c.partition->id());
    out.mutable_offer()->mutable_channel()->set_channel_id(c.relid);
    out.mutable_offer()->mutable_channel()->set_offer_sequence(c.offer_sequence);
  }
  out.mutable_host()->set_role(kmcl::v1::ENDPOINT_ROLE_HOST);
  out.mutable_guest()->set_role(kmcl::v1::ENDPOINT_ROLE_GUEST);
  if (c.host != nullptr) {
    *out.mutable_settings() = c.host->settings();
    out.mutable_offer()->set_friendly_name(c.host->settings().friendly_name());
    *out.mutable_host() = ToProto(*host_snapshot, kmcl::v1::ENDPOINT_ROLE_HOST, c.host->rescinded(),
                                  c.host->attached());
  }
  if (c.guest != nullptr) {
    *out.mutable_guest() = ToProto(*guest_snapshot, kmcl::v1::ENDPOINT_ROLE_GUEST, c.guest->rescinded(),
                                   c.guest->attached());
  }
  const std::shared_ptr<Endpoint>& any = c.host != nullptr ? c.host : c.guest;
  if (any != nullptr) {
    auto mmio = any->channel().MmioSpace();
    if (mmio.ok()) {
      out.set_mmio_address(mmio->first);
      out.set_mmio_size(mmio->second);
    }
  }
  return out;
}

}  // namespace kmcld
