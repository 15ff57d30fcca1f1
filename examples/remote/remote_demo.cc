// examples/remote/remote_demo: plays a VSP (host tool) and a VSC (guest tool)
// against a running kmcld, through the kmcl.v1 gRPC API only, and says what
// it did line by line:
//
//   1. host offers a channel (fixed interface type, start = true); the guest
//      opens it;
//   2. the guest allocates a 64 KiB guest buffer, writes a pattern, creates a
//      GPADL over it; the host maps the GPADL, reads the pattern back through
//      the lease and checks it, unmaps; the guest tears the GPADL down;
//   3. both attach a packet stream; the guest sends --packets transactions
//      (wait_for_completion, batched, --window in flight), the host echoes
//      each delivery as its completion payload, and the guest checks every
//      completion against what it sent (modulo the 8-byte zero padding);
//   4. the partition is saved (SavePartition, chunks counted) and restored
//      as a copy beside it (RestorePartition), checked and deleted;
//   5. the guest closes the channel, the host rescinds and cleans it up.
//
// Written with the kmcl C++ client library (clients/cpp/kmcl.h): host and
// guest each have an AttachedStream; every object the demo creates is an
// RAII handle, so a failure part-way releases what exists in reverse order.
// Exit status 0 when everything checked out, 1 with a message otherwise.
//
//   bazel-bin/daemon/kmcld --listen=127.0.0.1:0 --uds=none    # prints its port
//   bazel run -c opt //examples/remote:remote_demo -- --target=127.0.0.1:PORT
#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "clients/cpp/kmcl.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50551",
          "kmcld's address: host:port or unix:/path/to/kmcld.sock");
ABSL_FLAG(uint64_t, packets, 20000, "transactions the guest sends and the host echoes");
ABSL_FLAG(uint32_t, payload, 64, "payload bytes per packet (1 to 65536)");
ABSL_FLAG(std::string, partition, "default", "partition to offer the channel in");
ABSL_FLAG(uint32_t, window, 64, "transactions in flight at most (1 to 4096)");
ABSL_FLAG(uint32_t, mmio_megabytes, 0,
          "ServerChannelSettings.mmio_megabytes of the offer (0 = KMCL's default)");
ABSL_FLAG(int32_t, timeout_s, 120, "give up (and clean up) after this many seconds");

namespace {

namespace v1 = ::kmcl::v1;
namespace kc = ::kmcl::client;

// The demo's interface type; the instance is the random one kmcld assigns.
constexpr char kInterfaceType[] = "8d7e2c1a-5b4f-4e3d-9a6c-0f1e2d3c4b5a";
constexpr char kFriendlyName[] = "kmcld remote_demo echo";
constexpr uint64_t kGpadlBufferBytes = 64 * 1024;

absl::Mutex print_mu;

void Say(const char* who, const char* format, ...) ABSL_PRINTF_ATTRIBUTE(2, 3);
void Say(const char* who, const char* format, ...) {
  absl::MutexLock lock(&print_mu);
  std::printf("%-6s ", who);
  va_list args;
  va_start(args, format);
  std::vprintf(format, args);
  va_end(args);
  std::printf("\n");
  std::fflush(stdout);
}

// Deterministic payload of `size` bytes for transaction `tag`.
std::string PayloadFor(uint64_t tag, size_t size) {
  std::string s(size, '\0');
  uint64_t x = tag * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
  for (size_t i = 0; i < size; ++i) {
    if (i % 8 == 0) {
      x ^= x >> 12;
      x ^= x << 25;
      x ^= x >> 27;
    }
    s[i] = static_cast<char>((x * 0x2545F4914F6CDD1Dull) >> (8 * (i % 8)));
  }
  return s;
}

std::string GpadlPattern(size_t size) {
  std::string s(size, '\0');
  for (size_t i = 0; i < size; ++i) s[i] = static_cast<char>((i * 131 + (i >> 12) * 7 + 1) & 0xFF);
  return s;
}

// VMBus pads payloads to 8 bytes with zeros.
bool EqualsPadded(const std::string& sent, const std::string& received) {
  std::string padded = sent;
  padded.resize((sent.size() + 7) & ~size_t{7}, '\0');
  return padded == received;
}

const char* Strip(const std::string& name, size_t prefix) {
  return name.size() > prefix ? name.c_str() + prefix : name.c_str();
}
const char* ConnectionOf(const v1::EndpointState& e) {
  return e.present() ? Strip(v1::ConnectionState_Name(e.connection()), 17) : "(none)";
}
const char* RunStateOf(const v1::EndpointState& e) {
  return e.present() ? Strip(v1::RunState_Name(e.run()), 10) : "(none)";
}
const char* EventName(v1::EventKind k) { return Strip(v1::EventKind_Name(k), 11); }

class Demo {
 public:
  absl::Status Run();

