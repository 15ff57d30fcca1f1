// kmclctl save, restore, health, version.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "clients/cpp/kmclctl/commands.h"
#include "clients/cpp/kmclctl/kmclctl.pb.h"
#include "grpcpp/grpcpp.h"
#include "tools/build_info.h"

namespace kmclctl {
namespace {

// A progress line on stderr when it is a terminal: bytes and rate, at most
// ten updates a second; nothing when stderr is piped or a file.
class Progress {
 public:
  explicit Progress(std::string what) : what_(std::move(what)), tty_(::isatty(STDERR_FILENO)) {}
  ~Progress() {
    if (tty_ && shown_) std::fprintf(stderr, "\n");
  }
  void Update(uint64_t bytes, bool force = false) {
    if (!tty_) return;
    const absl::Time now = absl::Now();
    if (!force && now - last_ < absl::Milliseconds(100)) return;
    last_ = now;
    shown_ = true;
    const double seconds = std::max(1e-3, absl::ToDoubleSeconds(now - start_));
    std::fprintf(stderr, "\r%s: %s at %s/s   ", what_.c_str(), Bytes(bytes).c_str(),
                 Bytes(static_cast<uint64_t>(bytes / seconds)).c_str());
    std::fflush(stderr);
  }
  kc::ProgressFn Fn() {
    return [this](uint64_t bytes, uint64_t) { Update(bytes); };
  }

