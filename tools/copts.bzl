"""Compiler options for kmcld's own code (not for generated or system code)."""

KMCL_COPTS = [
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
    "-Wno-missing-field-initializers",
    "-Werror=return-type",
    "-Werror=switch",
]
