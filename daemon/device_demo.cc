#include "daemon/device_demo.h"

#include "daemon/log.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kmcld {

std::string DeviceDemo::Round(DeviceApi& api, const std::string& partition_id, uint64_t round) {
  std::string line = "devices:";
  kmcl::v1::GetHeartbeatRequest hr;
  hr.set_partition_id(partition_id);
  kmcl::v1::HeartbeatState hb;
  if (absl::Status s = api.GetHeartbeat(hr, &hb); s.ok()) {
    absl::StrAppend(&line, " heartbeat sequence ", hb.last_sequence(), hb.alive() ? " (alive);" : " (UNRESPONSIVE);");
  }
  kmcl::v1::KvpSetRequest set;
  set.set_partition_id(partition_id);
  set.set_key("kmcld/demo-round");
  set.set_value(absl::StrCat(round));
  kmcl::v1::KvpStatus set_status;
  if (absl::Status s = api.KvpSet(set, &set_status); s.ok()) {
    kmcl::v1::KvpGetRequest get;
    get.set_partition_id(partition_id);
    get.set_key(set.key());
    kmcl::v1::KvpGetResponse got;
    absl::Status g = api.KvpGet(get, &got);
    absl::StrAppend(&line, " KVP ", set.key(), " = ", got.value(),
                    g.ok() && got.found() && got.value() == set.value() ? " (round trip ok);"
                                                                        : absl::StrCat(" (FAILED: ", g.message(), ");"));
  } else if (!absl::IsNotFound(s)) {
    absl::StrAppend(&line, " KVP failed: ", s.message(), ";");
  }
  kmcl::v1::SendTimeSampleRequest tr;
  tr.set_partition_id(partition_id);
  kmcl::v1::TimeSample sample;
  if (absl::Status s = api.SendTimeSample(tr, &sample); s.ok()) {
    absl::StrAppend(&line, absl::StrFormat(" time sample answered in %.2f ms",
                                           (sample.answered_unix_nanos() - sample.host_time_unix_nanos()) / 1e6));
  } else if (!absl::IsNotFound(s)) {
    absl::StrAppend(&line, " time sample failed: ", s.message());
  }
  return line;
}

void DeviceDemo::Start(Registry& registry, std::string partition_id, absl::Duration interval) {
  thread_ = std::thread([this, &registry, partition_id = std::move(partition_id), interval] {
    DeviceApi api(registry);
    for (uint64_t round = 1; !stop_.WaitForNotificationWithTimeout(interval); ++round) {
      log::Info(Round(api, partition_id, round), {{"partition", partition_id}});
    }
  });
}

void DeviceDemo::Stop() {
  if (!thread_.joinable()) return;
  stop_.Notify();
  thread_.join();
}

}  // namespace kmcld