 private:
  absl::Status Connect();
  absl::Status OfferAndOpen();
  absl::Status GpadlRoundTrip();
  absl::Status Echo();
  absl::Status RunGuest(kc::AttachedStream& stream);
  absl::Status SaveAndRestore();
  absl::Status Teardown();

  const std::string target_ = absl::GetFlag(FLAGS_target);
  const std::string partition_ = absl::GetFlag(FLAGS_partition);
  const uint64_t packets_ = absl::GetFlag(FLAGS_packets);
  const uint32_t payload_ = absl::GetFlag(FLAGS_payload);
  const uint32_t window_ = absl::GetFlag(FLAGS_window);
  const absl::Time deadline_ = absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_timeout_s));

  std::shared_ptr<kc::Client> client_;
  // Destroyed in reverse order on failure: the guest closes before the host
  // rescinds.
  kc::HostChannel host_;
  kc::GuestChannel guest_;
};

absl::Status Demo::Run() {
  KMCL_RETURN_IF_ERROR(Connect());
  KMCL_RETURN_IF_ERROR(OfferAndOpen());
  KMCL_RETURN_IF_ERROR(GpadlRoundTrip());
  KMCL_RETURN_IF_ERROR(Echo());
  KMCL_RETURN_IF_ERROR(SaveAndRestore());
  return Teardown();
}

absl::Status Demo::Connect() {
  kc::ClientOptions options;
  options.call_timeout = std::max(absl::Seconds(1), deadline_ - absl::Now());
  options.stream_timeout = options.call_timeout;
  KMCL_ASSIGN_OR_RETURN(client_, kc::Client::Connect(target_, options));
  Say("demo", "connected to kmcld at %s", client_->target().c_str());
  KMCL_ASSIGN_OR_RETURN(v1::Partition p, client_->GetPartition(partition_));
  Say("demo", "partition \"%s\": VMBus %u.%u, %" PRIu64 " MiB guest memory, %u channel(s)",
      p.id().c_str(), static_cast<uint32_t>(p.vmbus_version()) >> 16,
      static_cast<uint32_t>(p.vmbus_version()) & 0xFFFF, p.guest_memory_bytes() >> 20,
      p.channel_count());
  return absl::OkStatus();
}

absl::Status Demo::OfferAndOpen() {
  const uint32_t max_packet = std::max<uint32_t>(4096, (payload_ + 7) & ~7u);
  v1::ServerChannelSettings s;
  s.mutable_interface_type()->set_value(kInterfaceType);
  s.set_friendly_name(kFriendlyName);
  s.set_max_packet_size(max_packet);
  s.set_mmio_megabytes(absl::GetFlag(FLAGS_mmio_megabytes));
  s.set_start(true);
  KMCL_ASSIGN_OR_RETURN(host_, kc::HostChannel::Offer(client_, partition_, s));
  KMCL_ASSIGN_OR_RETURN(v1::Channel ch, host_.Get());
  Say("host", "offered channel %u (offer_sequence %" PRIu64 ") interface %s instance %s: %s, %s",
      host_.ref().channel_id(), host_.ref().offer_sequence(),
      ch.offer().interface_type().value().c_str(), ch.offer().interface_instance().value().c_str(),
      ConnectionOf(ch.host()), RunStateOf(ch.host()));

  v1::OpenChannelRequest open;
  open.set_partition_id(partition_);
  *open.mutable_interface_type() = ch.offer().interface_type();
  *open.mutable_interface_instance() = ch.offer().interface_instance();
  open.set_max_packet_size(max_packet);
  KMCL_ASSIGN_OR_RETURN(guest_, kc::GuestChannel::Open(client_, open));
  if (guest_.ref().channel_id() != host_.ref().channel_id()) {
    return absl::InternalError(absl::StrCat("OpenChannel opened channel ", guest_.ref().channel_id(),
                                            ", offered was ", host_.ref().channel_id()));
  }
  KMCL_ASSIGN_OR_RETURN(v1::Channel och, client_->GetChannel(guest_.ref()));
  Say("guest", "opened channel %u: guest %s/%s%s, host %s/%s; MMIO at 0x%" PRIx64 " (%" PRIu64
      " bytes)",
      guest_.ref().channel_id(), ConnectionOf(och.guest()), RunStateOf(och.guest()),
      och.guest().running() ? " (running)" : "", ConnectionOf(och.host()), RunStateOf(och.host()),
      och.mmio_address(), och.mmio_size());
  return absl::OkStatus();
}

