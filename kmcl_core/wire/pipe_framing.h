// kmcl_core/wire/pipe_framing.h: pipe-mode framing (struct vmpipe_proto_header,
// as in Linux net/vmw_vsock/hyperv_transport.c).
//
// A channel in pipe mode (VMBUS_CHANNEL_INIT_FLAG_IS_PIPE, or offered with
// OFFER_AS_PIPE) prefixes every in-band payload with an 8-byte PipeHeader:
// {packet_type, data_size}. Data packets carry at most 16 KiB. This file
// frames outgoing data and validates incoming frames, which come from the
// peer and are hostile like everything in the ring.
//
// Thread-compatible; plain functions.
#ifndef KMCLD_KMCL_CORE_WIRE_PIPE_FRAMING_H_
#define KMCLD_KMCL_CORE_WIRE_PIPE_FRAMING_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl {

// Appends a pipe frame of `type` around `data` to `out` (cleared first).
// INVALID_ARGUMENT above kPipeMaxPayload.
absl::Status FramePipePacket(wire::PipePacketType type, std::span<const uint8_t> data,
                             std::vector<uint8_t>& out);

struct PipeFrame {
  wire::PipePacketType type;
  std::span<const uint8_t> data;  // points into the parsed payload
  uint16_t bytes_consumed = 0;    // kPartial only: the high 16 bits of data_size
};

// Parses a received in-band payload (padded to 8 on the wire, so trailing
// bytes beyond data_size are ignored). DATA_LOSS if the header is short, the
// type unknown, or data_size exceeds the payload or the pipe maximum.
absl::StatusOr<PipeFrame> ParsePipePacket(std::span<const uint8_t> payload);

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_WIRE_PIPE_FRAMING_H_
