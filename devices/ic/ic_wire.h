// devices/ic/ic_wire.h: the wire format of the Hyper-V integration services
// ("ICs": heartbeat, shutdown, time sync; KVP is in kvp_wire.h) as explicit
// little-endian encode/decode functions, byte-exact with what Linux's guest
// drivers speak (include/linux/hyperv.h: struct vmbuspipe_hdr, icmsg_hdr,
// icmsg_negotiate, ic_version, heartbeat_msg_data, shutdown_msg_data,
// ictimesync_data, ictimesync_ref_data; drivers/hv/hv_util.c).
//
// Every IC message is one VMBus in-band packet:
//
//   offset 0   vmbuspipe_hdr  (8 bytes: u32 flags, u32 msgsize)
//   offset 8   icmsg_hdr      (20 bytes, see IcHeader)
//   offset 28  body           (per message type; see the Encode*/Decode* below)
//
// docs/devices.md lists every field byte by byte. No struct here is cast
// onto wire bytes: decoders read each field at its offset, so alignment and
// host endianness never matter, and a short buffer is an error, never a read
// past its end.
//
// Use: build a message with EncodeIcMessage(header, body), read one with
// ParseIcMessage(bytes) and the body decoder for its type.
//
// Threading: functions only, no state; safe from any thread.
#ifndef KMCLD_DEVICES_IC_IC_WIRE_H_
#define KMCLD_DEVICES_IC_IC_WIRE_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kmcl_core/base/guid.h"

