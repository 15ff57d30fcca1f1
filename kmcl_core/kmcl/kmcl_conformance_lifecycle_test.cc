// KMCL conformance: channel lifecycle, configuration, server-only setters,
// handles, the function tables, and the state callbacks.
#include <cstring>

#include "gmock/gmock.h"
#include "kmcl_core/kmcl/kmcl_conformance.h"

namespace kmcl::conformance {
namespace {

using ::testing::ElementsAre;

KMCL_SUITE(VmbChannelAllocate)
KMCL_SUITE(VmbChannelCleanup)
KMCL_SUITE(VmbChannelEnable)
KMCL_SUITE(VmbChannelDisable)
KMCL_SUITE(VmbChannelStart)
KMCL_SUITE(VmbChannelPause)
KMCL_SUITE(VmbChannelInitSetClientContextSize)
KMCL_SUITE(VmbChannelInitSetFlags)
KMCL_SUITE(VmbChannelInitSetFriendlyName)
KMCL_SUITE(VmbChannelInitSetMaximumExternalData)
KMCL_SUITE(VmbChannelInitSetMaximumPacketSize)
KMCL_SUITE(VmbChannelInitSetProcessPacketCallbacks)
KMCL_SUITE(VmbChannelInitSetStateChangeCallbacks)
KMCL_SUITE(VmbClientChannelInitSetRingBufferPageCount)
KMCL_SUITE(VmbClientChannelInitSetTargetPnp)
KMCL_SUITE(VmbChannelGetInterfaceInstance)
KMCL_SUITE(VmbChannelGetMmioSpace)
KMCL_SUITE(VmbChannelGetPointer)
KMCL_SUITE(VmbChannelSetPointer)
KMCL_SUITE(VmbChannelSetInterruptLatency)
KMCL_SUITE(VmbServerChannelInitSetFlags)
KMCL_SUITE(VmbServerChannelInitSetMmioMegabytes)
KMCL_SUITE(VmbServerChannelInitSetTargetInterfaceId)
KMCL_SUITE(VmbServerChannelInitSetTargetVtl)
KMCL_SUITE(VmbServerChannelInitSetVmbusHandle)
KMCL_SUITE(VmbConvertVmbusHandleToKernelHandle)
KMCL_SUITE(KmclQueryInterface)
KMCL_SUITE(EvtVmbChannelOpened)
KMCL_SUITE(EvtVmbChannelClosed)
KMCL_SUITE(EvtVmbChannelSuspend)
KMCL_SUITE(EvtVmbChannelStarted)
KMCL_SUITE(EvtVmbChannelPostStarted)
KMCL_SUITE(EvtVmbChannelPnpFailure)

TEST_F(VmbChannelAllocate, GivesADisabledConfigurableChannel) {
  VMBCHANNEL ch = nullptr;
  ASSERT_EQ(kmcl_.VmbChannelAllocate(device_, TRUE, &ch), STATUS_SUCCESS);
  channels_.push_back(ch);
  EXPECT_NE(ch, nullptr);
  EXPECT_EQ(kmcl_.VmbChannelInitSetMaximumPacketSize(ch, 512), STATUS_SUCCESS) << "configurable";
}

TEST_F(VmbChannelAllocate, RejectsBadParameters) {
  VMBCHANNEL ch = nullptr;
  EXPECT_EQ(kmcl_.VmbChannelAllocate(device_, TRUE, nullptr), STATUS_INVALID_PARAMETER_3);
  EXPECT_EQ(kmcl_.VmbChannelAllocate(nullptr, TRUE, &ch), STATUS_INVALID_PARAMETER_1);
  int not_a_device = 0;
  EXPECT_EQ(kmcl_.VmbChannelAllocate(reinterpret_cast<PDEVICE_OBJECT>(&not_a_device), FALSE, &ch),
            STATUS_INVALID_PARAMETER_1);
}

TEST_F(VmbChannelCleanup, InvalidatesTheHandle) {
  VMBCHANNEL ch = nullptr;
  ASSERT_EQ(kmcl_.VmbChannelAllocate(device_, TRUE, &ch), STATUS_SUCCESS);
  kmcl_.VmbChannelCleanup(ch);
  EXPECT_EQ(kmcl_.VmbChannelEnable(ch), STATUS_INVALID_PARAMETER_1);
}

TEST_F(VmbChannelCleanup, OfAnOpenChannelStillRunsNoCallbackAfterwards) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  kmcl_.VmbChannelCleanup(c);  // a driver bug: not disabled first; closed, then nothing
  channels_.pop_back();
  EXPECT_EQ(rec_.Count("guest:closed"), 1u);
  ASSERT_TRUE(rec_.WaitFor("host:closed"));
  EXPECT_EQ(rec_.Count("guest:closed"), 1u);
}

TEST_F(VmbChannelEnable, ReturnsAtOnceWithoutAPeer) {
  VMBCHANNEL s = Server(*host_, /*enable=*/false);
  EXPECT_EQ(kmcl_.VmbChannelEnable(s), STATUS_SUCCESS);
  EXPECT_TRUE(rec_.Events().empty()) << "no guest yet: nothing opens";
  EXPECT_EQ(kmcl_.VmbChannelEnable(s), STATUS_INVALID_DEVICE_STATE) << "already enabled";
  EXPECT_EQ(kmcl_.VmbChannelEnable(nullptr), STATUS_INVALID_PARAMETER_1);
}

TEST_F(VmbChannelEnable, OnAClientOpensAMatchingOfferAndImpliesActive) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  EXPECT_THAT(rec_.EventsOf("guest:"), ElementsAre("guest:opened", "guest:started", "guest:post_started"));
}