absl::Status Demo::GpadlRoundTrip() {
  KMCL_ASSIGN_OR_RETURN(kc::GuestBuffer buffer,
                        kc::GuestBuffer::Allocate(client_, partition_, kGpadlBufferBytes));
  const v1::GuestBuffer& b = buffer.info();
  Say("guest", "allocated guest buffer %" PRIu64 ": %" PRIu64 " bytes in %d pages (first pfn 0x%" PRIx64
      ")",
      b.buffer_id(), b.byte_count(), b.pfns_size(), b.pfns_size() > 0 ? b.pfns(0) : 0);
  const std::string pattern = GpadlPattern(kGpadlBufferBytes);
  KMCL_RETURN_IF_ERROR(buffer.Write(0, pattern));
  Say("guest", "wrote a %zu-byte pattern into the buffer", pattern.size());

  KMCL_ASSIGN_OR_RETURN(kc::Gpadl gpadl, kc::Gpadl::Create(client_, guest_.ref(), buffer));
  Say("guest", "created GPADL %u over the buffer: %" PRIu64 " bytes in %d range(s), %s", gpadl.id(),
      gpadl.info().byte_count(), gpadl.info().ranges_size(),
      v1::GpadlState_Name(gpadl.info().state()).c_str());

  KMCL_ASSIGN_OR_RETURN(kc::GpadlLease lease,
                        kc::GpadlLease::Map(client_, host_.ref(), gpadl.id(), /*read_only=*/true));
  Say("host", "mapped GPADL %u as lease %" PRIu64 " (%" PRIu64 " bytes, %s)", gpadl.id(), lease.id(),
      lease.info().byte_count(), lease.info().read_only() ? "read-only" : "read-write");
  KMCL_ASSIGN_OR_RETURN(std::string read_back,
                        lease.Read(0, std::min<uint64_t>(lease.info().byte_count(), pattern.size())));
  if (read_back != pattern) {
    size_t at = 0;
    while (at < read_back.size() && at < pattern.size() && read_back[at] == pattern[at]) ++at;
    return absl::DataLossError(absl::StrCat("the pattern read through lease ", lease.id(),
                                            " differs from what the guest wrote at byte ", at,
                                            " (read ", read_back.size(), " of ", pattern.size(),
                                            " bytes)"));
  }
  Say("host", "read %zu bytes through the lease: the pattern matches", read_back.size());
  const uint64_t lease_id = lease.id();
  KMCL_RETURN_IF_ERROR(lease.Unmap());
  Say("host", "unmapped lease %" PRIu64, lease_id);
  const uint32_t gpadl_id = gpadl.id();
  KMCL_RETURN_IF_ERROR(gpadl.Teardown(/*wait=*/true));
  Say("guest", "tore down GPADL %u (TORN_DOWN)", gpadl_id);
  const uint64_t buffer_id = buffer.id();
  KMCL_RETURN_IF_ERROR(buffer.Free());
  Say("guest", "freed guest buffer %" PRIu64, buffer_id);
  return absl::OkStatus();
}

