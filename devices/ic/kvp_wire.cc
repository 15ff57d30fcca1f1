#include "devices/ic/kvp_wire.h"

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kmcl::devices::ic {

namespace {

// Offsets of struct hv_kvp_exchg_msg_value fields relative to its start.
constexpr size_t kTypeAt = 0, kKeySizeAt = 4, kValueSizeAt = 8, kKeyAt = 12,
                 kValueAt = 12 + kKvpMaxKeyBytes;

// Where the exchange struct starts in the body for GET/SET and ENUMERATE.
size_t ExchangeOffset(uint8_t op) { return op == kKvpOpEnumerate ? 8 : 4; }

void AppendUtf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace

size_t KvpBodySize(uint8_t operation) {
  switch (operation) {
    case kKvpOpGet:
    case kKvpOpSet:
      return kKvpGetSetBodySize;
    case kKvpOpDelete:
      return kKvpDeleteBodySize;
    case kKvpOpEnumerate:
      return kKvpEnumerateBodySize;
    default:
      return 0;
  }
}

absl::StatusOr<Bytes> EncodeKvpBody(const KvpBody& body) {
  const size_t size = KvpBodySize(body.operation);
  if (size == 0) {
    return absl::InvalidArgumentError(absl::StrCat("KVP operation ", body.operation, " is not 0..3"));
  }
  if (body.key.size() > kKvpMaxKeyBytes || body.value.size() > kKvpMaxValueBytes) {
    return absl::InvalidArgumentError(absl::StrCat("KVP key/value of ", body.key.size(), "/",
                                                   body.value.size(), " bytes exceed 512/2048"));
  }
  Bytes out(size, 0);
  out[0] = body.operation;
  out[1] = body.pool;
  if (body.operation == kKvpOpDelete) {
    PutU32(out.data() + 4, static_cast<uint32_t>(body.key.size()));
    if (!body.key.empty()) std::memcpy(out.data() + 8, body.key.data(), body.key.size());
    return out;
  }
  if (body.operation == kKvpOpEnumerate) PutU32(out.data() + 4, body.index);
  uint8_t* x = out.data() + ExchangeOffset(body.operation);
  PutU32(x + kTypeAt, body.value_type);
  PutU32(x + kKeySizeAt, static_cast<uint32_t>(body.key.size()));
  PutU32(x + kValueSizeAt, static_cast<uint32_t>(body.value.size()));
  if (!body.key.empty()) std::memcpy(x + kKeyAt, body.key.data(), body.key.size());
  if (!body.value.empty()) std::memcpy(x + kValueAt, body.value.data(), body.value.size());
  return out;
}

absl::StatusOr<KvpBody> DecodeKvpBody(std::span<const uint8_t> body) {
  if (body.size() < kKvpHeaderSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("KVP body of ", body.size(), " bytes has no 4-byte hv_kvp_hdr"));
  }
  KvpBody out;
  out.operation = body[0];
  out.pool = body[1];
  const size_t need = KvpBodySize(out.operation);
  if (need == 0) {
    return absl::UnimplementedError(absl::StrCat("KVP operation ", out.operation, " is not emulated"));
  }
  if (body.size() < need) {
    return absl::InvalidArgumentError(absl::StrCat("KVP operation ", out.operation, " needs ", need,
                                                   " body bytes, got ", body.size()));
  }
  if (out.pool >= kKvpPoolCount) {
    return absl::InvalidArgumentError(absl::StrCat("KVP pool ", out.pool, " is not 0..4"));
  }
  if (out.operation == kKvpOpDelete) {
    const uint32_t key_size = GetU32(body.data() + 4);
    if (key_size > kKvpMaxKeyBytes) {
      return absl::InvalidArgumentError(absl::StrCat("KVP key_size ", key_size, " exceeds 512"));
    }
    out.key.assign(body.data() + 8, body.data() + 8 + key_size);
    return out;
  }
  if (out.operation == kKvpOpEnumerate) out.index = GetU32(body.data() + 4);
  const uint8_t* x = body.data() + ExchangeOffset(out.operation);
  out.value_type = GetU32(x + kTypeAt);
  const uint32_t key_size = GetU32(x + kKeySizeAt);
  const uint32_t value_size = GetU32(x + kValueSizeAt);
  if (key_size > kKvpMaxKeyBytes || value_size > kKvpMaxValueBytes) {
    return absl::InvalidArgumentError(absl::StrCat("KVP key_size/value_size ", key_size, "/",
                                                   value_size, " exceed 512/2048"));
  }
  out.key.assign(x + kKeyAt, x + kKeyAt + key_size);
  out.value.assign(x + kValueAt, x + kValueAt + value_size);
  return out;
}

absl::StatusOr<Bytes> EncodeKvpString(std::string_view utf8, size_t max_bytes) {
  Bytes out;
  auto unit = [&out](uint32_t u) {
    out.push_back(static_cast<uint8_t>(u));
    out.push_back(static_cast<uint8_t>(u >> 8));
  };
  const auto* s = reinterpret_cast<const unsigned char*>(utf8.data());
  for (size_t i = 0; i < utf8.size();) {
    uint32_t cp;
    size_t n;
    if (s[i] < 0x80) {
      cp = s[i], n = 1;
    } else if ((s[i] & 0xE0) == 0xC0) {
      cp = s[i] & 0x1F, n = 2;
    } else if ((s[i] & 0xF0) == 0xE0) {
      cp = s[i] & 0x0F, n = 3;
    } else if ((s[i] & 0xF8) == 0xF0) {
      cp = s[i] & 0x07, n = 4;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("invalid UTF-8 at byte ", i));
    }
    if (i + n > utf8.size()) return absl::InvalidArgumentError("truncated UTF-8 sequence");
    for (size_t k = 1; k < n; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return absl::InvalidArgumentError(absl::StrCat("invalid UTF-8 at byte ", i + k));
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    const bool overlong = (n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000);
    if (overlong || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) || cp == 0) {
      return absl::InvalidArgumentError(absl::StrCat("invalid code point in UTF-8 at byte ", i));
    }
    if (cp >= 0x10000) {
      unit(0xD800 + ((cp - 0x10000) >> 10));
      unit(0xDC00 + ((cp - 0x10000) & 0x3FF));
    } else {
      unit(cp);
    }
    i += n;
  }
  unit(0);
  if (out.size() > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        utf8.size(), " bytes of UTF-8 take ", out.size(),
        " bytes as UTF-16 with the terminator; the limit is ", max_bytes, " bytes (",
        max_bytes / 2 - 1, " UTF-16 units: as many ASCII characters)"));
  }
  return out;
}

