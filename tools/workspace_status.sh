#!/bin/sh
# Bazel's workspace status command (.bazelrc): the git commit kmcld and
# kmclctl report (GetVersion, `kmclctl version`) when built with --stamp.
# Must always succeed: outside a git checkout it prints nothing.
commit=$(git rev-parse HEAD 2>/dev/null) || exit 0
if ! git diff --quiet HEAD -- 2>/dev/null; then commit="${commit}-dirty"; fi
echo "STABLE_GIT_COMMIT ${commit}"
