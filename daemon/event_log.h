// daemon/event_log.h: kmcld's one ordered log of KMCL callbacks and control
// events (EventService, and the EndpointEvent messages of Attach streams).
//
// Every Append gets the next sequence number (1, 2, ...) and the time. The
// log keeps the newest `retention` events; Read(after) returns the events
// with sequence > after, or OUT_OF_RANGE when some of them were already
// dropped (the message names the oldest retained sequence). after == 0 means
// "from the oldest retained event" and is never out of range. An `after`
// beyond the newest sequence is OUT_OF_RANGE too (naming the newest): a
// sequence is in the log before anyone sees it, so only a stale one (from
// before a kmcld restart, which starts again at 1) can be beyond it.
// Close(why) ends the log for readers: once a reader has read every event
// appended before Close, Read returns `why` (kmcld: UNAVAILABLE at
// shutdown). Watchers
// subscribe a wake-up function, called (outside the log's lock) after each
// Append; it must not block.
//
// Thread-safe. Memory: at most `retention` events.
#ifndef KMCLD_DAEMON_EVENT_LOG_H_
#define KMCLD_DAEMON_EVENT_LOG_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <vector>

#include "absl/status/status.h"
#include "kmcl_core/base/mutex.h"
#include "proto/event.pb.h"

namespace kmcld {

class EventLog {
 public:
  explicit EventLog(size_t retention);
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  // Stamps sequence and time and appends; returns the sequence.
  uint64_t Append(kmcl::v1::Event event);

  // Up to `max` events with sequence > after, oldest first, into `out`.
  // OUT_OF_RANGE when after != 0 and events after it were dropped, or when
  // after is beyond the newest sequence. After Close: its status once
  // nothing appended before Close is left after `after`.
  absl::Status Read(uint64_t after, size_t max, std::vector<kmcl::v1::Event>* out) const;

  // Ends the log for readers with `why` (not OK) and wakes every watcher.
  // Appends still work (and are observed); readers stop at the sequence
  // that was newest at Close. Idempotent: the first status stays.
  void Close(absl::Status why);

  // `observer` sees every appended event (stamped), after it is in the log,
  // on the appending thread; it must not block or append. Set it before
  // the first Append (kmcld logs events with it).
  void SetObserver(std::function<void(const kmcl::v1::Event&)> observer) {
    observer_ = std::move(observer);
  }

  uint64_t last_sequence() const;
  uint64_t oldest_sequence() const;  // 0 while empty

  // `wake` runs after every Append until Unsubscribe(id) returns; after
  // Unsubscribe returns it is never called again.
  uint64_t Subscribe(std::function<void()> wake);
  void Unsubscribe(uint64_t id);

 private:
  const size_t retention_;
  std::function<void(const kmcl::v1::Event&)> observer_;  // set before use
  mutable kmcl::Mutex mu_;
  std::deque<kmcl::v1::Event> events_ ABSL_GUARDED_BY(mu_);
  uint64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 1;
  absl::Status closed_ ABSL_GUARDED_BY(mu_);  // OK while open
  uint64_t closed_after_ ABSL_GUARDED_BY(mu_) = 0;  // the newest sequence at Close
  // Wake-ups run under watch_mu_ (never under mu_), so Unsubscribe can wait
  // for a running one. Lock order: watch_mu_ before mu_.
  kmcl::Mutex watch_mu_;
  std::map<uint64_t, std::function<void()>> watchers_ ABSL_GUARDED_BY(watch_mu_);
  uint64_t next_watcher_ ABSL_GUARDED_BY(watch_mu_) = 1;
};

}  // namespace kmcld

#endif  // KMCLD_DAEMON_EVENT_LOG_H_
