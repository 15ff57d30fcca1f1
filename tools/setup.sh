#!/usr/bin/env bash
# tools/setup.sh: installs the Debian 12 packages that building and testing
# kmcld needs, skipping any that are already installed. Idempotent; safe to run
# on every `make run` / `make test`. Needs root (or sudo) only when something
# is actually missing.
set -euo pipefail

PACKAGES=(
  bazel-bootstrap pkg-config python3
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libssl-dev openssl
  libgtest-dev libgmock-dev libbenchmark-dev
  zlib1g-dev              # CRC-32 of saved-state blobs
  libboost-dev            # boost::lockfree::spsc_queue, the ring benchmark's baseline
  clang libclang-rt-14-dev  # libFuzzer targets under fuzz/
  libcli11-dev            # kmclctl's command line (header-only)
  libcpp-httplib-dev      # kmcld's /metrics listener
  libspdlog-dev           # kmcld's structured logs
  libncurses-dev          # kmclctl top
  nlohmann-json3-dev      # JSON log lines; tests that parse JSON
  prometheus              # tests/prometheus_test scrapes kmcld with the real server (and promtool)
)

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#PACKAGES[@]} build packages already installed" >&2
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done" >&2
