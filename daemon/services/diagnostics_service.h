// daemon/services/diagnostics_service.h: kmcl.v1.DiagnosticsService (see
// proto/diagnostics.proto): read-only views of channels: both endpoints'
// states, ring control words, counters, outstanding transactions, GPADLs and
// host leases; and the daemon's build and uptime (GetVersion).
//
// Thread-safe; never blocks (snapshots take kmcl_core's locks briefly).
#ifndef KMCLD_DAEMON_SERVICES_DIAGNOSTICS_SERVICE_H_
#define KMCLD_DAEMON_SERVICES_DIAGNOSTICS_SERVICE_H_

#include "daemon/leases.h"
#include "daemon/services/service_context.h"
#include "proto/diagnostics.grpc.pb.h"

namespace kmcld {

class DiagnosticsService final : public kmcl::v1::DiagnosticsService::CallbackService {
 public:
  DiagnosticsService(ServiceContext ctx, LeaseTable& leases) : ctx_(ctx), leases_(leases) {}
  grpc::ServerUnaryReactor* GetChannelDiagnostics(
      grpc::CallbackServerContext* ctx, const kmcl::v1::GetChannelDiagnosticsRequest* request,
      kmcl::v1::ChannelDiagnostics* response) override;
  grpc::ServerUnaryReactor* ListChannelDiagnostics(
      grpc::CallbackServerContext* ctx, const kmcl::v1::ListChannelDiagnosticsRequest* request,
      kmcl::v1::ListChannelDiagnosticsResponse* response) override;
  grpc::ServerUnaryReactor* GetVersion(grpc::CallbackServerContext* ctx,
                                       const kmcl::v1::GetVersionRequest* request,
                                       kmcl::v1::DaemonVersion* response) override;

 private:
  ServiceContext ctx_;
  LeaseTable& leases_;
};

}  // namespace kmcld

#endif  // KMCLD_DAEMON_SERVICES_DIAGNOSTICS_SERVICE_H_
