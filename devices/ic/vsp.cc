#include "devices/ic/vsp.h"

#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "devices/ic/state_codec.h"

namespace kmcl::devices::ic {

namespace {

GUID ToGUID(const Guid& g) {
  GUID out;
  out.Data1 = g.data1;
  out.Data2 = g.data2;
  out.Data3 = g.data3;
  std::memcpy(out.Data4, g.data4, 8);
  return out;
}

Guid FromGUID(const GUID& g) {
  Guid out;
  out.data1 = g.Data1;
  out.data2 = g.Data2;
  out.data3 = g.Data3;
  std::memcpy(out.data4, g.Data4, 8);
  return out;
}

absl::Status Check(NTSTATUS status, const char* step) {
  if (NT_SUCCESS(status)) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(step, " failed with NTSTATUS 0x",
                                          absl::Hex(static_cast<uint32_t>(status), absl::kZeroPad8)));
}

}  // namespace

IcVsp::IcVsp(IcService service, VspOptions options)
    : service_(service), options_(std::move(options)), host_(MakeHostService(service, options_.host)) {
  if (options_.instance.IsNull()) options_.instance = Guid::Random();
}

IcVsp* IcVsp::From(VMBCHANNEL channel) { return static_cast<IcVsp*>(VmbChannelGetPointer(channel)); }

absl::StatusOr<std::unique_ptr<IcVsp>> IcVsp::Create(IcService service, uint64_t vmbus_handle,
                                                     VspOptions options, const std::string* saved) {
  std::unique_ptr<IcVsp> vsp(new IcVsp(service, std::move(options)));
  if (absl::Status s = vsp->Init(vmbus_handle, saved); !s.ok()) return s;
  return vsp;
}

absl::Status IcVsp::Init(uint64_t vmbus_handle, const std::string* saved) {
  if (absl::Status s = Check(KmclQueryInterface(nullptr, &KMCL_SERVER_INTERFACE_TYPE,
                                                reinterpret_cast<PINTERFACE>(&kmcl_), sizeof(kmcl_),
                                                KMCL_SERVER_INTERFACE_VERSION_V1, nullptr),
                             "KmclQueryInterface");
      !s.ok()) {
    return s;
  }
  PDEVICE_OBJECT device = KmclGetVmbusDevice(vmbus_handle, 0);
  if (device == nullptr) return absl::NotFoundError(absl::StrCat("no partition with VMBus handle ", vmbus_handle));
  if (absl::Status s = Check(kmcl_.VmbChannelAllocate(device, TRUE, &channel_), "VmbChannelAllocate"); !s.ok()) {
    return s;
  }
  kmcl_.VmbChannelSetPointer(channel_, this);
  HANDLE kernel_handle = nullptr;
  NTSTATUS st = kmcl_.VmbConvertVmbusHandleToKernelHandle(reinterpret_cast<HANDLE>(vmbus_handle), &kernel_handle);
  if (NT_SUCCESS(st)) st = kmcl_.VmbServerChannelInitSetVmbusHandle(channel_, kernel_handle);
  if (NT_SUCCESS(st)) {
    st = kmcl_.VmbServerChannelInitSetTargetInterfaceId(channel_, ToGUID(ServiceInfo(service_).interface_type),
                                                         ToGUID(options_.instance));
  }
  if (NT_SUCCESS(st)) st = kmcl_.VmbChannelInitSetMaximumPacketSize(channel_, kMaxIcPacketSize);
  // The service's name ("heartbeat", ...) names the channel in diagnostics.
  std::vector<WCHAR> name(ServiceInfo(service_).name.begin(), ServiceInfo(service_).name.end());
  UNICODE_STRING friendly_name = {static_cast<USHORT>(name.size() * sizeof(WCHAR)),
                                  static_cast<USHORT>(name.size() * sizeof(WCHAR)), name.data()};
  if (NT_SUCCESS(st)) st = kmcl_.VmbChannelInitSetFriendlyName(channel_, &friendly_name);
  VMB_CHANNEL_STATE_CHANGE_CALLBACKS callbacks;
  VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT(&callbacks);
  callbacks.EvtChannelPostStarted = PostStarted;
  callbacks.EvtChannelClosed = Closed;
  if (NT_SUCCESS(st)) st = kmcl_.VmbChannelInitSetStateChangeCallbacks(channel_, &callbacks);
  if (NT_SUCCESS(st)) st = kmcl_.VmbChannelInitSetProcessPacketCallbacks(channel_, ProcessPacket, nullptr);
  if (NT_SUCCESS(st)) st = kmcl_.VmbServerChannelInitSetSaveRestorePacketCallbacks(channel_, SavePacket, RestorePacket);
  if (NT_SUCCESS(st)) st = KmclChannelInitSetPeerErrorCallback(channel_, PeerError);  // kmcld's extension
  if (absl::Status s = Check(st, "KMCL channel initialisation"); !s.ok()) return s;
  if (saved != nullptr) {
    StateReader r(*saved);
    std::string state = r.Str();
    const uint32_t chunks = r.U32();
    for (uint32_t i = 0; i < chunks && r.ok(); ++i) {
      std::string chunk = r.Str();
      st = kmcl_.VmbChannelRestoreFromBuffer(channel_, chunk.data(), static_cast<ULONG>(chunk.size()));
      if (st != STATUS_MORE_PROCESSING_REQUIRED && !NT_SUCCESS(st)) break;
    }
    if (!r.done()) return absl::InvalidArgumentError("IC VSP saved state: truncated");
    // The stream comes from the blob: KMCL refusing it, or it ending before
    // KMCL has all of it, is a bad blob (INVALID_ARGUMENT), not kmcld's fault.
    if (st == STATUS_MORE_PROCESSING_REQUIRED) {
      return absl::InvalidArgumentError("IC VSP saved state: its channel's save stream ends early");
    }
    if (!NT_SUCCESS(st)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "IC VSP saved state: VmbChannelRestoreFromBuffer refused its channel's save stream (NTSTATUS 0x",
          absl::Hex(static_cast<uint32_t>(st), absl::kZeroPad8), ")"));
    }
    MutexLock lock(&mu_);
    if (absl::Status s = host_->Restore(state, options_.clock()); !s.ok()) return s;
  }
  if (absl::Status s = Check(kmcl_.VmbChannelEnable(channel_), "VmbChannelEnable"); !s.ok()) return s;
  kmcl_.VmbChannelStart(channel_);
  return absl::OkStatus();
}

