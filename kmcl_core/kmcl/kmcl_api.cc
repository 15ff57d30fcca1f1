// The KMCL compatibility surface, part 1: channel handles, lifecycle,
// configuration, state, server-only setters, VMBus handles, devices.
// Packets, GPADLs, MDLs and the function tables are in kmcl_api_io.cc.
#include <algorithm>
#include <cstring>
#include <string>
#include <tuple>

#include "absl/container/flat_hash_set.h"
#include "kmcl_core/bus/partition.h"
#include "kmcl_core/kmcl/kmcl_compat.h"

namespace kmcl::compat {
namespace {

Mutex g_mu;
absl::flat_hash_set<CompatChannel*>& Channels() ABSL_EXCLUSIVE_LOCKS_REQUIRED(g_mu) {
  static auto* set = new absl::flat_hash_set<CompatChannel*>();
  return *set;
}
std::vector<std::unique_ptr<Device>>& Devices() ABSL_EXCLUSIVE_LOCKS_REQUIRED(g_mu) {
  static auto* devices = new std::vector<std::unique_ptr<Device>>();
  return *devices;
}

// Kernel handles are user VMBus handles with this bit set.
constexpr uint64_t kKernelHandleBit = uint64_t{1} << 62;

Guid ToGuid(const GUID& g) {
  Guid out;
  out.data1 = g.Data1;
  out.data2 = g.Data2;
  out.data3 = g.Data3;
  std::memcpy(out.data4, g.Data4, sizeof(out.data4));
  return out;
}

}  // namespace

CompatChannel* FromHandle(VMBCHANNEL handle) {
  auto* c = reinterpret_cast<CompatChannel*>(handle);
  MutexLock lock(&g_mu);
  return Channels().contains(c) ? c : nullptr;
}

Packet* FromHandle(VMBPACKET handle) {
  auto* p = reinterpret_cast<Packet*>(handle);
  if (p == nullptr || reinterpret_cast<uintptr_t>(p) % alignof(Packet) != 0) return nullptr;
  return p->magic() == Packet::kMagic ? p : nullptr;
}

Delivery* FromHandle(VMBPACKETCOMPLETION handle) {
  auto* d = reinterpret_cast<Delivery*>(handle);
  if (d == nullptr || reinterpret_cast<uintptr_t>(d) % alignof(Delivery) != 0) return nullptr;
  return d->magic() == Delivery::kMagic ? d : nullptr;
}

const Device* FindDevice(const void* handle) {
  MutexLock lock(&g_mu);
  for (auto& d : Devices()) {
    if (d.get() == handle) return d.get();  // compared, never dereferenced unchecked
  }
  return nullptr;
}

CompatChannel* Owner(const Channel& channel) {
  return static_cast<CompatChannel*>(channel.kmcl_context);
}

void RegisterChannel(CompatChannel* c) {
  MutexLock lock(&g_mu);
  Channels().insert(c);
}

void UnregisterChannel(CompatChannel* c) {
  MutexLock lock(&g_mu);
  Channels().erase(c);
}

NTSTATUS ToKmcl(const absl::Status& status, NTSTATUS wrong_state, NTSTATUS bad_argument) {
  switch (status.code()) {
    case absl::StatusCode::kOk: return STATUS_SUCCESS;
    case absl::StatusCode::kFailedPrecondition: return wrong_state;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange: return bad_argument;
    default: return ToNtStatus(status);
  }
}

absl::Status InstallCallbacks(CompatChannel& c) {
  ChannelCallbacks cb;
  const VMB_CHANNEL_STATE_CHANGE_CALLBACKS s = c.state;
  CompatChannel* self = &c;
  if (s.EvtChannelOpened) cb.opened = [f = s.EvtChannelOpened, self](Channel&) { return f(ToHandle(self)); };
  if (s.EvtChannelClosed) cb.closed = [f = s.EvtChannelClosed, self](Channel&) { f(ToHandle(self)); };
  if (s.EvtChannelSuspend) cb.suspend = [f = s.EvtChannelSuspend, self](Channel&) { f(ToHandle(self)); };
  if (s.EvtChannelStarted) cb.started = [f = s.EvtChannelStarted, self](Channel&) { f(ToHandle(self)); };
  if (s.EvtChannelPostStarted) {
    cb.post_started = [f = s.EvtChannelPostStarted, self](Channel&) { f(ToHandle(self)); };
  }
  if (c.pnp_failure) {
    cb.pnp_failure = [f = c.pnp_failure, self](Channel&, NTSTATUS st) { f(ToHandle(self), st); };
  }
  if (c.process_packet) {
    cb.process_packet = [f = c.process_packet, self](Channel&, Delivery& d,
                                                      std::span<const uint8_t> buf, uint32_t flags) {
      f(ToHandle(self), ToHandle(&d), const_cast<uint8_t*>(buf.data()),
        static_cast<UINT32>(buf.size()), flags);
    };
  }
  if (c.processing_complete) {
    cb.processing_complete = [f = c.processing_complete, self](Channel&, uint32_t n) {
      f(ToHandle(self), n);
    };
  }
  if (c.save_packet) {
    // Two-phase sizing: first with no buffer to learn BytesNeeded.
    cb.save_packet = [f = c.save_packet, self](Channel&, Packet& packet)
        -> absl::StatusOr<std::vector<uint8_t>> {
      UINT32 needed = 0;
      NTSTATUS st = f(ToHandle(self), ToHandle(&packet), nullptr, 0, &needed);
      if (NT_SUCCESS(st) && needed == 0) return std::vector<uint8_t>();
      if (needed == 0) return absl::InternalError("EvtVmbChannelSavePacket failed");
      std::vector<uint8_t> buffer(needed);
      UINT32 again = 0;
      st = f(ToHandle(self), ToHandle(&packet), buffer.data(), needed, &again);
      if (!NT_SUCCESS(st)) return absl::InternalError("EvtVmbChannelSavePacket failed");
      return buffer;
    };
  }
  if (c.restore_packet) {
    cb.restore_packet = [f = c.restore_packet, self](Channel&, std::span<const uint8_t> lib,
                                                     std::span<const uint8_t> saved) -> absl::Status {
      NTSTATUS st = f(ToHandle(self), const_cast<uint8_t*>(lib.data()), static_cast<UINT32>(lib.size()),
                      const_cast<uint8_t*>(saved.data()), static_cast<UINT32>(saved.size()));
      return NT_SUCCESS(st) ? absl::OkStatus()
                            : absl::InvalidArgumentError("EvtVmbChannelRestorePacket failed");
    };
  }
  if (c.peer_error) {
    cb.peer_error = [f = c.peer_error, self](Channel&, absl::string_view what) {
      const std::string problem(what);  // NUL-terminated for C
      f(ToHandle(self), problem.c_str());
    };
  }
  return c.channel->SetCallbacks(std::move(cb));
}

// Init setters are legal only while disabled; KMCL reports a wrong state as
// STATUS_INVALID_PARAMETER_1, checked before the other parameters.
bool Configurable(const CompatChannel& c) {
  return c.channel->connection() == ConnectionState::kDisabled;
}

}  // namespace kmcl::compat

