// AttachedStream against a real kmcld: credits never overrun the daemon,
// delivery credits bound what a tool gets, and a connection dropped under
// either tool (by a TCP proxy) loses no delivery and no completion.
#include "clients/cpp/stream.h"

#include <csignal>
#include <cstdio>
#include <functional>
#include <optional>
#include <future>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "clients/cpp/testing/kmcld.h"
#include "clients/cpp/testing/tcp_proxy.h"
#include "gtest/gtest.h"

namespace kmcl::client {
namespace {

using testing::Padded;
using testing::TestDaemon;

// Polls `done` until true or 30 s pass (a state in another process).
bool Eventually(const std::function<bool()>& done) {
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return done();
}

// Receives `n` deliveries (each within 30 s) into `out`.
void ReceiveN(AttachedStream& stream, int n, std::vector<Delivery>* out) {
  for (int i = 0; i < n; ++i) {
    absl::StatusOr<Delivery> d = stream.Receive(absl::Now() + absl::Seconds(30));
    ASSERT_TRUE(d.ok()) << d.status();
    out->push_back(*std::move(d));
  }
}

std::string PayloadOf(int i) { return absl::StrCat("packet-", i, "-", std::string(i % 13, 'x')); }

class StreamTest : public ::testing::Test {
 protected:
  void StartDaemon(const std::vector<std::string>& flags = {}) {
    ASSERT_TRUE(daemon_.Start(flags).ok()) << daemon_.process.output();
    direct_ = *Client::Connect(daemon_.target());
  }
  // On failure, says what kmcld said (it may have died under the test).
  void TearDown() override {
    if (!HasFailure()) return;
    absl::StatusOr<int> code = daemon_.process.Stop(SIGTERM, absl::Seconds(10));
    std::fprintf(stderr, "--- kmcld (exit %s):\n%s\n",
                 code.ok() ? absl::StrCat(*code).c_str() : code.status().ToString().c_str(),
                 daemon_.process.output().c_str());
  }
  std::shared_ptr<Client> ThroughProxy() {
    EXPECT_TRUE(proxy_.Start(daemon_.process.uds_path()).ok());
    return *Client::Connect(proxy_.address());
  }
  v1::ChannelDiagnostics Diagnostics(const v1::ChannelRef& ref) {
    auto d = direct_->GetChannelDiagnostics(ref);
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? *d : v1::ChannelDiagnostics();
  }

