// devices/ic/host_core.h: the host (VSP) side of the IC request/response
// protocol shared by the four services, as a state machine without threads,
// clocks or I/O: inputs are calls with the current time, outputs are the
// packets to send and the requests that finished (IcOutput).
//
//   Open(now)      -> NEGOTIATE offering the service's versions
//   answer         -> Ready with the chosen versions, or Failed (no common
//                     version: every queued request fails FAILED_PRECONDITION)
//   Submit(...)    -> queued; one request is outstanding at a time (the IC
//                     protocol is strictly request/response; hv_kvp.c relies
//                     on it); answers are matched by icmsg_hdr's
//                     ictransaction_id, which the guest echoes
//   Tick(now)      -> an answer later than the request timeout finishes the
//                     request with DEADLINE_EXCEEDED (a NEGOTIATE is resent)
//   Close()        -> everything pending finishes UNAVAILABLE
//
// Malformed guest packets never stop the channel: each is dropped and
// counted by kind (IcHostCounters), and what was wrong with it is one line
// of IcOutput::dropped for the owner's log; the services report bodies
// they cannot decode through NoteMalformedBody().
//
// Threading: not thread-safe; the KMCL glue (vsp.h) serialises calls.
#ifndef KMCLD_DEVICES_IC_HOST_CORE_H_
#define KMCLD_DEVICES_IC_HOST_CORE_H_

#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "devices/ic/ic_wire.h"
#include "devices/ic/negotiation.h"

namespace kmcl::devices::ic {

struct IcResponse {
  uint32_t status = 0;  // the guest's icmsg_hdr.status (HRESULT)
  Bytes body;           // the bytes after offset 28
};

struct IcCompletion {
  uint64_t op = 0;
  uint16_t type = 0;
  absl::StatusOr<IcResponse> result;
};

enum class IcEventKind {
  kNegotiated,
  kNegotiationFailed,
  kGuestUnresponsive,   // heartbeat: no answer within the timeout
  kGuestResponsive,     // heartbeat: answers again
  kShutdownAnswered,    // shutdown: the guest acknowledged or refused
};
const char* IcEventName(IcEventKind kind);

struct IcEvent {
  IcEventKind kind;
  std::string detail;
  uint32_t guest_status = 0;  // kShutdownAnswered: the guest's status (kHvSOk: acknowledged)
};

// What a call produced, in order.
struct IcOutput {
  std::vector<Bytes> send;               // packets for the channel
  std::vector<IcCompletion> completed;   // finished requests (services consume these)
  std::vector<IcEvent> events;           // for the owner (logs, the daemon's event stream)
  // One line per guest packet counted as malformed (IcHostCounters), saying
  // what was wrong with it ("icmsgsize 64 larger than the 8 body bytes"):
  // for the owner's log. Numbers only, no bytes of the guest's.
  std::vector<std::string> dropped;
};

struct IcHostCounters {
  uint64_t requests_sent = 0;
  uint64_t responses = 0;
  uint64_t timeouts = 0;
  // Malformed or unexpected guest packets, dropped:
  uint64_t short_packets = 0;   // shorter than the 28-byte header
  uint64_t not_response = 0;    // icflags without RESPONSE
  uint64_t wrong_type = 0;      // icmsgtype neither NEGOTIATE nor the service's
  uint64_t bad_size = 0;        // icmsgsize larger than the bytes that came
  uint64_t bad_body = 0;        // a body too short for its type, undecodable or inconsistent
                                // (bad version list, wrong heartbeat sequence, bad KVP sizes)
  uint64_t unexpected = 0;      // no request outstanding, or another transaction id
  uint64_t malformed() const {
    return short_packets + not_response + wrong_type + bad_size + bad_body + unexpected;
  }
};

class IcHostCore {
 public:
  enum class State { kClosed, kNegotiating, kReady, kFailed };

  IcHostCore(const IcServiceInfo& service, absl::Duration request_timeout);

  const IcServiceInfo& service() const { return service_; }
  State state() const { return state_; }
  std::optional<NegotiatedVersions> negotiated() const { return negotiated_; }
  // Why negotiation failed (state kFailed).
  const std::string& failure() const { return failure_; }
  const IcHostCounters& counters() const { return counters_; }
  // Requests queued or outstanding.
  size_t pending() const { return pending_.size(); }

  // The channel opened: restarts negotiation (pending requests stay queued).
  void Open(absl::Time now, IcOutput& out);
  // The channel closed: every pending request finishes UNAVAILABLE.
  void Close(IcOutput& out);
  // Queues a request of `type` with `body`; returns its op id. Finishes at
  // once with FAILED_PRECONDITION when negotiation failed.
  uint64_t Submit(uint16_t type, Bytes body, absl::Time now, IcOutput& out);
  // One packet from the guest.
  void OnPacket(std::span<const uint8_t> packet, absl::Time now, IcOutput& out);
  // Request timeouts.
  void Tick(absl::Time now, IcOutput& out);
  // A service found the body of an answer unusable: counted (bad_body) and
  // `what` added to out.dropped.
  void NoteMalformedBody(std::string what, IcOutput& out) {
    ++counters_.bad_body;
    out.dropped.push_back(std::move(what));
  }

  // The protocol state (negotiation, transaction ids, queued and
  // outstanding requests) as bytes; Restore puts it back, treating
  // outstanding requests as sent at `now`. INVALID_ARGUMENT for bad bytes.
  std::string Save() const;
  absl::Status Restore(std::string_view saved, absl::Time now);

 private:
  struct Pending {
    uint64_t op = 0;
    uint16_t type = 0;
    Bytes body;
    bool sent = false;
    uint8_t transaction_id = 0;
    absl::Time sent_at;
  };
  void SendNegotiate(absl::Time now, IcOutput& out);
  void Pump(absl::Time now, IcOutput& out);
  void FailAll(const absl::Status& status, IcOutput& out);
  void OnNegotiateAnswer(const IcMessage& m, IcOutput& out);

  const IcServiceInfo service_;
  const absl::Duration request_timeout_;
  State state_ = State::kClosed;
  std::optional<NegotiatedVersions> negotiated_;
  std::string failure_;
  std::deque<Pending> pending_;     // front is outstanding when sent
  std::optional<Pending> negotiate_;  // the outstanding NEGOTIATE
  uint64_t next_op_ = 1;
  uint8_t next_transaction_ = 1;
  IcHostCounters counters_;
};

}  // namespace kmcl::devices::ic

#endif  // KMCLD_DEVICES_IC_HOST_CORE_H_
