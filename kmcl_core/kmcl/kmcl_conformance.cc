#include "kmcl_core/kmcl/kmcl_conformance.h"

namespace kmcl::conformance {
namespace {

Endpoint* Ep(VMBCHANNEL channel) { return static_cast<Endpoint*>(VmbChannelGetPointer(channel)); }

void Note(VMBCHANNEL channel, const char* what) {
  Endpoint* e = Ep(channel);
  e->callback_executor = kmcl::Executor::Current();
  e->rec->Add(e->name + ":" + what);
}

NTSTATUS Opened(VMBCHANNEL c) {
  Note(c, "opened");
  return Ep(c)->opened_result;
}
VOID Closed(VMBCHANNEL c) { Note(c, "closed"); }
VOID Suspend(VMBCHANNEL c) { Note(c, "suspend"); }
VOID Started(VMBCHANNEL c) { Note(c, "started"); }
VOID PostStarted(VMBCHANNEL c) { Note(c, "post_started"); }
VOID PnpFailure(VMBCHANNEL c, NTSTATUS) { Note(c, "pnp_failure"); }

VOID ProcessPacket(VMBCHANNEL c, VMBPACKETCOMPLETION p, PVOID buf, UINT32 len, UINT32 flags) {
  Endpoint* e = Ep(c);
  e->packet_executor = kmcl::Executor::Current();
  e->packets++;
  if (e->on_packet) {
    e->on_packet(c, p, buf, len, flags);
  } else {
    VmbChannelPacketComplete(p, buf, len);
  }
  e->rec->Add(e->name + ":packet");
}

VOID ProcessingComplete(VMBCHANNEL c, UINT32 n) {
  Endpoint* e = Ep(c);
  e->batches++;
  e->batch_packets += n;
}

}  // namespace

void KmclTest::SetUp() {
  PartitionOptions o;
  o.memory_bytes = 256 << 20;
  o.client_vtls = {0, 2};
  partition_ = *Partition::Create(o);
  device_ = KmclGetVmbusDevice(partition_->vmbus_handle(), 0);
  ASSERT_NE(device_, nullptr);
  ASSERT_EQ(KmclQueryInterface(nullptr, &KMCL_SERVER_INTERFACE_TYPE, reinterpret_cast<PINTERFACE>(&kmcl_),
                               sizeof(kmcl_), KMCL_SERVER_INTERFACE_VERSION_V1, nullptr),
            STATUS_SUCCESS);
  host_ = &NewEndpoint("host");
  guest_ = &NewEndpoint("guest");
}

void KmclTest::TearDown() {
  for (auto it = channels_.rbegin(); it != channels_.rend(); ++it) {
    kmcl_.VmbChannelDisable(*it);
    kmcl_.VmbChannelCleanup(*it);
  }
  channels_.clear();
}

Endpoint& KmclTest::NewEndpoint(const std::string& name) {
  endpoints_.push_back(std::make_unique<Endpoint>());
  endpoints_.back()->name = name;
  endpoints_.back()->rec = &rec_;
  return *endpoints_.back();
}

static void Configure(KMCL_SERVER_INTERFACE_V1& k, VMBCHANNEL ch, Endpoint& e) {
  k.VmbChannelSetPointer(ch, &e);
  VMB_CHANNEL_STATE_CHANGE_CALLBACKS cb;
  VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT(&cb);
  cb.EvtChannelOpened = Opened;
  cb.EvtChannelClosed = Closed;
  cb.EvtChannelSuspend = Suspend;
  cb.EvtChannelStarted = Started;
  cb.EvtChannelPostStarted = PostStarted;
  EXPECT_EQ(k.VmbChannelInitSetStateChangeCallbacks(ch, &cb), STATUS_SUCCESS);
  EXPECT_EQ(k.VmbChannelInitSetProcessPacketCallbacks(ch, ProcessPacket, ProcessingComplete),
            STATUS_SUCCESS);
}

VMBCHANNEL KmclTest::Server(Endpoint& e, bool enable, bool start) {
  VMBCHANNEL ch = nullptr;
  EXPECT_EQ(kmcl_.VmbChannelAllocate(device_, TRUE, &ch), STATUS_SUCCESS);
  channels_.push_back(ch);
  Configure(kmcl_, ch, e);
  EXPECT_EQ(kmcl_.VmbServerChannelInitSetTargetInterfaceId(ch, kType, kInstance), STATUS_SUCCESS);
  if (enable) {
    EXPECT_EQ(kmcl_.VmbChannelEnable(ch), STATUS_SUCCESS);
  }
  if (enable && start) kmcl_.VmbChannelStart(ch);
  return ch;
}

VMBCHANNEL KmclTest::Client(Endpoint& e, bool enable) {
  VMBCHANNEL ch = nullptr;
  EXPECT_EQ(kmcl_.VmbChannelAllocate(device_, FALSE, &ch), STATUS_SUCCESS);
  channels_.push_back(ch);
  Configure(kmcl_, ch, e);
  EXPECT_EQ(kmcl_.VmbClientChannelInitSetTargetPnp(ch, &kType, nullptr, PnpFailure), STATUS_SUCCESS);
  if (enable) {
    EXPECT_EQ(kmcl_.VmbChannelEnable(ch), STATUS_SUCCESS);
  }
  return ch;
}

void KmclTest::OpenPair(VMBCHANNEL* server, VMBCHANNEL* client) {
  *server = Server(*host_);
  *client = Client(*guest_);
  ASSERT_TRUE(rec_.WaitFor("host:post_started"));
  ASSERT_TRUE(rec_.WaitFor("guest:post_started"));
}

NTSTATUS KmclTest::SendBytes(VMBCHANNEL channel, std::vector<uint8_t> bytes, UINT32 flags) {
  VMBPACKET p = kmcl_.VmbPacketAllocate(channel);
  NTSTATUS st = kmcl_.VmbPacketSend(p, bytes.data(), static_cast<UINT32>(bytes.size()), nullptr, flags);
  if (!NT_SUCCESS(st)) kmcl_.VmbPacketFree(p);
  return st;
}

}  // namespace kmcl::conformance
