// daemon/log_capture.h (tests only): kmcld's log captured line by line,
// for tests that check what kmcld logs.
//
//   JsonLogCapture capture;  // kmcld logs JSON lines into capture.sink
//   std::string line = capture.sink->WaitFor(
//       [](const std::string& l) { return l.find("ring corrupt") != std::string::npos; },
//       std::chrono::seconds(20));
//
// Thread-safe: lines arrive from whichever thread logs.
#ifndef KMCLD_DAEMON_LOG_CAPTURE_H_
#define KMCLD_DAEMON_LOG_CAPTURE_H_

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/log.h"
#include "spdlog/sinks/base_sink.h"

namespace kmcld {

// Keeps each log line, formatted on the logging thread (kmcld's formatter
// reads the record's fields there).
class CaptureSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  // The first line `pred` accepts, waiting up to `timeout` for it; "" if none.
  std::string WaitFor(const std::function<bool(const std::string&)>& pred, std::chrono::seconds timeout) {
    std::unique_lock<std::mutex> lock(mutex_);
    std::string found;
    added_.wait_for(lock, timeout, [&] {
      for (const std::string& l : lines_) {
        if (pred(l)) {
          found = l;
          return true;
        }
      }
      return false;
    });
    return found;
  }
  std::vector<std::string> Lines() {
    std::lock_guard<std::mutex> lock(mutex_);
    return lines_;
  }
  // How many lines so far contain `text`.
  long Count(const std::string& text) {
    std::lock_guard<std::mutex> lock(mutex_);
    return std::count_if(lines_.begin(), lines_.end(),
                         [&](const std::string& l) { return l.find(text) != std::string::npos; });
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t buf;
    formatter_->format(msg, buf);
    lines_.emplace_back(buf.data(), buf.size());
    added_.notify_all();
  }
  void flush_() override {}

 private:
  std::vector<std::string> lines_;
  std::condition_variable added_;
};

// kmcld's log as JSON lines into a CaptureSink, while it lives.
struct JsonLogCapture {
  JsonLogCapture() { log::Init(log::Format::kJson, log::Level::kInfo, sink); }
  ~JsonLogCapture() { log::Init(log::Format::kText, log::Level::kInfo); }
  std::shared_ptr<CaptureSink> sink = std::make_shared<CaptureSink>();
};

}  // namespace kmcld

#endif  // KMCLD_DAEMON_LOG_CAPTURE_H_
