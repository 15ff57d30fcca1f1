#include "kmcl_core/control/vmbus_server.h"

#include <algorithm>
#include <utility>

#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl {
namespace {

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

bool IsSupportedVersion(uint32_t version) {
  return std::find(std::begin(wire::kSupportedVersions), std::end(wire::kSupportedVersions),
                   version) != std::end(wire::kSupportedVersions);
}

}  // namespace

const char* ServerChannelStateName(ServerChannelState state) {
  switch (state) {
    case ServerChannelState::kOffered: return "offered";
    case ServerChannelState::kOpening: return "opening";
    case ServerChannelState::kOpen: return "open";
    case ServerChannelState::kClosing: return "closing";
    case ServerChannelState::kClosingReopen: return "closing-reopen";
    case ServerChannelState::kRevoked: return "revoked";
  }
  return "?";
}

VmbusServer::VmbusServer(GpadlTable& gpadls, uint64_t guest_page_count,
                         std::set<uint8_t> client_vtls, uint32_t max_version)
    : gpadls_(gpadls), guest_page_count_(guest_page_count), max_version_(max_version) {
  for (uint8_t vtl : client_vtls) connections_[vtl] = Connection{};
}

std::vector<ServerEffect> VmbusServer::TakeEffects() { return std::exchange(effects_, {}); }

void VmbusServer::Send(uint8_t vtl, VmbusMessage message) {
  effects_.push_back(SendToGuest{vtl, std::move(message)});
}

void VmbusServer::Error(uint8_t vtl, std::string what) {
  effects_.push_back(ProtocolError{vtl, std::move(what)});
}

ServerChannelInfo* VmbusServer::Find(uint32_t relid) {
  auto it = channels_.find(relid);
  return it == channels_.end() ? nullptr : &it->second;
}

ServerChannelInfo* VmbusServer::FindForGuest(uint8_t vtl, uint32_t relid, const char* message) {
  ServerChannelInfo* c = Find(relid);
  if (c == nullptr || c->offer.target_vtl != vtl || !c->offer_sent) {
    Error(vtl, absl::StrCat(message, " for unknown channel ", relid));
    return nullptr;
  }
  return c;
}

OfferChannel VmbusServer::OfferMessage(const ServerChannelInfo& c) const {
  OfferChannel m = ToOfferMessage(c.offer);
  m.child_relid = c.relid;
  // OpenVMM's per-channel connection id: relid | sint << 12 | vtl << 16.
  m.connection_id = c.relid | (2u << 12) | (uint32_t{c.offer.target_vtl} << 16);
  return m;
}

// ---- Host calls ----------------------------------------------------------------

absl::StatusOr<OfferHandle> VmbusServer::Offer(const ServerOffer& offer) {
  auto conn = connections_.find(offer.target_vtl);
  if (conn == connections_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no VMBus client at VTL ", offer.target_vtl, " in this partition"));
  }
  // The lowest free relid. channels_ is ordered: when its last relid equals
  // its size there is no hole, and the next one is free (O(1) for the
  // common case of offers without rescinds in between).
  uint32_t relid = 1;
  if (!channels_.empty() && channels_.rbegin()->first == channels_.size()) {
    relid = static_cast<uint32_t>(channels_.size()) + 1;
  } else {
    for (const auto& [id, c] : channels_) {
      if (id != relid) break;
      ++relid;
    }
  }
  if (relid == 0) return absl::ResourceExhaustedError("no free channel ids");
  ServerChannelInfo c;
  c.relid = relid;
  c.offer_sequence = next_offer_sequence_++;
  c.offer = offer;
  if (conn->second.offers_requested) {
    c.offer_sent = true;
    Send(offer.target_vtl, OfferMessage(c));
  }
  OfferHandle handle{relid, c.offer_sequence};
  channels_.emplace(relid, std::move(c));
  return handle;
}

