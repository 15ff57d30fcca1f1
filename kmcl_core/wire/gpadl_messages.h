// kmcl_core/wire/gpadl_messages.h: GPADL_HEADER and GPADL_BODY channel messages.
//
// A GPADL's range list (for each range a {byte_count, byte_offset} word and
// its PFNs) is a sequence of 8-byte words. The guest sends the first 27 words
// in GPADL_HEADER and the rest in GPADL_BODY messages of up to 28 words, each
// message at most 240 bytes (MAX_SIZE_CHANNEL_MESSAGE in Linux
// drivers/hv/hyperv_vmbus.h); the host answers GPADL_CREATED only after the
// last body.
//
// EncodeGpadlMessages is the guest side. GpadlAssembler is the host side: it
// treats every message as hostile (sizes, counts, ids, offsets, PFNs against
// guest memory) and either yields the validated ranges or a clear error.
//
// Thread-compatible.
#ifndef KMCLD_KMCL_CORE_WIRE_GPADL_MESSAGES_H_
#define KMCLD_KMCL_CORE_WIRE_GPADL_MESSAGES_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kmcl_core/wire/gpa_range.h"

namespace kmcl {

using ChannelMessage = std::vector<uint8_t>;

// The messages describing `ranges` as GPADL `gpadl_id` of channel
// `child_relid`: one GPADL_HEADER, then GPADL_BODY messages as needed.
// INVALID_ARGUMENT for invalid ranges or a range list above the 65535 bytes
// that range_buflen can express.
absl::StatusOr<std::vector<ChannelMessage>> EncodeGpadlMessages(
    uint32_t child_relid, uint32_t gpadl_id, std::span<const GpaRange> ranges);

class GpadlAssembler {
 public:
  // Starts from a GPADL_HEADER. `guest_page_count` bounds every PFN.
  static absl::StatusOr<GpadlAssembler> FromHeader(std::span<const uint8_t> message,
                                                   uint64_t guest_page_count);

  // Appends a GPADL_BODY for the same GPADL.
  absl::Status AddBody(std::span<const uint8_t> message);

  bool complete() const { return words_.size() == total_words_; }
  uint32_t child_relid() const { return child_relid_; }
  uint32_t gpadl_id() const { return gpadl_id_; }

  // The validated ranges. FAILED_PRECONDITION if bodies are still missing.
  absl::StatusOr<std::vector<GpaRange>> Finish() const;

 private:
  GpadlAssembler() = default;
  uint32_t child_relid_ = 0;
  uint32_t gpadl_id_ = 0;
  uint32_t range_count_ = 0;
  size_t total_words_ = 0;
  uint64_t guest_page_count_ = 0;
  std::vector<uint64_t> words_;
};

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_WIRE_GPADL_MESSAGES_H_