TEST_F(VmbChannelDisable, BlocksUntilSuspendAndClosedHaveRun) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  kmcl_.VmbChannelDisable(s);
  EXPECT_THAT(rec_.EventsOf("host:"), ElementsAre("host:opened", "host:started", "host:post_started",
                                                  "host:suspend", "host:closed"));
  kmcl_.VmbChannelDisable(s);  // disabling a disabled channel does nothing
  EXPECT_EQ(rec_.Count("host:closed"), 1u);
}

TEST_F(VmbChannelStart, AServerRunsOnlyAfterStart) {
  VMBCHANNEL s = Server(*host_, true, /*start=*/false);
  VMBCHANNEL c = Client(*guest_);
  ASSERT_TRUE(rec_.WaitFor("guest:post_started"));
  EXPECT_THAT(rec_.EventsOf("host:"), ElementsAre("host:opened")) << "opened, but paused";
  kmcl_.VmbChannelStart(s);
  EXPECT_THAT(rec_.EventsOf("host:"), ElementsAre("host:opened", "host:started", "host:post_started"));
  (void)c;
}

TEST_F(VmbChannelPause, SuspendsARunningChannelAndArmsAutoPauseWhenDisabled) {
  VMBCHANNEL s = Server(*host_);
  VMBCHANNEL c = Client(*guest_, /*enable=*/false);
  kmcl_.VmbChannelPause(c);  // disabled: the client will come up paused
  ASSERT_EQ(kmcl_.VmbChannelEnable(c), STATUS_SUCCESS);
  ASSERT_TRUE(rec_.WaitFor("guest:opened"));
  ASSERT_TRUE(rec_.WaitFor("host:post_started"));
  EXPECT_EQ(rec_.Count("guest:started"), 0u);
  kmcl_.VmbChannelStart(c);
  EXPECT_EQ(rec_.Count("guest:post_started"), 1u);
  kmcl_.VmbChannelPause(s);
  EXPECT_EQ(rec_.Count("host:suspend"), 1u) << "Pause returns after Suspend";
}

TEST_F(VmbChannelInitSetClientContextSize, OnlyWhileDisabled) {
  VMBCHANNEL s = Server(*host_, false);
  EXPECT_EQ(kmcl_.VmbChannelInitSetClientContextSize(s, 64), STATUS_SUCCESS);
  ASSERT_EQ(kmcl_.VmbChannelEnable(s), STATUS_SUCCESS);
  EXPECT_EQ(kmcl_.VmbChannelInitSetClientContextSize(s, 64), STATUS_INVALID_PARAMETER_1);
}