absl::Status VmbusServer::Revoke(uint32_t relid) {
  ServerChannelInfo* c = Find(relid);
  if (c == nullptr) return absl::NotFoundError(absl::StrCat("no channel ", relid));
  const uint8_t vtl = c->offer.target_vtl;
  switch (c->state) {
    case ServerChannelState::kRevoked:
      return absl::FailedPreconditionError(absl::StrCat("channel ", relid, " is already revoked"));
    case ServerChannelState::kOpening:
    case ServerChannelState::kClosingReopen:
      // The guest waits for an open result: fail it before rescinding.
      if (c->open.has_value()) {
        Send(vtl, OpenResult{relid, c->open->open_id,
                             static_cast<uint32_t>(kStatusDeviceRemoved)});
      }
      if (c->state == ServerChannelState::kOpening) effects_.push_back(OpenCancelled{relid});
      break;
    default:
      break;
  }
  c->state = ServerChannelState::kRevoked;
  c->open.reset();
  if (!c->offer_sent) {
    // The guest never heard of it: nothing to rescind, the relid is free now.
    ReleaseChannel(relid);
    FinishUnloads();
    return absl::OkStatus();
  }
  Send(vtl, RescindChannelOffer{relid});
  return absl::OkStatus();
}

absl::Status VmbusServer::AcceptOpen(uint32_t relid, NTSTATUS status) {
  ServerChannelInfo* c = Find(relid);
  if (c == nullptr) return absl::NotFoundError(absl::StrCat("no channel ", relid));
  if (c->state != ServerChannelState::kOpening || !c->open.has_value()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "channel ", relid, " is ", ServerChannelStateName(c->state), ", not opening"));
  }
  Send(c->offer.target_vtl, OpenResult{relid, c->open->open_id, static_cast<uint32_t>(status)});
  if (NtSuccess(status)) {
    c->state = ServerChannelState::kOpen;
  } else {
    c->state = ServerChannelState::kOffered;
    c->open.reset();
  }
  return absl::OkStatus();
}

absl::Status VmbusServer::CloseComplete(uint32_t relid) {
  ServerChannelInfo* c = Find(relid);
  if (c == nullptr) return absl::NotFoundError(absl::StrCat("no channel ", relid));
  switch (c->state) {
    case ServerChannelState::kClosing:
      c->state = ServerChannelState::kOffered;
      c->open.reset();
      FinishUnloads();
      return absl::OkStatus();
    case ServerChannelState::kClosingReopen: {
      OpenChannel reopen = *c->open;
      c->state = ServerChannelState::kOffered;
      StartOpen(*c, reopen);
      return absl::OkStatus();
    }
    case ServerChannelState::kRevoked:
      return absl::OkStatus();  // closed as part of the revoke
    default:
      return absl::FailedPreconditionError(absl::StrCat(
          "channel ", relid, " is ", ServerChannelStateName(c->state), ", not closing"));
  }
}

void VmbusServer::GpadlUnmapped(const UnmapResult& result) {
  if (!result.completed_teardown) return;
  auto it = teardowns_.find(result.gpadl_id);
  if (it == teardowns_.end()) return;
  PendingTeardown t = it->second;
  teardowns_.erase(it);
  if (t.answer) Send(t.vtl, GpadlTorndown{result.gpadl_id});
  effects_.push_back(GpadlGone{t.relid, result.gpadl_id});
  FinishUnloads();
}

// ---- Guest messages -------------------------------------------------------------

void VmbusServer::HandleGuestMessage(uint8_t vtl, std::span<const uint8_t> bytes) {
  if (!connections_.contains(vtl)) {
    Error(vtl, absl::StrCat("message from VTL ", vtl, ", which has no VMBus client"));
    return;
  }
  absl::StatusOr<VmbusMessage> message = ParseChannelMessage(bytes);
  if (!message.ok()) {
    Error(vtl, std::string(message.status().message()));
    return;
  }
  if (connections_[vtl].unloading) {
    // The guest sends nothing between UNLOAD and UNLOAD_RESPONSE.
    Error(vtl, absl::StrCat(MessageName(*message), " before UNLOAD_RESPONSE"));
    if (std::holds_alternative<InitiateContact>(*message)) Send(vtl, VersionResponse{false, 0, 0});
    return;
  }
  const bool connected = connections_[vtl].version.has_value();
  if (!connected && !std::holds_alternative<InitiateContact>(*message)) {
    Error(vtl, absl::StrCat(MessageName(*message), " before INITIATE_CONTACT"));
    return;
  }
  std::visit(Overloaded{
                 [&](const InitiateContact& m) { OnInitiateContact(vtl, m); },
                 [&](const RequestOffers&) { OnRequestOffers(vtl); },
                 [&](const OpenChannel& m) { OnOpenChannel(vtl, m); },
                 [&](const CloseChannel& m) { OnCloseChannel(vtl, m); },
                 [&](const GpadlHeader& m) { OnGpadlHeader(vtl, m); },
                 [&](const GpadlBody& m) { OnGpadlBody(vtl, m); },
                 [&](const GpadlTeardown& m) { OnGpadlTeardown(vtl, m); },
                 [&](const RelIdReleased& m) { OnRelIdReleased(vtl, m); },
                 [&](const Unload&) { OnUnload(vtl); },
                 [&](const auto& m) {
                   Error(vtl, absl::StrCat(MessageName(m), " is a host-to-guest message"));
                 },
             },
             *message);
}

