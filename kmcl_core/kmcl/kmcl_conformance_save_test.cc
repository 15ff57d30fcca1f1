// KMCL conformance: save and restore (VmbChannelSaveBegin, SaveContinue,
// SaveEnd, VmbChannelRestoreFromBuffer) through the function tables:
// chunked SaveContinue, chunked RestoreFromBuffer, the per-packet callbacks
// with two-phase sizing, VmbPacketRestore.
#include <cstring>
#include <thread>

#include "gtest/gtest.h"
#include "kmcl_core/kmcl/kmcl_conformance.h"
#include "kmcl_core/saved/saved_blob.h"

namespace kmcl::conformance {
namespace {

KMCL_SUITE(VmbChannelSaveBegin)
KMCL_SUITE(VmbChannelSaveContinue)
KMCL_SUITE(VmbChannelSaveEnd)
KMCL_SUITE(VmbChannelRestoreFromBuffer)
KMCL_SUITE(VmbPacketRestore)
KMCL_SUITE(VmbServerChannelInitSetSaveRestorePacketCallbacks)
KMCL_SUITE(EvtVmbChannelSavePacket)
KMCL_SUITE(EvtVmbChannelRestorePacket)

// Saves `s` through SaveContinue in chunks of `chunk` bytes.
std::vector<std::string> SaveInChunks(KMCL_SERVER_INTERFACE_V1& k, VMBCHANNEL s, ULONG chunk,
                                      NTSTATUS* last) {
  std::vector<std::string> chunks;
  std::string buffer(chunk, '\0');
  for (int guard = 0; guard < 1 << 20; ++guard) {
    ULONG filled = 0, required = 0;
    *last = k.VmbChannelSaveContinue(s, buffer.data(), chunk, &filled, &required);
    if (*last != STATUS_BUFFER_OVERFLOW && *last != STATUS_SUCCESS) break;
    chunks.push_back(buffer.substr(0, filled));
    if (*last == STATUS_SUCCESS) break;
  }
  return chunks;
}

TEST_F(VmbChannelSaveBegin, RequiresAPausedServerChannel) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  EXPECT_EQ(kmcl_.VmbChannelSaveBegin(s), STATUS_INVALID_DEVICE_STATE) << "running";
  EXPECT_EQ(kmcl_.VmbChannelSaveBegin(c), STATUS_INVALID_PARAMETER_1) << "server only";
  kmcl_.VmbChannelPause(s);
  EXPECT_EQ(kmcl_.VmbChannelSaveBegin(s), STATUS_SUCCESS);
  kmcl_.VmbChannelSaveEnd(s);
  kmcl_.VmbChannelStart(s);  // keeps running here: a checkpoint
  EXPECT_EQ(SendBytes(c, {1}, 0), STATUS_SUCCESS);
  ASSERT_TRUE(rec_.WaitFor("host:packet"));
}

TEST_F(VmbChannelSaveContinue, ChunksIntoBuffersOfAnySize) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  kmcl_.VmbChannelPause(s);
  ULONG filled = 1, required = 0;
  EXPECT_EQ(kmcl_.VmbChannelSaveContinue(s, nullptr, 0, &filled, &required), STATUS_INVALID_DEVICE_STATE)
      << "no SaveBegin";
  ASSERT_EQ(kmcl_.VmbChannelSaveBegin(s), STATUS_SUCCESS);
  EXPECT_EQ(kmcl_.VmbChannelSaveContinue(s, nullptr, 0, &filled, &required), STATUS_BUFFER_TOO_SMALL);
  EXPECT_EQ(filled, 0u);
  EXPECT_GT(required, 8u);
  NTSTATUS last;
  auto chunks = SaveInChunks(kmcl_, s, 37, &last);
  EXPECT_EQ(last, STATUS_SUCCESS);
  EXPECT_GT(chunks.size(), 2u) << "STATUS_BUFFER_OVERFLOW until the last chunk";
  size_t total = 0;
  for (auto& ch : chunks) total += ch.size();
  EXPECT_EQ(total, required) << "BytesRequired was the rest of the stream";
  kmcl_.VmbChannelSaveEnd(s);
}

