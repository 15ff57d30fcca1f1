// examples/kmcl_echo_host: an echo VSP (the host side of a channel) written
// with the kmcl C++ client library (clients/cpp/kmcl.h). It offers a channel
// of --type on --partition, attaches to it, and completes every packet the
// guest sends with the packet's own bytes, until --count packets were echoed
// (0: until SIGINT/SIGTERM). The channel is rescinded when it exits.
//
//   bazel-bin/examples/kmcl_echo_host --target=unix:/run/kmcld/kmcld.sock
//   bazel-bin/examples/kmcl_guest_tool --target=unix:/run/kmcld/kmcld.sock
#include <atomic>
#include <csignal>
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/synchronization/notification.h"
#include "clients/cpp/kmcl.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50551", "kmcld: host:port or unix:/path");
ABSL_FLAG(std::string, partition, "default", "partition to offer the channel in");
ABSL_FLAG(std::string, type, "a0e1c2d3-4b5a-4c6d-8e7f-901a2b3c4d5e", "interface type GUID");
ABSL_FLAG(uint64_t, count, 0, "exit after echoing this many packets (0: run until a signal)");

namespace {

namespace kc = ::kmcl::client;

std::atomic<bool> stop_requested{false};

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "kmcl_echo_host: %s\n", status.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto client = kc::Client::Connect(absl::GetFlag(FLAGS_target));
  if (!client.ok()) return Fail(client.status());

  kmcl::v1::ServerChannelSettings settings;
  settings.mutable_interface_type()->set_value(absl::GetFlag(FLAGS_type));
  settings.set_friendly_name("kmcl_echo_host");
  settings.set_start(true);  // KMCL servers start paused
  auto channel = kc::HostChannel::Offer(*client, absl::GetFlag(FLAGS_partition), settings);
  if (!channel.ok()) return Fail(channel.status());

  absl::Notification done;
  std::signal(SIGINT, [](int) { stop_requested = true; });
  std::signal(SIGTERM, [](int) { stop_requested = true; });

  // Callback receive: each delivery is echoed as its completion, on the
  // stream's own thread. The library hands credits back and batches.
  const uint64_t count = absl::GetFlag(FLAGS_count);
  std::atomic<uint64_t> echoed{0};
  kc::StreamOptions options;
  options.on_delivery = [&](kc::AttachedStream& stream, kc::Delivery d) {
    if (absl::Status s = stream.Complete(d.id, std::move(d.payload)); !s.ok()) {
      Fail(s);
    }
    if (++echoed == count) done.Notify();
  };
  options.on_event = [](const kmcl::v1::EndpointEvent& e) {
    std::printf("event %s\n", kmcl::v1::EventKind_Name(e.kind()).c_str());
    std::fflush(stdout);
  };
  auto stream = kc::AttachedStream::Attach(*client, channel->endpoint(), options);
  if (!stream.ok()) return Fail(stream.status());

  std::printf("offered channel %u in partition %s (type %s); echoing\n",
              channel->ref().channel_id(), channel->ref().partition_id().c_str(),
              absl::GetFlag(FLAGS_type).c_str());
  std::fflush(stdout);
  while (!done.WaitForNotificationWithTimeout(absl::Milliseconds(100))) {
    if (stop_requested) break;
  }
  absl::Status closed = (*stream)->Close();
  std::printf("echoed %llu packets\n", static_cast<unsigned long long>(echoed.load()));
  if (!closed.ok()) return Fail(closed);
  // `channel` goes out of scope: RescindChannel + CleanupChannel.
  return 0;
}
