// clients/cpp/kmclctl/commands.h: kmclctl's commands and what they share:
// the global flags, the fan-out to every target, and the exit codes
// (0: every target answered; 1: a target failed; 2: usage).
//
// Each command group registers its CLI11 subcommands; a subcommand's
// callback stores the action that main() runs after parsing. Per-target
// work runs concurrently, one thread per target, each with --timeout.
//
// Thread-compatible, except TargetFn bodies, which run on several threads
// at once (one per target) and must only touch their own Client and Output.
#ifndef KMCLD_CLIENTS_CPP_KMCLCTL_COMMANDS_H_
#define KMCLD_CLIENTS_CPP_KMCLCTL_COMMANDS_H_

#include <functional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "clients/cpp/kmcl.h"
#include "clients/cpp/kmclctl/output.h"
#include "clients/cpp/kmclctl/targets.h"

namespace kmclctl {

inline constexpr int kExitOk = 0;
inline constexpr int kExitTargetFailed = 1;
inline constexpr int kExitUsage = 2;

namespace v1 = ::kmcl::v1;
namespace kc = ::kmcl::client;

struct Cli {
  // Global flags.
  std::vector<std::string> target_flags;
  std::string targets_file;
  bool json = false;
  std::string output = "table";
  double timeout_s = 0;  // --timeout; 0: not given (10 s per call, 10 min per save/restore)
  std::string tls_ca, tls_cert, tls_key;
  // Set by the chosen subcommand's callback; run by main().
  std::function<int()> action;

  // Resolved after parsing.
  std::vector<Target> targets;
  Format format() const;
  bool multi() const { return targets.size() > 1; }
  absl::Duration timeout() const { return absl::Seconds(timeout_s > 0 ? timeout_s : 10); }
  kc::ClientOptions client_options() const;
};

using TargetFn = std::function<absl::StatusOr<Output>(kc::Client& client)>;

// Runs `fn` against every target concurrently, prints the failures on
// stderr ("kmclctl: <target>: <error>") and the merged result on stdout.
// Returns kExitOk or kExitTargetFailed.
int FanOut(const Cli& cli, const TargetFn& fn);

// Connects to one target with the CLI's timeout.
absl::StatusOr<std::shared_ptr<kc::Client>> ConnectTo(const Cli& cli, const Target& target);

// Prints "kmclctl: <message>" on stderr and returns kExitUsage.
int UsageError(const std::string& message);

// "PARTITION/CHANNEL[@OFFER_SEQUENCE]", e.g. "default/3" or "p-1/2@7".
absl::StatusOr<v1::ChannelRef> ParseChannelRef(const std::string& text);
std::string FormatChannelRef(const v1::ChannelRef& ref);
// Hex text ("01 02 ff", "0x0102ff", "0102FF") to bytes.
absl::StatusOr<std::string> ParseHex(const std::string& text);

// Adds a subcommand that inherits the global flags (fallthrough).
CLI::App* AddCommand(CLI::App& parent, const std::string& name, const std::string& description);

void RegisterPartitionCommands(CLI::App& app, Cli& cli);
void RegisterChannelCommands(CLI::App& app, Cli& cli);
void RegisterGpadlCommands(CLI::App& app, Cli& cli);
void RegisterTrafficCommands(CLI::App& app, Cli& cli);  // send, watch
void RegisterStateCommands(CLI::App& app, Cli& cli);    // save, restore, health, version
void RegisterDeviceCommands(CLI::App& app, Cli& cli);   // devices list, heartbeat
void RegisterTopCommand(CLI::App& app, Cli& cli);       // top (top.cc)

}  // namespace kmclctl

#endif  // KMCLD_CLIENTS_CPP_KMCLCTL_COMMANDS_H_
