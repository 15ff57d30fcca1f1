"""kmcl_fuzz_test: one libFuzzer target, runnable as a test with either engine."""

load("//tools:copts.bzl", "KMCL_COPTS")

def kmcl_fuzz_test(name, srcs, deps, runs, **kwargs):
    """A cc_test around LLVMFuzzerTestOneInput in `srcs`.

    Plain builds link //fuzz:fuzz_driver (deterministic generated inputs).
    --config=fuzz links libFuzzer and runs `runs` iterations with a fixed seed.
    """
    native.cc_test(
        name = name,
        size = "medium",
        srcs = srcs,
        copts = KMCL_COPTS,
        deps = deps + [":fuzz_input"] + select({
            ":libfuzzer": [],
            "//conditions:default": [":fuzz_driver"],
        }),
        linkopts = select({
            ":libfuzzer": ["-fsanitize=fuzzer"],
            "//conditions:default": [],
        }),
        args = select({
            ":libfuzzer": ["-runs=%d" % runs, "-seed=1", "-print_final_stats=1"],
            "//conditions:default": [],
        }),
        tags = ["fuzz"],
        **kwargs
    )
