// The KMCL state machine, synchronously: every transition of a server and
// a client endpoint (docs/kmcl.md, "A channel's life") and the callback order
// it implies.
#include "kmcl_core/control/endpoint_state.h"

#include <string>

#include "gtest/gtest.h"

namespace kmcl {
namespace {

std::string Names(const Actions& actions) {
  std::string out;
  for (EndpointAction a : actions) {
    if (!out.empty()) out += " ";
    out += EndpointActionName(a);
  }
  return out;
}

TEST(ServerEndpoint, EnableOffersAndStaysPausedUntilStart) {  // S1, S4, S5
  EndpointStateMachine s(EndpointRole::kHost);
  EXPECT_TRUE(s.configurable());
  EXPECT_EQ(Names(*s.Enable()), "offer");
  EXPECT_EQ(s.connection(), ConnectionState::kEnabled);
  EXPECT_EQ(s.run(), RunState::kPaused);
  EXPECT_FALSE(s.configurable());
  EXPECT_EQ(Names(*s.Start()), "") << "not opened yet: no callbacks";
  EXPECT_EQ(s.run(), RunState::kActive);
  EXPECT_EQ(s.Enable().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(ServerEndpoint, GuestOpenThenRunsInDocumentedOrder) {  // S6, S7
  EndpointStateMachine s(EndpointRole::kHost);
  ASSERT_TRUE(s.Enable().ok());
  ASSERT_TRUE(s.Start().ok());
  EXPECT_EQ(Names(*s.PeerOpened()), "Opened");
  EXPECT_EQ(s.connection(), ConnectionState::kOpening);
  EXPECT_EQ(Names(s.OpenedResult(true)), "Started incoming-on PostStarted");
  EXPECT_TRUE(s.running());
}

TEST(ServerEndpoint, StartAfterOpenRunsThen) {  // S5 on an opened channel
  EndpointStateMachine s(EndpointRole::kHost);
  ASSERT_TRUE(s.Enable().ok());
  ASSERT_TRUE(s.PeerOpened().ok());
  EXPECT_EQ(Names(s.OpenedResult(true)), "") << "paused: opened but not running";
  EXPECT_EQ(Names(*s.Start()), "Started incoming-on PostStarted");
}

TEST(ServerEndpoint, FailedOpenedCallbackKeepsTheOfferOut) {
  EndpointStateMachine s(EndpointRole::kHost);
  ASSERT_TRUE(s.Enable().ok());
  ASSERT_TRUE(s.PeerOpened().ok());
  EXPECT_EQ(Names(s.OpenedResult(false)), "reject-open release-rings");
  EXPECT_EQ(s.connection(), ConnectionState::kEnabled);
  EXPECT_TRUE(s.PeerOpened().ok()) << "the guest may try again";
}

TEST(ServerEndpoint, PauseSuspendsAndWaitsForDeliveredPackets) {  // S8
  EndpointStateMachine s(EndpointRole::kHost);
  ASSERT_TRUE(s.Enable().ok());
  ASSERT_TRUE(s.Start().ok());
  ASSERT_TRUE(s.PeerOpened().ok());
  s.OpenedResult(true);
  EXPECT_EQ(Names(s.Pause()), "incoming-off Suspend wait-drained");
  EXPECT_FALSE(s.running());
  EXPECT_EQ(Names(s.Pause()), "") << "already paused";
  EXPECT_EQ(Names(*s.Start()), "Started incoming-on PostStarted");
}

TEST(ServerEndpoint, GuestCloseSuspendsThenClosesAndKeepsTheOffer) {  // S9, S10
  EndpointStateMachine s(EndpointRole::kHost);
  ASSERT_TRUE(s.Enable().ok());
  ASSERT_TRUE(s.Start().ok());
  ASSERT_TRUE(s.PeerOpened().ok());
  s.OpenedResult(true);
  EXPECT_EQ(Names(s.PeerClosed()),
            "incoming-off Suspend wait-drained cancel-transactions Closed release-rings");
  EXPECT_EQ(s.connection(), ConnectionState::kClosed);
  EXPECT_EQ(s.run(), RunState::kActive) << "run state survives a guest close";
  EXPECT_EQ(Names(*s.PeerOpened()), "Opened") << "reopen";
  EXPECT_EQ(Names(s.OpenedResult(true)), "Started incoming-on PostStarted");
}

TEST(ServerEndpoint, DisableRescindsAfterSuspendAndClosed) {  // S11
  EndpointStateMachine s(EndpointRole::kHost);
  ASSERT_TRUE(s.Enable().ok());
  ASSERT_TRUE(s.Start().ok());
  ASSERT_TRUE(s.PeerOpened().ok());
  s.OpenedResult(true);
  EXPECT_EQ(Names(s.Disable()),
            "rescind incoming-off Suspend wait-drained cancel-transactions Closed release-rings");
  EXPECT_EQ(s.connection(), ConnectionState::kDisabled);
  EXPECT_TRUE(s.configurable());
  EXPECT_EQ(Names(s.Disable()), "");
  EXPECT_EQ(Names(*s.Enable()), "offer") << "re-enable after disable";
}

TEST(ServerEndpoint, DisableOfAnUnopenedOfferOnlyRescinds) {
  EndpointStateMachine s(EndpointRole::kHost);
  ASSERT_TRUE(s.Enable().ok());
  EXPECT_EQ(Names(s.Disable()), "rescind");
}

TEST(ServerEndpoint, StartWhileDisabledIsRefused) {
  EndpointStateMachine s(EndpointRole::kHost);
  EXPECT_EQ(s.Start().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.PeerOpened().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(ClientEndpoint, EnableConnectsAndIsActive) {  // C3, C4, C5
  EndpointStateMachine c(EndpointRole::kGuest);
  EXPECT_EQ(Names(*c.Enable()), "connect");
  EXPECT_EQ(c.run(), RunState::kActive) << "client Enable implies active";
  EXPECT_EQ(Names(*c.PeerOpened()), "Opened");
  EXPECT_EQ(Names(c.OpenedResult(true)), "Started incoming-on PostStarted");
}

TEST(ClientEndpoint, AutoPauseArmedWhileDisabled) {  // S3 / C-auto-pause
  EndpointStateMachine c(EndpointRole::kGuest);
  EXPECT_EQ(Names(c.Pause()), "");
  EXPECT_TRUE(c.auto_pause());
  ASSERT_TRUE(c.Enable().ok());
  EXPECT_EQ(c.run(), RunState::kPaused);
  ASSERT_TRUE(c.PeerOpened().ok());
  EXPECT_EQ(Names(c.OpenedResult(true)), "") << "comes up paused";
  EXPECT_EQ(Names(*c.Start()), "Started incoming-on PostStarted");  // C8
}

TEST(ClientEndpoint, RescindEndsDisabled) {  // C9
  EndpointStateMachine c(EndpointRole::kGuest);
  ASSERT_TRUE(c.Enable().ok());
  ASSERT_TRUE(c.PeerOpened().ok());
  c.OpenedResult(true);
  EXPECT_EQ(Names(c.PeerClosed()),
            "incoming-off Suspend wait-drained disconnect cancel-transactions Closed release-rings")
      << "CLOSECHANNEL goes out before Closed, where the driver deletes its GPADLs";
  EXPECT_EQ(c.connection(), ConnectionState::kDisabled);
  EXPECT_EQ(Names(*c.Enable()), "connect");  // C10
}

TEST(ClientEndpoint, DisableClosesAndDisconnects) {
  EndpointStateMachine c(EndpointRole::kGuest);
  ASSERT_TRUE(c.Enable().ok());
  ASSERT_TRUE(c.PeerOpened().ok());
  c.OpenedResult(true);
  c.Pause();  // C7
  EXPECT_EQ(Names(c.Disable()), "disconnect cancel-transactions Closed release-rings")
      << "paused: no second Suspend";
}

TEST(ClientEndpoint, DisableWhileWaitingForAnOfferStopsWaiting) {
  EndpointStateMachine c(EndpointRole::kGuest);
  ASSERT_TRUE(c.Enable().ok());
  EXPECT_EQ(Names(c.Disable()), "disconnect release-rings");
}

TEST(ClientEndpoint, FailedOpenedCallbackGivesTheChannelBack) {
  EndpointStateMachine c(EndpointRole::kGuest);
  ASSERT_TRUE(c.Enable().ok());
  ASSERT_TRUE(c.PeerOpened().ok());
  EXPECT_EQ(Names(c.OpenedResult(false)), "disconnect release-rings");
  EXPECT_EQ(c.connection(), ConnectionState::kDisabled);
}

TEST(Endpoint, OpenCancelledBeforeTheCallbackRan) {
  EndpointStateMachine s(EndpointRole::kHost);
  ASSERT_TRUE(s.Enable().ok());
  ASSERT_TRUE(s.PeerOpened().ok());
  EXPECT_EQ(Names(s.OpenCancelled()), "release-rings");
  EXPECT_EQ(s.connection(), ConnectionState::kEnabled);
  EXPECT_EQ(Names(s.OpenedResult(true)), "") << "a late verdict changes nothing";
}

TEST(RestoredEndpoint, HearsOpenedAgainThenRunsIfItWasRunning) {
  EndpointStateMachine host(EndpointRole::kHost);
  EXPECT_EQ(Names(host.Restore(ConnectionState::kOpened, RunState::kActive)),
            "Opened-again Started incoming-on PostStarted signal-both");
  EXPECT_TRUE(host.running());
  EXPECT_EQ(Names(host.Pause()), "incoming-off Suspend wait-drained");

  EndpointStateMachine guest(EndpointRole::kGuest);
  EXPECT_EQ(Names(guest.Restore(ConnectionState::kOpened, RunState::kPaused)),
            "Opened-again signal-both");
  EXPECT_FALSE(guest.running());
  EXPECT_EQ(Names(*guest.Start()), "Started incoming-on PostStarted");
}

TEST(RestoredEndpoint, NotOpenedHearsNothing) {
  for (ConnectionState c : {ConnectionState::kEnabled, ConnectionState::kClosed}) {
    EndpointStateMachine host(EndpointRole::kHost);
    EXPECT_EQ(Names(host.Restore(c, RunState::kActive)), "") << ConnectionStateName(c);
    EXPECT_EQ(host.connection(), c);
  }
}

}  // namespace
}  // namespace kmcl