using kmcl::compat::CompatChannel;
using kmcl::compat::Device;
using kmcl::compat::FromHandle;
using kmcl::compat::ToKmcl;

extern "C" {

PDEVICE_OBJECT KmclGetVmbusDevice(UINT64 VmbusHandle, UINT8 Vtl) {
  kmcl::Partition* p = kmcl::Partition::FromVmbusHandle(VmbusHandle);
  if (p == nullptr || !p->options().client_vtls.contains(Vtl)) return nullptr;
  kmcl::MutexLock lock(&kmcl::compat::g_mu);
  for (auto& d : kmcl::compat::Devices()) {
    if (d->vmbus_handle == VmbusHandle && d->vtl == Vtl) return reinterpret_cast<PDEVICE_OBJECT>(d.get());
  }
  kmcl::compat::Devices().push_back(std::make_unique<Device>(Device{Device::kMagic, VmbusHandle, Vtl}));
  return reinterpret_cast<PDEVICE_OBJECT>(kmcl::compat::Devices().back().get());
}

NTSTATUS KmclChannelInitSetPeerErrorCallback(VMBCHANNEL Channel, PFN_KMCL_CHANNEL_PEER_ERROR Callback) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr || !kmcl::compat::Configurable(*c)) return STATUS_INVALID_PARAMETER_1;
  PFN_KMCL_CHANNEL_PEER_ERROR saved = c->peer_error;
  c->peer_error = Callback;
  absl::Status s = kmcl::compat::InstallCallbacks(*c);
  if (!s.ok()) c->peer_error = saved;
  return ToKmcl(s, STATUS_INVALID_PARAMETER_1, STATUS_INVALID_PARAMETER_2);
}

