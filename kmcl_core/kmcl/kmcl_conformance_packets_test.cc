// KMCL conformance: packets, sends, transactions, deliveries, external data,
// GPADLs, and the packet callbacks.
#include <cstring>
#include <thread>

#include "gmock/gmock.h"
#include "kmcl_core/kmcl/kmcl_conformance.h"
#include "kmcl_core/runtime/executor.h"

namespace kmcl::conformance {
namespace {

KMCL_SUITE(VmbChannelSizeofPacket)
KMCL_SUITE(VmbPacketAllocate)
KMCL_SUITE(VmbPacketFree)
KMCL_SUITE(VmbPacketInitialize)
KMCL_SUITE(VmbPacketSetCompletionRoutine)
KMCL_SUITE(VmbPacketSetPointer)
KMCL_SUITE(VmbPacketGetPointer)
KMCL_SUITE(VmbPacketGetChannel)
KMCL_SUITE(VmbPacketSend)
KMCL_SUITE(VmbPacketSendWithExternalMdl)
KMCL_SUITE(VmbPacketSendWithExternalPfns)
KMCL_SUITE(VmbChannelSendSynchronousRequest)
KMCL_SUITE(VmbChannelPacketComplete)
KMCL_SUITE(VmbChannelPacketDeferToPassive)
KMCL_SUITE(VmbChannelPacketFail)
KMCL_SUITE(VmbChannelPacketGetExternalData)
KMCL_SUITE(VmbChannelSetTransactionQuota)
KMCL_SUITE(VmbChannelSetIncomingProcessingAtPassive)
KMCL_SUITE(VmbChannelCreateGpadlFromBuffer)
KMCL_SUITE(VmbChannelCreateGpadlFromMdl)
KMCL_SUITE(VmbChannelDeleteGpadl)
KMCL_SUITE(VmbChannelMapGpadl)
KMCL_SUITE(VmbChannelUnmapGpadl)
KMCL_SUITE(EvtVmbChannelProcessPacket)
KMCL_SUITE(EvtVmbChannelProcessingComplete)
KMCL_SUITE(EvtVmbPacketCompletionRoutine)

// Completion results recorded by a C completion routine.
struct Completions {
  Mutex mu;
  CondVar cv;
  std::vector<std::pair<NTSTATUS, std::vector<uint8_t>>> results;
  bool WaitFor(size_t n) {
    MutexLock lock(&mu);
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (results.size() < n) {
      if (cv.WaitWithDeadline(&mu, deadline)) return results.size() >= n;
    }
    return true;
  }
};
Completions* g_completions = nullptr;

VOID RecordCompletion(VMBPACKET packet, NTSTATUS status, PVOID buffer, UINT32 length) {
  auto* bytes = static_cast<uint8_t*>(buffer);
  {
    MutexLock lock(&g_completions->mu);
    g_completions->results.push_back({status, std::vector<uint8_t>(bytes, bytes + length)});
  }
  g_completions->cv.SignalAll();
  ::VmbPacketFree(packet);
}

class PacketTest : public KmclTest {
 protected:
  void SetUp() override {
    KmclTest::SetUp();
    g_completions = &completions_;
  }
  VMBPACKET Tracked(VMBCHANNEL ch) {
    VMBPACKET p = kmcl_.VmbPacketAllocate(ch);
    kmcl_.VmbPacketSetCompletionRoutine(p, RecordCompletion);
    return p;
  }
  Completions completions_;
};

#define PACKET_SUITE(name) \
  class name##P : public PacketTest {};
PACKET_SUITE(VmbPacketSend)
PACKET_SUITE(VmbPacketSendWithExternalMdl)
PACKET_SUITE(VmbPacketSendWithExternalPfns)
PACKET_SUITE(VmbChannelPacketComplete)
PACKET_SUITE(EvtVmbPacketCompletionRoutine)

TEST_F(VmbChannelSizeofPacket, CoversTheMaximumPacketSize) {
  VMBCHANNEL s = Server(*host_, false);
  UINT32 before = kmcl_.VmbChannelSizeofPacket(s);
  EXPECT_GT(before, 4096u);
  ASSERT_EQ(kmcl_.VmbChannelInitSetMaximumPacketSize(s, 65536), STATUS_SUCCESS);
  EXPECT_GT(kmcl_.VmbChannelSizeofPacket(s), 65536u);
  EXPECT_EQ(kmcl_.VmbChannelSizeofPacket(nullptr), 0u);
}

TEST_F(VmbPacketAllocate, ItsDefaultRoutineFreesThePacket) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  for (int i = 0; i < 100; ++i) ASSERT_EQ(SendBytes(c, {1, 2, 3}, 0), STATUS_SUCCESS);
  ASSERT_TRUE(rec_.WaitFor("host:packet", 100));  // ASan's leak check sees any lost packet
  EXPECT_EQ(kmcl_.VmbPacketAllocate(nullptr), nullptr);
}

TEST_F(VmbPacketFree, FreesAnUnsentPacketForReuse) {
  VMBCHANNEL s = Server(*host_, false);
  VMBPACKET p = kmcl_.VmbPacketAllocate(s);
  ASSERT_NE(p, nullptr);
  kmcl_.VmbPacketFree(p);
  EXPECT_EQ(kmcl_.VmbPacketAllocate(s), p) << "from the channel's lookaside list";
}

TEST_F(VmbPacketInitialize, BuildsAPacketInCallerMemory) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  UINT32 size = kmcl_.VmbChannelSizeofPacket(c);
  std::vector<uint64_t> memory((size + 7) / 8);
  auto packet = reinterpret_cast<VMBPACKET>(memory.data());
  EXPECT_EQ(kmcl_.VmbPacketInitialize(c, packet, size - 1), STATUS_INVALID_PARAMETER_3);
  ASSERT_EQ(kmcl_.VmbPacketInitialize(c, packet, size), STATUS_SUCCESS);
  uint8_t bytes[8] = {1};
  EXPECT_FALSE(NT_SUCCESS(kmcl_.VmbPacketSend(packet, bytes, 8, nullptr, 0)))
      << "starts with no completion routine";
  static std::atomic<int> done{0};
  kmcl_.VmbPacketSetCompletionRoutine(packet, [](VMBPACKET, NTSTATUS, PVOID, UINT32) { done++; });
  ASSERT_EQ(kmcl_.VmbPacketSend(packet, bytes, 8, nullptr, 0), STATUS_SUCCESS);
  ASSERT_TRUE(rec_.WaitFor("host:packet"));
  while (done.load() == 0) std::this_thread::yield();
  ASSERT_EQ(kmcl_.VmbPacketSend(packet, bytes, 8, nullptr, 0), STATUS_SUCCESS) << "reusable";
  ASSERT_TRUE(rec_.WaitFor("host:packet", 2));
  while (done.load() < 2) std::this_thread::yield();
}

