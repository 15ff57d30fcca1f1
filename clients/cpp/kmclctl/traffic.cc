// kmclctl send, watch.
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "clients/cpp/kmclctl/commands.h"
#include "clients/cpp/kmclctl/kmclctl.pb.h"
#include "google/protobuf/struct.pb.h"

namespace kmclctl {
namespace {

struct SendFlags {
  std::string channel, role = "guest", hex, file;
  bool wait = false;
};

absl::StatusOr<Output> SendOne(kc::Client& c, const v1::EndpointRef& endpoint,
                               const std::string& payload, bool wait, absl::Duration timeout) {
  kc::StreamOptions options;
  options.reconnect = false;
  auto stream = kc::AttachedStream::Attach(c.shared_from_this(), endpoint, options);
  if (!stream.ok()) return stream.status();
  auto result = (*stream)->Send({payload, wait});
  if (result.wait_for(absl::ToChronoNanoseconds(timeout)) != std::future_status::ready) {
    (*stream)->Close(absl::ZeroDuration()).IgnoreError();
    return absl::DeadlineExceededError(
        absl::StrCat("no completion within ", absl::FormatDuration(timeout)));
  }
  absl::StatusOr<kc::SendResult> r = result.get();
  absl::Status closed = (*stream)->Close(absl::ZeroDuration());
  if (!r.ok()) return r.status();
  if (!closed.ok()) return closed;
  auto message = std::make_shared<kmclctl::json::SendReport>();
  *message->mutable_completion()->mutable_status() = r->status;
  message->mutable_completion()->set_payload(r->payload);
  message->set_waited_for_completion(wait);
  Table t;
  t.columns = {{"CHANNEL"}, {"ROLE"}, {"BYTES"}, {"STATUS"}, {"COMPLETION"}};
  t.Add({FormatChannelRef(endpoint.channel()),
         EnumSuffix(v1::EndpointRole_Name(endpoint.role()), "ENDPOINT_ROLE_"),
         absl::StrCat(payload.size()),
         r->status.name().empty() ? absl::StrFormat("0x%08x", r->status.code()) : r->status.name(),
         wait ? absl::BytesToHexString(r->payload) : "(in the ring)"});
  return Output{message, t};
}

struct WatchFlags {
  std::string partition, channel;
  uint64_t after = 0;
  uint64_t count = 0;
  bool no_follow = false;
};

std::string EventLine(const v1::Event& e) {
  const absl::Time time = absl::FromUnixSeconds(e.time().seconds()) + absl::Nanoseconds(e.time().nanos());
  std::string line = absl::StrFormat(
      "%-6d %-12s %-17s %-12s %-7s %-5s %-22s %s", e.sequence(),
      absl::FormatTime("%H:%M:%E3S", time, absl::UTCTimeZone()),
      EnumSuffix(v1::EventKind_Name(e.kind()), "EVENT_KIND_"), e.partition_id(),
      e.has_channel() ? absl::StrCat(e.channel().channel_id()) : "-",
      e.role() == v1::ENDPOINT_ROLE_UNSPECIFIED
          ? "-" : EnumSuffix(v1::EndpointRole_Name(e.role()), "ENDPOINT_ROLE_"),
      e.status().name().empty() ? "-" : e.status().name(), e.detail());
  return std::string(absl::StripTrailingAsciiWhitespace(line));
}

int Watch(const Cli& cli, const WatchFlags& f) {
  v1::WatchEventsRequest request;
  request.set_partition_id(f.partition);
  if (!f.channel.empty()) {
    auto ref = ParseChannelRef(f.channel);
    if (!ref.ok()) return UsageError(std::string(ref.status().message()));
    *request.mutable_channel() = *ref;
    if (request.partition_id().empty()) request.set_partition_id(ref->partition_id());
  }
  request.set_after_sequence(f.after);
  request.set_backlog_only(f.no_follow);
  const bool json = cli.format() == Format::kJson;
  absl::Mutex print_mu;
  if (!json) {
    std::cout << (cli.multi() ? "TARGET  " : "")
              << absl::StrFormat("%-6s %-12s %-17s %-12s %-7s %-5s %-22s %s\n", "SEQ", "TIME",
                                 "KIND", "PARTITION", "CHANNEL", "ROLE", "STATUS", "DETAIL");
    std::cout.flush();
  }
  std::vector<absl::Status> results(cli.targets.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < cli.targets.size(); ++i) {
    threads.emplace_back([&, i] {
      const std::string& target = cli.targets[i].address;
      auto client = ConnectTo(cli, cli.targets[i]);
      if (!client.ok()) {
        results[i] = client.status();
        return;
      }
      uint64_t seen = 0;
      results[i] = (*client)->WatchEvents(request, [&](const v1::Event& e) {
        std::string line;
        if (json) {
          google::protobuf::Value name;
          name.set_string_value(target);
          const google::protobuf::Struct labels = LabelsStruct(cli.targets[i]);
          std::vector<std::pair<std::string, const google::protobuf::Message*>> parts = {
              {"target", &name}, {"event", &e}};
          if (!cli.targets[i].labels.empty()) parts.emplace_back("labels", &labels);
          absl::StatusOr<std::string> j =
              cli.multi() ? ToJsonByTarget(parts, false) : ToJson(e, false);
          line = j.ok() ? *j : std::string(j.status().message());
        } else {
          line = cli.multi() ? absl::StrCat(target, "  ", EventLine(e)) : EventLine(e);
        }
        {
          absl::MutexLock lock(&print_mu);
          std::cout << line << "\n";
          std::cout.flush();
        }
        return f.count == 0 || ++seen < f.count;
      });
    });
  }
  for (std::thread& t : threads) t.join();
  int code = kExitOk;
  for (size_t i = 0; i < results.size(); ++i) {
    if (results[i].ok()) continue;
    std::cerr << "kmclctl: " << cli.targets[i].address << ": " << results[i].message() << " ("
              << absl::StatusCodeToString(results[i].code()) << ")\n";
    code = kExitTargetFailed;
  }
  return code;
}

}  // namespace

void RegisterTrafficCommands(CLI::App& app, Cli& cli) {
  auto sf = std::make_shared<SendFlags>();
  CLI::App* send = AddCommand(app, "send", "Send one packet on an endpoint (attaches for it)");
  send->add_option("channel", sf->channel, "PARTITION/CHANNEL[@OFFER_SEQUENCE]")->required();
  send->add_option("--role", sf->role, "the endpoint that sends: guest or host")
      ->check(CLI::IsMember({"guest", "host"}));
  auto* hex = send->add_option("--hex", sf->hex, "the payload as hex, e.g. 'de ad be ef'");
  auto* file = send->add_option("--file", sf->file, "the payload: a file's bytes")
                   ->check(CLI::ExistingFile);
  hex->excludes(file);
  send->add_flag("--wait", sf->wait,
                 "a transaction: wait for the peer's completion and print its bytes");
  send->callback([&cli, sf] {
    cli.action = [&cli, sf] {
      auto ref = ParseChannelRef(sf->channel);
      if (!ref.ok()) return UsageError(std::string(ref.status().message()));
      std::string payload;
      if (!sf->hex.empty()) {
        auto bytes = ParseHex(sf->hex);
        if (!bytes.ok()) return UsageError(std::string(bytes.status().message()));
        payload = *bytes;
      } else if (!sf->file.empty()) {
        std::ifstream in(sf->file, std::ios::binary);
        std::stringstream data;
        data << in.rdbuf();
        payload = data.str();
      } else {
        return UsageError("send: give the payload with --hex or --file");
      }
      v1::EndpointRef endpoint;
      *endpoint.mutable_channel() = *ref;
      endpoint.set_role(sf->role == "host" ? v1::ENDPOINT_ROLE_HOST : v1::ENDPOINT_ROLE_GUEST);
      return FanOut(cli, [&cli, endpoint, payload, wait = sf->wait](kc::Client& c) {
        return SendOne(c, endpoint, payload, wait, cli.timeout());
      });
    };
  });

  auto wf = std::make_shared<WatchFlags>();
  CLI::App* watch = AddCommand(app, "watch", "Print events as they happen (like kubectl get -w)");
  watch->add_option("--partition", wf->partition, "only this partition");
  watch->add_option("--channel", wf->channel, "only this channel: PARTITION/CHANNEL");
  watch->add_option("--after", wf->after, "resume after this sequence number (0: the oldest kept)");
  watch->add_option("--count", wf->count, "stop after this many events per target");
  watch->add_flag("--no-follow", wf->no_follow, "print what the log holds and stop");
  watch->callback([&cli, wf] { cli.action = [&cli, wf] { return Watch(cli, *wf); }; });
}

}  // namespace kmclctl