NTSTATUS VmbChannelAllocate(PDEVICE_OBJECT ParentDeviceObject, BOOLEAN IsServer, VMBCHANNEL* Channel) {
  if (Channel == nullptr) return STATUS_INVALID_PARAMETER_3;
  *Channel = nullptr;
  const Device* device = kmcl::compat::FindDevice(ParentDeviceObject);
  if (device == nullptr) return STATUS_INVALID_PARAMETER_1;
  kmcl::Partition* partition = kmcl::Partition::FromVmbusHandle(device->vmbus_handle);
  if (partition == nullptr) return STATUS_DEVICE_REMOVED;
  auto channel = kmcl::Channel::Allocate(*partition, kmcl::RoleFromIsServer(IsServer != 0));
  if (!channel.ok()) return STATUS_INSUFFICIENT_RESOURCES;
  auto* c = new CompatChannel();
  c->channel = *std::move(channel);
  c->channel->kmcl_context = c;
  c->vtl = device->vtl;
  kmcl::compat::RegisterChannel(c);
  *Channel = kmcl::compat::ToHandle(c);
  return STATUS_SUCCESS;
}

VOID VmbChannelCleanup(VMBCHANNEL Channel) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr) return;
  // KMCL requires a disabled channel; a driver that forgot still gets its
  // last callbacks (Suspend, Closed) with a valid handle, then none.
  c->channel->Disable().IgnoreError();
  kmcl::compat::UnregisterChannel(c);
  {
    kmcl::MutexLock lock(&c->mu);
    for (auto& [gpadl, m] : c->mappings) c->channel->partition().UnmapGpadl(m.lease_id).IgnoreError();
    c->mappings.clear();
  }
  c->channel.reset();
  c->magic = 0;
  delete c;
}

NTSTATUS VmbChannelEnable(VMBCHANNEL Channel) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr) return STATUS_INVALID_PARAMETER_1;
  return ToKmcl(c->channel->Enable(), STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_PARAMETER);
}

VOID VmbChannelDisable(VMBCHANNEL Channel) {
  if (CompatChannel* c = FromHandle(Channel)) c->channel->Disable().IgnoreError();
}

VOID VmbChannelStart(VMBCHANNEL Channel) {
  if (CompatChannel* c = FromHandle(Channel)) c->channel->Start().IgnoreError();
}

VOID VmbChannelPause(VMBCHANNEL Channel) {
  if (CompatChannel* c = FromHandle(Channel)) c->channel->Pause().IgnoreError();
}

NTSTATUS VmbChannelInitSetClientContextSize(VMBCHANNEL Channel, UINT32 ContextSize) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr || !kmcl::compat::Configurable(*c)) return STATUS_INVALID_PARAMETER_1;
  return ToKmcl(c->channel->SetClientContextSize(ContextSize), STATUS_INVALID_PARAMETER_1,
                STATUS_INVALID_PARAMETER_2);
}

NTSTATUS VmbChannelInitSetFlags(VMBCHANNEL Channel, UINT32 Flags) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr || !kmcl::compat::Configurable(*c)) return STATUS_INVALID_PARAMETER_1;
  return ToKmcl(c->channel->SetFlags(Flags), STATUS_INVALID_PARAMETER_1, STATUS_INVALID_PARAMETER_2);
}

NTSTATUS VmbChannelInitSetFriendlyName(VMBCHANNEL Channel, PCUNICODE_STRING Name) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr || !kmcl::compat::Configurable(*c)) return STATUS_INVALID_PARAMETER_1;
  if (Name == nullptr || (Name->Length != 0 && Name->Buffer == nullptr) || Name->Length % 2 != 0) {
    return STATUS_INVALID_PARAMETER_2;
  }
  std::string name;
  for (USHORT i = 0; i < Name->Length / 2; ++i) {
    WCHAR ch = Name->Buffer[i];
    name.push_back(ch < 0x80 ? static_cast<char>(ch) : '?');
  }
  return ToKmcl(c->channel->SetFriendlyName(name), STATUS_INVALID_PARAMETER_1,
                STATUS_INVALID_PARAMETER_2);
}

