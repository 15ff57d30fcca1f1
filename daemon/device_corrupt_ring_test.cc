// A guest that corrupts the ring of a built-in device's channel (the
// heartbeat VSP, which kmcld drives through the KMCL surface): kmcld reports
// it as an EVENT_KIND_RING_CORRUPT event naming the partition, the channel
// and the device, which its log writes as a warning (a JSON line); once per
// detection, again after the guest opens the channel afresh, and within the
// one budget per partition that the partition's endpoints share.
//
// The hostile guest is a kmcld guest endpoint that opens the device's offer
// and then writes an impossible write_index into its ring to the host. No
// gRPC, so these run under TSan too.
#include <memory>
#include <string>
#include <vector>

#include "daemon/config.h"
#include "daemon/kmcl_services.h"
#include "daemon/log_capture.h"
#include "daemon/registry.h"
#include "gtest/gtest.h"
#include "kmcl_core/wire/vmbus_wire.h"
#include "nlohmann/json.hpp"

namespace kmcld {
namespace {

namespace ic = kmcl::devices::ic;

class DeviceCorruptRing : public ::testing::Test {
 protected:
  void SetUp() override {
    kmcl::PartitionOptions po;
    po.memory_bytes = 64 << 20;
    auto entry = registry().AddPartition(*kmcl::Partition::Create(po));
    ASSERT_TRUE(entry.ok()) << entry.status();
    entry_ = *entry;
    DeviceOptions options;
    options.services = {ic::IcService::kHeartbeat};
    options.emulated_guest = false;  // the test's guest takes the offer
    // The VSP sends NEGOTIATE again every few ticks while unanswered: each
    // send runs the host's I/O task, which then reads its incoming ring.
    options.host.request_timeout = absl::Milliseconds(20);
    options.poll_interval = absl::Milliseconds(10);
    ASSERT_TRUE(registry().AttachDevices(entry_, options).ok());
    vsp_ = entry_->devices()->vsp(ic::IcService::kHeartbeat);
    ASSERT_NE(vsp_, nullptr);
  }
  void TearDown() override {
    CloseGuest();
    services_.Shutdown();
  }

  Registry& registry() { return services_.registry(); }

  // A guest endpoint opens the heartbeat offer, then breaks its ring to the
  // host. Returns the channel's relid.
  uint32_t OpenAndCorrupt() {
    kmcl::Partition& partition = entry_->partition();
    guest_ = *Endpoint::Create(entry_->shared_partition(), entry_->id(), kmcl::v1::ENDPOINT_ROLE_GUEST, registry().limits().endpoint,
                               registry().log(), registry().timer(), entry_->peer_log);
    EXPECT_TRUE(
        guest_->channel().SetTargetPnp(ic::ServiceInfo(ic::IcService::kHeartbeat).interface_type, std::nullopt, 0).ok());
    EXPECT_TRUE(guest_->channel().Enable().ok());
    EXPECT_TRUE(guest_->WaitOpened(absl::Now() + absl::Seconds(20)).ok());
    const uint32_t relid = guest_->relid();
    std::vector<kmcl::GpadlInfo> gpadls = partition.gpadls().ListForChannel(relid);
    EXPECT_EQ(gpadls.size(), 1u);
    if (gpadls.empty()) return relid;
    absl::StatusOr<kmcl::GuestView> view = partition.memory().MapPages({&gpadls[0].ranges.at(0).pfns.at(0), 1}, true);
    EXPECT_TRUE(view.ok()) << view.status();
    if (!view.ok()) return relid;
    auto* control = reinterpret_cast<kmcl::wire::RingControl*>(view->data());
    std::atomic_ref<uint32_t>(control->write_index).store(0xfffffff8u);
    return relid;
  }
  void CloseGuest() {
    if (guest_ == nullptr) return;
    guest_->EndStreamAndRelease();
    guest_->channel().Disable().IgnoreError();
    guest_.reset();
  }
  bool WaitForPeerErrors(uint64_t n) {
    return vsp_->WaitForStats([n](const ic::VspStats& s) { return s.peer_errors >= n; }, absl::Seconds(20));
  }
  // The RING_CORRUPT events in the event log.
  std::vector<kmcl::v1::Event> CorruptEvents() {
    std::vector<kmcl::v1::Event> all, out;
    EXPECT_TRUE(registry().log().Read(0, 10000, &all).ok());
    for (kmcl::v1::Event& e : all) {
      if (e.kind() == kmcl::v1::EVENT_KIND_RING_CORRUPT) out.push_back(std::move(e));
    }
    return out;
  }

  JsonLogCapture capture_;  // before services_: kmcld logs into it throughout
  KmclServices services_{DefaultConfig()};
  std::shared_ptr<PartitionEntry> entry_;
  ic::IcVsp* vsp_ = nullptr;
  std::shared_ptr<Endpoint> guest_;
};

TEST_F(DeviceCorruptRing, IsAnEventAndAWarningNamingTheDeviceOncePerOpen) {
  const uint32_t relid = OpenAndCorrupt();
  ASSERT_TRUE(WaitForPeerErrors(1));
  std::vector<kmcl::v1::Event> events = CorruptEvents();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].partition_id(), entry_->id());
  EXPECT_EQ(events[0].channel().channel_id(), relid);
  EXPECT_EQ(events[0].role(), kmcl::v1::ENDPOINT_ROLE_HOST);
  EXPECT_EQ(events[0].detail().rfind("incoming ring: ring corrupt: write_index 4294967288 is not", 0), 0u)
      << events[0].detail();
  EXPECT_NE(events[0].detail().find("; interface_type 57164f39-9115-4e78-ab55-382f3bd5422d; device heartbeat"),
            std::string::npos)
      << events[0].detail();

  // kmcld's log writes it at warning level, as one JSON object.
  const std::string line = capture_.sink->WaitFor(
      [](const std::string& l) { return l.find("ring corrupt") != std::string::npos; }, std::chrono::seconds(20));
  ASSERT_FALSE(line.empty());
  const nlohmann::json j = nlohmann::json::parse(line);  // throws if not JSON
  EXPECT_EQ(j["level"], "warning");
  EXPECT_EQ(j["partition"], entry_->id());
  EXPECT_EQ(j["channel"], std::to_string(relid));
  EXPECT_EQ(j["role"], "host");
  EXPECT_EQ(j["detail"], events[0].detail());

  // The guest closes and opens the offer again: fresh rings; breaking them
  // again is a new detection and a new event.
  CloseGuest();
  OpenAndCorrupt();
  ASSERT_TRUE(WaitForPeerErrors(2));
  EXPECT_EQ(CorruptEvents().size(), 2u);
  EXPECT_EQ(capture_.sink->Count("ring corrupt"), 2);
}

TEST_F(DeviceCorruptRing, SharesThePartitionsBudgetWithItsEndpoints) {
  // The partition's endpoints have used the whole minute's budget.
  uint64_t dropped = 0;
  for (int i = 0; i < Endpoint::kPeerEventsPerMinute; ++i) ASSERT_TRUE(entry_->peer_log->Admit(&dropped));
  OpenAndCorrupt();
  ASSERT_TRUE(WaitForPeerErrors(1));  // reported to kmcld, which refused to log it
  EXPECT_TRUE(CorruptEvents().empty());
  EXPECT_EQ(capture_.sink->Count("ring corrupt"), 0);
  EXPECT_FALSE(entry_->peer_log->Admit(&dropped)) << "still the same minute";
}

}  // namespace
}  // namespace kmcld
