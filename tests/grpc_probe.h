// tests/grpc_probe.h: speaks the standard gRPC health and reflection
// protocols through grpc::GenericStub, decoding their few wire fields by
// hand, so tests need neither protocol's generated code (Debian ships
// neither health.proto nor reflection.proto).
//
// Thread-compatible: each call makes its own completion queue.
#ifndef KMCLD_TESTS_GRPC_PROBE_H_
#define KMCLD_TESTS_GRPC_PROBE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/channel.h"

namespace kmcld::testing {

// grpc.health.v1.Health/Check for the whole server (service ""). Returns the
// status enum: 1 SERVING, 2 NOT_SERVING.
absl::StatusOr<int> HealthCheck(const std::shared_ptr<grpc::Channel>& channel);

// grpc.reflection.v1alpha.ServerReflection list_services: the full names of
// every service the server registered.
absl::StatusOr<std::vector<std::string>> ListServices(
    const std::shared_ptr<grpc::Channel>& channel);

}  // namespace kmcld::testing

#endif  // KMCLD_TESTS_GRPC_PROBE_H_
