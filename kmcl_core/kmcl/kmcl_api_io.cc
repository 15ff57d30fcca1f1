// The KMCL compatibility surface, part 2: packets, deliveries, GPADLs, MDLs,
// guest memory helpers, and the function tables with KmclQueryInterface.
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kmcl_core/bus/partition.h"
#include "kmcl_core/kmcl/kmcl_compat.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl::compat {
namespace {

constexpr uint64_t kPage = wire::kPageSize;

// Pages spanned by an MDL's bytes.
uint64_t MdlPages(const MDL* m) { return wire::PagesSpanned(m->ByteOffset, m->ByteCount); }

// Converts a relative (negative, 100 ns units) or absolute (positive,
// 100 ns units since 1601) KMCL timeout to a duration; nullopt = forever.
std::optional<absl::Duration> ToDuration(const LARGE_INTEGER* timeout) {
  if (timeout == nullptr) return std::nullopt;
  int64_t t = timeout->QuadPart;
  if (t <= 0) return absl::Nanoseconds(-t * 100);
  // Absolute: Windows epoch 1601-01-01 is 11644473600 s before the Unix epoch.
  absl::Time when = absl::FromUnixNanos((t - 116444736000000000LL) * 100);
  absl::Duration left = when - absl::Now();
  return left < absl::ZeroDuration() ? absl::ZeroDuration() : left;
}

Channel* ChannelOf(VMBCHANNEL handle) {
  CompatChannel* c = FromHandle(handle);
  return c == nullptr ? nullptr : c->channel.get();
}

}  // namespace

std::vector<uint8_t> BuildMdlChain(const std::vector<GpaRange>& ranges, uint8_t* pages,
                                   const std::vector<uint64_t>& view_offsets) {
  size_t bytes = 0;
  for (const GpaRange& r : ranges) bytes += sizeof(MDL) + r.pfns.size() * sizeof(PFN_NUMBER);
  std::vector<uint8_t> memory(bytes);
  uint8_t* at = memory.data();
  MDL* previous = nullptr;
  for (size_t i = 0; i < ranges.size(); ++i) {
    const GpaRange& r = ranges[i];
    auto* m = reinterpret_cast<MDL*>(at);
    m->Size = static_cast<CSHORT>(sizeof(MDL) + r.pfns.size() * sizeof(PFN_NUMBER));
    m->ByteCount = r.byte_count;
    m->ByteOffset = r.byte_offset;
    m->MappedSystemVa = pages != nullptr ? pages + view_offsets[i] : nullptr;
    std::memcpy(MmGetMdlPfnArray(m), r.pfns.data(), r.pfns.size() * sizeof(PFN_NUMBER));
    if (previous != nullptr) previous->Next = m;
    previous = m;
    at += m->Size;
  }
  return memory;
}

absl::StatusOr<std::vector<GpaRange>> RangesFromMdl(const MDL* mdl, uint64_t offset,
                                                    uint64_t length, bool first_only,
                                                    bool force_length) {
  if (mdl == nullptr) return absl::InvalidArgumentError("no MDL");
  std::vector<GpaRange> out;
  uint64_t skipped = 0;
  uint64_t remaining = length;
  bool to_end = length == 0;
  int chain = 0;
  for (const MDL* m = mdl; m != nullptr; m = first_only ? nullptr : m->Next) {
    if (++chain > 4096) return absl::InvalidArgumentError("MDL chain too long (a cycle?)");
    if (m->ByteOffset >= kPage) return absl::InvalidArgumentError("MDL byte offset not below 4096");
    uint64_t count = m->ByteCount;
    if (force_length && !to_end && length > count) {
      // FORCE_MDL_LENGTH: up to the next page boundary past ByteCount.
      uint64_t limit = MdlPages(m) * kPage - m->ByteOffset;
      if (length > limit) return absl::InvalidArgumentError("forced MDL length past its last page");
      count = length;
    }
    if (offset >= skipped + count) {
      skipped += count;
      continue;
    }
    uint64_t start = offset > skipped ? offset - skipped : 0;  // within this MDL
    uint64_t take = count - start;
    if (!to_end) take = std::min(take, remaining);
    if (take == 0) break;
    uint64_t abs = m->ByteOffset + start;
    GpaRange r;
    r.byte_offset = static_cast<uint32_t>(abs % kPage);
    r.byte_count = static_cast<uint32_t>(take);
    const PFN_NUMBER* pfns = MmGetMdlPfnArray(m);
    uint64_t first_page = abs / kPage;
    for (uint64_t p = 0; p < wire::PagesSpanned(r.byte_offset, r.byte_count); ++p) {
      r.pfns.push_back(pfns[first_page + p]);
    }
    out.push_back(std::move(r));
    skipped += count;
    if (!to_end) {
      remaining -= take;
      if (remaining == 0) break;
    }
  }
  if (out.empty() || (!to_end && remaining != 0)) {
    return absl::InvalidArgumentError("the MDL window is outside the MDL");
  }
  return out;
}

}  // namespace kmcl::compat

