#include "daemon/event_log.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace kmcld {

EventLog::EventLog(size_t retention) : retention_(retention == 0 ? 1 : retention) {}

uint64_t EventLog::Append(kmcl::v1::Event event) {
  uint64_t sequence;
  kmcl::v1::Event observed;
  {
    kmcl::MutexLock lock(&mu_);
    sequence = next_sequence_++;
    event.set_sequence(sequence);
    const int64_t nanos = absl::ToUnixNanos(absl::Now());
    event.mutable_time()->set_seconds(nanos / 1000000000);
    event.mutable_time()->set_nanos(static_cast<int32_t>(nanos % 1000000000));
    if (observer_) observed = event;
    events_.push_back(std::move(event));
    while (events_.size() > retention_) events_.pop_front();
  }
  if (observer_) observer_(observed);
  kmcl::MutexLock lock(&watch_mu_);
  for (auto& [id, wake] : watchers_) wake();
  return sequence;
}

absl::Status EventLog::Read(uint64_t after, size_t max, std::vector<kmcl::v1::Event>* out) const {
  kmcl::MutexLock lock(&mu_);
  if (!closed_.ok() && after >= closed_after_) return closed_;
  const uint64_t newest = next_sequence_ - 1;
  if (after > newest) {
    return absl::OutOfRangeError(absl::StrCat(
        "after_sequence ", after, " is beyond the newest event, ", newest,
        ": a sequence from before a kmcld restart (sequences start again at 1)? Resume from 0 "
        "(the oldest retained event) or from a sequence up to ", newest));
  }
  if (events_.empty() || after == newest) return absl::OkStatus();  // nothing newer yet
  const uint64_t oldest = events_.front().sequence();
  if (after != 0 && after + 1 < oldest) {
    return absl::OutOfRangeError(absl::StrCat("events after sequence ", after,
                                              " were dropped from the retention window; the "
                                              "oldest retained sequence is ",
                                              oldest));
  }
  size_t index = after < oldest ? 0 : static_cast<size_t>(after + 1 - oldest);
  for (; index < events_.size() && out->size() < max; ++index) {
    if (!closed_.ok() && events_[index].sequence() > closed_after_) break;
    out->push_back(events_[index]);
  }
  return absl::OkStatus();
}

void EventLog::Close(absl::Status why) {
  {
    kmcl::MutexLock lock(&mu_);
    if (!closed_.ok() || why.ok()) return;
    closed_ = std::move(why);
    closed_after_ = next_sequence_ - 1;
  }
  kmcl::MutexLock lock(&watch_mu_);
  for (auto& [id, wake] : watchers_) wake();
}

uint64_t EventLog::last_sequence() const {
  kmcl::MutexLock lock(&mu_);
  return next_sequence_ - 1;
}

uint64_t EventLog::oldest_sequence() const {
  kmcl::MutexLock lock(&mu_);
  return events_.empty() ? 0 : events_.front().sequence();
}

uint64_t EventLog::Subscribe(std::function<void()> wake) {
  kmcl::MutexLock lock(&watch_mu_);
  const uint64_t id = next_watcher_++;
  watchers_.emplace(id, std::move(wake));
  return id;
}

void EventLog::Unsubscribe(uint64_t id) {
  kmcl::MutexLock lock(&watch_mu_);
  watchers_.erase(id);
}

}  // namespace kmcld
