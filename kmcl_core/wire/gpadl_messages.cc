#include "kmcl_core/wire/gpadl_messages.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kmcl_core/base/status_macros.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl {
namespace {

using wire::ChannelMessageType;

template <typename T>
void Append(ChannelMessage& msg, const T& value) {
  const auto* p = reinterpret_cast<const uint8_t*>(&value);
  msg.insert(msg.end(), p, p + sizeof(T));
}

void AppendWords(ChannelMessage& msg, std::span<const uint64_t> words) {
  const auto* p = reinterpret_cast<const uint8_t*>(words.data());
  msg.insert(msg.end(), p, p + words.size_bytes());
}

uint32_t MessageType(std::span<const uint8_t> message) {
  uint32_t type = 0;
  std::memcpy(&type, message.data(), sizeof(type));
  return type;
}

}  // namespace

absl::StatusOr<std::vector<ChannelMessage>> EncodeGpadlMessages(
    uint32_t child_relid, uint32_t gpadl_id, std::span<const GpaRange> ranges) {
  RETURN_IF_ERROR(ValidateGpaRanges(ranges, UINT64_MAX));
  std::vector<uint64_t> words;
  for (const GpaRange& r : ranges) {
    words.push_back(uint64_t{r.byte_count} | (uint64_t{r.byte_offset} << 32));
    words.insert(words.end(), r.pfns.begin(), r.pfns.end());
  }
  if (words.size() * 8 > 0xFFFF || ranges.size() > 0xFFFF) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GPADL range list of ", words.size() * 8,
        " bytes exceeds the 65535 bytes range_buflen can describe (about 32 MiB of pages)"));
  }
  std::vector<ChannelMessage> messages;
  const size_t in_header = std::min<size_t>(words.size(), wire::kGpadlHeaderMaxWords);
  {
    ChannelMessage msg;
    wire::GpadlHeaderMessage h{};
    h.header.message_type = static_cast<uint32_t>(ChannelMessageType::kGpadlHeader);
    h.child_relid = child_relid;
    h.gpadl = gpadl_id;
    h.range_buflen = static_cast<uint16_t>(words.size() * 8);
    h.range_count = static_cast<uint16_t>(ranges.size());
    Append(msg, h);
    AppendWords(msg, std::span(words).subspan(0, in_header));
    messages.push_back(std::move(msg));
  }
  uint32_t number = 1;
  for (size_t at = in_header; at < words.size(); at += wire::kGpadlBodyMaxWords) {
    size_t n = std::min<size_t>(words.size() - at, wire::kGpadlBodyMaxWords);
    ChannelMessage msg;
    wire::GpadlBodyMessage b{};
    b.header.message_type = static_cast<uint32_t>(ChannelMessageType::kGpadlBody);
    b.message_number = number++;
    b.gpadl = gpadl_id;
    Append(msg, b);
    AppendWords(msg, std::span(words).subspan(at, n));
    messages.push_back(std::move(msg));
  }
  return messages;
}

absl::StatusOr<GpadlAssembler> GpadlAssembler::FromHeader(std::span<const uint8_t> message,
                                                          uint64_t guest_page_count) {
  if (message.size() < sizeof(wire::GpadlHeaderMessage) ||
      message.size() > wire::kMaxChannelMessageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPADL_HEADER of ", message.size(), " bytes (must be 20 to 240)"));
  }
  if (MessageType(message) != static_cast<uint32_t>(ChannelMessageType::kGpadlHeader)) {
    return absl::InvalidArgumentError(
        absl::StrCat("message type ", MessageType(message), " is not GPADL_HEADER"));
  }
  wire::GpadlHeaderMessage h;
  std::memcpy(&h, message.data(), sizeof(h));
  if (h.range_count == 0 || h.range_buflen == 0 || h.range_buflen % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("GPADL ", h.gpadl, ": ", h.range_count,
                                                   " ranges in ", h.range_buflen,
                                                   " bytes is not a valid range list"));
  }
  const size_t data = message.size() - sizeof(h);
  if (data % 8 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPADL ", h.gpadl, ": header data is not whole 8-byte words"));
  }
  GpadlAssembler a;
  a.child_relid_ = h.child_relid;
  a.gpadl_id_ = h.gpadl;
  a.range_count_ = h.range_count;
  a.total_words_ = h.range_buflen / 8;
  a.guest_page_count_ = guest_page_count;
  if (data / 8 > a.total_words_) {
    return absl::InvalidArgumentError(absl::StrCat("GPADL ", h.gpadl, ": header carries ",
                                                   data / 8, " words, more than range_buflen ",
                                                   h.range_buflen, " allows"));
  }
  a.words_.resize(data / 8);
  std::memcpy(a.words_.data(), message.data() + sizeof(h), data);
  return a;
}