using kmcl::Channel;
using kmcl::Delivery;
using kmcl::GpaRange;
using kmcl::Packet;
using kmcl::compat::CompatChannel;
using kmcl::compat::FromHandle;
using kmcl::compat::ToHandle;
using kmcl::compat::ToKmcl;

extern "C" {

// ---- Packets ----------------------------------------------------------------------------------

UINT32 VmbChannelSizeofPacket(VMBCHANNEL Channel) {
  kmcl::Channel* ch = kmcl::compat::ChannelOf(Channel);
  return ch == nullptr ? 0 : ch->SizeofPacket();
}

VMBPACKET VmbPacketAllocate(VMBCHANNEL Channel) {
  kmcl::Channel* ch = kmcl::compat::ChannelOf(Channel);
  return ch == nullptr ? nullptr : ToHandle(ch->AllocatePacket());
}

NTSTATUS VmbPacketInitialize(VMBCHANNEL Channel, VMBPACKET VmbPacket, UINT32 ByteCount) {
  kmcl::Channel* ch = kmcl::compat::ChannelOf(Channel);
  if (ch == nullptr) return STATUS_INVALID_PARAMETER_1;
  if (VmbPacket == nullptr) return STATUS_INVALID_PARAMETER_2;
  auto p = ch->InitializePacket(VmbPacket, ByteCount);
  return p.ok() ? STATUS_SUCCESS : STATUS_INVALID_PARAMETER_3;
}

VOID VmbPacketFree(VMBPACKET VmbPacket) {
  if (Packet* p = FromHandle(VmbPacket)) p->channel().FreePacket(p).IgnoreError();
}

VMBCHANNEL VmbPacketGetChannel(VMBPACKET PacketObject) {
  Packet* p = FromHandle(PacketObject);
  return p == nullptr ? nullptr : ToHandle(kmcl::compat::Owner(p->channel()));
}

VOID VmbPacketSetPointer(VMBPACKET PacketObject, PVOID Pointer) {
  if (Packet* p = FromHandle(PacketObject)) p->set_pointer(Pointer);
}

PVOID VmbPacketGetPointer(VMBPACKET PacketObject) {
  Packet* p = FromHandle(PacketObject);
  return p == nullptr ? nullptr : p->pointer();
}

VOID VmbPacketSetCompletionRoutine(VMBPACKET PacketObject, PFN_VMB_PACKET_COMPLETION_ROUTINE CompletionRoutine) {
  Packet* p = FromHandle(PacketObject);
  if (p == nullptr) return;
  if (CompletionRoutine == nullptr) {
    p->set_completion_routine(nullptr);
    return;
  }
  p->set_completion_routine([CompletionRoutine](Packet& packet, NTSTATUS status,
                                                std::span<const uint8_t> completion) {
    CompletionRoutine(ToHandle(&packet), status, const_cast<uint8_t*>(completion.data()),
                      static_cast<UINT32>(completion.size()));
  });
}

static NTSTATUS SendPacket(VMBPACKET PacketObject, PVOID Buffer, UINT32 BufferLength,
                           const std::vector<GpaRange>& external, UINT32 Flags) {
  Packet* p = FromHandle(PacketObject);
  if (p == nullptr) return STATUS_INVALID_PARAMETER_1;
  if (Buffer == nullptr && BufferLength != 0) return STATUS_INVALID_PARAMETER_2;
  std::span<const uint8_t> buffer(static_cast<const uint8_t*>(Buffer), BufferLength);
  absl::Status s = p->channel().Send(*p, buffer, external, Flags);
  return ToKmcl(s, STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_PARAMETER);
}

NTSTATUS VmbPacketSend(VMBPACKET PacketObject, PVOID Buffer, UINT32 BufferLength,
                       PMDL ExternalDataMdl, UINT32 Flags) {
  std::vector<GpaRange> external;
  if (ExternalDataMdl != nullptr) {
    auto ranges = kmcl::compat::RangesFromMdl(ExternalDataMdl, 0, 0, false, false);
    if (!ranges.ok()) return STATUS_INVALID_PARAMETER_4;
    external = *std::move(ranges);
  }
  return SendPacket(PacketObject, Buffer, BufferLength, external, Flags);
}

NTSTATUS VmbPacketSendWithExternalMdl(VMBPACKET PacketObject, PVOID Buffer, UINT32 BufferLength,
                                      PMDL ExternalDataMdl, UINT32 MdlOffset, UINT32 MdlLength,
                                      UINT32 Flags) {
  if ((Flags & VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION) == 0) return STATUS_INVALID_PARAMETER;
  if (ExternalDataMdl == nullptr) return STATUS_INVALID_PARAMETER_4;
  const bool force = (Flags & VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH) != 0;
  auto ranges = kmcl::compat::RangesFromMdl(ExternalDataMdl, MdlOffset, MdlLength, force, force);
  if (!ranges.ok()) return STATUS_INVALID_PARAMETER;
  return SendPacket(PacketObject, Buffer, BufferLength, *ranges, Flags);
}

NTSTATUS VmbPacketSendWithExternalPfns(VMBPACKET PacketObject, PVOID Buffer, UINT32 BufferLength,
                                       PPFN_NUMBER ExternalDataPfns, UINT32 PfnLength, UINT32 Flags) {
  if ((Flags & VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION) == 0) return STATUS_INVALID_PARAMETER;
  if (ExternalDataPfns == nullptr || PfnLength == 0 || PfnLength > (1u << 20) / 8) {
    return STATUS_INVALID_PARAMETER_4;
  }
  // Whole pages (VmbPacketSendWithExternalPfns takes page frame numbers:
  // byte offsets within pages are not expressed).
  std::vector<GpaRange> external = {
      {PfnLength * kmcl::wire::kPageSize, 0,
       std::vector<uint64_t>(ExternalDataPfns, ExternalDataPfns + PfnLength)}};
  return SendPacket(PacketObject, Buffer, BufferLength, external, Flags);
}

NTSTATUS VmbChannelSendSynchronousRequest(VMBCHANNEL Channel, PVOID Buffer, UINT32 BufferSize,
                                          PMDL ExternalDataMdl, UINT32 Flags, PVOID CompletionBuffer,
                                          PUINT32 CompletionBufferSize, PLARGE_INTEGER Timeout) {
  kmcl::Channel* ch = kmcl::compat::ChannelOf(Channel);
  if (ch == nullptr) return STATUS_INVALID_PARAMETER_1;
  if (Buffer == nullptr && BufferSize != 0) return STATUS_INVALID_PARAMETER_2;
  UINT32 capacity = 0;
  if (CompletionBufferSize != nullptr) {
    capacity = *CompletionBufferSize;
    if (capacity % 8 != 0) return STATUS_INVALID_PARAMETER;  // must be rounded to 8
    if (capacity != 0 && CompletionBuffer == nullptr) return STATUS_INVALID_PARAMETER;
  }
  std::vector<GpaRange> external;
  if (ExternalDataMdl != nullptr) {
    auto ranges = kmcl::compat::RangesFromMdl(ExternalDataMdl, 0, 0, false, false);
    if (!ranges.ok()) return STATUS_INVALID_PARAMETER_4;
    external = *std::move(ranges);
  }
  std::vector<uint8_t> completion;
  NTSTATUS status = ch->SendSynchronous({static_cast<const uint8_t*>(Buffer), BufferSize},
                                        external, Flags, &completion,
                                        kmcl::compat::ToDuration(Timeout));
  if (CompletionBufferSize != nullptr) {
    UINT32 n = static_cast<UINT32>(std::min<size_t>(completion.size(), capacity));
    if (n != 0) std::memcpy(CompletionBuffer, completion.data(), n);
    *CompletionBufferSize = n;
  }
  return status;
}

// ---- Deliveries -----------------------------------------------------------------------------

static void ForgetExternalMdl(Delivery& d) {
  CompatChannel* c = kmcl::compat::Owner(d.channel());
  kmcl::MutexLock lock(&c->mu);
  c->external_mdls.erase(&d);
}

VOID VmbChannelPacketComplete(VMBPACKETCOMPLETION PacketCompletionContext, PVOID PacketCompletionBuffer,
                              UINT32 BufSize) {
  Delivery* d = FromHandle(PacketCompletionContext);
  if (d == nullptr) return;
  ForgetExternalMdl(*d);
  if (PacketCompletionBuffer == nullptr) BufSize = 0;
  d->channel().Complete(*d, {static_cast<const uint8_t*>(PacketCompletionBuffer), BufSize});
}

VOID VmbChannelPacketFail(VMBPACKETCOMPLETION PacketCompletionContext) {
  Delivery* d = FromHandle(PacketCompletionContext);
  if (d == nullptr) return;
  ForgetExternalMdl(*d);
  d->channel().Fail(*d);
}

VOID VmbChannelPacketDeferToPassive(VMBPACKETCOMPLETION PacketCompletionContext) {
  if (Delivery* d = FromHandle(PacketCompletionContext)) d->channel().DeferToPassive(*d).IgnoreError();
}

NTSTATUS VmbChannelPacketGetExternalData(VMBPACKETCOMPLETION PacketCompletionContext, UINT32 Flags,
                                         PMDL* Mdl) {
  Delivery* d = FromHandle(PacketCompletionContext);
  if (d == nullptr) return STATUS_INVALID_PARAMETER_1;
  if ((Flags & ~VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAGS) != 0) return STATUS_INVALID_PARAMETER_2;
  if (Mdl == nullptr) return STATUS_INVALID_PARAMETER_3;
  auto data = d->channel().GetExternalData(
      *d, (Flags & VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY) != 0);
  if (!data.ok()) return ToKmcl(data.status(), STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_PARAMETER);
  std::vector<uint64_t> offsets;
  uint64_t page_index = 0;
  for (const GpaRange& r : data->ranges) {
    offsets.push_back(page_index * kmcl::wire::kPageSize + r.byte_offset);
    page_index += r.pfns.size();
  }
  std::vector<uint8_t> chain = kmcl::compat::BuildMdlChain(data->ranges, data->pages.data(), offsets);
  CompatChannel* c = kmcl::compat::Owner(d->channel());
  kmcl::MutexLock lock(&c->mu);
  auto& stored = c->external_mdls[d];
  stored = std::move(chain);
  *Mdl = reinterpret_cast<PMDL>(stored.data());
  return STATUS_SUCCESS;
}

// ---- GPADLs ------------------------------------------------------------------------------------

static NTSTATUS CreateGpadl(CompatChannel* c, UINT32 Flags, std::vector<GpaRange> ranges,
                            PUINT32 GpadlHandle) {
  kmcl::Channel& ch = *c->channel;
  const uint32_t relid = ch.relid();
  if (kmcl::IsHost(ch.role()) || relid == 0 ||
      (ch.connection() != kmcl::ConnectionState::kOpened &&
       ch.connection() != kmcl::ConnectionState::kOpening)) {
    return STATUS_INVALID_DEVICE_STATE;  // from EvtChannelOpened until Closed returns
  }
  kmcl::Partition& partition = ch.partition();
  const uint32_t id = partition.gpadls().AllocateId();
  absl::Status s = partition.CreateGuestGpadl(ch.client_vtl(), relid, id, std::move(ranges));
  if (!s.ok()) return ToKmcl(s, STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_PARAMETER);
  if (Flags & VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY) partition.gpadls().MarkReadOnly(id).IgnoreError();
  {
    kmcl::MutexLock lock(&c->mu);
    c->created_gpadls.push_back(id);
  }
  *GpadlHandle = id;
  return STATUS_SUCCESS;
}

NTSTATUS VmbChannelCreateGpadlFromBuffer(VMBCHANNEL Channel, UINT32 Flags, PVOID Buffer,
                                         UINT32 ByteCount, PUINT32 GpadlHandle) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr) return STATUS_INVALID_PARAMETER_1;
  if ((Flags & ~VMBUS_CHANNEL_GPADL_FLAGS) != 0) return STATUS_INVALID_PARAMETER_2;
  if (GpadlHandle == nullptr || ByteCount == 0) return STATUS_INVALID_PARAMETER;
  kmcl::GuestMemory& memory = c->channel->partition().memory();
  std::optional<uint64_t> gpa = memory.GpaOf(Buffer);
  if (!gpa.has_value() || *gpa + ByteCount > memory.size_bytes()) {
    return STATUS_INVALID_PARAMETER_3;  // not guest memory (KmclAllocateGuestMemory)
  }
  GpaRange r;
  r.byte_offset = static_cast<uint32_t>(*gpa % kmcl::wire::kPageSize);
  r.byte_count = ByteCount;
  for (uint64_t p = 0; p < kmcl::wire::PagesSpanned(r.byte_offset, ByteCount); ++p) {
    r.pfns.push_back(*gpa / kmcl::wire::kPageSize + p);
  }
  return CreateGpadl(c, Flags, {r}, GpadlHandle);
}

