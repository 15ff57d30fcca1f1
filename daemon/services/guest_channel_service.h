// daemon/services/guest_channel_service.h: kmcl.v1.GuestChannelService (see
// proto/channel.proto): the VSC role. ListOffers shows what a guest at a VTL
// sees; OpenChannel allocates a KMCL client endpoint that kmcld holds for
// the tool (its ring GPADL in the partition's guest memory) and opens the
// offer; CloseChannel closes it, tears down the GPADLs the tool created on
// it and frees it.
//
// Thread-safe. OpenChannel and CloseChannel run on the blocking pool.
#ifndef KMCLD_DAEMON_SERVICES_GUEST_CHANNEL_SERVICE_H_
#define KMCLD_DAEMON_SERVICES_GUEST_CHANNEL_SERVICE_H_

#include "daemon/services/service_context.h"
#include "proto/channel.grpc.pb.h"

namespace kmcld {

class GuestChannelService final : public kmcl::v1::GuestChannelService::CallbackService {
 public:
  explicit GuestChannelService(ServiceContext ctx) : ctx_(ctx) {}
  grpc::ServerUnaryReactor* ListOffers(grpc::CallbackServerContext* ctx,
                                       const kmcl::v1::ListOffersRequest* request,
                                       kmcl::v1::ListOffersResponse* response) override;
  grpc::ServerUnaryReactor* OpenChannel(grpc::CallbackServerContext* ctx,
                                        const kmcl::v1::OpenChannelRequest* request,
                                        kmcl::v1::ChannelResponse* response) override;
  grpc::ServerUnaryReactor* CloseChannel(grpc::CallbackServerContext* ctx,
                                         const kmcl::v1::ChannelRequest* request,
                                         kmcl::v1::ChannelResponse* response) override;

 private:
  ServiceContext ctx_;
};

}  // namespace kmcld

#endif  // KMCLD_DAEMON_SERVICES_GUEST_CHANNEL_SERVICE_H_