 private:
  const std::string what_;
  const bool tty_;
  bool shown_ = false;
  const absl::Time start_ = absl::Now();
  absl::Time last_ = absl::InfinitePast();
};

Output TransferOutput(const kmclctl::json::Transfer& t, const std::string& what) {
  Table table;
  table.columns = {{"FILE"}, {"BYTES"}, {"RESULT"}};
  table.Add({t.file(), absl::StrCat(t.bytes()), what});
  return Output{std::make_shared<kmclctl::json::Transfer>(t), table};
}

struct SaveFlags {
  std::string what, file;
  bool stay_paused = false;
};

absl::StatusOr<Output> Save(kc::Client& c, const SaveFlags& f) {
  const std::string temp = f.file + ".partial";
  std::ofstream out(temp, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InvalidArgumentError(absl::StrCat("cannot write ", temp));
  absl::StatusOr<uint64_t> bytes;
  {
    Progress progress(absl::StrCat("saving ", f.what));
    if (auto ref = ParseChannelRef(f.what); ref.ok()) {
      bytes = c.SaveChannel(*ref, out, progress.Fn());
    } else {
      bytes = c.SavePartition(f.what, f.stay_paused, out, progress.Fn());
    }
    if (bytes.ok()) progress.Update(*bytes, true);
  }
  out.close();
  if (!bytes.ok() || !out) {
    std::remove(temp.c_str());
    return bytes.ok() ? absl::InternalError(absl::StrCat("writing ", f.file, " failed"))
                      : bytes.status();
  }
  if (std::rename(temp.c_str(), f.file.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot rename ", temp, " to ", f.file));
  }
  kmclctl::json::Transfer t;
  t.set_file(f.file);
  t.set_bytes(*bytes);
  return TransferOutput(t, absl::StrCat("saved ", f.what));
}

struct RestoreFlags {
  std::string kind, file, partition;
};

absl::StatusOr<Output> Restore(kc::Client& c, const RestoreFlags& f) {
  std::ifstream in(f.file, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read ", f.file));
  in.seekg(0, std::ios::end);
  const uint64_t size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  kmclctl::json::Transfer t;
  t.set_file(f.file);
  t.set_bytes(size);
  Progress progress(absl::StrCat("restoring ", f.file));
  if (f.kind == "channel") {
    auto ref = c.RestoreChannel(f.partition, in, progress.Fn());
    if (!ref.ok()) return ref.status();
    *t.mutable_restored_channel() = *ref;
    return TransferOutput(t, absl::StrCat("restored channel ", FormatChannelRef(*ref)));
  }
  auto p = c.RestorePartition(f.partition, in, progress.Fn());
  if (!p.ok()) return p.status();
  t.set_restored_partition(p->id());
  return TransferOutput(t, absl::StrCat("restored partition ", p->id()));
}

// A commit for a cell: 12 hex digits (and -dirty), or "-" when unstamped.
std::string ShortCommit(absl::string_view commit) {
  if (commit.empty()) return "-";
  const bool dirty = absl::EndsWith(commit, "-dirty");
  return absl::StrCat(commit.substr(0, 12), dirty ? "-dirty" : "");
}

// One target's row: this client's build beside the daemon's.
Output VersionOutput(v1::DaemonVersion daemon) {
  auto message = std::make_shared<kmclctl::json::Version>();
  message->set_kmclctl(std::string(kmcl::build::Version()));
  message->set_kmclctl_git_commit(std::string(kmcl::build::GitCommit()));
  message->set_grpc(grpc::Version());
  message->set_api("kmcl.v1");
  message->set_api_revision(v1::API_REVISION_CURRENT);
  *message->mutable_kmcld() = std::move(daemon);
  const v1::DaemonVersion& d = message->kmcld();
  const absl::Duration uptime = absl::Seconds(d.uptime().seconds());
  Table t;
  t.columns = {{"KMCLD"},          {"KMCLD_COMMIT"}, {"KMCLD_API"},    {"UPTIME"},
               {"KMCLCTL"},        {"KMCLCTL_API"},  {"KMCLCTL_COMMIT", true},
               {"STARTED", true},  {"GRPC", true}};
  t.Add({d.version(), ShortCommit(d.git_commit()), absl::StrCat(d.api_revision()),
         absl::FormatDuration(uptime), message->kmclctl(), absl::StrCat(message->api_revision()),
         ShortCommit(message->kmclctl_git_commit()),
         absl::FormatTime(absl::RFC3339_sec, absl::FromUnixSeconds(d.started().seconds()),
                          absl::UTCTimeZone()),
         message->grpc()});
  return Output{message, t};
}

}  // namespace

void RegisterStateCommands(CLI::App& app, Cli& cli) {
  auto sf = std::make_shared<SaveFlags>();
  CLI::App* save = AddCommand(app, "save",
                              "Save a channel (PARTITION/CHANNEL) or a partition (ID) to a file");
  save->add_option("what", sf->what, "PARTITION/CHANNEL or PARTITION")->required();
  save->add_option("-o,--output-file", sf->file, "the file to write")->required();
  save->add_flag("--stay-paused", sf->stay_paused,
                 "partition: leave the source's channels paused (migration)");
  save->callback([&cli, sf] {
    cli.action = [&cli, sf] {
      if (cli.multi()) return UsageError("save: give exactly one target");
      return FanOut(cli, [sf](kc::Client& c) { return Save(c, *sf); });
    };
  });

  auto rf = std::make_shared<RestoreFlags>();
  CLI::App* restore = AddCommand(app, "restore", "Restore a channel or a partition from a file");
  restore->add_option("kind", rf->kind, "channel or partition")
      ->required()
      ->check(CLI::IsMember({"channel", "partition"}));
  restore->add_option("-i,--input-file", rf->file, "the file saved by kmclctl save")
      ->required()
      ->check(CLI::ExistingFile);
  restore->add_option("--partition", rf->partition,
                      "channel: the partition to restore into; partition: the new id "
                      "(default: the saved id)");
  restore->callback([&cli, rf] {
    cli.action = [&cli, rf] {
      if (cli.multi()) return UsageError("restore: give exactly one target");
      if (rf->kind == "channel" && rf->partition.empty()) {
        return UsageError("restore channel: --partition is required");
      }
      return FanOut(cli, [rf](kc::Client& c) { return Restore(c, *rf); });
    };
  });

  AddCommand(app, "health", "grpc.health.v1 status and latency of each target")->callback([&cli] {
    cli.action = [&cli] {
      return FanOut(cli, [](kc::Client& c) -> absl::StatusOr<Output> {
        const absl::Time start = absl::Now();
        auto status = c.Health();
        if (!status.ok()) return status.status();
        const std::string name = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(*status);
        if (*status != grpc::health::v1::HealthCheckResponse::SERVING) {
          return absl::UnavailableError(absl::StrCat("kmcld reports ", name));
        }
        auto message = std::make_shared<kmclctl::json::Health>();
        message->set_status(name);
        message->set_latency_ms(absl::ToDoubleMilliseconds(absl::Now() - start));
        Table t;
        t.columns = {{"STATUS"}, {"LATENCY"}};
        t.Add({name, absl::StrFormat("%.1f ms", message->latency_ms())});
        return Output{message, t};
      });
    };
  });

  AddCommand(app, "version", "kmclctl's build and each daemon's (version, commit, API, uptime)")
      ->callback([&cli] {
        cli.action = [&cli] {
          return FanOut(cli, [](kc::Client& c) -> absl::StatusOr<Output> {
            auto daemon = c.GetVersion();
            if (!daemon.ok()) return daemon.status();
            return VersionOutput(*std::move(daemon));
          });
        };
      });
}

}  // namespace kmclctl
