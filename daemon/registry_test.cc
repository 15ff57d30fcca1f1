// Unit tests of the Registry's ownership rules over real in-process
// partitions: the one partition id rule (create, restore), an endpoint that
// a running call still holds after a forced DeletePartition, and the
// shutdown path that frees every partition whatever its state.
#include "daemon/registry.h"

#include <memory>
#include <string>
#include <vector>

#include "daemon/bundle.h"
#include "gtest/gtest.h"
#include "kmcl_core/bus/partition.h"

namespace kmcld {
namespace {

const kmcl::Guid kType = *kmcl::Guid::Parse("11111111-2222-3333-4444-555555555555");

std::unique_ptr<kmcl::Partition> NewPartition(const std::string& id) {
  kmcl::PartitionOptions o;
  o.id = id;
  o.memory_bytes = 32 << 20;
  return *kmcl::Partition::Create(o);
}

class RegistryTest : public ::testing::Test {
 protected:
  ~RegistryTest() override {
    registry_.reset();
    timer_.Stop();
  }
  std::shared_ptr<PartitionEntry> Add(const std::string& id) {
    auto entry = registry_->AddPartition(NewPartition(id));
    EXPECT_TRUE(entry.ok()) << entry.status();
    return entry.ok() ? *entry : nullptr;
  }
  // A host endpoint offering kType (running) and a guest endpoint that
  // opened it, both registered in `p` as the channel services do.
  std::pair<std::shared_ptr<Endpoint>, std::shared_ptr<Endpoint>> OpenPair(
      const std::shared_ptr<PartitionEntry>& p) {
    auto make = [&](Endpoint::Role role) {
      return *Endpoint::Create(p->shared_partition(), p->id(), role, registry_->limits().endpoint,
                               registry_->log(), registry_->timer(), p->peer_log);
    };
    std::shared_ptr<Endpoint> host = make(kmcl::v1::ENDPOINT_ROLE_HOST);
    std::shared_ptr<Endpoint> guest = make(kmcl::v1::ENDPOINT_ROLE_GUEST);
    EXPECT_TRUE(host->channel().SetTargetInterfaceId(kType, kmcl::Guid::Random()).ok());
    EXPECT_TRUE(host->channel().Enable().ok());
    EXPECT_TRUE(host->channel().Start().ok());
    EXPECT_TRUE(guest->channel().SetTargetPnp(kType, std::nullopt, 0).ok());
    EXPECT_TRUE(guest->channel().Enable().ok());
    EXPECT_TRUE(guest->WaitOpened(absl::Now() + absl::Seconds(20)).ok());
    kmcl::MutexLock lock(&p->mu);
    p->hosts[{host->relid(), 1}] = host;
    p->guests.push_back(guest);
    return {host, guest};
  }
  bool Deleted(const std::string& id) const {
    std::vector<kmcl::v1::Event> events;
    EXPECT_TRUE(log_.Read(0, 10000, &events).ok());
    for (const auto& e : events) {
      if (e.kind() == kmcl::v1::EVENT_KIND_PARTITION_DELETED && e.partition_id() == id) return true;
    }
    return false;
  }

