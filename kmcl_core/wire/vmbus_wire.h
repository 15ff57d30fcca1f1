// kmcl_core/wire/vmbus_wire.h: the VMBus wire format, as plain structs and
// constants: the ring control page, packet descriptors and their
// type-specific headers, pipe framing, and the GPADL channel messages.
//
// Everything here is little-endian and byte-exact with Hyper-V, Linux
// (include/linux/hyperv.h), QEMU and OpenVMM; the static_asserts pin every
// size and offset. docs/wire-format.md describes the same layout in prose.
// No logic lives here beyond size arithmetic; the ring (ring_buffer.h) and
// GPADL code (gpadl_messages.h) use these definitions.
#ifndef KMCLD_KMCL_CORE_WIRE_VMBUS_WIRE_H_
#define KMCLD_KMCL_CORE_WIRE_VMBUS_WIRE_H_

#include <cstddef>
#include <cstdint>

namespace kmcl::wire {

inline constexpr uint32_t kPageSize = 4096;
inline constexpr uint32_t kPageShift = 12;

// ---- Ring control page (one 4 KiB page in front of each ring's data) -----

struct RingControl {
  uint32_t write_index;      // producer: byte offset of the next write
  uint32_t read_index;       // consumer: byte offset of the next read
  uint32_t interrupt_mask;   // consumer: non-zero = "draining, do not signal"
  uint32_t pending_send_sz;  // producer: "signal me when this much is free"
  uint32_t reserved1[12];
  uint32_t feature_bits;  // producer: bit 0 = supports pending_send_sz
  uint8_t padding[kPageSize - 68];
};
static_assert(sizeof(RingControl) == kPageSize);
static_assert(offsetof(RingControl, write_index) == 0);
static_assert(offsetof(RingControl, read_index) == 4);
static_assert(offsetof(RingControl, interrupt_mask) == 8);
static_assert(offsetof(RingControl, pending_send_sz) == 12);
static_assert(offsetof(RingControl, feature_bits) == 64);

inline constexpr uint32_t kRingFeaturePendingSendSize = 0x1;

// ---- Packets in the ring ---------------------------------------------------

enum class PacketType : uint16_t {
  kInvalid = 0x0,
  kSynch = 0x1,
  kAddTransferPageSet = 0x2,
  kRemoveTransferPageSet = 0x3,
  kEstablishGpadl = 0x4,
  kTeardownGpadl = 0x5,
  kDataInBand = 0x6,
  kDataUsingTransferPages = 0x7,
  kDataUsingGpadl = 0x8,
  kDataUsingGpaDirect = 0x9,
  kCancelRequest = 0xa,
  kCompletion = 0xb,
  kDataUsingAdditionalPacket = 0xc,
  kAdditionalData = 0xd,
};

inline constexpr uint16_t kPacketFlagCompletionRequested = 0x1;
inline constexpr uint16_t kPacketFlagsMask = kPacketFlagCompletionRequested;

// Every packet starts with this 16-byte descriptor. offset8 and len8 count
// 8-byte units from the packet start; the payload is bytes
// [offset8*8, len8*8); an 8-byte trailer follows len8*8.
struct PacketDescriptor {
  uint16_t type;
  uint16_t offset8;
  uint16_t len8;
  uint16_t flags;
  uint64_t transaction_id;
};
static_assert(sizeof(PacketDescriptor) == 16);

// The trailer after every packet: the ring offset where the packet started,
// in the high 32 bits (Linux writes (u64)start << 32; OpenVMM the same bytes).
inline constexpr uint32_t kPacketTrailerSize = 8;
inline constexpr uint64_t PacketTrailer(uint32_t start_offset) {
  return static_cast<uint64_t>(start_offset) << 32;
}

// GPA direct (0x9): this header follows the descriptor, then `range_count`
// ranges, each a GpaRangeHeader followed by its PFNs.
struct GpaDirectHeader {
  uint32_t reserved;
  uint32_t range_count;
};
static_assert(sizeof(GpaDirectHeader) == 8);

// One range of a GPA-direct packet or a GPADL: byte_count bytes starting
// byte_offset bytes into the first of PagesSpanned() pages.
struct GpaRangeHeader {
  uint32_t byte_count;
  uint32_t byte_offset;
};
static_assert(sizeof(GpaRangeHeader) == 8);

// Transfer pages (0x7): this header, then `range_count` TransferPageRanges
// into a previously established transfer page set.
struct TransferPageHeader {
  uint16_t transfer_page_set_id;
  uint8_t sender_owns_set;
  uint8_t reserved;
  uint32_t range_count;
};
static_assert(sizeof(TransferPageHeader) == 8);

struct TransferPageRange {
  uint32_t byte_count;
  uint32_t byte_offset;
};
static_assert(sizeof(TransferPageRange) == 8);

// Pages a (byte_offset, byte_count) range touches. byte_offset < kPageSize.
inline constexpr uint64_t PagesSpanned(uint32_t byte_offset, uint32_t byte_count) {
  return (static_cast<uint64_t>(byte_offset) + byte_count + kPageSize - 1) >> kPageShift;
}

inline constexpr uint32_t RoundUp8(uint32_t n) { return (n + 7u) & ~7u; }

// ---- Pipe mode (vmpipe_proto_header, Linux hyperv_transport.c) ----------------

// In pipe mode every in-band payload starts with this header.
struct PipeHeader {
  uint32_t packet_type;  // PipePacketType
  uint32_t data_size;    // bytes of pipe data after the header
};
static_assert(sizeof(PipeHeader) == 8);

enum class PipePacketType : uint32_t {
  kData = 1,
  kPartial = 2,          // high 16 bits of data_size: bytes already consumed
  kSetupGpaDirect = 3,
  kTeardownGpaDirect = 4,
};
inline constexpr uint32_t kPipeMaxPayload = 16384;

// ---- Channel (control) messages --------------------------------------------

// SynIC message payloads are at most 240 bytes.
inline constexpr uint32_t kMaxChannelMessageSize = 240;

enum class ChannelMessageType : uint32_t {
  kInvalid = 0,
  kOfferChannel = 1,
  kRescindChannelOffer = 2,
  kRequestOffers = 3,
  kAllOffersDelivered = 4,
  kOpenChannel = 5,
  kOpenChannelResult = 6,
  kCloseChannel = 7,
  kGpadlHeader = 8,
  kGpadlBody = 9,
  kGpadlCreated = 10,
  kGpadlTeardown = 11,
  kGpadlTorndown = 12,
  kRelIdReleased = 13,
  kInitiateContact = 14,
  kVersionResponse = 15,
  kUnload = 16,
  kUnloadResponse = 17,
};

struct ChannelMessageHeader {
  uint32_t message_type;  // ChannelMessageType
  uint32_t padding;
};
static_assert(sizeof(ChannelMessageHeader) == 8);

// GPADL_HEADER: followed by the first words of the range list (each range a
// GpaRangeHeader and its PFNs); range_buflen is the byte size of the whole
// list, which GPADL_BODY messages continue.
struct GpadlHeaderMessage {
  ChannelMessageHeader header;
  uint32_t child_relid;
  uint32_t gpadl;
  uint16_t range_buflen;
  uint16_t range_count;
};
static_assert(sizeof(GpadlHeaderMessage) == 20);

struct GpadlBodyMessage {
  ChannelMessageHeader header;
  uint32_t message_number;  // informational; OpenVMM calls it reserved
  uint32_t gpadl;
};
static_assert(sizeof(GpadlBodyMessage) == 16);

// Range-list words (8 bytes each) per message: 27 in the header (one range
// header plus 26 PFNs, as Linux packs it) and 28 in each body.
inline constexpr uint32_t kGpadlHeaderMaxWords =
    (kMaxChannelMessageSize - sizeof(GpadlHeaderMessage)) / 8;
inline constexpr uint32_t kGpadlBodyMaxWords =
    (kMaxChannelMessageSize - sizeof(GpadlBodyMessage)) / 8;
static_assert(kGpadlHeaderMaxWords == 27);
static_assert(kGpadlBodyMaxWords == 28);

struct GpadlCreatedMessage {
  ChannelMessageHeader header;
  uint32_t child_relid;
  uint32_t gpadl;
  uint32_t creation_status;  // 0 = success, else an NTSTATUS
};
static_assert(sizeof(GpadlCreatedMessage) == 20);

struct GpadlTeardownMessage {
  ChannelMessageHeader header;
  uint32_t child_relid;
  uint32_t gpadl;
};
static_assert(sizeof(GpadlTeardownMessage) == 16);

struct GpadlTorndownMessage {
  ChannelMessageHeader header;
  uint32_t gpadl;
};
static_assert(sizeof(GpadlTorndownMessage) == 12);

// OFFERCHANNEL (host to guest), 196 bytes.
struct OfferChannelMessage {
  ChannelMessageHeader header;
  uint8_t interface_type[16];
  uint8_t interface_instance[16];
  uint8_t reserved[16];  // two u64 on the wire; bytes keep the struct 4-aligned
  uint16_t channel_flags;
  uint16_t mmio_megabytes;
  uint8_t user_defined[120];
  uint16_t subchannel_index;
  uint16_t mmio_megabytes_optional;
  uint32_t child_relid;
  uint8_t monitor_id;
  uint8_t monitor_allocated;  // bit 0
  uint16_t dedicated_interrupt;  // bit 0
  uint32_t connection_id;
};
static_assert(sizeof(OfferChannelMessage) == 196);
static_assert(offsetof(OfferChannelMessage, channel_flags) == 56);
static_assert(offsetof(OfferChannelMessage, user_defined) == 60);
static_assert(offsetof(OfferChannelMessage, subchannel_index) == 180);
static_assert(offsetof(OfferChannelMessage, child_relid) == 184);
static_assert(offsetof(OfferChannelMessage, connection_id) == 192);

inline constexpr uint32_t kOfferUserDefinedBytes = 120;

// Wire channel flags of OFFERCHANNEL (VMBUS_CHANNEL_* in Linux include/linux/hyperv.h).
inline constexpr uint16_t kOfferFlagEnumerateDeviceInterface = 0x0001;
inline constexpr uint16_t kOfferFlagNamedPipeMode = 0x0010;
inline constexpr uint16_t kOfferFlagLoopback = 0x0100;
inline constexpr uint16_t kOfferFlagForceNewChannel = 0x1000;
inline constexpr uint16_t kOfferFlagTlnpiProvider = 0x2000;

// Messages whose body is one u32 child relid: RESCIND_CHANNELOFFER,
// CLOSECHANNEL, RELID_RELEASED.
struct RelIdMessage {
  ChannelMessageHeader header;
  uint32_t child_relid;
};
static_assert(sizeof(RelIdMessage) == 12);

// OPENCHANNEL (guest to host), 148 bytes (pre-Copper layout).
struct OpenChannelMessage {
  ChannelMessageHeader header;
  uint32_t child_relid;
  uint32_t open_id;
  uint32_t ring_buffer_gpadl;
  uint32_t target_vp;
  uint32_t downstream_ring_buffer_page_offset;
  uint8_t user_data[120];
};
static_assert(sizeof(OpenChannelMessage) == 148);

struct OpenResultMessage {
  ChannelMessageHeader header;
  uint32_t child_relid;
  uint32_t open_id;
  uint32_t status;  // NTSTATUS, 0 = success
};
static_assert(sizeof(OpenResultMessage) == 20);

// INITIATE_CONTACT (guest to host), 40 bytes.
struct InitiateContactMessage {
  ChannelMessageHeader header;
  uint32_t version_requested;  // (major << 16) | minor
  uint32_t target_vcpu;
  // From protocol 5.0: u8 sint; from 5.1: u8 vtl; from 6.0: u32 feature flags
  // in bits 32..63. Older protocols: the interrupt page GPA.
  uint64_t interrupt_page_or_target_info;
  uint64_t monitor_page1;
  uint64_t monitor_page2;
};
static_assert(sizeof(InitiateContactMessage) == 40);

struct VersionResponseMessage {
  ChannelMessageHeader header;
  uint8_t version_supported;  // 1 = accepted
  uint8_t connection_state;
  uint16_t padding;
  uint32_t message_connection_id;
};
static_assert(sizeof(VersionResponseMessage) == 16);

// Protocol versions, (major << 16) | minor.
inline constexpr uint32_t kVersionWs2008 = 13;
inline constexpr uint32_t kVersionWin7 = 0x00010001;
inline constexpr uint32_t kVersionWin8 = 0x00020004;
inline constexpr uint32_t kVersionWin8_1 = 0x00030000;
inline constexpr uint32_t kVersionWin10 = 0x00040000;
inline constexpr uint32_t kVersionWin10Rs3 = 0x00040001;
inline constexpr uint32_t kVersionWin10V5 = 0x00050000;
inline constexpr uint32_t kVersionWin10Rs4 = 0x00050001;
inline constexpr uint32_t kVersionWin10Rs5 = 0x00050002;
inline constexpr uint32_t kVersionIron = 0x00050003;
inline constexpr uint32_t kVersionCopper = 0x00060000;
// Newest first: what a guest offers in turn.
inline constexpr uint32_t kSupportedVersions[] = {
    kVersionCopper, kVersionIron,  kVersionWin10Rs5, kVersionWin10Rs4,
    kVersionWin10V5, kVersionWin10Rs3, kVersionWin10, kVersionWin8_1,
    kVersionWin8,   kVersionWin7,  kVersionWs2008};

// Connection ids (QEMU vmbus-proto.h, OpenVMM).
inline constexpr uint32_t kMessageConnectionId = 1;
inline constexpr uint32_t kMessageConnectionIdV5 = 4;

}  // namespace kmcl::wire

#endif  // KMCLD_KMCL_CORE_WIRE_VMBUS_WIRE_H_
