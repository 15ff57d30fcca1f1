// kmclctl partitions list | create | delete.
#include <limits>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "clients/cpp/kmclctl/commands.h"

namespace kmclctl {
namespace {

std::string VmbusText(v1::VmbusVersion v) {
  const uint32_t n = static_cast<uint32_t>(v);
  return absl::StrCat(n >> 16, ".", n & 0xFFFF);
}

// "6.0", "5.3", "COPPER", "vmbus_version_win10": a VmbusVersion.
absl::StatusOr<v1::VmbusVersion> ParseVmbus(const std::string& text) {
  const std::string upper = absl::AsciiStrToUpper(text);
  const auto* d = v1::VmbusVersion_descriptor();
  for (int i = 0; i < d->value_count(); ++i) {
    const auto* value = d->value(i);
    if (value->number() == 0) continue;
    const auto v = static_cast<v1::VmbusVersion>(value->number());
    if (text == VmbusText(v) || upper == value->name() ||
        upper == EnumSuffix(value->name(), "VMBUS_VERSION_")) {
      return v;
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown VMBus version '", text, "'"));
}

Table PartitionTable(const std::vector<v1::Partition>& partitions) {
  Table t;
  t.columns = {{"ID"}, {"VMBUS"}, {"VTLS"}, {"MEMORY"}, {"CHANNELS"},
               {"MMIO_BASE", true}, {"MMIO_SIZE", true}, {"VMBUS_HANDLE", true}};
  for (const v1::Partition& p : partitions) {
    t.Add({p.id(), VmbusText(p.vmbus_version()), absl::StrJoin(p.client_vtls(), ","),
           Bytes(p.guest_memory_bytes()), absl::StrCat(p.channel_count()),
           absl::StrFormat("0x%x", p.mmio().base()), Bytes(p.mmio().size_bytes()),
           absl::StrFormat("0x%x", p.vmbus_handle())});
  }
  return t;
}

struct CreateFlags {
  std::string id;
  std::string vmbus;
  std::vector<uint32_t> vtls;
  uint64_t memory_mib = 0;
};

}  // namespace

void RegisterPartitionCommands(CLI::App& app, Cli& cli) {
  CLI::App* group = AddCommand(app, "partitions", "List, create and delete partitions (emulated VMs)");
  group->require_subcommand(1);

  CLI::App* list = AddCommand(*group, "list", "List the partitions");
  list->callback([&cli] {
    cli.action = [&cli] {
      return FanOut(cli, [](kc::Client& c) -> absl::StatusOr<Output> {
        auto r = c.ListPartitions();
        if (!r.ok()) return r.status();
        auto message = std::make_shared<v1::ListPartitionsResponse>();
        for (const auto& p : *r) *message->add_partitions() = p;
        return Output{message, PartitionTable(*r)};
      });
    };
  });

  auto create_flags = std::make_shared<CreateFlags>();
  CLI::App* create = AddCommand(*group, "create", "Create a partition");
  create->add_option("id", create_flags->id, "[a-z0-9-]{1,63}; empty lets kmcld choose p-<n>");
  create->add_option("--vmbus-version", create_flags->vmbus,
                     "VMBus version to negotiate: 6.0, 5.3, ... or COPPER, IRON, ... (default newest)");
  create->add_option("--vtl", create_flags->vtls, "a client VTL (0..2); repeat for several")
      ->check(CLI::Range(0, 2));
  create->add_option("--memory-mib", create_flags->memory_mib,
                     "guest memory in MiB (default 4096)");
  create->callback([&cli, create_flags] {
    cli.action = [&cli, create_flags] {
      v1::CreatePartitionRequest request;
      request.set_id(create_flags->id);
      if (!create_flags->vmbus.empty()) {
        auto v = ParseVmbus(create_flags->vmbus);
        if (!v.ok()) return UsageError(std::string(v.status().message()));
        request.set_vmbus_version(*v);
      }
      for (uint32_t vtl : create_flags->vtls) request.add_client_vtls(vtl);
      // Shifted past 64 bits the size would wrap (2^44 MiB to 0, kmcld's
      // default): refuse it rather than ask for another size.
      if (create_flags->memory_mib > (std::numeric_limits<uint64_t>::max() >> 20)) {
        return UsageError(absl::StrCat("--memory-mib ", create_flags->memory_mib,
                                       " is too large (in bytes it does not fit 64 bits)"));
      }
      request.set_guest_memory_bytes(create_flags->memory_mib << 20);
      return FanOut(cli, [request](kc::Client& c) -> absl::StatusOr<Output> {
        auto p = c.CreatePartition(request);
        if (!p.ok()) return p.status();
        return Output{std::make_shared<v1::Partition>(*p), PartitionTable({*p})};
      });
    };
  });

  auto delete_id = std::make_shared<std::string>();
  auto force = std::make_shared<bool>(false);
  CLI::App* del = AddCommand(*group, "delete", "Delete a partition");
  del->add_option("id", *delete_id, "the partition")->required();
  del->add_flag("--force", *force,
                "free the channels first (streams end, guests close, hosts rescind)");
  del->callback([&cli, delete_id, force] {
    cli.action = [&cli, delete_id, force] {
      return FanOut(cli, [id = *delete_id, force = *force](kc::Client& c) -> absl::StatusOr<Output> {
        if (absl::Status s = c.DeletePartition(id, force); !s.ok()) return s;
        Table t;
        t.columns = {{"PARTITION"}, {"RESULT"}};
        t.Add({id, "deleted"});
        return Output{std::make_shared<v1::DeletePartitionResponse>(), t};
      });
    };
  });
}

}  // namespace kmclctl