NTSTATUS VmbChannelCreateGpadlFromMdl(VMBCHANNEL Channel, UINT32 Flags, PMDL Mdl,
                                      UINT32 StartOffsetWithinMdl, UINT32 DataLengthWithinMdl,
                                      PUINT32 GpadlHandle) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr) return STATUS_INVALID_PARAMETER_1;
  if ((Flags & ~VMBUS_CHANNEL_GPADL_FLAGS) != 0) return STATUS_INVALID_PARAMETER_2;
  if (Mdl == nullptr) return STATUS_INVALID_PARAMETER_3;
  if (GpadlHandle == nullptr) return STATUS_INVALID_PARAMETER;
  auto ranges = kmcl::compat::RangesFromMdl(Mdl, StartOffsetWithinMdl, DataLengthWithinMdl, false, false);
  if (!ranges.ok()) return STATUS_INVALID_PARAMETER;
  return CreateGpadl(c, Flags, *std::move(ranges), GpadlHandle);
}

VOID VmbChannelDeleteGpadl(VMBCHANNEL Channel, UINT32 GpadlHandle) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr) return;
  {
    kmcl::MutexLock lock(&c->mu);
    auto it = std::find(c->created_gpadls.begin(), c->created_gpadls.end(), GpadlHandle);
    if (it == c->created_gpadls.end()) return;
    c->created_gpadls.erase(it);
  }
  kmcl::Channel& ch = *c->channel;
  // Blocks until the host unmaps it (KMCL).
  ch.partition().TeardownGuestGpadl(ch.client_vtl(), ch.relid(), GpadlHandle, std::nullopt).IgnoreError();
}

