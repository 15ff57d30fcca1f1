#include "kmcl_core/wire/pipe_framing.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace kmcl {

absl::Status FramePipePacket(wire::PipePacketType type, std::span<const uint8_t> data,
                             std::vector<uint8_t>& out) {
  if (data.size() > wire::kPipeMaxPayload) {
    return absl::InvalidArgumentError(absl::StrCat("pipe payload of ", data.size(),
                                                   " bytes exceeds ", wire::kPipeMaxPayload));
  }
  wire::PipeHeader h{static_cast<uint32_t>(type), static_cast<uint32_t>(data.size())};
  out.resize(sizeof(h) + data.size());
  std::memcpy(out.data(), &h, sizeof(h));
  if (!data.empty()) std::memcpy(out.data() + sizeof(h), data.data(), data.size());
  return absl::OkStatus();
}

absl::StatusOr<PipeFrame> ParsePipePacket(std::span<const uint8_t> payload) {
  if (payload.size() < sizeof(wire::PipeHeader)) {
    return absl::DataLossError(
        absl::StrCat("pipe packet of ", payload.size(), " bytes has no header"));
  }
  wire::PipeHeader h;
  std::memcpy(&h, payload.data(), sizeof(h));
  PipeFrame frame;
  uint32_t size = h.data_size;
  switch (static_cast<wire::PipePacketType>(h.packet_type)) {
    case wire::PipePacketType::kPartial:
      frame.bytes_consumed = static_cast<uint16_t>(size >> 16);
      size &= 0xFFFF;
      break;
    case wire::PipePacketType::kData:
    case wire::PipePacketType::kSetupGpaDirect:
    case wire::PipePacketType::kTeardownGpaDirect:
      break;
    default:
      return absl::DataLossError(absl::StrCat("unknown pipe packet type ", h.packet_type));
  }
  if (size > wire::kPipeMaxPayload || size > payload.size() - sizeof(h)) {
    return absl::DataLossError(absl::StrCat("pipe packet claims ", size, " bytes; ",
                                            payload.size() - sizeof(h), " present"));
  }
  if (frame.bytes_consumed > size) {
    return absl::DataLossError(absl::StrCat("partial pipe packet consumed ", frame.bytes_consumed,
                                            " of ", size, " bytes"));
  }
  frame.type = static_cast<wire::PipePacketType>(h.packet_type);
  frame.data = payload.subspan(sizeof(h), size);
  return frame;
}

}  // namespace kmcl
