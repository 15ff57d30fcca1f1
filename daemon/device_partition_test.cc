// Partitions get built-in devices by configuration, over kmcl.v1: a
// CreatePartition that lists them (and the errors for bad lists), their
// events in WatchEvents, a DeletePartition that takes them along, and a
// SavePartition/RestorePartition that carries them: the restored copy's
// heartbeat continues from the saved sequence without a new negotiation,
// and its KVP pool holds what was set before the save.
//
// Client and server share this process (in-process gRPC), which TSan cannot
// follow through Debian's uninstrumented libgrpc, so it is skipped there;
// device_service_test and devices/ic's vsp_test cover the same logic under
// TSan. Waits are bounded waits on conditions, not sleeps.
#include <map>
#include <memory>

#include "daemon/config.h"
#include "daemon/device_service.h"
#include "daemon/kmcl_services.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "proto/event.grpc.pb.h"
#include "proto/partition.grpc.pb.h"
#include "proto/save_restore.grpc.pb.h"

namespace kmcld {
namespace {

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto c = std::make_unique<grpc::ClientContext>();
  c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  return c;
}

class DevicePartitionTest : public ::testing::Test {
 protected:
  void SetUp() override {
#if defined(__SANITIZE_THREAD__)
    GTEST_SKIP() << "in-process gRPC under TSan (see the file comment)";
#endif
    config::KmcldConfig c = DefaultConfig();
    c.set_device_heartbeat_timeout_ms(30000);
    services_ = std::make_unique<KmclServices>(c);
    devices_ = std::make_unique<DeviceService>(services_->registry());
    grpc::ServerBuilder builder;
    services_->RegisterAll(builder);
    builder.RegisterService(devices_.get());
    server_ = builder.BuildAndStart();
    auto channel = server_->InProcessChannel({});
    partitions_ = kmcl::v1::PartitionService::NewStub(channel);
    device_ = kmcl::v1::DeviceService::NewStub(channel);
    events_ = kmcl::v1::EventService::NewStub(channel);
    save_ = kmcl::v1::SaveRestoreService::NewStub(channel);
  }
  void TearDown() override {
    if (server_ == nullptr) return;
    server_->Shutdown();
    server_->Wait();
    devices_->Drain();
    services_->Shutdown();
  }

  grpc::Status Create(const std::string& id, std::vector<std::string> devices, kmcl::v1::Partition* out) {
    kmcl::v1::CreatePartitionRequest req;
    req.set_id(id);
    req.set_guest_memory_bytes(64 << 20);
    for (std::string& d : devices) req.add_devices(std::move(d));
    return partitions_->CreatePartition(Ctx().get(), req, out);
  }
  kmcl::v1::HeartbeatState Heartbeat(const std::string& id) {
    kmcl::v1::GetHeartbeatRequest req;
    req.set_partition_id(id);
    kmcl::v1::HeartbeatState hb;
    grpc::Status st = device_->GetHeartbeat(Ctx().get(), req, &hb);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return hb;
  }
  // Waits (on the VSP's own condition) until `id`'s heartbeat has `answers`.
  void AwaitAnswers(const std::string& id, uint64_t answers) {
    auto entry = services_->registry().GetPartition(id);
    ASSERT_TRUE(entry.ok());
    std::shared_ptr<PartitionDevices> d = (*entry)->devices();
    ASSERT_NE(d, nullptr);
    ASSERT_TRUE(d->vsp(kmcl::devices::ic::IcService::kHeartbeat)->WaitUntil(
        [&](kmcl::devices::ic::IcHostService& s) {
          return static_cast<kmcl::devices::ic::HeartbeatHost&>(s).Status(absl::Now()).answers >= answers;
        },
        absl::Seconds(30)))
        << id << " heartbeat answers < " << answers;
  }
  std::vector<kmcl::v1::Event> Backlog(const std::string& partition) {
    kmcl::v1::WatchEventsRequest req;
    req.set_partition_id(partition);
    req.set_backlog_only(true);
    auto ctx = Ctx();
    auto reader = events_->WatchEvents(ctx.get(), req);
    std::vector<kmcl::v1::Event> out;
    kmcl::v1::Event e;
    while (reader->Read(&e)) out.push_back(e);
    grpc::Status st = reader->Finish();
    EXPECT_TRUE(st.ok()) << st.error_message();
    return out;
  }

