// devices/ic/negotiation.h: IC version negotiation (ICMSGTYPE_NEGOTIATE) and
// the four services' identities: interface type GUID, message type, and the
// framework and message versions each side supports.
//
// The host offers every version it supports, highest first; the guest
// answers with exactly one framework and one message version, the highest
// it also supports, or with both counts zero when there is none (Linux:
// vmbus_prep_negotiate_resp in drivers/hv/channel_mgmt.c; version lists from
// drivers/hv/hv_util.c and hv_kvp.c). The host then uses the chosen versions
// in every later header.
//
// Threading: functions and constant tables only; safe from any thread.
#ifndef KMCLD_DEVICES_IC_NEGOTIATION_H_
#define KMCLD_DEVICES_IC_NEGOTIATION_H_

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "devices/ic/ic_wire.h"

namespace kmcl::devices::ic {

enum class IcService { kHeartbeat, kShutdown, kTimeSync, kKvp };

struct IcServiceInfo {
  IcService service;
  std::string name;            // "heartbeat", "shutdown", "timesync", "kvp"
  Guid interface_type;         // the offer's interface type
  uint16_t message_type;       // kMsgHeartbeat, ...
  // What kmcld's host VSP offers, highest first.
  std::vector<IcVersion> host_framework;
  std::vector<IcVersion> host_message;
  // What Linux's hv_utils accepts (the emulated guest's defaults), in its
  // order of preference.
  std::vector<IcVersion> guest_framework;
  std::vector<IcVersion> guest_message;
};

// heartbeat: framework {3.0, 1.0}, message {3.0, 1.0}
// shutdown:  framework {3.0, 1.0}, message {3.2, 3.1, 3.0, 1.0}
// timesync:  framework {3.0, 1.0}, message {4.0, 3.0, 1.0}
// kvp:       framework {3.0, 1.0}, message {4.0, 3.0, 1.0}
// (host and guest lists are the same by default; tests change them.)
const IcServiceInfo& ServiceInfo(IcService service);
// The service offered with `interface_type`, if any.
std::optional<IcService> ServiceForType(const Guid& interface_type);

struct NegotiatedVersions {
  IcVersion framework;
  IcVersion message;
  friend bool operator==(const NegotiatedVersions&, const NegotiatedVersions&) = default;
};

// The first version of `preferred` (a guest's list, highest first) that
// `offered` contains: the highest common one for descending lists.
std::optional<IcVersion> FirstCommon(std::span<const IcVersion> preferred,
                                     std::span<const IcVersion> offered);

// Guest side: the versions to answer a NEGOTIATE with; nullopt when no
// framework or no message version is common (the answer then lists none).
std::optional<NegotiatedVersions> ChooseVersions(const NegotiateBody& offered,
                                                 std::span<const IcVersion> framework,
                                                 std::span<const IcVersion> message);

// Host side: what the guest's answer means. The answer's `status` is the
// IC header's. FAILED_PRECONDITION "no common ... version" when the guest
// listed none (or failed the request); INVALID_ARGUMENT when it listed
// anything but one framework and one message version, or versions the host
// never offered.
absl::StatusOr<NegotiatedVersions> AcceptNegotiateAnswer(const NegotiateBody& answer,
                                                         uint32_t status,
                                                         std::span<const IcVersion> framework,
                                                         std::span<const IcVersion> message);

}  // namespace kmcl::devices::ic

#endif  // KMCLD_DEVICES_IC_NEGOTIATION_H_
