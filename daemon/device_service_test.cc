// kmcl.v1.DeviceService against a partition with the four devices and
// kmcld's emulated guest: every call through DeviceApi (listing, heartbeat
// state, shutdown, a time sample, every KVP call, and the errors: no such
// partition, a bad pool, a failed negotiation, a guest that does not
// answer), and the gRPC wrapper over an in-process channel. Waits are
// bounded waits on conditions, not sleeps.
#include <map>
#include <memory>

#include "daemon/device_api.h"
#include "daemon/device_demo.h"
#include "daemon/device_service.h"
#include "daemon/partition_devices.h"
#include "daemon/registry.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "proto/devices.grpc.pb.h"

namespace kmcld {
namespace {

namespace ic = kmcl::devices::ic;

// A registry holding one partition "vm" with devices `d`.
struct RegistryWithDevices {
  explicit RegistryWithDevices(const DeviceOptions& d) {
    kmcl::PartitionOptions o;
    o.memory_bytes = 64 << 20;
    o.id = "vm";
    entry = *registry.AddPartition(*kmcl::Partition::Create(o));
    status = registry.AttachDevices(entry, d);
  }
  EventLog log{1024};
  Timer timer;
  Registry registry{RegistryLimits{}, log, timer};
  std::shared_ptr<PartitionEntry> entry;
  absl::Status status;
};

class DeviceServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DeviceOptions d;
    d.services = *ParseDeviceList("default");
    d.host.request_timeout = absl::Seconds(2);
    d.host.heartbeat_interval = absl::Milliseconds(20);
    d.poll_interval = absl::Milliseconds(10);
    env_ = std::make_unique<RegistryWithDevices>(d);
    ASSERT_TRUE(env_->status.ok()) << env_->status;
    devices_ = env_->entry->devices();
    for (ic::IcService s : d.services) {
      ASSERT_TRUE(devices_->vsp(s)->WaitUntil(
          [](ic::IcHostService& h) { return h.core().state() == ic::IcHostCore::State::kReady; },
          absl::Seconds(20)));
    }
    api_ = std::make_unique<DeviceApi>(env_->registry);
  }
  void TearDown() override {
    api_.reset();
    devices_.reset();
    env_.reset();
  }

  std::unique_ptr<RegistryWithDevices> env_;
  std::shared_ptr<PartitionDevices> devices_;
  std::unique_ptr<DeviceApi> api_;
};

TEST_F(DeviceServiceTest, ListsTheFourDevicesNegotiated) {
  kmcl::v1::ListDevicesRequest req;
  kmcl::v1::ListDevicesResponse resp;
  ASSERT_TRUE(api_->ListDevices(req, &resp).ok());
  ASSERT_EQ(resp.devices_size(), 4);
  for (const kmcl::v1::Device& d : resp.devices()) {
    EXPECT_EQ(d.partition_id(), "vm");
    EXPECT_TRUE(d.negotiated()) << d.kind();
    EXPECT_EQ(d.framework_version(), "3.0");
    EXPECT_TRUE(d.emulated_guest());
  }
  EXPECT_EQ(resp.devices(0).interface_type(), "57164f39-9115-4e78-ab55-382f3bd5422d");
  EXPECT_EQ(resp.devices(3).message_version(), "4.0") << "KVP";
  EXPECT_GE(resp.recent_events_size(), 4) << "four negotiations";
  req.set_partition_id("nope");
  EXPECT_EQ(api_->ListDevices(req, &resp).code(), absl::StatusCode::kNotFound);
}

TEST_F(DeviceServiceTest, HeartbeatAdvancesAndIsAlive) {
  ASSERT_TRUE(devices_->vsp(ic::IcService::kHeartbeat)
                  ->WaitUntil([](ic::IcHostService& s) {
                    return static_cast<ic::HeartbeatHost&>(s).Status(absl::Now()).answers >= 3;
                  }, absl::Seconds(20)));
  kmcl::v1::GetHeartbeatRequest req;
  req.set_partition_id("vm");
  kmcl::v1::HeartbeatState hb;
  ASSERT_TRUE(api_->GetHeartbeat(req, &hb).ok());
  EXPECT_TRUE(hb.negotiated());
  EXPECT_TRUE(hb.alive());
  EXPECT_GE(hb.last_sequence(), 3u);
  EXPECT_EQ(hb.last_sequence(), hb.answers()) << "+1 per round trip from 0";
  EXPECT_GT(hb.last_answer_unix_nanos(), 0);
}

