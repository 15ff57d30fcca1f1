// Channel save and restore (KMCL's VmbChannelSave* / RestoreFromBuffer for
// the endpoint's part; docs/saved-state.md).
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kmcl_core/base/status_macros.h"
#include "kmcl_core/runtime/channel.h"
#include "kmcl_core/bus/partition.h"
#include "kmcl_core/ring/ring_buffer.h"
#include "kmcl_core/saved/saved_blob.h"
#include "kmcl_core/control/saved_convert.h"

namespace kmcl {

namespace pb = saved::v1;

bool Channel::restored() const {
  MutexLock lock(&mu_);
  return restored_;
}

void Channel::Thaw() { send_.Thaw(); }

absl::StatusOr<std::string> Channel::Save() {
  pb::SavedChannel out;
  {
    MutexLock lock(&mu_);
    if (fsm_.running() || fsm_.connection() == ConnectionState::kOpening) {
      return absl::FailedPreconditionError(absl::StrCat(
          "channel is ", fsm_.running() ? "running" : "opening", "; pause it before saving"));
    }
  }
  // From here the ring saved with the partition matches the saved queue.
  send_.Freeze();
  SendPath::Saved sends = send_.Save();
  const std::vector<std::pair<Packet*, bool>>& packets = sends.packets;  // packet, sent
  for (const auto& [tid, payload] : sends.completions) {
    pb::QueuedCompletion* c = out.add_completions();
    c->set_transaction_id(tid);
    c->set_payload(std::string(payload.begin(), payload.end()));
  }
  out.set_next_transaction_id(sends.next_transaction_id);
  {
    MutexLock lock(&mu_);
    out.set_is_server(IsHost(role_));
    out.set_relid(relid_);
    out.set_offer_sequence(offer_sequence_);
    out.set_connection(static_cast<uint32_t>(fsm_.connection()));
    out.set_run(static_cast<uint32_t>(fsm_.run()));
    saved_convert::OfferTo(config_.offer, out.mutable_offer());
    out.set_server_flags(config_.server_flags);
    out.set_channel_flags(config_.flags);
    out.set_max_packet_size(config_.max_packet_size);
    out.set_max_external_bytes(config_.max_external_bytes);
    out.set_max_external_chain(config_.max_external_chain);
    out.set_transaction_quota(delivery_.quota());
    out.set_interrupt_latency(interrupt_latency_);
    out.set_client_context_size(config_.client_context_size);
    out.set_incoming_pages(config_.incoming_pages);
    out.set_outgoing_pages(config_.outgoing_pages);
    out.set_target_type(saved_convert::GuidBytes(config_.target_type));
    if (config_.target_instance.has_value()) {
      out.set_target_instance(saved_convert::GuidBytes(*config_.target_instance));
    }
    out.set_client_vtl(config_.client_vtl);
    out.set_friendly_name(config_.friendly_name);
    out.set_client_open_sent(client_open_sent_);
    if (open_.has_value()) saved_convert::OpenTo(*open_, out.mutable_open());
    if (!IsHost(role_)) {
      saved_convert::OfferTo(FromOfferMessage(matched_offer_, config_.client_vtl), out.mutable_offer());
      out.set_ring_gpadl(ring_gpadl_);
      out.mutable_ring_pfns()->Add(ring_pfns_.begin(), ring_pfns_.end());
    }
    for (const DeliveryPath::SavedDelivery& d : delivery_.Save()) {
      pb::Delivery* p = out.add_deliveries();
      p->set_transaction_id(d.transaction_id);
      p->set_payload(std::string(d.payload.begin(), d.payload.end()));
      p->set_completion_requested(d.completion_requested);
      saved_convert::RangesTo(d.external, p->mutable_external());
    }
  }
  // The driver's per-packet state, outside the locks (its callback may call
  // packet getters).
  for (auto& [packet, sent] : packets) {
    pb::Packet* p = out.add_packets();
    p->set_transaction_id(packet->transaction_id_);
    p->set_payload(std::string(reinterpret_cast<const char*>(packet->storage_), packet->length_));
    saved_convert::RangesTo(packet->external_, p->mutable_external());
    p->set_flags(packet->flags_);
    p->set_sent(sent);
    if (callbacks_.save_packet) {
      absl::StatusOr<std::vector<uint8_t>> blob = callbacks_.save_packet(*this, *packet);
      if (!blob.ok()) {
        Thaw();
        return blob.status();
      }
      p->set_client_blob(std::string(blob->begin(), blob->end()));
    }
  }
  return SealBlob(pb::SavedBlob::KIND_CHANNEL, out.SerializeAsString());
}

absl::Status Channel::Restore(const std::string& blob) {
  absl::StatusOr<std::string> body = OpenBlob(blob, pb::SavedBlob::KIND_CHANNEL);
  if (!body.ok()) return body.status();
  pb::SavedChannel in;
  if (!in.ParseFromString(*body)) return absl::InvalidArgumentError("saved channel is corrupt");
  if (RoleFromIsServer(in.is_server()) != role_) {
    return absl::InvalidArgumentError(
        absl::StrCat("saved channel is a ", EndpointRoleName(RoleFromIsServer(in.is_server())),
                     " endpoint; this channel is not"));
  }
  if (in.connection() > static_cast<uint32_t>(ConnectionState::kClosed) ||
      in.connection() == static_cast<uint32_t>(ConnectionState::kOpening) ||
      in.run() > static_cast<uint32_t>(RunState::kActive) || in.client_vtl() > 2 ||
      (in.connection() != 0 && in.relid() == 0)) {
    // (The configuration's own ranges are ChannelConfig::Validate's, below;
    // the VTL is checked here before it is narrowed to a byte.)
    return absl::InvalidArgumentError("saved channel has a field out of range");
  }
  absl::StatusOr<ServerOffer> offer = saved_convert::OfferFrom(in.offer());
  if (!offer.ok()) return offer.status();
  std::optional<OpenChannel> open;
  if (in.has_open()) {
    absl::StatusOr<OpenChannel> o = saved_convert::OpenFrom(in.relid(), in.open());
    if (!o.ok()) return o.status();
    open = *o;
  }
  absl::StatusOr<Guid> target = saved_convert::GuidFrom(in.target_type());
  if (!target.ok()) return target.status();
  std::optional<Guid> target_instance;
  if (!in.target_instance().empty()) {
    absl::StatusOr<Guid> t = saved_convert::GuidFrom(in.target_instance());
    if (!t.ok()) return t.status();
    target_instance = *t;
  }
  for (const pb::Packet& p : in.packets()) {
    if (p.payload().size() > in.max_packet_size() + sizeof(wire::PipeHeader) ||
        (p.flags() & ~kFormatFlags) != 0) {
      return absl::InvalidArgumentError("saved packet is out of range");
    }
  }
  {
    MutexLock lock(&mu_);
    if (!fsm_.configurable() || threads_running_) {
      return absl::FailedPreconditionError("restore into a disabled channel, before Enable");
    }
    ChannelConfig config = config_;
    if (IsHost(role_)) config.offer = *offer;
    config.server_flags = in.server_flags();
    config.flags = in.channel_flags();
    config.max_packet_size = in.max_packet_size();
    config.max_external_bytes = in.max_external_bytes();
    config.max_external_chain = in.max_external_chain();
    config.client_context_size = in.client_context_size();
    config.incoming_pages = in.incoming_pages() == 0 ? kDefaultRingPages : in.incoming_pages();
    config.outgoing_pages = in.outgoing_pages() == 0 ? kDefaultRingPages : in.outgoing_pages();
    config.target_type = *target;
    config.target_instance = target_instance;
    config.client_vtl = static_cast<uint8_t>(in.client_vtl());
    config.friendly_name = in.friendly_name();
    // The same validator as the setters': a blob cannot configure what they
    // would refuse.
    RETURN_IF_ERROR(config.Validate());
    config_ = std::move(config);
    restored_ = true;
    restored_connection_ = static_cast<ConnectionState>(in.connection());
    restored_run_ = static_cast<RunState>(in.run());
    relid_ = in.relid();
    offer_sequence_ = in.offer_sequence();
    if (!IsHost(role_)) {
      matched_offer_ = ToOfferMessage(*offer);
      matched_offer_.child_relid = in.relid();
    }
    delivery_.SetQuota(in.transaction_quota());
    interrupt_latency_ = static_cast<uint16_t>(in.interrupt_latency());
    client_open_sent_ = in.client_open_sent();
    open_ = open;
    ring_gpadl_ = in.ring_gpadl();
    ring_pfns_.assign(in.ring_pfns().begin(), in.ring_pfns().end());
    std::vector<DeliveryPath::SavedDelivery> deliveries;
    for (const pb::Delivery& p : in.deliveries()) {
      deliveries.push_back({p.transaction_id(),
                            std::vector<uint8_t>(p.payload().begin(), p.payload().end()),
                            saved_convert::RangesFrom(p.external()), p.completion_requested()});
    }
    delivery_.Restore(deliveries, config_.client_context_size);
  }
  send_.RestoreNextTransactionId(in.next_transaction_id());
  for (const pb::QueuedCompletion& c : in.completions()) {
    send_.QueueCompletion(c.transaction_id(),
                          std::span<const uint8_t>(
                              reinterpret_cast<const uint8_t*>(c.payload().data()),
                              c.payload().size()));
  }
  // The driver re-creates its packets; without a hook kmcl_core keeps them
  // with its default routine (they complete, then are freed).
  for (const pb::Packet& p : in.packets()) {
    std::string lib = p.SerializeAsString();
    std::span<const uint8_t> lib_bytes(reinterpret_cast<const uint8_t*>(lib.data()), lib.size());
    if (callbacks_.restore_packet) {
      std::span<const uint8_t> saved(reinterpret_cast<const uint8_t*>(p.client_blob().data()),
                                     p.client_blob().size());
      if (absl::Status s = callbacks_.restore_packet(*this, lib_bytes, saved); !s.ok()) return s;
    } else {
      if (absl::Status s = RestorePacket(*AllocatePacket(), lib_bytes); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

absl::Status Channel::RestorePacket(Packet& packet, std::span<const uint8_t> lib) {
  pb::Packet p;
  if (!p.ParseFromArray(lib.data(), static_cast<int>(lib.size()))) {
    return absl::InvalidArgumentError("saved packet state is corrupt");
  }
  if (packet.magic_ != Packet::kMagic || packet.channel_ != this || packet.in_flight_) {
    return absl::InvalidArgumentError("not an idle packet of this channel");
  }
  if (p.payload().size() > packet.capacity_ || (p.flags() & ~kFormatFlags) != 0) {
    return absl::InvalidArgumentError("saved packet does not fit this channel's packets");
  }
  if (!packet.routine_) {
    return absl::FailedPreconditionError("set the packet's completion routine before restoring it");
  }
  std::memcpy(packet.storage_, p.payload().data(), p.payload().size());
  packet.length_ = static_cast<uint32_t>(p.payload().size());
  packet.flags_ = p.flags();
  packet.external_ = saved_convert::RangesFrom(p.external());
  packet.transaction_id_ = p.transaction_id();
  return send_.Restore(packet, p.sent());
}

absl::StatusOr<bool> Channel::EnableRestored() {
  ConnectionState connection;
  uint32_t old_relid;
  bool force_new;
  {
    MutexLock lock(&mu_);
    if (!restored_) return false;
    restored_ = false;
    connection = restored_connection_;
    old_relid = relid_;
    force_new = IsHost(role_) && (config_.server_flags & kServerFlagForceNewChannel) != 0;
    if (connection == ConnectionState::kDisabled ||
        (!IsHost(role_) && connection == ConnectionState::kEnabled)) {
      relid_ = 0;  // saved before it was offered/opened: enable as new
      return false;
    }
  }
  if (force_new) {
    // FORCE_NEW_CHANNEL: abandon the old instance and offer afresh; its
    // transactions end cancelled.
    if (old_relid != 0) partition_->Revoke(old_relid).IgnoreError();
    send_.CancelAll(kStatusCancelled);
    MutexLock lock(&mu_);
    relid_ = 0;
    open_.reset();
    delivery_.DropRestored();
    return false;
  }
  if (absl::Status s = AttachRestored(); !s.ok()) {
    MutexLock lock(&mu_);
    fsm_.Disable();
    return s;
  }
  {
    MutexLock lock(&mu_);
    restore_actions_ = fsm_.Restore(restored_connection_, restored_run_);
  }
  StartThreads();
  MutexLock lock(&mu_);
  Post({CommandKind::kRestoredOpen});
  return true;
}

absl::Status Channel::AttachRestored() {
  uint32_t relid;
  uint64_t sequence;
  uint8_t vtl;
  ConnectionState connection;
  std::optional<OpenChannel> open;
  {
    MutexLock lock(&mu_);
    relid = relid_;
    sequence = offer_sequence_;
    vtl = config_.client_vtl;
    connection = restored_connection_;
    open = open_;
  }
  if (connection == ConnectionState::kDisabled) return absl::OkStatus();
  absl::Status attached = IsHost(role_) ? partition_->AttachHost(relid, sequence, this)
                                     : partition_->AttachGuest(vtl, relid, this);
  if (!attached.ok()) return attached;
  if (connection == ConnectionState::kOpened) {
    if (IsHost(role_)) {
      if (!open.has_value()) return absl::InvalidArgumentError("restored open channel has no ring");
      absl::StatusOr<GpadlLease> lease =
          partition_->MapGpadl(relid, open->ring_buffer_gpadl, false,
                               [d = open->downstream_page_offset](uint64_t pages) {
                                 return DoubleMappedRingPages(pages, d);
                               });
      if (!lease.ok()) return lease.status();
      ring_lease_ = *lease;
      if (absl::Status s = SetUpRings(lease->pages, open->downstream_page_offset); !s.ok()) return s;
    } else {
      uint32_t downstream;
      {
        MutexLock lock(&mu_);
        downstream = 1 + config_.outgoing_pages;
      }
      absl::StatusOr<std::vector<uint32_t>> order =
          DoubleMappedRingPages(ring_pfns_.size(), downstream);
      if (!order.ok()) return order.status();
      absl::StatusOr<GuestView> view = partition_->memory().MapPages(ring_pfns_, *order, true);
      if (!view.ok()) return view.status();
      ring_view_ = *std::move(view);
      if (absl::Status s = SetUpRings(ring_view_->bytes(), downstream); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace kmcl
