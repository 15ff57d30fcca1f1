#include "daemon/log.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "spdlog/formatter.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace kmcld::log {

namespace {

// The fields of the record being logged on this thread (spdlog's sinks
// format synchronously on the logging thread).
thread_local std::vector<std::pair<absl::string_view, absl::string_view>> tl_fields;

const char* LevelName(spdlog::level::level_enum l) {
  switch (l) {
    case spdlog::level::debug:
      return "debug";
    case spdlog::level::info:
      return "info";
    case spdlog::level::warn:
      return "warning";
    case spdlog::level::err:
      return "error";
    default:
      return "info";
  }
}

spdlog::level::level_enum ToSpd(Level l) {
  switch (l) {
    case Level::kDebug:
      return spdlog::level::debug;
    case Level::kInfo:
      return spdlog::level::info;
    case Level::kWarning:
      return spdlog::level::warn;
    case Level::kError:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

bool NeedsQuotes(absl::string_view v) {
  if (v.empty()) return true;
  for (unsigned char c : v) {
    if (c <= ' ' || c == '"' || c == '\\' || c == '=' || c >= 0x7f) return true;
  }
  return false;
}

class LineFormatter final : public spdlog::formatter {
 public:
  explicit LineFormatter(Format format) : format_(format) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const absl::string_view text(msg.payload.data(), msg.payload.size());
    std::string line;
    if (format_ == Format::kJson) {
      nlohmann::ordered_json j;
      j["time"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::FromChrono(msg.time), absl::UTCTimeZone());
      j["level"] = LevelName(msg.level);
      j["msg"] = std::string(text);
      for (const auto& [k, v] : tl_fields) j[std::string(k)] = std::string(v);
      line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    } else {
      line = "kmcld: ";
      if (msg.level != spdlog::level::info) absl::StrAppend(&line, LevelName(msg.level), ": ");
      line.append(text.data(), text.size());
      for (const auto& [k, v] : tl_fields) {
        absl::StrAppend(&line, " ", k, "=", NeedsQuotes(v) ? absl::StrCat("\"", absl::CEscape(v), "\"") : std::string(v));
      }
    }
    line += '\n';
    dest.append(line.data(), line.data() + line.size());
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<LineFormatter>(format_);
  }

 private:
  const Format format_;
};

std::shared_ptr<spdlog::logger> MakeLogger(Format format, Level level,
                                           std::shared_ptr<spdlog::sinks::sink> sink) {
  if (sink == nullptr) sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>("kmcld", std::move(sink));
  logger->set_formatter(std::make_unique<LineFormatter>(format));
  logger->set_level(ToSpd(level));
  logger->flush_on(spdlog::level::debug);  // every line, at once: tools read it live
  return logger;
}

std::shared_ptr<spdlog::logger>& Logger() {
  static auto* logger = new std::shared_ptr<spdlog::logger>(MakeLogger(Format::kText, Level::kInfo, nullptr));
  return *logger;
}

}  // namespace

absl::StatusOr<Format> ParseFormat(absl::string_view name) {
  if (name == "text") return Format::kText;
  if (name == "json") return Format::kJson;
  return absl::InvalidArgumentError(absl::StrCat("log format '", name, "': want text or json"));
}

absl::StatusOr<Level> ParseLevel(absl::string_view name) {
  const std::string n = absl::AsciiStrToLower(name);
  if (n == "debug") return Level::kDebug;
  if (n == "info") return Level::kInfo;
  if (n == "warning" || n == "warn") return Level::kWarning;
  if (n == "error") return Level::kError;
  return absl::InvalidArgumentError(absl::StrCat("log level '", name, "': want debug, info, warning or error"));
}

std::atomic<Format> current_format{Format::kText};

void Init(Format format, Level level, std::shared_ptr<spdlog::sinks::sink> sink) {
  std::atomic_store(&Logger(), MakeLogger(format, level, std::move(sink)));
  current_format = format;
}

Format CurrentFormat() { return current_format; }

bool Enabled(Level level) { return std::atomic_load(&Logger())->should_log(ToSpd(level)); }

void Write(Level level, absl::string_view message, Fields fields) {
  std::shared_ptr<spdlog::logger> logger = std::atomic_load(&Logger());
  if (!logger->should_log(ToSpd(level))) return;
  tl_fields.clear();
  for (const Field& f : fields) tl_fields.emplace_back(f.key, f.value);
  logger->log(ToSpd(level), spdlog::string_view_t(message.data(), message.size()));
  tl_fields.clear();
}

void Channel(Level level, absl::string_view message, absl::string_view partition, uint32_t channel,
             Fields fields) {
  if (!Enabled(level)) return;
  std::shared_ptr<spdlog::logger> logger = std::atomic_load(&Logger());
  const std::string channel_text = std::to_string(channel);
  tl_fields.clear();
  tl_fields.emplace_back("partition", partition);
  tl_fields.emplace_back("channel", channel_text);
  for (const Field& f : fields) tl_fields.emplace_back(f.key, f.value);
  logger->log(ToSpd(level), spdlog::string_view_t(message.data(), message.size()));
  tl_fields.clear();
}

bool Limiter::Admit(uint64_t* dropped) {
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  if (now - window_start_.load() >= 60) {
    window_start_ = now;
    in_window_ = 0;
  }
  if (++in_window_ > per_minute_) {
    ++dropped_;
    return false;
  }
  *dropped = dropped_.exchange(0);
  return true;
}

}  // namespace kmcld::log