namespace kmcl::devices::ic {

using Bytes = std::vector<uint8_t>;

// ---- Sizes (include/linux/hyperv.h) -------------------------------------------
inline constexpr size_t kPipeHeaderSize = 8;   // struct vmbuspipe_hdr
inline constexpr size_t kIcHeaderSize = 20;    // struct icmsg_hdr
inline constexpr size_t kIcMessageHeaderSize = kPipeHeaderSize + kIcHeaderSize;  // ICMSG_HDR = 28
inline constexpr size_t kNegotiateFixedSize = 8;   // struct icmsg_negotiate without versions
inline constexpr size_t kIcVersionSize = 4;        // struct ic_version
inline constexpr size_t kMaxNegotiateVersions = 100;  // IC_VERSION_NEGOTIATION_MAX_VER_COUNT
inline constexpr size_t kHeartbeatBodySize = 40;   // struct heartbeat_msg_data
inline constexpr size_t kHeartbeatMinBodySize = 8; // hv_util.c accepts the sequence alone
inline constexpr size_t kShutdownMessageBytes = 2048;
inline constexpr size_t kShutdownBodySize = 12 + kShutdownMessageBytes;  // struct shutdown_msg_data
inline constexpr size_t kTimeSyncBodySize = 25;    // struct ictimesync_data (versions < 4)
inline constexpr size_t kTimeSyncRefBodySize = 22; // struct ictimesync_ref_data (version 4)
// The largest IC packet this implementation sends or accepts: the KVP
// message (kvp_wire.h) is the largest, well under one 4 KiB page, which is
// the receive buffer Linux's hv_util uses for heartbeat/shutdown/time sync.
inline constexpr size_t kMaxIcPacketSize = 4096;

// ---- icmsg_hdr.icmsgtype --------------------------------------------------------
inline constexpr uint16_t kMsgNegotiate = 0;
inline constexpr uint16_t kMsgHeartbeat = 1;
inline constexpr uint16_t kMsgKvpExchange = 2;
inline constexpr uint16_t kMsgShutdown = 3;
inline constexpr uint16_t kMsgTimeSync = 4;

// ---- icmsg_hdr.icflags ----------------------------------------------------------
inline constexpr uint8_t kFlagTransaction = 1;
inline constexpr uint8_t kFlagRequest = 2;
inline constexpr uint8_t kFlagResponse = 4;

// ---- icmsg_hdr.status (HRESULTs; include/uapi/linux/hyperv.h) --------------------
inline constexpr uint32_t kHvSOk = 0x00000000;
inline constexpr uint32_t kHvEFail = 0x80004005;
inline constexpr uint32_t kHvSCont = 0x80070103;        // KVP: no such key / no more items
inline constexpr uint32_t kHvInvalidArg = 0x80070057;
inline constexpr uint32_t kHvErrorDiskFull = 0x80070070; // kmcld: a KVP pool is full
inline constexpr uint32_t kHvErrorNotSupported = 0x80070032;

// ---- Time sync (struct ictimesync_data.flags) ----------------------------------
inline constexpr uint8_t kTimeSyncProbe = 0;
inline constexpr uint8_t kTimeSyncSync = 1;
inline constexpr uint8_t kTimeSyncSample = 2;
// 100 ns units between 1601-01-01 (Windows epoch) and 1970-01-01 (WLTIMEDELTA).
inline constexpr uint64_t kWindowsToUnixEpoch100ns = 116444736000000000ull;

// ---- Shutdown (shutdown_msg_data.flags; hv_util.c) ------------------------------
inline constexpr uint32_t kShutdownFlagForce = 1;      // may be OR-ed into the others
inline constexpr uint32_t kShutdownFlagShutdown = 0;
inline constexpr uint32_t kShutdownFlagRestart = 2;
inline constexpr uint32_t kShutdownFlagHibernate = 4;

// ---- Interface type GUIDs of the offers (include/linux/hyperv.h) ---------------
extern const Guid kHeartbeatInterfaceType;  // 57164f39-9115-4e78-ab55-382f3bd5422d
extern const Guid kShutdownInterfaceType;   // 0e0b6031-5213-4934-818b-38d90ced39db
extern const Guid kTimeSyncInterfaceType;   // 9527e630-d0ae-497b-adce-e80ab0175caf
extern const Guid kKvpInterfaceType;        // a9a0f4e7-5a45-4d96-b827-8a841e8c03e6

// struct ic_version: major, minor (u16 each). Ordered by (major, minor).
struct IcVersion {
  uint16_t major = 0;
  uint16_t minor = 0;
  friend bool operator==(const IcVersion&, const IcVersion&) = default;
  friend auto operator<=>(const IcVersion&, const IcVersion&) = default;
  std::string ToString() const;  // "3.0"
};

// vmbuspipe_hdr + icmsg_hdr, decoded.
struct IcHeader {
  uint32_t pipe_flags = 0;    // offset 0 (Linux ignores it; kmcld sends 0)
  uint32_t pipe_size = 0;     // offset 4 (bytes after the pipe header; Linux ignores it)
  IcVersion framework;        // offset 8  icverframe
  uint16_t type = 0;          // offset 12 icmsgtype
  IcVersion message;          // offset 14 icvermsg
  uint16_t size = 0;          // offset 18 icmsgsize: body bytes after offset 28
  uint32_t status = 0;        // offset 20 HRESULT (kHvSOk, kHvEFail, ...)
  uint8_t transaction_id = 0; // offset 24 ictransaction_id (echoed by the guest)
  uint8_t flags = 0;          // offset 25 icflags (kFlagTransaction | kFlagRequest/Response)
};

// A parsed packet: the header and every byte after offset 28 (the body plus
// VMBus's padding to 8 bytes; receivers see padded lengths).
struct IcMessage {
  IcHeader header;
  std::span<const uint8_t> body;
};

// INVALID_ARGUMENT if `packet` is shorter than 28 bytes. Nothing else is
// checked here: what a receiver requires of each field is its policy.
absl::StatusOr<IcMessage> ParseIcMessage(std::span<const uint8_t> packet);
// The 28 header bytes then `body`; sets header.size = body.size() and
// pipe_size = 20 + body.size() (overriding what `header` holds).
Bytes EncodeIcMessage(IcHeader header, std::span<const uint8_t> body);
// Overwrites the header fields of an existing packet in place (how a guest
// answers: Linux edits the request buffer and sends it back). `packet` must
// hold at least 28 bytes.
void WriteIcHeader(std::span<uint8_t> packet, const IcHeader& header);

// ---- Negotiation (struct icmsg_negotiate) ---------------------------------------
// body: u16 icframe_vercnt, u16 icmsg_vercnt, u32 reserved, then
// icframe_vercnt framework versions followed by icmsg_vercnt message versions.
struct NegotiateBody {
  std::vector<IcVersion> framework;
  std::vector<IcVersion> message;
};
Bytes EncodeNegotiateBody(const NegotiateBody& body);
// INVALID_ARGUMENT when shorter than 8 bytes, when a count exceeds 100, or
// when the version array does not fit (the checks of vmbus_prep_negotiate_resp).
absl::StatusOr<NegotiateBody> DecodeNegotiateBody(std::span<const uint8_t> body);

// ---- Heartbeat (struct heartbeat_msg_data: u64 seq_num, u32 reserved[8]) -------
Bytes EncodeHeartbeatBody(uint64_t sequence);
// Needs the 8-byte sequence (hv_util.c does not require the reserved words).
absl::StatusOr<uint64_t> DecodeHeartbeatBody(std::span<const uint8_t> body);

// ---- Shutdown (struct shutdown_msg_data) ------------------------------------------
struct ShutdownBody {
  uint32_t reason_code = 0;      // offset 0
  uint32_t timeout_seconds = 0;  // offset 4
  uint32_t flags = 0;            // offset 8: kShutdownFlag*
  std::string display_message;   // offset 12: 2048 bytes, NUL-padded; at most 2047 bytes
};
// INVALID_ARGUMENT if the display message exceeds 2047 bytes.
absl::StatusOr<Bytes> EncodeShutdownBody(const ShutdownBody& body);
// Needs all 2060 bytes (hv_util.c rejects shorter ones).
absl::StatusOr<ShutdownBody> DecodeShutdownBody(std::span<const uint8_t> body);

// ---- Time sync ------------------------------------------------------------------------
// Message versions below 4.0: struct ictimesync_data (u64 parenttime,
// u64 childtime, u64 roundtriptime, u8 flags; 25 bytes). Version 4.0 and up:
// struct ictimesync_ref_data (u64 parenttime, u64 vmreferencetime, u8 flags,
// i8 leapflags, i8 stratum, u8 reserved[3]; 22 bytes). Times are 100 ns
// units: parenttime since 1601-01-01 UTC, vmreferencetime on the
// partition's reference counter.
struct TimeSyncBody {
  uint64_t parent_time = 0;
  uint64_t child_time = 0;       // < 4.0 only
  uint64_t round_trip_time = 0;  // < 4.0 only
  uint64_t reference_time = 0;   // >= 4.0 only
  uint8_t flags = 0;             // kTimeSyncSync / kTimeSyncSample
  int8_t leap_flags = 0;         // >= 4.0 only
  int8_t stratum = 0;            // >= 4.0 only
};
inline bool UsesReferenceTime(IcVersion message_version) { return message_version.major >= 4; }
Bytes EncodeTimeSyncBody(const TimeSyncBody& body, IcVersion message_version);
absl::StatusOr<TimeSyncBody> DecodeTimeSyncBody(std::span<const uint8_t> body,
                                                IcVersion message_version);

// ---- Little-endian field access (bounds-checked by the callers above) ---------
void PutU16(uint8_t* p, uint16_t v);
void PutU32(uint8_t* p, uint32_t v);
void PutU64(uint8_t* p, uint64_t v);
uint16_t GetU16(const uint8_t* p);
uint32_t GetU32(const uint8_t* p);
uint64_t GetU64(const uint8_t* p);

}  // namespace kmcl::devices::ic

#endif  // KMCLD_DEVICES_IC_IC_WIRE_H_
