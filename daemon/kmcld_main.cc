// kmcld: the host-side daemon that owns emulated VMBus channels through
// kmcl_core and serves them over gRPC (package kmcl.v1).
//
// With no flags it listens on an owner-only Unix domain socket in its runtime
// folder (TCP needs mutual TLS, or --insecure_plaintext_tcp on loopback:
// docs/security.md), prints where on stderr, and runs until SIGINT or
// SIGTERM, on which it stops accepting calls, lets running calls finish for a
// grace period, and exits 0. SIGHUP re-reads the --policy file.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "daemon/config.h"
#include "daemon/demo_traffic.h"
#include "daemon/device_demo.h"
#include "daemon/device_metrics.h"
#include "daemon/device_service.h"
#include "daemon/kmcl_services.h"
#include "daemon/listen_options.h"
#include "daemon/log.h"
#include "daemon/metrics/collector.h"
#include "daemon/metrics/http_server.h"
#include "daemon/metrics/sd_entry.h"
#include "daemon/security/flags.h"
#include "daemon/security/server_security.h"
#include "google/protobuf/stubs/logging.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "kmcl_core/base/mutex.h"
#include "kmcl_core/bus/partition.h"

ABSL_FLAG(std::string, listen, "",
          "TCP address (host:port) to serve gRPC on, with mutual TLS (--tls_cert, --tls_key, "
          "--tls_ca, --policy) or, on loopback only, --insecure_plaintext_tcp; empty (the default) "
          "serves the Unix socket alone. Port 0 picks a free port (printed on stderr).");
ABSL_FLAG(std::string, uds, "",
          "Unix domain socket path; empty means <runtime_dir>/kmcld.sock, "
          "'none' disables it.");
ABSL_FLAG(std::string, runtime_dir, "",
          "Folder for the socket (created 0700); empty means $XDG_RUNTIME_DIR/kmcld, "
          "/run/kmcld for root, else /tmp/kmcld-<uid>.");
ABSL_FLAG(int, shutdown_grace_ms, 5000,
          "On SIGINT/SIGTERM, how long running calls may take before they are cancelled.");
ABSL_FLAG(bool, demo, false,
          "Run in-process demo traffic: the C echo VSP and VSC on the default partition, "
          "echoing packets every --demo_interval_ms and reporting on stderr. (The network "
          "demo is examples/remote:remote_demo, which make run starts.)");
ABSL_FLAG(int, demo_interval_ms, 2000, "Pause between demo rounds.");
ABSL_FLAG(bool, demo_devices, false,
          "Every --demo_interval_ms, report the default partition's devices on stderr: the heartbeat "
          "sequence, a KVP round trip and a time sample (--demo implies it; make run sets it).");
ABSL_FLAG(int64_t, demo_packets, 20000, "Packets echoed per demo round.");
ABSL_FLAG(std::string, devices, "default",
          "Built-in devices of the default partition (docs/devices.md): default (all four), none, "
          "or a comma-separated list of heartbeat, shutdown, timesync, kvp.");
ABSL_FLAG(bool, devices_guest, true,
          "Also run kmcld's emulated Linux-like guest for the default partition's devices, so a "
          "tool sees a live guest; false leaves the guest role to a remote tool.");
ABSL_FLAG(uint32_t, device_heartbeat_timeout_ms, 5000,
          "A device guest whose last heartbeat answer is older than this is reported unresponsive.");
ABSL_FLAG(std::string, config, "",
          "Optional configuration file in protobuf text format (daemon/config.proto, "
          "docs/configuration.md). Flags given on the command line win over it.");
ABSL_FLAG(std::string, metrics_listen, "",
          "Serve Prometheus metrics at http://ADDRESS/metrics: HOST:PORT, or PORT alone for "
          "loopback (127.0.0.1); port 0 picks a free port (printed on stderr). Empty (the "
          "default) serves none. Plain HTTP and read-only: keep it on loopback or a trusted "
          "network (docs/operations.md).");
