#include "tools/build_info.h"

#include "tools/build_stamp.h"  // generated: KMCL_BUILD_GIT_COMMIT

namespace kmcl::build {

// The release version of kmcld and its tools: raise it here, and only here.
std::string_view Version() { return "0.10.0"; }

std::string_view GitCommit() { return KMCL_BUILD_GIT_COMMIT; }

}  // namespace kmcl::build