void VmbusServer::OnInitiateContact(uint8_t vtl, const InitiateContact& m) {
  Connection& conn = connections_[vtl];
  if (conn.version.has_value()) {
    Error(vtl, "INITIATE_CONTACT while connected (UNLOAD first)");
    Send(vtl, VersionResponse{false, 0, 0});
    return;
  }
  const bool ok = IsSupportedVersion(m.version_requested) && m.version_requested <= max_version_;
  // From 5.1 the guest states its VTL; it must be the one it talks from.
  if (ok && m.version_requested >= wire::kVersionWin10Rs4 && m.vtl != vtl) {
    Error(vtl, absl::StrCat("INITIATE_CONTACT names VTL ", m.vtl, " but arrived at VTL ", vtl));
    Send(vtl, VersionResponse{false, 0, 0});
    return;
  }
  if (!ok) {
    Send(vtl, VersionResponse{false, 0, 0});
    return;
  }
  conn.version = m.version_requested;
  conn.offers_requested = false;
  Send(vtl, VersionResponse{true, 0,
                            m.version_requested >= wire::kVersionWin10V5
                                ? wire::kMessageConnectionIdV5
                                : wire::kMessageConnectionId});
}

void VmbusServer::OnRequestOffers(uint8_t vtl) {
  Connection& conn = connections_[vtl];
  conn.offers_requested = true;
  for (auto& [relid, c] : channels_) {
    if (c.offer.target_vtl != vtl || c.state == ServerChannelState::kRevoked || c.offer_sent) {
      continue;
    }
    c.offer_sent = true;
    Send(vtl, OfferMessage(c));
  }
  Send(vtl, AllOffersDelivered{});
}

void VmbusServer::StartOpen(ServerChannelInfo& c, const OpenChannel& open) {
  const uint8_t vtl = c.offer.target_vtl;
  auto fail = [&](NTSTATUS status, std::string what) {
    Error(vtl, std::move(what));
    Send(vtl, OpenResult{c.relid, open.open_id, static_cast<uint32_t>(status)});
  };
  auto owner = gpadl_owners_.find(open.ring_buffer_gpadl);
  if (owner == gpadl_owners_.end() || owner->second.relid != c.relid) {
    fail(kStatusInvalidParameter, absl::StrCat("OPENCHANNEL of channel ", c.relid,
                                               " names ring GPADL ", open.ring_buffer_gpadl,
                                               ", which is not one of its GPADLs"));
    return;
  }
  c.state = ServerChannelState::kOpening;
  c.open = open;
  effects_.push_back(OpenRequested{c.relid, open});
}

void VmbusServer::OnOpenChannel(uint8_t vtl, const OpenChannel& m) {
  ServerChannelInfo* c = FindForGuest(vtl, m.child_relid, "OPENCHANNEL");
  if (c == nullptr) {
    Send(vtl, OpenResult{m.child_relid, m.open_id, static_cast<uint32_t>(kStatusInvalidParameter)});
    return;
  }
  switch (c->state) {
    case ServerChannelState::kOffered:
      StartOpen(*c, m);
      return;
    case ServerChannelState::kClosing:
      c->state = ServerChannelState::kClosingReopen;
      c->open = m;
      return;
    case ServerChannelState::kRevoked:
      // The guest sent it before it saw the rescind.
      Send(vtl, OpenResult{m.child_relid, m.open_id, static_cast<uint32_t>(kStatusDeviceRemoved)});
      return;
    default:
      // Already opening or open: refused, but answered like every open.
      Error(vtl, absl::StrCat("OPENCHANNEL for channel ", m.child_relid, ", which is ",
                              ServerChannelStateName(c->state)));
      Send(vtl, OpenResult{m.child_relid, m.open_id,
                           static_cast<uint32_t>(kStatusInvalidDeviceState)});
      return;
  }
}

