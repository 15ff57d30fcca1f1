// fuzz/fuzz_driver.cc: runs a libFuzzer target without libFuzzer, for
// toolchains that lack it (the default gcc build). Each file named on the
// command line is run once; then --iterations inputs (default 20000) from a
// fixed-seed generator of random lengths and bytes, so the run is
// deterministic. Under --config=fuzz the real libFuzzer main is linked
// instead and this file is not used.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  long iterations = 20000;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--iterations=", 13) == 0) {
      iterations = std::atol(argv[i] + 13);
      continue;
    }
    std::ifstream f(argv[i], std::ios::binary);
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), {});
    LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
  }
  std::mt19937_64 rng(20261121);
  std::vector<uint8_t> input;
  for (long i = 0; i < iterations; ++i) {
    input.resize(rng() % 4096);
    for (auto& b : input) b = static_cast<uint8_t>(rng());
    LLVMFuzzerTestOneInput(input.data(), input.size());
  }
  std::printf("fuzz_driver: %ld generated inputs ran cleanly\n", iterations);
  return 0;
}
