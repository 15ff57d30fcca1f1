// A remote tool takes the guest role of the heartbeat device over kmcl.v1
// and speaks the IC protocol in raw bytes built here from the documented
// layout (docs/devices.md), not from devices/ic's encoders: it opens the
// offer with GuestChannelService, attaches a PacketService stream, answers
// NEGOTIATE and each heartbeat, and the host VSP sees a live guest. A
// malformed answer is counted, logged at warning level naming the
// partition, channel and interface (a JSON line), and the heartbeat keeps
// going.
//
// Client and server share this process (in-process gRPC), which TSan cannot
// follow through Debian's uninstrumented libgrpc, so it is skipped there;
// vsp_test covers the same channel without gRPC under TSan.
//
// A guest endpoint that corrupts its outgoing ring is named in a warning
// (a JSON line) too; that test has no gRPC and runs under TSan.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/config.h"
#include "daemon/device_api.h"
#include "daemon/device_service.h"
#include "daemon/kmcl_services.h"
#include "daemon/log.h"
#include "daemon/log_capture.h"
#include "daemon/registry.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "kmcl_core/wire/vmbus_wire.h"
#include "nlohmann/json.hpp"
#include "proto/channel.grpc.pb.h"
#include "proto/packet.grpc.pb.h"

namespace kmcld {
namespace {

namespace ic = kmcl::devices::ic;

uint16_t U16(const std::string& b, size_t at) {
  return static_cast<uint16_t>(static_cast<uint8_t>(b[at]) | static_cast<uint8_t>(b[at + 1]) << 8);
}
void PutU16(std::string& b, size_t at, uint16_t v) {
  b[at] = static_cast<char>(v);
  b[at + 1] = static_cast<char>(v >> 8);
}

// The guest's answer to one host packet, edited in place as Linux does:
// NEGOTIATE picks framework 3.0 and message 3.0; HEARTBEAT adds one to the
// sequence; icflags become TRANSACTION|RESPONSE (1|4).
std::string Answer(std::string p) {
  const uint16_t type = U16(p, 12);  // icmsgtype
  if (type == 0) {                   // NEGOTIATE: body at 28
    p.resize(std::max<size_t>(p.size(), 28 + 16));
    PutU16(p, 18, 16);  // icmsgsize
    PutU16(p, 28, 1);   // icframe_vercnt
    PutU16(p, 30, 1);   // icmsg_vercnt
    PutU16(p, 36, 3);   // framework 3.0
    PutU16(p, 38, 0);
    PutU16(p, 40, 3);   // message 3.0
    PutU16(p, 42, 0);
  } else if (type == 1) {  // HEARTBEAT: u64 seq_num at 28
    uint64_t seq;
    std::memcpy(&seq, p.data() + 28, 8);  // little-endian host (x86-64)
    ++seq;
    std::memcpy(p.data() + 28, &seq, 8);
  }
  p[25] = 1 | 4;
  return p;
}

TEST(DeviceNetworkGuest, ARawBytesGuestOverKmclV1KeepsTheHeartbeatAlive) {
#if defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "in-process gRPC under TSan (see the file comment)";
#endif
  JsonLogCapture capture;
  const std::shared_ptr<CaptureSink>& sink = capture.sink;
  KmclServices services(DefaultConfig());
  kmcl::PartitionOptions po;
  po.memory_bytes = 64 << 20;
  auto entry = services.registry().AddPartition(*kmcl::Partition::Create(po));
  ASSERT_TRUE(entry.ok()) << entry.status();
  DeviceOptions d;
  d.services = {ic::IcService::kHeartbeat};
  d.emulated_guest = false;  // the remote tool is the guest
  d.host.heartbeat_interval = absl::Milliseconds(10);
  d.poll_interval = absl::Milliseconds(5);
  ASSERT_TRUE(services.registry().AttachDevices(*entry, d).ok());
  std::shared_ptr<PartitionDevices> devices = (*entry)->devices();
  DeviceService device_service(services.registry());
  grpc::ServerBuilder builder;
  services.RegisterAll(builder);
  builder.RegisterService(&device_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  auto channel = server->InProcessChannel({});
  auto guest = kmcl::v1::GuestChannelService::NewStub(channel);
  auto packets = kmcl::v1::PacketService::NewStub(channel);

  kmcl::v1::OpenChannelRequest open;
  open.set_partition_id("default");
  open.mutable_interface_type()->set_value("57164f39-9115-4e78-ab55-382f3bd5422d");
  kmcl::v1::ChannelResponse opened;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    grpc::Status st = guest->OpenChannel(&ctx, open, &opened);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }

  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto stream = packets->Attach(&ctx);
  kmcl::v1::AttachRequest attach;
  *attach.mutable_attach()->mutable_endpoint()->mutable_channel() = opened.channel().offer().channel();
  attach.mutable_attach()->mutable_endpoint()->set_role(kmcl::v1::ENDPOINT_ROLE_GUEST);
  ASSERT_TRUE(stream->Write(attach));

  ic::IcVsp* vsp = devices->vsp(ic::IcService::kHeartbeat);
  auto sequence = [&] {
    uint64_t seq = 0;
    vsp->Run([&](ic::IcHostService& s, absl::Time now, ic::IcOutput&) {
      seq = static_cast<ic::HeartbeatHost&>(s).Status(now).last_sequence;
    });
    return seq;
  };
  uint64_t tag = 0;
  constexpr int kGarbage = PartitionDevices::kPeerWarningsPerMinute + 2;
  bool sent_garbage = false;
  kmcl::v1::AttachResponse r;
  while (sequence() < 5 && stream->Read(&r)) {
    if (!r.has_received()) continue;
    kmcl::v1::AttachRequest sends, completions, credits;
    for (const kmcl::v1::ReceivedPacket& p : r.received().packets()) {
      kmcl::v1::SendPacket* s = sends.mutable_sends()->add_packets();
      s->set_tag(++tag);
      s->set_payload(Answer(p.payload()));
      completions.mutable_completions()->add_completions()->set_delivery_id(p.delivery_id());
    }
    if (!sent_garbage && sequence() >= 2) {
      // Shorter than a header, two more than the log admits in a minute.
      // The channel handles its packets one at a time, so once the counter
      // shows the last one, every packet before it was logged or refused.
      for (int i = 0; i < kGarbage; ++i) {
        sends.mutable_sends()->add_packets()->set_payload(std::string(10, '\x7f'));
      }
      sent_garbage = true;
    }
    credits.mutable_delivery_credits()->set_credits(r.received().packets_size());
    ASSERT_TRUE(stream->Write(sends));
    ASSERT_TRUE(stream->Write(completions));
    ASSERT_TRUE(stream->Write(credits));
  }
  EXPECT_GE(sequence(), 5u) << "the raw-bytes guest kept the heartbeat going";
  EXPECT_TRUE(vsp->WaitUntil(
      [](ic::IcHostService& s) { return s.core().counters().short_packets == static_cast<uint64_t>(kGarbage); },
      absl::Seconds(20)));

  DeviceApi api(services.registry());
  kmcl::v1::ListDevicesRequest lr;
  kmcl::v1::ListDevicesResponse list;
  ASSERT_TRUE(api.ListDevices(lr, &list).ok());
  ASSERT_EQ(list.devices_size(), 1);
  EXPECT_TRUE(list.devices(0).negotiated());
  EXPECT_EQ(list.devices(0).message_version(), "3.0");
  EXPECT_FALSE(list.devices(0).emulated_guest());
  EXPECT_EQ(list.devices(0).counters().short_packets(), static_cast<uint64_t>(kGarbage));

  // The warning names the offender and what was wrong, as one JSON object.
  const std::string line = sink->WaitFor(
      [](const std::string& l) { return l.find("malformed packet from the guest") != std::string::npos; },
      std::chrono::seconds(20));
  ASSERT_FALSE(line.empty()) << "no warning for the malformed packet";
  const nlohmann::json j = nlohmann::json::parse(line);  // throws if not JSON
  EXPECT_EQ(j["level"], "warning");
  EXPECT_EQ(j["msg"], "malformed packet from the guest");
  EXPECT_EQ(j["partition"], "default");
  EXPECT_EQ(j["channel"], std::to_string(opened.channel().offer().channel().channel_id()));
  EXPECT_EQ(j["role"], "host");
  EXPECT_EQ(j["interface"], "heartbeat");
  EXPECT_EQ(j["interface_type"], "57164f39-9115-4e78-ab55-382f3bd5422d");
  // The ring carries in-band payloads in 8-byte units: the 10 bytes arrive as 16.
  EXPECT_EQ(j["problem"], "IC packet of 16 bytes is shorter than its 28-byte header");
  EXPECT_EQ(j["dropped_before"], "0");
  // The rest were counted but not logged: the log admits at most
  // kPeerWarningsPerMinute a minute per partition.
  const std::vector<std::string> lines = sink->Lines();
  const auto warnings = std::count_if(lines.begin(), lines.end(), [](const std::string& l) {
    return l.find("malformed packet from the guest") != std::string::npos;
  });
  EXPECT_EQ(warnings, PartitionDevices::kPeerWarningsPerMinute);
  kmcl::v1::GetHeartbeatRequest hr;
  hr.set_partition_id("default");
  kmcl::v1::HeartbeatState hb;
  ASSERT_TRUE(api.GetHeartbeat(hr, &hb).ok());
  EXPECT_TRUE(hb.alive());
  EXPECT_EQ(hb.last_sequence(), hb.answers());

  // Closing the guest endpoint ends the stream (OK) from the daemon's side.
  {
    kmcl::v1::ChannelRequest close;
    *close.mutable_channel() = opened.channel().offer().channel();
    kmcl::v1::ChannelResponse closed;
    grpc::ClientContext cctx;
    cctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    grpc::Status st = guest->CloseChannel(&cctx, close, &closed);
    EXPECT_TRUE(st.ok()) << st.error_message();
  }
  stream->WritesDone();
  while (stream->Read(&r)) {
  }
  EXPECT_TRUE(stream->Finish().ok());
  server->Shutdown();
  server->Wait();
  device_service.Drain();
  devices.reset();
  services.Shutdown();
}

// A guest endpoint that breaks its own outgoing ring (a hostile guest
// writes its ring's write_index): the host endpoint's channel finds it, and
// kmcld logs one warning naming the partition, channel, role, interface and
// what was wrong, as a JSON line. No gRPC, so this one runs under TSan too.
TEST(DeviceNetworkGuest, AGuestThatCorruptsItsOutgoingRingIsNamedInAWarning) {
  JsonLogCapture capture;
  const std::shared_ptr<CaptureSink>& sink = capture.sink;
  KmclServices services(DefaultConfig());
  Registry& registry = services.registry();
  kmcl::PartitionOptions po;
  po.memory_bytes = 64 << 20;
  auto entry = registry.AddPartition(*kmcl::Partition::Create(po));
  ASSERT_TRUE(entry.ok()) << entry.status();
  kmcl::Partition& partition = (*entry)->partition();
  auto make = [&](Endpoint::Role role) {
    return *Endpoint::Create((*entry)->shared_partition(), (*entry)->id(), role, registry.limits().endpoint, registry.log(),
                             registry.timer(), (*entry)->peer_log);
  };
  std::shared_ptr<Endpoint> host = make(kmcl::v1::ENDPOINT_ROLE_HOST);
  std::shared_ptr<Endpoint> guest = make(kmcl::v1::ENDPOINT_ROLE_GUEST);
  const kmcl::Guid type = *kmcl::Guid::Parse("11111111-2222-3333-4444-555555555555");
  ASSERT_TRUE(host->channel().SetTargetInterfaceId(type, kmcl::Guid::Random()).ok());
  ASSERT_TRUE(host->channel().Enable().ok());
  ASSERT_TRUE(host->channel().Start().ok());
  ASSERT_TRUE(guest->channel().SetTargetPnp(type, std::nullopt, 0).ok());
  ASSERT_TRUE(guest->channel().Enable().ok());
  ASSERT_TRUE(guest->WaitOpened(absl::Now() + absl::Seconds(20)).ok());

  // The guest-to-host ring's control page, through the guest's own pages
  // (the ring GPADL starts with it). The guest sends nothing more, so
  // nothing rewrites the forged index.
  const uint32_t relid = guest->relid();
  std::vector<kmcl::GpadlInfo> gpadls = partition.gpadls().ListForChannel(relid);
  ASSERT_EQ(gpadls.size(), 1u);
  absl::StatusOr<kmcl::GuestView> view = partition.memory().MapPages({&gpadls[0].ranges.at(0).pfns.at(0), 1}, true);
  ASSERT_TRUE(view.ok()) << view.status();
  auto* control = reinterpret_cast<kmcl::wire::RingControl*>(view->data());
  std::atomic_ref<uint32_t>(control->write_index).store(0xfffffff8u);
  // The host's I/O task reads its incoming ring on its next pass: a send
  // from the host that needs no completion ends on that task and runs it.
  kmcl::Packet* packet = host->channel().AllocatePacket();
  const std::vector<uint8_t> payload(8, 1);
  ASSERT_TRUE(host->channel().Send(*packet, payload, {}, 0).ok());

  const std::string line = sink->WaitFor(
      [](const std::string& l) { return l.find("ring corrupt") != std::string::npos; }, std::chrono::seconds(20));
  ASSERT_FALSE(line.empty()) << "no warning for the corrupt ring";
  const nlohmann::json j = nlohmann::json::parse(line);  // throws if not JSON
  EXPECT_EQ(j["level"], "warning");
  EXPECT_EQ(j["msg"], "ring corrupt");
  EXPECT_EQ(j["partition"], (*entry)->id());
  EXPECT_EQ(j["channel"], std::to_string(relid));
  EXPECT_EQ(j["role"], "host");
  EXPECT_EQ(j["detail"],
            "incoming ring: ring corrupt: write_index 4294967288 is not an 8-byte aligned offset below " +
                std::to_string(host->channel().Snapshot().incoming->data_size) +
                "; interface_type 11111111-2222-3333-4444-555555555555");
  EXPECT_EQ(host->channel().Snapshot().stats.corrupt_packets, 1u);

  for (std::shared_ptr<Endpoint>* ep : {&host, &guest}) {  // the host first, as endpoint_test does
    (*ep)->EndStreamAndRelease();
    (*ep)->channel().Disable().IgnoreError();
    ep->reset();
  }
  const std::vector<std::string> lines = sink->Lines();
  EXPECT_EQ(std::count_if(lines.begin(), lines.end(),
                          [](const std::string& l) { return l.find("ring corrupt") != std::string::npos; }),
            1)
      << "one detection, one line";
  services.Shutdown();
}

}  // namespace
}  // namespace kmcld
