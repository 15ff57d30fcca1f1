// examples/kmcl_guest_tool: a guest tool (the VSC side) written with the
// kmcl C++ client library (clients/cpp/kmcl.h). It opens the channel an
// echo host offers (examples/kmcl_echo_host), shares a guest buffer with a
// GPADL, sends --packets transactions without waiting for each (futures;
// the library keeps within the daemon's credits), checks every completion
// against what it sent, and closes the channel. Exit 0 when all matched.
//
//   bazel-bin/examples/kmcl_guest_tool --target=127.0.0.1:50551 --packets=1000
#include <cstdio>
#include <future>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "clients/cpp/kmcl.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50551", "kmcld: host:port or unix:/path");
ABSL_FLAG(std::string, partition, "default", "partition of the offer");
ABSL_FLAG(std::string, type, "a0e1c2d3-4b5a-4c6d-8e7f-901a2b3c4d5e", "interface type GUID");
ABSL_FLAG(int, packets, 1000, "transactions to send");
ABSL_FLAG(int, open_timeout_s, 30, "how long to wait for the offer");

namespace {

namespace kc = ::kmcl::client;

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "kmcl_guest_tool: %s\n", status.ToString().c_str());
  return 1;
}

std::string Padded(std::string s) {
  s.resize((s.size() + 7) & ~size_t{7}, '\0');  // VMBus rings carry 8-byte units
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto client = kc::Client::Connect(absl::GetFlag(FLAGS_target));
  if (!client.ok()) return Fail(client.status());

  kmcl::v1::OpenChannelRequest open;
  open.set_partition_id(absl::GetFlag(FLAGS_partition));
  open.mutable_interface_type()->set_value(absl::GetFlag(FLAGS_type));
  auto channel =
      kc::GuestChannel::Open(*client, open, absl::Seconds(absl::GetFlag(FLAGS_open_timeout_s)));
  if (!channel.ok()) return Fail(channel.status());
  std::printf("opened channel %u\n", channel->ref().channel_id());

  // Guest memory the host could map: a buffer and a GPADL over it. Both are
  // released (teardown, free) when the handles go out of scope.
  auto buffer = kc::GuestBuffer::Allocate(*client, open.partition_id(), 8192);
  if (!buffer.ok()) return Fail(buffer.status());
  if (absl::Status s = buffer->Write(0, "hello from the guest"); !s.ok()) return Fail(s);
  auto gpadl = kc::Gpadl::Create(*client, channel->ref(), *buffer);
  if (!gpadl.ok()) return Fail(gpadl.status());
  std::printf("gpadl %u over %llu bytes\n", gpadl->id(),
              static_cast<unsigned long long>(gpadl->info().byte_count()));

  auto stream = kc::AttachedStream::Attach(*client, channel->endpoint());
  if (!stream.ok()) return Fail(stream.status());

  const int packets = absl::GetFlag(FLAGS_packets);
  const absl::Time start = absl::Now();
  std::vector<std::future<absl::StatusOr<kc::SendResult>>> results;
  results.reserve(packets);
  for (int i = 0; i < packets; ++i) {
    results.push_back((*stream)->Send({absl::StrCat("transaction ", i)}));
  }
  int mismatches = 0;
  for (int i = 0; i < packets; ++i) {
    absl::StatusOr<kc::SendResult> r = results[i].get();
    if (!r.ok()) return Fail(r.status());
    if (r->status.code() != 0 || r->payload != Padded(absl::StrCat("transaction ", i))) {
      ++mismatches;
    }
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::printf("%d transactions echoed in %.3f s (%.0f/s), %d mismatched\n", packets, seconds,
              seconds > 0 ? packets / seconds : 0.0, mismatches);
  if (absl::Status s = (*stream)->Close(); !s.ok()) return Fail(s);
  if (absl::Status s = gpadl->Teardown(); !s.ok()) return Fail(s);
  if (absl::Status s = channel->Close(); !s.ok()) return Fail(s);
  return mismatches == 0 ? 0 : 1;
}