TEST_F(VmbPacketSetCompletionRoutine, ReplacesTheDefault) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  static std::atomic<VMBPACKET> seen{nullptr};
  VMBPACKET p = kmcl_.VmbPacketAllocate(c);
  kmcl_.VmbPacketSetCompletionRoutine(p, [](VMBPACKET packet, NTSTATUS, PVOID, UINT32) { seen = packet; });
  uint8_t b[8] = {};
  ASSERT_EQ(kmcl_.VmbPacketSend(p, b, 8, nullptr, VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION), STATUS_SUCCESS);
  while (seen.load() == nullptr) std::this_thread::yield();
  EXPECT_EQ(seen.load(), p);
  kmcl_.VmbPacketFree(p);  // not freed by a custom routine
}

TEST_F(VmbPacketSetPointer, IsReturnedByGetPointer) {
  VMBCHANNEL s = Server(*host_, false);
  VMBPACKET p = kmcl_.VmbPacketAllocate(s);
  int x;
  kmcl_.VmbPacketSetPointer(p, &x);
  EXPECT_EQ(kmcl_.VmbPacketGetPointer(p), &x);
  kmcl_.VmbPacketFree(p);
}

TEST_F(VmbPacketGetPointer, IsNullForABadHandle) { EXPECT_EQ(kmcl_.VmbPacketGetPointer(nullptr), nullptr); }

TEST_F(VmbPacketGetChannel, ReturnsTheOwningChannel) {
  VMBCHANNEL s = Server(*host_, false);
  VMBPACKET p = kmcl_.VmbPacketAllocate(s);
  EXPECT_EQ(kmcl_.VmbPacketGetChannel(p), s);
  kmcl_.VmbPacketFree(p);
}

