// examples/echo_demo: runs the C echo VSP and echo VSC against each other in
// one emulated partition and prints what moved.
//
//   bazel run -c opt //examples:echo_demo -- --packets=100000 --payload=256
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/clock.h"
#include "examples/echo_vsp.h"
#include "kmcl_core/base/mutex.h"
#include "kmcl_core/bus/partition.h"

ABSL_FLAG(uint64_t, packets, 100000, "packets to echo");
ABSL_FLAG(uint32_t, payload, 256, "payload bytes per packet (8 to 4096)");
ABSL_FLAG(uint32_t, window, 64, "packets in flight");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  kmcl::DisableAbslDeadlockDetectionInReleaseBuilds();
  kmcl::PartitionOptions options;
  options.memory_bytes = 256 << 20;
  auto partition = kmcl::Partition::Create(options);
  if (!partition.ok()) {
    std::fprintf(stderr, "echo_demo: %s\n", std::string(partition.status().message()).c_str());
    return 1;
  }
  const GUID instance = {1, 2, 3, {4, 5, 6, 7, 8, 9, 10, 11}};
  ECHO_VSP* vsp = nullptr;
  NTSTATUS st = EchoVspCreate((*partition)->vmbus_handle(), &instance, &vsp);
  if (!NT_SUCCESS(st)) {
    std::fprintf(stderr, "echo_demo: VSP failed: 0x%08X\n", static_cast<unsigned>(st));
    return 1;
  }
  ECHO_VSC* vsc = nullptr;
  st = EchoVscCreate((*partition)->vmbus_handle(), 10000, &vsc);
  if (!NT_SUCCESS(st)) {
    std::fprintf(stderr, "echo_demo: VSC failed: 0x%08X\n", static_cast<unsigned>(st));
    EchoVspDestroy(vsp);
    return 1;
  }
  absl::Time start = absl::Now();
  uint64_t mismatches = EchoVscRun(vsc, absl::GetFlag(FLAGS_packets), absl::GetFlag(FLAGS_payload),
                                   absl::GetFlag(FLAGS_window));
  double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::printf("echo_demo: %llu packets of %u bytes echoed in %.3f s (%.0f round trips/s), "
              "%llu completions, %llu mismatches, VSP saw %llu\n",
              static_cast<unsigned long long>(absl::GetFlag(FLAGS_packets)),
              absl::GetFlag(FLAGS_payload), seconds, absl::GetFlag(FLAGS_packets) / seconds,
              static_cast<unsigned long long>(EchoVscCompletions(vsc)),
              static_cast<unsigned long long>(mismatches),
              static_cast<unsigned long long>(EchoVspPacketsEchoed(vsp)));
  EchoVscDestroy(vsc);
  EchoVspDestroy(vsp);
  return mismatches == 0 ? 0 : 2;
}
