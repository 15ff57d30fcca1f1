// Unit tests of the Endpoint adapter over a real in-process partition, with
// a fake stream in place of the gRPC reactor: credits, batching, clean and
// unclean detach, re-attach with the same delivery ids, protocol errors.
#include "daemon/endpoint.h"

#include <memory>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "kmcl_core/bus/partition.h"

namespace kmcld {
namespace {

using kmcl::v1::AttachRequest;
using kmcl::v1::AttachResponse;

// Records wake-ups; the test pulls messages with Next().
class FakeStream : public EndpointStream {
 public:
  void Wake() override {
    kmcl::MutexLock lock(&mu_);
    ++wakes_;
    cv_.SignalAll();
  }
  void EndpointGone(const absl::Status&) override {
    kmcl::MutexLock lock(&mu_);
    gone_ = true;
  }
  // Pulls the next message, waiting (bounded) for a wake-up if none is ready.
  bool Next(Endpoint& ep, AttachResponse* out) {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    for (;;) {
      uint64_t seen;
      {
        kmcl::MutexLock lock(&mu_);
        seen = wakes_;
      }
      out->Clear();
      if (ep.NextMessage(this, out)) return true;
      kmcl::MutexLock lock(&mu_);
      while (wakes_ == seen) {
        if (cv_.WaitWithDeadline(&mu_, deadline)) return false;
      }
    }
  }
  bool gone() {
    kmcl::MutexLock lock(&mu_);
    return gone_;
  }

 private:
  kmcl::Mutex mu_;
  kmcl::CondVar cv_;
  uint64_t wakes_ ABSL_GUARDED_BY(mu_) = 0;
  bool gone_ ABSL_GUARDED_BY(mu_) = false;
};

class EndpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kmcl::PartitionOptions o;
    o.memory_bytes = 64 << 20;
    partition_ = *kmcl::Partition::Create(o);
    EndpointLimits limits;
    limits.send_window = 16;
    limits.delivery_window = 8;
    limits.linger = absl::Hours(1);
    host_ = *Endpoint::Create(partition_, "p", kmcl::v1::ENDPOINT_ROLE_HOST, limits, log_, timer_);
    guest_ = *Endpoint::Create(partition_, "p", kmcl::v1::ENDPOINT_ROLE_GUEST, limits, log_, timer_);
    const kmcl::Guid type = *kmcl::Guid::Parse("11111111-2222-3333-4444-555555555555");
    ASSERT_TRUE(host_->channel().SetTargetInterfaceId(type, kmcl::Guid::Random()).ok());
    ASSERT_TRUE(host_->channel().Enable().ok());
    ASSERT_TRUE(host_->channel().Start().ok());
    ASSERT_TRUE(guest_->channel().SetTargetPnp(type, std::nullopt, 0).ok());
    ASSERT_TRUE(guest_->channel().Enable().ok());
    ASSERT_TRUE(guest_->WaitOpened(absl::Now() + absl::Seconds(20)).ok());
    EXPECT_EQ(guest_->channel().connection(), kmcl::ConnectionState::kOpened);
  }
  void TearDown() override {
    // The host first: a guest's close waits for the host to unmap the ring,
    // which waits for the deliveries the host holds.
    for (auto* ep : {&host_, &guest_}) {
      if (*ep == nullptr) continue;  // the test freed it
      (*ep)->EndStreamAndRelease();
      (*ep)->channel().Disable().IgnoreError();
      ep->reset();
    }
    timer_.Stop();
  }
  // Endpoint::Attach with the first message a tool would write.
  static absl::StatusOr<kmcl::v1::Attached> AttachTo(Endpoint& ep,
                                                     std::shared_ptr<FakeStream> stream,
                                                     uint32_t delivery_credits, uint32_t max_batch,
                                                     bool ack = false, uint64_t acked_through = 0) {
    AttachRequest first;
    first.mutable_attach()->set_delivery_credits(delivery_credits);
    first.mutable_attach()->set_max_batch(max_batch);
    first.mutable_attach()->set_ack_completions(ack);
    first.set_completions_acked_through(acked_through);
    return ep.Attach(std::move(stream), first);
  }
  static AttachRequest Sends(int n, uint64_t first_tag) {
    AttachRequest r;
    for (int i = 0; i < n; ++i) {
      auto* p = r.mutable_sends()->add_packets();
      p->set_tag(first_tag + i);
      p->set_payload("payload" + std::to_string(i));
      p->set_wait_for_completion(true);
    }
    return r;
  }
  // Pulls messages until `n` deliveries arrived.
  std::vector<kmcl::v1::ReceivedPacket> Deliveries(FakeStream& s, Endpoint& ep, size_t n,
                                                   int* messages = nullptr) {
    std::vector<kmcl::v1::ReceivedPacket> out;
    AttachResponse resp;
    while (out.size() < n && s.Next(ep, &resp)) {
      if (messages != nullptr && resp.has_received()) ++*messages;
      for (const auto& p : resp.received().packets()) out.push_back(p);
    }
    return out;
  }

