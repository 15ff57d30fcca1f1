// kmclctl: a kubectl-like command-line tool for kmcld, for one host or a
// fleet. `kmclctl --help` lists the commands; docs/kmclctl.md describes
// the output formats, the targets file and the exit codes
// (0: every target answered, 1: a target failed, 2: usage).
#include <cstdlib>
#include <iostream>

#include "CLI/CLI.hpp"
#include "clients/cpp/kmclctl/commands.h"

int main(int argc, char** argv) {
  kmclctl::Cli cli;
  CLI::App app{"kmclctl: look at and drive kmcld (emulated VMBus over gRPC), one host or many"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "help for every command");
  app.add_option("-t,--target", cli.target_flags,
                 "kmcld address: host:port or unix:/path (repeat for several; default "
                 "$KMCLD_TARGET, else kmcld's default socket, unix:$XDG_RUNTIME_DIR/kmcld/kmcld.sock)");
  app.add_option("--targets-file", cli.targets_file,
                 "Prometheus file_sd JSON: [{\"targets\": [...], \"labels\": {...}}]")
      ->check(CLI::ExistingFile);
  app.add_flag("--json", cli.json, "protobuf's JSON mapping of the answers (API field names)");
  app.add_option("-o,--output", cli.output, "table (default), wide or json")
      ->check(CLI::IsMember({"table", "wide", "json"}));
  app.add_option("--timeout", cli.timeout_s,
                 "seconds per target for connecting and each call, save and restore included "
                 "(default 10; save and restore 600)")
      ->check(CLI::Range(0.001, 86400.0));

  app.add_option("--tls-ca", cli.tls_ca, "PEM of the CA of kmcld's TLS certificate (mutual TLS)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-cert", cli.tls_cert, "PEM of this client's TLS certificate")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", cli.tls_key, "PEM of this client's TLS key")
      ->check(CLI::ExistingFile);

  kmclctl::RegisterPartitionCommands(app, cli);
  kmclctl::RegisterChannelCommands(app, cli);
  kmclctl::RegisterGpadlCommands(app, cli);
  kmclctl::RegisterTrafficCommands(app, cli);
  kmclctl::RegisterStateCommands(app, cli);
  kmclctl::RegisterDeviceCommands(app, cli);
  kmclctl::RegisterTopCommand(app, cli);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // help on stdout, errors on stderr
    return code == 0 ? kmclctl::kExitOk : kmclctl::kExitUsage;
  }
  auto targets =
      kmclctl::ResolveTargets(cli.target_flags, cli.targets_file, kmclctl::DefaultTarget());
  if (!targets.ok()) return kmclctl::UsageError(std::string(targets.status().message()));
  cli.targets = *std::move(targets);
  if (!cli.action) return kmclctl::UsageError("no command given (see --help)");
  return cli.action();
}
