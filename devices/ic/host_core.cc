#include "devices/ic/host_core.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "devices/ic/state_codec.h"

namespace kmcl::devices::ic {

namespace {
constexpr uint8_t kSaveVersion = 1;
}  // namespace

const char* IcEventName(IcEventKind kind) {
  switch (kind) {
    case IcEventKind::kNegotiated:
      return "negotiated";
    case IcEventKind::kNegotiationFailed:
      return "negotiation_failed";
    case IcEventKind::kGuestUnresponsive:
      return "guest_unresponsive";
    case IcEventKind::kGuestResponsive:
      return "guest_responsive";
    case IcEventKind::kShutdownAnswered:
      return "shutdown_answered";
  }
  return "unknown";
}

IcHostCore::IcHostCore(const IcServiceInfo& service, absl::Duration request_timeout)
    : service_(service), request_timeout_(request_timeout) {}

void IcHostCore::Open(absl::Time now, IcOutput& out) {
  state_ = State::kNegotiating;
  negotiated_.reset();
  failure_.clear();
  for (Pending& p : pending_) p.sent = false;  // resent after negotiation
  SendNegotiate(now, out);
}

void IcHostCore::SendNegotiate(absl::Time now, IcOutput& out) {
  Pending p;
  p.type = kMsgNegotiate;
  p.transaction_id = next_transaction_++;
  p.sent = true;
  p.sent_at = now;
  IcHeader h;
  h.framework = service_.host_framework.empty() ? IcVersion{} : service_.host_framework.front();
  h.message = service_.host_message.empty() ? IcVersion{} : service_.host_message.front();
  h.type = kMsgNegotiate;
  h.transaction_id = p.transaction_id;
  h.flags = kFlagTransaction | kFlagRequest;
  out.send.push_back(EncodeIcMessage(h, EncodeNegotiateBody({service_.host_framework, service_.host_message})));
  ++counters_.requests_sent;
  negotiate_ = std::move(p);
}

void IcHostCore::Close(IcOutput& out) {
  state_ = State::kClosed;
  negotiate_.reset();
  FailAll(absl::UnavailableError(absl::StrCat(service_.name, " channel closed")), out);
}

void IcHostCore::FailAll(const absl::Status& status, IcOutput& out) {
  while (!pending_.empty()) {
    out.completed.push_back({pending_.front().op, pending_.front().type, status});
    pending_.pop_front();
  }
}

uint64_t IcHostCore::Submit(uint16_t type, Bytes body, absl::Time now, IcOutput& out) {
  const uint64_t op = next_op_++;
  if (state_ == State::kFailed) {
    out.completed.push_back({op, type, absl::FailedPreconditionError(failure_)});
    return op;
  }
  pending_.push_back(Pending{op, type, std::move(body)});
  Pump(now, out);
  return op;
}

void IcHostCore::Pump(absl::Time now, IcOutput& out) {
  if (state_ != State::kReady || pending_.empty() || pending_.front().sent) return;
  Pending& p = pending_.front();
  p.sent = true;
  p.sent_at = now;
  p.transaction_id = next_transaction_++;
  IcHeader h;
  h.framework = negotiated_->framework;
  h.message = negotiated_->message;
  h.type = p.type;
  h.transaction_id = p.transaction_id;
  h.flags = kFlagTransaction | kFlagRequest;
  out.send.push_back(EncodeIcMessage(h, p.body));
  ++counters_.requests_sent;
}

void IcHostCore::OnPacket(std::span<const uint8_t> packet, absl::Time now, IcOutput& out) {
  absl::StatusOr<IcMessage> m = ParseIcMessage(packet);
  if (!m.ok()) {
    ++counters_.short_packets;
    out.dropped.push_back(std::string(m.status().message()));
    return;
  }
  const IcHeader& h = m->header;
  if ((h.flags & kFlagResponse) == 0) {
    ++counters_.not_response;
    out.dropped.push_back(absl::StrCat("icflags 0x", absl::Hex(h.flags, absl::kZeroPad2),
                                       " without RESPONSE (icmsgtype ", h.type, ")"));
    return;
  }
  if (h.size > m->body.size()) {
    ++counters_.bad_size;
    out.dropped.push_back(absl::StrCat("icmsgsize ", h.size, " larger than the ", m->body.size(),
                                       " body bytes that came"));
    return;
  }
  if (h.type != kMsgNegotiate && h.type != service_.message_type) {
    ++counters_.wrong_type;
    out.dropped.push_back(absl::StrCat("icmsgtype ", h.type, " is neither NEGOTIATE (0) nor ", service_.name,
                                       " (", service_.message_type, ")"));
    return;
  }
  if (h.type == kMsgNegotiate) {
    if (!negotiate_ || negotiate_->transaction_id != h.transaction_id) {
      ++counters_.unexpected;
      out.dropped.push_back(absl::StrCat("NEGOTIATE answer with transaction id ", h.transaction_id, ", ",
                                         negotiate_ ? absl::StrCat("expected ", negotiate_->transaction_id)
                                                    : std::string("none outstanding")));
      return;
    }
    ++counters_.responses;
    OnNegotiateAnswer(*m, out);
    Pump(now, out);
    return;
  }
  if (pending_.empty() || !pending_.front().sent || pending_.front().type != h.type ||
      pending_.front().transaction_id != h.transaction_id) {
    ++counters_.unexpected;
    out.dropped.push_back(
        absl::StrCat("answer with transaction id ", h.transaction_id, ", ",
                     pending_.empty() || !pending_.front().sent
                         ? std::string("no request outstanding")
                         : absl::StrCat("expected ", pending_.front().transaction_id)));
    return;
  }
  ++counters_.responses;
  out.completed.push_back({pending_.front().op, h.type,
                           IcResponse{h.status, Bytes(m->body.begin(), m->body.end())}});
  pending_.pop_front();
  Pump(now, out);
}

void IcHostCore::OnNegotiateAnswer(const IcMessage& m, IcOutput& out) {
  negotiate_.reset();
  absl::StatusOr<NegotiateBody> body = DecodeNegotiateBody(m.body);
  absl::StatusOr<NegotiatedVersions> chosen =
      body.ok() ? AcceptNegotiateAnswer(*body, m.header.status, service_.host_framework, service_.host_message)
                : absl::StatusOr<NegotiatedVersions>(body.status());
  if (chosen.ok()) {
    state_ = State::kReady;
    negotiated_ = *chosen;
    out.events.push_back({IcEventKind::kNegotiated,
                          absl::StrCat(service_.name, ": framework ", chosen->framework.ToString(),
                                       ", message ", chosen->message.ToString())});
    return;
  }
  if (!absl::IsFailedPrecondition(chosen.status())) {
    ++counters_.bad_body;
    out.dropped.push_back(absl::StrCat("NEGOTIATE answer: ", chosen.status().message()));
  }
  state_ = State::kFailed;
  failure_ = absl::StrCat(service_.name, " negotiation failed: ", chosen.status().message());
  out.events.push_back({IcEventKind::kNegotiationFailed, failure_});
  FailAll(absl::FailedPreconditionError(failure_), out);
}

void IcHostCore::Tick(absl::Time now, IcOutput& out) {
  if (negotiate_ && now - negotiate_->sent_at > request_timeout_) {
    ++counters_.timeouts;
    SendNegotiate(now, out);  // the guest may not be listening yet
    return;
  }
  if (state_ == State::kReady && !pending_.empty() && pending_.front().sent &&
      now - pending_.front().sent_at > request_timeout_) {
    ++counters_.timeouts;
    out.completed.push_back({pending_.front().op, pending_.front().type,
                             absl::DeadlineExceededError(absl::StrCat(
                                 service_.name, ": the guest did not answer within ",
                                 absl::FormatDuration(request_timeout_)))});
    pending_.pop_front();
    Pump(now, out);
  }
}

std::string IcHostCore::Save() const {
  StateWriter w;
  w.U8(kSaveVersion);
  w.U8(static_cast<uint8_t>(state_));
  PutVersions(w, negotiated_);
  w.Str(failure_);
  w.U64(next_op_);
  w.U8(next_transaction_);
  w.U8(negotiate_.has_value());
  w.U8(negotiate_ ? negotiate_->transaction_id : 0);
  w.U32(static_cast<uint32_t>(pending_.size()));
  for (const Pending& p : pending_) {
    w.U64(p.op);
    w.U16(p.type);
    w.U8(p.sent);
    w.U8(p.transaction_id);
    w.Str(std::string_view(reinterpret_cast<const char*>(p.body.data()), p.body.size()));
  }
  return w.Take();
}

absl::Status IcHostCore::Restore(std::string_view saved, absl::Time now) {
  StateReader r(saved);
  if (r.U8() != kSaveVersion) return absl::InvalidArgumentError("IC host state: unknown version");
  const uint8_t state = r.U8();
  const std::optional<NegotiatedVersions> versions = GetVersions(r);
  std::string failure = r.Str();
  const uint64_t next_op = r.U64();
  const uint8_t next_transaction = r.U8();
  const bool has_negotiate = r.U8() != 0;
  const uint8_t negotiate_tid = r.U8();
  const uint32_t count = r.U32();
  std::deque<Pending> pending;
  for (uint32_t i = 0; i < count && r.ok(); ++i) {
    Pending p;
    p.op = r.U64();
    p.type = r.U16();
    p.sent = r.U8() != 0;
    p.transaction_id = r.U8();
    std::string body = r.Str();
    p.body.assign(body.begin(), body.end());
    p.sent_at = now;
    pending.push_back(std::move(p));
  }
  if (!r.done() || state > static_cast<uint8_t>(State::kFailed) ||
      (state == static_cast<uint8_t>(State::kReady) && !versions)) {
    return absl::InvalidArgumentError("IC host state: truncated or inconsistent");
  }
  state_ = static_cast<State>(state);
  negotiated_ = versions;
  failure_ = std::move(failure);
  next_op_ = next_op;
  next_transaction_ = next_transaction;
  negotiate_.reset();
  if (has_negotiate) negotiate_ = Pending{0, kMsgNegotiate, {}, true, negotiate_tid, now};
  pending_ = std::move(pending);
  return absl::OkStatus();
}

}  // namespace kmcl::devices::ic