TEST_F(VmbPacketSendP, QueuesBeforeOpenAndSendsInOrderAfter) {
  VMBCHANNEL s = Server(*host_);
  for (uint8_t i = 0; i < 3; ++i) {
    uint8_t b[8] = {i};
    VMBPACKET p = Tracked(s);
    ASSERT_EQ(kmcl_.VmbPacketSend(p, b, 8, nullptr, 0), STATUS_SUCCESS) << "queued: no guest yet";
  }
  std::vector<uint8_t> order;
  Mutex mu;
  guest_->on_packet = [&](VMBCHANNEL, VMBPACKETCOMPLETION pkt, PVOID buf, UINT32, UINT32) {
    {
      MutexLock lock(&mu);
      order.push_back(static_cast<uint8_t*>(buf)[0]);
    }
    ::VmbChannelPacketComplete(pkt, nullptr, 0);
  };
  Client(*guest_);
  ASSERT_TRUE(rec_.WaitFor("guest:packet", 3));
  MutexLock lock(&mu);
  EXPECT_THAT(order, ::testing::ElementsAre(0, 1, 2));
}

TEST_F(VmbPacketSendP, WaitForCompletionReturnsThePeersPayload) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  host_->on_packet = [](VMBCHANNEL, VMBPACKETCOMPLETION pkt, PVOID, UINT32, UINT32) {
    uint8_t answer[8] = {9, 8, 7};
    ::VmbChannelPacketComplete(pkt, answer, sizeof(answer));
  };
  uint8_t b[16] = {};
  ASSERT_EQ(kmcl_.VmbPacketSend(Tracked(c), b, 16, nullptr, VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION),
            STATUS_SUCCESS);
  ASSERT_TRUE(completions_.WaitFor(1));
  EXPECT_EQ(completions_.results[0].first, STATUS_SUCCESS);
  EXPECT_THAT(completions_.results[0].second, ::testing::ElementsAre(9, 8, 7, 0, 0, 0, 0, 0));
}

TEST_F(VmbPacketSendP, RejectsBadFlagsAndHandles) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  uint8_t b[8] = {};
  VMBPACKET p = kmcl_.VmbPacketAllocate(c);
  EXPECT_EQ(kmcl_.VmbPacketSend(p, b, 8, nullptr, 0x80), STATUS_INVALID_PARAMETER);
  EXPECT_EQ(kmcl_.VmbPacketSend(nullptr, b, 8, nullptr, 0), STATUS_INVALID_PARAMETER_1);
  kmcl_.VmbPacketFree(p);
}

TEST_F(VmbPacketSendWithExternalMdlP, RequiresWaitAndDeliversTheGuestPages) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  auto* buffer = static_cast<uint8_t*>(KmclAllocateGuestMemory(device_, 3 * 4096));
  ASSERT_NE(buffer, nullptr);
  for (int i = 0; i < 3 * 4096; ++i) buffer[i] = static_cast<uint8_t>(i * 7);
  PMDL mdl = KmclBuildGuestMdl(device_, buffer, 3 * 4096);
  std::vector<uint8_t> seen;
  std::atomic<uint32_t> flags_seen{0};
  host_->on_packet = [&](VMBCHANNEL, VMBPACKETCOMPLETION pkt, PVOID, UINT32, UINT32 flags) {
    flags_seen = flags;
    PMDL ext = nullptr;
    if (::VmbChannelPacketGetExternalData(pkt, VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY, &ext) ==
        STATUS_SUCCESS) {
      auto* va = static_cast<uint8_t*>(MmGetSystemAddressForMdlSafe(ext, 0));
      seen.assign(va, va + MmGetMdlByteCount(ext));
    }
    ::VmbChannelPacketComplete(pkt, nullptr, 0);
  };
  uint8_t cmd[8] = {1};
  EXPECT_EQ(kmcl_.VmbPacketSendWithExternalMdl(kmcl_.VmbPacketAllocate(c), cmd, 8, mdl, 0, 0, 0),
            STATUS_INVALID_PARAMETER)
      << "WAIT_FOR_COMPLETION is required";
  ASSERT_EQ(kmcl_.VmbPacketSendWithExternalMdl(Tracked(c), cmd, 8, mdl, 100, 5000,
                                               VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION),
            STATUS_SUCCESS);
  ASSERT_TRUE(completions_.WaitFor(1));
  EXPECT_EQ(flags_seen.load(), VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA);
  ASSERT_EQ(seen.size(), 5000u) << "the MdlOffset/MdlLength window";
  EXPECT_EQ(seen[0], static_cast<uint8_t>(100 * 7));
  EXPECT_EQ(seen[4999], static_cast<uint8_t>(5099 * 7));
  KmclFreeMdl(mdl);
  KmclFreeGuestMemory(device_, buffer, 3 * 4096);
}

