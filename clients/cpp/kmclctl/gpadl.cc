// kmclctl gpadl list | read.
//
// `list` is GpadlService.ListGpadls. `read` reads through guest memory (the
// GPADL's page list), so it needs no lease and does not disturb the host
// tool's mapping.
#include <memory>

#include "absl/strings/str_cat.h"
#include "clients/cpp/kmclctl/commands.h"
#include "clients/cpp/kmclctl/kmclctl.pb.h"

namespace kmclctl {
namespace {

constexpr uint64_t kPage = 4096;

// Reads [offset, offset + length) of the GPADL through guest memory.
absl::StatusOr<std::string> ReadGpadl(kc::Client& c, const v1::Gpadl& g, uint64_t offset,
                                      uint64_t length) {
  std::string out;
  uint64_t logical = 0;  // GPADL offset of the current segment
  for (const v1::GpaRange& r : g.ranges()) {
    uint64_t in_range = r.byte_offset();
    uint64_t left = r.byte_count();
    for (int p = 0; p < r.pfns_size() && left > 0; ++p) {
      const uint64_t page_offset = p == 0 ? in_range : 0;
      const uint64_t n = std::min<uint64_t>(kPage - page_offset, left);
      const uint64_t begin = std::max(offset, logical), end = std::min(offset + length, logical + n);
      if (begin < end) {
        v1::ReadGuestMemoryRequest where;
        where.set_partition_id(g.channel().partition_id());
        where.set_gpa(r.pfns(p) * kPage + page_offset + (begin - logical));
        auto data = c.ReadGuestMemory(where, end - begin);
        if (!data.ok()) return data.status();
        out += *data;
      }
      logical += n;
      left -= n;
    }
  }
  return out;
}

}  // namespace

void RegisterGpadlCommands(CLI::App& app, Cli& cli) {
  CLI::App* group = AddCommand(app, "gpadl", "List a channel's GPADLs or read one (hexdump)");
  group->require_subcommand(1);

  struct ListFlags {
    std::string channel, partition;
  };
  auto lf = std::make_shared<ListFlags>();
  CLI::App* list = AddCommand(*group, "list",
                              "GPADLs of a channel, a partition or every partition: size, ranges, "
                              "pages, state, read-only, lease");
  list->add_option("channel", lf->channel, "PARTITION/CHANNEL, e.g. default/1 (default: all)");
  list->add_option("--partition", lf->partition, "every channel of this partition");
  list->callback([&cli, lf] {
    cli.action = [&cli, lf] {
      v1::ListGpadlsRequest request;
      request.set_partition_id(lf->partition);
      if (!lf->channel.empty()) {
        auto ref = ParseChannelRef(lf->channel);
        if (!ref.ok()) return UsageError(std::string(ref.status().message()));
        if (!lf->partition.empty() && lf->partition != ref->partition_id()) {
          return UsageError("gpadl list: --partition and the channel's partition differ");
        }
        request.set_partition_id(ref->partition_id());
        request.set_channel_id(ref->channel_id());
      }
      // The page lists only where they are shown.
      request.set_include_ranges(cli.format() != Format::kTable);
      return FanOut(cli, [request](kc::Client& c) -> absl::StatusOr<Output> {
        auto gpadls = c.ListGpadls(request);
        if (!gpadls.ok()) return gpadls.status();
        auto message = std::make_shared<v1::ListGpadlsResponse>();
        Table t;
        t.columns = {{"CHANNEL"},   {"GPADL"},          {"BYTES"},     {"RANGES"},
                     {"PAGES"},     {"STATE"},          {"READ_ONLY"}, {"LEASE"},
                     {"LEASE_MODE", true}, {"FIRST_PFN", true}};
        for (const auto& g : *gpadls) {
          *message->add_gpadls() = g;
          t.Add({FormatChannelRef(g.channel()), absl::StrCat(g.gpadl_id()),
                 absl::StrCat(g.byte_count()), absl::StrCat(g.range_count()),
                 absl::StrCat(g.page_count()),
                 EnumSuffix(v1::GpadlState_Name(g.state()), "GPADL_STATE_"),
                 g.read_only() ? "yes" : "no", g.lease_id() ? absl::StrCat(g.lease_id()) : "-",
                 g.lease_id() == 0 ? "-" : (g.lease_read_only() ? "read-only" : "read-write"),
                 g.ranges_size() > 0 && g.ranges(0).pfns_size() > 0
                     ? absl::StrCat("0x", absl::Hex(g.ranges(0).pfns(0)))
                     : "-"});
        }
        return Output{message, t};
      });
    };
  });

  struct ReadFlags {
    std::string channel;
    uint32_t gpadl = 0;
    uint64_t offset = 0, length = 256;
  };
  auto rf = std::make_shared<ReadFlags>();
  CLI::App* read = AddCommand(*group, "read", "Hexdump bytes of a GPADL (through guest memory)");
  read->add_option("channel", rf->channel, "PARTITION/CHANNEL, e.g. default/1")->required();
  read->add_option("gpadl", rf->gpadl, "the GPADL id")->required();
  read->add_option("--offset", rf->offset, "first byte (default 0)");
  read->add_option("--length", rf->length, "bytes (default 256; 0: to the end)");
  read->callback([&cli, rf] {
    cli.action = [&cli, rf] {
      auto ref = ParseChannelRef(rf->channel);
      if (!ref.ok()) return UsageError(std::string(ref.status().message()));
      return FanOut(cli, [ref = *ref, rf = *rf](kc::Client& c) -> absl::StatusOr<Output> {
        auto g = c.GetGpadl(ref, rf.gpadl);
        if (!g.ok()) return g.status();
        if (rf.offset > g->byte_count()) {
          return absl::OutOfRangeError(absl::StrCat("offset ", rf.offset, " is beyond GPADL ",
                                                    rf.gpadl, "'s ", g->byte_count(), " bytes"));
        }
        const uint64_t left = g->byte_count() - rf.offset;
        const uint64_t length = rf.length == 0 ? left : std::min(rf.length, left);
        auto data = ReadGpadl(c, *g, rf.offset, length);
        if (!data.ok()) return data.status();
        auto message = std::make_shared<kmclctl::json::GpadlData>();
        *message->mutable_gpadl() = *g;
        message->set_offset(rf.offset);
        message->set_data(*data);
        Output out{message, {}, Hexdump(*data, rf.offset)};
        if (out.text.empty()) out.text = "(no bytes)\n";
        return out;
      });
    };
  });
}

}  // namespace kmclctl
