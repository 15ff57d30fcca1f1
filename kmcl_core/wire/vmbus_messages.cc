#include "kmcl_core/wire/vmbus_messages.h"

#include <cstring>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "kmcl_core/base/status_macros.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl {
namespace {

using wire::ChannelMessageType;

template <typename Wire>
ChannelMessage Bytes(const Wire& w) {
  ChannelMessage m(sizeof(Wire));
  std::memcpy(m.data(), &w, sizeof(Wire));
  return m;
}

template <typename Wire>
Wire Header(ChannelMessageType type) {
  Wire w;
  std::memset(&w, 0, sizeof(w));
  w.header.message_type = static_cast<uint32_t>(type);
  return w;
}

ChannelMessage RelId(ChannelMessageType type, uint32_t relid) {
  auto w = Header<wire::RelIdMessage>(type);
  w.child_relid = relid;
  return Bytes(w);
}

// A message with no body: just the 8-byte header.
ChannelMessage Empty(ChannelMessageType type) {
  ChannelMessage m(sizeof(wire::ChannelMessageHeader), 0);
  const uint32_t t = static_cast<uint32_t>(type);
  std::memcpy(m.data(), &t, sizeof(t));
  return m;
}

template <typename Wire>
absl::StatusOr<Wire> Fixed(std::span<const uint8_t> bytes, const char* name) {
  if (bytes.size() < sizeof(Wire)) {
    return absl::InvalidArgumentError(absl::StrCat(name, " of ", bytes.size(),
                                                   " bytes is shorter than its ", sizeof(Wire),
                                                   "-byte layout"));
  }
  Wire w;
  std::memcpy(&w, bytes.data(), sizeof(Wire));
  return w;
}

}  // namespace

ChannelMessage Encode(const VmbusMessage& message) {
  return std::visit(
      [](const auto& m) -> ChannelMessage {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, OfferChannel>) {
          auto w = Header<wire::OfferChannelMessage>(ChannelMessageType::kOfferChannel);
          std::memcpy(w.interface_type, &m.interface_type, 16);
          std::memcpy(w.interface_instance, &m.interface_instance, 16);
          w.channel_flags = m.channel_flags;
          w.mmio_megabytes = m.mmio_megabytes;
          std::memcpy(w.user_defined, m.user_defined.data(), 120);
          w.subchannel_index = m.subchannel_index;
          w.mmio_megabytes_optional = m.mmio_megabytes_optional;
          w.child_relid = m.child_relid;
          w.monitor_id = m.monitor_id;
          w.monitor_allocated = m.monitor_allocated ? 1 : 0;
          w.dedicated_interrupt = m.dedicated_interrupt ? 1 : 0;
          w.connection_id = m.connection_id;
          return Bytes(w);
        } else if constexpr (std::is_same_v<T, RescindChannelOffer>) {
          return RelId(ChannelMessageType::kRescindChannelOffer, m.child_relid);
        } else if constexpr (std::is_same_v<T, RequestOffers>) {
          return Empty(ChannelMessageType::kRequestOffers);
        } else if constexpr (std::is_same_v<T, AllOffersDelivered>) {
          return Empty(ChannelMessageType::kAllOffersDelivered);
        } else if constexpr (std::is_same_v<T, OpenChannel>) {
          auto w = Header<wire::OpenChannelMessage>(ChannelMessageType::kOpenChannel);
          w.child_relid = m.child_relid;
          w.open_id = m.open_id;
          w.ring_buffer_gpadl = m.ring_buffer_gpadl;
          w.target_vp = m.target_vp;
          w.downstream_ring_buffer_page_offset = m.downstream_page_offset;
          std::memcpy(w.user_data, m.user_data.data(), 120);
          return Bytes(w);
        } else if constexpr (std::is_same_v<T, OpenResult>) {
          auto w = Header<wire::OpenResultMessage>(ChannelMessageType::kOpenChannelResult);
          w.child_relid = m.child_relid;
          w.open_id = m.open_id;
          w.status = m.status;
          return Bytes(w);
        } else if constexpr (std::is_same_v<T, CloseChannel>) {
          return RelId(ChannelMessageType::kCloseChannel, m.child_relid);
        } else if constexpr (std::is_same_v<T, GpadlHeader> || std::is_same_v<T, GpadlBody>) {
          return m.bytes;
        } else if constexpr (std::is_same_v<T, GpadlCreated>) {
          auto w = Header<wire::GpadlCreatedMessage>(ChannelMessageType::kGpadlCreated);
          w.child_relid = m.child_relid;
          w.gpadl = m.gpadl;
          w.creation_status = m.creation_status;
          return Bytes(w);
        } else if constexpr (std::is_same_v<T, GpadlTeardown>) {
          auto w = Header<wire::GpadlTeardownMessage>(ChannelMessageType::kGpadlTeardown);
          w.child_relid = m.child_relid;
          w.gpadl = m.gpadl;
          return Bytes(w);
        } else if constexpr (std::is_same_v<T, GpadlTorndown>) {
          auto w = Header<wire::GpadlTorndownMessage>(ChannelMessageType::kGpadlTorndown);
          w.gpadl = m.gpadl;
          return Bytes(w);
        } else if constexpr (std::is_same_v<T, RelIdReleased>) {
          return RelId(ChannelMessageType::kRelIdReleased, m.child_relid);
        } else if constexpr (std::is_same_v<T, InitiateContact>) {
          auto w = Header<wire::InitiateContactMessage>(ChannelMessageType::kInitiateContact);
          w.version_requested = m.version_requested;
          w.target_vcpu = m.target_vcpu;
          w.interrupt_page_or_target_info =
              uint64_t{m.sint} | uint64_t{m.vtl} << 8 | uint64_t{m.feature_flags} << 32;
          w.monitor_page1 = m.monitor_page1;
          w.monitor_page2 = m.monitor_page2;
          return Bytes(w);
        } else if constexpr (std::is_same_v<T, VersionResponse>) {
          auto w = Header<wire::VersionResponseMessage>(ChannelMessageType::kVersionResponse);
          w.version_supported = m.version_supported ? 1 : 0;
          w.connection_state = m.connection_state;
          w.message_connection_id = m.message_connection_id;
          return Bytes(w);
        } else if constexpr (std::is_same_v<T, Unload>) {
          return Empty(ChannelMessageType::kUnload);
        } else {
          static_assert(std::is_same_v<T, UnloadResponse>);
          return Empty(ChannelMessageType::kUnloadResponse);
        }
      },
      message);
}

