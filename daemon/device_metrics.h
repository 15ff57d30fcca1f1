// daemon/device_metrics.h: the built-in devices' heartbeat as metrics, one
// series per partition whose devices include the heartbeat service (the
// "guest heartbeat lost" alert of docs/operations.md reads them):
//   kmcld_device_heartbeat_alive, _negotiated, _last_sequence,
//   _answers_total, _unresponsive_events_total,
//   _last_answer_age_seconds (absent before the first answer).
//
//   collector.AddSource([&](metrics::Exposition& e) { CollectDeviceMetrics(registry, e); });
//
// Thread-safe; waits briefly for each partition's device thread.
#ifndef KMCLD_DAEMON_DEVICE_METRICS_H_
#define KMCLD_DAEMON_DEVICE_METRICS_H_

#include "daemon/metrics/exposition.h"
#include "daemon/registry.h"

namespace kmcld {

void CollectDeviceMetrics(Registry& registry, metrics::Exposition& out);

}  // namespace kmcld

#endif  // KMCLD_DAEMON_DEVICE_METRICS_H_
