// daemon/services/save_restore_service.h: kmcl.v1.SaveRestoreService (see
// proto/save_restore.proto): chunked save and restore of one host channel
// or of a whole partition with the endpoints kmcld holds, as a
// kmcld.saved.SavedBundle around kmcl_core's blobs (docs/saved-state.md).
//
// Thread-safe. The KMCL work (pausing, saving, restoring, re-enabling)
// runs on the blocking pool; the reactors only move chunks, one write in
// flight. A restore stream is bounded by --max_restore_bytes.
#ifndef KMCLD_DAEMON_SERVICES_SAVE_RESTORE_SERVICE_H_
#define KMCLD_DAEMON_SERVICES_SAVE_RESTORE_SERVICE_H_

#include <atomic>
#include <string>

#include "daemon/bundle.h"
#include "daemon/services/service_context.h"
#include "proto/save_restore.grpc.pb.h"

namespace kmcld {

struct SaveRestoreLimits {
  uint64_t max_restore_bytes = uint64_t{1} << 30;  // 1 GiB
};

class SaveRestoreService final : public kmcl::v1::SaveRestoreService::CallbackService {
 public:
  SaveRestoreService(ServiceContext ctx, SaveRestoreLimits limits) : ctx_(ctx), limits_(limits) {}
  grpc::ServerWriteReactor<kmcl::v1::SaveChunk>* SaveChannel(
      grpc::CallbackServerContext* ctx, const kmcl::v1::SaveChannelRequest* request) override;
  grpc::ServerReadReactor<kmcl::v1::RestoreChunk>* RestoreChannel(
      grpc::CallbackServerContext* ctx, kmcl::v1::RestoreChannelResponse* response) override;
  grpc::ServerWriteReactor<kmcl::v1::SaveChunk>* SavePartition(
      grpc::CallbackServerContext* ctx, const kmcl::v1::SavePartitionRequest* request) override;
  grpc::ServerReadReactor<kmcl::v1::RestoreChunk>* RestorePartition(
      grpc::CallbackServerContext* ctx, kmcl::v1::Partition* response) override;

 private:
  ServiceContext ctx_;
  SaveRestoreLimits limits_;
  std::atomic<uint64_t> restore_in_flight_{0};
};

}  // namespace kmcld

#endif  // KMCLD_DAEMON_SERVICES_SAVE_RESTORE_SERVICE_H_