absl::StatusOr<VmbusMessage> ParseChannelMessage(std::span<const uint8_t> bytes) {
  if (bytes.size() < sizeof(wire::ChannelMessageHeader) ||
      bytes.size() > wire::kMaxChannelMessageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("channel message of ", bytes.size(), " bytes (must be 8 to 240)"));
  }
  uint32_t type;
  std::memcpy(&type, bytes.data(), 4);
  switch (static_cast<ChannelMessageType>(type)) {
    case ChannelMessageType::kOfferChannel: {
      ASSIGN_OR_RETURN(auto w, Fixed<wire::OfferChannelMessage>(bytes, "OFFERCHANNEL"));
      OfferChannel m;
      std::memcpy(&m.interface_type, w.interface_type, 16);
      std::memcpy(&m.interface_instance, w.interface_instance, 16);
      m.channel_flags = w.channel_flags;
      m.mmio_megabytes = w.mmio_megabytes;
      std::memcpy(m.user_defined.data(), w.user_defined, 120);
      m.subchannel_index = w.subchannel_index;
      m.mmio_megabytes_optional = w.mmio_megabytes_optional;
      m.child_relid = w.child_relid;
      m.monitor_id = w.monitor_id;
      m.monitor_allocated = w.monitor_allocated & 1;
      m.dedicated_interrupt = w.dedicated_interrupt & 1;
      m.connection_id = w.connection_id;
      return m;
    }
    case ChannelMessageType::kRescindChannelOffer: {
      ASSIGN_OR_RETURN(auto w, Fixed<wire::RelIdMessage>(bytes, "RESCIND_CHANNELOFFER"));
      return RescindChannelOffer{w.child_relid};
    }
    case ChannelMessageType::kRequestOffers:
      return RequestOffers{};
    case ChannelMessageType::kAllOffersDelivered:
      return AllOffersDelivered{};
    case ChannelMessageType::kOpenChannel: {
      ASSIGN_OR_RETURN(auto w, Fixed<wire::OpenChannelMessage>(bytes, "OPENCHANNEL"));
      OpenChannel m;
      m.child_relid = w.child_relid;
      m.open_id = w.open_id;
      m.ring_buffer_gpadl = w.ring_buffer_gpadl;
      m.target_vp = w.target_vp;
      m.downstream_page_offset = w.downstream_ring_buffer_page_offset;
      std::memcpy(m.user_data.data(), w.user_data, 120);
      return m;
    }
    case ChannelMessageType::kOpenChannelResult: {
      ASSIGN_OR_RETURN(auto w, Fixed<wire::OpenResultMessage>(bytes, "OPENCHANNEL_RESULT"));
      return OpenResult{w.child_relid, w.open_id, w.status};
    }
    case ChannelMessageType::kCloseChannel: {
      ASSIGN_OR_RETURN(auto w, Fixed<wire::RelIdMessage>(bytes, "CLOSECHANNEL"));
      return CloseChannel{w.child_relid};
    }
    case ChannelMessageType::kGpadlHeader: {
      ASSIGN_OR_RETURN(auto w, Fixed<wire::GpadlHeaderMessage>(bytes, "GPADL_HEADER"));
      return GpadlHeader{std::vector<uint8_t>(bytes.begin(), bytes.end()), w.child_relid,
                         w.gpadl};
    }
    case ChannelMessageType::kGpadlBody: {
      ASSIGN_OR_RETURN(auto w, Fixed<wire::GpadlBodyMessage>(bytes, "GPADL_BODY"));
      return GpadlBody{std::vector<uint8_t>(bytes.begin(), bytes.end()), w.gpadl};
    }
    case ChannelMessageType::kGpadlCreated: {
      ASSIGN_OR_RETURN(auto w, Fixed<wire::GpadlCreatedMessage>(bytes, "GPADL_CREATED"));
      return GpadlCreated{w.child_relid, w.gpadl, w.creation_status};
    }
    case ChannelMessageType::kGpadlTeardown: {
      ASSIGN_OR_RETURN(auto w, Fixed<wire::GpadlTeardownMessage>(bytes, "GPADL_TEARDOWN"));
      return GpadlTeardown{w.child_relid, w.gpadl};
    }
    case ChannelMessageType::kGpadlTorndown: {
      ASSIGN_OR_RETURN(auto w, Fixed<wire::GpadlTorndownMessage>(bytes, "GPADL_TORNDOWN"));
      return GpadlTorndown{w.gpadl};
    }
    case ChannelMessageType::kRelIdReleased: {
      ASSIGN_OR_RETURN(auto w, Fixed<wire::RelIdMessage>(bytes, "RELID_RELEASED"));
      return RelIdReleased{w.child_relid};
    }
    case ChannelMessageType::kInitiateContact: {
      ASSIGN_OR_RETURN(auto w, Fixed<wire::InitiateContactMessage>(bytes, "INITIATE_CONTACT"));
      InitiateContact m;
      m.version_requested = w.version_requested;
      m.target_vcpu = w.target_vcpu;
      m.sint = static_cast<uint8_t>(w.interrupt_page_or_target_info);
      m.vtl = static_cast<uint8_t>(w.interrupt_page_or_target_info >> 8);
      m.feature_flags = static_cast<uint32_t>(w.interrupt_page_or_target_info >> 32);
      m.monitor_page1 = w.monitor_page1;
      m.monitor_page2 = w.monitor_page2;
      return m;
    }
    case ChannelMessageType::kVersionResponse: {
      ASSIGN_OR_RETURN(auto w, Fixed<wire::VersionResponseMessage>(bytes, "VERSION_RESPONSE"));
      return VersionResponse{w.version_supported != 0, w.connection_state,
                             w.message_connection_id};
    }
    case ChannelMessageType::kUnload:
      return Unload{};
    case ChannelMessageType::kUnloadResponse:
      return UnloadResponse{};
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown channel message type ", type));
  }
}

const char* MessageName(const VmbusMessage& message) {
  static constexpr const char* kNames[] = {
      "OFFERCHANNEL",  "RESCIND_CHANNELOFFER", "REQUESTOFFERS",  "ALLOFFERS_DELIVERED",
      "OPENCHANNEL",   "OPENCHANNEL_RESULT",   "CLOSECHANNEL",   "GPADL_HEADER",
      "GPADL_BODY",    "GPADL_CREATED",        "GPADL_TEARDOWN", "GPADL_TORNDOWN",
      "RELID_RELEASED", "INITIATE_CONTACT",    "VERSION_RESPONSE", "UNLOAD",
      "UNLOAD_RESPONSE"};
  static_assert(std::size(kNames) == std::variant_size_v<VmbusMessage>);
  return kNames[message.index()];
}

}  // namespace kmcl
