// daemon/security/audit_log.h: kmcld's audit log, one structured line per
// denial and per privileged call, on stderr or appended to --audit_log:
//
//   kmcld audit: time=2026-12-01T09:21:04.518Z identity="spiffe://kmcl.test/a"
//     peer="ipv4:127.0.0.1:40122" rpc=OfferChannel object="pa" result=ok ms=0.4
//
// (one line; with --log_format=json on stderr, a JSON record "audit" with
// the same fields). `result` is final: denied:missing-<role> and
// limited:<limit> are decided before the call has any effect; a privileged
// call that passed the check is written when it ends, with its gRPC status
// (ok, or failed:<CODE>) and its duration; the AuditInterceptor (installed
// on kmcld's server) reports that status by the call's ServerContext.
//
// Writing never happens on the caller's thread (a gRPC reactor): Record and
// End only queue; a writer thread writes and flushes. If the file stalls
// (a full disk, a pipe nobody reads), at most kMaxQueued lines wait; later
// ones are counted and reported in a `dropped=N` line once writing resumes,
// and no RPC waits.
//
// Thread-safe. The destructor writes what is queued, then joins.
#ifndef KMCLD_DAEMON_SECURITY_AUDIT_LOG_H_
#define KMCLD_DAEMON_SECURITY_AUDIT_LOG_H_

#include <cstdio>
#include <deque>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "kmcl_core/base/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/support/server_interceptor.h"

namespace kmcld::security {

struct Peer {
  std::string identity;  // certificate SAN/CN, "local", "insecure-loopback"
  std::string address;   // grpc's peer string, "ipv4:127.0.0.1:40000"
};

class AuditLog {
 public:
  static constexpr size_t kMaxQueued = 65536;

  // `out` stays open until the destructor (which closes it unless stderr).
  explicit AuditLog(FILE* out);
  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  // A line with this final `result` (a denial, a limit).
  void Record(const Peer& peer, absl::string_view rpc, absl::string_view object, absl::string_view result);
  // A privileged call was allowed: its line is written by End(call, ...)
  // with the call's status. `call` is its grpc::ServerContextBase.
  void Begin(const void* call, const Peer& peer, absl::string_view rpc, absl::string_view object);
  // The call ended with `code` (its gRPC status code). No-op unless Begun.
  void End(const void* call, int code);

 private:
  struct Line {
    absl::Time time;
    Peer peer;
    std::string rpc, object, result;
  };
  struct Open {
    absl::Time start;
    Peer peer;
    std::string rpc, object;
  };
  void Queue(Line line) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Loop();
  void Write(const Line& line);

  FILE* const out_;  // written by the writer thread only
  kmcl::Mutex mu_;
  kmcl::CondVar queued_;  // signalled when queue_ grows or stop_ is set
  std::deque<Line> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<const void*, Open> open_ ABSL_GUARDED_BY(mu_);
  std::thread writer_;
};

// Reports every call's final status to `audit` (End), for the calls whose
// check Began a line. For grpc::ServerBuilder::experimental().SetInterceptorCreators.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> NewAuditInterceptorFactory(AuditLog& audit);

}  // namespace kmcld::security

#endif  // KMCLD_DAEMON_SECURITY_AUDIT_LOG_H_
