#include "daemon/services/guest_channel_service.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "daemon/convert.h"

namespace kmcld {

namespace {

absl::Status CheckVtl(const PartitionEntry& p, uint32_t vtl) {
  if (vtl > 2) return absl::InvalidArgumentError(absl::StrCat("vtl ", vtl, " is above 2"));
  if (!p.partition().options().client_vtls.contains(static_cast<uint8_t>(vtl))) {
    return absl::InvalidArgumentError(absl::StrCat("partition '", p.id(), "' has no guest at VTL ", vtl));
  }
  return absl::OkStatus();
}

// The offers a guest at `vtl` sees, optionally of one type (null = any) and
// instance (null = any).
std::vector<kmcl::ClientChannelInfo> Matching(const PartitionEntry& p, uint8_t vtl,
                                              const kmcl::Guid& type, const kmcl::Guid& instance) {
  std::vector<kmcl::ClientChannelInfo> out;
  for (kmcl::ClientChannelInfo& info : p.partition().GuestOffers(vtl)) {
    if (info.rescinded) continue;
    if (!type.IsNull() && !(info.offer.interface_type == type)) continue;
    if (!instance.IsNull() && !(info.offer.interface_instance == instance)) continue;
    out.push_back(std::move(info));
  }
  return out;
}

absl::Time Deadline(grpc::CallbackServerContext* ctx, absl::Duration fallback) {
  const auto deadline = ctx->deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::Now() + fallback;
  return absl::FromChrono(deadline);
}

}  // namespace

grpc::ServerUnaryReactor* GuestChannelService::ListOffers(grpc::CallbackServerContext* ctx,
                                                          const kmcl::v1::ListOffersRequest* request,
                                                          kmcl::v1::ListOffersResponse* response) {
  if (absl::Status s = Authorize(ctx_, ctx, "ListOffers", *request); !s.ok()) return FinishNow(ctx, s);
  auto type = FromProto(request->interface_type(), "interface_type", /*allow_empty=*/true);
  if (!type.ok()) return FinishNow(ctx, type.status());
  if (request->vtl() > 2) {
    return FinishNow(ctx, absl::InvalidArgumentError(absl::StrCat("vtl ", request->vtl(), " is above 2")));
  }
  auto partitions = ctx_.registry.PartitionsFor(request->partition_id());
  if (!partitions.ok()) return FinishNow(ctx, partitions.status());
  if (!request->partition_id().empty()) {
    if (absl::Status s = CheckVtl(*partitions->front(), request->vtl()); !s.ok()) return FinishNow(ctx, s);
  }
  const uint8_t vtl = static_cast<uint8_t>(request->vtl());
  for (auto& p : *partitions) {
    if (!p->partition().options().client_vtls.contains(vtl)) continue;
    for (const kmcl::ClientChannelInfo& info : Matching(*p, vtl, *type, kmcl::Guid())) {
      kmcl::v1::Offer* offer = response->add_offers();
      *offer = ToProto(info, p->id(), vtl);
      // The guest's view has no offer sequence; the host's control plane does.
      for (const kmcl::ServerChannelInfo& s : p->partition().ServerChannels()) {
        if (s.relid == info.offer.child_relid) {
          offer->mutable_channel()->set_offer_sequence(s.offer_sequence);
        }
      }
    }
  }
  KeepVisible(ctx_, ctx, request->partition_id(), *response);
  return FinishNow(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* GuestChannelService::OpenChannel(
    grpc::CallbackServerContext* ctx, const kmcl::v1::OpenChannelRequest* request,
    kmcl::v1::ChannelResponse* response) {
  if (absl::Status s = Authorize(ctx_, ctx, "OpenChannel", *request); !s.ok()) return FinishNow(ctx, s);
  auto charge = ChargeCaller(ctx_, ctx, "OpenChannel", security::Resource::kChannels, 1);
  if (!charge.ok()) return FinishNow(ctx, charge.status());
  const absl::Time deadline = Deadline(ctx, absl::Seconds(30));
  return FinishBlocking(ctx, ctx_.pool, {request->partition_id(), ""}, [this, request, response, deadline, charge = *charge]() -> absl::Status {
    auto partition = ctx_.registry.GetPartition(request->partition_id());
    if (!partition.ok()) return partition.status();
    PartitionEntry& p = **partition;
    if (absl::Status s = CheckVtl(p, request->vtl()); !s.ok()) return s;
    const uint8_t vtl = static_cast<uint8_t>(request->vtl());
    auto type = FromProto(request->interface_type(), "interface_type", /*allow_empty=*/false);
    if (!type.ok()) return type.status();
    auto instance = FromProto(request->interface_instance(), "interface_instance", true);
    if (!instance.ok()) return instance.status();
    const uint32_t in_pages = request->incoming_ring_pages();
    const uint32_t out_pages = request->outgoing_ring_pages();
    if (in_pages > kmcl::kMaxRingPages || out_pages > kmcl::kMaxRingPages) {
      return absl::InvalidArgumentError(absl::StrCat("ring page counts must be at most ",
                                                     kmcl::kMaxRingPages));
    }
    if (!request->wait_for_offer()) {
      bool free_offer = false;
      for (const auto& info : Matching(p, vtl, *type, *instance)) {
        free_offer = free_offer || info.state == kmcl::ClientChannelState::kOffered;
      }
      if (!free_offer) {
        return absl::NotFoundError(absl::StrCat("no unopened offer of type ", type->ToString(),
                                                " for the guest at VTL ", vtl, " of partition '",
                                                p.id(), "'"));
      }
    }
    auto ep = Endpoint::Create(p.shared_partition(), p.id(), kmcl::v1::ENDPOINT_ROLE_GUEST,
                               ctx_.registry.limits().endpoint, ctx_.registry.log(),
                               ctx_.registry.timer(), p.peer_log);
    if (!ep.ok()) return ep.status();
    (*ep)->KeepUntilFreed(charge);  // the caller's channels limit, until the endpoint is freed
    kmcl::Channel& ch = (*ep)->channel();
    std::optional<kmcl::Guid> want_instance;
    if (!instance->IsNull()) want_instance = *instance;
    if (absl::Status s = ch.SetTargetPnp(*type, want_instance, vtl); !s.ok()) return s;
    if (absl::Status s = ch.SetRingBufferPageCount(in_pages == 0 ? kmcl::kDefaultRingPages : in_pages,
                                                   out_pages == 0 ? kmcl::kDefaultRingPages : out_pages);
        !s.ok()) {
      return s;
    }
    if (request->max_packet_size() != 0) {
      if (absl::Status s = ch.SetMaximumPacketSize(request->max_packet_size()); !s.ok()) return s;
      (*ep)->set_max_packet_size(request->max_packet_size());
    }
    (*ep)->SetQuota(request->transaction_quota());
    {
      kmcl::MutexLock lock(&p.mu);
      if (p.deleted) return absl::NotFoundError(absl::StrCat("partition '", p.id(), "' was deleted"));
      p.guests.push_back(*ep);
    }
    absl::Status s = ch.Enable();
    // Enable claims a matching offer at once if there is one; without
    // wait_for_offer, losing a race for the offer is NOT_FOUND, not a wait.
    if (s.ok() && !request->wait_for_offer() && (*ep)->relid() == 0) {
      s = absl::NotFoundError(absl::StrCat("no unopened offer of type ", type->ToString(),
                                           " for the guest at VTL ", vtl, " of partition '",
                                           p.id(), "' (another guest opened it)"));
    }
    if (s.ok() && !request->wait_for_offer()) s = (*ep)->WaitOpened(deadline);
    if (!s.ok()) {
      ctx_.registry.FreeEndpoint(*partition, *ep).IgnoreError();
      return s;
    }
    kmcl::v1::ChannelRef ref;
    ref.set_partition_id(p.id());
    ref.set_channel_id((*ep)->relid());
    if (ref.channel_id() == 0) {  // waiting for an offer
      kmcl::v1::Channel* c = response->mutable_channel();
      *c->mutable_offer()->mutable_channel() = ref;
      *c->mutable_guest() = ToProto(ch.Snapshot(), kmcl::v1::ENDPOINT_ROLE_GUEST, false,
                                    (*ep)->attached());
      return absl::OkStatus();
    }
    auto resolved = ctx_.registry.Resolve(ref);
    if (!resolved.ok()) return resolved.status();
    (*ep)->set_offer_sequence(resolved->offer_sequence);
    *response->mutable_channel() = ctx_.registry.Describe(*resolved);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* GuestChannelService::CloseChannel(grpc::CallbackServerContext* ctx,
                                                            const kmcl::v1::ChannelRequest* request,
                                                            kmcl::v1::ChannelResponse* response) {
  if (absl::Status s = Authorize(ctx_, ctx, "CloseChannel", *request); !s.ok()) return FinishNow(ctx, s);
  kmcl::v1::EndpointRef ref;
  *ref.mutable_channel() = request->channel();
  ref.set_role(kmcl::v1::ENDPOINT_ROLE_GUEST);
  auto ep = ctx_.registry.ResolveEndpoint(ref);
  if (!ep.ok()) return FinishNow(ctx, ep.status());
  const absl::Time deadline = Deadline(ctx, absl::Minutes(10));
  return FinishBlocking(ctx, ctx_.pool, {request->channel().partition_id(), ChannelLane((*ep)->relid())},
                        [this, ep = *ep, request, response, deadline] {
    auto partition = ctx_.registry.GetPartition(request->channel().partition_id());
    if (!partition.ok()) return partition.status();
    const uint32_t relid = ep->relid();
    const uint64_t sequence = ep->Ref().offer_sequence();
    const uint8_t vtl = ep->channel().client_vtl();
    if (absl::Status s = ctx_.registry.FreeEndpoint(*partition, ep); !s.ok()) return s;
    // The GPADLs the tool created on the channel go with it; each waits for
    // the host to unmap (host leases expire, see GpadlService). Once a newer
    // offer reused the relid (this endpoint was rescinded), the relid's
    // GPADLs are the newer channel's: this one's went when the relid was
    // released.
    bool reused = false;
    for (const kmcl::ServerChannelInfo& info : (*partition)->partition().ServerChannels()) {
      reused = reused || (info.relid == relid && sequence != 0 && info.offer_sequence != sequence);
    }
    absl::Status status;
    for (const kmcl::GpadlInfo& g :
         reused ? std::vector<kmcl::GpadlInfo>{} : (*partition)->partition().gpadls().ListForChannel(relid)) {
      absl::Status s = (*partition)->partition().TeardownGuestGpadl(
          vtl, relid, g.gpadl_id, std::max(deadline - absl::Now(), absl::ZeroDuration()));
      if (!s.ok() && status.ok()) status = s;
    }
    kmcl::v1::ChannelRef now = request->channel();
    now.set_offer_sequence(0);
    if (auto resolved = ctx_.registry.Resolve(now); resolved.ok()) {
      *response->mutable_channel() = ctx_.registry.Describe(*resolved);
    }
    return status;
  });
}

}  // namespace kmcld
