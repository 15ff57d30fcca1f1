// tools/build_info.h: what kmcld and kmclctl were built from, for
// DiagnosticsService.GetVersion and `kmclctl version`.
//
//   kmcl::build::Version()    "0.10.0": the one version constant of the tree
//   kmcl::build::GitCommit()  the commit, "-dirty" if the tree had changes;
//                             "" unless built with `bazel build --stamp`
//
// The commit comes from Bazel's workspace status (tools/workspace_status.sh,
// STABLE_GIT_COMMIT) through a stamped genrule (tools/BUILD). Unstamped
// builds, the default, leave it empty so that a new commit does not rebuild
// and retest everything that links this.
//
// Thread-safe: constants.
#ifndef KMCLD_TOOLS_BUILD_INFO_H_
#define KMCLD_TOOLS_BUILD_INFO_H_

#include <string_view>

namespace kmcl::build {

std::string_view Version();
std::string_view GitCommit();

}  // namespace kmcl::build

#endif  // KMCLD_TOOLS_BUILD_INFO_H_
