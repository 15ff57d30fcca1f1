// clients/cpp/kmclctl/struct_access.h: reads and writes the fields of a
// google.protobuf.Struct through protobuf's reflection instead of its
// inline map accessors.
//
// Why: protobuf 3.21's MapFieldBase gains two members when compiled with
// -fsanitize=thread (map_field.h), so code built under --config=tsan and
// Debian's libprotobuf (built without it) disagree on where a Struct's map
// lives, and the inline accessors crash. Reflection runs inside libprotobuf
// and sees its own layout; Value, ListValue and the entries themselves have
// no map fields and are safe to use directly.
//
// Thread-compatible: pure functions over the messages passed in.
#ifndef KMCLD_CLIENTS_CPP_KMCLCTL_STRUCT_ACCESS_H_
#define KMCLD_CLIENTS_CPP_KMCLCTL_STRUCT_ACCESS_H_

#include <string>
#include <utility>
#include <vector>

#include "google/protobuf/struct.pb.h"

namespace kmclctl {

// The (key, value) pairs of `s`, in no particular order.
std::vector<std::pair<std::string, const google::protobuf::Value*>> StructFields(
    const google::protobuf::Struct& s);

// Adds `key` with `value` to `s` (the key must not be there yet).
void AddStructField(google::protobuf::Struct* s, const std::string& key,
                    const google::protobuf::Value& value);

}  // namespace kmclctl

#endif  // KMCLD_CLIENTS_CPP_KMCLCTL_STRUCT_ACCESS_H_
