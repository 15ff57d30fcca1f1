#include "kmcl_core/base/guid.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kmcl {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

absl::StatusOr<Guid> Guid::Parse(absl::string_view text) {
  absl::string_view t = text;
  if (t.size() == 38 && t.front() == '{' && t.back() == '}') t = t.substr(1, 36);
  auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", text, "' is not a GUID (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"));
  };
  if (t.size() != 36 || t[8] != '-' || t[13] != '-' || t[18] != '-' || t[23] != '-') {
    return bad();
  }
  uint8_t bytes[16];
  int n = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) continue;
    int hi = HexValue(t[i]), lo = HexValue(t[i + 1]);
    if (hi < 0 || lo < 0) return bad();
    bytes[n++] = static_cast<uint8_t>(hi << 4 | lo);
    ++i;
  }
  Guid g;
  g.data1 = uint32_t{bytes[0]} << 24 | uint32_t{bytes[1]} << 16 | uint32_t{bytes[2]} << 8 | bytes[3];
  g.data2 = static_cast<uint16_t>(bytes[4] << 8 | bytes[5]);
  g.data3 = static_cast<uint16_t>(bytes[6] << 8 | bytes[7]);
  for (int i = 0; i < 8; ++i) g.data4[i] = bytes[8 + i];
  return g;
}

Guid Guid::Random() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  Guid g;
  uint64_t a = rng(), b = rng();
  g.data1 = static_cast<uint32_t>(a);
  g.data2 = static_cast<uint16_t>(a >> 32);
  g.data3 = static_cast<uint16_t>(((a >> 48) & 0x0FFF) | 0x4000);  // version 4
  for (int i = 0; i < 8; ++i) g.data4[i] = static_cast<uint8_t>(b >> (8 * i));
  g.data4[0] = static_cast<uint8_t>((g.data4[0] & 0x3F) | 0x80);  // variant 1
  return g;
}

std::string Guid::ToString() const {
  return absl::StrFormat("%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x", data1, data2, data3,
                         data4[0], data4[1], data4[2], data4[3], data4[4], data4[5], data4[6],
                         data4[7]);
}

}  // namespace kmcl