TEST_F(DeviceServiceTest, ShutdownIsAcknowledged) {
  kmcl::v1::RequestShutdownRequest req;
  req.set_partition_id("vm");
  req.set_action(kmcl::v1::SHUTDOWN_ACTION_RESTART);
  req.set_message("patching");
  kmcl::v1::RequestShutdownResponse resp;
  ASSERT_TRUE(api_->RequestShutdown(req, &resp).ok());
  EXPECT_TRUE(resp.acknowledged());
  req.set_action(kmcl::v1::SHUTDOWN_ACTION_HIBERNATE);
  ASSERT_TRUE(api_->RequestShutdown(req, &resp).ok());
  EXPECT_FALSE(resp.acknowledged()) << "the emulated guest does not hibernate";
  EXPECT_EQ(resp.guest_status(), ic::kHvEFail);
  req.set_action(static_cast<kmcl::v1::ShutdownAction>(99));
  EXPECT_EQ(api_->RequestShutdown(req, &resp).code(), absl::StatusCode::kInvalidArgument)
      << "an unknown action is not sent to the guest as a shutdown";
  devices_->vsc(ic::IcService::kShutdown)->Inspect([](ic::IcGuest& g) {
    ASSERT_EQ(g.shutdowns().size(), 2u);
    EXPECT_EQ(g.shutdowns()[0].request.display_message, "patching");
  });
}

TEST_F(DeviceServiceTest, TimeSampleIsAnswered) {
  kmcl::v1::SendTimeSampleRequest req;
  req.set_partition_id("vm");
  req.set_sync(true);
  kmcl::v1::TimeSample resp;
  ASSERT_TRUE(api_->SendTimeSample(req, &resp).ok());
  EXPECT_EQ(resp.guest_status(), 0u);
  EXPECT_GE(resp.answered_unix_nanos(), resp.host_time_unix_nanos());
  EXPECT_EQ(resp.samples_answered(), 1u);
}

TEST_F(DeviceServiceTest, KvpCalls) {
  for (auto [k, v] : std::vector<std::pair<std::string, std::string>>{{"a", "1"}, {"b", "2"}}) {
    kmcl::v1::KvpSetRequest set;
    set.set_partition_id("vm");
    set.set_pool(1);
    set.set_key(k);
    set.set_value(v);
    kmcl::v1::KvpStatus st;
    ASSERT_TRUE(api_->KvpSet(set, &st).ok());
    EXPECT_EQ(st.guest_status(), 0u);
  }
  kmcl::v1::KvpGetRequest get;
  get.set_partition_id("vm");
  get.set_pool(1);
  get.set_key("b");
  kmcl::v1::KvpGetResponse got;
  ASSERT_TRUE(api_->KvpGet(get, &got).ok());
  EXPECT_TRUE(got.found());
  EXPECT_EQ(got.value(), "2");
  kmcl::v1::KvpDeleteRequest del;
  del.set_partition_id("vm");
  del.set_pool(1);
  del.set_key("a");
  kmcl::v1::KvpStatus st;
  ASSERT_TRUE(api_->KvpDelete(del, &st).ok());
  EXPECT_EQ(st.guest_status(), 0u);
  get.set_key("a");
  ASSERT_TRUE(api_->KvpGet(get, &got).ok());
  EXPECT_FALSE(got.found());
  EXPECT_EQ(got.guest_status(), ic::kHvSCont);
  kmcl::v1::KvpEnumerateRequest en;
  en.set_partition_id("vm");
  en.set_pool(1);
  kmcl::v1::KvpEnumerateResponse all;
  ASSERT_TRUE(api_->KvpEnumerate(en, &all).ok());
  ASSERT_EQ(all.pairs_size(), 1);
  EXPECT_EQ(all.pairs(0).key(), "b");
  // Errors.
  get.set_pool(5);
  EXPECT_EQ(api_->KvpGet(get, &got).code(), absl::StatusCode::kInvalidArgument);
  get.set_pool(0);
  get.set_key(std::string(256, 'k'));
  EXPECT_EQ(api_->KvpGet(get, &got).code(), absl::StatusCode::kInvalidArgument);
  get.set_partition_id("other");
  EXPECT_EQ(api_->KvpGet(get, &got).code(), absl::StatusCode::kNotFound);
}

TEST_F(DeviceServiceTest, AGuestThatDoesNotAnswerIsADeadlineAndShowsUnresponsive) {
  devices_->vsc(ic::IcService::kKvp)->Inspect([](ic::IcGuest& g) { g.set_answering(false); });
  kmcl::v1::KvpGetRequest get;
  get.set_partition_id("vm");
  get.set_key("x");
  kmcl::v1::KvpGetResponse got;
  EXPECT_EQ(api_->KvpGet(get, &got).code(), absl::StatusCode::kDeadlineExceeded);
  devices_->vsc(ic::IcService::kKvp)->Inspect([](ic::IcGuest& g) { g.set_answering(true); });
  get.set_key("y");
  ASSERT_TRUE(api_->KvpGet(get, &got).ok()) << "the channel keeps working";
}

