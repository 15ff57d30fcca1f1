#include "daemon/security/audit_log.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "daemon/log.h"
#include "grpcpp/server_context.h"

namespace kmcld::security {

AuditLog::AuditLog(FILE* out) : out_(out), writer_([this] { Loop(); }) {}

AuditLog::~AuditLog() {
  {
    kmcl::MutexLock lock(&mu_);
    stop_ = true;
  }
  queued_.Signal();
  writer_.join();
  if (out_ != stderr) std::fclose(out_);
}

void AuditLog::Record(const Peer& peer, absl::string_view rpc, absl::string_view object,
                      absl::string_view result) {
  Line line{absl::Now(), peer, std::string(rpc), std::string(object), std::string(result)};
  kmcl::MutexLock lock(&mu_);
  Queue(std::move(line));
}

void AuditLog::Begin(const void* call, const Peer& peer, absl::string_view rpc, absl::string_view object) {
  Open open{absl::Now(), peer, std::string(rpc), std::string(object)};
  kmcl::MutexLock lock(&mu_);
  open_[call] = std::move(open);
}

void AuditLog::End(const void* call, int code) {
  const absl::Time now = absl::Now();
  kmcl::MutexLock lock(&mu_);
  auto it = open_.find(call);
  if (it == open_.end()) return;
  Open open = std::move(it->second);
  open_.erase(it);
  const std::string status =
      code == 0 ? "ok" : absl::StrCat("failed:", absl::StatusCodeToString(static_cast<absl::StatusCode>(code)));
  Queue(Line{now, std::move(open.peer), std::move(open.rpc), std::move(open.object),
             absl::StrFormat("%s ms=%.1f", status, absl::ToDoubleMilliseconds(now - open.start))});
}

void AuditLog::Queue(Line line) {
  if (queue_.size() >= kMaxQueued) {
    ++dropped_;
    return;
  }
  queue_.push_back(std::move(line));
  queued_.Signal();
}

void AuditLog::Loop() {
  while (true) {
    Line line;
    uint64_t dropped = 0;
    {
      kmcl::MutexLock lock(&mu_);
      while (!stop_ && queue_.empty()) queued_.Wait(&mu_);
      if (queue_.empty()) return;  // stopping, and everything is written
      line = std::move(queue_.front());
      queue_.pop_front();
      dropped = std::exchange(dropped_, 0);
    }
    if (dropped > 0) {
      Write(Line{absl::Now(), Peer{"kmcld", ""}, "-", "*",
                 absl::StrCat("dropped=", dropped, " (the audit file stalled; these lines are lost)")});
    }
    Write(line);
  }
}

void AuditLog::Write(const Line& l) {
  if (out_ == stderr && log::CurrentFormat() == log::Format::kJson) {
    // Beside kmcld's JSON log lines on stderr, audit lines are JSON too.
    log::Info("audit", {{"identity", l.peer.identity},
                        {"peer", l.peer.address},
                        {"rpc", l.rpc},
                        {"object", l.object},
                        {"result", l.result}});
    return;
  }
  const std::string text = absl::StrFormat(
      "kmcld audit: time=%s identity=\"%s\" peer=\"%s\" rpc=%s object=\"%s\" result=%s\n",
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", l.time, absl::UTCTimeZone()), absl::CEscape(l.peer.identity),
      absl::CEscape(l.peer.address), l.rpc, absl::CEscape(l.object), l.result);
  std::fwrite(text.data(), 1, text.size(), out_);
  std::fflush(out_);
}

namespace {

class AuditInterceptor final : public grpc::experimental::Interceptor {
 public:
  AuditInterceptor(AuditLog& audit, const void* call) : audit_(audit), call_(call) {}
  // A call that ended without sending a status (cancelled) ends here.
  ~AuditInterceptor() override {
    if (!ended_) audit_.End(call_, static_cast<int>(grpc::StatusCode::CANCELLED));
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      ended_ = true;
      audit_.End(call_, static_cast<int>(methods->GetSendStatus().error_code()));
    }
    methods->Proceed();
  }

 private:
  AuditLog& audit_;
  const void* const call_;
  bool ended_ = false;
};

class AuditInterceptorFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit AuditInterceptorFactory(AuditLog& audit) : audit_(audit) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override {
    return new AuditInterceptor(audit_, info->server_context());
  }

 private:
  AuditLog& audit_;
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> NewAuditInterceptorFactory(AuditLog& audit) {
  return std::make_unique<AuditInterceptorFactory>(audit);
}

}  // namespace kmcld::security