TEST_F(VmbChannelInitSetFlags, RejectsUnknownBitsAndLateCalls) {
  VMBCHANNEL s = Server(*host_, false);
  EXPECT_EQ(kmcl_.VmbChannelInitSetFlags(s, 0x2), STATUS_INVALID_PARAMETER_2);
  EXPECT_EQ(kmcl_.VmbChannelInitSetFlags(s, VMBUS_CHANNEL_INIT_FLAG_IS_PIPE), STATUS_SUCCESS);
  ASSERT_EQ(kmcl_.VmbChannelEnable(s), STATUS_SUCCESS);
  EXPECT_EQ(kmcl_.VmbChannelInitSetFlags(s, 0), STATUS_INVALID_PARAMETER_1);
}

TEST_F(VmbChannelInitSetFlags, PipeModeFramesEveryPacket) {
  VMBCHANNEL s = Server(*host_, false);
  ASSERT_EQ(kmcl_.VmbServerChannelInitSetFlags(s, VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE), STATUS_SUCCESS);
  ASSERT_EQ(kmcl_.VmbChannelEnable(s), STATUS_SUCCESS);
  kmcl_.VmbChannelStart(s);
  std::atomic<uint32_t> length{0};
  host_->on_packet = [&](VMBCHANNEL, VMBPACKETCOMPLETION p, PVOID, UINT32 len, UINT32) {
    length = len;
    ::VmbChannelPacketComplete(p, nullptr, 0);
  };
  VMBCHANNEL c = Client(*guest_);
  ASSERT_TRUE(rec_.WaitFor("guest:post_started"));
  EXPECT_EQ(SendBytes(c, {1, 2, 3}, VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION), STATUS_INVALID_PARAMETER)
      << "pipes have no transactions";
  ASSERT_EQ(SendBytes(c, {1, 2, 3}, 0), STATUS_SUCCESS);
  ASSERT_TRUE(rec_.WaitFor("host:packet"));
  EXPECT_EQ(length.load(), 3u) << "the pipe header is stripped; the exact length survives";
}

TEST_F(VmbChannelInitSetFriendlyName, AcceptsAUnicodeString) {
  VMBCHANNEL s = Server(*host_, false);
  WCHAR name[] = {'S', 'C', 'S', 'I'};
  UNICODE_STRING us = {sizeof(name), sizeof(name), name};
  EXPECT_EQ(kmcl_.VmbChannelInitSetFriendlyName(s, &us), STATUS_SUCCESS);
  EXPECT_EQ(kmcl_.VmbChannelInitSetFriendlyName(s, nullptr), STATUS_INVALID_PARAMETER_2);
}

TEST_F(VmbChannelInitSetMaximumExternalData, ChecksBothLimits) {
  VMBCHANNEL s = Server(*host_, false);
  EXPECT_EQ(kmcl_.VmbChannelInitSetMaximumExternalData(s, 0, 1), STATUS_INVALID_PARAMETER_2);
  EXPECT_EQ(kmcl_.VmbChannelInitSetMaximumExternalData(s, 4096, 0), STATUS_INVALID_PARAMETER_3);
  EXPECT_EQ(kmcl_.VmbChannelInitSetMaximumExternalData(s, 65536, 4), STATUS_SUCCESS);
}

TEST_F(VmbChannelInitSetMaximumPacketSize, BoundsSends) {
  VMBCHANNEL s = Server(*host_, false);
  EXPECT_EQ(kmcl_.VmbChannelInitSetMaximumPacketSize(s, 0), STATUS_INVALID_PARAMETER_2);
  VMBCHANNEL c = Client(*guest_, false);
  ASSERT_EQ(kmcl_.VmbChannelInitSetMaximumPacketSize(c, 64), STATUS_SUCCESS);
  ASSERT_EQ(kmcl_.VmbChannelEnable(s), STATUS_SUCCESS);
  kmcl_.VmbChannelStart(s);
  ASSERT_EQ(kmcl_.VmbChannelEnable(c), STATUS_SUCCESS);
  ASSERT_TRUE(rec_.WaitFor("guest:post_started"));
  EXPECT_EQ(SendBytes(c, std::vector<uint8_t>(64), 0), STATUS_SUCCESS);
  EXPECT_EQ(SendBytes(c, std::vector<uint8_t>(65), 0), STATUS_INVALID_PARAMETER);
}

