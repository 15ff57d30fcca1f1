// daemon/log.h: kmcld's log, through spdlog (Debian's libspdlog-dev): one
// line per record on stderr, with a level and structured fields; every
// channel-related line carries the partition and the channel.
//
//   kmcld::log::Init(kmcld::log::Format::kJson, kmcld::log::Level::kInfo);
//   kmcld::log::Info("listening on tcp 127.0.0.1:50551");
//   kmcld::log::Warn("bad request", {{"method", m}, {"peer", p}});
//   kmcld::log::Channel(Level::kInfo, "opened", "default", 3, {{"role", "host"}});
//
// Text (the default): "kmcld: <message>[ key=value...]" for info,
// "kmcld: <level>: <message>..." otherwise; values with spaces, quotes or
// control characters are quoted C-style. JSON: one object per line,
//   {"time":"2026-01-01T10:00:00.123456Z","level":"warning","msg":"...","partition":"default",...}
// with the fields in the order given, strings throughout (invalid UTF-8
// replaced), for log shippers.
//
// Thread-safe. Init is meant for start-up (before other threads log); a
// record logged before Init goes out as text at info level.
#ifndef KMCLD_DAEMON_LOG_H_
#define KMCLD_DAEMON_LOG_H_

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace spdlog::sinks {
class sink;
}

namespace kmcld::log {

enum class Format { kText, kJson };
enum class Level { kDebug, kInfo, kWarning, kError };

// "text" / "json"; "debug" / "info" / "warning" / "error". INVALID_ARGUMENT otherwise.
absl::StatusOr<Format> ParseFormat(absl::string_view name);
absl::StatusOr<Level> ParseLevel(absl::string_view name);

// Records below `level` are dropped. `sink`: where lines go (tests); null
// is stderr.
void Init(Format format, Level level, std::shared_ptr<spdlog::sinks::sink> sink = nullptr);

struct Field {
  Field(absl::string_view k, std::string v) : key(k), value(std::move(v)) {}
  Field(absl::string_view k, absl::string_view v) : key(k), value(v) {}
  Field(absl::string_view k, const char* v) : key(k), value(v) {}
  Field(absl::string_view k, uint64_t v) : key(k), value(std::to_string(v)) {}
  Field(absl::string_view k, int64_t v) : key(k), value(std::to_string(v)) {}
  Field(absl::string_view k, uint32_t v) : key(k), value(std::to_string(v)) {}
  Field(absl::string_view k, int v) : key(k), value(std::to_string(v)) {}
  absl::string_view key;
  std::string value;
};
using Fields = std::initializer_list<Field>;

// The format Init chose (text before Init).
Format CurrentFormat();
bool Enabled(Level level);
void Write(Level level, absl::string_view message, Fields fields = {});
inline void Debug(absl::string_view m, Fields f = {}) { Write(Level::kDebug, m, f); }
inline void Info(absl::string_view m, Fields f = {}) { Write(Level::kInfo, m, f); }
inline void Warn(absl::string_view m, Fields f = {}) { Write(Level::kWarning, m, f); }
inline void Error(absl::string_view m, Fields f = {}) { Write(Level::kError, m, f); }
// A channel's line: partition and channel first, then `fields`.
void Channel(Level level, absl::string_view message, absl::string_view partition, uint32_t channel,
             Fields fields = {});

// Admits at most `per_minute` records a minute (for lines a peer can
// cause); `dropped` is how many it refused since the last admitted one.
class Limiter {
 public:
  explicit Limiter(int per_minute) : per_minute_(per_minute) {}
  bool Admit(uint64_t* dropped);

 private:
  const int per_minute_;
  std::atomic<int64_t> window_start_{0};
  std::atomic<int> in_window_{0};
  std::atomic<uint64_t> dropped_{0};
};

}  // namespace kmcld::log

#endif  // KMCLD_DAEMON_LOG_H_
