// daemon/metrics/http_server.h: kmcld's /metrics listener (--metrics_listen),
// an HTTP server from cpp-httplib (Debian's libcpp-httplib) apart from the
// gRPC listeners: GET /metrics answers with `render()` in the Prometheus
// text format; anything else is 404.
//
//   auto server = MetricsServer::Start("127.0.0.1:0", [&] { return collector.Render(); });
//   std::string where = (*server)->address();  // "127.0.0.1:41234"
//   ...
//   (*server)->Stop();
//
// Thread-safe. `render` runs on the server's own threads (two), one call per
// scrape; it must be thread-safe. No `render` call runs after Stop returns.
#ifndef KMCLD_DAEMON_METRICS_HTTP_SERVER_H_
#define KMCLD_DAEMON_METRICS_HTTP_SERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace httplib {
class Server;
}

namespace kmcld::metrics {

// "HOST:PORT", "[V6]:PORT" or "PORT" (loopback) into host and port.
// INVALID_ARGUMENT for anything else.
absl::StatusOr<std::pair<std::string, int>> ParseHostPort(absl::string_view address);

class MetricsServer {
 public:
  // Binds `address` (port 0 picks a free one) and starts serving.
  // UNAVAILABLE when it cannot bind.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& address,
                                                              std::function<std::string()> render);
  ~MetricsServer();  // Stop()
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // The bound address, "host:port" ("[v6]:port"), with the port chosen.
  const std::string& address() const { return address_; }
  int port() const { return port_; }
  // Stops serving and waits for running scrapes. Idempotent.
  void Stop();

 private:
  MetricsServer() = default;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::string address_;
  int port_ = 0;
};

}  // namespace kmcld::metrics

#endif  // KMCLD_DAEMON_METRICS_HTTP_SERVER_H_