TEST_F(VmbChannelInitSetProcessPacketCallbacks, RequiresTheProcessPacketCallback) {
  VMBCHANNEL s = Server(*host_, false);
  EXPECT_EQ(kmcl_.VmbChannelInitSetProcessPacketCallbacks(s, nullptr, nullptr), STATUS_INVALID_PARAMETER_2);
}

TEST_F(VmbChannelInitSetStateChangeCallbacks, ChecksVersionAndSize) {
  VMBCHANNEL s = Server(*host_, false);
  VMB_CHANNEL_STATE_CHANGE_CALLBACKS cb;
  std::memset(&cb, 0xFF, sizeof(cb));
  VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT(&cb);
  EXPECT_EQ(cb.Version, 1u);
  EXPECT_EQ(cb.Size, sizeof(cb));
  EXPECT_EQ(cb.EvtChannelOpened, nullptr) << "INIT zero-fills";
  EXPECT_EQ(kmcl_.VmbChannelInitSetStateChangeCallbacks(s, &cb), STATUS_SUCCESS);
  cb.Version = 2;
  EXPECT_EQ(kmcl_.VmbChannelInitSetStateChangeCallbacks(s, &cb), STATUS_INVALID_PARAMETER_2);
  cb.Version = 1;
  cb.Size = 8;
  EXPECT_EQ(kmcl_.VmbChannelInitSetStateChangeCallbacks(s, &cb), STATUS_INVALID_PARAMETER_2);
}

TEST_F(VmbClientChannelInitSetRingBufferPageCount, ClientOnlyAndBounded) {
  VMBCHANNEL s = Server(*host_, false);
  EXPECT_EQ(kmcl_.VmbClientChannelInitSetRingBufferPageCount(s, 4, 4), STATUS_INVALID_PARAMETER_1);
  VMBCHANNEL c = Client(*guest_, false);
  EXPECT_EQ(kmcl_.VmbClientChannelInitSetRingBufferPageCount(c, 0, 4), STATUS_INVALID_PARAMETER_2);
  EXPECT_EQ(kmcl_.VmbClientChannelInitSetRingBufferPageCount(c, 4, 0), STATUS_INVALID_PARAMETER_3);
  EXPECT_EQ(kmcl_.VmbClientChannelInitSetRingBufferPageCount(c, 2, 3), STATUS_SUCCESS);
  ASSERT_EQ(kmcl_.VmbChannelEnable(s), STATUS_SUCCESS);
  kmcl_.VmbChannelStart(s);
  ASSERT_EQ(kmcl_.VmbChannelEnable(c), STATUS_SUCCESS);
  ASSERT_TRUE(rec_.WaitFor("host:post_started"));
  // The ring GPADL the guest donated: control+3 pages out, control+2 in.
  bool found = false;
  for (const GpadlInfo& g : partition_->gpadls().List()) {
    if (g.byte_count == 7u * 4096) found = true;
  }
  EXPECT_TRUE(found);
}

TEST_F(VmbClientChannelInitSetTargetPnp, MatchesTypeAndOptionallyInstance) {
  VMBCHANNEL s1 = Server(*host_);
  Endpoint& h2 = NewEndpoint("host2");
  VMBCHANNEL s2 = Server(h2, false);
  const GUID other = {7, 7, 7, {7, 7, 7, 7, 7, 7, 7, 7}};
  ASSERT_EQ(kmcl_.VmbServerChannelInitSetTargetInterfaceId(s2, kType, other), STATUS_SUCCESS);
  ASSERT_EQ(kmcl_.VmbChannelEnable(s2), STATUS_SUCCESS);
  kmcl_.VmbChannelStart(s2);
  VMBCHANNEL c = Client(*guest_, false);
  ASSERT_EQ(kmcl_.VmbClientChannelInitSetTargetPnp(c, &kType, &other, nullptr), STATUS_SUCCESS);
  ASSERT_EQ(kmcl_.VmbChannelEnable(c), STATUS_SUCCESS);
  ASSERT_TRUE(rec_.WaitFor("host2:post_started"));
  EXPECT_EQ(rec_.Count("host:opened"), 0u) << "the other instance is left alone";
  EXPECT_EQ(kmcl_.VmbClientChannelInitSetTargetPnp(c, nullptr, nullptr, nullptr), STATUS_INVALID_PARAMETER_1)
      << "not while enabled";
  (void)s1;
}

