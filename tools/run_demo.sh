#!/usr/bin/env bash
# tools/run_demo.sh [KMCLD FLAGS...]: what `make run` does after setup.
# Builds kmcld, kmclctl and the example tools (optimised), starts kmcld on its embedded
# default partition, drives it through its own gRPC API with
# examples/remote:remote_demo (a host tool and a guest tool: offer, open,
# GPADL through a lease, echo round trips with completions, save and restore
# of the partition, with rates), then leaves kmcld running in the foreground
# so you can poke it (grpcurl, the example tools) until Ctrl-C. Meanwhile
# kmcld reports its built-in devices (the Hyper-V integration services of
# the default partition) every 2 s.
set -euo pipefail
cd "$(dirname "$0")/.."

# kmclctl too: the README's next steps use it against this kmcld.
bazel build -c opt //daemon:kmcld //clients/cpp/kmclctl //examples/remote:remote_demo
bin=$(bazel info -c opt bazel-bin 2>/dev/null)

log=$(mktemp /tmp/kmcld-run.XXXXXX)
# --demo_devices: every 2 s kmcld reports its default partition's built-in
# devices (heartbeat sequence, a KVP round trip, a time sample) beside the
# echo traffic remote_demo drives.
"$bin/daemon/kmcld" --demo_devices "$@" 2> >(tee "$log" >&2) &
kmcld=$!
trap 'kill -TERM $kmcld 2>/dev/null || true' INT TERM

# Wait for "kmcld: ready" (or for kmcld to exit), reading its own report of
# where it listens.
for _ in $(seq 1 300); do
  grep -q "kmcld: ready" "$log" && break
  kill -0 "$kmcld" 2>/dev/null || { wait "$kmcld"; exit $?; }
  sleep 0.1
done
target=$(sed -n 's/^kmcld: listening on tcp //p' "$log" | head -n 1)
[[ -n "$target" ]] || target="unix:$(sed -n 's/^kmcld: listening on unix //p' "$log" | head -n 1)"

echo "=== remote_demo against kmcld at $target" >&2
if ! "$bin/examples/remote/remote_demo" --target="$target"; then
  echo "=== remote_demo failed; kmcld keeps running (Ctrl-C stops it)" >&2
fi
echo "=== kmcld is still serving at $target; Ctrl-C stops it" >&2
echo "=== try: $bin/clients/cpp/kmclctl/kmclctl --target $target channels list" >&2
wait "$kmcld"