NTSTATUS VmbChannelMapGpadl(VMBCHANNEL Channel, UINT32 Flags, UINT32 GpadlHandle, PMDL* Mdl) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr || !kmcl::IsHost(c->channel->role())) return STATUS_INVALID_PARAMETER_1;
  if ((Flags & ~VMBUS_CHANNEL_GPADL_FLAGS) != 0) return STATUS_INVALID_PARAMETER_2;
  if (Mdl == nullptr) return STATUS_INVALID_PARAMETER_4;
  const bool read_only = (Flags & VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY) != 0;
  auto lease = c->channel->partition().MapGpadl(c->channel->relid(), GpadlHandle, read_only);
  if (!lease.ok()) {
    if (lease.status().code() == absl::StatusCode::kNotFound) return STATUS_INVALID_PARAMETER_3;
    return ToKmcl(lease.status(), STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_PARAMETER);
  }
  auto info = c->channel->partition().gpadls().Get(GpadlHandle);
  std::vector<uint64_t> offsets;
  for (const auto& seg : lease->segments) offsets.push_back(seg.view_offset);
  std::vector<uint8_t> chain =
      kmcl::compat::BuildMdlChain(info->ranges, lease->pages.data(), offsets);
  kmcl::MutexLock lock(&c->mu);
  auto& m = c->mappings[GpadlHandle];
  m.lease_id = lease->lease_id;
  m.mdl = std::move(chain);
  *Mdl = reinterpret_cast<PMDL>(m.mdl.data());
  return STATUS_SUCCESS;
}