NTSTATUS VmbChannelInitSetMaximumExternalData(VMBCHANNEL Channel, UINT32 DataSize, UINT32 ChainLength) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr || !kmcl::compat::Configurable(*c)) return STATUS_INVALID_PARAMETER_1;
  if (DataSize == 0) return STATUS_INVALID_PARAMETER_2;
  if (ChainLength == 0) return STATUS_INVALID_PARAMETER_3;
  return ToKmcl(c->channel->SetMaximumExternalData(DataSize, ChainLength),
                STATUS_INVALID_PARAMETER_1, STATUS_INVALID_PARAMETER_2);
}

NTSTATUS VmbChannelInitSetMaximumPacketSize(VMBCHANNEL Channel, UINT32 PacketSize) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr || !kmcl::compat::Configurable(*c)) return STATUS_INVALID_PARAMETER_1;
  if (PacketSize == 0) return STATUS_INVALID_PARAMETER_2;
  return ToKmcl(c->channel->SetMaximumPacketSize(PacketSize), STATUS_INVALID_PARAMETER_1,
                STATUS_INVALID_PARAMETER_2);
}

NTSTATUS VmbChannelInitSetProcessPacketCallbacks(VMBCHANNEL Channel,
                                                 PFN_VMB_CHANNEL_PROCESS_PACKET ProcessPacketCallback,
                                                 PFN_VMB_CHANNEL_PROCESSING_COMPLETE ProcessingCompleteCallback) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr || !kmcl::compat::Configurable(*c)) return STATUS_INVALID_PARAMETER_1;
  if (ProcessPacketCallback == nullptr) return STATUS_INVALID_PARAMETER_2;
  auto saved = std::make_pair(c->process_packet, c->processing_complete);
  c->process_packet = ProcessPacketCallback;
  c->processing_complete = ProcessingCompleteCallback;
  absl::Status s = kmcl::compat::InstallCallbacks(*c);
  if (!s.ok()) std::tie(c->process_packet, c->processing_complete) = saved;
  return ToKmcl(s, STATUS_INVALID_PARAMETER_1, STATUS_INVALID_PARAMETER_2);
}

NTSTATUS VmbChannelInitSetStateChangeCallbacks(VMBCHANNEL Channel,
                                               PVMB_CHANNEL_STATE_CHANGE_CALLBACKS StateChangeCallbacks) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr || !kmcl::compat::Configurable(*c)) return STATUS_INVALID_PARAMETER_1;
  if (StateChangeCallbacks == nullptr || StateChangeCallbacks->Version != 1 ||
      StateChangeCallbacks->Size != sizeof(VMB_CHANNEL_STATE_CHANGE_CALLBACKS)) {
    return STATUS_INVALID_PARAMETER_2;
  }
  VMB_CHANNEL_STATE_CHANGE_CALLBACKS saved = c->state;
  c->state = *StateChangeCallbacks;
  absl::Status s = kmcl::compat::InstallCallbacks(*c);
  if (!s.ok()) c->state = saved;
  return ToKmcl(s, STATUS_INVALID_PARAMETER_1, STATUS_INVALID_PARAMETER_2);
}

NTSTATUS VmbClientChannelInitSetRingBufferPageCount(VMBCHANNEL Channel, UINT32 IncomingPageCount,
                                                    UINT32 OutgoingPageCount) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr || kmcl::IsHost(c->channel->role()) || !kmcl::compat::Configurable(*c)) {
    return STATUS_INVALID_PARAMETER_1;
  }
  if (IncomingPageCount == 0 || IncomingPageCount > kmcl::kMaxRingPages) return STATUS_INVALID_PARAMETER_2;
  if (OutgoingPageCount == 0 || OutgoingPageCount > kmcl::kMaxRingPages) return STATUS_INVALID_PARAMETER_3;
  return ToKmcl(c->channel->SetRingBufferPageCount(IncomingPageCount, OutgoingPageCount),
                STATUS_INVALID_PARAMETER_1, STATUS_INVALID_PARAMETER_2);
}

