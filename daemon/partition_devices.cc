#include "daemon/partition_devices.h"

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "daemon/convert.h"

namespace kmcld {

using kmcl::devices::ic::IcEvent;
using kmcl::devices::ic::IcService;
using kmcl::devices::ic::IcVsc;
using kmcl::devices::ic::IcVsp;
using kmcl::devices::ic::ServiceInfo;

absl::StatusOr<std::vector<IcService>> ParseDeviceNames(const std::vector<std::string>& names) {
  const std::vector<IcService> all = {IcService::kHeartbeat, IcService::kShutdown, IcService::kTimeSync,
                                      IcService::kKvp};
  constexpr absl::string_view kKnown = "heartbeat, shutdown, timesync, kvp, default, none";
  if (names.empty()) return std::vector<IcService>{};
  std::vector<IcService> out;
  for (const std::string& raw : names) {
    const absl::string_view name = absl::StripAsciiWhitespace(raw);
    if (name == "none" || name == "default" || name == "all") {
      if (names.size() != 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("device \"", name, "\" must be the only entry of the list"));
      }
      return name == "none" ? std::vector<IcService>{} : all;
    }
    auto it = std::find_if(all.begin(), all.end(), [&](IcService s) { return ServiceInfo(s).name == name; });
    if (it == all.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown device \"", absl::CEscape(name.substr(0, 64)), "\" (", kKnown, ")"));
    }
    if (std::find(out.begin(), out.end(), *it) != out.end()) {
      return absl::InvalidArgumentError(absl::StrCat("device \"", name, "\" is listed twice"));
    }
    out.push_back(*it);
  }
  return out;
}

absl::StatusOr<std::vector<IcService>> ParseDeviceList(absl::string_view spec) {
  if (absl::StripAsciiWhitespace(spec).empty()) return std::vector<IcService>{};
  return ParseDeviceNames(absl::StrSplit(spec, ','));
}

std::vector<std::string> DeviceNames(const std::vector<IcService>& services) {
  std::vector<std::string> out;
  for (IcService s : services) out.push_back(ServiceInfo(s).name);
  return out;
}

PartitionDevices::PartitionDevices(std::string partition_id, DeviceOptions options)
    : partition_id_(std::move(partition_id)),
      options_(std::move(options)),
      peer_log_(options_.peer_log != nullptr ? options_.peer_log
                                             : std::make_shared<log::Limiter>(kPeerWarningsPerMinute)) {}

absl::StatusOr<std::unique_ptr<PartitionDevices>> PartitionDevices::Create(kmcl::Partition& partition,
                                                                           DeviceOptions options,
                                                                           const SavedDevices* saved) {
  std::unique_ptr<PartitionDevices> d(new PartitionDevices(partition.id(), std::move(options)));
  auto saved_of = [&](IcService s) -> const SavedDevices::Device* {
    if (saved == nullptr) return nullptr;
    for (const SavedDevices::Device& dev : saved->devices) {
      if (dev.service == s) return &dev;
    }
    return nullptr;
  };
  if (saved != nullptr && saved->devices.size() != d->options_.services.size()) {
    return absl::InvalidArgumentError("the saved devices are not the ones the partition lists");
  }
  for (IcService s : d->options_.services) {
    const SavedDevices::Device* from = saved_of(s);
    if (saved != nullptr && from == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("no saved state for the ", ServiceInfo(s).name, " device"));
    }
    kmcl::devices::ic::VspOptions vo;
    vo.host = d->options_.host;
    PartitionDevices* self = d.get();
    vo.on_event = [self, s](const IcEvent& e) { self->Record(s, e); };
    vo.on_dropped = [self, s](const std::string& what) { self->WarnDropped(s, what); };
    vo.on_peer_error = [self, s](const std::string& what) { self->ReportCorruptRing(s, what); };
    auto vsp = IcVsp::Create(s, partition.vmbus_handle(), std::move(vo), from == nullptr ? nullptr : &from->host);
    if (!vsp.ok()) {
      return absl::Status(vsp.status().code(),
                          absl::StrCat(ServiceInfo(s).name, " VSP: ", vsp.status().message()));
    }
    d->vsps_[s] = *std::move(vsp);
  }
  d->FindChannels(partition);
  if (d->options_.emulated_guest) {
    for (IcService s : d->options_.services) {
      const SavedDevices::Device* from = saved_of(s);
      if (from != nullptr && from->guest.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("the saved ", ServiceInfo(s).name, " device has no emulated guest"));
      }
      auto vsc = IcVsc::Create(partition, s, {}, from == nullptr ? nullptr : &from->guest);
      if (!vsc.ok()) {
        return absl::Status(vsc.status().code(),
                            absl::StrCat(ServiceInfo(s).name, " guest: ", vsc.status().message()));
      }
      d->vscs_[s] = *std::move(vsc);
    }
  }
  d->poller_ = std::thread([self = d.get()] { self->PollLoop(); });
  return d;
}

