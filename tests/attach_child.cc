// tests/attach_child: a host tool in its own process for the killed-client
// test. It attaches to the host endpoint of a channel, takes `count`
// deliveries without completing them, prints "held <id> <id> ..." on
// stdout, and then waits until it is killed.
//
// Usage: attach_child TARGET PARTITION CHANNEL_ID COUNT
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "proto/packet.grpc.pb.h"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: attach_child TARGET PARTITION CHANNEL_ID COUNT\n");
    return 2;
  }
  auto channel = grpc::CreateChannel(argv[1], grpc::InsecureChannelCredentials());
  auto stub = kmcl::v1::PacketService::NewStub(channel);
  grpc::ClientContext ctx;
  auto rw = stub->Attach(&ctx);
  kmcl::v1::AttachRequest req;
  auto* ref = req.mutable_attach()->mutable_endpoint();
  ref->mutable_channel()->set_partition_id(argv[2]);
  ref->mutable_channel()->set_channel_id(static_cast<uint32_t>(std::atoi(argv[3])));
  ref->set_role(kmcl::v1::ENDPOINT_ROLE_HOST);
  if (!rw->Write(req)) return 1;
  const int count = std::atoi(argv[4]);
  std::string line = "held";
  int held = 0;
  kmcl::v1::AttachResponse resp;
  while (held < count && rw->Read(&resp)) {
    for (const auto& p : resp.received().packets()) {
      line += " " + std::to_string(p.delivery_id());
      ++held;
    }
  }
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  pause();  // until killed
  return 0;
}
