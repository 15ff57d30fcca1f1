#include "devices/ic/ic_wire.h"

#include <algorithm>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kmcl::devices::ic {

namespace {
Guid MustParse(const char* text) { return *Guid::Parse(text); }
}  // namespace

const Guid kHeartbeatInterfaceType = MustParse("57164f39-9115-4e78-ab55-382f3bd5422d");
const Guid kShutdownInterfaceType = MustParse("0e0b6031-5213-4934-818b-38d90ced39db");
const Guid kTimeSyncInterfaceType = MustParse("9527e630-d0ae-497b-adce-e80ab0175caf");
const Guid kKvpInterfaceType = MustParse("a9a0f4e7-5a45-4d96-b827-8a841e8c03e6");

void PutU16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
void PutU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void PutU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint16_t GetU16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t GetU32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::string IcVersion::ToString() const { return absl::StrCat(major, ".", minor); }

absl::StatusOr<IcMessage> ParseIcMessage(std::span<const uint8_t> packet) {
  if (packet.size() < kIcMessageHeaderSize) {
    return absl::InvalidArgumentError(absl::StrCat("IC packet of ", packet.size(),
                                                   " bytes is shorter than its 28-byte header"));
  }
  const uint8_t* p = packet.data();
  IcMessage m;
  m.header.pipe_flags = GetU32(p + 0);
  m.header.pipe_size = GetU32(p + 4);
  m.header.framework = {GetU16(p + 8), GetU16(p + 10)};
  m.header.type = GetU16(p + 12);
  m.header.message = {GetU16(p + 14), GetU16(p + 16)};
  m.header.size = GetU16(p + 18);
  m.header.status = GetU32(p + 20);
  m.header.transaction_id = p[24];
  m.header.flags = p[25];
  m.body = packet.subspan(kIcMessageHeaderSize);
  return m;
}

void WriteIcHeader(std::span<uint8_t> packet, const IcHeader& h) {
  uint8_t* p = packet.data();
  PutU32(p + 0, h.pipe_flags);
  PutU32(p + 4, h.pipe_size);
  PutU16(p + 8, h.framework.major);
  PutU16(p + 10, h.framework.minor);
  PutU16(p + 12, h.type);
  PutU16(p + 14, h.message.major);
  PutU16(p + 16, h.message.minor);
  PutU16(p + 18, h.size);
  PutU32(p + 20, h.status);
  p[24] = h.transaction_id;
  p[25] = h.flags;
  p[26] = 0;
  p[27] = 0;
}

Bytes EncodeIcMessage(IcHeader header, std::span<const uint8_t> body) {
  Bytes out(kIcMessageHeaderSize + body.size(), 0);
  header.size = static_cast<uint16_t>(body.size());
  header.pipe_size = static_cast<uint32_t>(kIcHeaderSize + body.size());
  WriteIcHeader(out, header);
  if (!body.empty()) std::memcpy(out.data() + kIcMessageHeaderSize, body.data(), body.size());
  return out;
}

Bytes EncodeNegotiateBody(const NegotiateBody& body) {
  Bytes out(kNegotiateFixedSize + kIcVersionSize * (body.framework.size() + body.message.size()), 0);
  PutU16(out.data(), static_cast<uint16_t>(body.framework.size()));
  PutU16(out.data() + 2, static_cast<uint16_t>(body.message.size()));
  size_t at = kNegotiateFixedSize;
  for (const auto* list : {&body.framework, &body.message}) {
    for (const IcVersion& v : *list) {
      PutU16(out.data() + at, v.major);
      PutU16(out.data() + at + 2, v.minor);
      at += kIcVersionSize;
    }
  }
  return out;
}

absl::StatusOr<NegotiateBody> DecodeNegotiateBody(std::span<const uint8_t> body) {
  if (body.size() < kNegotiateFixedSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("negotiate body of ", body.size(), " bytes is shorter than 8"));
  }
  const size_t frameworks = GetU16(body.data());
  const size_t messages = GetU16(body.data() + 2);
  if (frameworks > kMaxNegotiateVersions || messages > kMaxNegotiateVersions) {
    return absl::InvalidArgumentError(absl::StrCat("negotiate lists ", frameworks, " framework and ",
                                                   messages, " message versions (at most 100 each)"));
  }
  const size_t need = kNegotiateFixedSize + kIcVersionSize * (frameworks + messages);
  if (body.size() < need) {
    return absl::InvalidArgumentError(
        absl::StrCat("negotiate body of ", body.size(), " bytes cannot hold its ",
                     frameworks + messages, " versions (", need, " bytes)"));
  }
  NegotiateBody out;
  size_t at = kNegotiateFixedSize;
  for (size_t i = 0; i < frameworks + messages; ++i, at += kIcVersionSize) {
    IcVersion v{GetU16(body.data() + at), GetU16(body.data() + at + 2)};
    (i < frameworks ? out.framework : out.message).push_back(v);
  }
  return out;
}