VOID VmbChannelUnmapGpadl(VMBCHANNEL Channel, UINT32 GpadlHandle) {
  CompatChannel* c = FromHandle(Channel);
  if (c == nullptr) return;
  uint64_t lease;
  {
    kmcl::MutexLock lock(&c->mu);
    auto it = c->mappings.find(GpadlHandle);
    if (it == c->mappings.end()) return;
    lease = it->second.lease_id;
    c->mappings.erase(it);
  }
  c->channel->partition().UnmapGpadl(lease).IgnoreError();
}

// ---- Guest memory helpers --------------------------------------------------------------------

static kmcl::Partition* PartitionOf(PDEVICE_OBJECT Device) {
  const kmcl::compat::Device* d = kmcl::compat::FindDevice(Device);
  return d == nullptr ? nullptr : kmcl::Partition::FromVmbusHandle(d->vmbus_handle);
}

PVOID KmclAllocateGuestMemory(PDEVICE_OBJECT Device, UINT32 ByteCount) {
  kmcl::Partition* p = PartitionOf(Device);
  if (p == nullptr || ByteCount == 0) return nullptr;
  uint64_t pages = (uint64_t{ByteCount} + kmcl::wire::kPageSize - 1) / kmcl::wire::kPageSize;
  auto pfns = p->memory().AllocatePages(pages);
  if (!pfns.ok()) return nullptr;
  for (size_t i = 1; i < pfns->size(); ++i) {
    if ((*pfns)[i] != (*pfns)[0] + i) {  // must be contiguous to be one buffer
      p->memory().FreePages(*pfns).IgnoreError();
      return nullptr;
    }
  }
  return p->memory().HostAddress((*pfns)[0] * kmcl::wire::kPageSize);
}

