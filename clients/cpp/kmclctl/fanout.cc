// The fan-out and the helpers every command shares (commands.h).
#include <cstdio>
#include <iostream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "clients/cpp/kmclctl/commands.h"
#include "clients/cpp/kmclctl/struct_access.h"

namespace kmclctl {

Format Cli::format() const {
  if (json || output == "json") return Format::kJson;
  if (output == "wide") return Format::kWide;
  return Format::kTable;
}

kc::ClientOptions Cli::client_options() const {
  kc::ClientOptions o;
  o.connect_timeout = timeout();
  o.call_timeout = timeout();
  // Save and restore streams keep the client library's long default unless
  // --timeout was given, which then bounds them too.
  if (timeout_s > 0) o.stream_timeout = timeout();
  o.tls_ca_file = tls_ca;
  o.tls_cert_file = tls_cert;
  o.tls_key_file = tls_key;
  return o;
}

absl::StatusOr<std::shared_ptr<kc::Client>> ConnectTo(const Cli& cli, const Target& target) {
  return kc::Client::Connect(target.address, cli.client_options());
}

int UsageError(const std::string& message) {
  std::cerr << "kmclctl: " << message << "\n";
  return kExitUsage;
}

CLI::App* AddCommand(CLI::App& parent, const std::string& name, const std::string& description) {
  CLI::App* sub = parent.add_subcommand(name, description);
  sub->fallthrough();
  return sub;
}

int FanOut(const Cli& cli, const TargetFn& fn) {
  const size_t n = cli.targets.size();
  std::vector<absl::StatusOr<Output>> results(n, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      absl::StatusOr<std::shared_ptr<kc::Client>> client = ConnectTo(cli, cli.targets[i]);
      results[i] = client.ok() ? fn(**client) : absl::StatusOr<Output>(client.status());
    });
  }
  for (std::thread& t : threads) t.join();

  int code = kExitOk;
  std::vector<const Table*> tables;
  std::vector<const std::string*> texts;
  std::vector<std::string> names;
  std::vector<std::string> labels;  // one cell per answering target
  bool labelled = false;
  google::protobuf::Struct labels_json;  // {"<target>": {labels}}
  std::vector<std::pair<std::string, const google::protobuf::Message*>> messages;
  for (size_t i = 0; i < n; ++i) {
    if (!results[i].ok()) {
      std::cerr << "kmclctl: " << cli.targets[i].address << ": " << results[i].status().message()
                << " (" << absl::StatusCodeToString(results[i].status().code()) << ")\n";
      code = kExitTargetFailed;
      continue;
    }
    tables.push_back(&results[i]->table);
    if (!results[i]->text.empty()) texts.push_back(&results[i]->text);
    names.push_back(cli.targets[i].address);
    labels.push_back(FormatLabels(cli.targets[i]));
    if (!cli.targets[i].labels.empty()) {
      labelled = true;
      google::protobuf::Value v;
      *v.mutable_struct_value() = LabelsStruct(cli.targets[i]);
      AddStructField(&labels_json, cli.targets[i].address, v);
    }
    if (results[i]->message != nullptr) {
      messages.emplace_back(cli.targets[i].address, results[i]->message.get());
    }
  }
  if (cli.format() == Format::kJson) {
    if (messages.empty()) return code;
    // The targets file's labels beside the answers; "@" never starts a target.
    if (cli.multi() && labelled) messages.emplace_back("@labels", &labels_json);
    absl::StatusOr<std::string> json =
        cli.multi() ? ToJsonByTarget(messages) : ToJson(*messages[0].second);
    if (!json.ok()) {
      std::cerr << "kmclctl: " << json.status().message() << "\n";
      return kExitTargetFailed;
    }
    std::cout << *json << "\n";
  } else if (!texts.empty()) {
    for (size_t i = 0; i < texts.size(); ++i) {
      if (cli.multi()) std::cout << "==> " << names[i] << " <==\n";
      std::cout << *texts[i];
    }
  } else if (!tables.empty()) {
    const bool wide = cli.format() == Format::kWide;
    std::cout << RenderTable(tables, cli.multi() ? names : std::vector<std::string>(), wide,
                             wide && labelled ? labels : std::vector<std::string>());
  }
  std::cout.flush();
  return code;
}

absl::StatusOr<v1::ChannelRef> ParseChannelRef(const std::string& text) {
  std::vector<std::string> parts = absl::StrSplit(text, '/');
  auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "channel '", text, "': expected PARTITION/CHANNEL[@OFFER_SEQUENCE], e.g. default/1"));
  };
  if (parts.size() != 2 || parts[0].empty()) return bad();
  std::vector<std::string> id = absl::StrSplit(parts[1], '@');
  v1::ChannelRef ref;
  ref.set_partition_id(parts[0]);
  uint32_t channel = 0;
  uint64_t sequence = 0;
  if (id.size() > 2 || !absl::SimpleAtoi(id[0], &channel) || channel == 0) return bad();
  if (id.size() == 2 && !absl::SimpleAtoi(id[1], &sequence)) return bad();
  ref.set_channel_id(channel);
  ref.set_offer_sequence(sequence);
  return ref;
}

std::string FormatChannelRef(const v1::ChannelRef& ref) {
  return absl::StrCat(ref.partition_id(), "/", ref.channel_id());
}

absl::StatusOr<std::string> ParseHex(const std::string& text) {
  std::string digits;
  absl::string_view t = text;
  if (absl::StartsWith(t, "0x") || absl::StartsWith(t, "0X")) t.remove_prefix(2);
  for (char c : t) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c)) || c == ':' || c == ',') continue;
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not hex"));
    }
    digits.push_back(c);
  }
  if (digits.size() % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' has an odd number of hex digits"));
  }
  return absl::HexStringToBytes(digits);
}

}  // namespace kmclctl
