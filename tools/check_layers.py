#!/usr/bin/env python3
"""check_layers.py --list: prints kmcl_core's layers, bottom to top.
check_layers.py LAYER: reads package names (bazel query --output package) on stdin and prints any
kmcl_core package above LAYER, the argument; exits 1 if there is one.

Used by tools/run_tests.sh (the 'layers' check) and docs/kmcl.md: a layer may
depend only on the layers below it (kmcl_core/layers.bzl).
"""
import re
import sys

LAYERS_BZL = "kmcl_core/layers.bzl"


def layers(path):
    text = open(path).read()
    block = text[text.index("LAYERS = ["):text.index("]", text.index("LAYERS = ["))]
    return re.findall(r'"([a-z]+)"', block)


def main():
    if sys.argv[1] == "--list":
        print("\n".join(layers(LAYERS_BZL)))
        return 0
    order = layers(sys.argv[2] if len(sys.argv) > 2 else LAYERS_BZL)
    me = order.index(sys.argv[1])
    bad = []
    for line in sys.stdin:
        pkg = line.strip()
        if not pkg.startswith("kmcl_core/"):
            continue
        name = pkg.split("/")[1]
        if name in order and order.index(name) > me:
            bad.append(pkg)
    for pkg in bad:
        print(f"kmcl_core/{sys.argv[1]} depends on {pkg}, a higher layer")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