TEST_F(VmbChannelGetInterfaceInstance, IsTheOfferInstanceOnBothSides) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  GUID a, b;
  kmcl_.VmbChannelGetInterfaceInstance(s, &a);
  kmcl_.VmbChannelGetInterfaceInstance(c, &b);
  EXPECT_EQ(std::memcmp(&a, &kInstance, sizeof(GUID)), 0);
  EXPECT_EQ(std::memcmp(&b, &kInstance, sizeof(GUID)), 0);
}

TEST_F(VmbChannelGetMmioSpace, SameRangeOnBothSidesOnceOpened) {
  VMBCHANNEL s = Server(*host_, false);
  ASSERT_EQ(kmcl_.VmbServerChannelInitSetMmioMegabytes(s, 16, 0), STATUS_SUCCESS);
  UINT64 addr = 1, size = 1;
  kmcl_.VmbChannelGetMmioSpace(s, &addr, &size);
  EXPECT_EQ(size, 0u) << "not opened yet";
  ASSERT_EQ(kmcl_.VmbChannelEnable(s), STATUS_SUCCESS);
  kmcl_.VmbChannelStart(s);
  VMBCHANNEL c = Client(*guest_);
  ASSERT_TRUE(rec_.WaitFor("guest:post_started"));
  UINT64 caddr = 0, csize = 0;
  kmcl_.VmbChannelGetMmioSpace(s, &addr, &size);
  kmcl_.VmbChannelGetMmioSpace(c, &caddr, &csize);
  EXPECT_EQ(size, 16u << 20);
  EXPECT_EQ(csize, size);
  EXPECT_EQ(caddr, addr);
  EXPECT_GE(addr, partition_->options().mmio_base);
}

TEST_F(VmbChannelGetPointer, ReturnsWhatSetPointerStored) {
  VMBCHANNEL s = Server(*host_, false);
  int x;
  kmcl_.VmbChannelSetPointer(s, &x);
  EXPECT_EQ(kmcl_.VmbChannelGetPointer(s), &x);
  EXPECT_EQ(kmcl_.VmbChannelGetPointer(nullptr), nullptr);
}

TEST_F(VmbChannelSetPointer, IsPerChannel) {
  VMBCHANNEL a = Server(*host_, false);
  VMBCHANNEL b = Server(*guest_, false);
  int x, y;
  kmcl_.VmbChannelSetPointer(a, &x);
  kmcl_.VmbChannelSetPointer(b, &y);
  EXPECT_EQ(kmcl_.VmbChannelGetPointer(a), &x);
  EXPECT_EQ(kmcl_.VmbChannelGetPointer(b), &y);
}

TEST_F(VmbChannelSetInterruptLatency, ValidOnlyWhileOpened) {
  VMBCHANNEL s = Server(*host_);
  UINT16 old = 99;
  EXPECT_EQ(kmcl_.VmbChannelSetInterruptLatency(s, 1000, &old), STATUS_INVALID_DEVICE_STATE);
  VMBCHANNEL c = Client(*guest_);
  ASSERT_TRUE(rec_.WaitFor("guest:post_started"));
  EXPECT_EQ(kmcl_.VmbChannelSetInterruptLatency(c, 1000, &old), STATUS_SUCCESS);
  EXPECT_EQ(old, 0);
  EXPECT_EQ(kmcl_.VmbChannelSetInterruptLatency(c, 500, &old), STATUS_SUCCESS);
  EXPECT_EQ(old, 1000) << "returns the previous latency (100 ns units)";
}