VOID KmclFreeGuestMemory(PDEVICE_OBJECT Device, PVOID Buffer, UINT32 ByteCount) {
  kmcl::Partition* p = PartitionOf(Device);
  if (p == nullptr) return;
  std::optional<uint64_t> gpa = p->memory().GpaOf(Buffer);
  if (!gpa.has_value()) return;
  std::vector<uint64_t> pfns;
  for (uint64_t i = 0; i < (uint64_t{ByteCount} + kmcl::wire::kPageSize - 1) / kmcl::wire::kPageSize; ++i) {
    pfns.push_back(*gpa / kmcl::wire::kPageSize + i);
  }
  p->memory().FreePages(pfns).IgnoreError();
}

PMDL KmclBuildGuestMdl(PDEVICE_OBJECT Device, PVOID Buffer, UINT32 ByteCount) {
  kmcl::Partition* p = PartitionOf(Device);
  if (p == nullptr || ByteCount == 0) return nullptr;
  std::optional<uint64_t> gpa = p->memory().GpaOf(Buffer);
  if (!gpa.has_value() || *gpa + ByteCount > p->memory().size_bytes()) return nullptr;
  GpaRange r;
  r.byte_offset = static_cast<uint32_t>(*gpa % kmcl::wire::kPageSize);
  r.byte_count = ByteCount;
  for (uint64_t i = 0; i < kmcl::wire::PagesSpanned(r.byte_offset, ByteCount); ++i) {
    r.pfns.push_back(*gpa / kmcl::wire::kPageSize + i);
  }
  std::vector<uint8_t> chain = kmcl::compat::BuildMdlChain({r}, nullptr, {0});
  auto* mdl = static_cast<uint8_t*>(operator new(chain.size()));
  std::memcpy(mdl, chain.data(), chain.size());
  auto* m = reinterpret_cast<PMDL>(mdl);
  m->MappedSystemVa = Buffer;
  m->StartVa = static_cast<uint8_t*>(Buffer) - r.byte_offset;
  return m;
}