TEST_F(VmbChannelSaveEnd, EndsTheSaveContext) {
  VMBCHANNEL s, c;
  OpenPair(&s, &c);
  kmcl_.VmbChannelPause(s);
  ASSERT_EQ(kmcl_.VmbChannelSaveBegin(s), STATUS_SUCCESS);
  kmcl_.VmbChannelSaveEnd(s);
  char b[64];
  ULONG filled, required;
  EXPECT_EQ(kmcl_.VmbChannelSaveContinue(s, b, sizeof(b), &filled, &required), STATUS_INVALID_DEVICE_STATE);
}

// The full KMCL flow: the VSP's channel saved with its in-flight packets
// (two-phase SavePacket), the partition and the guest endpoint saved, all
// restored, the VSP's packets back through RestorePacket + VmbPacketRestore,
// and the outstanding transaction completes in the new world.
struct SaveFlow {
  static inline std::atomic<int> save_calls{0};
  static inline std::atomic<int> restore_calls{0};
  static inline std::atomic<uint64_t> completed_tag{0};
  static inline KMCL_SERVER_INTERFACE_V1* k = nullptr;
  static NTSTATUS SavePacket(VMBCHANNEL, VMBPACKET packet, PVOID buffer, UINT32 size, PUINT32 needed) {
    save_calls++;
    *needed = 8;
    if (size < 8) return STATUS_BUFFER_TOO_SMALL;  // first phase: report the size
    uint64_t tag = reinterpret_cast<uint64_t>(k->VmbPacketGetPointer(packet));
    std::memcpy(buffer, &tag, 8);
    return STATUS_SUCCESS;
  }
  static VOID Completion(VMBPACKET packet, NTSTATUS status, PVOID, UINT32) {
    if (status == STATUS_SUCCESS) completed_tag = reinterpret_cast<uint64_t>(k->VmbPacketGetPointer(packet));
    k->VmbPacketFree(packet);
  }
  static NTSTATUS RestorePacket(VMBCHANNEL ch, PVOID lib, UINT32 lib_size, PVOID saved, UINT32 saved_size) {
    restore_calls++;
    if (saved_size != 8) return STATUS_INVALID_PARAMETER;
    uint64_t tag;
    std::memcpy(&tag, saved, 8);
    VMBPACKET p = k->VmbPacketAllocate(ch);
    k->VmbPacketSetPointer(p, reinterpret_cast<PVOID>(tag));
    k->VmbPacketSetCompletionRoutine(p, Completion);
    return k->VmbPacketRestore(p, lib, lib_size);
  }
};

