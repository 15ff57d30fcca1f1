#!/usr/bin/env bash
# tools/run_tests.sh [CONFIG...]: builds and runs every test, then prints one
# line 'N passed, N failed' summed over all Bazel invocations from their real
# results (test.xml per target; build failures, crashes and timeouts count as
# failures).
#
# Without arguments it runs the default suite: every target under //... in
# the plain configuration, then the libFuzzer targets for a few seconds each
# under clang (--config=fuzz). With arguments (asan, ubsan, tsan) it runs
# //... under each of those configurations instead.
set -uo pipefail
cd "$(dirname "$0")/.."

configs=("$@")
((${#configs[@]})) || configs=(plain fuzz)

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
    *) echo "run_tests: unknown configuration '$config'" >&2; exit 2 ;;
  esac
  echo "=== bazel test ${args[*]}"
  bazel test --keep_going "${args[@]}" 2>&1 | tee "$log"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || rc=1
  # Count right away: bazel-testlogs points at the configuration just run.
  line=$(python3 tools/test_summary.py "$log" | tail -n 1)
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
