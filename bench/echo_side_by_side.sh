#!/usr/bin/env bash
# bench/echo_side_by_side.sh: the C echo demo of two or more builds, run in
# alternation, with each build's median round trips per second and, for
# every two builds, the median of their paired ratios.
#
# Alternating runs (A B C A B C ...) put each build through the same spells
# of a shared machine; the paired ratio compares the runs made next to each
# other, which moves less than a ratio of medians when the machine's speed
# drifts during the session. docs/performance.md records what it printed.
#
# Usage: bench/echo_side_by_side.sh [-n ROUNDS] [-p PACKETS] NAME=BINARY NAME=BINARY...
#   e.g. old=/tmp/old/bazel-bin/examples/echo_demo new=bazel-bin/examples/echo_demo
# Build each binary with `bazel build -c opt //examples:echo_demo` in a
# worktree of the commit to compare (docs/performance.md says which).
set -euo pipefail

rounds=15
packets=500000
while getopts "n:p:" opt; do
  case "$opt" in
    n) rounds=$OPTARG ;;
    p) packets=$OPTARG ;;
    *) echo "usage: $0 [-n ROUNDS] [-p PACKETS] NAME=BINARY NAME=BINARY..." >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if (($# < 2)); then
  echo "usage: $0 [-n ROUNDS] [-p PACKETS] NAME=BINARY NAME=BINARY..." >&2
  exit 2
fi
for spec in "$@"; do
  if [[ $spec != *=* || ! -x ${spec#*=} ]]; then
    echo "echo_side_by_side: '$spec' is not NAME=an executable echo_demo" >&2
    exit 2
  fi
done

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for ((round = 1; round <= rounds; round++)); do
  for spec in "$@"; do
    name=${spec%%=*}
    out=$("${spec#*=}" --packets="$packets")
    rate=$(grep -o '([0-9]* round trips/s)' <<<"$out" | tr -dc '0-9' || true)
    if [[ -z $rate ]]; then
      echo "echo_side_by_side: $name printed no rate: $out" >&2
      exit 1
    fi
    echo "$round $name $rate" >>"$results"
  done
done

python3 - "$results" "${@%%=*}" <<'PY'
import collections
import statistics
import sys

path, names = sys.argv[1], sys.argv[2:]
runs = collections.defaultdict(dict)
for line in open(path):
    rnd, name, rate = line.split()
    runs[int(rnd)][name] = float(rate)
rounds = sorted(runs)
print(f"{len(rounds)} alternating rounds; round trips/s")
for name in names:
    rates = sorted(runs[r][name] for r in rounds)
    print(f"  {name:12s} median {statistics.median(rates):10,.0f}  range {rates[0]:10,.0f} - {rates[-1]:10,.0f}")
for i, base in enumerate(names):
    for name in names[i + 1:]:
        ratios = [runs[r][name] / runs[r][base] for r in rounds]
        ahead = sum(x >= 1 for x in ratios)
        print(f"  {name} / {base}: paired median {statistics.median(ratios):.2f}x "
              f"(range {min(ratios):.2f}-{max(ratios):.2f}; ahead in {ahead} of {len(ratios)} rounds)")
PY