VOID KmclFreeMdl(PMDL Mdl) { operator delete(Mdl); }

// ---- Function tables -----------------------------------------------------------------------------

const GUID KMCL_CLIENT_INTERFACE_TYPE = {0x8e9c7a61, 0x2f4d, 0x4d0b, {0x9a, 0x61, 0x4b, 0x4d, 0x43, 0x4c, 0x43, 0x31}};
const GUID KMCL_SERVER_INTERFACE_TYPE = {0x8e9c7a62, 0x2f4d, 0x4d0b, {0x9a, 0x61, 0x4b, 0x4d, 0x43, 0x4c, 0x53, 0x31}};

static VOID NoReference(PVOID) {}

NTSTATUS KmclQueryInterface(WDFDEVICE, LPCGUID InterfaceType, PINTERFACE Interface, USHORT Size,
                            USHORT Version, PVOID) {
  if (InterfaceType == nullptr || Interface == nullptr) return STATUS_INVALID_PARAMETER;
  const bool server = std::memcmp(InterfaceType, &KMCL_SERVER_INTERFACE_TYPE, sizeof(GUID)) == 0;
  const bool client = std::memcmp(InterfaceType, &KMCL_CLIENT_INTERFACE_TYPE, sizeof(GUID)) == 0;
  if (!server && !client) return STATUS_NOT_SUPPORTED;
  if (Version != KMCL_CLIENT_INTERFACE_VERSION_V1) return STATUS_NOT_SUPPORTED;
  const size_t needed = server ? sizeof(KMCL_SERVER_INTERFACE_V1) : sizeof(KMCL_CLIENT_INTERFACE_V1);
  if (Size < needed) return STATUS_BUFFER_TOO_SMALL;
  KMCL_SERVER_INTERFACE_V1 table = {};
  table.Size = static_cast<USHORT>(needed);
  table.Version = Version;
  table.Context = nullptr;
  table.InterfaceReference = NoReference;
  table.InterfaceDereference = NoReference;
#define KMCL_FILL(ret, name, upper, params) table.name = name;
  KMCL_FUNCTIONS(KMCL_FILL)
  if (server) {
    KMCL_SERVER_ONLY_FUNCTIONS(KMCL_FILL)
  }
#undef KMCL_FILL
  std::memcpy(Interface, &table, needed);
  return STATUS_SUCCESS;
}

}  // extern "C"
