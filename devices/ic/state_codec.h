// devices/ic/state_codec.h: a small little-endian writer and bounds-checked
// reader for the IC services' saved state (the VSP's and VSC's own part of
// a partition save; KMCL's channel state is saved by kmcl_core). Every read
// past the end or any malformed length makes the reader fail; callers check
// ok() once at the end and return INVALID_ARGUMENT.
//
// Threading: plain values; one thread at a time.
#ifndef KMCLD_DEVICES_IC_STATE_CODEC_H_
#define KMCLD_DEVICES_IC_STATE_CODEC_H_

#include <cstdint>
#include <string>
#include <optional>
#include <string_view>

#include "devices/ic/negotiation.h"

namespace kmcl::devices::ic {

class StateWriter {
 public:
  void U8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void U16(uint16_t v) { Fixed(v, 2); }
  void U32(uint32_t v) { Fixed(v, 4); }
  void U64(uint64_t v) { Fixed(v, 8); }
  void Str(std::string_view s) {
    U32(static_cast<uint32_t>(s.size()));
    out_.append(s);
  }
  std::string Take() { return std::move(out_); }

 private:
  void Fixed(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_.push_back(static_cast<char>(v >> (8 * i)));
  }
  std::string out_;
};

class StateReader {
 public:
  explicit StateReader(std::string_view in) : in_(in) {}
  uint8_t U8() { return static_cast<uint8_t>(Fixed(1)); }
  uint16_t U16() { return static_cast<uint16_t>(Fixed(2)); }
  uint32_t U32() { return static_cast<uint32_t>(Fixed(4)); }
  uint64_t U64() { return Fixed(8); }
  std::string Str() {
    uint32_t n = U32();
    if (!ok_ || n > in_.size() - pos_) {
      ok_ = false;
      return {};
    }
    std::string s(in_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  bool ok() const { return ok_; }
  bool done() const { return ok_ && pos_ == in_.size(); }

 private:
  uint64_t Fixed(size_t n) {
    if (!ok_ || n > in_.size() - pos_) {
      ok_ = false;
      return 0;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(in_[pos_ + i])) << (8 * i);
    pos_ += n;
    return v;
  }
  std::string_view in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

// Negotiated versions (or none) as 9 bytes: a presence byte, then
// framework major/minor and message major/minor.
inline void PutVersions(StateWriter& w, const std::optional<NegotiatedVersions>& versions) {
  w.U8(versions.has_value());
  NegotiatedVersions v = versions.value_or(NegotiatedVersions{});
  for (uint16_t x : {v.framework.major, v.framework.minor, v.message.major, v.message.minor}) w.U16(x);
}
inline std::optional<NegotiatedVersions> GetVersions(StateReader& r) {
  const bool present = r.U8() != 0;
  NegotiatedVersions v;
  v.framework.major = r.U16();
  v.framework.minor = r.U16();
  v.message.major = r.U16();
  v.message.minor = r.U16();
  return present ? std::optional<NegotiatedVersions>(v) : std::nullopt;
}

}  // namespace kmcl::devices::ic

#endif  // KMCLD_DEVICES_IC_STATE_CODEC_H_