  Timer timer_;
  EventLog log_{10000};
  std::unique_ptr<Registry> registry_ = std::make_unique<Registry>(RegistryLimits{}, log_, timer_);
};

TEST(ValidatePartitionIdTest, OneRule) {
  for (const char* ok : {"a", "p-1", "0", "abc-def-123"}) EXPECT_TRUE(ValidatePartitionId(ok).ok()) << ok;
  EXPECT_TRUE(ValidatePartitionId(std::string(63, 'a')).ok());
  for (const std::string& bad : {std::string(""), std::string("a/b"), std::string("*"), std::string(".."),
                                 std::string("A"), std::string("a\nb"), std::string(64, 'a'),
                                 std::string(70000, 'x')}) {
    absl::Status s = ValidatePartitionId(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad.substr(0, 10);
    EXPECT_NE(s.message().find("1 to 63 characters of [a-z0-9-]"), absl::string_view::npos);
    EXPECT_LT(s.message().size(), 200u);  // the id is cut, not echoed whole
    EXPECT_EQ(s.message().find('\n'), absl::string_view::npos);  // escaped
  }
}

TEST_F(RegistryTest, AddPartitionRefusesAnInvalidId) {
  auto entry = registry_->AddPartition(NewPartition("a/b"));
  EXPECT_EQ(entry.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(registry_->ListPartitions().empty());
}

TEST_F(RegistryTest, RestoreUnderAnInvalidIdIsRefused) {
  std::shared_ptr<PartitionEntry> src = Add("src");
  OpenPair(src);
  auto blob = SavePartitionBundle(*registry_, "src", /*stay_paused=*/false);
  ASSERT_TRUE(blob.ok()) << blob.status();
  for (const std::string& bad : {std::string("a/b"), std::string("*"), std::string(".."),
                                 std::string("a\nb"), std::string(70000, 'x')}) {
    auto restored = RestorePartitionBundle(*registry_, *blob, bad);
    EXPECT_EQ(restored.status().code(), absl::StatusCode::kInvalidArgument) << bad.substr(0, 10);
    EXPECT_NE(restored.status().message().find("[a-z0-9-]"), absl::string_view::npos);
  }
  EXPECT_EQ(registry_->ListPartitions().size(), 1u);
  auto restored = RestorePartitionBundle(*registry_, *blob, "dst");
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_TRUE(registry_->DeletePartition("dst", /*force=*/true).ok());
}

// A CloseChannel running on the blocking pool holds its endpoint while a
// forced DeletePartition frees the partition's entry: dropping the endpoint
// afterwards tears its channel down against a live partition, which goes
// with the endpoint.
TEST_F(RegistryTest, AnEndpointACallHoldsOutlivesDeletePartition) {
  std::shared_ptr<PartitionEntry> p = Add("rk");
  auto [host, guest] = OpenPair(p);
  ASSERT_TRUE(registry_->FreeEndpoint(p, guest).ok());  // the close claimed it
  host.reset();
  ASSERT_TRUE(registry_->DeletePartition("rk", /*force=*/true).ok());
  std::weak_ptr<kmcl::Partition> weak = p->shared_partition();
  p.reset();  // the registry and the call let go of the entry
  EXPECT_FALSE(weak.expired());
  guest.reset();  // the call ends (Channel teardown: Partition::CancelConnect)
  EXPECT_TRUE(weak.expired());
}

// Shutdown frees every partition, also one DeletePartition refuses (pinned
// by the --demo traffic), with its endpoints before its partition.
TEST_F(RegistryTest, DestroyingTheRegistryFreesEveryPartition) {
  std::shared_ptr<PartitionEntry> p = Add("pinned");
  OpenPair(p);
  p->Pin();
  EXPECT_EQ(registry_->DeletePartition("pinned", true).code(), absl::StatusCode::kFailedPrecondition);
  std::weak_ptr<kmcl::Partition> weak = p->shared_partition();
  p.reset();
  registry_.reset();
  EXPECT_TRUE(Deleted("pinned"));
  EXPECT_TRUE(weak.expired());
}

// A guest buffer a call still uses (a memory transfer, a GPADL being
// created over it) is not freed: its pages could otherwise become another
// channel's rings under that call. Once the use ends it frees.
TEST_F(RegistryTest, ABufferInUseIsNotFreed) {
  std::shared_ptr<PartitionEntry> p = Add("buffers");
  uint64_t id;
  std::vector<uint64_t> pfns;
  {
    kmcl::MutexLock lock(&p->mu);
    auto allocated = p->partition().memory().AllocatePages(2);
    ASSERT_TRUE(allocated.ok()) << allocated.status();
    GuestBuffer b;
    b.buffer_id = id = p->next_buffer_id++;
    b.byte_count = 2 * 4096;
    b.pfns = pfns = *allocated;
    p->buffer_bytes += b.byte_count;
    p->buffers.emplace(id, std::move(b));
  }
  EXPECT_EQ(p->FreeBuffer(id + 1).code(), absl::StatusCode::kNotFound);
  {
    BufferUse use;
    {
      kmcl::MutexLock lock(&p->mu);
      use = UseBuffersLocked(p, {id});
    }
    BufferUse moved(std::move(use));  // the use moves with it
    absl::Status s = p->FreeBuffer(id);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_NE(s.message().find("in use"), absl::string_view::npos) << s;
  }
  EXPECT_TRUE(p->FreeBuffer(id).ok());
  kmcl::MutexLock lock(&p->mu);
  EXPECT_TRUE(p->buffers.empty());
  EXPECT_EQ(p->buffer_bytes, 0u);
  // The pages went back to the allocator: it hands them out again.
  auto again = p->partition().memory().AllocatePages(2);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, pfns);
}

}  // namespace
}  // namespace kmcld
