// daemon/metrics/rpc_metrics.h: kmcld's gRPC calls as metrics: a counter
// per (service, method, status code) and a latency histogram per (service,
// method), recorded by a server interceptor on every call, kmcl.v1's and
// the health and reflection services' alike. A streaming call counts once,
// when it ends, with its whole duration.
//
//   RpcMetrics rpcs;
//   std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> f;
//   f.push_back(rpcs.NewInterceptorFactory());
//   builder.experimental().SetInterceptorCreators(std::move(f));
//   ... rpcs.Collect(exposition);
//
// Thread-safe. Must outlive the server whose interceptors record into it.
#ifndef KMCLD_DAEMON_METRICS_RPC_METRICS_H_
#define KMCLD_DAEMON_METRICS_RPC_METRICS_H_

#include <array>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "daemon/metrics/exposition.h"
#include "grpcpp/support/server_interceptor.h"
#include "grpcpp/support/status.h"
#include "kmcl_core/base/mutex.h"

namespace kmcld::metrics {

// Inclusive upper bounds of the RPC latency buckets, seconds.
inline constexpr std::array<double, 16> kRpcLatencyBoundsSeconds = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,     10};

// What the interceptor saw of one finished call.
struct RpcRecord {
  absl::string_view method;  // "/kmcl.v1.PacketService/Attach"
  grpc::StatusCode code = grpc::StatusCode::OK;
  absl::string_view message;  // the status message
  absl::Duration latency;
  std::string peer;  // the transport peer ("ipv4:127.0.0.1:4711", "unix:...")
};

class RpcMetrics {
 public:
  // `on_finish` (optional) also sees every finished call, on a gRPC
  // thread: it must not block (kmcld logs bad requests with it).
  explicit RpcMetrics(std::function<void(const RpcRecord&)> on_finish = nullptr)
      : on_finish_(std::move(on_finish)) {}

  void Record(const RpcRecord& record);
  // kmcld_rpcs_total and kmcld_rpc_duration_seconds.
  void Collect(Exposition& out) const;

  // An interceptor factory recording into this object.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> NewInterceptorFactory();

  // "OK", "INVALID_ARGUMENT", ... (gRPC's canonical names).
  static std::string CodeName(grpc::StatusCode code);

 private:
  struct PerMethod {
    std::map<int, uint64_t> codes;
    std::array<uint64_t, kRpcLatencyBoundsSeconds.size() + 1> buckets{};
    double sum_seconds = 0;
  };
  const std::function<void(const RpcRecord&)> on_finish_;
  mutable kmcl::Mutex mu_;
  std::map<std::string, PerMethod> methods_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kmcld::metrics

#endif  // KMCLD_DAEMON_METRICS_RPC_METRICS_H_