void PartitionDevices::FindChannels(kmcl::Partition& partition) {
  const std::vector<kmcl::ServerChannelInfo> offers = partition.ServerChannels();
  kmcl::MutexLock lock(&mu_);
  for (const auto& [service, vsp] : vsps_) {
    const kmcl::Guid instance = vsp->instance();
    for (const kmcl::ServerChannelInfo& info : offers) {
      if (info.offer.interface_instance != instance) continue;
      kmcl::v1::ChannelRef& ref = channels_[service];
      ref.set_partition_id(partition_id_);
      ref.set_channel_id(info.relid);
      ref.set_offer_sequence(info.offer_sequence);
    }
  }
}

PartitionDevices::~PartitionDevices() {
  {
    kmcl::MutexLock lock(&mu_);
    stopping_ = true;
    wake_.SignalAll();
  }
  if (poller_.joinable()) poller_.join();
  vscs_.clear();  // the guests close first, as a guest OS going down would
  vsps_.clear();  // then the offers are rescinded
}

void PartitionDevices::PollLoop() {
  for (;;) {
    {
      kmcl::MutexLock lock(&mu_);
      const absl::Time deadline = absl::Now() + options_.poll_interval;
      while (!stopping_ && !wake_.WaitWithDeadline(&mu_, deadline)) {
      }
      if (stopping_) return;
      if (saved_) continue;
    }
    for (auto& [service, vsp] : vsps_) vsp->Poll();
  }
}

void PartitionDevices::Record(IcService service, const IcEvent& event) {
  kmcl::v1::Event logged;
  {
    kmcl::MutexLock lock(&mu_);
    events_.push_back({absl::Now(), partition_id_, service, event});
    if (events_.size() > kMaxEvents) events_.pop_front();
    if (options_.log == nullptr) return;
    logged.set_kind(ToProto(event));
    logged.set_partition_id(partition_id_);
    if (auto it = channels_.find(service); it != channels_.end()) *logged.mutable_channel() = it->second;
    logged.set_role(kmcl::v1::ENDPOINT_ROLE_HOST);
    logged.set_detail(event.detail);
    if (event.kind == kmcl::devices::ic::IcEventKind::kShutdownAnswered) {
      logged.mutable_status()->set_code(event.guest_status);
    }
  }
  options_.log->Append(std::move(logged));  // outside mu_: Append wakes watchers
}

kmcl::v1::ChannelRef PartitionDevices::ChannelOf(IcService service) const {
  kmcl::MutexLock lock(&mu_);
  auto it = channels_.find(service);
  return it == channels_.end() ? kmcl::v1::ChannelRef() : it->second;
}