TEST_F(VmbPacketSendWithExternalPfnsP, SendsWholePages) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  auto pfns = *partition_->memory().AllocatePages(2);
  std::vector<uint8_t> page(4096, 0x3C);
  ASSERT_TRUE(partition_->memory().Write(pfns[1] * 4096, page).ok());
  std::atomic<uint64_t> bytes{0};
  std::atomic<uint8_t> last{0};
  host_->on_packet = [&](VMBCHANNEL, VMBPACKETCOMPLETION pkt, PVOID, UINT32, UINT32) {
    PMDL ext = nullptr;
    if (::VmbChannelPacketGetExternalData(pkt, 0, &ext) == STATUS_SUCCESS) {
      bytes = MmGetMdlByteCount(ext);
      last = static_cast<uint8_t*>(ext->MappedSystemVa)[8191];
    }
    ::VmbChannelPacketComplete(pkt, nullptr, 0);
  };
  PFN_NUMBER list[2] = {pfns[0], pfns[1]};
  uint8_t cmd[8] = {};
  EXPECT_EQ(kmcl_.VmbPacketSendWithExternalPfns(kmcl_.VmbPacketAllocate(c), cmd, 8, list, 2, 0),
            STATUS_INVALID_PARAMETER);
  ASSERT_EQ(kmcl_.VmbPacketSendWithExternalPfns(Tracked(c), cmd, 8, list, 2,
                                                VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION),
            STATUS_SUCCESS);
  ASSERT_TRUE(completions_.WaitFor(1));
  EXPECT_EQ(bytes.load(), 8192u);
  EXPECT_EQ(last.load(), 0x3C);
}

TEST_F(VmbChannelSendSynchronousRequest, ReturnsTheCompletionAndChecksItsBuffer) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  uint64_t v = 0x1234, reply = 0;
  UINT32 size = 7;
  EXPECT_EQ(kmcl_.VmbChannelSendSynchronousRequest(c, &v, 8, nullptr, VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
                                                   &reply, &size, nullptr),
            STATUS_INVALID_PARAMETER)
      << "the completion buffer size must be a multiple of 8";
  size = 8;
  ASSERT_EQ(kmcl_.VmbChannelSendSynchronousRequest(c, &v, 8, nullptr, VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
                                                   &reply, &size, nullptr),
            STATUS_SUCCESS);
  EXPECT_EQ(reply, 0x1234u);
  EXPECT_EQ(size, 8u);
}

TEST_F(VmbChannelSendSynchronousRequest, TimesOutAsCancelledAndRefusesWhenFullWithZeroTimeout) {
  VMBCHANNEL s = Server(*host_, true, /*start=*/false);  // opened but never draining
  VMBCHANNEL c = Client(*guest_, false);
  ASSERT_EQ(kmcl_.VmbClientChannelInitSetRingBufferPageCount(c, 1, 1), STATUS_SUCCESS);
  ASSERT_EQ(kmcl_.VmbChannelEnable(c), STATUS_SUCCESS);
  ASSERT_TRUE(rec_.WaitFor("guest:post_started"));
  uint64_t v = 1, reply;
  UINT32 size = 8;
  LARGE_INTEGER timeout;
  timeout.QuadPart = -20 * 10000;  // 20 ms, relative
  EXPECT_EQ(kmcl_.VmbChannelSendSynchronousRequest(c, &v, 8, nullptr, VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
                                                   &reply, &size, &timeout),
            STATUS_CANCELLED);
  std::vector<uint8_t> big(1000);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(SendBytes(c, big, 0), STATUS_SUCCESS);  // fill the 4 KiB ring
  timeout.QuadPart = 0;
  EXPECT_EQ(kmcl_.VmbChannelSendSynchronousRequest(c, big.data(), 1000, nullptr, 0, nullptr, nullptr, &timeout),
            STATUS_BUFFER_OVERFLOW)
      << "did not fit, not queued";
  (void)s;
}