Bytes EncodeHeartbeatBody(uint64_t sequence) {
  Bytes out(kHeartbeatBodySize, 0);
  PutU64(out.data(), sequence);
  return out;
}

absl::StatusOr<uint64_t> DecodeHeartbeatBody(std::span<const uint8_t> body) {
  if (body.size() < kHeartbeatMinBodySize) {
    return absl::InvalidArgumentError(
        absl::StrCat("heartbeat body of ", body.size(), " bytes has no 8-byte sequence"));
  }
  return GetU64(body.data());
}

absl::StatusOr<Bytes> EncodeShutdownBody(const ShutdownBody& body) {
  if (body.display_message.size() >= kShutdownMessageBytes) {
    return absl::InvalidArgumentError(absl::StrCat("shutdown message of ", body.display_message.size(),
                                                   " bytes exceeds 2047"));
  }
  Bytes out(kShutdownBodySize, 0);
  PutU32(out.data(), body.reason_code);
  PutU32(out.data() + 4, body.timeout_seconds);
  PutU32(out.data() + 8, body.flags);
  std::memcpy(out.data() + 12, body.display_message.data(), body.display_message.size());
  return out;
}

absl::StatusOr<ShutdownBody> DecodeShutdownBody(std::span<const uint8_t> body) {
  if (body.size() < kShutdownBodySize) {
    return absl::InvalidArgumentError(
        absl::StrCat("shutdown body of ", body.size(), " bytes is shorter than 2060"));
  }
  ShutdownBody out;
  out.reason_code = GetU32(body.data());
  out.timeout_seconds = GetU32(body.data() + 4);
  out.flags = GetU32(body.data() + 8);
  const char* text = reinterpret_cast<const char*>(body.data() + 12);
  out.display_message.assign(text, strnlen(text, kShutdownMessageBytes));
  return out;
}

Bytes EncodeTimeSyncBody(const TimeSyncBody& body, IcVersion message_version) {
  if (UsesReferenceTime(message_version)) {
    Bytes out(kTimeSyncRefBodySize, 0);
    PutU64(out.data(), body.parent_time);
    PutU64(out.data() + 8, body.reference_time);
    out[16] = body.flags;
    out[17] = static_cast<uint8_t>(body.leap_flags);
    out[18] = static_cast<uint8_t>(body.stratum);
    return out;
  }
  Bytes out(kTimeSyncBodySize, 0);
  PutU64(out.data(), body.parent_time);
  PutU64(out.data() + 8, body.child_time);
  PutU64(out.data() + 16, body.round_trip_time);
  out[24] = body.flags;
  return out;
}

absl::StatusOr<TimeSyncBody> DecodeTimeSyncBody(std::span<const uint8_t> body,
                                                IcVersion message_version) {
  TimeSyncBody out;
  if (UsesReferenceTime(message_version)) {
    if (body.size() < kTimeSyncRefBodySize) {
      return absl::InvalidArgumentError(absl::StrCat("time sync (", message_version.ToString(),
                                                     ") body of ", body.size(),
                                                     " bytes is shorter than 22"));
    }
    out.parent_time = GetU64(body.data());
    out.reference_time = GetU64(body.data() + 8);
    out.flags = body[16];
    out.leap_flags = static_cast<int8_t>(body[17]);
    out.stratum = static_cast<int8_t>(body[18]);
    return out;
  }
  if (body.size() < kTimeSyncBodySize) {
    return absl::InvalidArgumentError(absl::StrCat("time sync (", message_version.ToString(),
                                                   ") body of ", body.size(),
                                                   " bytes is shorter than 25"));
  }
  out.parent_time = GetU64(body.data());
  out.child_time = GetU64(body.data() + 8);
  out.round_trip_time = GetU64(body.data() + 16);
  out.flags = body[24];
  return out;
}

}  // namespace kmcl::devices::ic
