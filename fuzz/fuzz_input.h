// fuzz/fuzz_input.h: a cursor over a fuzzer's input bytes, so targets can
// draw structured values (sizes, selectors) from it. Running out yields
// zeros, so every input is usable.
#ifndef KMCLD_FUZZ_FUZZ_INPUT_H_
#define KMCLD_FUZZ_FUZZ_INPUT_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace kmcl::fuzz {

class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  template <typename T>
  T Take() {
    T value{};
    size_t n = sizeof(T) < remaining() ? sizeof(T) : remaining();
    std::memcpy(&value, data_ + pos_, n);
    pos_ += n;
    return value;
  }
  std::span<const uint8_t> TakeBytes(size_t n) {
    n = n < remaining() ? n : remaining();
    std::span<const uint8_t> out(data_ + pos_, n);
    pos_ += n;
    return out;
  }
  size_t remaining() const { return size_ - pos_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace kmcl::fuzz

#endif  // KMCLD_FUZZ_FUZZ_INPUT_H_
