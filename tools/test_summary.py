#!/usr/bin/env python3
"""Usage: test_summary.py BAZEL_TEST_LOG [BAZEL_TEST_LOG ...]

Reads the per-target result lines of `bazel test` output and each target's
bazel-testlogs/<pkg>/<name>/test.xml, then prints one line
'N passed, N failed' counting individual test cases (gtest cases; one case for
a target without a gtest XML). A target that failed to build, crashed or timed
out without a failing case in its XML counts as one failed case. A log whose
bazel run failed before reporting any target (e.g. a build error with
--keep_going off) counts as one failure. Exit status 1 if anything failed.

The testlogs root is taken from the log's own 'config' name: logs named
*.asan.log etc. are read against bazel-testlogs of that run, which must be the
current symlink; run this right after each bazel invocation (as .ci/run does).
"""
import re
import sys
import xml.etree.ElementTree as ET

LINE_RE = re.compile(
    r"^//([^:\s]*):(\S+)\s+(?:\(cached\) )?"
    r"(PASSED|FAILED|TIMEOUT|FLAKY|NO STATUS|INCOMPLETE|REMOTE FAILURE|FAILED TO BUILD)\b")


def count_target(pkg, name, status):
    n_ok = n_bad = 0
    try:
        root = ET.parse(f"bazel-testlogs/{pkg}/{name}/test.xml").getroot()
        saw_case = False
        for case in root.iter("testcase"):
            saw_case = True
            if case.find("failure") is not None or case.find("error") is not None:
                n_bad += 1
            elif case.find("skipped") is None and case.get("result", "completed") != "suppressed":
                n_ok += 1
        if not saw_case and status in ("PASSED", "FLAKY"):
            n_ok = 1  # a non-gtest test (sh_test, fuzz run): one case
    except (OSError, ET.ParseError):
        if status in ("PASSED", "FLAKY"):
            n_ok = 1
    if status not in ("PASSED", "FLAKY") and n_bad == 0:
        n_bad = 1  # failed without a failing case in the XML: crash, timeout, build
    return n_ok, n_bad


def main(paths):
    passed = failed = 0
    for path in paths:
        seen = 0
        build_failed = False
        for line in open(path, errors="replace"):
            if "FAILED: Build did NOT complete successfully" in line or line.startswith("ERROR: "):
                build_failed = True
            m = LINE_RE.match(line)
            if not m:
                continue
            seen += 1
            ok, bad = count_target(*m.groups())
            passed += ok
            failed += bad
        if seen == 0 and build_failed:
            failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
