// kmcl_core/kmcl/kmcl_compat.h: internals shared by the two files that implement
// kmcl_api.h: what a VMBCHANNEL handle points at, handle validation, and the
// one place absl::Status becomes a KMCL NTSTATUS for each parameter slot.
// Not a public header: drivers include kmcl_api.h.
#ifndef KMCLD_KMCL_CORE_KMCL_KMCL_COMPAT_H_
#define KMCLD_KMCL_CORE_KMCL_KMCL_COMPAT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "kmcl_core/base/mutex.h"
#include "kmcl_core/kmcl/kmcl_api.h"
#include "kmcl_core/runtime/channel.h"

namespace kmcl::compat {

// The device a channel hangs off: a partition's VMBus at one VTL.
struct Device {
  uint32_t magic;
  uint64_t vmbus_handle;
  uint8_t vtl;
  static constexpr uint32_t kMagic = 0x56444D4B;  // "KMDV"
};

// What a VMBCHANNEL points at.
struct CompatChannel {
  static constexpr uint32_t kMagic = 0x4E484D4B;  // "KMHN"
  uint32_t magic = kMagic;
  std::unique_ptr<Channel> channel;
  uint8_t vtl = 0;
  // The driver's callbacks, as registered.
  VMB_CHANNEL_STATE_CHANGE_CALLBACKS state = {};
  PFN_VMB_CHANNEL_PROCESS_PACKET process_packet = nullptr;
  PFN_VMB_CHANNEL_PROCESSING_COMPLETE processing_complete = nullptr;
  PFN_VMB_CHANNEL_PNP_FAILURE pnp_failure = nullptr;
  PFN_VMB_CHANNEL_SAVE_PACKET save_packet = nullptr;
  PFN_VMB_CHANNEL_RESTORE_PACKET restore_packet = nullptr;
  PFN_KMCL_CHANNEL_PEER_ERROR peer_error = nullptr;  // kmcld's extension

  Mutex mu;
  // Server: mapped GPADLs by handle; client: GPADLs created by the driver.
  struct Mapping {
    uint64_t lease_id;
    std::vector<uint8_t> mdl;  // the MDL chain's memory
  };
  absl::flat_hash_map<uint32_t, Mapping> mappings ABSL_GUARDED_BY(mu);
  std::vector<uint32_t> created_gpadls ABSL_GUARDED_BY(mu);
  // VmbChannelSaveBegin..End: the stream being handed out ([u64 length][blob]).
  std::string save_stream ABSL_GUARDED_BY(mu);
  size_t save_cursor ABSL_GUARDED_BY(mu) = 0;
  bool saving ABSL_GUARDED_BY(mu) = false;
  // VmbChannelRestoreFromBuffer: the chunks received so far.
  std::string restore_stream ABSL_GUARDED_BY(mu);
  // MDLs handed out by VmbChannelPacketGetExternalData, until completion.
  absl::flat_hash_map<const Delivery*, std::vector<uint8_t>> external_mdls ABSL_GUARDED_BY(mu);
};

// Handle checks: nullptr for anything that is not a live object.
CompatChannel* FromHandle(VMBCHANNEL handle);
Packet* FromHandle(VMBPACKET handle);
Delivery* FromHandle(VMBPACKETCOMPLETION handle);
inline VMBCHANNEL ToHandle(CompatChannel* c) { return reinterpret_cast<VMBCHANNEL>(c); }
inline VMBPACKET ToHandle(Packet* p) { return reinterpret_cast<VMBPACKET>(p); }
inline VMBPACKETCOMPLETION ToHandle(Delivery* d) { return reinterpret_cast<VMBPACKETCOMPLETION>(d); }
CompatChannel* Owner(const Channel& channel);
// The device a PDEVICE_OBJECT names, found by address (nullptr if none).
const Device* FindDevice(const void* handle);

void RegisterChannel(CompatChannel* c);
void UnregisterChannel(CompatChannel* c);

// absl::Status -> NTSTATUS at the KMCL surface: a wrong state is
// `wrong_state` (KMCL documents STATUS_INVALID_PARAMETER_1 for setters),
// an invalid argument `bad_argument`, everything else the one mapping in
// ntstatus.h.
NTSTATUS ToKmcl(const absl::Status& status, NTSTATUS wrong_state, NTSTATUS bad_argument);

// Re-installs the driver's callbacks on the core channel.
absl::Status InstallCallbacks(CompatChannel& c);

// An MDL chain describing `ranges`, with MappedSystemVa pointing into
// `pages` at each range's bytes when `pages` is given. Returns the memory
// (the first MDL at its start).
std::vector<uint8_t> BuildMdlChain(const std::vector<GpaRange>& ranges, uint8_t* pages,
                                   const std::vector<uint64_t>& view_offsets);
// The guest ranges an MDL chain describes, windowed to [offset, offset +
// length) (length 0 = to the end). With `first_only` only the first MDL.
absl::StatusOr<std::vector<GpaRange>> RangesFromMdl(const MDL* mdl, uint64_t offset,
                                                    uint64_t length, bool first_only,
                                                    bool force_length);

}  // namespace kmcl::compat

#endif  // KMCLD_KMCL_CORE_KMCL_KMCL_COMPAT_H_