TEST_F(VmbServerChannelInitSetFlags, MapsKmclFlagsToWireOfferFlags) {
  VMBCHANNEL s = Server(*host_, false);
  EXPECT_EQ(kmcl_.VmbServerChannelInitSetFlags(s, 0x20), STATUS_INVALID_PARAMETER_2);
  ASSERT_EQ(kmcl_.VmbServerChannelInitSetFlags(s, VMBUS_SERVER_CHANNEL_INIT_FLAG_ENUMERATE_DEVICE_INTERFACE |
                                                    VMBUS_SERVER_CHANNEL_INIT_FLAG_FORCE_NEW_CHANNEL),
            STATUS_SUCCESS);
  ASSERT_EQ(kmcl_.VmbChannelEnable(s), STATUS_SUCCESS);
  auto offers = partition_->GuestOffers(0);
  ASSERT_EQ(offers.size(), 1u);
  EXPECT_EQ(offers[0].offer.channel_flags, 0x0001 | 0x1000);
  VMBCHANNEL c = Client(*guest_, false);
  EXPECT_EQ(kmcl_.VmbServerChannelInitSetFlags(c, 0), STATUS_INVALID_PARAMETER_1);
}

TEST_F(VmbServerChannelInitSetMmioMegabytes, BothZeroIsInvalid) {
  VMBCHANNEL s = Server(*host_, false);
  EXPECT_EQ(kmcl_.VmbServerChannelInitSetMmioMegabytes(s, 0, 0), STATUS_INVALID_PARAMETER);
  EXPECT_EQ(kmcl_.VmbServerChannelInitSetMmioMegabytes(s, 8, 4), STATUS_SUCCESS);
  ASSERT_EQ(kmcl_.VmbChannelEnable(s), STATUS_SUCCESS);
  auto offers = partition_->GuestOffers(0);
  ASSERT_EQ(offers.size(), 1u);
  EXPECT_EQ(offers[0].offer.mmio_megabytes, 8);
  EXPECT_EQ(offers[0].offer.mmio_megabytes_optional, 4);
}

TEST_F(VmbServerChannelInitSetTargetInterfaceId, TheGuestSeesTypeAndInstance) {
  VMBCHANNEL s = Server(*host_, false);
  const GUID instance = {0xAABBCCDD, 1, 2, {3, 4, 5, 6, 7, 8, 9, 10}};
  ASSERT_EQ(kmcl_.VmbServerChannelInitSetTargetInterfaceId(s, kType, instance), STATUS_SUCCESS);
  ASSERT_EQ(kmcl_.VmbChannelEnable(s), STATUS_SUCCESS);
  auto offers = partition_->GuestOffers(0);
  ASSERT_EQ(offers.size(), 1u);
  EXPECT_EQ(offers[0].offer.interface_type.ToString(), "9d1f7a2e-4b0c-4c51-8a7e-3f5e2d6c1b00");
  EXPECT_EQ(offers[0].offer.interface_instance.ToString(), "aabbccdd-0001-0002-0304-05060708090a");
}

TEST_F(VmbServerChannelInitSetTargetVtl, OffersOnlyToThatVtl) {
  VMBCHANNEL s = Server(*host_, false);
  EXPECT_EQ(kmcl_.VmbServerChannelInitSetTargetVtl(s, 3), STATUS_INVALID_PARAMETER_2);
  ASSERT_EQ(kmcl_.VmbServerChannelInitSetTargetVtl(s, 2), STATUS_SUCCESS);
  ASSERT_EQ(kmcl_.VmbChannelEnable(s), STATUS_SUCCESS);
  EXPECT_TRUE(partition_->GuestOffers(0).empty());
  EXPECT_EQ(partition_->GuestOffers(2).size(), 1u);
  // A VTL 2 client opens it.
  VMBCHANNEL c = nullptr;
  ASSERT_EQ(kmcl_.VmbChannelAllocate(KmclGetVmbusDevice(partition_->vmbus_handle(), 2), FALSE, &c),
            STATUS_SUCCESS);
  channels_.push_back(c);
  kmcl_.VmbChannelSetPointer(c, guest_);
  VMB_CHANNEL_STATE_CHANGE_CALLBACKS cb;
  VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT(&cb);
  ASSERT_EQ(kmcl_.VmbClientChannelInitSetTargetPnp(c, &kType, nullptr, nullptr), STATUS_SUCCESS);
  ASSERT_EQ(kmcl_.VmbChannelEnable(c), STATUS_SUCCESS);
  ASSERT_TRUE(rec_.WaitFor("host:opened"));
}

