// bench/kmcld_memory.h: kmcld_bench's memory phase: kmcld's resident memory
// (VmRSS) right after start, with `channels` channels offered and opened,
// and with both endpoints of each attached by an idle AttachedStream of the
// C++ client library. Prints a Markdown table.
//
//   if (!MemoryPhase(kmcld_binary, 500, "default", 0, 200)) { ... }
//
// Starts a fresh kmcld child of its own (KmcldChild) and stops it. Thread-
// compatible: call from one thread.
#ifndef KMCLD_BENCH_KMCLD_MEMORY_H_
#define KMCLD_BENCH_KMCLD_MEMORY_H_

#include <cstdint>
#include <string>

namespace kmcld::bench {

// `mmio_megabytes`: each offer's MMIO space (a partition with a window that
// fits is created when it matters); `streams_per_connection`: idle streams
// per client connection (kmcld allows 256 per connection). False when it
// could not measure what was asked (the output says why).
bool MemoryPhase(const std::string& binary, int channels, const std::string& partition,
                 uint32_t mmio_megabytes, int streams_per_connection);

}  // namespace kmcld::bench

#endif  // KMCLD_BENCH_KMCLD_MEMORY_H_