TEST_F(VmbChannelSendSynchronousRequest, TheRootMayNotWait) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  uint64_t v = 1;
  EXPECT_EQ(kmcl_.VmbChannelSendSynchronousRequest(s, &v, 8, nullptr, VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
                                                   nullptr, nullptr, nullptr),
            STATUS_INVALID_PARAMETER);
  LARGE_INTEGER zero;
  zero.QuadPart = 0;
  EXPECT_EQ(kmcl_.VmbChannelSendSynchronousRequest(s, &v, 8, nullptr, 0, nullptr, nullptr, &zero), STATUS_SUCCESS);
  kmcl_.VmbChannelDisable(c);
  EXPECT_EQ(kmcl_.VmbChannelSendSynchronousRequest(c, &v, 8, nullptr, 0, nullptr, nullptr, nullptr),
            STATUS_DEVICE_REMOVED);
}

TEST_F(VmbChannelPacketCompleteP, MayHappenLongAfterDeliveryOnAnotherThread) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  std::atomic<VMBPACKETCOMPLETION> held{nullptr};
  host_->on_packet = [&](VMBCHANNEL, VMBPACKETCOMPLETION pkt, PVOID, UINT32, UINT32) { held = pkt; };
  uint8_t b[8] = {5};
  ASSERT_EQ(kmcl_.VmbPacketSend(Tracked(c), b, 8, nullptr, VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION),
            STATUS_SUCCESS);
  ASSERT_TRUE(rec_.WaitFor("host:packet"));
  EXPECT_TRUE(completions_.results.empty());
  std::thread later([&] {
    uint8_t answer[8] = {6};
    kmcl_.VmbChannelPacketComplete(held.load(), answer, 8);
  });
  later.join();
  ASSERT_TRUE(completions_.WaitFor(1));
  EXPECT_EQ(completions_.results[0].second[0], 6);
}

TEST_F(VmbChannelPacketDeferToPassive, RedeliversAtPassiveLevel) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  std::atomic<int> calls{0};
  std::atomic<const kmcl::Executor*> first{}, second{};
  host_->on_packet = [&](VMBCHANNEL, VMBPACKETCOMPLETION pkt, PVOID, UINT32, UINT32) {
    if (calls++ == 0) {
      first = kmcl::Executor::Current();
      ::VmbChannelPacketDeferToPassive(pkt);
      return;
    }
    second = kmcl::Executor::Current();
    ::VmbChannelPacketComplete(pkt, nullptr, 0);
  };
  ASSERT_EQ(SendBytes(c, {1}, 0), STATUS_SUCCESS);
  ASSERT_TRUE(rec_.WaitFor("host:packet", 2));
  EXPECT_EQ(calls.load(), 2);
  // First at DISPATCH level, then again where the state callbacks run.
  EXPECT_EQ(first.load(), kmcl::ChannelExecutors::Default().dispatch);
  EXPECT_EQ(second.load(), kmcl::ChannelExecutors::Default().passive);
}

TEST_F(VmbChannelPacketFail, StopsTheIncomingQueue) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  host_->on_packet = [](VMBCHANNEL, VMBPACKETCOMPLETION pkt, PVOID buf, UINT32, UINT32) {
    if (static_cast<uint8_t*>(buf)[0] == 0xBA) {
      ::VmbChannelPacketFail(pkt);
    } else {
      ::VmbChannelPacketComplete(pkt, nullptr, 0);
    }
  };
  ASSERT_EQ(SendBytes(c, {0xBA}, 0), STATUS_SUCCESS);
  ASSERT_EQ(SendBytes(c, {0x01}, 0), STATUS_SUCCESS);
  ASSERT_TRUE(rec_.WaitFor("host:packet"));
  kmcl_.VmbChannelPause(s);  // pause + start restarts the queue
  EXPECT_EQ(host_->packets.load(), 1u) << "nothing after the failed packet";
  kmcl_.VmbChannelStart(s);
  ASSERT_TRUE(rec_.WaitFor("host:packet", 2));
}

