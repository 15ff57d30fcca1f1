// daemon/security/stream_slots.h: open streams (Attach, WatchEvents) per
// identity, bounded by the policy's Limits.streams, so one identity cannot
// hold every stream kmcld will serve.
//
// A StreamSlot is held by the stream's reactor and gives its place back when
// destroyed. Thread-safe.
#ifndef KMCLD_DAEMON_SECURITY_STREAM_SLOTS_H_
#define KMCLD_DAEMON_SECURITY_STREAM_SLOTS_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace kmcld::security {

class StreamSlots;

class StreamSlot {
 public:
  StreamSlot(StreamSlots& slots, std::string identity) : slots_(slots), identity_(std::move(identity)) {}
  ~StreamSlot();
  StreamSlot(const StreamSlot&) = delete;
  StreamSlot& operator=(const StreamSlot&) = delete;

 private:
  StreamSlots& slots_;
  const std::string identity_;
};

class StreamSlots {
 public:
  // One more stream for `identity`: RESOURCE_EXHAUSTED naming the limit when
  // it already holds `limit` (0: no limit).
  absl::StatusOr<std::unique_ptr<StreamSlot>> Acquire(const std::string& identity, uint32_t limit);

 private:
  friend class StreamSlot;
  void Release(const std::string& identity);

  absl::Mutex mu_;
  absl::flat_hash_map<std::string, uint32_t> open_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kmcld::security

#endif  // KMCLD_DAEMON_SECURITY_STREAM_SLOTS_H_
