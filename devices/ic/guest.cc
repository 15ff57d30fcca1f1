#include "devices/ic/guest.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "devices/ic/state_codec.h"

namespace kmcl::devices::ic {

namespace {

constexpr uint8_t kSaveVersion = 1;

absl::Time FromWindowsTime(uint64_t t100ns) {
  return absl::FromUnixNanos(static_cast<int64_t>(t100ns - kWindowsToUnixEpoch100ns) * 100);
}

}  // namespace

// ---- KvpPool ------------------------------------------------------------------------

const std::string* KvpPool::Find(std::string_view key) const {
  for (const auto& [k, v] : records_) {
    if (k == key) return &v;
  }
  return nullptr;
}

absl::Status KvpPool::Set(std::string key, std::string value) {
  for (auto& [k, v] : records_) {
    if (k == key) {
      v = std::move(value);
      return absl::OkStatus();
    }
  }
  if (records_.size() >= capacity_) {
    return absl::ResourceExhaustedError(absl::StrCat("KVP pool is full (", capacity_, " records)"));
  }
  records_.emplace_back(std::move(key), std::move(value));
  return absl::OkStatus();
}

bool KvpPool::Delete(std::string_view key) {
  auto it = std::find_if(records_.begin(), records_.end(), [&](const auto& r) { return r.first == key; });
  if (it == records_.end()) return false;
  records_.erase(it);
  return true;
}

// ---- IcGuest ------------------------------------------------------------------------

IcGuest::IcGuest(IcService service, GuestOptions options)
    : service_(service), info_(ServiceInfo(service)), options_(std::move(options)) {
  if (options_.framework_versions.empty()) options_.framework_versions = info_.guest_framework;
  if (options_.message_versions.empty()) options_.message_versions = info_.guest_message;
  pools_.assign(kKvpPoolCount, KvpPool(options_.kvp_pool_capacity));
}

std::optional<Bytes> IcGuest::OnPacket(std::span<const uint8_t> packet, absl::Time now) {
  ++counters_.requests;
  if (!answering_) {
    ++counters_.ignored;
    return std::nullopt;
  }
  absl::StatusOr<IcMessage> parsed = ParseIcMessage(packet);
  if (!parsed.ok()) {
    ++counters_.short_packets;
    return std::nullopt;
  }
  IcMessage m = *parsed;
  Bytes answer(packet.begin(), packet.end());
  bool answer_it = true;
  if (m.header.type == kMsgNegotiate) {
    // vmbus_prep_negotiate_resp writes two versions after the fixed part.
    if (answer.size() < kIcMessageHeaderSize + kNegotiateFixedSize + 2 * kIcVersionSize) {
      answer.resize(kIcMessageHeaderSize + kNegotiateFixedSize + 2 * kIcVersionSize, 0);
    }
    Negotiate(answer, m);
  } else if (m.header.type == info_.message_type) {
    switch (service_) {
      case IcService::kHeartbeat:
        answer_it = Heartbeat(answer, m);
        break;
      case IcService::kShutdown:
        answer_it = Shutdown(m);
        break;
      case IcService::kTimeSync:
        answer_it = TimeSync(m, now);
        break;
      case IcService::kKvp:
        answer_it = Kvp(answer, m);
        break;
    }
  } else {
    ++counters_.wrong_type;
    if (service_ == IcService::kKvp) return std::nullopt;  // hv_kvp.c drops it
    m.header.status = kHvEFail;
  }
  if (!answer_it) return std::nullopt;
  m.header.flags = kFlagTransaction | kFlagResponse;
  WriteIcHeader(answer, m.header);
  ++counters_.answered;
  return answer;
}

void IcGuest::Negotiate(std::span<uint8_t> answer, IcMessage& m) {
  absl::StatusOr<NegotiateBody> offered = DecodeNegotiateBody(m.body);
  std::optional<NegotiatedVersions> chosen;
  if (offered.ok()) {
    chosen = ChooseVersions(*offered, options_.framework_versions, options_.message_versions);
  } else {
    ++counters_.bad_body;
  }
  uint8_t* body = answer.data() + kIcMessageHeaderSize;
  std::memset(body, 0, kNegotiateFixedSize + 2 * kIcVersionSize);
  m.header.size = kNegotiateFixedSize + 2 * kIcVersionSize;  // 0x10, as Linux sets
  if (!chosen) {
    ++counters_.negotiation_failures;
    m.header.status = kHvEFail;
    return;
  }
  negotiated_ = chosen;
  PutU16(body, 1);
  PutU16(body + 2, 1);
  PutU16(body + 8, chosen->framework.major);
  PutU16(body + 10, chosen->framework.minor);
  PutU16(body + 12, chosen->message.major);
  PutU16(body + 14, chosen->message.minor);
}

bool IcGuest::Heartbeat(std::span<uint8_t> answer, IcMessage& m) {
  absl::StatusOr<uint64_t> sequence = DecodeHeartbeatBody(m.body);
  if (!sequence.ok()) {
    ++counters_.short_packets;
    return false;
  }
  last_heartbeat_ = *sequence + 1;
  PutU64(answer.data() + kIcMessageHeaderSize, last_heartbeat_);
  return true;
}

bool IcGuest::Shutdown(IcMessage& m) {
  absl::StatusOr<ShutdownBody> request = DecodeShutdownBody(m.body);
  if (!request.ok()) {
    ++counters_.short_packets;
    return false;
  }
  switch (request->flags) {
    case kShutdownFlagShutdown:
    case kShutdownFlagShutdown | kShutdownFlagForce:
    case kShutdownFlagRestart:
    case kShutdownFlagRestart | kShutdownFlagForce:
      m.header.status = kHvSOk;
      break;
    case kShutdownFlagHibernate:
    case kShutdownFlagHibernate | kShutdownFlagForce:
      m.header.status = options_.hibernation_supported ? kHvSOk : kHvEFail;
      break;
    default:
      ++counters_.bad_body;
      m.header.status = kHvEFail;
      break;
  }
  shutdowns_.push_back({*std::move(request), m.header.status});
  return true;
}

bool IcGuest::TimeSync(IcMessage& m, absl::Time now) {
  const IcVersion version = negotiated_.value_or(NegotiatedVersions{}).message;
  absl::StatusOr<TimeSyncBody> sample = DecodeTimeSyncBody(m.body, version);
  if (!sample.ok()) {
    ++counters_.short_packets;
    return false;
  }
  last_sample_ = *sample;
  if (sample->flags & kTimeSyncSync) {
    ++time_syncs_;
    clock_offset_ = FromWindowsTime(sample->parent_time) - now;
  }
  return true;
}

bool IcGuest::Kvp(Bytes& answer, IcMessage& m) {
  if (m.body.size() < kKvpHeaderSize) {
    ++counters_.short_packets;
    return false;
  }
  absl::StatusOr<KvpBody> request = DecodeKvpBody(m.body);
  if (!request.ok()) {
    ++counters_.bad_body;
    m.header.status = absl::IsUnimplemented(request.status()) ? kHvErrorNotSupported : kHvInvalidArg;
    return true;
  }
  KvpPool& pool = pools_[request->pool];
  absl::StatusOr<std::string> key = DecodeKvpString(request->key);
  KvpBody reply = *request;
  uint32_t status = kHvSOk;
  switch (request->operation) {
    case kKvpOpSet: {
      absl::StatusOr<std::string> value = KvpValueText(request->value_type, request->value);
      if (!key.ok() || !value.ok()) {
        ++counters_.bad_body;
        status = kHvInvalidArg;
      } else if (!pool.Set(*key, *value).ok()) {
        status = kHvErrorDiskFull;
      }
      break;
    }
    case kKvpOpGet: {
      const std::string* value = key.ok() ? pool.Find(*key) : nullptr;
      if (!key.ok()) ++counters_.bad_body;
      if (value == nullptr) {
        status = key.ok() ? kHvSCont : kHvInvalidArg;
        break;
      }
      reply.value_type = kKvpRegSz;
      reply.value = *EncodeKvpString(*value, kKvpMaxValueBytes);
      break;
    }
    case kKvpOpDelete:
      if (!key.ok()) ++counters_.bad_body;
      status = !key.ok() ? kHvInvalidArg : pool.Delete(*key) ? kHvSOk : kHvSCont;
      break;
    case kKvpOpEnumerate:
      if (request->index >= pool.records().size()) {
        status = kHvSCont;
        break;
      }
      reply.value_type = kKvpRegSz;
      reply.key = *EncodeKvpString(pool.records()[request->index].first, kKvpMaxKeyBytes);
      reply.value = *EncodeKvpString(pool.records()[request->index].second, kKvpMaxValueBytes);
      break;
  }
  m.header.status = status;
  if (status == kHvSOk && (request->operation == kKvpOpGet || request->operation == kKvpOpEnumerate)) {
    Bytes body = *EncodeKvpBody(reply);
    std::memcpy(answer.data() + kIcMessageHeaderSize, body.data(), body.size());
  }
  return true;
}

std::string IcGuest::Save() const {
  StateWriter w;
  w.U8(kSaveVersion);
  w.U8(static_cast<uint8_t>(service_));
  PutVersions(w, negotiated_);
  w.U64(last_heartbeat_);
  w.U64(static_cast<uint64_t>(absl::ToInt64Nanoseconds(clock_offset_)));
  for (const KvpPool& pool : pools_) {
    w.U32(static_cast<uint32_t>(pool.records().size()));
    for (const auto& [k, value] : pool.records()) {
      w.Str(k);
      w.Str(value);
    }
  }
  return w.Take();
}

absl::Status IcGuest::Restore(std::string_view saved) {
  StateReader r(saved);
  if (r.U8() != kSaveVersion || r.U8() != static_cast<uint8_t>(service_)) {
    return absl::InvalidArgumentError("IC guest state: another version or service");
  }
  const std::optional<NegotiatedVersions> versions = GetVersions(r);
  const uint64_t heartbeat = r.U64();
  const int64_t offset = static_cast<int64_t>(r.U64());
  std::vector<KvpPool> pools(kKvpPoolCount, KvpPool(options_.kvp_pool_capacity));
  for (KvpPool& pool : pools) {
    const uint32_t n = r.U32();
    for (uint32_t i = 0; i < n && r.ok(); ++i) {
      std::string k = r.Str();
      pool.records_.emplace_back(std::move(k), r.Str());
    }
  }
  if (!r.done()) return absl::InvalidArgumentError("IC guest state: truncated");
  negotiated_ = versions;
  last_heartbeat_ = heartbeat;
  clock_offset_ = absl::Nanoseconds(offset);
  pools_ = std::move(pools);
  return absl::OkStatus();
}

}  // namespace kmcl::devices::ic
