"""kmcl_core's layers, bottom to top, and the visibility each one grants.

A package may depend only on packages below it; `above(layer)` is the
visibility of a layer's internal targets, so Bazel itself refuses an upward
dependency. docs/kmcl.md's layer table describes each package. Targets that
other top-level folders (daemon/, devices/, fuzz/, bench/, examples/) use are
marked public in their own BUILD file, and nothing else is.
"""

LAYERS = [
    "base",  # Mutex, Guid, NTSTATUS: no VMBus knowledge
    "wire",  # VMBus wire types and message codecs (no state)
    "memory",  # emulated guest memory and the GPADL table
    "ring",  # the ring buffer wire format: readers and writers
    "saved",  # the saved-state format and its blob framing
    "control",  # sans-I/O control-plane state machines (server, client, endpoint)
    "bus",  # one partition's emulated VMBus: memory, GPADLs, SynIC, endpoints
    "runtime",  # the KMCL endpoint runtime (Channel) and its executor
    "kmcl",  # KMCL's C surface over the runtime
]

def above(layer):
    """The visibility list admitting only the layers above `layer`."""
    i = LAYERS.index(layer)
    return ["//kmcl_core/%s:__pkg__" % l for l in LAYERS[i + 1:]]
