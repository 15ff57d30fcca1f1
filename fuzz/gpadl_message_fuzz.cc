// libFuzzer target: GPADL_HEADER/GPADL_BODY reassembly from arbitrary
// messages. The input is a sequence of messages, each prefixed by a one-byte
// length; the first is treated as the header. Whatever the bytes, assembly
// must end in ranges that pass validation or in a clear error. Valid results
// must re-encode to messages that assemble to the same ranges.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "fuzz/fuzz_input.h"
#include "kmcl_core/wire/gpadl_messages.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kmcl::fuzz::FuzzInput in(data, size);
  const uint64_t guest_pages = 1 + in.Take<uint32_t>() % (1u << 24);
  auto header = in.TakeBytes(in.Take<uint8_t>());
  auto assembler = kmcl::GpadlAssembler::FromHeader(header, guest_pages);
  if (!assembler.ok()) return 0;
  while (in.remaining() > 0 && !assembler->complete()) {
    auto body = in.TakeBytes(in.Take<uint8_t>());
    if (!assembler->AddBody(body).ok()) return 0;
  }
  auto ranges = assembler->Finish();
  if (!ranges.ok()) return 0;
  if (!kmcl::ValidateGpaRanges(*ranges, guest_pages).ok()) std::abort();
  auto again = kmcl::EncodeGpadlMessages(assembler->child_relid(), assembler->gpadl_id(), *ranges);
  if (!again.ok()) std::abort();  // it fit in the messages it came from
  auto round = kmcl::GpadlAssembler::FromHeader((*again)[0], guest_pages);
  if (!round.ok()) std::abort();
  for (size_t i = 1; i < again->size(); ++i) {
    if (!round->AddBody((*again)[i]).ok()) std::abort();
  }
  auto back = round->Finish();
  if (!back.ok() || *back != *ranges) std::abort();
  return 0;
}
