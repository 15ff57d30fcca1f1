#include "daemon/metrics/http_server.h"

#include <chrono>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "httplib.h"

namespace kmcld::metrics {

absl::StatusOr<std::pair<std::string, int>> ParseHostPort(absl::string_view address) {
  std::string host = "127.0.0.1";
  absl::string_view port_text = address;
  const size_t colon = address.rfind(':');
  if (colon != absl::string_view::npos) {
    absl::string_view h = address.substr(0, colon);
    port_text = address.substr(colon + 1);
    if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
    if (h.empty() || (h.find(':') != absl::string_view::npos && address.front() != '[')) {
      return absl::InvalidArgumentError(absl::StrCat("metrics address '", address,
                                                     "': want HOST:PORT, [V6]:PORT or PORT"));
    }
    host = std::string(h);
  }
  int port = -1;
  if (!absl::SimpleAtoi(port_text, &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics address '", address, "': bad port"));
  }
  return std::make_pair(host, port);
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& address, std::function<std::string()> render) {
  auto hp = ParseHostPort(address);
  if (!hp.ok()) return hp.status();
  std::unique_ptr<MetricsServer> s(new MetricsServer());
  s->server_ = std::make_unique<httplib::Server>();
  // Two threads: a scrape is cheap and Prometheus scrapes one at a time.
  s->server_->new_task_queue = [] { return new httplib::ThreadPool(2); };
  s->server_->Get("/metrics", [render](const httplib::Request&, httplib::Response& res) {
    res.set_content(render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  const auto& [host, port] = *hp;
  if (port == 0) {
    s->port_ = s->server_->bind_to_any_port(host);
    if (s->port_ < 0) s->port_ = 0;
  } else if (s->server_->bind_to_port(host, port)) {
    s->port_ = port;
  }
  if (s->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen for metrics on ", address));
  }
  s->address_ = absl::StrCat(host.find(':') != std::string::npos ? absl::StrCat("[", host, "]") : host,
                             ":", s->port_);
  httplib::Server* server = s->server_.get();
  s->thread_ = std::thread([server] { server->listen_after_bind(); });
  // httplib's stop() is a no-op until the loop runs: wait for it, so that
  // Stop() right after Start() cannot leave the thread serving forever.
  while (!server->is_running()) std::this_thread::sleep_for(std::chrono::microseconds(100));
  return s;
}

MetricsServer::~MetricsServer() { Stop(); }

void MetricsServer::Stop() {
  if (!thread_.joinable()) return;
  server_->stop();
  thread_.join();
}

}  // namespace kmcld::metrics