void PartitionDevices::ReportCorruptRing(IcService service, const std::string& what) {
  uint64_t dropped_before = 0;
  if (!peer_log_->Admit(&dropped_before)) return;  // still counted by the channel
  // The same detail as a tool's channel gives (Endpoint::OnPeerError), and
  // the device it is.
  std::string detail = absl::StrCat(what, "; interface_type ", ServiceInfo(service).interface_type.ToString(),
                                    "; device ", ServiceInfo(service).name);
  if (dropped_before != 0) absl::StrAppend(&detail, "; ", dropped_before, " earlier not logged");
  const kmcl::v1::ChannelRef channel = ChannelOf(service);
  if (options_.log == nullptr) {
    log::Channel(log::Level::kWarning, "ring corrupt", partition_id_, channel.channel_id(),
                 {{"role", "host"}, {"detail", detail}});
    return;
  }
  kmcl::v1::Event event;
  event.set_kind(kmcl::v1::EVENT_KIND_RING_CORRUPT);
  event.set_partition_id(partition_id_);
  *event.mutable_channel() = channel;
  event.set_role(kmcl::v1::ENDPOINT_ROLE_HOST);
  event.set_detail(std::move(detail));
  options_.log->Append(std::move(event));
}

void PartitionDevices::WarnDropped(IcService service, const std::string& what) {
  uint64_t dropped_before = 0;
  if (!peer_log_->Admit(&dropped_before)) return;
  log::Channel(log::Level::kWarning, "malformed packet from the guest", partition_id_,
               ChannelOf(service).channel_id(),
               {{"role", "host"},
                {"interface", ServiceInfo(service).name},
                {"interface_type", ServiceInfo(service).interface_type.ToString()},
                {"problem", what},
                {"dropped_before", dropped_before}});
}

IcVsp* PartitionDevices::vsp(IcService service) const {
  auto it = vsps_.find(service);
  return it == vsps_.end() ? nullptr : it->second.get();
}

IcVsc* PartitionDevices::vsc(IcService service) const {
  auto it = vscs_.find(service);
  return it == vscs_.end() ? nullptr : it->second.get();
}

std::vector<DeviceEventRecord> PartitionDevices::RecentEvents() const {
  kmcl::MutexLock lock(&mu_);
  return {events_.begin(), events_.end()};
}

absl::StatusOr<SavedDevices> PartitionDevices::Save() {
  {
    kmcl::MutexLock lock(&mu_);
    saved_ = true;
  }
  SavedDevices out;
  absl::Status status;
  for (auto& [service, vsc] : vscs_) {  // the guests stop draining first
    absl::StatusOr<std::string> blob = vsc->Save();
    if (!blob.ok()) {
      status = absl::Status(blob.status().code(),
                            absl::StrCat(ServiceInfo(service).name, " guest: ", blob.status().message()));
      break;
    }
    out.devices.push_back({service, "", *std::move(blob)});
  }
  for (auto& [svc, vsp] : vsps_) {
    // A named copy: capturing a structured binding in a lambda is C++20
    // (P1381), which clang 14 does not implement yet.
    const auto service = svc;
    if (!status.ok()) break;
    absl::StatusOr<std::string> blob = vsp->Save();
    if (!blob.ok()) {
      status = absl::Status(blob.status().code(),
                            absl::StrCat(ServiceInfo(service).name, " VSP: ", blob.status().message()));
      break;
    }
    auto it = std::find_if(out.devices.begin(), out.devices.end(),
                           [&](const SavedDevices::Device& d) { return d.service == service; });
    if (it == out.devices.end()) it = out.devices.insert(out.devices.end(), {service, "", ""});
    it->host = *std::move(blob);
  }
  if (!status.ok()) {
    Resume();
    return status;
  }
  return out;
}

void PartitionDevices::Resume() {
  for (auto& [service, vsp] : vsps_) vsp->Resume();
  for (auto& [service, vsc] : vscs_) vsc->Resume().IgnoreError();  // a closed guest stays closed
  kmcl::MutexLock lock(&mu_);
  saved_ = false;
}

}  // namespace kmcld