ABSL_FLAG(bool, metrics_channel_labels, true,
          "Label channel series by channel (channel, interface_type, friendly_name); false sums "
          "them per partition and role, for fleets whose series count matters.");
ABSL_FLAG(std::string, log_format, "text",
          "text: 'kmcld: message key=value' lines for people; json: one JSON object per line "
          "(time, level, msg, and fields such as partition and channel) for log shippers.");
ABSL_FLAG(std::string, log_level, "info", "Lowest level logged: debug, info, warning or error.");
ABSL_FLAG(bool, print_sd_entry, false,
          "Print kmcld's entry for a Prometheus file_sd inventory (the file kmclctl reads with "
          "--targets-file) from --listen/--uds and --metrics_listen, and exit. With port 0 the "
          "entry is only known at start-up: kmcld logs it then.");
// Limits; each also a field of the config file (0 there keeps the default).
ABSL_FLAG(uint32_t, max_message_bytes, 16 << 20, "Largest gRPC message kmcld accepts or sends.");
ABSL_FLAG(uint32_t, max_streams_per_client, 256, "Open Attach/WatchEvents streams per connection.");
ABSL_FLAG(uint32_t, packets_in_flight_per_stream, 256,
          "Send credits per attached endpoint: sends kmcld holds for a tool.");
ABSL_FLAG(uint32_t, deliveries_in_flight, 1024,
          "Delivered-but-uncompleted packets per endpoint (caps the transaction quota).");
ABSL_FLAG(uint64_t, guest_buffer_bytes_per_partition, uint64_t{1} << 30,
          "Guest buffers (AllocateGuestBuffer) per partition, in bytes.");
ABSL_FLAG(uint32_t, max_partitions, 64, "Partitions per daemon.");
ABSL_FLAG(uint32_t, event_retention, 65536, "Events kept for WatchEvents resumption.");
ABSL_FLAG(uint32_t, attach_linger_ms, 30000,
          "How long an endpoint keeps a vanished tool's deliveries and completions.");
ABSL_FLAG(uint32_t, lease_idle_ms, 60000, "A GPADL lease unused this long is unmapped.");
ABSL_FLAG(uint64_t, max_restore_bytes, uint64_t{1} << 30, "Largest blob a restore accepts.");
ABSL_FLAG(uint32_t, max_blocking_calls, 256, "Blocking calls (pause, close, ...) at once.");

