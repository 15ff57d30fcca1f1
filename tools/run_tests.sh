#!/usr/bin/env bash
# tools/run_tests.sh [CONFIG...]: builds and runs every test, then prints one
# line 'N passed, N failed' summed over all Bazel invocations from their real
# results (test.xml per target; build failures, crashes and timeouts count as
# failures).
#
# Without arguments it runs the default suite: every target under //... in
# the plain configuration, then the libFuzzer targets for a few seconds each
# under clang (--config=fuzz), then clang's thread-safety analysis over every
# target (--config=tsa: a build, counted as one check that passes when the
# build is clean), then the layer check (layers: a bazel query per
# kmcl_core layer, one check that passes when no package depends on a higher
# one; kmcl_core/layers.bzl). With arguments (asan, ubsan, tsan, tsa,
# layers) it runs those configurations instead.
set -uo pipefail
cd "$(dirname "$0")/.."

configs=("$@")
((${#configs[@]})) || configs=(plain fuzz tsa layers)

logdir=$(mktemp -d /tmp/kmcld-tests.XXXXXX)
total_passed=0
total_failed=0
rc=0

for config in "${configs[@]}"; do
  log="$logdir/$config.log"
  case "$config" in
    plain) args=(//...) ;;
    fuzz) args=(--config=fuzz //fuzz:all) ;;
    asan|ubsan|tsan) args=(--config="$config" //...) ;;
    tsa) args=(--config=tsa //...) ;;
    layers) args=() ;;
    *) echo "run_tests: unknown configuration '$config'" >&2; exit 2 ;;
  esac
  if [[ $config == layers ]]; then
    echo "=== kmcl_core layers: no package may depend on a higher one"
    line="1 passed, 0 failed"
    for layer in $(python3 tools/check_layers.py --list); do
      if ! bazel query "deps(//kmcl_core/$layer/...) intersect //kmcl_core/..." \
          --output package 2>>"$log" | python3 tools/check_layers.py "$layer"; then
        line="0 passed, 1 failed"
        rc=1
      fi
    done
  elif [[ $config == tsa ]]; then
    # Build only: the analysis is a compiler check; no test runs under it.
    echo "=== bazel build ${args[*]}"
    if bazel build --keep_going "${args[@]}" 2>&1 | tee "$log"; then
      line="1 passed, 0 failed"
    else
      line="0 passed, 1 failed"
      rc=1
    fi
  else
    echo "=== bazel test ${args[*]}"
    bazel test --keep_going "${args[@]}" 2>&1 | tee "$log"
    [[ ${PIPESTATUS[0]} -eq 0 ]] || rc=1
    # Count right away: bazel-testlogs points at the configuration just run.
    line=$(python3 tools/test_summary.py "$log" | tail -n 1)
  fi
  echo "=== $config: $line"
  read -r p _ f _ <<<"$line"
  total_passed=$((total_passed + p))
  total_failed=$((total_failed + f))
done

[[ -n "${CI:-}" ]] && bazel shutdown >/dev/null 2>&1
rm -rf "$logdir"
((total_failed == 0)) || rc=1
echo "$total_passed passed, $total_failed failed"
exit $rc