absl::Status Demo::Echo() {
  // The host echoes each delivery as its completion, on its stream's thread.
  absl::Mutex mu;
  uint64_t echoed = 0;
  absl::Status host_error;
  kc::StreamOptions host_options;
  host_options.delivery_credits = 256;
  host_options.max_batch = 256;
  host_options.on_delivery = [&](kc::AttachedStream& stream, kc::Delivery d) {
    absl::Status s = stream.Complete(d.id, std::move(d.payload));
    absl::MutexLock lock(&mu);
    if (!s.ok() && host_error.ok()) host_error = s;
    ++echoed;
  };
  host_options.on_event = [](const v1::EndpointEvent& e) {
    Say("host", "event %s (sequence %" PRIu64 ")", EventName(e.kind()), e.sequence());
  };
  KMCL_ASSIGN_OR_RETURN(std::unique_ptr<kc::AttachedStream> host,
                        kc::AttachedStream::Attach(client_, host_.endpoint(), host_options));
  const v1::Attached ha = host->attached();
  Say("host", "attached: %u send credits, max packet %u bytes, %u redelivered", ha.send_credits(),
      ha.max_packet_size(), ha.redelivered());

  kc::StreamOptions guest_options;
  guest_options.max_batch = 256;
  guest_options.on_event = [](const v1::EndpointEvent& e) {
    Say("guest", "event %s (sequence %" PRIu64 ")", EventName(e.kind()), e.sequence());
  };
  KMCL_ASSIGN_OR_RETURN(std::unique_ptr<kc::AttachedStream> guest,
                        kc::AttachedStream::Attach(client_, guest_.endpoint(), guest_options));
  KMCL_RETURN_IF_ERROR(RunGuest(*guest));

  {
    absl::MutexLock lock(&mu);
    auto all_echoed = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return echoed >= packets_; };
    if (!mu.AwaitWithDeadline(absl::Condition(&all_echoed), deadline_)) {
      return absl::DeadlineExceededError("the host did not echo every packet in time");
    }
    KMCL_RETURN_IF_ERROR(host_error);
  }
  KMCL_RETURN_IF_ERROR(host->Close());
  const kc::AttachedStream::Stats hs = host->stats();
  Say("host", "echoed %" PRIu64 " deliveries (%" PRIu64 " messages in, %" PRIu64
      " out); stream closed",
      hs.deliveries, hs.messages_read, hs.messages_written);
  return absl::OkStatus();
}

absl::Status Demo::RunGuest(kc::AttachedStream& stream) {
  const v1::Attached ga = stream.attached();
  Say("guest", "attached: %u send credits, max packet %u bytes", ga.send_credits(),
      ga.max_packet_size());
  Say("guest", "sending %" PRIu64 " transactions of %u bytes, %u in flight at most", packets_,
      payload_, window_);
  absl::Mutex mu;
  uint64_t completed = 0, inflight = 0, mismatches = 0, failures = 0;
  std::string first_problem;
  const absl::Time start = absl::Now();
  for (uint64_t tag = 0; tag < packets_; ++tag) {
    {
      absl::MutexLock lock(&mu);
      auto room = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return inflight < window_; };
      if (!mu.AwaitWithDeadline(absl::Condition(&room), deadline_)) {
        return absl::DeadlineExceededError("transactions did not complete in time");
      }
      ++inflight;
    }
    stream.Send({PayloadFor(tag, payload_)}, [&, tag](absl::StatusOr<kc::SendResult> r) {
      std::string problem;
      if (!r.ok()) {
        problem = absl::StrCat("tag ", tag, ": ", r.status().ToString());
      } else if (r->status.code() != 0) {
        ++failures;
        problem = absl::StrCat("tag ", tag, " completed with status ", r->status.name());
      } else if (!EqualsPadded(PayloadFor(tag, payload_), r->payload)) {
        ++mismatches;
        problem = absl::StrCat("tag ", tag, ": completion payload of ", r->payload.size(),
                               " bytes differs from the ", payload_, " bytes sent");
      }
      absl::MutexLock lock(&mu);
      --inflight;
      ++completed;
      if (!problem.empty() && first_problem.empty()) first_problem = problem;
    });
  }
  {
    absl::MutexLock lock(&mu);
    auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return completed == packets_; };
    if (!mu.AwaitWithDeadline(absl::Condition(&done), deadline_)) {
      return absl::DeadlineExceededError("transactions did not complete in time");
    }
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  KMCL_RETURN_IF_ERROR(stream.Close());
  const kc::AttachedStream::Stats s = stream.stats();
  absl::MutexLock lock(&mu);
  Say("guest", "%" PRIu64 " completions in %.3f s; %" PRIu64 " mismatches, %" PRIu64
      " failed; %" PRIu64 " messages out, %" PRIu64 " in, %" PRIu64 " waits for credits",
      completed, seconds, mismatches, failures, s.messages_written, s.messages_read,
      s.credit_stalls);
  if (!first_problem.empty()) {
    return absl::DataLossError(absl::StrCat("echo check failed: ", first_problem));
  }
  Say("guest", "every completion payload equals what was sent (zero-padded to 8)");
  Say("rate", "%.0f round trips/s, %.2f MB/s of payload each way (%.2f MB/s both ways), "
      "%.1f us per round trip at %u in flight",
      packets_ / seconds, packets_ * static_cast<double>(payload_) / seconds / 1e6,
      2 * packets_ * static_cast<double>(payload_) / seconds / 1e6, seconds * 1e6 / packets_ * window_,
      window_);
  return absl::OkStatus();
}

