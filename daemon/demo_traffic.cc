#include "daemon/demo_traffic.h"

#include "daemon/log.h"

#include "absl/strings/str_format.h"
#include "examples/echo_vsp.h"

namespace kmcld {

DemoTraffic::~DemoTraffic() { Stop(); }

absl::Status DemoTraffic::Start(kmcl::Partition& partition, uint64_t packets_per_round,
                                absl::Duration interval) {
  const GUID instance = {0xdeadbeef, 0xd3d3, 0x4e4e, {0x80, 0, 0, 0, 0, 0, 0, 1}};
  NTSTATUS st = EchoVspCreate(partition.vmbus_handle(), &instance, &vsp_);
  if (!NT_SUCCESS(st)) {
    return absl::InternalError(absl::StrFormat("demo echo VSP failed: 0x%08X", static_cast<uint32_t>(st)));
  }
  st = EchoVscCreate(partition.vmbus_handle(), 10000, &vsc_);
  if (!NT_SUCCESS(st)) {
    EchoVspDestroy(vsp_);
    vsp_ = nullptr;
    return absl::InternalError(absl::StrFormat("demo echo VSC failed: 0x%08X", static_cast<uint32_t>(st)));
  }
  thread_ = std::thread([this, packets_per_round, interval] { Run(packets_per_round, interval); });
  return absl::OkStatus();
}

void DemoTraffic::Run(uint64_t packets_per_round, absl::Duration interval) {
  do {
    absl::Time start = absl::Now();
    uint64_t bad = EchoVscRun(vsc_, packets_per_round, 256, 64);
    double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    echoed_ += packets_per_round;
    log::Info(absl::StrFormat("demo: %d packets echoed on the default partition's echo channel "
                              "(%d this round at %.0f round trips/s, %d mismatched)",
                              echoed_.load(), packets_per_round, packets_per_round / seconds, bad));
  } while (!stop_.WaitForNotificationWithTimeout(interval));
}

void DemoTraffic::Stop() {
  if (thread_.joinable()) {
    stop_.Notify();
    thread_.join();
  }
  if (vsc_ != nullptr) EchoVscDestroy(vsc_);
  if (vsp_ != nullptr) EchoVspDestroy(vsp_);
  vsc_ = nullptr;
  vsp_ = nullptr;
}

}  // namespace kmcld
