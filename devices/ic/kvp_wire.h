// devices/ic/kvp_wire.h: the body of the KVP (key-value pair exchange) IC
// message, ICMSGTYPE_KVPEXCHANGE, as Linux's guest speaks it
// (include/uapi/linux/hyperv.h: struct hv_kvp_hdr, hv_kvp_exchg_msg_value,
// hv_kvp_msg_get/set/delete/enumerate; drivers/hv/hv_kvp.c), plus the UTF-16
// string encoding KVP keys and values use on the wire.
//
// Body layout (offsets after the 28-byte IC header, see ic_wire.h):
//
//   0  u8  operation (kKvpOp*)      1  u8 pool (0..4)      2  u16 pad
//   GET / SET:   4 u32 value_type, 8 u32 key_size, 12 u32 value_size,
//                16 key[512], 528 value[2048]                 -> 2576 bytes
//   DELETE:      4 u32 key_size, 8 key[512]                    ->  520 bytes
//   ENUMERATE:   4 u32 index, 8 u32 value_type, 12 u32 key_size,
//                16 u32 value_size, 20 key[512], 532 value[2048] -> 2580 bytes
//
// Keys and values are UTF-16LE with a terminating NUL unit; key_size and
// value_size are byte counts that include the terminator, at most 512 and
// 2048 (so at most 255 and 1023 characters). A SET may instead carry a
// REG_U32 or REG_U64 value (4 or 8 little-endian bytes); the Linux guest
// stores it as its decimal string.
//
// Threading: functions only; safe from any thread.
#ifndef KMCLD_DEVICES_IC_KVP_WIRE_H_
#define KMCLD_DEVICES_IC_KVP_WIRE_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "devices/ic/ic_wire.h"

namespace kmcl::devices::ic {

inline constexpr uint8_t kKvpOpGet = 0;
inline constexpr uint8_t kKvpOpSet = 1;
inline constexpr uint8_t kKvpOpDelete = 2;
inline constexpr uint8_t kKvpOpEnumerate = 3;
// KVP_OP_GET_IP_INFO (4) and KVP_OP_SET_IP_INFO (5) exist but are not
// emulated: a guest answers them with kHvErrorNotSupported.

inline constexpr uint8_t kKvpPoolExternal = 0;
inline constexpr uint8_t kKvpPoolGuest = 1;
inline constexpr uint8_t kKvpPoolAuto = 2;
inline constexpr uint8_t kKvpPoolAutoExternal = 3;
inline constexpr uint8_t kKvpPoolAutoInternal = 4;
inline constexpr uint8_t kKvpPoolCount = 5;

inline constexpr uint32_t kKvpRegSz = 1;   // REG_SZ: UTF-16 string
inline constexpr uint32_t kKvpRegU32 = 4;  // REG_U32
inline constexpr uint32_t kKvpRegU64 = 8;  // REG_U64

inline constexpr size_t kKvpMaxKeyBytes = 512;     // HV_KVP_EXCHANGE_MAX_KEY_SIZE
inline constexpr size_t kKvpMaxValueBytes = 2048;  // HV_KVP_EXCHANGE_MAX_VALUE_SIZE
inline constexpr size_t kKvpMaxKeyChars = kKvpMaxKeyBytes / 2 - 1;      // 255
inline constexpr size_t kKvpMaxValueChars = kKvpMaxValueBytes / 2 - 1;  // 1023
inline constexpr size_t kKvpHeaderSize = 4;                             // struct hv_kvp_hdr
inline constexpr size_t kKvpExchangeSize = 12 + kKvpMaxKeyBytes + kKvpMaxValueBytes;  // 2572
inline constexpr size_t kKvpGetSetBodySize = kKvpHeaderSize + kKvpExchangeSize;       // 2576
inline constexpr size_t kKvpDeleteBodySize = kKvpHeaderSize + 4 + kKvpMaxKeyBytes;    // 520
inline constexpr size_t kKvpEnumerateBodySize = kKvpHeaderSize + 4 + kKvpExchangeSize;  // 2580

// One KVP body, request or response (the guest answers in the same layout).
struct KvpBody {
  uint8_t operation = kKvpOpGet;
  uint8_t pool = 0;
  uint32_t index = 0;       // ENUMERATE
  uint32_t value_type = 0;  // GET/SET/ENUMERATE
  Bytes key;                // key_size bytes as on the wire (UTF-16LE + NUL)
  Bytes value;              // value_size bytes (UTF-16LE + NUL, or 4/8 bytes)
};

// The body size the operation uses (2576, 520 or 2580); 0 for other operations.
size_t KvpBodySize(uint8_t operation);
// INVALID_ARGUMENT if key/value exceed 512/2048 bytes or the operation is
// not GET/SET/DELETE/ENUMERATE.
absl::StatusOr<Bytes> EncodeKvpBody(const KvpBody& body);
// UNIMPLEMENTED for an operation other than 0..3; INVALID_ARGUMENT when the
// body is shorter than the operation's layout, the pool is not 0..4, or
// key_size/value_size exceed 512/2048.
absl::StatusOr<KvpBody> DecodeKvpBody(std::span<const uint8_t> body);

// UTF-8 -> UTF-16LE with a NUL terminator. INVALID_ARGUMENT for invalid
// UTF-8 or when the result (terminator included) exceeds `max_bytes`.
absl::StatusOr<Bytes> EncodeKvpString(std::string_view utf8, size_t max_bytes);
// UTF-16LE -> UTF-8, stopping at the first NUL unit. INVALID_ARGUMENT for an
// odd byte count or an unpaired surrogate.
absl::StatusOr<std::string> DecodeKvpString(std::span<const uint8_t> utf16);
// A value as text: REG_SZ decoded, REG_U32/REG_U64 in decimal (as
// hv_kvp.c's kvp_send_key does); INVALID_ARGUMENT for other types or sizes.
absl::StatusOr<std::string> KvpValueText(uint32_t value_type, std::span<const uint8_t> value);

}  // namespace kmcl::devices::ic

#endif  // KMCLD_DEVICES_IC_KVP_WIRE_H_
