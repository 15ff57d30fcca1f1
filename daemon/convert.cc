#include "daemon/convert.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcld {

namespace {
constexpr uint32_t kPage = kmcl::wire::kPageSize;
// Linux's vmbus_channel_offer pipe layout: a u32 pipe mode, then 116 bytes.
constexpr uint32_t kPipeTypeByte = 0x00;
constexpr uint32_t kPipeTypeMessage = 0x04;
constexpr size_t kUserDefinedBytes = 120;
constexpr size_t kPipeUserDefinedBytes = 116;
}  // namespace

const char* EndpointRoleName(kmcl::v1::EndpointRole role) {
  switch (role) {
    case kmcl::v1::ENDPOINT_ROLE_HOST:
      return "host";
    case kmcl::v1::ENDPOINT_ROLE_GUEST:
      return "guest";
    default:
      return "unspecified";
  }
}

kmcl::v1::EventKind ToProto(const kmcl::devices::ic::IcEvent& event) {
  using kmcl::devices::ic::IcEventKind;
  switch (event.kind) {
    case IcEventKind::kNegotiated:
      return kmcl::v1::EVENT_KIND_DEVICE_NEGOTIATED;
    case IcEventKind::kNegotiationFailed:
      return kmcl::v1::EVENT_KIND_DEVICE_NEGOTIATION_FAILED;
    case IcEventKind::kGuestUnresponsive:
      return kmcl::v1::EVENT_KIND_DEVICE_GUEST_UNRESPONSIVE;
    case IcEventKind::kGuestResponsive:
      return kmcl::v1::EVENT_KIND_DEVICE_GUEST_RESPONSIVE;
    case IcEventKind::kShutdownAnswered:
      return event.guest_status == kmcl::devices::ic::kHvSOk ? kmcl::v1::EVENT_KIND_DEVICE_SHUTDOWN_ACKNOWLEDGED
                                                             : kmcl::v1::EVENT_KIND_DEVICE_SHUTDOWN_REFUSED;
  }
  return kmcl::v1::EVENT_KIND_UNSPECIFIED;
}

absl::StatusOr<kmcl::Guid> FromProto(const kmcl::v1::Guid& guid, absl::string_view field,
                                     bool allow_empty) {
  if (guid.value().empty()) {
    if (allow_empty) return kmcl::Guid();
    return absl::InvalidArgumentError(absl::StrCat(field, " is required"));
  }
  auto parsed = kmcl::Guid::Parse(guid.value());
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": '", guid.value().substr(0, 64), "' is not a GUID"));
  }
  return *parsed;
}

kmcl::v1::Guid ToProto(const kmcl::Guid& guid) {
  kmcl::v1::Guid out;
  out.set_value(guid.ToString());
  return out;
}

absl::StatusOr<std::vector<kmcl::GpaRange>> FromProto(const kmcl::v1::GpaRanges& ranges) {
  std::vector<kmcl::GpaRange> out;
  for (const kmcl::v1::GpaRange& r : ranges.ranges()) {
    kmcl::GpaRange g;
    g.byte_count = r.byte_count();
    g.byte_offset = r.byte_offset();
    g.pfns.assign(r.pfns().begin(), r.pfns().end());
    out.push_back(std::move(g));
  }
  if (absl::Status s = kmcl::ValidateGpaRanges(out, UINT64_MAX); !s.ok()) return s;
  return out;
}

void ToProto(const kmcl::GpaRange& range, kmcl::v1::GpaRange* out) {
  out->set_byte_count(range.byte_count);
  out->set_byte_offset(range.byte_offset);
  for (uint64_t pfn : range.pfns) out->add_pfns(pfn);
}

absl::StatusOr<std::vector<kmcl::GpaRange>> SliceRanges(const std::vector<kmcl::GpaRange>& ranges,
                                                       uint64_t offset, uint64_t length) {
  const uint64_t total = kmcl::TotalBytes(ranges);
  if (offset > total || (length != 0 && length > total - offset)) {
    return absl::OutOfRangeError(absl::StrCat("bytes [", offset, ", ", offset + length,
                                              ") are outside the ", total, " bytes described"));
  }
  if (length == 0) length = total - offset;
  if (length == 0) return absl::OutOfRangeError("an empty slice");
  std::vector<kmcl::GpaRange> out;
  uint64_t skip = offset;
  for (const kmcl::GpaRange& r : ranges) {
    if (length == 0) break;
    if (skip >= r.byte_count) {
      skip -= r.byte_count;
      continue;
    }
    const uint64_t start = r.byte_offset + skip;  // bytes into the range's first page
    const uint64_t take = std::min<uint64_t>(r.byte_count - skip, length);
    kmcl::GpaRange piece;
    piece.byte_offset = static_cast<uint32_t>(start % kPage);
    piece.byte_count = static_cast<uint32_t>(take);
    const uint64_t first = start / kPage;
    const uint64_t pages = (start % kPage + take + kPage - 1) / kPage;
    piece.pfns.assign(r.pfns.begin() + first, r.pfns.begin() + first + pages);
    out.push_back(std::move(piece));
    length -= take;
    skip = 0;
  }
  return out;
}

