// kmcld's extension to the KMCL surface (kmcl_api.h, "Emulation helpers"):
// KmclChannelInitSetPeerErrorCallback, the one callback KMCL does not have.
// A guest that corrupts its outgoing ring is reported to the host driver
// once per detection, with what was wrong, and again after the channel is
// opened afresh.
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "kmcl_core/kmcl/kmcl_conformance.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl::conformance {
namespace {

KMCL_SUITE(KmclChannelInitSetPeerErrorCallback)

Mutex g_problems_mu;
std::vector<std::string>* g_problems ABSL_GUARDED_BY(g_problems_mu) = nullptr;

VOID RecordPeerError(VMBCHANNEL channel, const char* problem) {
  auto* e = static_cast<Endpoint*>(::VmbChannelGetPointer(channel));
  {
    MutexLock lock(&g_problems_mu);
    g_problems->push_back(problem);
  }
  e->rec->Add(e->name + ":peer_error");
}

class PeerErrorTest : public KmclChannelInitSetPeerErrorCallback {
 protected:
  void SetUp() override {
    KmclChannelInitSetPeerErrorCallback::SetUp();
    MutexLock lock(&g_problems_mu);
    g_problems = &problems_;
  }
  void TearDown() override {
    KmclChannelInitSetPeerErrorCallback::TearDown();  // no callback after this
    MutexLock lock(&g_problems_mu);
    g_problems = nullptr;
  }
  std::vector<std::string> Problems() {
    MutexLock lock(&g_problems_mu);
    return problems_;
  }
  // The host's channel with the callback, enabled and started.
  VMBCHANNEL HostWithCallback() {
    VMBCHANNEL s = Server(*host_, /*enable=*/false);
    EXPECT_EQ(::KmclChannelInitSetPeerErrorCallback(s, RecordPeerError), STATUS_SUCCESS);
    EXPECT_EQ(kmcl_.VmbChannelEnable(s), STATUS_SUCCESS);
    kmcl_.VmbChannelStart(s);
    return s;
  }
  // What a hostile guest does: writes an impossible write_index into the
  // control page of its ring to the host (the first page of the ring
  // GPADL), through the guest's own memory.
  void CorruptGuestToHostRing() {
    std::vector<GpadlInfo> gpadls = partition_->gpadls().List();
    ASSERT_EQ(gpadls.size(), 1u);
    absl::StatusOr<GuestView> view = partition_->memory().MapPages({&gpadls[0].ranges.at(0).pfns.at(0), 1}, true);
    ASSERT_TRUE(view.ok()) << view.status();
    auto* control = reinterpret_cast<wire::RingControl*>(view->data());
    std::atomic_ref<uint32_t>(control->write_index).store(0xfffffff8u);
  }

  std::vector<std::string> problems_;
};

TEST_F(KmclChannelInitSetPeerErrorCallback, OnlyWhileDisabledAndForALiveChannel) {
  EXPECT_EQ(::KmclChannelInitSetPeerErrorCallback(nullptr, RecordPeerError), STATUS_INVALID_PARAMETER_1);
  VMBCHANNEL s = Server(*host_);  // enabled
  EXPECT_EQ(::KmclChannelInitSetPeerErrorCallback(s, RecordPeerError), STATUS_INVALID_PARAMETER_1);
  VMBCHANNEL d = Server(NewEndpoint("other"), /*enable=*/false);
  EXPECT_EQ(::KmclChannelInitSetPeerErrorCallback(d, RecordPeerError), STATUS_SUCCESS);
  EXPECT_EQ(::KmclChannelInitSetPeerErrorCallback(d, nullptr), STATUS_SUCCESS);  // clears it
}

TEST_F(PeerErrorTest, ReportsACorruptIncomingRingOncePerOpen) {
  VMBCHANNEL s = HostWithCallback();
  VMBCHANNEL c = Client(*guest_);
  ASSERT_TRUE(rec_.WaitFor("host:post_started"));
  ASSERT_TRUE(rec_.WaitFor("guest:post_started"));
  CorruptGuestToHostRing();
  // The host reads its incoming ring on its I/O task's next pass: a send
  // from the host that needs no completion ends on that task.
  ASSERT_EQ(SendBytes(s, {1}, 0), STATUS_SUCCESS);
  ASSERT_TRUE(rec_.WaitFor("host:peer_error"));
  ASSERT_EQ(SendBytes(s, {2}, 0), STATUS_SUCCESS);  // another pass, no new report
  ASSERT_TRUE(rec_.WaitFor("guest:packet", 2));
  kmcl_.VmbChannelPause(s);  // the I/O task is idle: every report has run
  std::vector<std::string> problems = Problems();
  ASSERT_EQ(problems.size(), 1u) << "one detection, one report";
  EXPECT_EQ(problems[0].rfind("incoming ring: ring corrupt: write_index 4294967288", 0), 0u) << problems[0];
  kmcl_.VmbChannelStart(s);

  // The guest closes and another opens the offer: fresh rings, and a new
  // corruption is reported again.
  kmcl_.VmbChannelDisable(c);
  ASSERT_TRUE(rec_.WaitFor("host:closed"));
  Client(NewEndpoint("guest2"));
  ASSERT_TRUE(rec_.WaitFor("host:post_started", 2));
  ASSERT_TRUE(rec_.WaitFor("guest2:post_started"));
  CorruptGuestToHostRing();
  ASSERT_EQ(SendBytes(s, {3}, 0), STATUS_SUCCESS);
  ASSERT_TRUE(rec_.WaitFor("host:peer_error", 2));
  problems = Problems();
  EXPECT_EQ(problems.size(), 2u) << absl::StrJoin(problems, " | ");
}

}  // namespace
}  // namespace kmcl::conformance