namespace {

// The effective configuration: defaults, the --config file, then flags
// given on the command line.
absl::StatusOr<kmcld::config::KmcldConfig> Configure() {
  kmcld::config::KmcldConfig c = kmcld::DefaultConfig();
  if (!absl::GetFlag(FLAGS_config).empty()) {
    auto loaded = kmcld::LoadConfigFile(absl::GetFlag(FLAGS_config));
    if (!loaded.ok()) return loaded.status();
    c = *loaded;
  }
  // A flag counts as given when it differs from its default (this Abseil
  // does not expose IsSpecifiedOnCommandLine).
  auto given = [](absl::string_view name) {
    const absl::CommandLineFlag* f = absl::FindCommandLineFlag(name);
    return f != nullptr && f->CurrentValue() != f->DefaultValue();
  };
#define KMCLD_FLAG_OVERRIDES(name) \
  if (given(#name)) c.set_##name(absl::GetFlag(FLAGS_##name))
  KMCLD_FLAG_OVERRIDES(max_message_bytes);
  KMCLD_FLAG_OVERRIDES(max_streams_per_client);
  KMCLD_FLAG_OVERRIDES(packets_in_flight_per_stream);
  KMCLD_FLAG_OVERRIDES(deliveries_in_flight);
  KMCLD_FLAG_OVERRIDES(guest_buffer_bytes_per_partition);
  KMCLD_FLAG_OVERRIDES(max_partitions);
  KMCLD_FLAG_OVERRIDES(event_retention);
  KMCLD_FLAG_OVERRIDES(attach_linger_ms);
  KMCLD_FLAG_OVERRIDES(lease_idle_ms);
  KMCLD_FLAG_OVERRIDES(max_restore_bytes);
  KMCLD_FLAG_OVERRIDES(max_blocking_calls);
  KMCLD_FLAG_OVERRIDES(device_heartbeat_timeout_ms);
#undef KMCLD_FLAG_OVERRIDES
  if (given("devices")) {
    c.mutable_default_partition()->clear_devices();
    for (absl::string_view name : absl::StrSplit(absl::GetFlag(FLAGS_devices), ',', absl::SkipEmpty())) {
      c.mutable_default_partition()->add_devices(std::string(name));
    }
  }
  if (given("devices_guest")) c.mutable_default_partition()->set_emulated_guest(absl::GetFlag(FLAGS_devices_guest));
  if (given("metrics_listen")) c.set_metrics_listen(absl::GetFlag(FLAGS_metrics_listen));
  if (given("metrics_channel_labels")) c.set_metrics_channel_labels(absl::GetFlag(FLAGS_metrics_channel_labels));
  if (given("log_level")) c.set_log_level(absl::GetFlag(FLAGS_log_level));
  if (given("log_format")) c.set_log_format(absl::GetFlag(FLAGS_log_format));
  if (given("listen") || c.listen().empty()) c.set_listen(absl::GetFlag(FLAGS_listen));
  if (given("uds") || c.uds().empty()) c.set_uds(absl::GetFlag(FLAGS_uds));
  if (absl::Status s = kmcld::ValidateConfig(c); !s.ok()) return s;
  return c;
}

// Protobuf's own log lines (e.g. one per invalid UTF-8 string field while
// parsing a hostile blob) would let any client flood kmcld's stderr: keep
// at most a few per minute, counting the rest.
void RateLimitedProtobufLog(google::protobuf::LogLevel level, const char* filename, int line,
                            const std::string& message) {
  static kmcld::log::Limiter limiter(5);
  uint64_t dropped = 0;
  if (level != google::protobuf::LOGLEVEL_FATAL && !limiter.Admit(&dropped)) return;
  kmcld::log::Warn(absl::StrFormat("protobuf %s:%d: %s", filename, line, message),
                   {{"dropped_before", dropped}});
}

// The address a client should dial for `requested` once the server picked
// `port` (which differs from the requested one when that was 0).
std::string BoundAddress(const std::string& requested, int port) {
  return absl::StrCat(requested.substr(0, requested.rfind(':')), ":", port);
}

// A numeric flag and its accepted range, inclusive.
struct FlagRange {
  const char* name;
  int64_t value, min, max;
};
constexpr int64_t kMaxFlagMs = 86'400'000;  // a day
constexpr int64_t kMaxDemoPackets = 1'000'000'000;

int Run() {
  // Block the shutdown signals in every thread (gRPC's included, which
  // inherit the mask); a dedicated thread receives them with sigwait.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<kmcld::log::Format> log_format = kmcld::log::ParseFormat(absl::GetFlag(FLAGS_log_format));
  absl::StatusOr<kmcld::log::Level> log_level = kmcld::log::ParseLevel(absl::GetFlag(FLAGS_log_level));
  if (!log_format.ok() || !log_level.ok()) {
    kmcld::log::Error(!log_format.ok() ? log_format.status().message() : log_level.status().message());
    return 1;
  }
  kmcld::log::Init(*log_format, *log_level);

  for (const FlagRange& f : {
           FlagRange{"shutdown_grace_ms", absl::GetFlag(FLAGS_shutdown_grace_ms), 0, kMaxFlagMs},
           FlagRange{"demo_interval_ms", absl::GetFlag(FLAGS_demo_interval_ms), 0, kMaxFlagMs},
           FlagRange{"demo_packets", absl::GetFlag(FLAGS_demo_packets), 1, kMaxDemoPackets}}) {
    if (f.value < f.min || f.value > f.max) {
      kmcld::log::Error(absl::StrFormat("--%s=%d is out of range: it must be >= %d and <= %d",
                                        f.name, f.value, f.min, f.max));
      return 1;
    }
  }

  absl::StatusOr<kmcld::config::KmcldConfig> config = Configure();
  if (!config.ok()) {
    kmcld::log::Error(absl::StrFormat("configuration: %s", config.status().message()));
    return 1;
  }
  // The file may choose the log format and level (flags given win).
  kmcld::log::Init(*kmcld::log::ParseFormat(config->log_format()), *kmcld::log::ParseLevel(config->log_level()));
  google::protobuf::SetLogHandler(&RateLimitedProtobufLog);

  kmcld::ListenOptions requested;
  requested.tcp_address = config->listen();
  requested.uds_path = config->uds();
  requested.runtime_dir = absl::GetFlag(FLAGS_runtime_dir);
  absl::StatusOr<kmcld::ListenOptions> options = kmcld::ResolveListenOptions(requested);
  if (!options.ok()) {
    kmcld::log::Error(options.status().message());
    return 1;
  }
  if (options->tcp_address.empty() && options->uds_path.empty()) {
    kmcld::log::Error("nothing to listen on (--listen and --uds both disabled)");
    return 1;
  }
  const std::string metrics_listen = config->metrics_listen();  // validated by Configure
  absl::StatusOr<std::unique_ptr<kmcld::security::ServerSecurity>> security =
      kmcld::security::ServerSecurity::Create(
          kmcld::security::SecurityOptionsFromFlags(config->security()), *options);
  if (!security.ok()) {
    kmcld::log::Error(absl::StrFormat("security: %s", security.status().message()));
    return 1;
  }
  // Only a configuration kmcld would start with has an entry: the whole
  // configuration, security included, is checked first.
  if (absl::GetFlag(FLAGS_print_sd_entry)) {
    const std::string grpc_target =
        options->tcp_address.empty() ? "unix:" + options->uds_path : options->tcp_address;
    auto metrics_hp = kmcld::metrics::ParseHostPort(metrics_listen);
    if (absl::EndsWith(grpc_target, ":0") || (metrics_hp.ok() && metrics_hp->second == 0)) {
      kmcld::log::Error("--print_sd_entry: port 0 is chosen at start-up; kmcld logs "
                            "its entry then");
      return 1;
    }
    const std::string metrics_address =
        metrics_hp.ok() ? absl::StrCat(metrics_hp->first.find(':') != std::string::npos
                                           ? absl::StrCat("[", metrics_hp->first, "]")
                                           : metrics_hp->first,
                                       ":", metrics_hp->second)
                        : "";
    absl::PrintF("%s\n", kmcld::metrics::SdEntryJson(grpc_target, metrics_address));
    return 0;
  }

  // The embedded default partition: an emulated VM with 4 GiB of lazily
  // allocated guest memory and a guest VMBus client at VTL 0.
  absl::StatusOr<std::unique_ptr<kmcl::Partition>> partition = kmcl::Partition::Create({});
  if (!partition.ok()) {
    kmcld::log::Error(absl::StrFormat("cannot create the default partition: %s", partition.status().message()));
    return 1;
  }
  kmcld::log::Info(absl::StrFormat("partition %s: %d MiB of guest memory, VMBus %d.%d, handle 0x%x", (*partition)->id(), (*partition)->memory().size_bytes() >> 20,
                *(*partition)->NegotiatedVersion(0) >> 16, *(*partition)->NegotiatedVersion(0) & 0xFFFF,
                (*partition)->vmbus_handle()));
  kmcld::KmclServices services(*config, &(*security)->authorizer());
  absl::StatusOr<std::shared_ptr<kmcld::PartitionEntry>> entry =
      services.registry().AddPartition(*std::move(partition));
  if (!entry.ok()) {
    kmcld::log::Error(entry.status().message());
    return 1;
  }
  kmcld::DemoTraffic demo;
  if (absl::GetFlag(FLAGS_demo)) {
    (*entry)->Pin();
    absl::Status s = demo.Start((*entry)->partition(), absl::GetFlag(FLAGS_demo_packets),
                                absl::Milliseconds(absl::GetFlag(FLAGS_demo_interval_ms)));
    if (!s.ok()) {
      kmcld::log::Error(s.message());
      return 1;
    }
  }

  const auto& device_names = config->default_partition().devices();
  absl::StatusOr<std::vector<kmcl::devices::ic::IcService>> device_list =
      kmcld::ParseDeviceNames({device_names.begin(), device_names.end()});  // validated by Configure
  if (device_list.ok() && !device_list->empty()) {
    kmcld::DeviceOptions d;
    d.services = *device_list;
    d.emulated_guest = config->default_partition().emulated_guest();
    d.host.heartbeat_timeout = absl::Milliseconds(config->device_heartbeat_timeout_ms());
    if (absl::Status s = services.registry().AttachDevices(*entry, d); !s.ok()) {
      kmcld::log::Error(absl::StrFormat("devices: %s", s.message()));
      return 1;
    }
    kmcld::log::Info(absl::StrFormat("partition %s: devices %s%s", (*entry)->id(),
                  absl::StrJoin(kmcld::DeviceNames(d.services), ","),
                  d.emulated_guest ? " with the emulated guest" : " (the guest role is left to a remote tool)"));
  }
  kmcld::DeviceService device_service(services.registry());
  device_service.set_authorizer(&(*security)->authorizer());
  kmcld::DeviceDemo device_demo;
  if ((absl::GetFlag(FLAGS_demo) || absl::GetFlag(FLAGS_demo_devices)) && (*entry)->devices() != nullptr) {
    device_demo.Start(services.registry(), (*entry)->id(),
                      absl::Milliseconds(absl::GetFlag(FLAGS_demo_interval_ms)));
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int tcp_port = 0;
  if (absl::Status s = (*security)->AddListeners(builder, &tcp_port); !s.ok()) {
    kmcld::log::Error(s.message());
    return 1;
  }
  services.RegisterAll(builder);
  builder.RegisterService(&device_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || (!options->tcp_address.empty() && tcp_port == 0)) {
    kmcld::log::Error(absl::StrFormat("cannot listen on %s%s%s", options->tcp_address,
                  options->tcp_address.empty() || options->uds_path.empty() ? "" : " and ",
                  options->uds_path.empty() ? "" : "unix:" + options->uds_path));
    return 1;
  }
  if (absl::Status s = (*security)->SecureSocket(); !s.ok()) {
    kmcld::log::Error(s.message());
    return 1;
  }
  (*security)->StartAccepting(server.get());
  server->GetHealthCheckService()->SetServingStatus(true);
  if (!options->tcp_address.empty()) {
    kmcld::log::Info(absl::StrFormat("tcp is %s", (*security)->tcp_mode()));
    kmcld::log::Info(absl::StrFormat("listening on tcp %s", BoundAddress(options->tcp_address, tcp_port)));
  }
  if (!options->uds_path.empty()) {
    kmcld::log::Info(absl::StrFormat("listening on unix %s", options->uds_path));
  }
  kmcld::metrics::MetricsCollector collector(
      services.registry(), services.leases(), services.event_log(), &services.rpc_metrics(),
      {.channel_labels = config->metrics_channel_labels()});
  collector.AddSource(
      [&services](kmcld::metrics::Exposition& e) { kmcld::CollectDeviceMetrics(services.registry(), e); });
  std::unique_ptr<kmcld::metrics::MetricsServer> metrics_server;
  if (!metrics_listen.empty()) {
    auto started =
        kmcld::metrics::MetricsServer::Start(metrics_listen, [&collector] { return collector.Render(); });
    if (!started.ok()) {
      kmcld::log::Error(started.status().message());
      (*security)->StopAccepting();
      server->Shutdown();
      services.Shutdown();
      return 1;
    }
    metrics_server = *std::move(started);
    kmcld::log::Info(absl::StrFormat("listening on metrics %s", metrics_server->address()));
  }
  kmcld::log::Info(absl::StrFormat("file_sd entry %s", kmcld::metrics::SdEntryJson(
                    options->tcp_address.empty() ? "unix:" + options->uds_path
                                                 : BoundAddress(options->tcp_address, tcp_port),
                    metrics_server != nullptr ? metrics_server->address() : "")));
  kmcld::log::Info("ready");

  std::thread signal_thread([&] {
    // SIGHUP re-reads the policy and the TLS files; the TLS files are also
    // re-read every --tls_refresh_s (a renewal without a signal).
    auto refresh_certificates = [&](absl::string_view why) {
      absl::StatusOr<bool> changed = (*security)->RefreshCertificates();
      if (!changed.ok()) {
        kmcld::log::Warn(absl::StrFormat("%s: certificates kept: %s", why, changed.status().message()));
      } else if (*changed) {
        kmcld::log::Info(absl::StrFormat("%s: certificates reloaded", why));
      }
    };
    const uint32_t refresh_s = (*security)->cert_refresh_s();
    int sig = 0;
    while (true) {
      if (refresh_s == 0) {
        if (sigwait(&signals, &sig) != 0) break;
      } else {
        const timespec timeout = {static_cast<time_t>(refresh_s), 0};
        sig = sigtimedwait(&signals, nullptr, &timeout);
        if (sig < 0) {
          if (errno == EAGAIN) refresh_certificates("timer");
          continue;
        }
      }
      if (sig != SIGHUP) break;
      absl::Status s = (*security)->Reload();
      if (s.ok()) {
        kmcld::log::Info("SIGHUP: policy reloaded");
      } else {
        kmcld::log::Warn(absl::StrFormat("SIGHUP: %s", s.message()));
      }
      refresh_certificates("SIGHUP");
    }
    kmcld::log::Info(absl::StrFormat("%s received, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM"));
    server->GetHealthCheckService()->SetServingStatus(false);
    // Streams end and held deliveries complete, so that calls blocked on a
    // tool (a pause waiting for completions) finish within the grace.
    // They end UNAVAILABLE, not OK, so a tool tells a shutdown from the end
    // of its channel (Attach) or of the backlog (WatchEvents).
    const absl::Status shutting_down = absl::UnavailableError("kmcld is shutting down");
    services.registry().log().Close(shutting_down);
    services.registry().ReleaseAllStreams(shutting_down);
    (*security)->StopAccepting();
    server->Shutdown(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(absl::GetFlag(FLAGS_shutdown_grace_ms)));
  });
  server->Wait();
  signal_thread.join();
  if (metrics_server != nullptr) metrics_server->Stop();  // before the registry goes
  demo.Stop();
  device_demo.Stop();
  device_service.Drain();
  services.Shutdown();  // the partitions, their devices first
  if (!options->uds_path.empty()) ::unlink(options->uds_path.c_str());
  kmcld::log::Info("stopped");
  return 0;
}

// --help and --helpshort list every flag the daemon defines (this file,
// daemon/security/flags.cc, ...), not only this file's: absl's default keeps
// the flags of <program>_main.cc alone.
bool IsDaemonFlagFile(absl::string_view file) { return absl::StrContains(file, "daemon/"); }

}  // namespace

int main(int argc, char** argv) {
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = IsDaemonFlagFile;
  usage.contains_helpshort_flags = IsDaemonFlagFile;
  absl::SetFlagsUsageConfig(usage);
  // absl prints "kmcld: " before this message: it starts with what kmcld is.
  absl::SetProgramUsageMessage(
      "serves emulated VMBus channels (KMCL) over gRPC.\n"
      "Usage: kmcld [--listen=HOST:PORT] [--uds=PATH|none] [--runtime_dir=DIR] "
      "[--config=FILE] [--tls_cert=PEM --tls_key=PEM --tls_ca=PEM --policy=FILE] ...");
  absl::ParseCommandLine(argc, argv);
  kmcl::DisableAbslDeadlockDetectionInReleaseBuilds();
  return Run();
}
