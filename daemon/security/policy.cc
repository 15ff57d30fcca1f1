#include "daemon/security/policy.h"

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "daemon/partition_id.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

namespace kmcld::security {
namespace {

// Collects text-format parse errors into one message.
class ErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (!text_.empty()) text_ += "; ";
    absl::StrAppend(&text_, "line ", line + 1, " column ", column + 1, ": ", message);
  }
  const std::string& text() const { return text_; }

 private:
  std::string text_;
};

}  // namespace

absl::string_view RoleName(Role role) {
  switch (role) {
    case OBSERVER: return "observer";
    case GUEST: return "guest";
    case HOST: return "host";
    case OPERATOR: return "operator";
    case ADMIN: return "admin";
    default: return "unspecified";
  }
}

absl::StatusOr<std::shared_ptr<const Policy>> Policy::FromProto(PolicyProto proto) {
  for (int i = 0; i < proto.grant_size(); ++i) {
    const Grant& g = proto.grant(i);
    const std::string where = absl::StrCat("grant ", i + 1, ": ");
    if (g.who_case() == Grant::WHO_NOT_SET ||
        (g.who_case() == Grant::kIdentity && g.identity().empty()) ||
        (g.who_case() == Grant::kIdentityPrefix && g.identity_prefix().empty())) {
      return absl::InvalidArgumentError(absl::StrCat(where, "needs a non-empty identity or identity_prefix"));
    }
    if (g.partition_size() == 0) {
      return absl::InvalidArgumentError(absl::StrCat(where, "needs at least one partition (or \"*\")"));
    }
    for (const std::string& p : g.partition()) {
      if (p == "*") continue;
      if (absl::Status s = ValidatePartitionId(p); !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(where, s.message(), " (or \"*\")"));
      }
    }
    if (g.role_size() == 0) {
      return absl::InvalidArgumentError(absl::StrCat(where, "needs at least one role"));
    }
    for (int r : g.role()) {
      if (r == ROLE_UNSPECIFIED) {
        return absl::InvalidArgumentError(absl::StrCat(where, "ROLE_UNSPECIFIED is not a role"));
      }
    }
  }
  for (const RoleLimits& rl : proto.role_limits()) {
    if (rl.role() == ROLE_UNSPECIFIED) {
      return absl::InvalidArgumentError("role_limits: needs a role");
    }
  }
  return std::shared_ptr<const Policy>(new Policy(std::move(proto)));
}

absl::StatusOr<std::shared_ptr<const Policy>> Policy::Parse(absl::string_view text) {
  PolicyProto proto;
  google::protobuf::TextFormat::Parser parser;
  ErrorCollector errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(std::string(text), &proto)) {
    return absl::InvalidArgumentError(errors.text().empty() ? "cannot parse" : errors.text());
  }
  return FromProto(std::move(proto));
}

absl::StatusOr<std::shared_ptr<const Policy>> Policy::Load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("policy file ", path, ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  auto policy = Parse(text.str());
  if (!policy.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("policy file ", path, ": ", policy.status().message()));
  }
  return policy;
}

std::shared_ptr<const Policy> Policy::BuiltIn(bool insecure_loopback_admin) {
  PolicyProto proto;
  proto.set_local_is_admin(true);
  if (insecure_loopback_admin) {
    Grant* g = proto.add_grant();
    g->set_identity(kInsecureLoopbackIdentity);
    g->add_partition("*");
    g->add_role(ADMIN);
  }
  return std::shared_ptr<const Policy>(new Policy(std::move(proto)));
}

bool Policy::Matches(const Grant& grant, absl::string_view identity) const {
  switch (grant.who_case()) {
    case Grant::kIdentity: return identity == grant.identity();
    case Grant::kIdentityPrefix: return absl::StartsWith(identity, grant.identity_prefix());
    default: return false;
  }
}

bool Policy::Implies(const Grant& grant, Role role) {
  for (int r : grant.role()) {
    if (r == role || r == ADMIN || role == OBSERVER) return true;
  }
  return false;
}

bool Policy::Allows(absl::string_view identity, absl::string_view partition, Role role) const {
  if (identity == kLocalIdentity && (!proto_.has_local_is_admin() || proto_.local_is_admin())) {
    return true;
  }
  for (const Grant& g : proto_.grant()) {
    if (!Matches(g, identity) || !Implies(g, role)) continue;
    for (const std::string& p : g.partition()) {
      if (p == "*" || p == partition) return true;
    }
  }
  return false;
}

const Limits& Policy::LimitsFor(absl::string_view identity) const {
  for (const Grant& g : proto_.grant()) {
    if (g.has_limits() && Matches(g, identity)) return g.limits();
  }
  if (proto_.role_limits_size() > 0) {
    // The identity's highest role anywhere picks its role's limits.
    for (Role role : {ADMIN, OPERATOR, HOST, GUEST, OBSERVER}) {
      if (!AllowsAnywhere(identity, role)) continue;
      for (const RoleLimits& rl : proto_.role_limits()) {
        if (rl.role() == role) return rl.limits();
      }
      break;
    }
  }
  return proto_.default_limits();
}

bool Policy::AllowsAnywhere(absl::string_view identity, Role role) const {
  if (identity == kLocalIdentity && (!proto_.has_local_is_admin() || proto_.local_is_admin())) {
    return true;
  }
  for (const Grant& g : proto_.grant()) {
    if (Matches(g, identity) && Implies(g, role)) return true;
  }
  return false;
}

}  // namespace kmcld::security