TEST_F(VmbChannelPacketGetExternalData, FailsWithoutExternalData) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  std::atomic<NTSTATUS> st{STATUS_SUCCESS};
  host_->on_packet = [&](VMBCHANNEL, VMBPACKETCOMPLETION pkt, PVOID, UINT32, UINT32) {
    PMDL mdl;
    st = ::VmbChannelPacketGetExternalData(pkt, 0, &mdl);
    ::VmbChannelPacketComplete(pkt, nullptr, 0);
  };
  ASSERT_EQ(SendBytes(c, {1}, 0), STATUS_SUCCESS);
  ASSERT_TRUE(rec_.WaitFor("host:packet"));
  EXPECT_EQ(st.load(), STATUS_INVALID_DEVICE_STATE);
}

TEST_F(VmbChannelSetTransactionQuota, CapsDeliveredButUncompletedPackets) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  kmcl_.VmbChannelSetTransactionQuota(s, 1);
  std::vector<VMBPACKETCOMPLETION> held;
  bool hold = true;
  Mutex mu;
  host_->on_packet = [&](VMBCHANNEL, VMBPACKETCOMPLETION pkt, PVOID, UINT32, UINT32) {
    MutexLock lock(&mu);
    if (hold) {
      held.push_back(pkt);
    } else {
      ::VmbChannelPacketComplete(pkt, nullptr, 0);
    }
  };
  for (int i = 0; i < 3; ++i) ASSERT_EQ(SendBytes(c, {1}, 0), STATUS_SUCCESS);
  ASSERT_TRUE(rec_.WaitFor("host:packet"));
  VMBPACKETCOMPLETION first;
  {
    MutexLock lock(&mu);
    EXPECT_EQ(held.size(), 1u) << "one delivered, two wait behind the quota";
    first = held[0];
    held.clear();
  }
  kmcl_.VmbChannelPacketComplete(first, nullptr, 0);  // restarts delivery
  ASSERT_TRUE(rec_.WaitFor("host:packet", 2));
  std::vector<VMBPACKETCOMPLETION> rest;
  {
    MutexLock lock(&mu);
    hold = false;  // from now on the driver completes inline
    rest.swap(held);
  }
  for (VMBPACKETCOMPLETION pkt : rest) kmcl_.VmbChannelPacketComplete(pkt, nullptr, 0);
  ASSERT_TRUE(rec_.WaitFor("host:packet", 3));
}

TEST_F(VmbChannelSetIncomingProcessingAtPassive, DeliversAtPassiveLevel) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  kmcl_.VmbChannelSetIncomingProcessingAtPassive(s, TRUE);
  ASSERT_EQ(SendBytes(c, {1}, 0), STATUS_SUCCESS);
  ASSERT_TRUE(rec_.WaitFor("host:packet"));
  EXPECT_EQ(host_->packet_executor.load(), kmcl::ChannelExecutors::Default().passive);
  EXPECT_EQ(host_->callback_executor.load(), kmcl::ChannelExecutors::Default().passive);
}

TEST_F(EvtVmbChannelProcessPacket, SeesPayloadsPaddedToEightBytes) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  std::atomic<uint32_t> len{0};
  host_->on_packet = [&](VMBCHANNEL, VMBPACKETCOMPLETION pkt, PVOID, UINT32 l, UINT32 flags) {
    len = l;
    EXPECT_EQ(flags, 0u);
    ::VmbChannelPacketComplete(pkt, nullptr, 0);
  };
  ASSERT_EQ(SendBytes(c, {1, 2, 3, 4, 5}, 0), STATUS_SUCCESS);
  ASSERT_TRUE(rec_.WaitFor("host:packet"));
  EXPECT_EQ(len.load(), 8u);
}

TEST_F(EvtVmbChannelProcessingComplete, CountsEveryPacketOfEachBatch) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  for (int i = 0; i < 50; ++i) ASSERT_EQ(SendBytes(c, {1}, 0), STATUS_SUCCESS);
  ASSERT_TRUE(rec_.WaitFor("host:packet", 50));
  kmcl_.VmbChannelPause(s);  // the last batch's ProcessingComplete has run
  EXPECT_GE(host_->batches.load(), 1u);
  EXPECT_EQ(host_->batch_packets.load(), 50u);
}

