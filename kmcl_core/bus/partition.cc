#include "kmcl_core/bus/partition.h"

#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace kmcl {
namespace {

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

// VMBus handles name live partitions process-wide.
Mutex g_handles_mu;
absl::flat_hash_map<uint64_t, Partition*>& Handles() ABSL_EXCLUSIVE_LOCKS_REQUIRED(g_handles_mu) {
  static auto* handles = new absl::flat_hash_map<uint64_t, Partition*>();
  return *handles;
}
uint64_t g_next_handle ABSL_GUARDED_BY(g_handles_mu) = 0x564D4200;  // "VMB\0"

}  // namespace

// ---- RingLink ---------------------------------------------------------------------

void RingLink::Signal(const BusEndpoint* from) {
  MutexLock lock(&mu);
  BusEndpoint* peer = from == host ? guest : host;
  if (peer != nullptr && peer != from) peer->NotifyIo();
}

void RingLink::Attach(BusEndpoint* endpoint, EndpointRole role) {
  MutexLock lock(&mu);
  (IsHost(role) ? host : guest) = endpoint;
}

void RingLink::Detach(const BusEndpoint* endpoint) {
  MutexLock lock(&mu);
  if (host == endpoint) host = nullptr;
  if (guest == endpoint) guest = nullptr;
}

// ---- Partition ----------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Partition>> Partition::Create(PartitionOptions options) {
  if (options.client_vtls.empty()) options.client_vtls = {0};
  for (uint8_t vtl : options.client_vtls) {
    if (vtl > 2) return absl::InvalidArgumentError(absl::StrCat("VTL ", vtl, " is not 0, 1 or 2"));
  }
  auto memory = GuestMemory::Create(options.memory_bytes);
  if (!memory.ok()) return memory.status();
  auto partition =
      std::unique_ptr<Partition>(new Partition(std::move(options), *std::move(memory)));
  {
    MutexLock lock(&partition->mu_);
    for (auto& [vtl, client] : partition->clients_) client.Connect();
    partition->PumpLocked();
    for (auto& [vtl, client] : partition->clients_) {
      if (!client.version().has_value()) {
        return absl::InternalError(absl::StrCat("guest VMBus client at VTL ", vtl,
                                                " could not connect"));
      }
    }
  }
  return partition;
}

Partition::Partition(PartitionOptions options, std::unique_ptr<GuestMemory> memory)
    : options_(std::move(options)),
      memory_(std::move(memory)),
      gpadls_(*memory_),
      server_(gpadls_, memory_->page_count(), options_.client_vtls, options_.max_version) {
  MutexLock lock(&mu_);
  for (uint8_t vtl : options_.client_vtls) {
    clients_.emplace(vtl, VmbusClient(vtl, options_.max_version));
  }
  MutexLock handles(&g_handles_mu);
  handle_ = g_next_handle++;
  Handles()[handle_] = this;
}

Partition::~Partition() {
  MutexLock handles(&g_handles_mu);
  Handles().erase(handle_);
}

Partition* Partition::FromVmbusHandle(uint64_t handle) {
  MutexLock lock(&g_handles_mu);
  auto it = Handles().find(handle);
  return it == Handles().end() ? nullptr : it->second;
}

VmbusClient& Partition::client(uint8_t vtl) { return clients_.at(vtl); }

std::optional<uint32_t> Partition::NegotiatedVersion(uint8_t vtl) const {
  MutexLock lock(&mu_);
  return server_.ConnectedVersion(vtl);
}

std::vector<ServerChannelInfo> Partition::ServerChannels() const {
  MutexLock lock(&mu_);
  return server_.Channels();
}

std::vector<ClientChannelInfo> Partition::GuestOffers(uint8_t vtl) const {
  MutexLock lock(&mu_);
  auto it = clients_.find(vtl);
  return it == clients_.end() ? std::vector<ClientChannelInfo>() : it->second.Channels();
}

PartitionCounters Partition::counters() const {
  MutexLock lock(&mu_);
  return counters_;
}

void Partition::ForEachEndpoint(absl::FunctionRef<void(const AttachedEndpoint&)> visit) const {
  MutexLock lock(&mu_);
  for (const auto& [relid, host] : hosts_) visit({relid, EndpointRole::kHost, 0, host});
  for (const auto& [key, guest] : guests_) visit({key.second, EndpointRole::kGuest, key.first, guest});
}

