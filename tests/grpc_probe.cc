#include "tests/grpc_probe.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "google/protobuf/unknown_field_set.h"
#include "grpcpp/client_context.h"
#include "grpcpp/completion_queue.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/support/byte_buffer.h"

namespace kmcld::testing {
namespace {

using google::protobuf::UnknownField;
using google::protobuf::UnknownFieldSet;

std::string ToString(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  buffer.Dump(&slices).IgnoreError();
  std::string out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

grpc::ByteBuffer FromString(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

void* Tag(int n) { return reinterpret_cast<void*>(static_cast<intptr_t>(n)); }

// Waits for `expected` on `cq`; false if the operation failed.
bool Await(grpc::CompletionQueue& cq, int expected) {
  void* tag = nullptr;
  bool ok = false;
  if (!cq.Next(&tag, &ok)) return false;
  return tag == Tag(expected) && ok;
}

void SetDeadline(grpc::ClientContext& ctx) {
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
}

}  // namespace

absl::StatusOr<int> HealthCheck(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  grpc::ByteBuffer request = FromString("");  // HealthCheckRequest{service: ""}
  auto call = stub.PrepareUnaryCall(&ctx, "/grpc.health.v1.Health/Check", request, &cq);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, Tag(1));
  void* tag;
  bool ok;
  cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat("health check failed: ", status.error_message()));
  }
  UnknownFieldSet fields;
  if (!fields.ParseFromString(ToString(response))) {
    return absl::DataLossError("unparseable health response");
  }
  for (int i = 0; i < fields.field_count(); ++i) {
    if (fields.field(i).number() == 1 && fields.field(i).type() == UnknownField::TYPE_VARINT) {
      return static_cast<int>(fields.field(i).varint());
    }
  }
  return 0;  // UNKNOWN (the default value is not on the wire)
}

absl::StatusOr<std::vector<std::string>> ListServices(
    const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  auto call = stub.PrepareCall(
      &ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  call->StartCall(Tag(1));
  std::vector<std::string> names;
  absl::Status result = absl::OkStatus();
  grpc::ByteBuffer response;
  if (!Await(cq, 1)) {
    result = absl::UnavailableError("reflection call did not start");
  } else {
    // ServerReflectionRequest{list_services (field 7): ""}.
    call->Write(FromString(std::string("\x3a\x00", 2)), Tag(2));
    if (!Await(cq, 2)) result = absl::UnavailableError("reflection write failed");
  }
  if (result.ok()) {
    call->Read(&response, Tag(3));
    if (!Await(cq, 3)) result = absl::UnavailableError("reflection read failed");
  }
  call->WritesDone(Tag(4));
  Await(cq, 4);
  grpc::Status status;
  call->Finish(&status, Tag(5));
  Await(cq, 5);
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
  if (!result.ok()) return result;
  // ServerReflectionResponse.list_services_response (6) -> service (1, repeated)
  // -> ServiceResponse.name (1).
  UnknownFieldSet top;
  if (!top.ParseFromString(ToString(response))) return absl::DataLossError("bad response");
  for (int i = 0; i < top.field_count(); ++i) {
    if (top.field(i).number() != 6) continue;
    UnknownFieldSet list;
    if (!list.ParseFromString(top.field(i).length_delimited())) continue;
    for (int j = 0; j < list.field_count(); ++j) {
      UnknownFieldSet service;
      if (list.field(j).number() != 1 || !service.ParseFromString(list.field(j).length_delimited())) {
        continue;
      }
      for (int k = 0; k < service.field_count(); ++k) {
        if (service.field(k).number() == 1) names.push_back(service.field(k).length_delimited());
      }
    }
  }
  return names;
}

}  // namespace kmcld::testing