TEST_F(DeviceServiceTest, DemoRoundShowsHeartbeatKvpAndTimeSync) {
  const std::string line = DeviceDemo::Round(*api_, "vm", 7);
  EXPECT_NE(line.find("heartbeat sequence"), std::string::npos) << line;
  EXPECT_NE(line.find("(alive)"), std::string::npos) << line;
  EXPECT_NE(line.find("kmcld/demo-round = 7 (round trip ok)"), std::string::npos) << line;
  EXPECT_NE(line.find("time sample answered in"), std::string::npos) << line;
  EXPECT_EQ(DeviceDemo::Round(*api_, "elsewhere", 1), "devices:") << "nothing to report";
}

TEST(DeviceApiNegotiation, NoCommonVersionIsFailedPrecondition) {
  DeviceOptions d;
  d.services = {ic::IcService::kKvp};
  d.host.message_versions = {{9, 0}};
  RegistryWithDevices env(d);
  ASSERT_TRUE(env.status.ok()) << env.status;
  EXPECT_EQ(env.registry.AttachDevices(env.entry, d).code(), absl::StatusCode::kAlreadyExists)
      << "one set of devices per partition";
  std::shared_ptr<PartitionDevices> devices = env.entry->devices();
  ASSERT_TRUE(devices->vsp(ic::IcService::kKvp)->WaitUntil(
      [](ic::IcHostService& h) { return h.core().state() == ic::IcHostCore::State::kFailed; }, absl::Seconds(20)));
  DeviceApi api(env.registry);
  kmcl::v1::KvpGetRequest get;
  get.set_partition_id("vm");
  get.set_key("k");
  kmcl::v1::KvpGetResponse got;
  absl::Status st = api.KvpGet(get, &got);
  EXPECT_TRUE(absl::IsFailedPrecondition(st)) << st;
  EXPECT_NE(st.message().find("no common version"), std::string::npos) << st;
  devices.reset();
}

TEST(DeviceNames, ListsDefaultNoneAndErrors) {
  EXPECT_EQ(ParseDeviceNames({})->size(), 0u);
  EXPECT_EQ(ParseDeviceNames({"none"})->size(), 0u);
  EXPECT_EQ(ParseDeviceNames({"default"})->size(), 4u);
  EXPECT_EQ(*ParseDeviceNames({"kvp", "heartbeat"}),
            (std::vector<ic::IcService>{ic::IcService::kKvp, ic::IcService::kHeartbeat}));
  EXPECT_EQ(ParseDeviceList("timesync, shutdown")->size(), 2u);
  EXPECT_EQ(DeviceNames(*ParseDeviceNames({"default"})),
            (std::vector<std::string>{"heartbeat", "shutdown", "timesync", "kvp"}));
  for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
           {"floppy"}, {"kvp", "kvp"}, {"default", "kvp"}, {"none", "kvp"}, {""}}) {
    auto r = ParseDeviceNames(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad.size();
  }
  EXPECT_NE(ParseDeviceNames({"floppy"}).status().message().find("floppy"), std::string::npos);
}