absl::Status GpadlAssembler::AddBody(std::span<const uint8_t> message) {
  if (message.size() < sizeof(wire::GpadlBodyMessage) ||
      message.size() > wire::kMaxChannelMessageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPADL_BODY of ", message.size(), " bytes (must be 16 to 240)"));
  }
  if (MessageType(message) != static_cast<uint32_t>(ChannelMessageType::kGpadlBody)) {
    return absl::InvalidArgumentError(
        absl::StrCat("message type ", MessageType(message), " is not GPADL_BODY"));
  }
  wire::GpadlBodyMessage b;
  std::memcpy(&b, message.data(), sizeof(b));
  if (b.gpadl != gpadl_id_) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPADL_BODY for GPADL ", b.gpadl, " while assembling ", gpadl_id_));
  }
  const size_t data = message.size() - sizeof(b);
  if (data % 8 != 0 || data == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPADL ", gpadl_id_, ": body data is not whole 8-byte words"));
  }
  if (words_.size() + data / 8 > total_words_) {
    return absl::InvalidArgumentError(absl::StrCat("GPADL ", gpadl_id_,
                                                   ": bodies overflow the range list of ",
                                                   total_words_ * 8, " bytes"));
  }
  size_t at = words_.size();
  words_.resize(at + data / 8);
  std::memcpy(words_.data() + at, message.data() + sizeof(b), data);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<GpaRange>> GpadlAssembler::Finish() const {
  if (!complete()) {
    return absl::FailedPreconditionError(absl::StrCat("GPADL ", gpadl_id_, ": ", words_.size(),
                                                      " of ", total_words_,
                                                      " range-list words received"));
  }
  std::vector<GpaRange> ranges(range_count_);
  size_t at = 0;
  for (uint32_t i = 0; i < range_count_; ++i) {
    if (at >= words_.size()) {
      return absl::InvalidArgumentError(absl::StrCat("GPADL ", gpadl_id_, ": range list ends at range ",
                                                     i, " of ", range_count_));
    }
    GpaRange& r = ranges[i];
    r.byte_count = static_cast<uint32_t>(words_[at]);
    r.byte_offset = static_cast<uint32_t>(words_[at] >> 32);
    ++at;
    uint64_t pages = r.byte_offset < wire::kPageSize
                         ? wire::PagesSpanned(r.byte_offset, r.byte_count)
                         : 0;
    if (pages > words_.size() - at) {
      return absl::InvalidArgumentError(absl::StrCat("GPADL ", gpadl_id_, ": range ", i,
                                                     " needs ", pages,
                                                     " PFNs past the end of the range list"));
    }
    r.pfns.assign(words_.begin() + at, words_.begin() + at + pages);
    at += pages;
  }
  if (at != words_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("GPADL ", gpadl_id_, ": ",
                                                   words_.size() - at,
                                                   " words left over after the last range"));
  }
  if (absl::Status s = ValidateGpaRanges(ranges, guest_page_count_); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("GPADL ", gpadl_id_, ": ", s.message()));
  }
  return ranges;
}

}  // namespace kmcl