void VmbusServer::OnCloseChannel(uint8_t vtl, const CloseChannel& m) {
  ServerChannelInfo* c = FindForGuest(vtl, m.child_relid, "CLOSECHANNEL");
  if (c == nullptr) return;
  switch (c->state) {
    case ServerChannelState::kOpen:
      c->state = ServerChannelState::kClosing;
      effects_.push_back(CloseRequested{c->relid});
      return;
    case ServerChannelState::kClosingReopen:
      // The queued reopen is withdrawn; its OPENCHANNEL still gets its answer.
      Send(vtl, OpenResult{c->relid, c->open->open_id, static_cast<uint32_t>(kStatusCancelled)});
      c->state = ServerChannelState::kClosing;
      return;
    case ServerChannelState::kRevoked:
      return;  // the guest closes a rescinded channel before releasing it
    default:
      Error(vtl, absl::StrCat("CLOSECHANNEL for channel ", m.child_relid, ", which is ",
                              ServerChannelStateName(c->state)));
      return;
  }
}

void VmbusServer::OnGpadlHeader(uint8_t vtl, const GpadlHeader& m) {
  auto reject = [&](NTSTATUS status, std::string what) {
    Error(vtl, std::move(what));
    Send(vtl, GpadlCreated{m.child_relid, m.gpadl, static_cast<uint32_t>(status)});
  };
  // Revoked-but-unreleased channels still accept GPADLs (openvmm #3959).
  ServerChannelInfo* c = Find(m.child_relid);
  if (c == nullptr || c->offer.target_vtl != vtl || !c->offer_sent) {
    reject(kStatusInvalidParameter,
           absl::StrCat("GPADL_HEADER for unknown channel ", m.child_relid));
    return;
  }
  if (assembling_.contains(m.gpadl) || gpadls_.Get(m.gpadl).has_value()) {
    reject(kStatusInvalidParameter, absl::StrCat("GPADL id ", m.gpadl, " is already in use"));
    return;
  }
  absl::StatusOr<GpadlAssembler> a = GpadlAssembler::FromHeader(m.bytes, guest_page_count_);
  if (!a.ok()) {
    reject(kStatusInvalidParameter, std::string(a.status().message()));
    return;
  }
  if (a->complete()) {
    FinishGpadl(vtl, m.child_relid, *a);
    return;
  }
  assembling_.emplace(m.gpadl, Assembling{vtl, *std::move(a), {m.bytes}});
}

void VmbusServer::OnGpadlBody(uint8_t vtl, const GpadlBody& m) {
  auto it = assembling_.find(m.gpadl);
  if (it == assembling_.end() || it->second.vtl != vtl) {
    Error(vtl, absl::StrCat("GPADL_BODY for GPADL ", m.gpadl, ", which is not being created"));
    return;
  }
  GpadlAssembler& a = it->second.assembler;
  it->second.messages.push_back(m.bytes);
  if (absl::Status s = a.AddBody(m.bytes); !s.ok()) {
    const uint32_t relid = a.child_relid();
    assembling_.erase(it);
    Error(vtl, std::string(s.message()));
    Send(vtl, GpadlCreated{relid, m.gpadl, static_cast<uint32_t>(kStatusInvalidParameter)});
    return;
  }
  if (a.complete()) {
    GpadlAssembler done = std::move(a);
    assembling_.erase(it);
    FinishGpadl(vtl, done.child_relid(), done);
  }
}

void VmbusServer::FinishGpadl(uint8_t vtl, uint32_t relid, GpadlAssembler& a) {
  absl::StatusOr<std::vector<GpaRange>> ranges = a.Finish();
  absl::Status s = ranges.ok() ? gpadls_.Create(a.gpadl_id(), relid, *std::move(ranges), false)
                               : ranges.status();
  if (!s.ok()) {
    Error(vtl, std::string(s.message()));
    Send(vtl, GpadlCreated{relid, a.gpadl_id(), static_cast<uint32_t>(ToNtStatus(s))});
    return;
  }
  gpadl_owners_[a.gpadl_id()] = GpadlOwner{relid, vtl};
  Send(vtl, GpadlCreated{relid, a.gpadl_id(), 0});
  effects_.push_back(GpadlReady{relid, a.gpadl_id()});
}