NTSTATUS VmbClientChannelInitSetTargetPnp(VMBCHANNEL Channel, LPCGUID InterfaceType,
                                          LPCGUID InterfaceInstance,
                                          PFN_VMB_CHANNEL_PNP_FAILURE PnpFailureCallback) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr || kmcl::IsHost(c->channel->role()) || !kmcl::compat::Configurable(*c)) {
    return STATUS_INVALID_PARAMETER_1;
  }
  if (InterfaceType == nullptr) return STATUS_INVALID_PARAMETER_2;
  std::optional<kmcl::Guid> instance;
  if (InterfaceInstance != nullptr) instance = kmcl::compat::ToGuid(*InterfaceInstance);
  absl::Status s = c->channel->SetTargetPnp(kmcl::compat::ToGuid(*InterfaceType), instance, c->vtl);
  if (!s.ok()) return ToKmcl(s, STATUS_INVALID_PARAMETER_1, STATUS_INVALID_PARAMETER_2);
  c->pnp_failure = PnpFailureCallback;
  return ToKmcl(kmcl::compat::InstallCallbacks(*c), STATUS_INVALID_PARAMETER_1,
                STATUS_INVALID_PARAMETER_2);
}

VOID VmbChannelGetInterfaceInstance(VMBCHANNEL Channel, LPGUID InterfaceInstance) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr || InterfaceInstance == nullptr) return;
  kmcl::Guid g = c->channel->interface_instance();
  InterfaceInstance->Data1 = g.data1;
  InterfaceInstance->Data2 = g.data2;
  InterfaceInstance->Data3 = g.data3;
  std::memcpy(InterfaceInstance->Data4, g.data4, sizeof(g.data4));
}

VOID VmbChannelGetMmioSpace(VMBCHANNEL Channel, UINT64* MmioAddress, UINT64* MmioSize) {
  CompatChannel* c = FromHandle(Channel);
  if (MmioAddress != nullptr) *MmioAddress = 0;
  if (MmioSize != nullptr) *MmioSize = 0;
  if (c == nullptr) return;
  auto mmio = c->channel->MmioSpace();
  if (!mmio.ok()) return;
  if (MmioAddress != nullptr) *MmioAddress = mmio->first;
  if (MmioSize != nullptr) *MmioSize = mmio->second;
}

PVOID VmbChannelGetPointer(VMBCHANNEL Channel) {
  CompatChannel* c = FromHandle(Channel);
  return c == nullptr ? nullptr : c->channel->pointer();
}

VOID VmbChannelSetPointer(VMBCHANNEL Channel, PVOID Pointer) {
  if (CompatChannel* c = FromHandle(Channel)) c->channel->set_pointer(Pointer);
}

NTSTATUS VmbChannelSetInterruptLatency(VMBCHANNEL Channel, UINT16 Latency, PUINT16 OriginalLatency) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr) return STATUS_INVALID_PARAMETER_1;
  auto old = c->channel->SetInterruptLatency(Latency);
  if (!old.ok()) return STATUS_INVALID_DEVICE_STATE;
  if (OriginalLatency != nullptr) *OriginalLatency = *old;
  return STATUS_SUCCESS;
}

VOID VmbChannelSetTransactionQuota(VMBCHANNEL Channel, UINT32 Quota) {
  CompatChannel* c = FromHandle(Channel);
  if (c != nullptr && Quota > 0) c->channel->SetTransactionQuota(Quota);  // KMCL: must be > 0
}

VOID VmbChannelSetIncomingProcessingAtPassive(VMBCHANNEL Channel, BOOLEAN RequirePassive) {
  if (CompatChannel* c = FromHandle(Channel)) c->channel->SetIncomingProcessingAtPassive(RequirePassive != 0);
}

// ---- Server-only setters ------------------------------------------------------------------

NTSTATUS VmbServerChannelInitSetFlags(VMBCHANNEL Channel, UINT32 Flags) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr || !kmcl::IsHost(c->channel->role()) || !kmcl::compat::Configurable(*c)) {
    return STATUS_INVALID_PARAMETER_1;
  }
  return ToKmcl(c->channel->SetServerFlags(Flags), STATUS_INVALID_PARAMETER_1, STATUS_INVALID_PARAMETER_2);
}

NTSTATUS VmbServerChannelInitSetMmioMegabytes(VMBCHANNEL Channel, UINT16 MmioMegabytes,
                                              UINT16 MmioMegabytesOptional) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr || !kmcl::IsHost(c->channel->role()) || !kmcl::compat::Configurable(*c)) {
    return STATUS_INVALID_PARAMETER_1;
  }
  if (MmioMegabytes == 0 && MmioMegabytesOptional == 0) return STATUS_INVALID_PARAMETER;
  return ToKmcl(c->channel->SetMmioMegabytes(MmioMegabytes, MmioMegabytesOptional),
                STATUS_INVALID_PARAMETER_1, STATUS_INVALID_PARAMETER);
}

