// tests/short_temp_dir.h: a private temporary folder with a short path.
//
// Unix socket paths are limited to 107 bytes and Bazel's TEST_TMPDIR is often
// longer, so tests that create sockets use a folder under /tmp instead. The
// folder and everything in it is removed when the object dies.
//
// Thread-compatible.
#ifndef KMCLD_TESTS_SHORT_TEMP_DIR_H_
#define KMCLD_TESTS_SHORT_TEMP_DIR_H_

#include <string>

namespace kmcld::testing {

class ShortTempDir {
 public:
  ShortTempDir();   // aborts the test binary if /tmp is unusable
  ~ShortTempDir();  // removes the folder recursively
  ShortTempDir(const ShortTempDir&) = delete;
  ShortTempDir& operator=(const ShortTempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string Join(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace kmcld::testing

#endif  // KMCLD_TESTS_SHORT_TEMP_DIR_H_
