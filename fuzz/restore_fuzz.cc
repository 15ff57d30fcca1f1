// libFuzzer target: restore of partitions and channels from arbitrary bytes.
//
// Mode 0 hands the raw input to the envelope check. Modes 1 and 2 seal the
// input as the body of a well-formed envelope (a correct CRC), so the fuzzer
// reaches the body's validation: Partition::Restore and Channel::Restore must
// either succeed or fail with a clear error, never crash, hang or touch
// anything outside what they build.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "fuzz/fuzz_input.h"
#include "kmcl_core/bus/partition.h"
#include "kmcl_core/runtime/channel.h"
#include "kmcl_core/saved/saved_blob.h"

namespace {

kmcl::Partition& Host() {
  static kmcl::Partition* partition = [] {
    kmcl::PartitionOptions o;
    o.memory_bytes = 16 << 20;
    return kmcl::Partition::Create(o)->release();
  }();
  return *partition;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kmcl::fuzz::FuzzInput in(data, size);
  const uint8_t mode = in.Take<uint8_t>() % 3;
  auto rest = in.TakeBytes(in.remaining());
  std::string bytes(reinterpret_cast<const char*>(rest.data()), rest.size());
  switch (mode) {
    case 0: {
      auto p = kmcl::Partition::Restore(bytes);
      if (p.ok()) std::abort();  // random bytes with a valid CRC: practically impossible
      break;
    }
    case 1: {
      std::string blob = kmcl::SealBlob(kmcl::saved::v1::SavedBlob::KIND_PARTITION, bytes);
      auto p = kmcl::Partition::Restore(blob);
      if (p.ok()) {
        // Whatever restored must save again.
        if (!(*p)->Save().ok()) std::abort();
      }
      break;
    }
    case 2: {
      std::string blob = kmcl::SealBlob(kmcl::saved::v1::SavedBlob::KIND_CHANNEL, bytes);
      for (kmcl::EndpointRole role : {kmcl::EndpointRole::kHost, kmcl::EndpointRole::kGuest}) {
        auto ch = kmcl::Channel::Allocate(Host(), role);
        absl::Status s = (*ch)->Restore(blob);
        if (s.ok() && !(*ch)->restored()) std::abort();
      }
      break;
    }
  }
  return 0;
}