absl::StatusOr<std::pair<uint64_t, uint64_t>> Partition::MmioFor(uint32_t relid,
                                                                  uint64_t bytes) {
  MutexLock lock(&mu_);
  auto it = mmio_.find(relid);
  if (it != mmio_.end()) return it->second;
  if (bytes > options_.mmio_size - mmio_next_) {
    return absl::ResourceExhaustedError(absl::StrCat("MMIO window exhausted: ", bytes,
                                                     " bytes wanted, ",
                                                     options_.mmio_size - mmio_next_, " left"));
  }
  std::pair<uint64_t, uint64_t> range{options_.mmio_base + mmio_next_, bytes};
  mmio_next_ += bytes;
  mmio_[relid] = range;
  return range;
}

absl::StatusOr<uint64_t> Partition::AllocateMmio(uint64_t bytes) {
  MutexLock lock(&mu_);
  if (bytes > options_.mmio_size - mmio_next_) {
    return absl::ResourceExhaustedError(absl::StrCat("MMIO window exhausted: ", bytes,
                                                     " bytes wanted, ",
                                                     options_.mmio_size - mmio_next_, " left"));
  }
  uint64_t base = options_.mmio_base + mmio_next_;
  mmio_next_ += bytes;
  return base;
}

// ---- The pump ---------------------------------------------------------------------------

void Partition::PumpLocked() {
  // Handlers may queue further messages (a release after a rescind), so run
  // until neither side has anything left.
  for (;;) {
    bool moved = false;
    for (ServerEffect& e : server_.TakeEffects()) {
      moved = true;
      if (auto* send = std::get_if<SendToGuest>(&e)) {
        ++counters_.messages_to_guest;
        client(send->vtl).HandleHostMessage(Encode(send->message));
      } else {
        HandleServerEffect(e);
      }
    }
    for (auto& [vtl, c] : clients_) {
      for (ClientEffect& e : c.TakeEffects()) {
        moved = true;
        if (auto* send = std::get_if<SendToHost>(&e)) {
          ++counters_.messages_to_host;
          server_.HandleGuestMessage(vtl, Encode(send->message));
        } else {
          HandleClientEffect(vtl, e);
        }
      }
    }
    if (!moved) break;
  }
  changed_.SignalAll();
}

void Partition::HandleServerEffect(ServerEffect& effect) {
  auto host = [&](uint32_t relid) -> BusEndpoint* {
    mu_.AssertHeld();  // the lambdas run inside PumpLocked
    auto it = hosts_.find(relid);
    return it == hosts_.end() ? nullptr : it->second;
  };
  std::visit(Overloaded{
                 [&](OpenRequested& e) {
                   mu_.AssertHeld();
                   if (BusEndpoint* h = host(e.relid)) {
                     h->OnOpenRequested(e.open);
                   } else {
                     server_.AcceptOpen(e.relid, kStatusDeviceRemoved).IgnoreError();
                   }
                 },
                 [&](CloseRequested& e) {
                   mu_.AssertHeld();
                   if (BusEndpoint* h = host(e.relid)) {
                     h->OnPeerClosed();
                   } else {
                     server_.CloseComplete(e.relid).IgnoreError();
                   }
                 },
                 [&](OpenCancelled& e) {
                   if (BusEndpoint* h = host(e.relid)) h->OnOpenCancelled();
                 },
                 [&](ChannelReleased& e) {
                   mu_.AssertHeld();
                   if (BusEndpoint* h = host(e.relid)) h->OnReleased();
                   hosts_.erase(e.relid);
                   links_.erase(e.relid);
                   mmio_.erase(e.relid);
                 },
                 [&](ProtocolError& e) {
                   mu_.AssertHeld();
                   ++counters_.protocol_errors;
                   counters_.last_protocol_error = e.what;
                 },
                 [&](auto&) {},
             },
             effect);
}