absl::Status ApplyServerSettings(const kmcl::v1::ServerChannelSettings& s, kmcl::Channel& ch) {
  auto type = FromProto(s.interface_type(), "settings.interface_type", false);
  if (!type.ok()) return type.status();
  auto instance = FromProto(s.interface_instance(), "settings.interface_instance", true);
  if (!instance.ok()) return instance.status();
  if (instance->IsNull()) *instance = kmcl::Guid::Random();
  if (s.target_vtl() > 2) {
    return absl::InvalidArgumentError(absl::StrCat("settings.target_vtl ", s.target_vtl(),
                                                   " is above 2"));
  }
  if (s.mmio_megabytes() > 0xFFFF || s.mmio_megabytes_optional() > 0xFFFF) {
    return absl::InvalidArgumentError("settings.mmio_megabytes must fit 16 bits");
  }
  if ((s.server_flags() & ~kmcl::kServerFlags) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("settings.server_flags has unknown bits 0x",
                                                   absl::Hex(s.server_flags() & ~kmcl::kServerFlags)));
  }
  if ((s.channel_flags() & ~kmcl::kChannelInitFlagIsPipe) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("settings.channel_flags has unknown bits 0x",
                     absl::Hex(s.channel_flags() & ~kmcl::kChannelInitFlagIsPipe),
                     " (known: 0x", absl::Hex(kmcl::kChannelInitFlagIsPipe), ", IS_PIPE)"));
  }
  if (!kmcl::v1::PipeMode_IsValid(s.pipe_mode())) {
    return absl::InvalidArgumentError(absl::StrCat("settings.pipe_mode ", s.pipe_mode(),
                                                   " is not a PipeMode"));
  }
  uint32_t server_flags = s.server_flags();
  std::string user = s.user_defined();
  if (s.pipe_mode() != kmcl::v1::PIPE_MODE_UNSPECIFIED) {
    if (user.size() > kPipeUserDefinedBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "settings.user_defined is ", user.size(), " bytes; a pipe offer carries at most ",
          kPipeUserDefinedBytes, " after its 4-byte pipe type"));
    }
    const uint32_t type_value =
        s.pipe_mode() == kmcl::v1::PIPE_MODE_MESSAGE ? kPipeTypeMessage : kPipeTypeByte;
    std::string prefix(4, '\0');
    for (int i = 0; i < 4; ++i) prefix[i] = static_cast<char>((type_value >> (8 * i)) & 0xFF);
    user = prefix + user;
    server_flags |= kmcl::kServerFlagOfferAsPipe;
  } else if (user.size() > kUserDefinedBytes) {
    return absl::InvalidArgumentError(absl::StrCat("settings.user_defined is ", user.size(),
                                                   " bytes; at most ", kUserDefinedBytes));
  }
  if (s.friendly_name().size() > 256) {
    return absl::InvalidArgumentError("settings.friendly_name is longer than 256 bytes");
  }
  auto check = [](absl::Status st, absl::string_view field) {
    if (st.ok()) return st;
    return absl::Status(st.code(), absl::StrCat("settings.", field, ": ", st.message()));
  };
  if (auto st = check(ch.SetTargetInterfaceId(*type, *instance), "interface_type"); !st.ok()) return st;
  if (auto st = check(ch.SetTargetVtl(static_cast<uint8_t>(s.target_vtl())), "target_vtl"); !st.ok()) return st;
  if (s.mmio_megabytes() != 0 || s.mmio_megabytes_optional() != 0) {
    if (auto st = check(ch.SetMmioMegabytes(static_cast<uint16_t>(s.mmio_megabytes()),
                                            static_cast<uint16_t>(s.mmio_megabytes_optional())),
                        "mmio_megabytes");
        !st.ok()) {
      return st;
    }
  }
  if (auto st = check(ch.SetServerFlags(server_flags), "server_flags"); !st.ok()) return st;
  if (auto st = check(ch.SetFlags(s.channel_flags()), "channel_flags"); !st.ok()) return st;
  if (s.max_packet_size() != 0) {
    if (auto st = check(ch.SetMaximumPacketSize(s.max_packet_size()), "max_packet_size"); !st.ok()) {
      return st;
    }
  }
  if (s.max_external_data_bytes() != 0 || s.max_external_chain_length() != 0) {
    if (auto st = check(ch.SetMaximumExternalData(s.max_external_data_bytes(),
                                                  s.max_external_chain_length()),
                        "max_external_data_bytes");
        !st.ok()) {
      return st;
    }
  }
  if (!s.friendly_name().empty()) {
    if (auto st = check(ch.SetFriendlyName(s.friendly_name()), "friendly_name"); !st.ok()) return st;
  }
  if (!user.empty()) {
    auto bytes = std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(user.data()), user.size());
    if (auto st = check(ch.SetUserDefined(bytes), "user_defined"); !st.ok()) return st;
  }
  return absl::OkStatus();
}

