#include "daemon/services/diagnostics_service.h"

#include "absl/time/clock.h"
#include "daemon/diagnostics.h"
#include "google/protobuf/util/time_util.h"
#include "tools/build_info.h"

namespace kmcld {

namespace {

// When the process started (static initialisation runs before main).
const absl::Time kProcessStart = absl::Now();

}  // namespace

grpc::ServerUnaryReactor* DiagnosticsService::GetChannelDiagnostics(
    grpc::CallbackServerContext* ctx, const kmcl::v1::GetChannelDiagnosticsRequest* request,
    kmcl::v1::ChannelDiagnostics* response) {
  if (absl::Status s = Authorize(ctx_, ctx, "GetChannelDiagnostics", *request); !s.ok()) return FinishNow(ctx, s);
  auto c = ctx_.registry.Resolve(request->channel());
  if (c.ok()) *response = DiagnoseChannel(ctx_.registry, *c, leases_.List());
  return FinishNow(ctx, c.status());
}

grpc::ServerUnaryReactor* DiagnosticsService::ListChannelDiagnostics(
    grpc::CallbackServerContext* ctx, const kmcl::v1::ListChannelDiagnosticsRequest* request,
    kmcl::v1::ListChannelDiagnosticsResponse* response) {
  if (absl::Status s = Authorize(ctx_, ctx, "ListChannelDiagnostics", *request); !s.ok()) return FinishNow(ctx, s);
  auto partitions = ctx_.registry.PartitionsFor(request->partition_id());
  if (!partitions.ok()) return FinishNow(ctx, partitions.status());
  for (kmcl::v1::ChannelDiagnostics& c : DiagnoseChannels(ctx_.registry, leases_, *partitions)) {
    *response->add_channels() = std::move(c);
  }
  KeepVisible(ctx_, ctx, request->partition_id(), *response);
  return FinishNow(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* DiagnosticsService::GetVersion(grpc::CallbackServerContext* ctx,
                                                         const kmcl::v1::GetVersionRequest* request,
                                                         kmcl::v1::DaemonVersion* response) {
  if (absl::Status s = Authorize(ctx_, ctx, "GetVersion", *request); !s.ok()) return FinishNow(ctx, s);
  using google::protobuf::util::TimeUtil;
  response->set_version(std::string(kmcl::build::Version()));
  response->set_git_commit(std::string(kmcl::build::GitCommit()));
  response->set_api_revision(kmcl::v1::API_REVISION_CURRENT);
  *response->mutable_started() = TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(kProcessStart));
  *response->mutable_uptime() =
      TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(absl::Now() - kProcessStart));
  return FinishNow(ctx, absl::OkStatus());
}

}  // namespace kmcld