  Timer timer_;
  EventLog log_{1000};
  std::shared_ptr<kmcl::Partition> partition_;
  std::shared_ptr<Endpoint> host_, guest_;
};

TEST_F(EndpointTest, DeliveriesRespectCreditsAndBatchSize) {
  auto hs = std::make_shared<FakeStream>();
  auto gs = std::make_shared<FakeStream>();
  auto attached = AttachTo(*host_, hs, /*delivery_credits=*/5, /*max_batch=*/2);
  ASSERT_TRUE(attached.ok());
  EXPECT_EQ(attached->send_credits(), 16u);
  ASSERT_TRUE(AttachTo(*guest_, gs, 0, 0).ok());
  ASSERT_TRUE(guest_->Handle(gs.get(), Sends(8, 100)).ok());
  int messages = 0;
  auto got = Deliveries(*hs, *host_, 5, &messages);
  ASSERT_EQ(got.size(), 5u);
  EXPECT_GE(messages, 3) << "at most 2 per batch";
  AttachResponse resp;
  EXPECT_FALSE(host_->NextMessage(hs.get(), &resp)) << "no credits left";
  AttachRequest credits;
  credits.mutable_delivery_credits()->set_credits(10);
  ASSERT_TRUE(host_->Handle(hs.get(), credits).ok());
  auto more = Deliveries(*hs, *host_, 3);
  ASSERT_EQ(more.size(), 3u);
  EXPECT_EQ(more[0].delivery_id(), got[4].delivery_id() + 1);
}

