// Save and restore: a partition with its channels, in the middle of traffic
// with transactions outstanding in both directions, restored into a fresh
// partition with fresh endpoints; 100 cycles; hostile blobs. The channels
// run on a ManualExecutor the test drives (act, settle, assert); the
// mid-traffic test also runs on the shared pools (SaveRestoreTraffic).
#include <atomic>
#include <cstring>
#include <map>
#include <random>
#include <set>

#include "gtest/gtest.h"
#include "kmcl_core/runtime/channel_test_util.h"
#include "kmcl_core/saved/saved_blob.h"

namespace kmcl::testing {
namespace {

// A driver (either role) that sends numbered transactions, echoes what it
// receives, and saves/restores its per-packet state (the sequence number).
class Driver {
 public:
  explicit Driver(std::string name) : name_(std::move(name)) {}

  ChannelCallbacks Callbacks(Recorder& r) {
    ChannelCallbacks cb = RecordingCallbacks(r, name_);
    cb.process_packet = [this](Channel& ch, Delivery& d, std::span<const uint8_t> buf, uint32_t) {
      received_++;
      ch.Complete(d, buf);  // echo: the completion carries the sequence back
    };
    cb.save_packet = [](Channel&, Packet& p) -> absl::StatusOr<std::vector<uint8_t>> {
      uint64_t seq = reinterpret_cast<uint64_t>(p.pointer());
      std::vector<uint8_t> blob(8);
      std::memcpy(blob.data(), &seq, 8);
      return blob;
    };
    cb.restore_packet = [this](Channel& ch, std::span<const uint8_t> lib,
                               std::span<const uint8_t> saved) -> absl::Status {
      if (saved.size() != 8) return absl::InvalidArgumentError("bad driver blob");
      uint64_t seq;
      std::memcpy(&seq, saved.data(), 8);
      Packet* p = ch.AllocatePacket();
      Arm(*p, seq);
      restored_packets_++;
      return ch.RestorePacket(*p, lib);
    };
    return cb;
  }

  void Send(Channel& ch, uint64_t seq) {
    Packet* p = ch.AllocatePacket();
    Arm(*p, seq);
    std::vector<uint8_t> payload(16, 0);
    std::memcpy(payload.data(), &seq, 8);
    {
      MutexLock lock(&mu_);
      sent_.insert(seq);
    }
    ASSERT_TRUE(ch.Send(*p, payload, {}, kFormatFlagWaitForCompletion).ok());
  }

  // Every sequence sent has completed (once each: see bad()).
  bool Caught() {
    MutexLock lock(&mu_);
    return completed_.size() >= sent_.size();
  }
  // Every sequence sent completed exactly once, successfully, with its echo.
  bool AllCompleted() {
    MutexLock lock(&mu_);
    return completed_.size() == sent_.size() && bad_ == 0;
  }
  size_t completed() {
    MutexLock lock(&mu_);
    return completed_.size();
  }
  uint64_t bad() {
    MutexLock lock(&mu_);
    return bad_;
  }
  std::atomic<uint64_t> received_{0};
  std::atomic<uint64_t> restored_packets_{0};

 private:
  void Arm(Packet& p, uint64_t seq) {
    p.set_pointer(reinterpret_cast<void*>(seq));
    p.set_completion_routine([this](Packet& pk, NTSTATUS st, std::span<const uint8_t> data) {
      uint64_t seq = reinterpret_cast<uint64_t>(pk.pointer());
      uint64_t echoed = UINT64_MAX;
      if (data.size() >= 8) std::memcpy(&echoed, data.data(), 8);
      pk.channel().FreePacket(&pk).IgnoreError();
      MutexLock lock(&mu_);
      if (st != kStatusSuccess || echoed != seq || !completed_.insert(seq).second) bad_++;
    });
  }

  std::string name_;
  Mutex mu_;
  std::set<uint64_t> sent_, completed_;
  uint64_t bad_ = 0;
};

class SaveRestoreBase : public ::testing::Test {
 protected:
  explicit SaveRestoreBase(Execution mode) : exec_(mode) {}

  struct World {
    std::unique_ptr<Partition> partition;
    std::unique_ptr<Channel> host, guest;
  };

