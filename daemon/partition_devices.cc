#include "daemon/partition_devices.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace kmcld {

using kmcl::devices::ic::IcEvent;
using kmcl::devices::ic::IcService;
using kmcl::devices::ic::IcVsc;
using kmcl::devices::ic::IcVsp;
using kmcl::devices::ic::ServiceInfo;

absl::StatusOr<std::vector<IcService>> ParseDeviceList(absl::string_view spec) {
  const std::vector<IcService> all = {IcService::kHeartbeat, IcService::kShutdown, IcService::kTimeSync,
                                      IcService::kKvp};
  if (spec.empty() || spec == "none") return std::vector<IcService>{};
  if (spec == "default" || spec == "all") return all;
  std::vector<IcService> out;
  for (absl::string_view name : absl::StrSplit(spec, ',')) {
    name = absl::StripAsciiWhitespace(name);
    auto it = std::find_if(all.begin(), all.end(), [&](IcService s) { return ServiceInfo(s).name == name; });
    if (it == all.end()) {
      return absl::InvalidArgumentError(absl::StrCat("unknown device \"", name,
                                                     "\" (heartbeat, shutdown, timesync, kvp, default, none)"));
    }
    if (std::find(out.begin(), out.end(), *it) != out.end()) {
      return absl::InvalidArgumentError(absl::StrCat("device \"", name, "\" is listed twice"));
    }
    out.push_back(*it);
  }
  return out;
}

PartitionDevices::PartitionDevices(std::string partition_id, DeviceOptions options)
    : partition_id_(std::move(partition_id)), options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<PartitionDevices>> PartitionDevices::Create(kmcl::Partition& partition,
                                                                           DeviceOptions options) {
  std::unique_ptr<PartitionDevices> d(new PartitionDevices(partition.id(), std::move(options)));
  for (IcService s : d->options_.services) {
    kmcl::devices::ic::VspOptions vo;
    vo.host = d->options_.host;
    PartitionDevices* self = d.get();
    vo.on_event = [self, s](const IcEvent& e) { self->Record(s, e); };
    auto vsp = IcVsp::Create(s, partition.vmbus_handle(), std::move(vo));
    if (!vsp.ok()) {
      return absl::Status(vsp.status().code(),
                          absl::StrCat(ServiceInfo(s).name, " VSP: ", vsp.status().message()));
    }
    d->vsps_[s] = *std::move(vsp);
  }
  if (d->options_.emulated_guest) {
    for (IcService s : d->options_.services) {
      auto vsc = IcVsc::Create(partition, s, {});
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
    }
    for (auto& [service, vsp] : vsps_) vsp->Poll();
  }
}

void PartitionDevices::Record(IcService service, const IcEvent& event) {
  kmcl::MutexLock lock(&mu_);
  events_.push_back({absl::Now(), partition_id_, service, event});
  if (events_.size() > kMaxEvents) events_.pop_front();
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

absl::Status DeviceTable::Add(std::shared_ptr<PartitionDevices> devices) {
  kmcl::MutexLock lock(&mu_);
  auto [it, inserted] = devices_.emplace(devices->partition_id(), devices);
  if (!inserted) {
    return absl::AlreadyExistsError(absl::StrCat("partition ", devices->partition_id(), " has devices already"));
  }
  return absl::OkStatus();
}

std::shared_ptr<PartitionDevices> DeviceTable::Get(const std::string& partition_id) const {
  kmcl::MutexLock lock(&mu_);
  auto it = devices_.find(partition_id);
  return it == devices_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<PartitionDevices>> DeviceTable::List() const {
  kmcl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<PartitionDevices>> out;
  for (const auto& [id, d] : devices_) out.push_back(d);
  return out;
}

void DeviceTable::Clear() {
  std::map<std::string, std::shared_ptr<PartitionDevices>> gone;
  {
    kmcl::MutexLock lock(&mu_);
    gone.swap(devices_);
  }
  gone.clear();  // outside the lock: destruction blocks
}

}  // namespace kmcld
