// kmclctl devices list | heartbeat: the built-in Hyper-V integration
// services of each partition (kmcl.v1.DeviceService, docs/devices.md).
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "clients/cpp/kmclctl/commands.h"
#include "proto/devices.grpc.pb.h"

namespace kmclctl {
namespace {

// One DeviceService call with the client's unary deadline.
template <typename Request, typename Response>
absl::StatusOr<Response> CallDevices(
    kc::Client& c,
    grpc::Status (v1::DeviceService::Stub::*method)(grpc::ClientContext*, const Request&, Response*),
    const Request& request, absl::string_view name) {
  v1::DeviceService::Stub stub(c.channel());
  std::unique_ptr<grpc::ClientContext> context = c.NewContext();
  Response response;
  grpc::Status status = (stub.*method)(context.get(), request, &response);
  if (!status.ok()) return kc::FromGrpc(status, name);
  return response;
}

uint64_t Malformed(const v1::DeviceCounters& c) {
  return c.short_packets() + c.not_response() + c.wrong_type() + c.bad_size() + c.bad_body() +
         c.unexpected();
}

Table DeviceTable(const v1::ListDevicesResponse& r) {
  Table t;
  t.columns = {{"PARTITION"}, {"DEVICE"},   {"NEGOTIATED"}, {"VERSION"},
               {"GUEST"},     {"REQUESTS"}, {"RESPONSES"},  {"TIMEOUTS"},
               {"MALFORMED"}, {"INTERFACE", true}, {"INSTANCE", true}, {"FAILURE", true}};
  for (const v1::Device& d : r.devices()) {
    t.Add({d.partition_id(), EnumSuffix(v1::DeviceKind_Name(d.kind()), "DEVICE_KIND_"),
           d.negotiated() ? "yes" : "no",
           d.negotiated() ? absl::StrCat(d.framework_version(), "/", d.message_version()) : "-",
           d.emulated_guest() ? "emulated" : "remote", absl::StrCat(d.counters().requests_sent()),
           absl::StrCat(d.counters().responses()), absl::StrCat(d.counters().timeouts()),
           absl::StrCat(Malformed(d.counters())), d.interface_type(), d.interface_instance(),
           d.negotiation_failure().empty() ? "-" : d.negotiation_failure()});
  }
  return t;
}

Table HeartbeatTable(const std::string& partition, const v1::HeartbeatState& h) {
  Table t;
  t.columns = {{"PARTITION"}, {"NEGOTIATED"}, {"ALIVE"}, {"LAST_SEQUENCE"}, {"ANSWERS"},
               {"LAST_ANSWER"}, {"UNRESPONSIVE_EVENTS", true}, {"TIMEOUT", true}};
  const std::string last =
      h.last_answer_unix_nanos() == 0
          ? "never"
          : absl::FormatTime(absl::RFC3339_sec, absl::FromUnixNanos(h.last_answer_unix_nanos()),
                             absl::UTCTimeZone());
  t.Add({partition, h.negotiated() ? "yes" : "no", h.alive() ? "yes" : "no",
         absl::StrCat(h.last_sequence()), absl::StrCat(h.answers()), last,
         absl::StrCat(h.unresponsive_events()), absl::StrCat(h.timeout_ms(), "ms")});
  return t;
}

}  // namespace

void RegisterDeviceCommands(CLI::App& app, Cli& cli) {
  CLI::App* group = AddCommand(
      app, "devices", "The built-in integration services (heartbeat, shutdown, time sync, KVP)");
  group->require_subcommand(1);

  auto partition = std::make_shared<std::string>();
  CLI::App* list = AddCommand(*group, "list", "List each partition's devices and their counters");
  list->add_option("--partition", *partition, "only this partition (default: all)");
  list->callback([&cli, partition] {
    cli.action = [&cli, partition] {
      return FanOut(cli, [partition](kc::Client& c) -> absl::StatusOr<Output> {
        v1::ListDevicesRequest req;
        req.set_partition_id(*partition);
        auto r = CallDevices(c, &v1::DeviceService::Stub::ListDevices, req, "ListDevices");
        if (!r.ok()) return r.status();
        auto message = std::make_shared<v1::ListDevicesResponse>(*std::move(r));
        Table table = DeviceTable(*message);
        return Output{message, std::move(table)};
      });
    };
  });

  auto hb_partition = std::make_shared<std::string>("default");
  CLI::App* heartbeat =
      AddCommand(*group, "heartbeat", "A partition's heartbeat: is its guest alive");
  heartbeat->add_option("partition", *hb_partition, "partition id (default: default)");
  heartbeat->callback([&cli, hb_partition] {
    cli.action = [&cli, hb_partition] {
      return FanOut(cli, [hb_partition](kc::Client& c) -> absl::StatusOr<Output> {
        v1::GetHeartbeatRequest req;
        req.set_partition_id(*hb_partition);
        auto r = CallDevices(c, &v1::DeviceService::Stub::GetHeartbeat, req, "GetHeartbeat");
        if (!r.ok()) return r.status();
        auto message = std::make_shared<v1::HeartbeatState>(*std::move(r));
        Table table = HeartbeatTable(*hb_partition, *message);
        return Output{message, std::move(table)};
      });
    };
  });
}

}  // namespace kmclctl
