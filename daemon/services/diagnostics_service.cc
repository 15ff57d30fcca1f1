#include "daemon/services/diagnostics_service.h"

#include "absl/time/clock.h"
#include "daemon/convert.h"
#include "google/protobuf/util/time_util.h"
#include "tools/build_info.h"

namespace kmcld {

namespace {

// When the process started (static initialisation runs before main).
const absl::Time kProcessStart = absl::Now();

void DiagnoseEndpoint(Endpoint& ep, kmcl::v1::EndpointDiagnostics* out) {
  kmcl::ChannelSnapshot s = ep.channel().Snapshot();
  *out->mutable_state() = ToProto(s, ep.role(), ep.rescinded(), ep.attached());
  if (s.outgoing.has_value()) ToProto(*s.outgoing, out->mutable_outgoing());
  if (s.incoming.has_value()) ToProto(*s.incoming, out->mutable_incoming());
  if (!s.corruption.empty()) out->mutable_incoming()->set_corruption(s.corruption);
  ToProto(s.stats, out->mutable_counters());
  out->set_queued_sends(s.queued_sends);
  out->set_delivered_uncompleted(s.delivered_uncompleted);
  out->set_transaction_quota(s.transaction_quota);
  out->set_interrupt_latency_100ns(s.interrupt_latency);
  out->set_outstanding_transactions(s.outstanding_transactions);
  for (const kmcl::OutstandingTransaction& t : s.outstanding) {
    kmcl::v1::OutstandingTransaction* o = out->add_outstanding();
    o->set_transaction_id(t.transaction_id);
    o->set_payload_bytes(t.payload_bytes);
    o->set_age_micros(static_cast<uint64_t>(absl::ToInt64Microseconds(t.age)));
  }
  out->set_held_deliveries(ep.held_deliveries());
  out->set_stream_state(ep.StreamState());
}

}  // namespace

kmcl::v1::ChannelDiagnostics DiagnosticsService::Diagnose(const ResolvedChannel& c) {
  kmcl::v1::ChannelDiagnostics out;
  *out.mutable_channel() = ctx_.registry.Describe(c);
  if (c.host != nullptr) DiagnoseEndpoint(*c.host, out.mutable_host());
  if (c.guest != nullptr) DiagnoseEndpoint(*c.guest, out.mutable_guest());
  out.set_gpadl_count(
      static_cast<uint32_t>(c.partition->partition().gpadls().ListForChannel(c.relid).size()));
  const absl::Time now = absl::Now();
  for (const LeaseRecord& l : leases_.List()) {
    if (l.partition.lock() != c.partition || l.relid != c.relid) continue;
    kmcl::v1::LeaseDiagnostics* d = out.add_leases();
    d->set_lease_id(l.lease_id);
    d->set_gpadl_id(l.gpadl_id);
    d->set_read_only(l.read_only);
    d->set_age_micros(absl::ToInt64Microseconds(now - l.last_used));
  }
  return out;
}

grpc::ServerUnaryReactor* DiagnosticsService::GetChannelDiagnostics(
    grpc::CallbackServerContext* ctx, const kmcl::v1::GetChannelDiagnosticsRequest* request,
    kmcl::v1::ChannelDiagnostics* response) {
  if (absl::Status s = Authorize(ctx_, ctx, "GetChannelDiagnostics", *request); !s.ok()) return FinishNow(ctx, s);
  auto c = ctx_.registry.Resolve(request->channel());
  if (c.ok()) *response = Diagnose(*c);
  return FinishNow(ctx, c.status());
}

grpc::ServerUnaryReactor* DiagnosticsService::ListChannelDiagnostics(
    grpc::CallbackServerContext* ctx, const kmcl::v1::ListChannelDiagnosticsRequest* request,
    kmcl::v1::ListChannelDiagnosticsResponse* response) {
  if (absl::Status s = Authorize(ctx_, ctx, "ListChannelDiagnostics", *request); !s.ok()) return FinishNow(ctx, s);
  auto partitions = ctx_.registry.PartitionsFor(request->partition_id());
  if (!partitions.ok()) return FinishNow(ctx, partitions.status());
  for (auto& p : *partitions) {
    for (const ResolvedChannel& c : ctx_.registry.Channels(p)) *response->add_channels() = Diagnose(c);
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