NTSTATUS VmbServerChannelInitSetSaveRestorePacketCallbacks(VMBCHANNEL Channel,
                                                           PFN_VMB_CHANNEL_SAVE_PACKET SavePacketCallback,
                                                           PFN_VMB_CHANNEL_RESTORE_PACKET RestorePacketCallback) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr || !kmcl::IsHost(c->channel->role()) ||
      c->channel->connection() != kmcl::ConnectionState::kDisabled) {
    return STATUS_INVALID_PARAMETER_1;
  }
  c->save_packet = SavePacketCallback;
  c->restore_packet = RestorePacketCallback;
  return ToKmcl(kmcl::compat::InstallCallbacks(*c), STATUS_INVALID_PARAMETER_1,
                STATUS_INVALID_PARAMETER_2);
}

NTSTATUS VmbServerChannelInitSetTargetInterfaceId(VMBCHANNEL Channel, GUID InterfaceType,
                                                  GUID InterfaceInstance) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr || !kmcl::IsHost(c->channel->role()) || !kmcl::compat::Configurable(*c)) {
    return STATUS_INVALID_PARAMETER_1;
  }
  return ToKmcl(c->channel->SetTargetInterfaceId(kmcl::compat::ToGuid(InterfaceType),
                                                 kmcl::compat::ToGuid(InterfaceInstance)),
                STATUS_INVALID_PARAMETER_1, STATUS_INVALID_PARAMETER_2);
}

NTSTATUS VmbServerChannelInitSetTargetVtl(VMBCHANNEL Channel, UINT8 TargetVtl) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr || !kmcl::IsHost(c->channel->role()) || !kmcl::compat::Configurable(*c)) {
    return STATUS_INVALID_PARAMETER_1;
  }
  if (TargetVtl > 2) return STATUS_INVALID_PARAMETER_2;
  return ToKmcl(c->channel->SetTargetVtl(TargetVtl), STATUS_INVALID_PARAMETER_1,
                STATUS_INVALID_PARAMETER_2);
}

NTSTATUS VmbConvertVmbusHandleToKernelHandle(HANDLE VmbusHandle, PHANDLE KernelHandle) {
  if (KernelHandle == nullptr) return STATUS_INVALID_PARAMETER_2;
  const uint64_t user = reinterpret_cast<uint64_t>(VmbusHandle);
  if (kmcl::Partition::FromVmbusHandle(user) == nullptr) return STATUS_INVALID_HANDLE;
  *KernelHandle = reinterpret_cast<HANDLE>(user | kmcl::compat::kKernelHandleBit);
  return STATUS_SUCCESS;
}

NTSTATUS VmbServerChannelInitSetVmbusHandle(VMBCHANNEL Channel, HANDLE VmbusHandle) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr || !kmcl::IsHost(c->channel->role()) || !kmcl::compat::Configurable(*c)) {
    return STATUS_INVALID_PARAMETER_1;
  }
  const uint64_t kernel = reinterpret_cast<uint64_t>(VmbusHandle);
  if ((kernel & kmcl::compat::kKernelHandleBit) == 0) return STATUS_INVALID_PARAMETER_2;  // not converted
  kmcl::Partition* p = kmcl::Partition::FromVmbusHandle(kernel & ~kmcl::compat::kKernelHandleBit);
  if (p == nullptr) return STATUS_INVALID_PARAMETER_2;
  return ToKmcl(c->channel->BindPartition(*p), STATUS_INVALID_PARAMETER_1, STATUS_INVALID_PARAMETER_2);
}

// ---- Save and restore (VmbChannelSave*, VmbChannelRestoreFromBuffer, docs/saved-state.md) ----
// The stream SaveContinue hands out, and RestoreFromBuffer takes back in
// chunks of any size, is an 8-byte little-endian length followed by the
// channel's saved-state blob.

static NTSTATUS SaveStatus(const absl::Status& s) {
  if (s.code() == absl::StatusCode::kFailedPrecondition &&
      s.message().find("format version") != absl::string_view::npos) {
    return STATUS_REVISION_MISMATCH;  // a blob from a newer kmcl_core
  }
  return ToKmcl(s, STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_PARAMETER);
}

