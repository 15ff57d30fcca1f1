#include "daemon/metrics/rpc_metrics.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "grpcpp/server_context.h"

namespace kmcld::metrics {

namespace {

class RecordingInterceptor final : public grpc::experimental::Interceptor {
 public:
  RecordingInterceptor(RpcMetrics& metrics, grpc::experimental::ServerRpcInfo* info)
      : metrics_(metrics), info_(info), start_(absl::Now()) {}

  // A call cancelled before it sent a status still counts, as CANCELLED.
  ~RecordingInterceptor() override {
    if (!recorded_) Finish(grpc::StatusCode::CANCELLED, "cancelled", /*with_peer=*/false);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      Finish(status.error_code(), status.error_message(), /*with_peer=*/true);
    }
    methods->Proceed();
  }

 private:
  // `with_peer`: the call's context is still alive to name the peer.
  void Finish(grpc::StatusCode code, const std::string& message, bool with_peer) {
    recorded_ = true;
    RpcRecord r;
    r.method = info_->method();
    r.code = code;
    r.message = message;
    r.latency = absl::Now() - start_;
    if (with_peer && info_->server_context() != nullptr) r.peer = info_->server_context()->peer();
    metrics_.Record(r);
  }

  RpcMetrics& metrics_;
  grpc::experimental::ServerRpcInfo* const info_;
  const absl::Time start_;
  bool recorded_ = false;
};

class Factory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit Factory(RpcMetrics& metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new RecordingInterceptor(metrics_, info);
  }

 private:
  RpcMetrics& metrics_;
};

// "/kmcl.v1.PacketService/Attach" -> ("kmcl.v1.PacketService", "Attach").
std::pair<std::string, std::string> SplitMethod(const std::string& full) {
  absl::string_view s = full;
  if (!s.empty() && s.front() == '/') s.remove_prefix(1);
  const size_t slash = s.find('/');
  if (slash == absl::string_view::npos) return {"", std::string(s)};
  return {std::string(s.substr(0, slash)), std::string(s.substr(slash + 1))};
}

}  // namespace

std::string RpcMetrics::CodeName(grpc::StatusCode code) {
  // gRPC's codes are absl's, number for number.
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

void RpcMetrics::Record(const RpcRecord& record) {
  const double seconds = absl::ToDoubleSeconds(record.latency);
  const size_t bucket = std::lower_bound(kRpcLatencyBoundsSeconds.begin(),
                                         kRpcLatencyBoundsSeconds.end(), seconds) -
                        kRpcLatencyBoundsSeconds.begin();
  {
    kmcl::MutexLock lock(&mu_);
    PerMethod& m = methods_[std::string(record.method)];
    ++m.codes[static_cast<int>(record.code)];
    ++m.buckets[bucket];
    m.sum_seconds += seconds;
  }
  if (on_finish_) on_finish_(record);
}

void RpcMetrics::Collect(Exposition& out) const {
  MetricFamily& calls = out.Family("kmcld_rpcs_total", MetricType::kCounter,
                                   "gRPC calls kmcld finished, by service, method and status code.");
  MetricFamily& latency =
      out.Family("kmcld_rpc_duration_seconds", MetricType::kHistogram,
                 "How long gRPC calls took, from arrival to status (a stream: its whole life).");
  kmcl::MutexLock lock(&mu_);
  for (const auto& [full, m] : methods_) {
    auto [service, method] = SplitMethod(full);
    for (const auto& [code, n] : m.codes) {
      calls.Add({{"service", service}, {"method", method},
                 {"code", CodeName(static_cast<grpc::StatusCode>(code))}},
                static_cast<double>(n));
    }
    latency.AddHistogram({{"service", service}, {"method", method}}, kRpcLatencyBoundsSeconds,
                         m.buckets, m.sum_seconds);
  }
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
RpcMetrics::NewInterceptorFactory() {
  return std::make_unique<Factory>(*this);
}

}  // namespace kmcld::metrics