TEST_F(VmbServerChannelInitSetVmbusHandle, BindsTheChannelToThatPartition) {
  PartitionOptions o;
  o.id = "other";
  o.memory_bytes = 64 << 20;
  auto other = *Partition::Create(o);
  VMBCHANNEL s = Server(*host_, false);
  HANDLE kernel = nullptr;
  EXPECT_EQ(kmcl_.VmbServerChannelInitSetVmbusHandle(s, reinterpret_cast<HANDLE>(other->vmbus_handle())),
            STATUS_INVALID_PARAMETER_2)
      << "a user handle must be converted first";
  ASSERT_EQ(kmcl_.VmbConvertVmbusHandleToKernelHandle(reinterpret_cast<HANDLE>(other->vmbus_handle()), &kernel),
            STATUS_SUCCESS);
  ASSERT_EQ(kmcl_.VmbServerChannelInitSetVmbusHandle(s, kernel), STATUS_SUCCESS);
  ASSERT_EQ(kmcl_.VmbChannelEnable(s), STATUS_SUCCESS);
  EXPECT_TRUE(partition_->GuestOffers(0).empty());
  EXPECT_EQ(other->GuestOffers(0).size(), 1u);
  kmcl_.VmbChannelDisable(s);
  kmcl_.VmbChannelCleanup(s);
  channels_.pop_back();
}

TEST_F(VmbConvertVmbusHandleToKernelHandle, RejectsUnknownHandles) {
  HANDLE kernel = nullptr;
  EXPECT_EQ(kmcl_.VmbConvertVmbusHandleToKernelHandle(reinterpret_cast<HANDLE>(uint64_t{12345}), &kernel),
            STATUS_INVALID_HANDLE);
  EXPECT_EQ(kmcl_.VmbConvertVmbusHandleToKernelHandle(reinterpret_cast<HANDLE>(partition_->vmbus_handle()), nullptr),
            STATUS_INVALID_PARAMETER_2);
}

TEST_F(KmclQueryInterface, FillsTablesInDocumentedOrder) {
  KMCL_CLIENT_INTERFACE_V1 client;
  ASSERT_EQ(::KmclQueryInterface(nullptr, &KMCL_CLIENT_INTERFACE_TYPE, reinterpret_cast<PINTERFACE>(&client),
                               sizeof(client), KMCL_CLIENT_INTERFACE_VERSION_V1, nullptr),
            STATUS_SUCCESS);
  EXPECT_EQ(client.Size, 360);
  EXPECT_EQ(client.Version, 1);
  auto* slots = reinterpret_cast<void**>(reinterpret_cast<uint8_t*>(&client) + 32);
  EXPECT_EQ(slots[0], reinterpret_cast<void*>(&::VmbChannelAllocate)) << "member 1";
  EXPECT_EQ(slots[17], reinterpret_cast<void*>(&::VmbChannelPacketComplete)) << "member 18";
  EXPECT_EQ(slots[40], reinterpret_cast<void*>(&::VmbPacketSetPointer)) << "member 41";
  auto* server = reinterpret_cast<void**>(reinterpret_cast<uint8_t*>(&kmcl_) + 360);
  EXPECT_EQ(server[0], reinterpret_cast<void*>(&::VmbChannelMapGpadl)) << "server member 1";
  EXPECT_EQ(server[13], reinterpret_cast<void*>(&::VmbServerChannelInitSetVmbusHandle)) << "server member 14";
  EXPECT_EQ(kmcl_.Size, 472);
  client.InterfaceReference(client.Context);
  client.InterfaceDereference(client.Context);
}

TEST_F(KmclQueryInterface, RejectsWrongTypeVersionAndSize) {
  KMCL_SERVER_INTERFACE_V1 t;
  const GUID bogus = {1, 2, 3, {4, 5, 6, 7, 8, 9, 10, 11}};
  EXPECT_EQ(::KmclQueryInterface(nullptr, &bogus, reinterpret_cast<PINTERFACE>(&t), sizeof(t), 1, nullptr),
            STATUS_NOT_SUPPORTED);
  EXPECT_EQ(::KmclQueryInterface(nullptr, &KMCL_SERVER_INTERFACE_TYPE, reinterpret_cast<PINTERFACE>(&t),
                               sizeof(t), 2, nullptr),
            STATUS_NOT_SUPPORTED);
  EXPECT_EQ(::KmclQueryInterface(nullptr, &KMCL_SERVER_INTERFACE_TYPE, reinterpret_cast<PINTERFACE>(&t), 360,
                               1, nullptr),
            STATUS_BUFFER_TOO_SMALL);
}