TEST_F(EvtVmbPacketCompletionRoutineP, GetsCancelledWhenTheChannelCloses) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  std::atomic<VMBPACKETCOMPLETION> held{nullptr};
  host_->on_packet = [&](VMBCHANNEL, VMBPACKETCOMPLETION pkt, PVOID, UINT32, UINT32) { held = pkt; };
  uint8_t b[8] = {};
  ASSERT_EQ(kmcl_.VmbPacketSend(Tracked(c), b, 8, nullptr, VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION),
            STATUS_SUCCESS);
  ASSERT_TRUE(rec_.WaitFor("host:packet"));
  std::thread t([&] { kmcl_.VmbChannelDisable(c); });  // the guest closes under the transaction
  ASSERT_TRUE(completions_.WaitFor(1));
  EXPECT_EQ(completions_.results[0].first, STATUS_CANCELLED);
  // The host driver still owes its delivery; its close waits for it (KMCL).
  kmcl_.VmbChannelPacketComplete(held.load(), nullptr, 0);
  t.join();
  ASSERT_TRUE(rec_.WaitFor("host:closed"));
}

// ---- GPADLs ----------------------------------------------------------------------

TEST_F(VmbChannelCreateGpadlFromBuffer, DescribesGuestMemoryTheHostCanMap) {
  VMBCHANNEL s = Server(*host_);
  VMBCHANNEL c = Client(*guest_, false);
  UINT32 handle = 0;
  auto* buffer = static_cast<uint8_t*>(KmclAllocateGuestMemory(device_, 8192));
  EXPECT_EQ(kmcl_.VmbChannelCreateGpadlFromBuffer(c, 0, buffer, 8192, &handle), STATUS_INVALID_DEVICE_STATE)
      << "only once opened";
  ASSERT_EQ(kmcl_.VmbChannelEnable(c), STATUS_SUCCESS);
  ASSERT_TRUE(rec_.WaitFor("guest:post_started"));
  std::vector<uint8_t> local(64);
  EXPECT_EQ(kmcl_.VmbChannelCreateGpadlFromBuffer(c, 0, local.data(), 64, &handle), STATUS_INVALID_PARAMETER_3)
      << "not guest memory";
  EXPECT_EQ(kmcl_.VmbChannelCreateGpadlFromBuffer(c, 2, buffer, 8192, &handle), STATUS_INVALID_PARAMETER_2);
  std::memset(buffer, 0x77, 8192);
  ASSERT_EQ(kmcl_.VmbChannelCreateGpadlFromBuffer(c, 0, buffer, 8192, &handle), STATUS_SUCCESS);
  PMDL mdl = nullptr;
  ASSERT_EQ(kmcl_.VmbChannelMapGpadl(s, 0, handle, &mdl), STATUS_SUCCESS);
  EXPECT_EQ(MmGetMdlByteCount(mdl), 8192u);
  EXPECT_EQ(static_cast<uint8_t*>(MmGetSystemAddressForMdlSafe(mdl, 0))[8191], 0x77);
  kmcl_.VmbChannelUnmapGpadl(s, handle);
  kmcl_.VmbChannelDeleteGpadl(c, handle);
  KmclFreeGuestMemory(device_, buffer, 8192);
}

TEST_F(VmbChannelCreateGpadlFromMdl, TakesAWindowOfTheMdl) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  auto* buffer = static_cast<uint8_t*>(KmclAllocateGuestMemory(device_, 4 * 4096));
  for (int i = 0; i < 4 * 4096; ++i) buffer[i] = static_cast<uint8_t>(i);
  PMDL source = KmclBuildGuestMdl(device_, buffer, 4 * 4096);
  UINT32 handle = 0;
  ASSERT_EQ(kmcl_.VmbChannelCreateGpadlFromMdl(c, 0, source, 5000, 6000, &handle), STATUS_SUCCESS);
  PMDL mdl = nullptr;
  ASSERT_EQ(kmcl_.VmbChannelMapGpadl(s, VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY, handle, &mdl), STATUS_SUCCESS);
  EXPECT_EQ(MmGetMdlByteCount(mdl), 6000u);
  EXPECT_EQ(MmGetMdlByteOffset(mdl), 5000u % 4096);
  EXPECT_EQ(static_cast<uint8_t*>(mdl->MappedSystemVa)[0], static_cast<uint8_t>(5000));
  kmcl_.VmbChannelUnmapGpadl(s, handle);
  kmcl_.VmbChannelDeleteGpadl(c, handle);
  KmclFreeMdl(source);
}

