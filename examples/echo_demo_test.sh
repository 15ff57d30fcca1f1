#!/bin/sh
# Runs the C echo VSP and VSC against each other: every completion must match.
set -eu
out=$("$TEST_SRCDIR/$TEST_WORKSPACE/examples/echo_demo" --packets=20000 --payload=64 --window=32)
echo "$out"
echo "$out" | grep -q ' 0 mismatches' || { echo "mismatches reported" >&2; exit 1; }
echo "$out" | grep -q '20000 completions' || { echo "completions missing" >&2; exit 1; }
