// End-to-end: a host tool in a child process is SIGKILLed while it holds
// deliveries. kmcld keeps the channel and the deliveries, another channel's
// traffic goes on untouched, and a new host tool that attaches within the
// linger gets the same deliveries (same ids) and completes them.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/bridge_fixture.h"

extern char** environ;

namespace kmcld::testing {
namespace {

using kmcl::v1::ENDPOINT_ROLE_GUEST;
using kmcl::v1::ENDPOINT_ROLE_HOST;

constexpr char kOtherType[] = "0b0b0b0b-1111-2222-3333-444455556666";

std::string ChildPath() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir == nullptr || workspace == nullptr) return "tests/attach_child";
  return absl::StrCat(srcdir, "/", workspace, "/tests/attach_child");
}

// One round of `n` echoes on an attached pair.
void EchoRound(AttachStream& guest, AttachStream& host, int n, int base) {
  std::thread echo([&] {
    int seen = 0;
    kmcl::v1::AttachResponse resp;
    while (seen < n && host.Read(&resp)) {
      std::vector<std::pair<uint64_t, std::string>> done;
      for (const auto& p : resp.received().packets()) done.emplace_back(p.delivery_id(), p.payload());
      seen += static_cast<int>(done.size());
      if (!done.empty()) {
        host.Complete(done);
        host.GrantDeliveries(static_cast<uint32_t>(done.size()));
      }
    }
  });
  std::vector<kmcl::v1::SendCompletion> completions;
  for (int sent = 0; sent < n;) {
    std::vector<kmcl::v1::SendPacket> batch;
    while (sent < n && guest.send_credits() > batch.size() && batch.size() < 32) {
      batch.push_back(Packet(base + sent, absl::StrCat("other ", base + sent)));
      ++sent;
    }
    if (!batch.empty()) {
      ASSERT_TRUE(guest.Send(batch));
    }
    kmcl::v1::AttachResponse resp;
    ASSERT_TRUE(guest.Read(&resp));
    for (const auto& c : resp.send_completions().completions()) completions.push_back(c);
  }
  ASSERT_TRUE(guest.ReadCompletions(n - completions.size(), &completions));
  echo.join();
  for (int i = 0; i < n; ++i) {
    ASSERT_EQ(completions[i].tag(), static_cast<uint64_t>(base + i));
    ASSERT_EQ(completions[i].payload(), Padded(absl::StrCat("other ", base + i)));
  }
}

TEST(BridgeKillTest, AKilledHostToolLosesNothingAndTouchesNoOtherChannel) {
  Kmcld k;
  ASSERT_TRUE(k.Start({"--attach_linger_ms=600000"}).ok()) << k.process.output();
  auto a = k.Offer();
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(k.Open().ok());
  auto b = k.Offer("default", kOtherType);
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE(k.Open("default", kOtherType).ok());
  const kmcl::v1::ChannelRef ref_a = a->offer().channel();
  const kmcl::v1::ChannelRef ref_b = b->offer().channel();

  // The host tool of channel A, in a child process.
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  const std::string path = ChildPath();
  const std::string channel_id = absl::StrCat(ref_a.channel_id());
  std::vector<char*> argv = {const_cast<char*>(path.c_str()),
                             const_cast<char*>(k.process.tcp_address().c_str()),
                             const_cast<char*>("default"), const_cast<char*>(channel_id.c_str()),
                             const_cast<char*>("5"), nullptr};
  pid_t child = -1;
  ASSERT_EQ(posix_spawn(&child, path.c_str(), &actions, nullptr, argv.data(), environ), 0) << path;
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);

  AttachStream guest_a(*k.packets, ref_a, ENDPOINT_ROLE_GUEST);
  ASSERT_TRUE(guest_a.ok());
  // The child may not be attached yet: deliveries wait for it either way.
  std::vector<kmcl::v1::SendPacket> batch;
  for (int i = 0; i < 5; ++i) batch.push_back(Packet(i, absl::StrCat("held ", i)));
  ASSERT_TRUE(guest_a.Send(batch));
  std::string line;
  char c;
  while (read(out[0], &c, 1) == 1 && c != '\n') line += c;
  close(out[0]);
  std::vector<std::string> words = absl::StrSplit(line, ' ');
  ASSERT_EQ(words.size(), 6u) << line;
  ASSERT_EQ(words[0], "held");

  // Channel B carries on while the child is killed.
  AttachStream guest_b(*k.packets, ref_b, ENDPOINT_ROLE_GUEST);
  AttachStream host_b(*k.packets, ref_b, ENDPOINT_ROLE_HOST, 256);
  ASSERT_TRUE(guest_b.ok() && host_b.ok());
  EchoRound(guest_b, host_b, 2000, 0);
  ASSERT_EQ(kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EchoRound(guest_b, host_b, 2000, 2000);

  // A new host tool gets the five deliveries again, same ids, and completes
  // them; the guest sees each completion once. Attach can race kmcld's
  // noticing the kill: ALREADY_EXISTS until then.
  std::unique_ptr<AttachStream> host_a = AttachWhenFree(*k.packets, ref_a, ENDPOINT_ROLE_HOST);
  ASSERT_TRUE(host_a->ok());
  EXPECT_EQ(host_a->attached().redelivered(), 5u);
  std::vector<kmcl::v1::ReceivedPacket> again;
  ASSERT_TRUE(host_a->ReadDeliveries(5, &again));
  std::vector<std::pair<uint64_t, std::string>> done;
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(absl::StrCat(again[i].delivery_id()), words[i + 1]);
    EXPECT_EQ(again[i].payload(), Padded(absl::StrCat("held ", i)));
    done.emplace_back(again[i].delivery_id(), absl::StrCat("late ", i));
  }
  ASSERT_TRUE(host_a->Complete(done));
  std::vector<kmcl::v1::SendCompletion> completions;
  ASSERT_TRUE(guest_a.ReadCompletions(5, &completions));
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(completions[i].tag(), static_cast<uint64_t>(i));
    EXPECT_EQ(completions[i].payload(), Padded(absl::StrCat("late ", i)));
  }
  kmcl::v1::GetChannelDiagnosticsRequest dr;
  *dr.mutable_channel() = ref_a;
  kmcl::v1::ChannelDiagnostics diag;
  // The host endpoint sends a completion first and then stops counting the
  // packet (kmcl_core's Channel::Complete), so the guest may read the last
  // completion a moment before the host's count drops: ask again until it
  // does, bounded by a deadline (each try is a round trip, no sleep).
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  do {
    ASSERT_TRUE(k.diagnostics->GetChannelDiagnostics(Kmcld::Context().get(), dr, &diag).ok());
  } while (diag.host().delivered_uncompleted() != 0 && absl::Now() < deadline);
  EXPECT_EQ(diag.host().held_deliveries(), 0u);
  EXPECT_EQ(diag.host().delivered_uncompleted(), 0u);
  EXPECT_TRUE(diag.host().state().attached());
}

}  // namespace
}  // namespace kmcld::testing