TEST_F(VmbChannelDeleteGpadl, WaitsForTheHostToUnmap) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  auto* buffer = KmclAllocateGuestMemory(device_, 4096);
  UINT32 handle = 0;
  ASSERT_EQ(kmcl_.VmbChannelCreateGpadlFromBuffer(c, 0, buffer, 4096, &handle), STATUS_SUCCESS);
  PMDL mdl = nullptr;
  ASSERT_EQ(kmcl_.VmbChannelMapGpadl(s, 0, handle, &mdl), STATUS_SUCCESS);
  std::atomic<bool> deleted{false};
  std::thread t([&] {
    kmcl_.VmbChannelDeleteGpadl(c, handle);
    deleted = true;
  });
  // The teardown is pending while mapped.
  while (partition_->gpadls().Get(handle)->state != GpadlState::kTearingDown) std::this_thread::yield();
  EXPECT_FALSE(deleted.load());
  kmcl_.VmbChannelUnmapGpadl(s, handle);
  t.join();
  EXPECT_TRUE(deleted.load());
  EXPECT_FALSE(partition_->gpadls().Get(handle).has_value());
}

TEST_F(VmbChannelMapGpadl, OneMappingAtATimeAndReadOnlyIsEnforced) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  auto* buffer = KmclAllocateGuestMemory(device_, 4096);
  UINT32 handle = 0;
  ASSERT_EQ(kmcl_.VmbChannelCreateGpadlFromBuffer(c, VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY, buffer, 4096, &handle),
            STATUS_SUCCESS);
  PMDL mdl = nullptr;
  EXPECT_EQ(kmcl_.VmbChannelMapGpadl(s, 0, handle, &mdl), STATUS_INVALID_DEVICE_STATE)
      << "created read-only: write mapping refused";
  ASSERT_EQ(kmcl_.VmbChannelMapGpadl(s, VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY, handle, &mdl), STATUS_SUCCESS);
  EXPECT_EQ(kmcl_.VmbChannelMapGpadl(s, VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY, handle, &mdl),
            STATUS_INVALID_DEVICE_STATE)
      << "already mapped";
  EXPECT_EQ(kmcl_.VmbChannelMapGpadl(s, 0, 0xBAD, &mdl), STATUS_INVALID_PARAMETER_3);
  EXPECT_EQ(kmcl_.VmbChannelMapGpadl(c, 0, handle, &mdl), STATUS_INVALID_PARAMETER_1) << "server only";
  kmcl_.VmbChannelUnmapGpadl(s, handle);
  kmcl_.VmbChannelDeleteGpadl(c, handle);
}

TEST_F(VmbChannelUnmapGpadl, AllowsMappingAgain) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  auto* buffer = KmclAllocateGuestMemory(device_, 4096);
  UINT32 handle = 0;
  ASSERT_EQ(kmcl_.VmbChannelCreateGpadlFromBuffer(c, 0, buffer, 4096, &handle), STATUS_SUCCESS);
  PMDL mdl = nullptr;
  ASSERT_EQ(kmcl_.VmbChannelMapGpadl(s, 0, handle, &mdl), STATUS_SUCCESS);
  kmcl_.VmbChannelUnmapGpadl(s, handle);
  kmcl_.VmbChannelUnmapGpadl(s, handle);  // a second unmap is ignored
  ASSERT_EQ(kmcl_.VmbChannelMapGpadl(s, 0, handle, &mdl), STATUS_SUCCESS);
  kmcl_.VmbChannelUnmapGpadl(s, handle);
  kmcl_.VmbChannelDeleteGpadl(c, handle);
}

}  // namespace
}  // namespace kmcl::conformance