IcVsp::~IcVsp() {
  if (channel_ == nullptr) return;
  kmcl_.VmbChannelDisable(channel_);
  kmcl_.VmbChannelCleanup(channel_);
}

void IcVsp::SendLocked(std::vector<Bytes>& packets) {
  for (Bytes& b : packets) {
    VMBPACKET packet = kmcl_.VmbPacketAllocate(channel_);
    NTSTATUS st = packet == nullptr
                      ? STATUS_INSUFFICIENT_RESOURCES
                      : kmcl_.VmbPacketSend(packet, b.data(), static_cast<UINT32>(b.size()), nullptr, 0);
    if (NT_SUCCESS(st)) {
      ++stats_.packets_sent;
      continue;
    }
    if (packet != nullptr) kmcl_.VmbPacketFree(packet);
    ++stats_.send_failures;
    stats_.last_send_error = st;
  }
}

void IcVsp::Emit(const IcOutput& out) {
  if (options_.on_event) {
    for (const IcEvent& e : out.events) options_.on_event(e);
  }
  if (options_.on_dropped) {
    for (const std::string& what : out.dropped) options_.on_dropped(what);
  }
}

void IcVsp::Run(const std::function<void(IcHostService&, absl::Time, IcOutput&)>& fn) {
  IcOutput out;
  {
    MutexLock lock(&mu_);
    ++emitting_;  // WaitUntil does not look until this change's events are out
    fn(*host_, options_.clock(), out);
    SendLocked(out.send);
  }
  Emit(out);
  MutexLock lock(&mu_);
  --emitting_;
  changed_.SignalAll();
}

void IcVsp::Poll() {
  Run([this](IcHostService& s, absl::Time now, IcOutput& out) {
    mu_.AssertHeld();  // Run holds it
    // Frozen for a save, nothing goes out: the service does not judge the
    // guest (or time its requests out) by a silence the host imposed.
    if (!frozen_) s.Tick(now, out);
  });
}

bool IcVsp::WaitUntil(const std::function<bool(IcHostService&)>& pred, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  MutexLock lock(&mu_);
  // A state is looked at only with every change's events emitted, so a
  // caller who sees the state also finds its events (options.on_event).
  while (emitting_ > 0 || !pred(*host_)) {
    if (changed_.WaitWithDeadline(&mu_, deadline)) return emitting_ == 0 && pred(*host_);
  }
  return true;
}

bool IcVsp::WaitForStats(const std::function<bool(const VspStats&)>& pred, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  MutexLock lock(&mu_);
  while (!pred(stats_)) {
    if (changed_.WaitWithDeadline(&mu_, deadline)) return pred(stats_);
  }
  return true;
}