void Partition::HandleClientEffect(uint8_t vtl, ClientEffect& effect) {
  auto guest = [&](uint32_t relid) -> BusEndpoint* {
    mu_.AssertHeld();
    auto it = guests_.find({vtl, relid});
    return it == guests_.end() ? nullptr : it->second;
  };
  std::visit(Overloaded{
                 [&](OfferArrived&) {
                   mu_.AssertHeld();
                   MatchWaitersLocked(vtl);
                 },
                 [&](OfferRescinded& e) {
                   if (BusEndpoint* g = guest(e.relid)) {
                     g->OnPeerClosed();
                   } else {
                     // No driver owns it: give the relid back at once.
                     mu_.AssertHeld();
                     client(vtl).Release(e.relid).IgnoreError();
                   }
                 },
                 [&](OpenCompleted& e) {
                   if (BusEndpoint* g = guest(e.relid)) g->OnOpenCompleted(e.status);
                 },
                 [&](GpadlCreateCompleted& e) {
                   mu_.AssertHeld();
                   gpadl_created_[e.gpadl_id] = e.status;
                 },
                 [&](GpadlTeardownCompleted& e) {
                   mu_.AssertHeld();
                   gpadl_torn_down_.insert(e.gpadl_id);
                 },
                 [&](ClientProtocolError& e) {
                   mu_.AssertHeld();
                   ++counters_.protocol_errors;
                   counters_.last_protocol_error = e.what;
                 },
                 [&](auto&) {},
             },
             effect);
}

// ---- Host endpoints ---------------------------------------------------------------------

absl::StatusOr<OfferHandle> Partition::Offer(BusEndpoint* host, const ServerOffer& offer) {
  MutexLock lock(&mu_);
  absl::StatusOr<OfferHandle> handle = server_.Offer(offer);
  if (!handle.ok()) return handle.status();
  hosts_[handle->relid] = host;
  links_[handle->relid] = std::make_shared<RingLink>();
  // Before the pump delivers the offer: a waiting guest may open it on its
  // own thread at once, and the host must already know its relid then.
  host->OnOffered(*handle);
  PumpLocked();
  return handle;
}

absl::Status Partition::Revoke(uint32_t relid) {
  MutexLock lock(&mu_);
  absl::Status s = server_.Revoke(relid);
  PumpLocked();
  return s;
}

absl::Status Partition::AcceptOpen(uint32_t relid, NTSTATUS status) {
  MutexLock lock(&mu_);
  absl::Status s = server_.AcceptOpen(relid, status);
  PumpLocked();
  return s;
}

absl::Status Partition::CloseComplete(uint32_t relid) {
  MutexLock lock(&mu_);
  absl::Status s = server_.CloseComplete(relid);
  PumpLocked();
  return s;
}

absl::StatusOr<GpadlLease> Partition::MapGpadl(uint32_t relid, uint32_t gpadl_id,
                                               bool read_only, const GpadlViewLayout& layout) {
  std::optional<GpadlInfo> info = gpadls_.Get(gpadl_id);
  if (!info.has_value() || info->channel_id != relid) {
    return absl::NotFoundError(
        absl::StrCat("channel ", relid, " has no GPADL ", gpadl_id));
  }
  return gpadls_.Map(gpadl_id, read_only, layout);
}

absl::Status Partition::UnmapGpadl(uint64_t lease_id) {
  absl::StatusOr<UnmapResult> r = gpadls_.Unmap(lease_id);
  if (!r.ok()) return r.status();
  MutexLock lock(&mu_);
  server_.GpadlUnmapped(*r);
  PumpLocked();
  return absl::OkStatus();
}

void Partition::DetachHost(uint32_t relid, const BusEndpoint* host) {
  MutexLock lock(&mu_);
  auto it = hosts_.find(relid);
  if (it != hosts_.end() && it->second == host) hosts_.erase(it);
}

std::shared_ptr<RingLink> Partition::LinkFor(uint32_t relid) {
  MutexLock lock(&mu_);
  auto it = links_.find(relid);
  return it == links_.end() ? nullptr : it->second;
}

// ---- Guest endpoints ----------------------------------------------------------------------

void Partition::Connect(BusEndpoint* guest, uint8_t vtl, const Guid& type,
                        std::optional<Guid> instance) {
  MutexLock lock(&mu_);
  waiters_.push_back({guest, vtl, type, instance});
  MatchWaitersLocked(vtl);
}

void Partition::CancelConnect(const BusEndpoint* guest) {
  MutexLock lock(&mu_);
  std::erase_if(waiters_, [&](const Waiter& w) { return w.guest == guest; });
}

void Partition::MatchWaitersLocked(uint8_t vtl) {
  auto it = clients_.find(vtl);
  if (it == clients_.end()) return;
  for (auto w = waiters_.begin(); w != waiters_.end();) {
    if (w->vtl != vtl) {
      ++w;
      continue;
    }
    // The lowest relid among the free offers of the waiter's interface.
    std::optional<OfferChannel> match;
    it->second.ForEachOfferOf(w->type, w->instance, [&](const ClientChannelInfo& c) {
      mu_.AssertHeld();
      if (c.rescinded || guests_.contains({vtl, c.offer.child_relid})) return;
      if (!match.has_value() || c.offer.child_relid < match->child_relid) match = c.offer;
    });
    if (!match.has_value()) {
      ++w;
      continue;
    }
    guests_[{vtl, match->child_relid}] = w->guest;
    w->guest->OnOfferMatched(match->child_relid, *match);
    w = waiters_.erase(w);
  }
}

