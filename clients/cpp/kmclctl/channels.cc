// kmclctl channels list | show, offers, offer, open, close, rescind.
#include <memory>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "clients/cpp/kmclctl/commands.h"

namespace kmclctl {
namespace {

std::string StateOf(const v1::EndpointState& e) {
  if (!e.present()) return "-";
  return absl::StrCat(EnumSuffix(v1::ConnectionState_Name(e.connection()), "CONNECTION_STATE_"),
                      "/", EnumSuffix(v1::RunState_Name(e.run()), "RUN_STATE_"),
                      e.attached() ? "+attached" : "");
}

std::string Fill(const v1::RingDiagnostics& r) {
  if (r.data_bytes() == 0) return "-";
  return absl::StrFormat("%u/%u (%.0f%%)", r.used_bytes(), r.data_bytes(),
                         100.0 * r.used_bytes() / r.data_bytes());
}

const std::vector<Column> kChannelColumns = {
    {"CHANNEL"}, {"SEQ"}, {"TYPE"}, {"NAME"}, {"HOST"}, {"GUEST"},
    {"INSTANCE", true}, {"VTL", true}, {"HOST_OUT_FILL", true}, {"HOST_IN_FILL", true},
    {"HELD", true}, {"GPADLS", true}, {"LEASES", true}};

void AddChannelRow(Table* t, const v1::Channel& c, const v1::ChannelDiagnostics* d) {
  const v1::Offer& o = c.offer();
  t->Add({FormatChannelRef(o.channel()), absl::StrCat(o.channel().offer_sequence()),
          o.interface_type().value(), o.friendly_name(), StateOf(c.host()), StateOf(c.guest()),
          o.interface_instance().value(), absl::StrCat(o.target_vtl()),
          d ? Fill(d->host().outgoing()) : "-", d ? Fill(d->host().incoming()) : "-",
          d ? absl::StrCat(d->host().held_deliveries()) : "-",
          d ? absl::StrCat(d->gpadl_count()) : "-", d ? absl::StrCat(d->leases_size()) : "-"});
}

Output ChannelOutput(const v1::Channel& c) {
  Table t;
  t.columns = kChannelColumns;
  AddChannelRow(&t, c, nullptr);
  auto message = std::make_shared<v1::ChannelResponse>();
  *message->mutable_channel() = c;
  return Output{message, t};
}

void Ring(Table* t, const std::string& prefix, const v1::RingDiagnostics& r) {
  t->Add({prefix + ".write_index", absl::StrCat(r.write_index())});
  t->Add({prefix + ".read_index", absl::StrCat(r.read_index())});
  t->Add({prefix + ".fill", Fill(r)});
  t->Add({prefix + ".pending_send_size", absl::StrCat(r.pending_send_size())});
  t->Add({prefix + ".interrupt_mask", absl::StrCat(r.interrupt_mask())});
  if (!r.corruption().empty()) t->Add({prefix + ".corruption", r.corruption()});
}

void Endpoint(Table* t, const std::string& role, const v1::EndpointDiagnostics& e) {
  t->Add({role + ".state", StateOf(e.state())});
  if (!e.state().present()) return;
  if (e.state().builtin()) t->Add({role + ".builtin", "kmcld runs this endpoint itself"});
  Ring(t, role + ".outgoing", e.outgoing());
  Ring(t, role + ".incoming", e.incoming());
  t->Add({role + ".transaction_quota", absl::StrCat(e.transaction_quota())});
  t->Add({role + ".delivered_uncompleted", absl::StrCat(e.delivered_uncompleted())});
  t->Add({role + ".held_deliveries", absl::StrCat(e.held_deliveries())});
  t->Add({role + ".queued_sends", absl::StrCat(e.queued_sends())});
  t->Add({role + ".outstanding_transactions", absl::StrCat(e.outstanding_transactions())});
  for (const v1::OutstandingTransaction& o : e.outstanding()) {
    t->Add({absl::StrCat(role, ".transaction.", o.transaction_id()),
            absl::StrCat(o.payload_bytes(), " bytes, age ",
                         absl::FormatDuration(absl::Microseconds(o.age_micros())))});
  }
  const auto* counters = e.counters().GetDescriptor();
  const auto* reflection = e.counters().GetReflection();
  for (int i = 0; i < counters->field_count(); ++i) {
    t->Add({absl::StrCat(role, ".counters.", counters->field(i)->name()),
            absl::StrCat(reflection->GetUInt64(e.counters(), counters->field(i)))});
  }
  t->Add({role + ".stream", e.stream_state()});
}

Table ShowTable(const v1::ChannelDiagnostics& d) {
  Table t;
  t.columns = {{"FIELD"}, {"VALUE"}};
  const v1::Offer& o = d.channel().offer();
  t.Add({"channel", FormatChannelRef(o.channel())});
  t.Add({"offer_sequence", absl::StrCat(o.channel().offer_sequence())});
  t.Add({"interface_type", o.interface_type().value()});
  t.Add({"interface_instance", o.interface_instance().value()});
  t.Add({"friendly_name", o.friendly_name()});
  t.Add({"target_vtl", absl::StrCat(o.target_vtl())});
  t.Add({"mmio", absl::StrFormat("0x%x (%s)", d.channel().mmio_address(),
                                 Bytes(d.channel().mmio_size()))});
  Endpoint(&t, "host", d.host());
  Endpoint(&t, "guest", d.guest());
  t.Add({"gpadls", absl::StrCat(d.gpadl_count())});
  for (const v1::LeaseDiagnostics& l : d.leases()) {
    t.Add({absl::StrCat("lease.", l.lease_id()),
           absl::StrCat("gpadl ", l.gpadl_id(), l.read_only() ? " read-only" : " read-write",
                        ", age ", absl::FormatDuration(absl::Microseconds(l.age_micros())))});
  }
  return t;
}

struct OfferFlags {
  std::string partition = "default", type, instance, name, pipe, user_defined_hex;
  uint32_t vtl = 0, max_packet_size = 0, quota = 0, mmio_mb = 0, server_flags = 0;
  bool start = false;
};

struct OpenFlags {
  std::string partition = "default", type, instance;
  uint32_t vtl = 0, ring_pages = 0, max_packet_size = 0, quota = 0;
  bool wait_for_offer = false;
};

// A subcommand taking one CHANNEL argument and running `fn` on it.
void ChannelCommand(CLI::App& app, Cli& cli, const std::string& name, const std::string& help,
                    std::function<absl::StatusOr<Output>(kc::Client&, const v1::ChannelRef&)> fn,
                    const std::function<void(CLI::App*)>& more_flags = {}) {
  auto channel = std::make_shared<std::string>();
  CLI::App* sub = AddCommand(app, name, help);
  sub->add_option("channel", *channel, "PARTITION/CHANNEL[@OFFER_SEQUENCE], e.g. default/1")
      ->required();
  if (more_flags) more_flags(sub);
  sub->callback([&cli, channel, fn] {
    cli.action = [&cli, channel, fn] {
      absl::StatusOr<v1::ChannelRef> ref = ParseChannelRef(*channel);
      if (!ref.ok()) return UsageError(std::string(ref.status().message()));
      return FanOut(cli, [ref = *ref, fn](kc::Client& c) { return fn(c, ref); });
    };
  });
}

}  // namespace

void RegisterChannelCommands(CLI::App& app, Cli& cli) {
  CLI::App* group = AddCommand(app, "channels", "List channels or show one in detail");
  group->require_subcommand(1);
  auto partition = std::make_shared<std::string>();
  CLI::App* list = AddCommand(*group, "list", "Every channel, both endpoints' states");
  list->add_option("--partition", *partition, "only this partition (default: all)");
  list->callback([&cli, partition] {
    cli.action = [&cli, partition] {
      return FanOut(cli, [p = *partition](kc::Client& c) -> absl::StatusOr<Output> {
        auto r = c.ListChannelDiagnostics(p);
        if (!r.ok()) return r.status();
        auto message = std::make_shared<v1::ListChannelDiagnosticsResponse>();
        Table t;
        t.columns = kChannelColumns;
        for (const auto& d : *r) {
          *message->add_channels() = d;
          AddChannelRow(&t, d.channel(), &d);
        }
        return Output{message, t};
      });
    };
  });
  ChannelCommand(*group, cli, "show",
                 "Both endpoints' states, rings, quota, counters, transactions and leases",
                 [](kc::Client& c, const v1::ChannelRef& ref) -> absl::StatusOr<Output> {
                   auto d = c.GetChannelDiagnostics(ref);
                   if (!d.ok()) return d.status();
                   return Output{std::make_shared<v1::ChannelDiagnostics>(*d), ShowTable(*d)};
                 });

  // offers: the guest's view.
  auto offers_type = std::make_shared<std::string>();
  auto offers_partition = std::make_shared<std::string>();
  auto offers_vtl = std::make_shared<uint32_t>(0);
  CLI::App* off = AddCommand(app, "offers", "The offers a guest at --vtl sees");
  off->add_option("--partition", *offers_partition, "only this partition (default: all)");
  off->add_option("--vtl", *offers_vtl, "the guest's VTL (default 0)")->check(CLI::Range(0, 2));
  off->add_option("--type", *offers_type, "only this interface type GUID");
  off->callback([&cli, offers_type, offers_partition, offers_vtl] {
    cli.action = [&cli, offers_type, offers_partition, offers_vtl] {
      v1::ListOffersRequest request;
      request.set_partition_id(*offers_partition);
      request.set_vtl(*offers_vtl);
      if (!offers_type->empty()) request.mutable_interface_type()->set_value(*offers_type);
      return FanOut(cli, [request](kc::Client& c) -> absl::StatusOr<Output> {
        auto r = c.ListOffers(request);
        if (!r.ok()) return r.status();
        auto message = std::make_shared<v1::ListOffersResponse>();
        Table t;
        t.columns = {{"CHANNEL"}, {"SEQ"}, {"TYPE"}, {"INSTANCE"}, {"NAME"}, {"OPENED"},
                     {"VTL", true}, {"FLAGS", true}, {"MMIO_MB", true}, {"USER_DEFINED", true}};
        for (const v1::Offer& o : *r) {
          *message->add_offers() = o;
          t.Add({FormatChannelRef(o.channel()), absl::StrCat(o.channel().offer_sequence()),
                 o.interface_type().value(), o.interface_instance().value(), o.friendly_name(),
                 o.opened() ? "yes" : "no", absl::StrCat(o.target_vtl()),
                 absl::StrFormat("0x%x", o.wire_channel_flags()), absl::StrCat(o.mmio_megabytes()),
                 absl::BytesToHexString(o.user_defined())});
        }
        return Output{message, t};
      });
    };
  });

  // offer / open / close / rescind.
  auto of = std::make_shared<OfferFlags>();
  CLI::App* offer = AddCommand(app, "offer", "Offer a channel as the host (VSP)");
  offer->add_option("--partition", of->partition, "partition (default \"default\")");
  offer->add_option("--type", of->type, "interface type GUID")->required();
  offer->add_option("--instance", of->instance, "interface instance GUID (default: random)");
  offer->add_option("--name", of->name, "friendly name");
  offer->add_option("--vtl", of->vtl, "target VTL")->check(CLI::Range(0, 2));
  offer->add_option("--max-packet-size", of->max_packet_size, "bytes (0: KMCL's default)");
  offer->add_option("--quota", of->quota, "transaction quota (0: none)");
  offer->add_option("--mmio-mb", of->mmio_mb, "MMIO megabytes");
  offer->add_option("--server-flags", of->server_flags, "OR of ServerChannelFlag values");
  offer->add_option("--pipe", of->pipe, "offer as a pipe: byte or message")
      ->check(CLI::IsMember({"byte", "message"}));
  offer->add_option("--user-defined", of->user_defined_hex, "offer user-defined bytes, hex");
  offer->add_flag("--start", of->start, "start the channel at once (KMCL servers start paused)");
  offer->callback([&cli, of] {
    cli.action = [&cli, of] {
      v1::ServerChannelSettings s;
      s.mutable_interface_type()->set_value(of->type);
      if (!of->instance.empty()) s.mutable_interface_instance()->set_value(of->instance);
      s.set_friendly_name(of->name);
      s.set_target_vtl(of->vtl);
      s.set_max_packet_size(of->max_packet_size);
      s.set_transaction_quota(of->quota);
      s.set_mmio_megabytes(of->mmio_mb);
      s.set_server_flags(of->server_flags);
      if (of->pipe == "byte") s.set_pipe_mode(v1::PIPE_MODE_BYTE);
      if (of->pipe == "message") s.set_pipe_mode(v1::PIPE_MODE_MESSAGE);
      if (!of->user_defined_hex.empty()) {
        auto bytes = ParseHex(of->user_defined_hex);
        if (!bytes.ok()) return UsageError(std::string(bytes.status().message()));
        s.set_user_defined(*bytes);
      }
      s.set_start(of->start);
      return FanOut(cli, [partition = of->partition, s](kc::Client& c) -> absl::StatusOr<Output> {
        auto ch = c.OfferChannel(partition, s);
        if (!ch.ok()) return ch.status();
        return ChannelOutput(*ch);
      });
    };
  });

  auto pf = std::make_shared<OpenFlags>();
  CLI::App* open = AddCommand(app, "open", "Open an offer as the guest (VSC)");
  open->add_option("--partition", pf->partition, "partition (default \"default\")");
  open->add_option("--type", pf->type, "interface type GUID")->required();
  open->add_option("--instance", pf->instance, "interface instance GUID (default: any)");
  open->add_option("--vtl", pf->vtl, "the guest's VTL")->check(CLI::Range(0, 2));
  open->add_option("--ring-pages", pf->ring_pages, "data pages per ring (0: 16)");
  open->add_option("--max-packet-size", pf->max_packet_size, "bytes (0: KMCL's default)");
  open->add_option("--quota", pf->quota, "transaction quota (0: none)");
  open->add_flag("--wait-for-offer", pf->wait_for_offer,
                 "return at once and open when a matching offer appears");
  open->callback([&cli, pf] {
    cli.action = [&cli, pf] {
      v1::OpenChannelRequest r;
      r.set_partition_id(pf->partition);
      r.set_vtl(pf->vtl);
      r.mutable_interface_type()->set_value(pf->type);
      if (!pf->instance.empty()) r.mutable_interface_instance()->set_value(pf->instance);
      r.set_incoming_ring_pages(pf->ring_pages);
      r.set_outgoing_ring_pages(pf->ring_pages);
      r.set_max_packet_size(pf->max_packet_size);
      r.set_transaction_quota(pf->quota);
      r.set_wait_for_offer(pf->wait_for_offer);
      return FanOut(cli, [r](kc::Client& c) -> absl::StatusOr<Output> {
        auto ch = c.OpenChannel(r);
        if (!ch.ok()) return ch.status();
        return ChannelOutput(*ch);
      });
    };
  });

  ChannelCommand(app, cli, "close", "Close the guest endpoint of a channel",
                 [](kc::Client& c, const v1::ChannelRef& ref) -> absl::StatusOr<Output> {
                   auto ch = c.CloseChannel(ref);
                   if (!ch.ok()) return ch.status();
                   return ChannelOutput(*ch);
                 });
  auto cleanup = std::make_shared<bool>(false);
  ChannelCommand(
      app, cli, "rescind", "Rescind the host's offer (and with --cleanup free it)",
      [cleanup](kc::Client& c, const v1::ChannelRef& ref) -> absl::StatusOr<Output> {
        auto ch = c.RescindChannel(ref);
        if (!ch.ok()) return ch.status();
        if (*cleanup) {
          if (absl::Status s = c.CleanupChannel(ref); !s.ok()) return s;
        }
        return ChannelOutput(*ch);
      },
      [cleanup](CLI::App* sub) {
        sub->add_flag("--cleanup", *cleanup, "also CleanupChannel (frees the relid)");
      });
}

}  // namespace kmclctl
