// daemon/services/gpadl_service.h: kmcl.v1.GpadlService (see
// proto/gpadl.proto): guest buffers in a partition's guest memory, guest
// memory I/O, GPADLs created and torn down by the guest role, and host
// leases (LeaseTable) read and written in chunks of at most 1 MiB.
//
// Thread-safe. TeardownGpadl with wait runs on the blocking pool; the rest
// is short work under kmcl_core's locks.
#ifndef KMCLD_DAEMON_SERVICES_GPADL_SERVICE_H_
#define KMCLD_DAEMON_SERVICES_GPADL_SERVICE_H_

#include "daemon/leases.h"
#include "daemon/services/service_context.h"
#include "proto/gpadl.grpc.pb.h"

namespace kmcld {

class GpadlService final : public kmcl::v1::GpadlService::CallbackService {
 public:
  GpadlService(ServiceContext ctx, LeaseTable& leases) : ctx_(ctx), leases_(leases) {}
  grpc::ServerUnaryReactor* AllocateGuestBuffer(grpc::CallbackServerContext* ctx,
                                                const kmcl::v1::AllocateGuestBufferRequest* request,
                                                kmcl::v1::GuestBuffer* response) override;
  grpc::ServerUnaryReactor* FreeGuestBuffer(grpc::CallbackServerContext* ctx,
                                            const kmcl::v1::FreeGuestBufferRequest* request,
                                            kmcl::v1::FreeGuestBufferResponse* response) override;
  grpc::ServerUnaryReactor* WriteGuestMemory(grpc::CallbackServerContext* ctx,
                                             const kmcl::v1::WriteGuestMemoryRequest* request,
                                             kmcl::v1::WriteGuestMemoryResponse* response) override;
  grpc::ServerUnaryReactor* ReadGuestMemory(grpc::CallbackServerContext* ctx,
                                            const kmcl::v1::ReadGuestMemoryRequest* request,
                                            kmcl::v1::ReadGuestMemoryResponse* response) override;
  grpc::ServerUnaryReactor* CreateGpadl(grpc::CallbackServerContext* ctx,
                                        const kmcl::v1::CreateGpadlRequest* request,
                                        kmcl::v1::Gpadl* response) override;
  grpc::ServerUnaryReactor* TeardownGpadl(grpc::CallbackServerContext* ctx,
                                          const kmcl::v1::TeardownGpadlRequest* request,
                                          kmcl::v1::Gpadl* response) override;
  grpc::ServerUnaryReactor* GetGpadl(grpc::CallbackServerContext* ctx,
                                     const kmcl::v1::GetGpadlRequest* request,
                                     kmcl::v1::Gpadl* response) override;
  grpc::ServerUnaryReactor* ListGpadls(grpc::CallbackServerContext* ctx,
                                       const kmcl::v1::ListGpadlsRequest* request,
                                       kmcl::v1::ListGpadlsResponse* response) override;
  grpc::ServerUnaryReactor* MapGpadl(grpc::CallbackServerContext* ctx,
                                     const kmcl::v1::MapGpadlRequest* request,
                                     kmcl::v1::GpadlLease* response) override;
  grpc::ServerUnaryReactor* ReadLease(grpc::CallbackServerContext* ctx,
                                      const kmcl::v1::LeaseIoRequest* request,
                                      kmcl::v1::LeaseIoResponse* response) override;
  grpc::ServerUnaryReactor* WriteLease(grpc::CallbackServerContext* ctx,
                                       const kmcl::v1::LeaseIoRequest* request,
                                       kmcl::v1::LeaseIoResponse* response) override;
  grpc::ServerUnaryReactor* UnmapGpadl(grpc::CallbackServerContext* ctx,
                                       const kmcl::v1::UnmapGpadlRequest* request,
                                       kmcl::v1::UnmapGpadlResponse* response) override;

 private:
  // Guest-memory I/O: the GPA of [offset, offset + length) of a buffer or a
  // plain GPA, page by page.
  absl::Status GuestIo(const std::string& partition_id, bool has_gpa, uint64_t gpa,
                       bool has_buffer, uint64_t buffer_id, uint64_t offset, uint8_t* data,
                       uint64_t length, bool write);
  absl::StatusOr<kmcl::v1::Gpadl> Describe(const ResolvedChannel& c, uint32_t gpadl_id);
  // The API's view of one GPADL; `leases` is LeaseTable::List().
  static kmcl::v1::Gpadl ToApi(const std::shared_ptr<PartitionEntry>& partition,
                               uint64_t offer_sequence, const kmcl::GpadlInfo& info,
                               const std::vector<LeaseRecord>& leases, bool include_ranges);
  ServiceContext ctx_;
  LeaseTable& leases_;
};

}  // namespace kmcld

#endif  // KMCLD_DAEMON_SERVICES_GPADL_SERVICE_H_
