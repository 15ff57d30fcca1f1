#include "tests/short_temp_dir.h"

#include <stdlib.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

namespace kmcld::testing {

ShortTempDir::ShortTempDir() {
  std::string templ = "/tmp/kmcld-test.XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr) {
    std::perror("mkdtemp /tmp/kmcld-test.XXXXXX");
    std::abort();
  }
  path_ = templ;
}

ShortTempDir::~ShortTempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

}  // namespace kmcld::testing
