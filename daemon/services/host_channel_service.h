// daemon/services/host_channel_service.h: kmcl.v1.HostChannelService (see
// proto/channel.proto): the VSP role. OfferChannel allocates a KMCL server
// endpoint that kmcld holds for the tool, applies every setting and enables
// it; Start/Pause/Rescind/Cleanup drive it; Get/List describe channels.
//
// Thread-safe. Calls that run KMCL state changes (which wait for the
// channel's callbacks and, for Pause and Rescind, for remote tools to
// complete their deliveries) run on the blocking pool.
#ifndef KMCLD_DAEMON_SERVICES_HOST_CHANNEL_SERVICE_H_
#define KMCLD_DAEMON_SERVICES_HOST_CHANNEL_SERVICE_H_

#include "daemon/services/service_context.h"
#include "proto/channel.grpc.pb.h"

namespace kmcld {

class HostChannelService final : public kmcl::v1::HostChannelService::CallbackService {
 public:
  explicit HostChannelService(ServiceContext ctx) : ctx_(ctx) {}
  grpc::ServerUnaryReactor* OfferChannel(grpc::CallbackServerContext* ctx,
                                         const kmcl::v1::OfferChannelRequest* request,
                                         kmcl::v1::ChannelResponse* response) override;
  grpc::ServerUnaryReactor* StartChannel(grpc::CallbackServerContext* ctx,
                                         const kmcl::v1::ChannelRequest* request,
                                         kmcl::v1::ChannelResponse* response) override;
  grpc::ServerUnaryReactor* PauseChannel(grpc::CallbackServerContext* ctx,
                                         const kmcl::v1::ChannelRequest* request,
                                         kmcl::v1::ChannelResponse* response) override;
  grpc::ServerUnaryReactor* RescindChannel(grpc::CallbackServerContext* ctx,
                                           const kmcl::v1::ChannelRequest* request,
                                           kmcl::v1::ChannelResponse* response) override;
  grpc::ServerUnaryReactor* CleanupChannel(grpc::CallbackServerContext* ctx,
                                           const kmcl::v1::ChannelRequest* request,
                                           kmcl::v1::CleanupChannelResponse* response) override;
  grpc::ServerUnaryReactor* GetChannel(grpc::CallbackServerContext* ctx,
                                       const kmcl::v1::ChannelRequest* request,
                                       kmcl::v1::ChannelResponse* response) override;
  grpc::ServerUnaryReactor* ListChannels(grpc::CallbackServerContext* ctx,
                                         const kmcl::v1::ListChannelsRequest* request,
                                         kmcl::v1::ListChannelsResponse* response) override;

 private:
  // Resolves the host endpoint, runs `op` on it (blocking pool), describes
  // the channel afterwards.
  grpc::ServerUnaryReactor* HostOp(grpc::CallbackServerContext* ctx,
                                   const kmcl::v1::ChannelRequest* request,
                                   kmcl::v1::ChannelResponse* response,
                                   std::function<absl::Status(Endpoint&)> op);
  ServiceContext ctx_;
};

}  // namespace kmcld

#endif  // KMCLD_DAEMON_SERVICES_HOST_CHANNEL_SERVICE_H_