// Saves the partition, restores it as a new partition beside the original,
// checks that the channel came back opened on both sides, deletes the copy.
absl::Status Demo::SaveAndRestore() {
  std::stringstream blob;
  uint64_t chunks = 0;
  absl::Time start = absl::Now();
  KMCL_ASSIGN_OR_RETURN(uint64_t bytes,
                        client_->SavePartition(partition_, /*stay_paused=*/false, blob,
                                               [&](uint64_t, uint64_t) { ++chunks; }));
  Say("save", "partition \"%s\" saved: %" PRIu64 " bytes (%.2f MiB) in %" PRIu64
      " chunk(s) in %.1f ms",
      partition_.c_str(), bytes, bytes / 1048576.0, chunks,
      absl::ToDoubleMilliseconds(absl::Now() - start));

  start = absl::Now();
  KMCL_ASSIGN_OR_RETURN(v1::Partition restored,
                        client_->RestorePartition(absl::StrCat(partition_, "-restored"), blob));
  Say("save", "restored as partition \"%s\": %u channel(s) in %.1f ms", restored.id().c_str(),
      restored.channel_count(), absl::ToDoubleMilliseconds(absl::Now() - start));
  v1::ChannelRef copy = host_.ref();
  copy.set_partition_id(restored.id());
  absl::StatusOr<v1::Channel> c = client_->GetChannel(copy);
  absl::Status checked = c.status();
  if (c.ok() && (c->host().connection() != v1::CONNECTION_STATE_OPENED ||
                 c->guest().connection() != v1::CONNECTION_STATE_OPENED)) {
    checked = absl::InternalError("the restored channel is not opened on both sides");
  }
  if (checked.ok()) {
    Say("save", "restored channel %u: host and guest endpoints OPENED, running=%s",
        copy.channel_id(), c->host().running() ? "yes" : "no");
  }
  KMCL_RETURN_IF_ERROR(client_->DeletePartition(restored.id(), /*force=*/true));
  Say("save", "partition \"%s\" deleted again", restored.id().c_str());
  return checked;
}

absl::Status Demo::Teardown() {
  const uint32_t id = guest_.ref().channel_id();
  KMCL_RETURN_IF_ERROR(guest_.Close());
  KMCL_ASSIGN_OR_RETURN(v1::Channel after_close, client_->GetChannel(host_.ref()));
  Say("guest", "closed channel %u: host now %s/%s", id, ConnectionOf(after_close.host()),
      RunStateOf(after_close.host()));
  KMCL_RETURN_IF_ERROR(host_.Rescind());
  Say("host", "rescinded and cleaned up channel %u", id);
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "remote_demo: drives a running kmcld as a host tool and a guest tool.\n"
      "Usage: remote_demo [--target=127.0.0.1:50551|unix:/path] [--packets=N] [--payload=BYTES]");
  absl::ParseCommandLine(argc, argv);
  const uint32_t payload = absl::GetFlag(FLAGS_payload);
  const uint32_t window = absl::GetFlag(FLAGS_window);
  if (payload < 1 || payload > 65536 || window < 1 || window > 4096 ||
      absl::GetFlag(FLAGS_packets) < 1 || absl::GetFlag(FLAGS_timeout_s) < 1) {
    std::fprintf(stderr,
                 "remote_demo: need 1 <= --payload <= 65536, 1 <= --window <= 4096, "
                 "--packets >= 1, --timeout_s >= 1\n");
    return 2;
  }
  absl::Status status;
  {
    Demo demo;  // on failure its handles release what the demo created
    status = demo.Run();
  }
  if (!status.ok()) {
    std::fflush(stdout);
    std::fprintf(stderr, "remote_demo: FAILED: %s\n", status.ToString().c_str());
    return 1;
  }
  Say("demo", "OK");
  return 0;
}
