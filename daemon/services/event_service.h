// daemon/services/event_service.h: kmcl.v1.EventService (see
// proto/event.proto): WatchEvents streams the daemon's EventLog from
// after_sequence, then follows it live, one write in flight, filtered by
// partition and channel. A watcher that falls behind the retention window
// gets OUT_OF_RANGE, so a slow watcher never holds more than one batch.
//
// Thread-safe.
#ifndef KMCLD_DAEMON_SERVICES_EVENT_SERVICE_H_
#define KMCLD_DAEMON_SERVICES_EVENT_SERVICE_H_

#include "daemon/services/packet_service.h"
#include "daemon/services/service_context.h"
#include "proto/event.grpc.pb.h"

namespace kmcld {

class EventService final : public kmcl::v1::EventService::CallbackService {
 public:
  EventService(ServiceContext ctx, StreamCounter& streams) : ctx_(ctx), streams_(streams) {}
  grpc::ServerWriteReactor<kmcl::v1::Event>* WatchEvents(
      grpc::CallbackServerContext* ctx, const kmcl::v1::WatchEventsRequest* request) override;

 private:
  ServiceContext ctx_;
  StreamCounter& streams_;
};

}  // namespace kmcld

#endif  // KMCLD_DAEMON_SERVICES_EVENT_SERVICE_H_