  void SetUp() override {
    PartitionOptions o;
    o.memory_bytes = 64 << 20;
    world_.partition = *Partition::Create(o);
    world_.host = *Channel::Allocate(*world_.partition, EndpointRole::kHost, executors());
    ASSERT_TRUE(world_.host->SetTargetInterfaceId(kTestType, kTestInstance).ok());
    ASSERT_TRUE(world_.host->SetCallbacks(host_driver_.Callbacks(rec_)).ok());
    ASSERT_TRUE(world_.host->Enable().ok());
    ASSERT_TRUE(world_.host->Start().ok());
    world_.guest = *Channel::Allocate(*world_.partition, EndpointRole::kGuest, executors());
    ASSERT_TRUE(world_.guest->SetTargetPnp(kTestType, std::nullopt).ok());
    ASSERT_TRUE(world_.guest->SetCallbacks(guest_driver_.Callbacks(rec_)).ok());
    ASSERT_TRUE(world_.guest->Enable().ok());
    ASSERT_TRUE(exec_.Recorded(rec_, "guest:post_started"));
    ASSERT_TRUE(exec_.Recorded(rec_, "host:post_started"));
  }
  void TearDown() override {
    if (world_.guest) world_.guest->Disable().IgnoreError();
    if (world_.host) world_.host->Disable().IgnoreError();
    if (exec_.manual()) {
      EXPECT_EQ(exec_.RunUntilIdle(), 0u) << "work queued after both channels were disabled";
    }
  }

  ChannelExecutors executors() { return exec_.channel_executors(); }

  // Settles the channels; then every sequence `d` sent completed exactly
  // once, successfully, with its echo.
  bool AllCompleted(Driver& d) {
    exec_.Settled([&] { return d.Caught(); });
    return d.AllCompleted();
  }

  // Pauses both endpoints, saves everything, discards the old world and
  // restores a new one from the blobs.
  void Cycle(size_t* blob_bytes = nullptr) {
    ASSERT_TRUE(world_.host->Pause().ok());
    ASSERT_TRUE(world_.guest->Pause().ok());
    absl::StatusOr<std::string> host_blob = world_.host->Save();
    ASSERT_TRUE(host_blob.ok()) << host_blob.status();
    absl::StatusOr<std::string> guest_blob = world_.guest->Save();
    ASSERT_TRUE(guest_blob.ok()) << guest_blob.status();
    absl::StatusOr<std::string> partition_blob = world_.partition->Save();
    ASSERT_TRUE(partition_blob.ok()) << partition_blob.status();
    if (blob_bytes != nullptr) {
      *blob_bytes = host_blob->size() + guest_blob->size() + partition_blob->size();
    }
    last_host_blob_ = *host_blob;
    last_partition_blob_ = *partition_blob;
    // The old world goes away (its Disable rescinds inside the old partition).
    world_.guest.reset();
    world_.host.reset();
    world_.partition.reset();

    absl::StatusOr<std::unique_ptr<Partition>> p = Partition::Restore(*partition_blob);
    ASSERT_TRUE(p.ok()) << p.status();
    world_.partition = *std::move(p);
    world_.host = *Channel::Allocate(*world_.partition, EndpointRole::kHost, executors());
    ASSERT_TRUE(world_.host->SetCallbacks(host_driver_.Callbacks(rec_)).ok());
    ASSERT_TRUE(world_.host->Restore(*host_blob).ok());
    world_.guest = *Channel::Allocate(*world_.partition, EndpointRole::kGuest, executors());
    ASSERT_TRUE(world_.guest->SetCallbacks(guest_driver_.Callbacks(rec_)).ok());
    ASSERT_TRUE(world_.guest->Restore(*guest_blob).ok());
    ASSERT_TRUE(world_.host->Enable().ok());
    ASSERT_TRUE(world_.guest->Enable().ok());
    ASSERT_TRUE(world_.host->Start().ok());
    ASSERT_TRUE(world_.guest->Start().ok());
  }