  TestDaemon daemon_;
  testing::TcpProxy proxy_;
  std::shared_ptr<Client> direct_;
};

TEST_F(StreamTest, SendsWaitForCreditsAndNeverOverrunTheDaemon) {
  StartDaemon({"--packets_in_flight_per_stream=4"});
  auto channel = testing::OfferAndOpen(direct_, direct_);
  ASSERT_TRUE(channel.ok()) << channel.status();
  StreamOptions echo;
  echo.on_delivery = [](AttachedStream& stream, Delivery d) {
    ASSERT_TRUE(stream.Complete(d.id, d.payload).ok());
  };
  auto h = AttachedStream::Attach(direct_, channel->host.endpoint(), echo);
  ASSERT_TRUE(h.ok()) << h.status();
  std::unique_ptr<AttachedStream> host = *std::move(h);
  auto guest = AttachedStream::Attach(direct_, channel->guest.endpoint());
  ASSERT_TRUE(guest.ok()) << guest.status();
  EXPECT_EQ((*guest)->attached().send_credits(), 4u);

  constexpr int kPackets = 300;
  std::vector<std::future<absl::StatusOr<SendResult>>> results;
  for (int i = 0; i < kPackets; ++i) results.push_back((*guest)->Send({PayloadOf(i)}));
  for (int i = 0; i < kPackets; ++i) {
    absl::StatusOr<SendResult> r = results[i].get();
    ASSERT_TRUE(r.ok()) << i << ": " << r.status();
    EXPECT_EQ(r->status.code(), 0u);
    EXPECT_EQ(r->payload, Padded(PayloadOf(i)));
  }
  AttachedStream::Stats s = (*guest)->stats();
  EXPECT_EQ(s.sends, kPackets);
  EXPECT_GT(s.credit_stalls, 0u) << "300 sends through a window of 4 must wait for credits";
  EXPECT_LT(s.messages_written - s.acks_alone, kPackets) << "sends queued meanwhile go out batched";
  EXPECT_EQ(host->stats().deliveries, kPackets);
  EXPECT_TRUE((*guest)->Close().ok());
  EXPECT_TRUE(host->Close().ok());
}

TEST_F(StreamTest, DeliveryCreditsBoundWhatTheToolIsSent) {
  StartDaemon();
  auto channel = testing::OfferAndOpen(direct_, direct_);
  ASSERT_TRUE(channel.ok()) << channel.status();
  StreamOptions few;
  few.delivery_credits = 3;
  auto host = AttachedStream::Attach(direct_, channel->host.endpoint(), few);
  ASSERT_TRUE(host.ok()) << host.status();
  auto guest = AttachedStream::Attach(direct_, channel->guest.endpoint());
  ASSERT_TRUE(guest.ok());
  std::vector<std::future<absl::StatusOr<SendResult>>> results;
  for (int i = 0; i < 10; ++i) results.push_back((*guest)->Send({PayloadOf(i)}));
  // kmcld has taken all ten off the ring; the tool, which took none, got 3.
  ASSERT_TRUE(Eventually([&] {
    return Diagnostics(channel->host.ref()).host().held_deliveries() == 10 &&
           (*host)->stats().deliveries == 3;
  })) << Diagnostics(channel->host.ref()).DebugString();
  EXPECT_EQ((*host)->stats().deliveries, 3u);
  EXPECT_EQ((*host)->Complete(12345, "").code(), absl::StatusCode::kNotFound);
  for (int i = 0; i < 10; ++i) {
    absl::StatusOr<Delivery> d = (*host)->Receive(absl::Now() + absl::Seconds(30));
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(d->payload, Padded(PayloadOf(i)));
    EXPECT_EQ((*host)->Complete(d->id, std::string((*host)->max_packet_size() + 1, 'x')).code(),
              absl::StatusCode::kInvalidArgument);
    ASSERT_TRUE((*host)->Complete(d->id, "ok").ok());
  }
  for (auto& r : results) {
    absl::StatusOr<SendResult> result = r.get();
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->payload, Padded("ok"));
  }
  EXPECT_EQ((*host)->Receive(absl::Now() + absl::Milliseconds(50)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  auto too_big = (*guest)->Send({std::string((*guest)->max_packet_size() + 1, 'x')}).get();
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument);
}

// The host tool's connection drops while it holds deliveries, half of them
// already completed: nothing is delivered to it twice, nothing is lost.
TEST_F(StreamTest, HostReconnectLosesNoDeliveryAndNoCompletion) {
  StartDaemon();
  std::shared_ptr<Client> via_proxy = ThroughProxy();
  auto channel = testing::OfferAndOpen(via_proxy, direct_);
  ASSERT_TRUE(channel.ok()) << channel.status();
  std::promise<ReconnectInfo> reconnected;
  StreamOptions options;
  options.on_reconnect = [&](const ReconnectInfo& info) { reconnected.set_value(info); };
  auto host = AttachedStream::Attach(via_proxy, channel->host.endpoint(), options);
  ASSERT_TRUE(host.ok()) << host.status();
  auto guest = AttachedStream::Attach(direct_, channel->guest.endpoint());
  ASSERT_TRUE(guest.ok());

  constexpr int kPackets = 20;
  std::vector<std::future<absl::StatusOr<SendResult>>> results;
  for (int i = 0; i < kPackets; ++i) results.push_back((*guest)->Send({PayloadOf(i)}));
  std::vector<Delivery> held;
  ASSERT_NO_FATAL_FAILURE(ReceiveN(**host, kPackets, &held));
  for (int i = 0; i < kPackets / 2; ++i) ASSERT_TRUE((*host)->Complete(held[i].id, held[i].payload).ok());

  proxy_.SetAccepting(false);
  EXPECT_EQ(proxy_.DropAll(), 1);
  ASSERT_TRUE(Eventually([&] { return !direct_->GetChannel(channel->host.ref())->host().attached(); }));
  // Completed while detached: queued, written after the re-attach.
  for (int i = kPackets / 2; i < kPackets; ++i) {
    ASSERT_TRUE((*host)->Complete(held[i].id, held[i].payload).ok());
  }
  proxy_.SetAccepting(true);
  std::future<ReconnectInfo> info = reconnected.get_future();
  ASSERT_EQ(info.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_EQ(info.get().attempt, 1u);

  for (int i = 0; i < kPackets; ++i) {
    absl::StatusOr<SendResult> r = results[i].get();
    ASSERT_TRUE(r.ok()) << i << ": " << r.status();
    EXPECT_EQ(r->payload, Padded(PayloadOf(i))) << i;
  }
  EXPECT_EQ((*host)->Receive(absl::Now() + absl::Milliseconds(100)).status().code(),
            absl::StatusCode::kDeadlineExceeded)
      << "a redelivered packet reached the tool twice";
  EXPECT_EQ((*host)->stats().deliveries, kPackets);
  EXPECT_EQ((*host)->stats().reconnects, 1u);
  EXPECT_EQ(Diagnostics(channel->host.ref()).host().held_deliveries(), 0u);
}

// The guest tool's connection drops with transactions outstanding; the
// host completes them while the guest is away, and the guest queues more:
// every completion arrives once, under its send.
TEST_F(StreamTest, GuestReconnectRecoversCompletionsAndSendsWhatWasQueued) {
  StartDaemon();
  std::shared_ptr<Client> via_proxy = ThroughProxy();
  auto channel = testing::OfferAndOpen(direct_, via_proxy);
  ASSERT_TRUE(channel.ok()) << channel.status();
  auto host = AttachedStream::Attach(direct_, channel->host.endpoint());
  ASSERT_TRUE(host.ok());
  std::promise<ReconnectInfo> reconnected;
  StreamOptions options;
  options.on_reconnect = [&](const ReconnectInfo& info) { reconnected.set_value(info); };
  auto guest = AttachedStream::Attach(via_proxy, channel->guest.endpoint(), options);
  ASSERT_TRUE(guest.ok()) << guest.status();

  constexpr int kPackets = 20, kLater = 5;
  std::vector<std::future<absl::StatusOr<SendResult>>> results;
  for (int i = 0; i < kPackets; ++i) results.push_back((*guest)->Send({PayloadOf(i)}));
  std::vector<Delivery> held;
  ASSERT_NO_FATAL_FAILURE(ReceiveN(**host, kPackets, &held));
  proxy_.SetAccepting(false);
  EXPECT_EQ(proxy_.DropAll(), 1);
  ASSERT_TRUE(
      Eventually([&] { return !direct_->GetChannel(channel->guest.ref())->guest().attached(); }));
  for (const Delivery& d : held) ASSERT_TRUE((*host)->Complete(d.id, d.payload).ok());
  ASSERT_TRUE(Eventually([&] {
    return Diagnostics(channel->guest.ref()).guest().outstanding_transactions() == 0;
  }));
  for (int i = kPackets; i < kPackets + kLater; ++i) results.push_back((*guest)->Send({PayloadOf(i)}));
  proxy_.SetAccepting(true);
  std::future<ReconnectInfo> info_future = reconnected.get_future();
  ASSERT_EQ(info_future.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  ReconnectInfo info = info_future.get();
  EXPECT_EQ(info.recovered_completions, static_cast<uint32_t>(kPackets));
  EXPECT_EQ(info.resent, 0u);
  for (int i = kPackets; i < kPackets + kLater; ++i) {
    absl::StatusOr<Delivery> d = (*host)->Receive(absl::Now() + absl::Seconds(30));
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(d->payload, Padded(PayloadOf(i)));
    ASSERT_TRUE((*host)->Complete(d->id, d->payload).ok());
  }
  for (int i = 0; i < kPackets + kLater; ++i) {
    absl::StatusOr<SendResult> r = results[i].get();
    ASSERT_TRUE(r.ok()) << i << ": " << r.status();
    EXPECT_EQ(r->payload, Padded(PayloadOf(i))) << i;
  }
  EXPECT_EQ((*guest)->stats().unknown_completions, 0u);
  EXPECT_EQ((*guest)->stats().sends, kPackets + kLater);
}

// Waits up to 30 s for each result and checks it echoes PayloadOf(i).
void ExpectEchoed(std::vector<std::future<absl::StatusOr<SendResult>>>& results,
                  const std::function<std::string(int)>& payload) {
  for (size_t i = 0; i < results.size(); ++i) {
    ASSERT_EQ(results[i].wait_for(std::chrono::seconds(30)), std::future_status::ready)
        << "the completion of send " << i << " never arrived";
    absl::StatusOr<SendResult> r = results[i].get();
    ASSERT_TRUE(r.ok()) << i << ": " << r.status();
    EXPECT_EQ(r->payload, Padded(payload(static_cast<int>(i)))) << i;
  }
}

std::string BigPayloadOf(int i) { return absl::StrCat(i, ":", std::string(600, 'c')); }

// A guest tool attached through the proxy (the host tool directly) with
// `n` transactions sent and held, undelivered to the guest, by the host.
struct ProxiedGuest {
  std::optional<testing::EchoChannel> channel;
  std::unique_ptr<AttachedStream> host, guest;
  std::promise<ReconnectInfo> reconnected;
  std::vector<std::future<absl::StatusOr<SendResult>>> results;
  std::vector<Delivery> held;
};

void StartProxiedGuest(std::shared_ptr<Client> direct,
                       std::shared_ptr<Client> via_proxy, int n,
                       const std::function<std::string(int)>& payload, ProxiedGuest* out) {
  auto channel = testing::OfferAndOpen(direct, via_proxy);
  ASSERT_TRUE(channel.ok()) << channel.status();
  out->channel = *std::move(channel);
  auto host = AttachedStream::Attach(direct, out->channel->host.endpoint());
  ASSERT_TRUE(host.ok()) << host.status();
  out->host = *std::move(host);
  StreamOptions options;
  options.on_reconnect = [out](const ReconnectInfo& info) { out->reconnected.set_value(info); };
  auto guest = AttachedStream::Attach(via_proxy, out->channel->guest.endpoint(), options);
  ASSERT_TRUE(guest.ok()) << guest.status();
  out->guest = *std::move(guest);
  for (int i = 0; i < n; ++i) out->results.push_back(out->guest->Send({payload(i)}));
  ASSERT_NO_FATAL_FAILURE(ReceiveN(*out->host, n, &out->held));
}

// The host completes the guest's transactions while the guest's connection
// still stands but carries nothing to the guest: kmcld writes the
// completions, the bytes are lost, then the connection drops. The guest
// acknowledges nothing it did not see, so kmcld sends them again on the
// next stream: each arrives once.
TEST_F(StreamTest, CompletionsInsideAWriteWhenTheConnectionDropsArriveOnce) {
  StartDaemon();
  constexpr int kPackets = 16;
  ProxiedGuest p;
  ASSERT_NO_FATAL_FAILURE(StartProxiedGuest(direct_, ThroughProxy(), kPackets, BigPayloadOf, &p));
  proxy_.SetSwallowing(testing::TcpProxy::kToClient, true);
  for (const Delivery& d : p.held) ASSERT_TRUE(p.host->Complete(d.id, d.payload).ok());
  // Written by kmcld (every completion payload went into the connection).
  const v1::ChannelRef guest_ref = p.channel->guest.ref();
  ASSERT_TRUE(Eventually([&] {
    return Diagnostics(guest_ref).guest().outstanding_transactions() == 0 &&
           proxy_.swallowed(testing::TcpProxy::kToClient) >= kPackets * 600;
  })) << Diagnostics(guest_ref).DebugString();
  EXPECT_EQ(p.guest->stats().send_results, 0u);
  proxy_.SetAccepting(false);
  EXPECT_EQ(proxy_.DropAll(), 1);
  proxy_.SetSwallowing(testing::TcpProxy::kToClient, false);
  proxy_.SetAccepting(true);

  std::future<ReconnectInfo> info = p.reconnected.get_future();
  ASSERT_EQ(info.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_EQ(info.get().recovered_completions, static_cast<uint32_t>(kPackets));
  ASSERT_NO_FATAL_FAILURE(ExpectEchoed(p.results, BigPayloadOf));
  AttachedStream::Stats s = p.guest->stats();
  EXPECT_EQ(s.send_results, kPackets);
  EXPECT_EQ(s.duplicate_completions, 0u);
  EXPECT_EQ(s.unknown_completions, 0u);
  EXPECT_EQ(s.resent, 0u);
}

// The other way round: the guest sees every completion but its
// acknowledgements are lost with the connection. Its next Attach carries
// the acknowledgement, so kmcld keeps nothing for it and the send window
// is whole again.
TEST_F(StreamTest, AcknowledgementLostWithTheConnectionIsCarriedByTheNextAttach) {
  StartDaemon({"--packets_in_flight_per_stream=32"});
  constexpr int kPackets = 16;
  ProxiedGuest p;
  ASSERT_NO_FATAL_FAILURE(StartProxiedGuest(direct_, ThroughProxy(), kPackets, PayloadOf, &p));
  proxy_.SetSwallowing(testing::TcpProxy::kToUpstream, true);
  for (const Delivery& d : p.held) ASSERT_TRUE(p.host->Complete(d.id, d.payload).ok());
  ASSERT_NO_FATAL_FAILURE(ExpectEchoed(p.results, PayloadOf));
  // kmcld holds all of them, unacknowledged.
  const v1::ChannelRef guest_ref = p.channel->guest.ref();
  ASSERT_TRUE(Eventually([&] {
    return absl::StrContains(Diagnostics(guest_ref).guest().stream_state(),
                             absl::StrCat("unacked=", kPackets, " "));
  })) << Diagnostics(guest_ref).guest().stream_state();
  proxy_.SetAccepting(false);
  EXPECT_EQ(proxy_.DropAll(), 1);
  proxy_.SetSwallowing(testing::TcpProxy::kToUpstream, false);
  proxy_.SetAccepting(true);

  std::future<ReconnectInfo> info = p.reconnected.get_future();
  ASSERT_EQ(info.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_EQ(info.get().recovered_completions, 0u);
  EXPECT_EQ(p.guest->attached().send_credits(), 32u);
  AttachedStream::Stats s = p.guest->stats();
  EXPECT_EQ(s.duplicate_completions, 0u);
  EXPECT_EQ(s.send_results, kPackets);
  // The stream goes on: more than a window's worth, each completed once.
  p.results.clear();
  for (int i = 0; i < 40; ++i) p.results.push_back(p.guest->Send({PayloadOf(i)}));
  for (int i = 0; i < 40; ++i) {
    absl::StatusOr<Delivery> d = p.host->Receive(absl::Now() + absl::Seconds(30));
    ASSERT_TRUE(d.ok()) << d.status();
    ASSERT_TRUE(p.host->Complete(d->id, d->payload).ok());
  }
  ASSERT_NO_FATAL_FAILURE(ExpectEchoed(p.results, PayloadOf));
}

// The call itself is cancelled under the host tool (as a killed gRPC call
// would be): kmcld lingers, the stream re-attaches, nothing is lost.
TEST_F(StreamTest, CancelledCallReattachesWithoutLoss) {
  StartDaemon();
  auto channel = testing::OfferAndOpen(direct_, direct_);
  ASSERT_TRUE(channel.ok()) << channel.status();
  std::promise<ReconnectInfo> reconnected;
  StreamOptions options;
  options.on_reconnect = [&](const ReconnectInfo& info) { reconnected.set_value(info); };
  auto host = AttachedStream::Attach(direct_, channel->host.endpoint(), options);
  ASSERT_TRUE(host.ok()) << host.status();
  auto guest = AttachedStream::Attach(direct_, channel->guest.endpoint());
  ASSERT_TRUE(guest.ok());
  constexpr int kPackets = 8;
  std::vector<std::future<absl::StatusOr<SendResult>>> results;
  for (int i = 0; i < kPackets; ++i) results.push_back((*guest)->Send({PayloadOf(i)}));
  std::vector<Delivery> held;
  ASSERT_NO_FATAL_FAILURE(ReceiveN(**host, kPackets, &held));
  (*host)->BreakConnectionForTesting();
  std::future<ReconnectInfo> info = reconnected.get_future();
  ASSERT_EQ(info.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  const ReconnectInfo i = info.get();
  EXPECT_EQ(i.redelivered, static_cast<uint32_t>(kPackets));
  EXPECT_EQ(i.cause.code(), absl::StatusCode::kCancelled) << i.cause;
  for (const Delivery& d : held) ASSERT_TRUE((*host)->Complete(d.id, d.payload).ok());
  for (int n = 0; n < kPackets; ++n) {
    absl::StatusOr<SendResult> r = results[n].get();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->payload, Padded(PayloadOf(n)));
  }
  // Redeliveries kmcld had queued before reading the completions may or may
  // not arrive; none reaches the tool.
  EXPECT_LE((*host)->stats().duplicates_dropped, static_cast<uint64_t>(kPackets));
  EXPECT_EQ((*host)->Receive(absl::Now() + absl::Milliseconds(100)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ((*host)->stats().deliveries, static_cast<uint64_t>(kPackets));
}

TEST_F(StreamTest, AttachToAMissingEndpointFailsWithTheDaemonsCode) {
  StartDaemon();
  v1::EndpointRef nowhere;
  nowhere.mutable_channel()->set_partition_id("default");
  nowhere.mutable_channel()->set_channel_id(99);
  nowhere.set_role(v1::ENDPOINT_ROLE_HOST);
  auto s = AttachedStream::Attach(direct_, nowhere);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound) << s.status();
}

// kmcld frees the endpoint under the stream (the guest closes the channel):
// the stream ends for good instead of re-attaching.
TEST_F(StreamTest, EndpointFreedEndsTheStream) {
  StartDaemon();
  auto channel = testing::OfferAndOpen(direct_, direct_);
  ASSERT_TRUE(channel.ok());
  auto guest = AttachedStream::Attach(direct_, channel->guest.endpoint());
  ASSERT_TRUE(guest.ok());
  ASSERT_TRUE(channel->guest.Close().ok());
  EXPECT_EQ((*guest)->Receive().status().code(), absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<SendResult> late = (*guest)->Send({"too late"}).get();
  EXPECT_EQ(late.status().code(), absl::StatusCode::kFailedPrecondition) << late.status();
  EXPECT_EQ((*guest)->stats().reconnects, 0u);
  EXPECT_EQ((*guest)->Close().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace kmcl::client
