#include "daemon/device_metrics.h"

#include "absl/time/clock.h"
#include "daemon/device_api.h"

namespace kmcld {

void CollectDeviceMetrics(Registry& registry, metrics::Exposition& out) {
  using metrics::MetricType;
  auto& alive = out.Family("kmcld_device_heartbeat_alive", MetricType::kGauge,
                           "1 while the partition's guest answers heartbeats within the timeout.");
  auto& negotiated = out.Family("kmcld_device_heartbeat_negotiated", MetricType::kGauge,
                                "1 once the guest negotiated the heartbeat service.");
  auto& sequence = out.Family("kmcld_device_heartbeat_last_sequence", MetricType::kGauge,
                              "The sequence number of the guest's last good heartbeat answer.");
  auto& answers = out.Family("kmcld_device_heartbeat_answers_total", MetricType::kCounter,
                             "Heartbeat answers from the guest.");
  auto& unresponsive = out.Family("kmcld_device_heartbeat_unresponsive_events_total", MetricType::kCounter,
                                  "Times the guest stopped answering heartbeats in time.");
  auto& age = out.Family("kmcld_device_heartbeat_last_answer_age_seconds", MetricType::kGauge,
                         "Seconds since the guest's last heartbeat answer.");
  DeviceApi api(registry);
  for (const auto& p : registry.ListPartitions()) {
    kmcl::v1::GetHeartbeatRequest request;
    request.set_partition_id(p->id());
    kmcl::v1::HeartbeatState hb;
    if (!api.GetHeartbeat(request, &hb).ok()) continue;  // no heartbeat device there
    const metrics::Labels l = {{"partition", p->id()}};
    alive.Add(l, hb.alive() ? 1 : 0);
    negotiated.Add(l, hb.negotiated() ? 1 : 0);
    sequence.Add(l, static_cast<double>(hb.last_sequence()));
    answers.Add(l, static_cast<double>(hb.answers()));
    unresponsive.Add(l, static_cast<double>(hb.unresponsive_events()));
    if (hb.last_answer_unix_nanos() != 0) {
      age.Add(l, absl::ToDoubleSeconds(absl::Now() - absl::FromUnixNanos(hb.last_answer_unix_nanos())));
    }
  }
}

}  // namespace kmcld