TEST(DeviceEvents, AreLoggedWithThePartitionAndTheDevicesChannel) {
  DeviceOptions d;
  d.services = {ic::IcService::kHeartbeat, ic::IcService::kShutdown};
  d.host.heartbeat_interval = absl::Milliseconds(10);
  d.host.heartbeat_timeout = absl::Milliseconds(200);
  d.poll_interval = absl::Milliseconds(5);
  RegistryWithDevices env(d);
  ASSERT_TRUE(env.status.ok()) << env.status;
  std::shared_ptr<PartitionDevices> devices = env.entry->devices();
  ic::IcVsp* hb = devices->vsp(ic::IcService::kHeartbeat);
  ASSERT_TRUE(hb->WaitUntil([](ic::IcHostService& h) { return h.core().state() == ic::IcHostCore::State::kReady; },
                            absl::Seconds(20)));
  // The guest stops answering: unresponsive within the timeout, then
  // responsive again once it answers.
  devices->vsc(ic::IcService::kHeartbeat)->Inspect([](ic::IcGuest& g) { g.set_answering(false); });
  ASSERT_TRUE(hb->WaitUntil([](ic::IcHostService& s) { return !static_cast<ic::HeartbeatHost&>(s).Status(absl::Now()).alive; },
                            absl::Seconds(20)));
  devices->vsc(ic::IcService::kHeartbeat)->Inspect([](ic::IcGuest& g) { g.set_answering(true); });
  ASSERT_TRUE(hb->WaitUntil([](ic::IcHostService& s) { return static_cast<ic::HeartbeatHost&>(s).Status(absl::Now()).alive; },
                            absl::Seconds(20)));
  DeviceApi api(env.registry);
  kmcl::v1::RequestShutdownRequest sd;
  sd.set_partition_id("vm");
  kmcl::v1::RequestShutdownResponse ack;
  ASSERT_TRUE(api.RequestShutdown(sd, &ack).ok());
  sd.set_action(kmcl::v1::SHUTDOWN_ACTION_HIBERNATE);
  ASSERT_TRUE(api.RequestShutdown(sd, &ack).ok());

  std::vector<kmcl::v1::Event> events;
  ASSERT_TRUE(env.log.Read(0, 1024, &events).ok());
  std::map<kmcl::v1::EventKind, int> count;
  uint32_t heartbeat_relid = 0;
  for (const kmcl::v1::Event& e : events) {
    ++count[e.kind()];
    if (e.kind() < kmcl::v1::EVENT_KIND_DEVICE_NEGOTIATED) continue;
    EXPECT_EQ(e.partition_id(), "vm");
    EXPECT_EQ(e.role(), kmcl::v1::ENDPOINT_ROLE_HOST);
    EXPECT_EQ(e.channel().partition_id(), "vm");
    EXPECT_NE(e.channel().channel_id(), 0u) << e.DebugString();
    EXPECT_FALSE(e.detail().empty());
    if (e.kind() == kmcl::v1::EVENT_KIND_DEVICE_GUEST_UNRESPONSIVE) heartbeat_relid = e.channel().channel_id();
    if (e.kind() == kmcl::v1::EVENT_KIND_DEVICE_SHUTDOWN_REFUSED) {
      EXPECT_EQ(e.status().code(), ic::kHvEFail);
    }
  }
  EXPECT_EQ(count[kmcl::v1::EVENT_KIND_DEVICE_NEGOTIATED], 2);
  EXPECT_EQ(count[kmcl::v1::EVENT_KIND_DEVICE_GUEST_UNRESPONSIVE], 1);
  EXPECT_EQ(count[kmcl::v1::EVENT_KIND_DEVICE_GUEST_RESPONSIVE], 1);
  EXPECT_EQ(count[kmcl::v1::EVENT_KIND_DEVICE_SHUTDOWN_ACKNOWLEDGED], 1);
  EXPECT_EQ(count[kmcl::v1::EVENT_KIND_DEVICE_SHUTDOWN_REFUSED], 1);
  bool found = false;
  for (const kmcl::ServerChannelInfo& info : env.entry->partition().ServerChannels()) {
    found = found || (info.relid == heartbeat_relid &&
                      info.offer.interface_type == ic::ServiceInfo(ic::IcService::kHeartbeat).interface_type);
  }
  EXPECT_TRUE(found) << "the event names the heartbeat offer, relid " << heartbeat_relid;
  devices.reset();
}

// The gRPC wrapper, in process. Under TSan this is skipped: client and
// server share one binary, and TSan cannot see the synchronisation inside
// Debian's uninstrumented libgrpc, so gRPC's own inline code reports races;
// DeviceApi above carries the logic and runs under TSan.
TEST_F(DeviceServiceTest, TheGrpcServiceServesTheSameCalls) {
#if defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "in-process gRPC under TSan (see above)";
#endif
  DeviceService service(env_->registry);
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  auto stub = kmcl::v1::DeviceService::NewStub(server->InProcessChannel({}));
  auto ctx = [] {
    auto c = std::make_unique<grpc::ClientContext>();
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return c;
  };
  kmcl::v1::ListDevicesResponse list;
  ASSERT_TRUE(stub->ListDevices(ctx().get(), {}, &list).ok());
  EXPECT_EQ(list.devices_size(), 4);
  kmcl::v1::KvpSetRequest set;
  set.set_partition_id("vm");
  set.set_key("k");
  set.set_value("v");
  kmcl::v1::KvpStatus st;
  ASSERT_TRUE(stub->KvpSet(ctx().get(), set, &st).ok());
  kmcl::v1::KvpGetRequest get;
  get.set_partition_id("vm");
  get.set_key("k");
  kmcl::v1::KvpGetResponse got;
  ASSERT_TRUE(stub->KvpGet(ctx().get(), get, &got).ok());
  EXPECT_EQ(got.value(), "v");
  get.set_partition_id("none");
  EXPECT_EQ(stub->KvpGet(ctx().get(), get, &got).error_code(), grpc::StatusCode::NOT_FOUND);
  kmcl::v1::RequestShutdownRequest sd;
  sd.set_partition_id("vm");
  kmcl::v1::RequestShutdownResponse ack;
  ASSERT_TRUE(stub->RequestShutdown(ctx().get(), sd, &ack).ok());
  EXPECT_TRUE(ack.acknowledged());
  server->Shutdown();
  server->Wait();
  service.Drain();
}

}  // namespace
}  // namespace kmcld