void VmbusServer::OnGpadlTeardown(uint8_t vtl, const GpadlTeardown& m) {
  if (auto it = assembling_.find(m.gpadl); it != assembling_.end() && it->second.vtl == vtl) {
    assembling_.erase(it);  // abandoned half-way: nothing was created
    Send(vtl, GpadlTorndown{m.gpadl});
    return;
  }
  auto owner = gpadl_owners_.find(m.gpadl);
  if (owner == gpadl_owners_.end() || owner->second.vtl != vtl ||
      owner->second.relid != m.child_relid) {
    Error(vtl, absl::StrCat("GPADL_TEARDOWN of GPADL ", m.gpadl, ", which channel ",
                            m.child_relid, " does not have"));
    return;
  }
  absl::StatusOr<TeardownResult> r = gpadls_.Teardown(m.gpadl);
  if (!r.ok()) {
    Error(vtl, std::string(r.status().message()));
    return;
  }
  gpadl_owners_.erase(owner);
  if (*r == TeardownResult::kPending) {
    // GPADL_TORNDOWN goes out from GpadlUnmapped.
    teardowns_[m.gpadl] = PendingTeardown{m.child_relid, vtl, true};
    return;
  }
  Send(vtl, GpadlTorndown{m.gpadl});
  effects_.push_back(GpadlGone{m.child_relid, m.gpadl});
}

void VmbusServer::ReleaseChannel(uint32_t relid) {
  auto it = channels_.find(relid);
  if (it == channels_.end()) return;
  const uint64_t sequence = it->second.offer_sequence;
  channels_.erase(it);
  ForgetRelid(relid);
  effects_.push_back(ChannelReleased{relid, sequence});
}

void VmbusServer::OnRelIdReleased(uint8_t vtl, const RelIdReleased& m) {
  ServerChannelInfo* c = FindForGuest(vtl, m.child_relid, "RELID_RELEASED");
  if (c == nullptr) return;
  if (c->state != ServerChannelState::kRevoked) {
    Error(vtl, absl::StrCat("RELID_RELEASED for channel ", m.child_relid,
                            ", which was not rescinded"));
    return;
  }
  ReleaseChannel(m.child_relid);
}

void VmbusServer::OnUnload(uint8_t vtl) {
  // The guest forgets everything; UNLOAD_RESPONSE waits until the host
  // endpoints have closed its channels and its GPADLs are gone.
  ForgetConnection(vtl);
  connections_[vtl].unloading = true;
  FinishUnloads();
}

// ---- Queries ---------------------------------------------------------------------

std::optional<ServerChannelInfo> VmbusServer::Channel(uint32_t relid) const {
  auto it = channels_.find(relid);
  if (it == channels_.end()) return std::nullopt;
  return it->second;
}

std::vector<ServerChannelInfo> VmbusServer::Channels() const {
  std::vector<ServerChannelInfo> out;
  for (const auto& [relid, c] : channels_) out.push_back(c);
  return out;
}

std::optional<uint32_t> VmbusServer::ConnectedVersion(uint8_t vtl) const {
  auto it = connections_.find(vtl);
  if (it == connections_.end()) return std::nullopt;
  return it->second.version;
}

bool VmbusServer::Unloading(uint8_t vtl) const {
  auto it = connections_.find(vtl);
  return it != connections_.end() && it->second.unloading;
}

bool VmbusServer::AnswersGpadl(uint8_t vtl, uint32_t relid, uint32_t gpadl_id) const {
  if (auto it = gpadl_owners_.find(gpadl_id); it != gpadl_owners_.end()) {
    return it->second.vtl == vtl && it->second.relid == relid;
  }
  if (auto it = teardowns_.find(gpadl_id); it != teardowns_.end()) {
    return it->second.answer && it->second.vtl == vtl && it->second.relid == relid;
  }
  auto it = assembling_.find(gpadl_id);
  return it != assembling_.end() && it->second.vtl == vtl;
}

}  // namespace kmcl