TEST_F(EvtVmbChannelSavePacket, TwoPhaseSizingCarriesTheDriversStateAcrossARestore) {
  SaveFlow::k = &kmcl_;
  VMBCHANNEL s = Server(*host_, false);
  ASSERT_EQ(kmcl_.VmbServerChannelInitSetSaveRestorePacketCallbacks(s, SaveFlow::SavePacket, SaveFlow::RestorePacket),
            STATUS_SUCCESS);
  ASSERT_EQ(kmcl_.VmbChannelEnable(s), STATUS_SUCCESS);
  kmcl_.VmbChannelStart(s);
  // The guest, through the C++ API: KMCL's save is server-only.
  auto guest = *Channel::Allocate(*partition_, EndpointRole::kGuest);
  ASSERT_TRUE(guest->SetTargetPnp(Guid{kType.Data1, kType.Data2, kType.Data3,
                                       {kType.Data4[0], kType.Data4[1], kType.Data4[2], kType.Data4[3],
                                        kType.Data4[4], kType.Data4[5], kType.Data4[6], kType.Data4[7]}},
                                  std::nullopt)
                  .ok());
  ChannelCallbacks gcb;
  gcb.process_packet = [](Channel& ch, Delivery& d, std::span<const uint8_t> b, uint32_t) { ch.Complete(d, b); };
  gcb.post_started = [this](Channel&) { rec_.Add("g:post_started"); };
  ASSERT_TRUE(guest->SetCallbacks(gcb).ok());
  ASSERT_TRUE(guest->Enable().ok());
  ASSERT_TRUE(rec_.WaitFor("g:post_started"));
  ASSERT_TRUE(guest->Pause().ok());  // the guest stops draining
  VMBPACKET p = kmcl_.VmbPacketAllocate(s);
  kmcl_.VmbPacketSetPointer(p, reinterpret_cast<PVOID>(uint64_t{0xC0FFEE}));
  kmcl_.VmbPacketSetCompletionRoutine(p, SaveFlow::Completion);
  uint8_t bytes[8] = {7};
  ASSERT_EQ(kmcl_.VmbPacketSend(p, bytes, 8, nullptr, VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION),
            STATUS_SUCCESS);
  kmcl_.VmbChannelPause(s);
  ASSERT_EQ(kmcl_.VmbChannelSaveBegin(s), STATUS_SUCCESS);
  EXPECT_EQ(SaveFlow::save_calls.load(), 2) << "once to size, once to fill";
  NTSTATUS last;
  auto chunks = SaveInChunks(kmcl_, s, 100, &last);
  ASSERT_EQ(last, STATUS_SUCCESS);
  kmcl_.VmbChannelSaveEnd(s);
  auto guest_blob = guest->Save();
  ASSERT_TRUE(guest_blob.ok());
  auto partition_blob = partition_->Save();
  ASSERT_TRUE(partition_blob.ok());

  // A new world.
  auto restored = *Partition::Restore(*partition_blob, "restored");
  VMBCHANNEL s2 = nullptr;
  ASSERT_EQ(kmcl_.VmbChannelAllocate(KmclGetVmbusDevice(restored->vmbus_handle(), 0), TRUE, &s2), STATUS_SUCCESS);
  channels_.push_back(s2);
  kmcl_.VmbChannelSetPointer(s2, host_);
  ASSERT_EQ(kmcl_.VmbServerChannelInitSetSaveRestorePacketCallbacks(s2, SaveFlow::SavePacket, SaveFlow::RestorePacket),
            STATUS_SUCCESS);
  for (size_t i = 0; i < chunks.size(); ++i) {
    NTSTATUS st = kmcl_.VmbChannelRestoreFromBuffer(s2, chunks[i].data(), static_cast<ULONG>(chunks[i].size()));
    EXPECT_EQ(st, i + 1 < chunks.size() ? STATUS_MORE_PROCESSING_REQUIRED : STATUS_SUCCESS) << "chunk " << i;
  }
  EXPECT_EQ(SaveFlow::restore_calls.load(), 1);
  ASSERT_EQ(kmcl_.VmbChannelEnable(s2), STATUS_SUCCESS);
  kmcl_.VmbChannelStart(s2);
  auto guest2 = *Channel::Allocate(*restored, EndpointRole::kGuest);
  ASSERT_TRUE(guest2->SetCallbacks(gcb).ok());
  ASSERT_TRUE(guest2->Restore(*guest_blob).ok());
  ASSERT_TRUE(guest2->Enable().ok());
  ASSERT_TRUE(guest2->Start().ok());
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (SaveFlow::completed_tag.load() != 0xC0FFEE && absl::Now() < deadline) std::this_thread::yield();
  EXPECT_EQ(SaveFlow::completed_tag.load(), 0xC0FFEEu) << "the restored packet's transaction completed";
  ASSERT_TRUE(guest2->Disable().ok());
  kmcl_.VmbChannelDisable(s2);
  kmcl_.VmbChannelCleanup(s2);
  channels_.pop_back();
  ASSERT_TRUE(guest->Disable().ok());
}

