#include "daemon/services/host_channel_service.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/convert.h"

namespace kmcld {

namespace {
kmcl::v1::EndpointRef HostRef(const kmcl::v1::ChannelRef& channel) {
  kmcl::v1::EndpointRef ref;
  *ref.mutable_channel() = channel;
  ref.set_role(kmcl::v1::ENDPOINT_ROLE_HOST);
  return ref;
}
}  // namespace

grpc::ServerUnaryReactor* HostChannelService::OfferChannel(
    grpc::CallbackServerContext* ctx, const kmcl::v1::OfferChannelRequest* request,
    kmcl::v1::ChannelResponse* response) {
  if (absl::Status s = Authorize(ctx_, ctx, "OfferChannel", *request); !s.ok()) return FinishNow(ctx, s);
  auto charge = ChargeCaller(ctx_, ctx, "OfferChannel", security::Resource::kChannels, 1);
  if (!charge.ok()) return FinishNow(ctx, charge.status());
  return FinishBlocking(ctx, ctx_.pool, {request->partition_id(), ""}, [this, request, response, charge = *charge]() -> absl::Status {
    auto partition = ctx_.registry.GetPartition(request->partition_id());
    if (!partition.ok()) return partition.status();
    const kmcl::v1::ServerChannelSettings& settings = request->settings();
    auto ep = Endpoint::Create((*partition)->shared_partition(), (*partition)->id(),
                               kmcl::v1::ENDPOINT_ROLE_HOST, ctx_.registry.limits().endpoint,
                               ctx_.registry.log(), ctx_.registry.timer(), (*partition)->peer_log);
    if (!ep.ok()) return ep.status();
    Endpoint& endpoint = **ep;
    endpoint.KeepUntilFreed(charge);  // the caller's channels limit, until the endpoint is freed
    if (absl::Status s = ApplyServerSettings(settings, endpoint.channel()); !s.ok()) return s;
    endpoint.SetQuota(settings.transaction_quota());
    if (settings.max_packet_size() != 0) endpoint.set_max_packet_size(settings.max_packet_size());
    if (absl::Status s = endpoint.channel().Enable(); !s.ok()) return s;
    const uint32_t relid = endpoint.channel().relid();
    kmcl::v1::Offer offer;
    for (const kmcl::ServerChannelInfo& info : (*partition)->partition().ServerChannels()) {
      if (info.relid == relid) offer = ToProto(info, (*partition)->id());
    }
    offer.set_friendly_name(settings.friendly_name());
    endpoint.set_offer(settings, offer);
    bool deleted;
    {
      kmcl::MutexLock lock(&(*partition)->mu);
      deleted = (*partition)->deleted;
      if (!deleted) (*partition)->hosts[{relid, offer.channel().offer_sequence()}] = *ep;
    }
    if (deleted) {  // deleted while we offered: take the offer back
      endpoint.channel().Disable().IgnoreError();
      return absl::NotFoundError(absl::StrCat("partition '", (*partition)->id(), "' was deleted"));
    }
    endpoint.Event(kmcl::v1::EVENT_KIND_OFFERED, 0, settings.friendly_name());
    if (settings.start()) {
      if (absl::Status s = endpoint.channel().Start(); !s.ok()) return s;
    }
    auto resolved = ctx_.registry.Resolve(offer.channel());
    if (!resolved.ok()) return resolved.status();  // deleted meanwhile
    *response->mutable_channel() = ctx_.registry.Describe(*resolved);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* HostChannelService::HostOp(grpc::CallbackServerContext* ctx,
                                                     const kmcl::v1::ChannelRequest* request,
                                                     kmcl::v1::ChannelResponse* response,
                                                     std::function<absl::Status(Endpoint&)> op) {
  auto ep = ctx_.registry.ResolveEndpoint(HostRef(request->channel()));
  if (!ep.ok()) return FinishNow(ctx, ep.status());
  return FinishBlocking(ctx, ctx_.pool, {request->channel().partition_id(), ChannelLane((*ep)->relid())},
                        [this, ep = *ep, request, response, op] {
    absl::Status s = op(*ep);
    kmcl::v1::ChannelRef ref = request->channel();
    ref.set_offer_sequence(0);  // describe whatever the relid is now
    if (auto resolved = ctx_.registry.Resolve(ref); resolved.ok()) {
      *response->mutable_channel() = ctx_.registry.Describe(*resolved);
    }
    return s;
  });
}

grpc::ServerUnaryReactor* HostChannelService::StartChannel(grpc::CallbackServerContext* ctx,
                                                           const kmcl::v1::ChannelRequest* request,
                                                           kmcl::v1::ChannelResponse* response) {
  if (absl::Status s = Authorize(ctx_, ctx, "StartChannel", *request); !s.ok()) return FinishNow(ctx, s);
  return HostOp(ctx, request, response, [](Endpoint& ep) { return ep.channel().Start(); });
}

grpc::ServerUnaryReactor* HostChannelService::PauseChannel(grpc::CallbackServerContext* ctx,
                                                           const kmcl::v1::ChannelRequest* request,
                                                           kmcl::v1::ChannelResponse* response) {
  if (absl::Status s = Authorize(ctx_, ctx, "PauseChannel", *request); !s.ok()) return FinishNow(ctx, s);
  return HostOp(ctx, request, response, [](Endpoint& ep) { return ep.channel().Pause(); });
}

grpc::ServerUnaryReactor* HostChannelService::RescindChannel(
    grpc::CallbackServerContext* ctx, const kmcl::v1::ChannelRequest* request,
    kmcl::v1::ChannelResponse* response) {
  if (absl::Status s = Authorize(ctx_, ctx, "RescindChannel", *request); !s.ok()) return FinishNow(ctx, s);
  return HostOp(ctx, request, response, [](Endpoint& ep) {
    if (ep.channel().connection() == kmcl::ConnectionState::kDisabled) {
      return absl::FailedPreconditionError("the channel is already rescinded or disabled");
    }
    absl::Status s = ep.channel().Disable();
    if (s.ok()) ep.MarkRescinded();
    return s;
  });
}

grpc::ServerUnaryReactor* HostChannelService::CleanupChannel(
    grpc::CallbackServerContext* ctx, const kmcl::v1::ChannelRequest* request,
    kmcl::v1::CleanupChannelResponse*) {
  if (absl::Status s = Authorize(ctx_, ctx, "CleanupChannel", *request); !s.ok()) return FinishNow(ctx, s);
  auto channel = ctx_.registry.Resolve(request->channel());
  if (!channel.ok()) return FinishNow(ctx, channel.status());
  if (channel->host == nullptr) {
    return FinishNow(ctx, absl::NotFoundError(absl::StrCat("channel ", channel->relid,
                                                           " has no host endpoint in kmcld")));
  }
  if (channel->host->channel().connection() != kmcl::ConnectionState::kDisabled) {
    return FinishNow(ctx, absl::FailedPreconditionError(absl::StrCat(
                              "channel ", channel->relid,
                              " is still offered; RescindChannel before CleanupChannel")));
  }
  return FinishBlocking(ctx, ctx_.pool, {channel->partition->id(), ChannelLane(channel->relid)}, [this, c = *channel] {
    return ctx_.registry.FreeEndpoint(c.partition, c.host);
  });
}

grpc::ServerUnaryReactor* HostChannelService::GetChannel(grpc::CallbackServerContext* ctx,
                                                         const kmcl::v1::ChannelRequest* request,
                                                         kmcl::v1::ChannelResponse* response) {
  if (absl::Status s = Authorize(ctx_, ctx, "GetChannel", *request); !s.ok()) return FinishNow(ctx, s);
  auto channel = ctx_.registry.Resolve(request->channel());
  if (channel.ok()) *response->mutable_channel() = ctx_.registry.Describe(*channel);
  return FinishNow(ctx, channel.status());
}

grpc::ServerUnaryReactor* HostChannelService::ListChannels(
    grpc::CallbackServerContext* ctx, const kmcl::v1::ListChannelsRequest* request,
    kmcl::v1::ListChannelsResponse* response) {
  if (absl::Status s = Authorize(ctx_, ctx, "ListChannels", *request); !s.ok()) return FinishNow(ctx, s);
  auto partitions = ctx_.registry.PartitionsFor(request->partition_id());
  if (!partitions.ok()) return FinishNow(ctx, partitions.status());
  for (auto& p : *partitions) {
    for (const ResolvedChannel& c : ctx_.registry.Channels(p)) {
      *response->add_channels() = ctx_.registry.Describe(c);
    }
  }
  KeepVisible(ctx_, ctx, request->partition_id(), *response);
  return FinishNow(ctx, absl::OkStatus());
}

}  // namespace kmcld