  TestExecutors exec_;  // outlives the channels
  Recorder rec_;
  Driver host_driver_{"host"};
  Driver guest_driver_{"guest"};
  World world_;
  std::string last_host_blob_, last_partition_blob_;
};

// On the ManualExecutor.
class SaveRestore : public SaveRestoreBase {
 protected:
  SaveRestore() : SaveRestoreBase(Execution::kManual) {}
};

// Traffic across save and restore, on the ManualExecutor and on the pools
// (so a restore with the real executor's tasks racing it stays covered).
class SaveRestoreTraffic : public SaveRestoreBase, public ::testing::WithParamInterface<Execution> {
 protected:
  SaveRestoreTraffic() : SaveRestoreBase(GetParam()) {}
};

INSTANTIATE_TEST_SUITE_P(Executors, SaveRestoreTraffic,
                         ::testing::Values(Execution::kManual, Execution::kThreaded),
                         ExecutionName);

TEST_P(SaveRestoreTraffic, MidTrafficWithTransactionsOutstandingInBothDirections) {
  // Some traffic completes normally first.
  for (uint64_t i = 0; i < 100; ++i) {
    guest_driver_.Send(*world_.guest, i);
    host_driver_.Send(*world_.host, 1000 + i);
  }
  ASSERT_TRUE(AllCompleted(guest_driver_));
  ASSERT_TRUE(AllCompleted(host_driver_));
  // Now stop both sides from draining and leave transactions in flight both ways.
  ASSERT_TRUE(world_.host->Pause().ok());
  ASSERT_TRUE(world_.guest->Pause().ok());
  // Neither side drains now: these stay in the rings, outstanding both ways.
  for (uint64_t i = 100; i < 150; ++i) guest_driver_.Send(*world_.guest, i);
  for (uint64_t i = 1100; i < 1150; ++i) host_driver_.Send(*world_.host, i);
  ASSERT_EQ(world_.guest->Snapshot().outstanding_transactions, 50u);
  ASSERT_EQ(world_.host->Snapshot().outstanding_transactions, 50u);
  const uint64_t before = guest_driver_.completed() + host_driver_.completed();
  ASSERT_NO_FATAL_FAILURE(Cycle());
  EXPECT_GT(guest_driver_.restored_packets_.load() + host_driver_.restored_packets_.load(), 0u)
      << "in-flight transactions went through the drivers' restore callbacks";
  // Traffic resumes: every transaction completes exactly once, nothing lost.
  EXPECT_TRUE(AllCompleted(guest_driver_)) << guest_driver_.completed();
  EXPECT_TRUE(AllCompleted(host_driver_)) << host_driver_.completed();
  EXPECT_GE(guest_driver_.completed() + host_driver_.completed(), before);
  EXPECT_EQ(guest_driver_.bad() + host_driver_.bad(), 0u);
  // And new traffic flows on the restored channel.
  guest_driver_.Send(*world_.guest, 5000);
  host_driver_.Send(*world_.host, 6000);
  EXPECT_TRUE(AllCompleted(guest_driver_));
  EXPECT_TRUE(AllCompleted(host_driver_));
}

TEST_F(SaveRestore, HundredCyclesInARow) {
  uint64_t seq = 0;
  for (int cycle = 0; cycle < 100; ++cycle) {
    for (int i = 0; i < 5; ++i) {
      guest_driver_.Send(*world_.guest, seq++);
      host_driver_.Send(*world_.host, 1'000'000 + seq);
    }
    ASSERT_NO_FATAL_FAILURE(Cycle()) << "cycle " << cycle;
  }
  EXPECT_TRUE(AllCompleted(guest_driver_)) << guest_driver_.completed() << " bad " << guest_driver_.bad();
  EXPECT_TRUE(AllCompleted(host_driver_)) << host_driver_.completed() << " bad " << host_driver_.bad();
  EXPECT_EQ(guest_driver_.completed(), 500u);
  EXPECT_EQ(host_driver_.completed(), 500u);
}

TEST_F(SaveRestore, EveryTruncationAndBitFlipFailsCleanly) {
  ASSERT_NO_FATAL_FAILURE(Cycle());
  const std::string channel_blob = last_host_blob_;
  const std::string partition_blob = last_partition_blob_;
  // Every truncation of the channel blob; a strided sample of the larger
  // partition blob plus its last 64 lengths.
  for (size_t n = 0; n < channel_blob.size(); ++n) {
    auto ch = *Channel::Allocate(*world_.partition, EndpointRole::kHost, executors());
    absl::Status s = ch->Restore(channel_blob.substr(0, n));
    ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << "truncated to " << n;
    EXPECT_FALSE(ch->restored());
  }
  for (size_t n = 0; n < partition_blob.size();
       n += (n + 64 < partition_blob.size() ? 97 : 1)) {
    ASSERT_EQ(Partition::Restore(partition_blob.substr(0, n)).status().code(),
              absl::StatusCode::kInvalidArgument)
        << "truncated to " << n;
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::string flipped = i % 2 ? channel_blob : partition_blob;
    flipped[rng() % flipped.size()] ^= static_cast<char>(1u << (rng() % 8));
    absl::Status s = i % 2 ? (*Channel::Allocate(*world_.partition, EndpointRole::kHost,
                                                 executors()))
                                 ->Restore(flipped)
                           : Partition::Restore(flipped).status();
    ASSERT_FALSE(s.ok()) << "flip " << i;
    ASSERT_TRUE(s.code() == absl::StatusCode::kInvalidArgument ||
                s.code() == absl::StatusCode::kFailedPrecondition)
        << s;
  }
  // The live world was never touched.
  guest_driver_.Send(*world_.guest, 77);
  EXPECT_TRUE(AllCompleted(guest_driver_));
}

TEST_F(SaveRestore, RejectsNewerVersionsWrongKindAndWrongRole) {
  ASSERT_NO_FATAL_FAILURE(Cycle());
  saved::v1::SavedBlob newer;
  ASSERT_TRUE(newer.ParseFromString(last_host_blob_));
  newer.set_format_version(kSavedStateFormatVersion + 1);
  auto ch = *Channel::Allocate(*world_.partition, EndpointRole::kHost, executors());
  absl::Status s = ch->Restore(newer.SerializeAsString());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("format version 2"), std::string::npos) << s;
  EXPECT_EQ(Partition::Restore(last_host_blob_).status().code(), absl::StatusCode::kInvalidArgument)
      << "a channel blob is not a partition";
  auto client = *Channel::Allocate(*world_.partition, EndpointRole::kGuest, executors());
  EXPECT_EQ(client->Restore(last_host_blob_).code(), absl::StatusCode::kInvalidArgument)
      << "a server's blob does not restore a client";
  // A blob for a channel this partition does not have: Enable refuses.
  PartitionOptions o;
  o.memory_bytes = 16 << 20;
  auto empty = *Partition::Create(o);
  auto stranger = *Channel::Allocate(*empty, EndpointRole::kHost, executors());
  ASSERT_TRUE(stranger->Restore(last_host_blob_).ok());
  EXPECT_EQ(stranger->Enable().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(SaveRestoreForceNewChannel, AbandonsTheOldInstanceAndOffersAfresh) {
  TestExecutors exec;  // manual; outlives the channels
  PartitionOptions o;
  o.memory_bytes = 64 << 20;
  auto partition = *Partition::Create(o);
  Recorder r;
  auto host = *Channel::Allocate(*partition, EndpointRole::kHost, exec.channel_executors());
  ASSERT_TRUE(host->SetTargetInterfaceId(kTestType, kTestInstance).ok());
  ASSERT_TRUE(host->SetServerFlags(kServerFlagForceNewChannel).ok());
  ASSERT_TRUE(host->SetCallbacks(RecordingCallbacks(r, "host")).ok());
  ASSERT_TRUE(host->Enable().ok());
  auto guest = *Channel::Allocate(*partition, EndpointRole::kGuest, exec.channel_executors());
  ASSERT_TRUE(guest->SetTargetPnp(kTestType, std::nullopt).ok());
  ASSERT_TRUE(guest->SetCallbacks(RecordingCallbacks(r, "guest")).ok());
  ASSERT_TRUE(guest->Enable().ok());
  ASSERT_TRUE(exec.Recorded(r, "guest:post_started"));
  ASSERT_TRUE(guest->Pause().ok());
  // A transaction in flight when saved.
  Packet* p = host->AllocatePacket();
  std::vector<uint8_t> payload(8, 1);
  ASSERT_TRUE(host->Send(*p, payload, {}, kFormatFlagWaitForCompletion).ok());
  const uint32_t old_relid = host->relid();
  auto host_blob = *host->Save();
  auto partition_blob = *partition->Save();
  guest->Disable().IgnoreError();
  host->Disable().IgnoreError();
  guest.reset();
  host.reset();
  partition.reset();

  auto restored = *Partition::Restore(partition_blob);
  std::atomic<int> cancelled{0};
  auto host2 = *Channel::Allocate(*restored, EndpointRole::kHost, exec.channel_executors());
  ChannelCallbacks cb = RecordingCallbacks(r, "host2");
  cb.restore_packet = [&cancelled](Channel& ch, std::span<const uint8_t> lib,
                                   std::span<const uint8_t>) {
    Packet* packet = ch.AllocatePacket();
    packet->set_completion_routine([&cancelled](Packet& pk, NTSTATUS st, std::span<const uint8_t>) {
      if (st == kStatusCancelled) cancelled++;
      pk.channel().FreePacket(&pk).IgnoreError();
    });
    return ch.RestorePacket(*packet, lib);
  };
  ASSERT_TRUE(host2->SetCallbacks(cb).ok());
  ASSERT_TRUE(host2->Restore(host_blob).ok());
  ASSERT_TRUE(host2->Enable().ok());
  EXPECT_EQ(cancelled.load(), 1) << "the old instance's transaction ends cancelled";
  EXPECT_NE(host2->relid(), 0u);
  EXPECT_NE(host2->relid(), old_relid) << "the old relid is still held until the guest releases it";
  ASSERT_TRUE(host2->Start().ok());
  auto guest2 = *Channel::Allocate(*restored, EndpointRole::kGuest, exec.channel_executors());
  ASSERT_TRUE(guest2->SetTargetPnp(kTestType, std::nullopt).ok());
  ASSERT_TRUE(guest2->SetCallbacks(RecordingCallbacks(r, "guest2")).ok());
  ASSERT_TRUE(guest2->Enable().ok());
  ASSERT_TRUE(exec.Recorded(r, "host2:post_started")) << "the fresh offer is opened";
  ASSERT_TRUE(guest2->Disable().ok());
  ASSERT_TRUE(host2->Disable().ok());
  EXPECT_EQ(exec.RunUntilIdle(), 0u) << "work queued after both channels were disabled";
}

TEST_F(SaveRestore, SaveRefusesARunningChannel) {
  EXPECT_EQ(world_.host->Save().status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace kmcl::testing