namespace {
void FillOffer(const kmcl::ServerOffer& o, kmcl::v1::Offer* out) {
  *out->mutable_interface_type() = ToProto(o.interface_type);
  *out->mutable_interface_instance() = ToProto(o.interface_instance);
  out->set_target_vtl(o.target_vtl);
  out->set_wire_channel_flags(o.channel_flags);
  out->set_mmio_megabytes(o.mmio_megabytes);
  out->set_mmio_megabytes_optional(o.mmio_megabytes_optional);
  out->set_user_defined(o.user_defined.data(), o.user_defined.size());
  out->set_subchannel_index(o.subchannel_index);
}
}  // namespace

kmcl::v1::Offer ToProto(const kmcl::ServerChannelInfo& info, const std::string& partition_id) {
  kmcl::v1::Offer out;
  out.mutable_channel()->set_partition_id(partition_id);
  out.mutable_channel()->set_channel_id(info.relid);
  out.mutable_channel()->set_offer_sequence(info.offer_sequence);
  FillOffer(info.offer, &out);
  out.set_opened(info.state == kmcl::ServerChannelState::kOpen ||
                 info.state == kmcl::ServerChannelState::kOpening);
  return out;
}

kmcl::v1::Offer ToProto(const kmcl::ClientChannelInfo& info, const std::string& partition_id,
                        uint8_t vtl) {
  kmcl::v1::Offer out;
  out.mutable_channel()->set_partition_id(partition_id);
  out.mutable_channel()->set_channel_id(info.offer.child_relid);
  FillOffer(kmcl::FromOfferMessage(info.offer, vtl), &out);
  out.set_opened(info.state != kmcl::ClientChannelState::kOffered);
  return out;
}

kmcl::v1::EndpointState ToProto(const kmcl::ChannelSnapshot& snap, kmcl::v1::EndpointRole role,
                                bool rescinded, bool attached) {
  kmcl::v1::EndpointState out;
  out.set_role(role);
  out.set_present(true);
  out.set_attached(attached);
  switch (snap.connection) {
    case kmcl::ConnectionState::kDisabled:
      out.set_connection(kmcl::v1::CONNECTION_STATE_DISABLED);
      break;
    case kmcl::ConnectionState::kEnabled:
    case kmcl::ConnectionState::kOpening:
      out.set_connection(kmcl::v1::CONNECTION_STATE_ENABLED);
      break;
    case kmcl::ConnectionState::kOpened:
      out.set_connection(kmcl::v1::CONNECTION_STATE_OPENED);
      break;
    case kmcl::ConnectionState::kClosed:
      out.set_connection(kmcl::v1::CONNECTION_STATE_CLOSED);
      break;
  }
  if (rescinded && snap.connection != kmcl::ConnectionState::kOpened) {
    out.set_connection(kmcl::v1::CONNECTION_STATE_RESCINDED);
  }
  out.set_run(snap.run == kmcl::RunState::kActive ? kmcl::v1::RUN_STATE_ACTIVE
                                                   : kmcl::v1::RUN_STATE_PAUSED);
  out.set_running(snap.connection == kmcl::ConnectionState::kOpened &&
                  snap.run == kmcl::RunState::kActive);
  return out;
}

void ToProto(const kmcl::RingSnapshot& r, kmcl::v1::RingDiagnostics* out) {
  out->set_write_index(r.write_index);
  out->set_read_index(r.read_index);
  out->set_interrupt_mask(r.interrupt_mask);
  out->set_pending_send_size(r.pending_send_size);
  out->set_feature_bits(r.feature_bits);
  out->set_data_bytes(r.data_size);
  out->set_used_bytes(r.used_bytes);
  out->set_free_bytes(r.free_bytes);
}

void ToProto(const kmcl::ChannelStats& s, kmcl::v1::EndpointCounters* out) {
  out->set_packets_sent(s.packets_sent);
  out->set_bytes_sent(s.bytes_sent);
  out->set_packets_received(s.packets_received);
  out->set_bytes_received(s.bytes_received);
  out->set_completions_sent(s.completions_sent);
  out->set_completions_received(s.completions_received);
  out->set_signals_sent(s.signals_sent);
  out->set_sends_queued(s.sends_queued);
  out->set_ring_full_events(s.ring_full_events);
  out->set_quota_stalls(s.quota_stalls);
  out->set_corrupt_packets(s.corrupt_packets);
}

void ToProto(const kmcl::LatencyHistogram& h, kmcl::v1::LatencyHistogram* out) {
  for (uint64_t bound : kmcl::kCompletionLatencyBoundsNs) out->add_upper_bounds_seconds(bound / 1e9);
  for (uint64_t n : h.buckets) out->add_bucket_counts(n);
  out->set_count(h.count);
  out->set_sum_seconds(h.sum_ns / 1e9);
}

}  // namespace kmcld
