// kmcl_core/base/guid.h: a GUID in Windows' binary layout (Data1 u32, Data2 u16,
// Data3 u16 little-endian, then 8 bytes), as VMBus offers carry interface
// type and instance ids, with the canonical text form
// "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx".
#ifndef KMCLD_KMCL_CORE_BASE_GUID_H_
#define KMCLD_KMCL_CORE_BASE_GUID_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kmcl {

struct Guid {
  uint32_t data1 = 0;
  uint16_t data2 = 0;
  uint16_t data3 = 0;
  uint8_t data4[8] = {};

  // Parses the canonical form, case-insensitive, optionally in braces.
  static absl::StatusOr<Guid> Parse(absl::string_view text);
  // A random (version 4) GUID.
  static Guid Random();

  std::string ToString() const;  // lower case, no braces
  bool IsNull() const { return *this == Guid(); }
  friend bool operator==(const Guid&, const Guid&) = default;
  friend auto operator<=>(const Guid&, const Guid&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const Guid& g) {
    return H::combine(std::move(h), g.data1, g.data2, g.data3,
                      absl::string_view(reinterpret_cast<const char*>(g.data4), 8));
  }
};
static_assert(sizeof(Guid) == 16);

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_BASE_GUID_H_
