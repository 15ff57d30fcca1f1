"""cc_grpc_library: C++ code for .proto files from Debian's protoc and grpc_cpp_plugin."""

def cc_grpc_library(name, srcs, deps = [], proto_deps = [], grpc = True, **kwargs):
    """C++ protobuf (and, with grpc = True, gRPC service) code for `srcs`.

    Args:
      name: name of the resulting cc_library.
      srcs: .proto files in this package.
      deps: cc deps, e.g. the cc_grpc_library of every imported .proto.
      proto_deps: .proto files (labels) that srcs import, so protoc sees them.
      grpc: also run grpc_cpp_plugin.
      **kwargs: passed on to cc_library (visibility, testonly, ...).

    Imports are workspace-relative (import "proto/common.proto";);
    google/protobuf/*.proto come from /usr/include.
    """
    outs = []
    for src in srcs:
        base = src[:-len(".proto")]
        outs += [base + ".pb.h", base + ".pb.cc"]
        if grpc:
            outs += [base + ".grpc.pb.h", base + ".grpc.pb.cc"]
    protoc = "@system//:bin/protoc"
    plugin = "@system//:bin/grpc_cpp_plugin"
    cmd = "$(location %s) -I. --cpp_out=$(GENDIR)" % protoc
    if grpc:
        cmd += " --plugin=protoc-gen-grpc=$(location %s) --grpc_out=$(GENDIR)" % plugin
    cmd += " " + " ".join(["$(location %s)" % s for s in srcs])
    native.genrule(
        name = name + "_codegen",
        srcs = srcs + proto_deps,
        outs = outs,
        tools = [protoc] + ([plugin] if grpc else []),
        cmd = cmd,
    )
    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        deps = deps + ["@system//:protobuf"] + (["@system//:grpc++"] if grpc else []),
        **kwargs
    )
