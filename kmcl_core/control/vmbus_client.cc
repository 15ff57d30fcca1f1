#include "kmcl_core/control/vmbus_client.h"

#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kmcl_core/wire/gpadl_messages.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl {
namespace {

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

}  // namespace

VmbusClient::VmbusClient(uint8_t vtl, uint32_t max_version)
    : vtl_(vtl), max_version_(max_version) {}

std::vector<ClientEffect> VmbusClient::TakeEffects() { return std::exchange(effects_, {}); }

// Every effect goes through here. gcc 12 at -O2 reports -Wmaybe-uninitialized
// from inside std::variant's move constructor when the vector grows and
// relocates ClientEffects that hold a std::string (it reasons about the
// storage of alternatives that are not active). It is a false positive of
// that compiler; the pragma silences exactly it, in the one place it arises.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
void VmbusClient::Emit(ClientEffect effect) { effects_.push_back(std::move(effect)); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

void VmbusClient::Send(VmbusMessage message) { Emit(SendToHost{std::move(message)}); }

void VmbusClient::Error(std::string what) { Emit(ClientProtocolError{std::move(what)}); }

absl::Status VmbusClient::CheckConnected() const {
  if (!version_.has_value() || unloading_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the VMBus client at VTL ", vtl_, unloading_ ? " is unloading" : " is not connected"));
  }
  return absl::OkStatus();
}

ClientChannelInfo* VmbusClient::Find(uint32_t relid) {
  auto it = channels_.find(relid);
  return it == channels_.end() ? nullptr : &it->second;
}

absl::StatusOr<ClientChannelInfo*> VmbusClient::Usable(uint32_t relid) {
  if (absl::Status s = CheckConnected(); !s.ok()) return s;
  ClientChannelInfo* c = Find(relid);
  if (c == nullptr || c->release_pending) {
    return absl::NotFoundError(absl::StrCat("no offer with channel id ", relid));
  }
  return c;
}

void VmbusClient::FinishRelease(uint32_t relid) {
  ClientChannelInfo* c = Find(relid);
  if (c == nullptr || !c->release_pending) return;
  for (const auto& [id, state] : c->gpadls) {
    if (state != ClientGpadlState::kCreated) return;  // an answer is still owed
  }
  // The host tears down the GPADLs left on the channel.
  ForgetChannel(relid);
  Send(RelIdReleased{relid});
}

void VmbusClient::SendContact() {
  InitiateContact m;
  m.version_requested = wire::kSupportedVersions[version_index_];
  m.vtl = vtl_;
  m.sint = 2;
  Send(m);
}

void VmbusClient::Connect() {
  // One negotiation at a time; a connected client unloads first.
  if (connecting_ || version_.has_value() || unloading_) return;
  version_index_ = 0;
  while (version_index_ < std::size(wire::kSupportedVersions) &&
         wire::kSupportedVersions[version_index_] > max_version_) {
    ++version_index_;
  }
  if (version_index_ == std::size(wire::kSupportedVersions)) {
    Emit(ConnectFailed{});
    return;
  }
  connecting_ = true;
  SendContact();
}

absl::Status VmbusClient::CreateGpadl(uint32_t relid, uint32_t gpadl_id,
                                      std::span<const GpaRange> ranges) {
  absl::StatusOr<ClientChannelInfo*> usable = Usable(relid);
  if (!usable.ok()) return usable.status();
  ClientChannelInfo* c = *usable;
  if (gpadl_channel_.contains(gpadl_id)) {
    return absl::AlreadyExistsError(absl::StrCat("GPADL id ", gpadl_id, " is in use"));
  }
  absl::StatusOr<std::vector<ChannelMessage>> messages =
      EncodeGpadlMessages(relid, gpadl_id, ranges);
  if (!messages.ok()) return messages.status();
  AddGpadl(*c, gpadl_id, ClientGpadlState::kCreating);
  for (ChannelMessage& m : *messages) {
    absl::StatusOr<VmbusMessage> parsed = ParseChannelMessage(m);
    Send(*std::move(parsed));
  }
  return absl::OkStatus();
}

absl::Status VmbusClient::TeardownGpadl(uint32_t relid, uint32_t gpadl_id) {
  absl::StatusOr<ClientChannelInfo*> usable = Usable(relid);
  if (!usable.ok()) return usable.status();
  ClientChannelInfo* c = *usable;
  auto g = c->gpadls.find(gpadl_id);
  if (g == c->gpadls.end()) {
    return absl::NotFoundError(absl::StrCat("channel ", relid, " has no GPADL ", gpadl_id));
  }
  if (g->second != ClientGpadlState::kCreated) {
    // Its GPADL_CREATED (or GPADL_TORNDOWN) is still owed: one request at a time.
    return absl::FailedPreconditionError(absl::StrCat(
        "GPADL ", gpadl_id, g->second == ClientGpadlState::kCreating
                                ? " is still being created"
                                : " is already being torn down"));
  }
  g->second = ClientGpadlState::kTearingDown;
  Send(GpadlTeardown{relid, gpadl_id});
  return absl::OkStatus();
}

absl::Status VmbusClient::Open(uint32_t relid, const OpenParams& params) {
  absl::StatusOr<ClientChannelInfo*> usable = Usable(relid);
  if (!usable.ok()) return usable.status();
  ClientChannelInfo* c = *usable;
  if (c->rescinded) {
    return absl::UnavailableError(absl::StrCat("channel ", relid, " was rescinded"));
  }
  if (c->state != ClientChannelState::kOffered) {
    return absl::FailedPreconditionError(absl::StrCat("channel ", relid, " is already open"));
  }
  auto g = c->gpadls.find(params.ring_gpadl_id);
  if (g == c->gpadls.end() || g->second != ClientGpadlState::kCreated) {
    return absl::FailedPreconditionError(absl::StrCat(
        "ring GPADL ", params.ring_gpadl_id, " is not created on channel ", relid));
  }
  OpenChannel m;
  m.child_relid = relid;
  m.open_id = c->open_id = next_open_id_++;
  m.ring_buffer_gpadl = params.ring_gpadl_id;
  m.target_vp = params.target_vp;
  m.downstream_page_offset = params.downstream_page_offset;
  m.user_data = params.user_data;
  c->state = ClientChannelState::kOpening;
  Send(m);
  return absl::OkStatus();
}

absl::Status VmbusClient::Close(uint32_t relid) {
  absl::StatusOr<ClientChannelInfo*> usable = Usable(relid);
  if (!usable.ok()) return usable.status();
  ClientChannelInfo* c = *usable;
  if (c->state == ClientChannelState::kOpening) {
    c->close_after_open = true;  // CLOSECHANNEL follows a successful result
    return absl::OkStatus();
  }
  if (c->state != ClientChannelState::kOpen) {
    return absl::FailedPreconditionError(absl::StrCat("channel ", relid, " is not open"));
  }
  c->state = ClientChannelState::kOffered;
  Send(CloseChannel{relid});
  return absl::OkStatus();
}

absl::Status VmbusClient::Release(uint32_t relid) {
  absl::StatusOr<ClientChannelInfo*> usable = Usable(relid);
  if (!usable.ok()) return usable.status();
  ClientChannelInfo* c = *usable;
  if (!c->rescinded) {
    return absl::FailedPreconditionError(absl::StrCat("channel ", relid, " was not rescinded"));
  }
  if (c->state != ClientChannelState::kOffered) {
    return absl::FailedPreconditionError(absl::StrCat("close channel ", relid, " first"));
  }
  c->release_pending = true;
  FinishRelease(relid);
  return absl::OkStatus();
}

void VmbusClient::Unload() {
  // The host answers UNLOAD only on a connection (Linux unloads only then).
  if (unloading_ || !version_.has_value()) return;
  unloading_ = true;
  Send(kmcl::Unload{});
}

void VmbusClient::HandleHostMessage(std::span<const uint8_t> bytes) {
  absl::StatusOr<VmbusMessage> message = ParseChannelMessage(bytes);
  if (!message.ok()) {
    Error(std::string(message.status().message()));
    return;
  }
  std::visit(
      Overloaded{
          [&](const VersionResponse& m) {
            if (!connecting_) {
              Error("VERSION_RESPONSE without INITIATE_CONTACT");
              return;
            }
            if (m.version_supported) {
              connecting_ = false;
              version_ = wire::kSupportedVersions[version_index_];
              Emit(Connected{*version_});
              Send(RequestOffers{});
              return;
            }
            if (++version_index_ == std::size(wire::kSupportedVersions)) {
              connecting_ = false;
              Emit(ConnectFailed{});
              return;
            }
            SendContact();
          },
          [&](const OfferChannel& m) {
            if (m.child_relid == 0 || channels_.contains(m.child_relid)) {
              Error(absl::StrCat("OFFERCHANNEL with channel id ", m.child_relid,
                                 ", which is zero or in use"));
              return;
            }
            AddChannel(m);
            Emit(OfferArrived{m});
          },
          [&](const AllOffersDelivered&) { Emit(OffersComplete{}); },
          [&](const RescindChannelOffer& m) {
            ClientChannelInfo* c = Find(m.child_relid);
            if (c == nullptr || c->rescinded) {
              Error(absl::StrCat("RESCIND_CHANNELOFFER for unknown channel ", m.child_relid));
              return;
            }
            c->rescinded = true;
            Emit(OfferRescinded{m.child_relid});
          },
          [&](const OpenResult& m) {
            ClientChannelInfo* c = Find(m.child_relid);
            if (c == nullptr || c->state != ClientChannelState::kOpening ||
                c->open_id != m.open_id) {
              Error(absl::StrCat("OPENCHANNEL_RESULT for channel ", m.child_relid,
                                 ", which is not opening"));
              return;
            }
            NTSTATUS status = static_cast<NTSTATUS>(m.status);
            c->state = NtSuccess(status) ? ClientChannelState::kOpen : ClientChannelState::kOffered;
            if (c->close_after_open) {
              c->close_after_open = false;
              if (c->state == ClientChannelState::kOpen) {
                c->state = ClientChannelState::kOffered;
                Send(CloseChannel{m.child_relid});
              }
            }
            Emit(OpenCompleted{m.child_relid, status});
          },
          [&](const GpadlCreated& m) {
            ClientChannelInfo* c = Find(m.child_relid);
            auto g = c == nullptr ? decltype(c->gpadls.end()){} : c->gpadls.find(m.gpadl);
            if (c == nullptr || g == c->gpadls.end() || g->second != ClientGpadlState::kCreating) {
              Error(absl::StrCat("GPADL_CREATED for GPADL ", m.gpadl, ", which is not being created"));
              return;
            }
            NTSTATUS status = static_cast<NTSTATUS>(m.creation_status);
            if (NtSuccess(status)) {
              g->second = ClientGpadlState::kCreated;
            } else {
              EraseGpadl(*c, m.gpadl);
            }
            Emit(GpadlCreateCompleted{m.child_relid, m.gpadl, status});
            FinishRelease(m.child_relid);
          },
          [&](const GpadlTorndown& m) {
            auto owner = gpadl_channel_.find(m.gpadl);
            if (owner != gpadl_channel_.end()) {
              const uint32_t relid = owner->second;
              ClientChannelInfo* c = Find(relid);
              if (c != nullptr && c->gpadls.at(m.gpadl) == ClientGpadlState::kTearingDown) {
                EraseGpadl(*c, m.gpadl);
                Emit(GpadlTeardownCompleted{relid, m.gpadl});
                FinishRelease(relid);
                return;
              }
            }
            Error(absl::StrCat("GPADL_TORNDOWN for GPADL ", m.gpadl, ", which is not being torn down"));
          },
          [&](const UnloadResponse&) {
            if (!unloading_) {
              Error("UNLOAD_RESPONSE without UNLOAD");
              return;
            }
            // Every request still open ends here: the host forgot them.
            unloading_ = false;
            channels_.clear();
            Reindex();
            version_.reset();
            Emit(Unloaded{});
          },
          [&](const auto& m) { Error(absl::StrCat(MessageName(m), " is a guest-to-host message")); },
      },
      *message);
}

std::optional<ClientChannelInfo> VmbusClient::Channel(uint32_t relid) const {
  auto it = channels_.find(relid);
  if (it == channels_.end()) return std::nullopt;
  return it->second;
}

void VmbusClient::ForEachOfferOf(const Guid& type, const std::optional<Guid>& instance,
                                 absl::FunctionRef<void(const ClientChannelInfo&)> visit) const {
  auto it = by_interface_.lower_bound({type, instance.value_or(Guid{}), 0});
  for (; it != by_interface_.end(); ++it) {
    const auto& [t, i, relid] = *it;
    if (t != type || (instance.has_value() && i != *instance)) break;
    visit(channels_.at(relid));
  }
}

void VmbusClient::AddChannel(const OfferChannel& offer) {
  channels_[offer.child_relid].offer = offer;
  by_interface_.insert({offer.interface_type, offer.interface_instance, offer.child_relid});
}

void VmbusClient::ForgetChannel(uint32_t relid) {
  auto it = channels_.find(relid);
  if (it == channels_.end()) return;
  const OfferChannel& o = it->second.offer;
  by_interface_.erase({o.interface_type, o.interface_instance, relid});
  for (const auto& [id, state] : it->second.gpadls) gpadl_channel_.erase(id);
  channels_.erase(it);
}

void VmbusClient::AddGpadl(ClientChannelInfo& c, uint32_t gpadl_id, ClientGpadlState state) {
  c.gpadls[gpadl_id] = state;
  gpadl_channel_[gpadl_id] = c.offer.child_relid;
}

void VmbusClient::EraseGpadl(ClientChannelInfo& c, uint32_t gpadl_id) {
  c.gpadls.erase(gpadl_id);
  gpadl_channel_.erase(gpadl_id);
}

void VmbusClient::Reindex() {
  by_interface_.clear();
  gpadl_channel_.clear();
  for (const auto& [relid, c] : channels_) {
    by_interface_.insert({c.offer.interface_type, c.offer.interface_instance, relid});
    for (const auto& [id, state] : c.gpadls) gpadl_channel_[id] = relid;
  }
}

std::vector<ClientChannelInfo> VmbusClient::Channels() const {
  std::vector<ClientChannelInfo> out;
  for (const auto& [relid, c] : channels_) out.push_back(c);
  return out;
}

absl::Status VmbusClient::CheckInvariants() const {
  for (const auto& [relid, c] : channels_) {
    if (c.release_pending) {
      bool owed = false;
      for (const auto& [id, state] : c.gpadls) owed |= state != ClientGpadlState::kCreated;
      if (!c.rescinded || !owed || c.state != ClientChannelState::kOffered) {
        return absl::InternalError(absl::StrCat("channel ", relid, " held back without cause"));
      }
    }
  }
  size_t gpadls = 0;
  for (const auto& [relid, c] : channels_) {
    if (!by_interface_.contains({c.offer.interface_type, c.offer.interface_instance, relid})) {
      return absl::InternalError(absl::StrCat("channel ", relid, " missing from the offer index"));
    }
    for (const auto& [id, state] : c.gpadls) {
      auto owner = gpadl_channel_.find(id);
      if (owner == gpadl_channel_.end() || owner->second != relid) {
        return absl::InternalError(absl::StrCat("GPADL ", id, " missing from the GPADL index"));
      }
    }
    gpadls += c.gpadls.size();
  }
  if (by_interface_.size() != channels_.size() || gpadl_channel_.size() != gpadls) {
    return absl::InternalError("the offer or GPADL index holds forgotten entries");
  }
  if (unloading_ && connecting_) return absl::InternalError("connecting while unloading");
  return absl::OkStatus();
}

}  // namespace kmcl
