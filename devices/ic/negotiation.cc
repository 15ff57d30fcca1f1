#include "devices/ic/negotiation.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kmcl::devices::ic {

namespace {

const std::vector<IcVersion> kFramework = {{3, 0}, {1, 0}};  // UTIL_FW_VERSION, UTIL_WS2K8_FW_VERSION

IcServiceInfo Make(IcService s, std::string name, const Guid& type, uint16_t msg,
                   std::vector<IcVersion> message) {
  return IcServiceInfo{s, std::move(name), type, msg, kFramework, message, kFramework, message};
}

std::string Join(std::span<const IcVersion> versions) {
  return absl::StrJoin(versions, ", ",
                       [](std::string* out, const IcVersion& v) { out->append(v.ToString()); });
}

bool Contains(std::span<const IcVersion> list, IcVersion v) {
  return std::find(list.begin(), list.end(), v) != list.end();
}

}  // namespace

const IcServiceInfo& ServiceInfo(IcService service) {
  static const IcServiceInfo* const kInfos = new IcServiceInfo[4]{
      Make(IcService::kHeartbeat, "heartbeat", kHeartbeatInterfaceType, kMsgHeartbeat, {{3, 0}, {1, 0}}),
      Make(IcService::kShutdown, "shutdown", kShutdownInterfaceType, kMsgShutdown,
           {{3, 2}, {3, 1}, {3, 0}, {1, 0}}),
      Make(IcService::kTimeSync, "timesync", kTimeSyncInterfaceType, kMsgTimeSync, {{4, 0}, {3, 0}, {1, 0}}),
      Make(IcService::kKvp, "kvp", kKvpInterfaceType, kMsgKvpExchange, {{4, 0}, {3, 0}, {1, 0}}),
  };
  return kInfos[static_cast<int>(service)];
}

std::optional<IcService> ServiceForType(const Guid& interface_type) {
  for (IcService s : {IcService::kHeartbeat, IcService::kShutdown, IcService::kTimeSync, IcService::kKvp}) {
    if (ServiceInfo(s).interface_type == interface_type) return s;
  }
  return std::nullopt;
}

std::optional<IcVersion> FirstCommon(std::span<const IcVersion> preferred,
                                     std::span<const IcVersion> offered) {
  for (const IcVersion& v : preferred) {
    if (Contains(offered, v)) return v;
  }
  return std::nullopt;
}

std::optional<NegotiatedVersions> ChooseVersions(const NegotiateBody& offered,
                                                 std::span<const IcVersion> framework,
                                                 std::span<const IcVersion> message) {
  std::optional<IcVersion> fw = FirstCommon(framework, offered.framework);
  if (!fw) return std::nullopt;
  std::optional<IcVersion> msg = FirstCommon(message, offered.message);
  if (!msg) return std::nullopt;
  return NegotiatedVersions{*fw, *msg};
}

absl::StatusOr<NegotiatedVersions> AcceptNegotiateAnswer(const NegotiateBody& answer,
                                                         uint32_t status,
                                                         std::span<const IcVersion> framework,
                                                         std::span<const IcVersion> message) {
  if (answer.framework.empty() || answer.message.empty() || status != kHvSOk) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no common version: the host offers framework {", Join(framework), "} and message {",
        Join(message), "}; the guest answered with status 0x", absl::Hex(status, absl::kZeroPad8),
        " and framework {", Join(answer.framework), "} message {", Join(answer.message), "}"));
  }
  if (answer.framework.size() != 1 || answer.message.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("negotiate answer lists ", answer.framework.size(),
                                                   " framework and ", answer.message.size(),
                                                   " message versions; exactly one each expected"));
  }
  if (!Contains(framework, answer.framework[0]) || !Contains(message, answer.message[0])) {
    return absl::InvalidArgumentError(absl::StrCat("negotiate answer picks framework ",
                                                   answer.framework[0].ToString(), " message ",
                                                   answer.message[0].ToString(), ", which the host never offered"));
  }
  return NegotiatedVersions{answer.framework[0], answer.message[0]};
}

}  // namespace kmcl::devices::ic