TEST_F(EndpointTest, SendsBeyondCreditsAndUnknownCompletionsAreErrors) {
  auto hs = std::make_shared<FakeStream>();
  auto gs = std::make_shared<FakeStream>();
  ASSERT_TRUE(AttachTo(*host_, hs, 0, 0).ok());
  ASSERT_TRUE(AttachTo(*guest_, gs, 0, 0).ok());
  EXPECT_EQ(guest_->Handle(gs.get(), Sends(17, 0)).code(), absl::StatusCode::kResourceExhausted);
  AttachRequest bad;
  bad.mutable_completions()->add_completions()->set_delivery_id(999);
  EXPECT_EQ(host_->Handle(hs.get(), bad).code(), absl::StatusCode::kNotFound);
  AttachRequest attach;
  attach.mutable_attach();
  EXPECT_EQ(host_->Handle(hs.get(), attach).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(host_->Handle(hs.get(), AttachRequest()).code(), absl::StatusCode::kInvalidArgument);
  auto other = std::make_shared<FakeStream>();
  EXPECT_EQ(AttachTo(*host_, other, 0, 0).status().code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(EndpointTest, UncleanDetachKeepsDeliveriesAndCompletionsForTheNextStream) {
  auto hs = std::make_shared<FakeStream>();
  auto gs = std::make_shared<FakeStream>();
  ASSERT_TRUE(AttachTo(*host_, hs, 0, 0).ok());
  ASSERT_TRUE(AttachTo(*guest_, gs, 0, 0).ok());
  ASSERT_TRUE(guest_->Handle(gs.get(), Sends(4, 10)).ok());
  auto got = Deliveries(*hs, *host_, 4);
  ASSERT_EQ(got.size(), 4u);
  host_->Detach(hs.get(), /*clean=*/false);
  guest_->Detach(gs.get(), /*clean=*/false);
  EXPECT_EQ(host_->held_deliveries(), 4u);
  auto hs2 = std::make_shared<FakeStream>();
  auto attached = AttachTo(*host_, hs2, 0, 0);
  ASSERT_TRUE(attached.ok());
  EXPECT_EQ(attached->redelivered(), 4u);
  auto again = Deliveries(*hs2, *host_, 4);
  ASSERT_EQ(again.size(), 4u);
  AttachRequest done;
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(again[i].delivery_id(), got[i].delivery_id());
    auto* c = done.mutable_completions()->add_completions();
    c->set_delivery_id(again[i].delivery_id());
    c->set_payload("ack");
  }
  ASSERT_TRUE(host_->Handle(hs2.get(), done).ok());
  // The guest's completions wait for its next stream (kept while none is
  // attached, or delivered live to the new one).
  auto gs2 = std::make_shared<FakeStream>();
  ASSERT_TRUE(AttachTo(*guest_, gs2, 0, 0).ok());
  std::vector<kmcl::v1::SendCompletion> completions;
  AttachResponse resp;
  while (completions.size() < 4 && gs2->Next(*guest_, &resp)) {
    for (const auto& c : resp.send_completions().completions()) completions.push_back(c);
  }
  ASSERT_EQ(completions.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(completions[i].tag(), 10u + i);
}

TEST_F(EndpointTest, CleanDetachCompletesHeldDeliveriesEmpty) {
  auto hs = std::make_shared<FakeStream>();
  auto gs = std::make_shared<FakeStream>();
  ASSERT_TRUE(AttachTo(*host_, hs, 0, 0).ok());
  ASSERT_TRUE(AttachTo(*guest_, gs, 0, 0).ok());
  ASSERT_TRUE(guest_->Handle(gs.get(), Sends(3, 0)).ok());
  ASSERT_EQ(Deliveries(*hs, *host_, 3).size(), 3u);
  host_->Detach(hs.get(), /*clean=*/true);
  EXPECT_EQ(host_->held_deliveries(), 0u);
  std::vector<kmcl::v1::SendCompletion> completions;
  AttachResponse resp;
  while (completions.size() < 3 && gs->Next(*guest_, &resp)) {
    for (const auto& c : resp.send_completions().completions()) completions.push_back(c);
  }
  ASSERT_EQ(completions.size(), 3u);
  for (const auto& c : completions) EXPECT_EQ(c.payload(), "");
}

// Pulls messages until `n` send completions arrived; adds up the send
// credits seen on the way.
std::vector<kmcl::v1::SendCompletion> Completions(FakeStream& s, Endpoint& ep, size_t n,
                                                  uint64_t* credits = nullptr) {
  std::vector<kmcl::v1::SendCompletion> out;
  AttachResponse resp;
  while (out.size() < n && s.Next(ep, &resp)) {
    for (const auto& c : resp.send_completions().completions()) out.push_back(c);
    if (credits != nullptr) *credits += resp.send_credits().credits();
  }
  return out;
}

// An acknowledging guest stream: completions written to a stream that broke
// before the tool acknowledged them come again on the next stream, with the
// same ids; the send credits come back with the acknowledgement.
TEST_F(EndpointTest, UnacknowledgedCompletionsComeAgainAfterAReattach) {
  auto hs = std::make_shared<FakeStream>();
  auto gs = std::make_shared<FakeStream>();
  ASSERT_TRUE(AttachTo(*host_, hs, 0, 0).ok());
  ASSERT_TRUE(AttachTo(*guest_, gs, 0, 0, /*ack=*/true).ok());
  ASSERT_TRUE(guest_->Handle(gs.get(), Sends(4, 10)).ok());
  AttachRequest done;
  for (const auto& d : Deliveries(*hs, *host_, 4)) {
    done.mutable_completions()->add_completions()->set_delivery_id(d.delivery_id());
  }
  ASSERT_TRUE(host_->Handle(hs.get(), done).ok());
  uint64_t credits = 0;
  auto first = Completions(*gs, *guest_, 4, &credits);
  ASSERT_EQ(first.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(first[i].completion_id(), 1u + i);
  AttachResponse resp;
  EXPECT_FALSE(guest_->NextMessage(gs.get(), &resp)) << "credits wait for the acknowledgement";
  EXPECT_EQ(credits, 0u);
  AttachRequest too_far;
  too_far.set_completions_acked_through(5);
  EXPECT_EQ(guest_->Handle(gs.get(), too_far).code(), absl::StatusCode::kInvalidArgument);

  // The stream broke with all four written and none acknowledged; the next
  // Attach acknowledges the first (its ack was lost with the old stream).
  guest_->Detach(gs.get(), /*clean=*/false);
  auto gs2 = std::make_shared<FakeStream>();
  auto attached = AttachTo(*guest_, gs2, 0, 0, /*ack=*/true, /*acked_through=*/1);
  ASSERT_TRUE(attached.ok()) << attached.status();
  EXPECT_EQ(attached->recovered_completions(), 3u);
  EXPECT_EQ(attached->send_credits(), 16u - 3u) << "kept completions use the window";
  auto again = Completions(*gs2, *guest_, 3);
  ASSERT_EQ(again.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(again[i].completion_id(), 2u + i);
    EXPECT_EQ(again[i].tag(), 11u + i);
  }
  AttachRequest ack;
  ack.set_completions_acked_through(4);
  ASSERT_TRUE(guest_->Handle(gs2.get(), ack).ok());
  ASSERT_TRUE(gs2->Next(*guest_, &resp));
  EXPECT_EQ(resp.send_credits().credits(), 3u);

  // A stream without acknowledgement forgets what it wrote, ids cleared.
  guest_->Detach(gs2.get(), /*clean=*/false);
  auto gs3 = std::make_shared<FakeStream>();
  attached = AttachTo(*guest_, gs3, 0, 0);
  ASSERT_TRUE(attached.ok());
  EXPECT_EQ(attached->recovered_completions(), 0u);
  ASSERT_TRUE(guest_->Handle(gs3.get(), Sends(1, 20)).ok());
  auto one = Deliveries(*hs, *host_, 1);
  ASSERT_EQ(one.size(), 1u);
  AttachRequest complete_one;
  complete_one.mutable_completions()->add_completions()->set_delivery_id(one[0].delivery_id());
  ASSERT_TRUE(host_->Handle(hs.get(), complete_one).ok());
  auto plain = Completions(*gs3, *guest_, 1);
  ASSERT_EQ(plain.size(), 1u);
  EXPECT_EQ(plain[0].tag(), 20u);
  EXPECT_EQ(plain[0].completion_id(), 0u);
}

TEST_F(EndpointTest, EndStreamAndReleaseTellsTheStream) {
  auto hs = std::make_shared<FakeStream>();
  ASSERT_TRUE(AttachTo(*host_, hs, 0, 0).ok());
  EXPECT_TRUE(host_->attached());
  host_->EndStreamAndRelease();
  EXPECT_TRUE(hs->gone());
  EXPECT_FALSE(host_->attached());
}

// An endpoint being freed completes what arrives after its release: the
// peer may send until the Disable turns incoming off, and that Disable
// waits for every delivery. It used to hold them for a stream that could
// never attach, and the Disable waited forever.
TEST_F(EndpointTest, DeliveriesAfterTheReleaseAreCompletedAtOnce) {
  auto hs = std::make_shared<FakeStream>();
  ASSERT_TRUE(AttachTo(*host_, hs, 0, 0).ok());
  guest_->EndStreamAndRelease();
  ASSERT_TRUE(host_->Handle(hs.get(), Sends(3, 0)).ok());
  std::vector<kmcl::v1::SendCompletion> done = Completions(*hs, *host_, 3);
  ASSERT_EQ(done.size(), 3u);
  for (const auto& c : done) EXPECT_EQ(c.payload(), "");
  EXPECT_EQ(guest_->held_deliveries(), 0u);
  auto late = std::make_shared<FakeStream>();
  EXPECT_EQ(AttachTo(*guest_, late, 4, 4).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(guest_->channel().Disable().ok());
}

// Dropping the last reference to an endpoint whose channel is still opened
// (a restore that lost a race with DeletePartition used to) closes the
// channel first; its Closed callback names the channel, whose relid the
// destructor must still be able to read.
TEST_F(EndpointTest, DroppingAnOpenedEndpointClosesItFirst) {
  host_->EndStreamAndRelease();
  guest_->EndStreamAndRelease();
  const uint32_t relid = guest_->relid();
  ASSERT_NE(relid, 0u);
  const uint64_t before = log_.last_sequence();
  guest_.reset();  // still opened
  std::vector<kmcl::v1::Event> events;
  ASSERT_TRUE(log_.Read(before, 1000, &events).ok());
  bool closed = false;
  for (const auto& e : events) {
    if (e.role() == kmcl::v1::ENDPOINT_ROLE_GUEST && e.kind() == kmcl::v1::EVENT_KIND_CLOSED) {
      closed = true;
      EXPECT_EQ(e.channel().channel_id(), relid);
    }
  }
  EXPECT_TRUE(closed);
}

// An endpoint keeps its partition: a call that still holds one after the
// partition's owner let go tears the channel down against a live partition.
TEST_F(EndpointTest, EndpointsKeepTheirPartitionAlive) {
  std::weak_ptr<kmcl::Partition> weak = partition_;
  partition_.reset();  // as ~PartitionEntry after DeletePartition
  EXPECT_FALSE(weak.expired());
  guest_->EndStreamAndRelease();
  ASSERT_TRUE(guest_->channel().Disable().ok());
  guest_.reset();
  EXPECT_FALSE(weak.expired());  // the host holds it
  host_->EndStreamAndRelease();
  ASSERT_TRUE(host_->channel().Disable().ok());
  host_.reset();
  EXPECT_TRUE(weak.expired());
}

}  // namespace
}  // namespace kmcld