VspStats IcVsp::stats() const {
  MutexLock lock(&mu_);
  VspStats s = stats_;
  s.protocol = host_->core().counters();
  return s;
}

void IcVsp::ProcessPacket(VMBCHANNEL channel, VMBPACKETCOMPLETION packet, PVOID buffer, UINT32 length,
                          UINT32 flags) {
  IcVsp* self = From(channel);
  std::span<const uint8_t> bytes(static_cast<const uint8_t*>(buffer), length);
  self->Run([&](IcHostService& s, absl::Time now, IcOutput& out) {
    self->mu_.AssertHeld();  // Run calls it under mu_
    ++self->stats_.packets_received;
    s.OnPacket(bytes, now, out);
  });
  self->kmcl_.VmbChannelPacketComplete(packet, nullptr, 0);
}

void IcVsp::PeerError(VMBCHANNEL channel, const char* problem) {
  IcVsp* self = From(channel);
  if (self->options_.on_peer_error) self->options_.on_peer_error(problem);
  MutexLock lock(&self->mu_);  // counted once reported: see VspStats::peer_errors
  ++self->stats_.peer_errors;
  self->changed_.SignalAll();
}

void IcVsp::PostStarted(VMBCHANNEL channel) {
  // A restored channel replays PostStarted: its service is already open and
  // continues where it was saved.
  From(channel)->Run([](IcHostService& s, absl::Time now, IcOutput& out) {
    if (s.core().state() == IcHostCore::State::kClosed) s.Open(now, out);
  });
}

void IcVsp::Closed(VMBCHANNEL channel) {
  From(channel)->Run([](IcHostService& s, absl::Time, IcOutput& out) { s.Close(out); });
}

NTSTATUS IcVsp::SavePacket(VMBCHANNEL, VMBPACKET, PVOID, UINT32, PUINT32 bytes_needed) {
  // Our packets carry no driver state: they are plain in-band sends that
  // free themselves once in the ring. KMCL saves their bytes.
  *bytes_needed = 0;
  return STATUS_SUCCESS;
}

NTSTATUS IcVsp::RestorePacket(VMBCHANNEL channel, PVOID lib, UINT32 lib_size, PVOID, UINT32) {
  IcVsp* self = From(channel);
  VMBPACKET packet = self->kmcl_.VmbPacketAllocate(channel);
  if (packet == nullptr) return STATUS_INSUFFICIENT_RESOURCES;
  NTSTATUS st = self->kmcl_.VmbPacketRestore(packet, lib, lib_size);
  if (!NT_SUCCESS(st)) self->kmcl_.VmbPacketFree(packet);
  return st;
}

Guid IcVsp::instance() const {
  GUID g = {};
  kmcl_.VmbChannelGetInterfaceInstance(channel_, &g);
  return FromGUID(g);
}

void IcVsp::Resume() {
  {
    MutexLock lock(&mu_);
    frozen_ = false;
    host_->Resumed(options_.clock());
  }
  kmcl_.VmbChannelStart(channel_);
}

absl::StatusOr<std::string> IcVsp::Save() {
  kmcl_.VmbChannelPause(channel_);  // waits for packet callbacks, which take mu_
  // Held until the service's state is saved: a Run() between the channel's
  // save and the service's would leave a request in the state whose packet
  // is not in the saved ring. Lock order mu_, then the channel's (as Send).
  MutexLock lock(&mu_);
  frozen_ = true;  // until Resume()
  if (absl::Status s = Check(kmcl_.VmbChannelSaveBegin(channel_), "VmbChannelSaveBegin"); !s.ok()) return s;
  std::vector<std::string> chunks;
  std::string buffer(64 << 10, '\0');
  NTSTATUS st = STATUS_SUCCESS;
  for (;;) {
    ULONG filled = 0, required = 0;
    st = kmcl_.VmbChannelSaveContinue(channel_, buffer.data(), static_cast<ULONG>(buffer.size()), &filled, &required);
    if (st == STATUS_BUFFER_TOO_SMALL) {
      buffer.resize(required);
      continue;
    }
    if (st != STATUS_BUFFER_OVERFLOW && st != STATUS_SUCCESS) break;
    chunks.push_back(buffer.substr(0, filled));
    if (st == STATUS_SUCCESS) break;
  }
  kmcl_.VmbChannelSaveEnd(channel_);
  if (absl::Status s = Check(st, "VmbChannelSaveContinue"); !s.ok()) return s;
  StateWriter w;
  w.Str(host_->Save());
  w.U32(static_cast<uint32_t>(chunks.size()));
  for (const std::string& c : chunks) w.Str(c);
  return w.Take();
}

}  // namespace kmcl::devices::ic