TEST_F(EvtVmbChannelOpened, AFailureKeepsTheServerOfferedAndGivesTheClientAPnpFailure) {
  host_->opened_result = STATUS_UNSUCCESSFUL;
  VMBCHANNEL s = Server(*host_);
  VMBCHANNEL c = Client(*guest_);
  ASSERT_TRUE(rec_.WaitFor("guest:pnp_failure"));
  EXPECT_EQ(rec_.Count("host:started"), 0u);
  EXPECT_EQ(rec_.Count("guest:opened"), 0u);
  (void)s;
  (void)c;
}

TEST_F(EvtVmbChannelClosed, FiresOnceWhenTheGuestCloses) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  kmcl_.VmbChannelDisable(c);
  ASSERT_TRUE(rec_.WaitFor("host:closed"));
  EXPECT_THAT(rec_.EventsOf("host:"), ElementsAre("host:opened", "host:started", "host:post_started",
                                                  "host:suspend", "host:closed"));
}

TEST_F(EvtVmbChannelSuspend, PrecedesClosedOnRescind) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  kmcl_.VmbChannelDisable(s);  // rescind
  ASSERT_TRUE(rec_.WaitFor("guest:closed"));
  EXPECT_THAT(rec_.EventsOf("guest:"), ElementsAre("guest:opened", "guest:started", "guest:post_started",
                                                   "guest:suspend", "guest:closed"));
}

TEST_F(EvtVmbChannelStarted, FollowsOpenedAndPrecedesPostStarted) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  EXPECT_THAT(rec_.EventsOf("host:"), ElementsAre("host:opened", "host:started", "host:post_started"));
}

TEST_F(EvtVmbChannelPostStarted, MayBlockOnASynchronousRequest) {
  // The documented place for protocol negotiation: a synchronous request
  // from PostStarted gets its completion (incoming runs concurrently).
  VMBCHANNEL s = Server(*host_);
  Endpoint& g = *guest_;
  std::atomic<NTSTATUS> result{STATUS_PENDING};
  g.on_packet = nullptr;
  VMBCHANNEL c = nullptr;
  ASSERT_EQ(kmcl_.VmbChannelAllocate(device_, FALSE, &c), STATUS_SUCCESS);
  channels_.push_back(c);
  kmcl_.VmbChannelSetPointer(c, &g);
  static std::atomic<NTSTATUS>* out;
  out = &result;
  VMB_CHANNEL_STATE_CHANGE_CALLBACKS cb;
  VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT(&cb);
  cb.EvtChannelPostStarted = [](VMBCHANNEL ch) {
    UINT64 v = 42;
    UINT64 reply = 0;
    UINT32 size = sizeof(reply);
    *out = ::VmbChannelSendSynchronousRequest(ch, &v, sizeof(v), nullptr,
                                            VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION, &reply, &size,
                                            nullptr);
    static_cast<Endpoint*>(::VmbChannelGetPointer(ch))->rec->Add(reply == 42 ? "guest:negotiated" : "guest:bad");
  };
  ASSERT_EQ(kmcl_.VmbChannelInitSetStateChangeCallbacks(c, &cb), STATUS_SUCCESS);
  ASSERT_EQ(kmcl_.VmbClientChannelInitSetTargetPnp(c, &kType, nullptr, nullptr), STATUS_SUCCESS);
  ASSERT_EQ(kmcl_.VmbChannelEnable(c), STATUS_SUCCESS);
  ASSERT_TRUE(rec_.WaitFor("guest:negotiated"));
  EXPECT_EQ(result.load(), STATUS_SUCCESS);
  (void)s;
}

TEST_F(EvtVmbChannelPnpFailure, ReportsAnAsynchronousConnectFailure) {
  host_->opened_result = STATUS_INSUFFICIENT_RESOURCES;
  Server(*host_);
  Client(*guest_);
  ASSERT_TRUE(rec_.WaitFor("guest:pnp_failure"));
}

}  // namespace
}  // namespace kmcl::conformance
