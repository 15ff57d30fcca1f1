// Policy parsing and decisions, IsLoopbackAddress, and PartitionOf on real
// kmcl.v1 requests.
#include "daemon/security/policy.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "daemon/security/identity_budget.h"
#include "daemon/security/rate_limiter.h"
#include "daemon/security/server_security.h"
#include "gtest/gtest.h"

namespace kmcld::security {
namespace {

constexpr char kPolicy[] = R"pb(
  grant { identity: "spiffe://kmcl.test/a" partition: "pa" role: HOST role: GUEST }
  grant { identity_prefix: "spiffe://kmcl.test/ops/" partition: "*" role: ADMIN }
  grant { identity: "spiffe://kmcl.test/watch" partition: "*" role: OBSERVER }
  local_is_admin: false
)pb";

TEST(Policy, RolesArePerIdentityAndPartition) {
  auto p = Policy::Parse(kPolicy);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE((*p)->Allows("spiffe://kmcl.test/a", "pa", HOST));
  EXPECT_TRUE((*p)->Allows("spiffe://kmcl.test/a", "pa", OBSERVER)) << "every role implies observer";
  EXPECT_FALSE((*p)->Allows("spiffe://kmcl.test/a", "pa", OPERATOR));
  EXPECT_FALSE((*p)->Allows("spiffe://kmcl.test/a", "pb", HOST)) << "another partition";
  EXPECT_FALSE((*p)->Allows("spiffe://kmcl.test/a", "*", OBSERVER)) << "not every partition";
  EXPECT_FALSE((*p)->Allows("spiffe://kmcl.test/ab", "pa", HOST)) << "exact means exact";
  EXPECT_TRUE((*p)->Allows("spiffe://kmcl.test/ops/alice", "anything", OPERATOR)) << "admin implies all";
  EXPECT_TRUE((*p)->Allows("spiffe://kmcl.test/watch", "pa", OBSERVER));
  EXPECT_FALSE((*p)->Allows("spiffe://kmcl.test/watch", "pa", GUEST));
  EXPECT_FALSE((*p)->Allows("local", "pa", OBSERVER)) << "local_is_admin: false";
  EXPECT_TRUE((*p)->AllowsAnywhere("spiffe://kmcl.test/a", HOST));
}

TEST(Policy, LocalIsAdminByDefaultAndBuiltInGrantsOnlyLocal) {
  auto p = Policy::Parse("");
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE((*p)->Allows("local", "x", ADMIN));
  auto builtin = Policy::BuiltIn(false);
  EXPECT_TRUE(builtin->Allows("local", "x", ADMIN));
  EXPECT_FALSE(builtin->Allows("insecure-loopback", "x", OBSERVER));
  EXPECT_FALSE(builtin->Allows("spiffe://kmcl.test/a", "x", OBSERVER));
  EXPECT_TRUE(Policy::BuiltIn(true)->Allows("insecure-loopback", "x", ADMIN));
}

TEST(Policy, MalformedPoliciesAreClearErrors) {
  struct Case {
    const char* text;
    const char* error;
  } cases[] = {
      {"grant { partition: \"*\" role: HOST }", "identity"},
      {"grant { identity: \"a\" role: HOST }", "partition"},
      {"grant { identity: \"a\" partition: \"*\" }", "role"},
      {"grant { identity: \"a\" partition: \"*\" role: ROLE_UNSPECIFIED }", "ROLE_UNSPECIFIED"},
      {"grant { identity: \"a\" partition: \"*\" role: KING }", "line 1"},
      // Partition ids follow the one rule (ValidatePartitionId), or "*".
      {"grant { identity: \"a\" partition: \"VM1\" role: HOST }",
       "grant 1: partition id 'VM1' must be 1 to 63 characters of [a-z0-9-] (or \"*\")"},
      {"grant { identity: \"a\" partition: \"vm*\" role: HOST }", "partition id 'vm*'"},
      {"grant { identity: \"a\" partition: \"\" role: HOST }", "partition id ''"},
      {"bogus: 1", "bogus"},
  };
  for (const Case& c : cases) {
    auto p = Policy::Parse(c.text);
    ASSERT_FALSE(p.ok()) << c.text;
    EXPECT_TRUE(absl::StrContains(p.status().message(), c.error)) << p.status();
  }
  auto missing = Policy::Load("/nonexistent/policy.textproto");
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(absl::StrContains(missing.status().message(), "/nonexistent/policy.textproto"));
}

TEST(Policy, LimitsComeFromTheFirstMatchingGrantThatSetsThem) {
  auto p = Policy::Parse(R"pb(
    grant { identity: "x" partition: "*" role: HOST }
    grant { identity_prefix: "x" partition: "*" role: HOST limits { requests_per_second: 7 } }
    default_limits { requests_per_second: 100 burst: 200 }
  )pb");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ((*p)->LimitsFor("x").requests_per_second(), 7u);
  EXPECT_EQ((*p)->LimitsFor("y").requests_per_second(), 100u);
}

TEST(Policy, RoleLimitsApplyByTheHighestRoleUnlessAGrantSetsLimits) {
  auto p = Policy::Parse(R"pb(
    grant { identity: "watch" partition: "*" role: OBSERVER }
    grant { identity: "tool" partition: "p1" role: GUEST }
    grant { identity: "tool" partition: "p2" role: HOST }
    grant { identity: "special" partition: "*" role: HOST limits { channels: 99 } }
    role_limits { role: OBSERVER limits { channels: 0 max_message_bytes: 4096 } }
    role_limits { role: HOST limits { channels: 8 packets_in_flight: 64 } }
    default_limits { channels: 2 }
  )pb");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ((*p)->LimitsFor("watch").max_message_bytes(), 4096u);
  EXPECT_EQ((*p)->LimitsFor("tool").channels(), 8u) << "host on p2 is its highest role";
  EXPECT_EQ((*p)->LimitsFor("tool").packets_in_flight(), 64u);
  EXPECT_EQ((*p)->LimitsFor("special").channels(), 99u) << "a grant's limits win";
  EXPECT_EQ((*p)->LimitsFor("stranger").channels(), 2u) << "no role: default_limits";
  EXPECT_FALSE(Policy::Parse("role_limits { limits { channels: 1 } }").ok()) << "a role is needed";
}

TEST(IdentityBudget, EachResourceIsBoundedPerIdentityAndNamesItsLimit) {
  IdentityBudget budget;
  for (Resource r : {Resource::kChannels, Resource::kGuestBufferBytes, Resource::kPacketsInFlight}) {
    SCOPED_TRACE(std::string(ResourceName(r)));
    ASSERT_TRUE(budget.Take("a", r, 3, 4).ok());
    absl::Status over = budget.Take("a", r, 2, 4);
    EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_TRUE(absl::StrContains(over.message(), absl::StrCat(ResourceName(r), "=4"))) << over;
    EXPECT_EQ(budget.Held("a", r), 3u) << "a refusal counts nothing";
    EXPECT_TRUE(budget.Take("b", r, 4, 4).ok()) << "b's budget is not a's";
    budget.Give("a", r, 2);
    EXPECT_TRUE(budget.Take("a", r, 2, 4).ok()) << "given back";
    EXPECT_TRUE(budget.Take("a", r, 1000, 0).ok()) << "0: no limit";
  }
  {
    auto charge = budget.TakeCharge("c", Resource::kGuestBufferBytes, 8192, 8192);
    ASSERT_TRUE(charge.ok());
    EXPECT_FALSE(budget.TakeCharge("c", Resource::kGuestBufferBytes, 4096, 8192).ok());
  }
  EXPECT_EQ(budget.Held("c", Resource::kGuestBufferBytes), 0u) << "a charge gives back when destroyed";
  EXPECT_FALSE(budget.Take("d", Resource::kChannels, 5, 4).ok()) << "more than the limit at once";
}

TEST(RateLimiter, ABucketPerIdentityRefilledOverTime) {
  RateLimiter limiter;
  Limits limits;
  limits.set_requests_per_second(2);
  limits.set_burst(3);
  const absl::Time t0 = absl::UnixEpoch() + absl::Hours(1);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.Take("a", limits, t0).ok()) << i;
  absl::Status over = limiter.Take("a", limits, t0);
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(over.message(), "request rate (2/s")) << over;
  EXPECT_TRUE(limiter.Take("b", limits, t0).ok()) << "another identity has its own bucket";
  EXPECT_TRUE(limiter.Take("a", limits, t0 + absl::Milliseconds(500)).ok()) << "one token in 0.5 s";
  EXPECT_FALSE(limiter.Take("a", limits, t0 + absl::Milliseconds(500)).ok());
  EXPECT_TRUE(limiter.Take("a", limits, t0 + absl::Seconds(100)).ok());
  EXPECT_TRUE(limiter.Take("z", Limits(), t0).ok()) << "no limit";
}

TEST(IsLoopbackAddress, OnlyLoopback) {
  for (const char* a : {"127.0.0.1:0", "127.1.2.3:5", "[::1]:50551", "localhost:1"}) {
    EXPECT_TRUE(IsLoopbackAddress(a)) << a;
  }
  for (const char* a : {"0.0.0.0:0", "10.0.0.1:1", "[::]:1", "example.com:1", "128.0.0.1:1"}) {
    EXPECT_FALSE(IsLoopbackAddress(a)) << a;
  }
}

}  // namespace
}  // namespace kmcld::security