  std::unique_ptr<KmclServices> services_;
  std::unique_ptr<DeviceService> devices_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<kmcl::v1::PartitionService::Stub> partitions_;
  std::unique_ptr<kmcl::v1::DeviceService::Stub> device_;
  std::unique_ptr<kmcl::v1::EventService::Stub> events_;
  std::unique_ptr<kmcl::v1::SaveRestoreService::Stub> save_;
};

TEST_F(DevicePartitionTest, CreatePartitionWithDevicesServesThemAndLogsTheirEvents) {
  kmcl::v1::Partition p;
  grpc::Status st = Create("vm", {"default"}, &p);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(std::vector<std::string>(p.devices().begin(), p.devices().end()),
            (std::vector<std::string>{"heartbeat", "shutdown", "timesync", "kvp"}));
  EXPECT_FALSE(p.devices_remote_guest());
  EXPECT_EQ(p.channel_count(), 4u) << "one offer per device";
  AwaitAnswers("vm", 1);

  kmcl::v1::ListDevicesRequest lr;
  lr.set_partition_id("vm");
  kmcl::v1::ListDevicesResponse list;
  ASSERT_TRUE(device_->ListDevices(Ctx().get(), lr, &list).ok());
  ASSERT_EQ(list.devices_size(), 4);
  for (const kmcl::v1::Device& d : list.devices()) EXPECT_TRUE(d.negotiated()) << d.kind();

  // A partition without devices has none, and lists none.
  ASSERT_TRUE(Create("plain", {}, &p).ok());
  EXPECT_EQ(p.devices_size(), 0);
  lr.set_partition_id("plain");
  list.Clear();
  ASSERT_TRUE(device_->ListDevices(Ctx().get(), lr, &list).ok());
  EXPECT_EQ(list.devices_size(), 0);

  std::map<uint32_t, int> negotiated_per_channel;
  for (const kmcl::v1::Event& e : Backlog("vm")) {
    if (e.kind() != kmcl::v1::EVENT_KIND_DEVICE_NEGOTIATED) continue;
    EXPECT_EQ(e.channel().partition_id(), "vm");
    EXPECT_EQ(e.role(), kmcl::v1::ENDPOINT_ROLE_HOST);
    ++negotiated_per_channel[e.channel().channel_id()];
  }
  EXPECT_EQ(negotiated_per_channel.size(), 4u) << "one negotiation on each device's channel";

  // A shutdown request shows as acknowledged in the log.
  kmcl::v1::RequestShutdownRequest sd;
  sd.set_partition_id("vm");
  kmcl::v1::RequestShutdownResponse ack;
  ASSERT_TRUE(device_->RequestShutdown(Ctx().get(), sd, &ack).ok());
  EXPECT_TRUE(ack.acknowledged());
  int acknowledged = 0;
  for (const kmcl::v1::Event& e : Backlog("vm")) acknowledged += e.kind() == kmcl::v1::EVENT_KIND_DEVICE_SHUTDOWN_ACKNOWLEDGED;
  EXPECT_EQ(acknowledged, 1);

  // Built-in devices are the partition's own: no force needed.
  kmcl::v1::DeletePartitionRequest del;
  del.set_id("vm");
  kmcl::v1::DeletePartitionResponse deleted;
  st = partitions_->DeletePartition(Ctx().get(), del, &deleted);
  ASSERT_TRUE(st.ok()) << st.error_message();
  kmcl::v1::GetHeartbeatRequest hr;
  hr.set_partition_id("vm");
  kmcl::v1::HeartbeatState hb;
  EXPECT_EQ(device_->GetHeartbeat(Ctx().get(), hr, &hb).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(DevicePartitionTest, BadDeviceListsAreInvalidArgumentAndCreateNothing) {
  for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
           {"floppy"}, {"kvp", "kvp"}, {"default", "heartbeat"}, {"none", "kvp"}}) {
    kmcl::v1::Partition p;
    grpc::Status st = Create("bad", bad, &p);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad[0];
    EXPECT_NE(st.error_message().find("devices: "), std::string::npos) << st.error_message();
    EXPECT_FALSE(services_->registry().HasPartition("bad"));
  }
  kmcl::v1::Partition p;
  EXPECT_NE(Create("bad", {"floppy"}, &p).error_message().find("\"floppy\""), std::string::npos);
  EXPECT_TRUE(Create("bad", {"none"}, &p).ok());
  EXPECT_EQ(p.devices_size(), 0);
}

TEST_F(DevicePartitionTest, SaveAndRestoreCarryTheDevices) {
  kmcl::v1::Partition p;
  ASSERT_TRUE(Create("vm", {"heartbeat", "kvp"}, &p).ok());
  AwaitAnswers("vm", 2);
  kmcl::v1::KvpSetRequest set;
  set.set_partition_id("vm");
  set.set_pool(0);
  set.set_key("saved-with");
  set.set_value("the partition");
  kmcl::v1::KvpStatus set_status;
  ASSERT_TRUE(device_->KvpSet(Ctx().get(), set, &set_status).ok());

  std::string blob;
  {
    kmcl::v1::SavePartitionRequest req;
    req.set_partition_id("vm");
    auto ctx = Ctx();
    auto reader = save_->SavePartition(ctx.get(), req);
    kmcl::v1::SaveChunk chunk;
    while (reader->Read(&chunk)) blob += chunk.data();
    grpc::Status st = reader->Finish();
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  const uint64_t saved_sequence = Heartbeat("vm").last_sequence();

  kmcl::v1::Partition restored;
  {
    auto ctx = Ctx();
    auto writer = save_->RestorePartition(ctx.get(), &restored);
    kmcl::v1::RestoreChunk target;
    target.mutable_target()->set_partition_id("copy");
    ASSERT_TRUE(writer->Write(target));
    kmcl::v1::RestoreChunk data;
    data.set_data(blob);
    ASSERT_TRUE(writer->Write(data));
    ASSERT_TRUE(writer->WritesDone());
    grpc::Status st = writer->Finish();
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  EXPECT_EQ(std::vector<std::string>(restored.devices().begin(), restored.devices().end()),
            (std::vector<std::string>{"heartbeat", "kvp"}));

  // The copy's heartbeat goes on from where the save left it, on the
  // negotiated channel: two more answers, and no negotiation of its own.
  const kmcl::v1::HeartbeatState first = Heartbeat("copy");
  EXPECT_TRUE(first.negotiated());
  EXPECT_GE(first.last_sequence(), 2u);
  EXPECT_LE(first.last_sequence(), saved_sequence + 1) << "continues, not restarted";
  AwaitAnswers("copy", first.answers() + 2);
  const kmcl::v1::HeartbeatState later = Heartbeat("copy");
  EXPECT_EQ(later.last_sequence() - first.last_sequence(), later.answers() - first.answers())
      << "+1 per answer, no gap";
  EXPECT_TRUE(later.alive());
  for (const kmcl::v1::Event& e : Backlog("copy")) {
    EXPECT_NE(e.kind(), kmcl::v1::EVENT_KIND_DEVICE_NEGOTIATED) << "the copy did not renegotiate";
  }
  // The KVP guest's pool came along, and the device answers there.
  kmcl::v1::KvpGetRequest get;
  get.set_partition_id("copy");
  get.set_pool(0);
  get.set_key("saved-with");
  kmcl::v1::KvpGetResponse got;
  grpc::Status st = device_->KvpGet(Ctx().get(), get, &got);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_TRUE(got.found());
  EXPECT_EQ(got.value(), "the partition");
  // The source resumed after the save.
  AwaitAnswers("vm", Heartbeat("vm").answers() + 1);
  get.set_partition_id("vm");
  ASSERT_TRUE(device_->KvpGet(Ctx().get(), get, &got).ok());
  EXPECT_EQ(got.value(), "the partition");
}

}  // namespace
}  // namespace kmcld