absl::StatusOr<std::string> DecodeKvpString(std::span<const uint8_t> utf16) {
  if (utf16.size() % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("UTF-16 string of odd size ", utf16.size()));
  }
  std::string out;
  for (size_t i = 0; i + 1 < utf16.size(); i += 2) {
    uint32_t u = GetU16(utf16.data() + i);
    if (u == 0) break;
    if (u >= 0xD800 && u <= 0xDBFF) {
      if (i + 3 >= utf16.size()) return absl::InvalidArgumentError("unpaired high surrogate");
      uint32_t low = GetU16(utf16.data() + i + 2);
      if (low < 0xDC00 || low > 0xDFFF) return absl::InvalidArgumentError("unpaired high surrogate");
      u = 0x10000 + ((u - 0xD800) << 10) + (low - 0xDC00);
      i += 2;
    } else if (u >= 0xDC00 && u <= 0xDFFF) {
      return absl::InvalidArgumentError("unpaired low surrogate");
    }
    AppendUtf8(out, u);
  }
  return out;
}

absl::StatusOr<std::string> KvpValueText(uint32_t value_type, std::span<const uint8_t> value) {
  switch (value_type) {
    case kKvpRegSz:
      return DecodeKvpString(value);
    case kKvpRegU32:
      if (value.size() < 4) return absl::InvalidArgumentError("REG_U32 value shorter than 4 bytes");
      return absl::StrCat(GetU32(value.data()));
    case kKvpRegU64:
      if (value.size() < 8) return absl::InvalidArgumentError("REG_U64 value shorter than 8 bytes");
      return absl::StrCat(GetU64(value.data()));
    default:
      return absl::InvalidArgumentError(absl::StrCat("KVP value type ", value_type,
                                                     " is not REG_SZ, REG_U32 or REG_U64"));
  }
}

}  // namespace kmcl::devices::ic
