#include "devices/ic/host_services.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "devices/ic/state_codec.h"

namespace kmcl::devices::ic {

namespace {

IcServiceInfo WithVersions(IcService service, const HostOptions& options) {
  IcServiceInfo info = ServiceInfo(service);
  if (!options.framework_versions.empty()) info.host_framework = options.framework_versions;
  if (!options.message_versions.empty()) info.host_message = options.message_versions;
  return info;
}

uint64_t WindowsTime(absl::Time t) {
  return static_cast<uint64_t>(absl::ToUnixNanos(t) / 100) + kWindowsToUnixEpoch100ns;
}

}  // namespace

// ---- IcHostService ----------------------------------------------------------------

IcHostService::IcHostService(IcService service, const HostOptions& options)
    : core_(WithVersions(service, options), options.request_timeout) {}

void IcHostService::Open(absl::Time now, IcOutput& out) {
  opened_at_ = now;
  core_.Open(now, out);
  Finish(now, out);
}

void IcHostService::Close(IcOutput& out) {
  core_.Close(out);
  Finish(absl::InfinitePast(), out);
}

void IcHostService::OnPacket(std::span<const uint8_t> packet, absl::Time now, IcOutput& out) {
  core_.OnPacket(packet, now, out);
  Finish(now, out);
}

void IcHostService::Tick(absl::Time now, IcOutput& out) {
  core_.Tick(now, out);
  Finish(now, out);
}

void IcHostService::Finish(absl::Time now, IcOutput& out) {
  std::vector<IcCompletion> done = std::move(out.completed);
  out.completed.clear();
  for (IcCompletion& c : done) OnCompletion(c, now, out);
}

std::string IcHostService::Save() const {
  StateWriter w;
  w.Str(info().name);
  w.Str(core_.Save());
  w.U8(opened_at_.has_value());
  std::string extra;
  SaveExtra(extra);
  w.Str(extra);
  return w.Take();
}

absl::Status IcHostService::Restore(std::string_view saved, absl::Time now) {
  StateReader r(saved);
  std::string name = r.Str();
  std::string core = r.Str();
  const bool opened = r.U8() != 0;
  std::string extra = r.Str();
  if (!r.done()) return absl::InvalidArgumentError("IC service state: truncated");
  if (name != info().name) {
    return absl::InvalidArgumentError(absl::StrCat("IC service state of ", name, " given to ", info().name));
  }
  if (absl::Status s = core_.Restore(core, now); !s.ok()) return s;
  opened_at_ = opened ? std::optional<absl::Time>(now) : std::nullopt;
  return RestoreExtra(extra);
}

std::unique_ptr<IcHostService> MakeHostService(IcService service, const HostOptions& options) {
  switch (service) {
    case IcService::kHeartbeat:
      return std::make_unique<HeartbeatHost>(options);
    case IcService::kShutdown:
      return std::make_unique<ShutdownHost>(options);
    case IcService::kTimeSync:
      return std::make_unique<TimeSyncHost>(options);
    case IcService::kKvp:
      return std::make_unique<KvpHost>(options);
  }
  return nullptr;
}

// ---- Heartbeat --------------------------------------------------------------------

HeartbeatHost::HeartbeatHost(const HostOptions& options)
    : IcHostService(IcService::kHeartbeat, options),
      interval_(options.heartbeat_interval),
      timeout_(options.heartbeat_timeout) {}

void HeartbeatHost::Open(absl::Time now, IcOutput& out) {
  alive_ = true;  // given `timeout` to answer from now
  last_answer_.reset();
  resumed_at_.reset();
  next_send_ = now;
  outstanding_op_.reset();
  IcHostService::Open(now, out);
}

void HeartbeatHost::Tick(absl::Time now, IcOutput& out) {
  IcHostService::Tick(now, out);
  if (!opened_at_) return;
  if (core_.state() == IcHostCore::State::kReady && !outstanding_op_ && next_send_ && now >= *next_send_) {
    outstanding_op_ = core_.Submit(kMsgHeartbeat, EncodeHeartbeatBody(last_sequence_), now, out);
    next_send_ = now + interval_;
    Finish(now, out);
  }
  const absl::Time since = SilentSince();
  if (alive_ && now - since > timeout_) {
    alive_ = false;
    ++unresponsive_events_;
    out.events.push_back({IcEventKind::kGuestUnresponsive,
                          absl::StrCat("heartbeat: no answer for ", absl::FormatDuration(now - since),
                                       " (timeout ", absl::FormatDuration(timeout_), "); last sequence ",
                                       last_sequence_)});
  }
}

void HeartbeatHost::OnCompletion(IcCompletion& c, absl::Time now, IcOutput& out) {
  if (outstanding_op_ == c.op) outstanding_op_.reset();
  if (!c.result.ok() || c.type != kMsgHeartbeat) return;  // timeouts and closes are counted by the core
  absl::StatusOr<uint64_t> sequence = DecodeHeartbeatBody(c.result->body);
  if (c.result->status != kHvSOk || !sequence.ok() || *sequence != last_sequence_ + 1) {
    core_.NoteMalformedBody(
        c.result->status != kHvSOk
            ? absl::StrCat("heartbeat answer with status 0x", absl::Hex(c.result->status, absl::kZeroPad8))
        : !sequence.ok() ? absl::StrCat("heartbeat answer: ", sequence.status().message())
                         : absl::StrCat("heartbeat answer with sequence ", *sequence, ", expected ",
                                        last_sequence_ + 1),
        out);
    return;
  }
  last_sequence_ = *sequence;
  last_answer_ = now;
  ++answers_;
  if (!alive_) {
    alive_ = true;
    out.events.push_back({IcEventKind::kGuestResponsive, absl::StrCat("heartbeat: answering again at sequence ",
                                                                      last_sequence_)});
  }
}

HeartbeatStatus HeartbeatHost::Status(absl::Time now) const {
  HeartbeatStatus s;
  s.negotiated = core_.state() == IcHostCore::State::kReady;
  s.last_sequence = last_sequence_;
  s.last_answer = last_answer_;
  s.answers = answers_;
  s.unresponsive_events = unresponsive_events_;
  if (opened_at_) s.alive = now - SilentSince() <= timeout_;
  return s;
}

absl::Time HeartbeatHost::SilentSince() const {
  const absl::Time since = last_answer_.value_or(*opened_at_);
  return resumed_at_.has_value() && *resumed_at_ > since ? *resumed_at_ : since;
}

void HeartbeatHost::SaveExtra(std::string& out) const {
  StateWriter w;
  w.U64(last_sequence_);
  w.U64(answers_);
  w.U64(unresponsive_events_);
  w.U8(outstanding_op_.has_value());
  w.U64(outstanding_op_.value_or(0));
  out = w.Take();
}

absl::Status HeartbeatHost::RestoreExtra(std::string_view in) {
  StateReader r(in);
  const uint64_t sequence = r.U64();
  const uint64_t answers = r.U64();
  const uint64_t unresponsive = r.U64();
  const bool outstanding = r.U8() != 0;
  const uint64_t op = r.U64();
  if (!r.done()) return absl::InvalidArgumentError("heartbeat state: truncated");
  last_sequence_ = sequence;
  answers_ = answers;
  unresponsive_events_ = unresponsive;
  outstanding_op_ = outstanding ? std::optional<uint64_t>(op) : std::nullopt;
  // The restore is the new reference point: the guest gets `timeout` to
  // answer from here, and the next heartbeat goes out on the next tick.
  alive_ = true;
  last_answer_.reset();
  resumed_at_.reset();
  next_send_ = opened_at_;
  return absl::OkStatus();
}

// ---- Shutdown ---------------------------------------------------------------------

ShutdownHost::ShutdownHost(const HostOptions& options) : IcHostService(IcService::kShutdown, options) {}

absl::StatusOr<uint64_t> ShutdownHost::RequestShutdown(const ShutdownBody& request, absl::Time now,
                                                       IcOutput& out) {
  absl::StatusOr<Bytes> body = EncodeShutdownBody(request);
  if (!body.ok()) return body.status();
  uint64_t op = core_.Submit(kMsgShutdown, *std::move(body), now, out);
  Finish(now, out);
  return op;
}

void ShutdownHost::OnCompletion(IcCompletion& c, absl::Time now, IcOutput& out) {
  if (!c.result.ok()) {
    results_.Put(c.op, c.result.status());
    return;
  }
  // The guest echoes the request; only its status matters, but a body too
  // short to have been the request is still malformed.
  if (c.result->body.size() < kShutdownBodySize) {
    core_.NoteMalformedBody(absl::StrCat("shutdown answer body of ", c.result->body.size(),
                                         " bytes, shorter than the request's ", kShutdownBodySize),
                            out);
  }
  results_.Put(c.op, ShutdownResult{c.result->status});
  out.events.push_back({IcEventKind::kShutdownAnswered,
                        c.result->status == kHvSOk
                            ? std::string("shutdown: acknowledged by the guest")
                            : absl::StrCat("shutdown: refused by the guest, status 0x",
                                           absl::Hex(c.result->status, absl::kZeroPad8)),
                        c.result->status});
}

// ---- Time sync --------------------------------------------------------------------

TimeSyncHost::TimeSyncHost(const HostOptions& options) : IcHostService(IcService::kTimeSync, options) {}

absl::StatusOr<uint64_t> TimeSyncHost::SendSample(uint8_t flags, absl::Time now, IcOutput& out) {
  if (core_.state() != IcHostCore::State::kReady) {
    return absl::FailedPreconditionError("timesync: version negotiation has not finished");
  }
  TimeSyncBody body;
  body.parent_time = WindowsTime(now);
  body.flags = flags;
  if (opened_at_) body.reference_time = static_cast<uint64_t>(absl::ToInt64Nanoseconds(now - *opened_at_) / 100);
  const uint64_t op = core_.Submit(kMsgTimeSync, EncodeTimeSyncBody(body, core_.negotiated()->message), now, out);
  sent_[op] = body;
  Finish(now, out);
  return op;
}

void TimeSyncHost::OnCompletion(IcCompletion& c, absl::Time now, IcOutput& out) {
  TimeSyncBody sent;
  if (auto it = sent_.find(c.op); it != sent_.end()) {
    sent = it->second;
    sent_.erase(it);
  }
  if (!c.result.ok()) {
    results_.Put(c.op, c.result.status());
    return;
  }
  const IcVersion version = core_.negotiated().value_or(NegotiatedVersions{}).message;
  if (absl::Status s = DecodeTimeSyncBody(c.result->body, version).status(); !s.ok()) {
    core_.NoteMalformedBody(absl::StrCat("time sync answer: ", s.message()), out);
  }
  ++answered_;
  results_.Put(c.op, TimeSyncResult{sent, now, c.result->status});
}

// ---- KVP --------------------------------------------------------------------------

KvpHost::KvpHost(const HostOptions& options) : IcHostService(IcService::kKvp, options) {}

absl::StatusOr<uint64_t> KvpHost::Submit(KvpBody body, absl::Time now, IcOutput& out) {
  if (body.pool >= kKvpPoolCount) {
    return absl::InvalidArgumentError(absl::StrCat("KVP pool ", body.pool, " is not 0..4"));
  }
  absl::StatusOr<Bytes> bytes = EncodeKvpBody(body);
  if (!bytes.ok()) return bytes.status();
  const uint64_t op = core_.Submit(kMsgKvpExchange, *std::move(bytes), now, out);
  operations_[op] = body.operation;
  Finish(now, out);
  return op;
}

namespace {

// A key or value as the wire carries it (UTF-16LE + NUL); INVALID_ARGUMENT
// naming which and its limit.
absl::StatusOr<Bytes> KvpField(const char* what, std::string_view utf8, size_t max_bytes) {
  absl::StatusOr<Bytes> bytes = EncodeKvpString(utf8, max_bytes);
  if (bytes.ok()) return bytes;
  return absl::Status(bytes.status().code(), absl::StrCat("KVP ", what, ": ", bytes.status().message()));
}

}  // namespace

absl::StatusOr<uint64_t> KvpHost::Get(uint8_t pool, std::string_view key, absl::Time now, IcOutput& out) {
  absl::StatusOr<Bytes> k = KvpField("key", key, kKvpMaxKeyBytes);
  if (!k.ok()) return k.status();
  return Submit(KvpBody{kKvpOpGet, pool, 0, kKvpRegSz, *std::move(k), {}}, now, out);
}

absl::StatusOr<uint64_t> KvpHost::Set(uint8_t pool, std::string_view key, std::string_view value,
                                      absl::Time now, IcOutput& out) {
  absl::StatusOr<Bytes> k = KvpField("key", key, kKvpMaxKeyBytes);
  if (!k.ok()) return k.status();
  absl::StatusOr<Bytes> v = KvpField("value", value, kKvpMaxValueBytes);
  if (!v.ok()) return v.status();
  return Submit(KvpBody{kKvpOpSet, pool, 0, kKvpRegSz, *std::move(k), *std::move(v)}, now, out);
}

absl::StatusOr<uint64_t> KvpHost::Delete(uint8_t pool, std::string_view key, absl::Time now, IcOutput& out) {
  absl::StatusOr<Bytes> k = KvpField("key", key, kKvpMaxKeyBytes);
  if (!k.ok()) return k.status();
  return Submit(KvpBody{kKvpOpDelete, pool, 0, 0, *std::move(k), {}}, now, out);
}

absl::StatusOr<uint64_t> KvpHost::Enumerate(uint8_t pool, uint32_t index, absl::Time now, IcOutput& out) {
  return Submit(KvpBody{kKvpOpEnumerate, pool, index, 0, {}, {}}, now, out);
}

void KvpHost::OnCompletion(IcCompletion& c, absl::Time now, IcOutput& out) {
  uint8_t operation = kKvpOpGet;
  if (auto it = operations_.find(c.op); it != operations_.end()) {
    operation = it->second;
    operations_.erase(it);
  }
  if (!c.result.ok()) {
    results_.Put(c.op, c.result.status());
    return;
  }
  KvpResult result;
  result.guest_status = c.result->status;
  if (result.guest_status == kHvSOk && (operation == kKvpOpGet || operation == kKvpOpEnumerate)) {
    absl::StatusOr<KvpBody> body = DecodeKvpBody(c.result->body);
    absl::StatusOr<std::string> value =
        body.ok() ? KvpValueText(body->value_type, body->value) : absl::StatusOr<std::string>(body.status());
    absl::StatusOr<std::string> key = body.ok() ? DecodeKvpString(body->key) : body.status();
    if (!value.ok() || !key.ok() || body->operation != operation) {
      std::string why = !value.ok() ? std::string(value.status().message())
                        : !key.ok() ? std::string(key.status().message())
                                    : absl::StrCat("operation ", body->operation, " answers ", operation);
      core_.NoteMalformedBody(absl::StrCat("KVP answer: ", why), out);
      results_.Put(c.op, absl::DataLossError(absl::StrCat("KVP answer is malformed: ", why)));
      return;
    }
    result.value = *std::move(value);
    if (operation == kKvpOpEnumerate) result.key = *std::move(key);
  }
  results_.Put(c.op, std::move(result));
}

void KvpHost::SaveExtra(std::string& out) const {
  StateWriter w;
  w.U32(static_cast<uint32_t>(operations_.size()));
  for (const auto& [op, operation] : operations_) {
    w.U64(op);
    w.U8(operation);
  }
  out = w.Take();
}

absl::Status KvpHost::RestoreExtra(std::string_view in) {
  StateReader r(in);
  absl::flat_hash_map<uint64_t, uint8_t> operations;
  const uint32_t n = r.U32();
  for (uint32_t i = 0; i < n && r.ok(); ++i) {
    const uint64_t op = r.U64();
    operations[op] = r.U8();
  }
  if (!r.done()) return absl::InvalidArgumentError("KVP state: truncated");
  operations_ = std::move(operations);
  return absl::OkStatus();
}

}  // namespace kmcl::devices::ic