absl::Status Partition::CreateGuestGpadl(uint8_t vtl, uint32_t relid, uint32_t gpadl_id,
                                         std::vector<GpaRange> ranges) {
  MutexLock lock(&mu_);
  if (!clients_.contains(vtl)) return absl::NotFoundError(absl::StrCat("no guest at VTL ", vtl));
  gpadl_created_.erase(gpadl_id);
  if (absl::Status s = client(vtl).CreateGpadl(relid, gpadl_id, ranges); !s.ok()) return s;
  PumpLocked();
  auto it = gpadl_created_.find(gpadl_id);
  if (it == gpadl_created_.end()) {
    return absl::InternalError(absl::StrCat("no GPADL_CREATED for GPADL ", gpadl_id));
  }
  NTSTATUS status = it->second;
  gpadl_created_.erase(it);
  return FromNtStatus(status, absl::StrCat("GPADL ", gpadl_id, " refused by the host"));
}

absl::Status Partition::TeardownGuestGpadl(uint8_t vtl, uint32_t relid, uint32_t gpadl_id,
                                           std::optional<absl::Duration> wait,
                                           const std::function<bool()>& make_progress) {
  MutexLock lock(&mu_);
  if (!clients_.contains(vtl)) return absl::NotFoundError(absl::StrCat("no guest at VTL ", vtl));
  gpadl_torn_down_.erase(gpadl_id);
  if (absl::Status s = client(vtl).TeardownGpadl(relid, gpadl_id); !s.ok()) return s;
  PumpLocked();
  const absl::Time deadline = wait.has_value() ? absl::Now() + *wait : absl::InfiniteFuture();
  while (!gpadl_torn_down_.contains(gpadl_id)) {
    // Messages go synchronously: if the host side no longer knows the
    // GPADL, no GPADL_TORNDOWN can come, and waiting would be forever.
    if (!server_.AnswersGpadl(vtl, relid, gpadl_id)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "GPADL ", gpadl_id, " of channel ", relid,
          " is unknown to the host side of the control plane; its teardown cannot be answered"));
    }
    if (make_progress) {
      mu_.Unlock();
      const bool ran = make_progress();
      mu_.Lock();
      // The answer may have come while the lock was free: its signal went
      // to nobody, so look again before waiting for the next one.
      if (ran || gpadl_torn_down_.contains(gpadl_id)) continue;
    }
    if (changed_.WaitWithDeadline(&mu_, deadline) && !gpadl_torn_down_.contains(gpadl_id)) {
      return absl::DeadlineExceededError(
          absl::StrCat("GPADL ", gpadl_id, " is still mapped by the host"));
    }
  }
  gpadl_torn_down_.erase(gpadl_id);
  return absl::OkStatus();
}

absl::Status Partition::OpenGuest(uint8_t vtl, uint32_t relid, const OpenParams& params) {
  MutexLock lock(&mu_);
  if (!clients_.contains(vtl)) return absl::NotFoundError(absl::StrCat("no guest at VTL ", vtl));
  absl::Status s = client(vtl).Open(relid, params);
  PumpLocked();
  return s;
}

absl::Status Partition::CloseGuest(uint8_t vtl, uint32_t relid) {
  MutexLock lock(&mu_);
  if (!clients_.contains(vtl)) return absl::NotFoundError(absl::StrCat("no guest at VTL ", vtl));
  absl::Status s = client(vtl).Close(relid);
  PumpLocked();
  return s;
}

void Partition::DetachGuest(uint8_t vtl, uint32_t relid, const BusEndpoint* guest) {
  MutexLock lock(&mu_);
  auto it = guests_.find({vtl, relid});
  if (it == guests_.end() || it->second != guest) return;
  guests_.erase(it);
  std::optional<ClientChannelInfo> info = client(vtl).Channel(relid);
  if (info.has_value() && info->rescinded) client(vtl).Release(relid).IgnoreError();
  PumpLocked();
  // The offer may serve another waiting guest endpoint.
  MatchWaitersLocked(vtl);
}

}  // namespace kmcl
