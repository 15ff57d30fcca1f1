// kmcld: the host-side daemon that owns emulated VMBus channels through
// kmcl_core and serves them over gRPC (package kmcl.v1).
//
// With no flags it listens on a Unix domain socket in its runtime folder and
// on 127.0.0.1:50551, prints where on stderr, and runs until SIGINT or
// SIGTERM, on which it stops accepting calls, lets running calls finish for a
// grace period, and exits 0.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "daemon/demo_traffic.h"
#include "daemon/kmcl_services.h"
#include "kmcl_core/partition.h"
#include "daemon/listen_options.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"

ABSL_FLAG(std::string, listen, kmcld::kDefaultTcpAddress,
          "TCP address (host:port) to serve gRPC on; empty disables TCP. "
          "Port 0 picks a free port (printed on stderr).");
ABSL_FLAG(std::string, uds, "",
          "Unix domain socket path; empty means <runtime_dir>/kmcld.sock, "
          "'none' disables it.");
ABSL_FLAG(std::string, runtime_dir, "",
          "Folder for the socket (created 0700); empty means $XDG_RUNTIME_DIR/kmcld, "
          "/run/kmcld for root, else /tmp/kmcld-<uid>.");
ABSL_FLAG(int, shutdown_grace_ms, 5000,
          "On SIGINT/SIGTERM, how long running calls may take before they are cancelled.");
ABSL_FLAG(bool, demo, false,
          "Run demo traffic: an echo VSP and an echo VSC on the default partition, "
          "echoing packets every --demo_interval_ms and reporting on stderr.");
ABSL_FLAG(int, demo_interval_ms, 2000, "Pause between demo rounds.");
ABSL_FLAG(int64_t, demo_packets, 20000, "Packets echoed per demo round.");

namespace {

// The address a client should dial for `requested` once the server picked
// `port` (which differs from the requested one when that was 0).
std::string BoundAddress(const std::string& requested, int port) {
  return absl::StrCat(requested.substr(0, requested.rfind(':')), ":", port);
}

int Run() {
  // Block the shutdown signals in every thread (gRPC's included, which
  // inherit the mask); a dedicated thread receives them with sigwait.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  if (absl::GetFlag(FLAGS_shutdown_grace_ms) < 0 || absl::GetFlag(FLAGS_demo_interval_ms) < 0 ||
      absl::GetFlag(FLAGS_demo_packets) < 1) {
    absl::FPrintF(stderr,
                  "kmcld: --shutdown_grace_ms and --demo_interval_ms must be >= 0 and "
                  "--demo_packets >= 1\n");
    return 1;
  }

  kmcld::ListenOptions requested;
  requested.tcp_address = absl::GetFlag(FLAGS_listen);
  requested.uds_path = absl::GetFlag(FLAGS_uds);
  requested.runtime_dir = absl::GetFlag(FLAGS_runtime_dir);
  absl::StatusOr<kmcld::ListenOptions> options = kmcld::ResolveListenOptions(requested);
  if (!options.ok()) {
    absl::FPrintF(stderr, "kmcld: %s\n", options.status().message());
    return 1;
  }
  if (options->tcp_address.empty() && options->uds_path.empty()) {
    absl::FPrintF(stderr, "kmcld: nothing to listen on (--listen and --uds both disabled)\n");
    return 1;
  }

  // The embedded default partition: an emulated VM with 4 GiB of lazily
  // allocated guest memory and a guest VMBus client at VTL 0.
  absl::StatusOr<std::unique_ptr<kmcl::Partition>> partition = kmcl::Partition::Create({});
  if (!partition.ok()) {
    absl::FPrintF(stderr, "kmcld: cannot create the default partition: %s\n",
                  partition.status().message());
    return 1;
  }
  absl::FPrintF(stderr, "kmcld: partition %s: %d MiB of guest memory, VMBus %d.%d, handle 0x%x\n",
                (*partition)->id(), (*partition)->memory().size_bytes() >> 20,
                *(*partition)->NegotiatedVersion(0) >> 16, *(*partition)->NegotiatedVersion(0) & 0xFFFF,
                (*partition)->vmbus_handle());
  kmcld::DemoTraffic demo;
  if (absl::GetFlag(FLAGS_demo)) {
    absl::Status s = demo.Start(**partition, absl::GetFlag(FLAGS_demo_packets),
                                absl::Milliseconds(absl::GetFlag(FLAGS_demo_interval_ms)));
    if (!s.ok()) {
      absl::FPrintF(stderr, "kmcld: %s\n", s.message());
      return 1;
    }
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int tcp_port = 0;
  if (!options->tcp_address.empty()) {
    builder.AddListeningPort(options->tcp_address, grpc::InsecureServerCredentials(),
                             &tcp_port);
  }
  if (!options->uds_path.empty()) {
    builder.AddListeningPort("unix:" + options->uds_path, grpc::InsecureServerCredentials());
  }
  kmcld::KmclServices services;
  services.RegisterAll(builder);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || (!options->tcp_address.empty() && tcp_port == 0)) {
    absl::FPrintF(stderr, "kmcld: cannot listen on %s%s%s\n", options->tcp_address,
                  options->tcp_address.empty() || options->uds_path.empty() ? "" : " and ",
                  options->uds_path.empty() ? "" : "unix:" + options->uds_path);
    return 1;
  }
  server->GetHealthCheckService()->SetServingStatus(true);
  if (!options->tcp_address.empty()) {
    absl::FPrintF(stderr, "kmcld: listening on tcp %s\n",
                  BoundAddress(options->tcp_address, tcp_port));
  }
  if (!options->uds_path.empty()) {
    absl::FPrintF(stderr, "kmcld: listening on unix %s\n", options->uds_path);
  }
  absl::FPrintF(stderr, "kmcld: ready\n");

  std::thread signal_thread([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    absl::FPrintF(stderr, "kmcld: %s received, shutting down\n",
                  sig == SIGINT ? "SIGINT" : "SIGTERM");
    server->GetHealthCheckService()->SetServingStatus(false);
    server->Shutdown(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(absl::GetFlag(FLAGS_shutdown_grace_ms)));
  });
  server->Wait();
  signal_thread.join();
  demo.Stop();
  if (!options->uds_path.empty()) ::unlink(options->uds_path.c_str());
  absl::FPrintF(stderr, "kmcld: stopped\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "kmcld: serves emulated VMBus channels (KMCL) over gRPC.\n"
      "Usage: kmcld [--listen=HOST:PORT] [--uds=PATH|none] [--runtime_dir=DIR]");
  absl::ParseCommandLine(argc, argv);
  return Run();
}