TEST_F(EvtVmbChannelRestorePacket, AFailingDriverFailsTheRestore) {
  static auto fail = [](VMBCHANNEL, PVOID, UINT32, PVOID, UINT32) -> NTSTATUS { return STATUS_UNSUCCESSFUL; };
  VMBCHANNEL s = Server(*host_, false);
  ASSERT_EQ(kmcl_.VmbServerChannelInitSetSaveRestorePacketCallbacks(s, nullptr, fail), STATUS_SUCCESS);
  // A blob with one queued packet, made by a channel with a paused peer.
  VMBCHANNEL donor = Server(*guest_, false);
  ASSERT_EQ(kmcl_.VmbChannelEnable(donor), STATUS_SUCCESS);
  ASSERT_EQ(SendBytes(donor, {1, 2, 3}, 0), STATUS_SUCCESS);  // queued: nobody opened it
  ASSERT_EQ(kmcl_.VmbChannelSaveBegin(donor), STATUS_SUCCESS);
  NTSTATUS last;
  auto chunks = SaveInChunks(kmcl_, donor, 1 << 16, &last);
  kmcl_.VmbChannelSaveEnd(donor);
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(kmcl_.VmbChannelRestoreFromBuffer(s, chunks[0].data(), static_cast<ULONG>(chunks[0].size())),
            STATUS_INVALID_PARAMETER);
}

TEST_F(VmbChannelRestoreFromBuffer, RejectsGarbageNewerVersionsAndLateCalls) {
  VMBCHANNEL s = Server(*host_, false);
  const uint64_t length = 5;
  std::string stream(reinterpret_cast<const char*>(&length), 8);
  stream += "junk!";
  EXPECT_EQ(kmcl_.VmbChannelRestoreFromBuffer(s, stream.data(), 4), STATUS_MORE_PROCESSING_REQUIRED);
  EXPECT_EQ(kmcl_.VmbChannelRestoreFromBuffer(s, stream.data() + 4, static_cast<ULONG>(stream.size() - 4)),
            STATUS_INVALID_PARAMETER);
  // A blob from a newer kmcl_core.
  VMBCHANNEL donor = Server(*guest_, false);
  ASSERT_EQ(kmcl_.VmbChannelSaveBegin(donor), STATUS_SUCCESS);
  NTSTATUS last;
  auto chunks = SaveInChunks(kmcl_, donor, 1 << 16, &last);
  kmcl_.VmbChannelSaveEnd(donor);
  saved::v1::SavedBlob blob;
  ASSERT_TRUE(blob.ParseFromString(chunks[0].substr(8)));
  blob.set_format_version(kSavedStateFormatVersion + 1);
  std::string body = blob.SerializeAsString();
  const uint64_t n = body.size();
  std::string newer(reinterpret_cast<const char*>(&n), 8);
  newer += body;
  EXPECT_EQ(kmcl_.VmbChannelRestoreFromBuffer(s, newer.data(), static_cast<ULONG>(newer.size())),
            STATUS_REVISION_MISMATCH);
  ASSERT_EQ(kmcl_.VmbChannelEnable(s), STATUS_SUCCESS);
  EXPECT_EQ(kmcl_.VmbChannelRestoreFromBuffer(s, chunks[0].data(), static_cast<ULONG>(chunks[0].size())),
            STATUS_INVALID_PARAMETER_1)
      << "only before Enable";
}

TEST_F(VmbPacketRestore, RejectsABadHandleAndCorruptState) {
  VMBCHANNEL s = Server(*host_, false);
  uint8_t junk[4] = {1, 2, 3, 4};
  EXPECT_EQ(kmcl_.VmbPacketRestore(nullptr, junk, 4), STATUS_INVALID_PARAMETER_1);
  VMBPACKET p = kmcl_.VmbPacketAllocate(s);
  EXPECT_EQ(kmcl_.VmbPacketRestore(p, junk, 4), STATUS_INVALID_PARAMETER);
  kmcl_.VmbPacketFree(p);
}

TEST_F(VmbServerChannelInitSetSaveRestorePacketCallbacks, ServerOnlyAndOnlyWhileDisabled) {
  VMBCHANNEL c = Client(*guest_, false);
  EXPECT_EQ(kmcl_.VmbServerChannelInitSetSaveRestorePacketCallbacks(c, nullptr, nullptr),
            STATUS_INVALID_PARAMETER_1);
  VMBCHANNEL s = Server(*host_);
  EXPECT_EQ(kmcl_.VmbServerChannelInitSetSaveRestorePacketCallbacks(s, nullptr, nullptr),
            STATUS_INVALID_PARAMETER_1);
}

}  // namespace
}  // namespace kmcl::conformance