NTSTATUS VmbChannelSaveBegin(VMBCHANNEL Channel) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr || !kmcl::IsHost(c->channel->role())) return STATUS_INVALID_PARAMETER_1;
  absl::StatusOr<std::string> blob = c->channel->Save();
  if (!blob.ok()) return SaveStatus(blob.status());
  kmcl::MutexLock lock(&c->mu);
  const uint64_t length = blob->size();
  c->save_stream.assign(reinterpret_cast<const char*>(&length), sizeof(length));
  c->save_stream += *blob;
  c->save_cursor = 0;
  c->saving = true;
  return STATUS_SUCCESS;
}

NTSTATUS VmbChannelSaveContinue(VMBCHANNEL Channel, PVOID SaveBuffer, ULONG SaveBufferSize,
                                PULONG BytesFilled, PULONG BytesRequired) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr) return STATUS_INVALID_PARAMETER_1;
  if (BytesFilled == nullptr || BytesRequired == nullptr) return STATUS_INVALID_PARAMETER;
  *BytesFilled = 0;
  *BytesRequired = 0;
  kmcl::MutexLock lock(&c->mu);
  if (!c->saving) return STATUS_INVALID_DEVICE_STATE;  // no VmbChannelSaveBegin
  const size_t remaining = c->save_stream.size() - c->save_cursor;
  if (SaveBuffer == nullptr || SaveBufferSize == 0) {
    *BytesRequired = static_cast<ULONG>(std::min<size_t>(remaining, UINT32_MAX));
    return STATUS_BUFFER_TOO_SMALL;  // nothing written
  }
  const size_t n = std::min<size_t>(remaining, SaveBufferSize);
  std::memcpy(SaveBuffer, c->save_stream.data() + c->save_cursor, n);
  c->save_cursor += n;
  *BytesFilled = static_cast<ULONG>(n);
  if (c->save_cursor < c->save_stream.size()) {
    *BytesRequired = static_cast<ULONG>(std::min<size_t>(c->save_stream.size() - c->save_cursor, UINT32_MAX));
    return STATUS_BUFFER_OVERFLOW;  // partial: call again
  }
  return STATUS_SUCCESS;
}

VOID VmbChannelSaveEnd(VMBCHANNEL Channel) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr) return;
  kmcl::MutexLock lock(&c->mu);
  c->saving = false;
  std::string().swap(c->save_stream);
  c->save_cursor = 0;
}

NTSTATUS VmbChannelRestoreFromBuffer(VMBCHANNEL Channel, PVOID Buffer, ULONG BufferSize) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr || !kmcl::IsHost(c->channel->role()) || !kmcl::compat::Configurable(*c)) {
    return STATUS_INVALID_PARAMETER_1;
  }
  if (Buffer == nullptr && BufferSize != 0) return STATUS_INVALID_PARAMETER_2;
  std::string blob;
  {
    kmcl::MutexLock lock(&c->mu);
    c->restore_stream.append(static_cast<const char*>(Buffer), BufferSize);
    if (c->restore_stream.size() < sizeof(uint64_t)) return STATUS_MORE_PROCESSING_REQUIRED;
    uint64_t length;
    std::memcpy(&length, c->restore_stream.data(), sizeof(length));
    if (length > (uint64_t{1} << 32)) {
      c->restore_stream.clear();
      return STATUS_INVALID_PARAMETER;  // not a saved-state stream
    }
    if (c->restore_stream.size() < sizeof(length) + length) return STATUS_MORE_PROCESSING_REQUIRED;
    if (c->restore_stream.size() > sizeof(length) + length) {
      c->restore_stream.clear();
      return STATUS_INVALID_PARAMETER;  // more bytes than the stream holds
    }
    blob = c->restore_stream.substr(sizeof(length));
    c->restore_stream.clear();
  }
  return SaveStatus(c->channel->Restore(blob));
}

NTSTATUS VmbPacketRestore(VMBPACKET PacketObject, PVOID Buffer, ULONG BufferSize) {
  kmcl::Packet* p = FromHandle(PacketObject);
  if (p == nullptr) return STATUS_INVALID_PARAMETER_1;
  if (Buffer == nullptr) return STATUS_INVALID_PARAMETER_2;
  return ToKmcl(p->channel().RestorePacket(*p, {static_cast<const uint8_t*>(Buffer), BufferSize}),
                STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_PARAMETER);
}

}  // extern "C"
