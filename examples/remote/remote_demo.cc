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
// Host and guest are two threads, each with its own PacketStream.
// Exit status 0 when everything checked out, 1 with a message otherwise
// (after a best-effort cleanup of what the demo created).
//
//   bazel-bin/daemon/kmcld --listen=127.0.0.1:0 --uds=none    # prints its port
//   bazel run -c opt //examples/remote:remote_demo -- --target=127.0.0.1:PORT
#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "examples/remote/kmcl_client.h"
#include "grpcpp/client_context.h"

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
using kmcld::remote::KmclClient;
using kmcld::remote::OutgoingPacket;
using kmcld::remote::PacketStream;

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

#define DEMO_RETURN_IF_ERROR(expr)       \
  do {                                   \
    absl::Status _st = (expr);           \
    if (!_st.ok()) return _st;           \
  } while (0)

#define DEMO_ASSIGN_OR_RETURN(lhs, expr) \
  auto lhs##_or = (expr);                \
  if (!lhs##_or.ok()) return lhs##_or.status(); \
  auto lhs = *std::move(lhs##_or)

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
  Demo() = default;

  absl::Status Run();
  // Best effort: undoes what Run created, after a failure.
  void Cleanup();

 private:
  absl::Status Connect();
  absl::Status OfferAndOpen();
  absl::Status GpadlRoundTrip();
  absl::Status Echo();
  absl::Status RunHost(PacketStream& stream);
  absl::Status RunGuest(PacketStream& stream);
  absl::Status Save();
  absl::Status Restore();
  absl::Status Teardown();

  v1::EndpointRef Endpoint(v1::EndpointRole role) const {
    v1::EndpointRef ref;
    *ref.mutable_channel() = channel_;
    ref.set_role(role);
    return ref;
  }
  v1::ChannelRequest ChannelReq() const {
    v1::ChannelRequest r;
    *r.mutable_channel() = channel_;
    return r;
  }

  const std::string target_ = absl::GetFlag(FLAGS_target);
  const std::string partition_ = absl::GetFlag(FLAGS_partition);
  const uint64_t packets_ = absl::GetFlag(FLAGS_packets);
  const uint32_t payload_ = absl::GetFlag(FLAGS_payload);
  const uint32_t window_ = absl::GetFlag(FLAGS_window);
  const absl::Time deadline_ = absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_timeout_s));

  std::unique_ptr<KmclClient> client_;
  v1::ChannelRef channel_;
  bool offered_ = false;
  bool rescinded_ = false;
  bool guest_open_ = false;
  uint64_t buffer_id_ = 0;
  uint32_t gpadl_id_ = 0;
  uint64_t lease_id_ = 0;
  std::string blob_;  // the last SavePartition
};

absl::Status Demo::Run() {
  DEMO_RETURN_IF_ERROR(Connect());
  DEMO_RETURN_IF_ERROR(OfferAndOpen());
  DEMO_RETURN_IF_ERROR(GpadlRoundTrip());
  DEMO_RETURN_IF_ERROR(Echo());
  DEMO_RETURN_IF_ERROR(Save());
  DEMO_RETURN_IF_ERROR(Restore());
  return Teardown();
}

absl::Status Demo::Connect() {
  DEMO_ASSIGN_OR_RETURN(client, KmclClient::Connect(target_));
  client_ = std::move(client);
  client_->set_call_timeout(std::max(absl::Seconds(1), deadline_ - absl::Now()));
  Say("demo", "connected to kmcld at %s", target_.c_str());
  v1::GetPartitionRequest req;
  req.set_id(partition_);
  DEMO_ASSIGN_OR_RETURN(p, client_->Call(&v1::PartitionService::Stub::GetPartition,
                                         client_->partitions(), req, "GetPartition"));
  Say("demo", "partition \"%s\": VMBus %u.%u, %" PRIu64 " MiB guest memory, %u channel(s)",
      p.id().c_str(), static_cast<uint32_t>(p.vmbus_version()) >> 16,
      static_cast<uint32_t>(p.vmbus_version()) & 0xFFFF, p.guest_memory_bytes() >> 20,
      p.channel_count());
  return absl::OkStatus();
}

absl::Status Demo::OfferAndOpen() {
  const uint32_t max_packet = std::max<uint32_t>(4096, kmcld::remote::PaddedSize(payload_));
  v1::OfferChannelRequest offer;
  offer.set_partition_id(partition_);
  v1::ServerChannelSettings* s = offer.mutable_settings();
  s->mutable_interface_type()->set_value(kInterfaceType);
  s->set_friendly_name(kFriendlyName);
  s->set_max_packet_size(max_packet);
  s->set_mmio_megabytes(absl::GetFlag(FLAGS_mmio_megabytes));
  s->set_start(true);
  DEMO_ASSIGN_OR_RETURN(offered, client_->Call(&v1::HostChannelService::Stub::OfferChannel,
                                               client_->host(), offer, "OfferChannel"));
  const v1::Channel& ch = offered.channel();
  channel_ = ch.offer().channel();
  offered_ = true;
  Say("host", "offered channel %u (offer_sequence %" PRIu64 ") interface %s instance %s: %s, %s",
      channel_.channel_id(), channel_.offer_sequence(), ch.offer().interface_type().value().c_str(),
      ch.offer().interface_instance().value().c_str(), ConnectionOf(ch.host()), RunStateOf(ch.host()));

  v1::OpenChannelRequest open;
  open.set_partition_id(partition_);
  open.set_vtl(0);
  *open.mutable_interface_type() = ch.offer().interface_type();
  *open.mutable_interface_instance() = ch.offer().interface_instance();
  open.set_max_packet_size(max_packet);
  DEMO_ASSIGN_OR_RETURN(opened, client_->Call(&v1::GuestChannelService::Stub::OpenChannel,
                                              client_->guest(), open, "OpenChannel"));
  guest_open_ = true;
  const v1::Channel& och = opened.channel();
  if (och.offer().channel().channel_id() != channel_.channel_id()) {
    return absl::InternalError(absl::StrCat("OpenChannel opened channel ",
                                            och.offer().channel().channel_id(), ", offered was ",
                                            channel_.channel_id()));
  }
  Say("guest", "opened channel %u: guest %s/%s%s, host %s/%s; MMIO at 0x%" PRIx64 " (%" PRIu64
      " bytes)",
      och.offer().channel().channel_id(), ConnectionOf(och.guest()), RunStateOf(och.guest()),
      och.guest().running() ? " (running)" : "", ConnectionOf(och.host()), RunStateOf(och.host()),
      och.mmio_address(), och.mmio_size());
  return absl::OkStatus();
}

absl::Status Demo::GpadlRoundTrip() {
  v1::AllocateGuestBufferRequest alloc;
  alloc.set_partition_id(partition_);
  alloc.set_byte_count(kGpadlBufferBytes);
  DEMO_ASSIGN_OR_RETURN(buffer, client_->Call(&v1::GpadlService::Stub::AllocateGuestBuffer,
                                              client_->gpadl(), alloc, "AllocateGuestBuffer"));
  buffer_id_ = buffer.buffer_id();
  Say("guest", "allocated guest buffer %" PRIu64 ": %" PRIu64 " bytes in %d pages (first pfn 0x%" PRIx64
      ")",
      buffer.buffer_id(), buffer.byte_count(), buffer.pfns_size(),
      buffer.pfns_size() > 0 ? buffer.pfns(0) : 0);

  const std::string pattern = GpadlPattern(kGpadlBufferBytes);
  v1::WriteGuestMemoryRequest write;
  write.set_partition_id(partition_);
  write.set_buffer_id(buffer_id_);
  write.set_offset(0);
  write.set_data(pattern);
  DEMO_RETURN_IF_ERROR(client_->Call(&v1::GpadlService::Stub::WriteGuestMemory, client_->gpadl(),
                                     write, "WriteGuestMemory")
                           .status());
  Say("guest", "wrote a %zu-byte pattern into the buffer", pattern.size());

  v1::CreateGpadlRequest create;
  *create.mutable_channel() = channel_;
  create.mutable_buffer()->set_buffer_id(buffer_id_);
  DEMO_ASSIGN_OR_RETURN(gpadl, client_->Call(&v1::GpadlService::Stub::CreateGpadl,
                                             client_->gpadl(), create, "CreateGpadl"));
  gpadl_id_ = gpadl.gpadl_id();
  Say("guest", "created GPADL %u over the buffer: %" PRIu64 " bytes in %d range(s), %s", gpadl_id_,
      gpadl.byte_count(), gpadl.ranges_size(), v1::GpadlState_Name(gpadl.state()).c_str());

  v1::MapGpadlRequest map;
  *map.mutable_channel() = channel_;
  map.set_gpadl_id(gpadl_id_);
  map.set_read_only(true);
  DEMO_ASSIGN_OR_RETURN(lease, client_->Call(&v1::GpadlService::Stub::MapGpadl, client_->gpadl(),
                                             map, "MapGpadl"));
  lease_id_ = lease.lease_id();
  Say("host", "mapped GPADL %u as lease %" PRIu64 " (%" PRIu64 " bytes, %s)", gpadl_id_, lease_id_,
      lease.byte_count(), lease.read_only() ? "read-only" : "read-write");

  std::string read_back;
  const uint64_t total = std::min<uint64_t>(lease.byte_count(), pattern.size());
  while (read_back.size() < total) {
    v1::LeaseIoRequest io;
    io.set_lease_id(lease_id_);
    io.set_offset(read_back.size());
    io.set_length(static_cast<uint32_t>(
        std::min<uint64_t>(total - read_back.size(), v1::LIMITS_MAX_TRANSFER_BYTES)));
    DEMO_ASSIGN_OR_RETURN(r, client_->Call(&v1::GpadlService::Stub::ReadLease, client_->gpadl(), io,
                                           "ReadLease"));
    if (r.data().empty()) return absl::DataLossError("ReadLease returned no data");
    read_back += r.data();
  }
  if (read_back.size() != pattern.size() || read_back != pattern) {
    size_t at = 0;
    while (at < read_back.size() && at < pattern.size() && read_back[at] == pattern[at]) ++at;
    return absl::DataLossError(absl::StrCat("the pattern read through lease ", lease_id_,
                                            " differs from what the guest wrote at byte ", at,
                                            " (read ", read_back.size(), " of ", pattern.size(),
                                            " bytes)"));
  }
  Say("host", "read %zu bytes through the lease: the pattern matches", read_back.size());

  v1::UnmapGpadlRequest unmap;
  unmap.set_lease_id(lease_id_);
  DEMO_RETURN_IF_ERROR(
      client_->Call(&v1::GpadlService::Stub::UnmapGpadl, client_->gpadl(), unmap, "UnmapGpadl")
          .status());
  Say("host", "unmapped lease %" PRIu64, lease_id_);
  lease_id_ = 0;

  v1::TeardownGpadlRequest teardown;
  *teardown.mutable_channel() = channel_;
  teardown.set_gpadl_id(gpadl_id_);
  teardown.set_wait(true);
  DEMO_ASSIGN_OR_RETURN(torn, client_->Call(&v1::GpadlService::Stub::TeardownGpadl,
                                            client_->gpadl(), teardown, "TeardownGpadl"));
  if (torn.state() != v1::GPADL_STATE_TORN_DOWN) {
    return absl::InternalError(absl::StrCat("TeardownGpadl(wait) returned GPADL ", gpadl_id_,
                                            " in state ", v1::GpadlState_Name(torn.state())));
  }
  Say("guest", "tore down GPADL %u (%s)", gpadl_id_, v1::GpadlState_Name(torn.state()).c_str());
  gpadl_id_ = 0;

  v1::FreeGuestBufferRequest free_req;
  free_req.set_partition_id(partition_);
  free_req.set_buffer_id(buffer_id_);
  DEMO_RETURN_IF_ERROR(client_->Call(&v1::GpadlService::Stub::FreeGuestBuffer, client_->gpadl(),
                                     free_req, "FreeGuestBuffer")
                           .status());
  Say("guest", "freed guest buffer %" PRIu64, buffer_id_);
  buffer_id_ = 0;
  return absl::OkStatus();
}

absl::Status Demo::RunHost(PacketStream& stream) {
  uint64_t echoed = 0;
  PacketStream::Handlers h;
  h.on_received = [&](const v1::ReceivedPacket& p) {
    stream.Complete(p.delivery_id(), p.payload());  // echo: completion payload = delivery
    ++echoed;
  };
  h.on_send_completion = [](const v1::SendCompletion&) {};
  h.on_event = [](const v1::EndpointEvent& e) {
    Say("host", "event %s (sequence %" PRIu64 ")", EventName(e.kind()), e.sequence());
  };
  PacketStream::Options o;
  o.delivery_credits = 256;
  o.max_batch = 256;
  o.deadline = deadline_;
  DEMO_RETURN_IF_ERROR(stream.Attach(Endpoint(v1::ENDPOINT_ROLE_HOST), h, o));
  Say("host", "attached: %u send credits, max packet %u bytes, %u redelivered",
      stream.attached_info().send_credits(), stream.max_packet_size(),
      stream.attached_info().redelivered());
  while (echoed < packets_) DEMO_RETURN_IF_ERROR(stream.ReadOne());
  DEMO_RETURN_IF_ERROR(stream.Close());
  const PacketStream::Counters& c = stream.counters();
  Say("host", "echoed %" PRIu64 " deliveries (%" PRIu64 " messages in, %" PRIu64
      " out); stream closed",
      echoed, c.messages_read, c.messages_written);
  return absl::OkStatus();
}

absl::Status Demo::RunGuest(PacketStream& stream) {
  std::vector<bool> done(packets_, false);
  uint64_t completed = 0, inflight = 0, mismatches = 0, failures = 0;
  std::string first_problem;
  PacketStream::Handlers h;
  h.on_send_completion = [&](const v1::SendCompletion& c) {
    --inflight;
    ++completed;
    std::string problem;
    if (c.tag() >= packets_ || done[c.tag()]) {
      problem = absl::StrCat("completion for unknown or already completed tag ", c.tag());
    } else if (c.status().code() != 0) {
      ++failures;
      problem = absl::StrCat("tag ", c.tag(), " completed with status ", c.status().name(), " (0x",
                             absl::Hex(c.status().code()), ")");
    } else if (!kmcld::remote::EqualsPadded(PayloadFor(c.tag(), payload_), c.payload())) {
      ++mismatches;
      problem = absl::StrCat("tag ", c.tag(), ": completion payload of ", c.payload().size(),
                             " bytes differs from the ", payload_, " bytes sent");
    }
    if (c.tag() < packets_) done[c.tag()] = true;
    if (!problem.empty() && first_problem.empty()) first_problem = problem;
  };
  h.on_received = [&](const v1::ReceivedPacket& p) {
    stream.Complete(p.delivery_id(), "");  // the host sends nothing; complete anyway
  };
  h.on_event = [](const v1::EndpointEvent& e) {
    Say("guest", "event %s (sequence %" PRIu64 ")", EventName(e.kind()), e.sequence());
  };
  PacketStream::Options o;
  o.delivery_credits = 64;
  o.max_batch = 256;
  o.deadline = deadline_;
  DEMO_RETURN_IF_ERROR(stream.Attach(Endpoint(v1::ENDPOINT_ROLE_GUEST), h, o));
  Say("guest", "attached: %u send credits, max packet %u bytes",
      stream.attached_info().send_credits(), stream.max_packet_size());
  Say("guest", "sending %" PRIu64 " transactions of %u bytes, %u in flight at most", packets_,
      payload_, window_);

  const absl::Time start = absl::Now();
  uint64_t sent = 0;
  std::vector<OutgoingPacket> batch;
  while (completed < packets_) {
    if (sent < packets_ && inflight < window_) {
      const uint64_t n = std::min<uint64_t>(window_ - inflight, packets_ - sent);
      batch.clear();
      for (uint64_t i = 0; i < n; ++i) {
        batch.push_back({.tag = sent + i, .payload = PayloadFor(sent + i, payload_),
                         .wait_for_completion = true});
      }
      sent += n;
      inflight += n;  // before Send: it may dispatch completions while waiting for credits
      DEMO_RETURN_IF_ERROR(stream.Send(batch));
    } else {
      DEMO_RETURN_IF_ERROR(stream.ReadOne());
    }
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  DEMO_RETURN_IF_ERROR(stream.Close());
  const PacketStream::Counters& c = stream.counters();
  Say("guest", "%" PRIu64 " completions in %.3f s; %" PRIu64 " mismatches, %" PRIu64
      " failed; %" PRIu64 " messages out, %" PRIu64 " in, %" PRIu64 " waits for credits",
      completed, seconds, mismatches, failures, c.messages_written, c.messages_read,
      c.credit_waits);
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

absl::Status Demo::Echo() {
  PacketStream host(&client_->packet());
  PacketStream guest(&client_->packet());
  absl::Status host_status;
  std::thread host_thread([&] {
    host_status = RunHost(host);
    if (!host_status.ok()) guest.Cancel();  // unblock the guest
  });
  absl::Status guest_status = RunGuest(guest);
  if (!guest_status.ok()) host.Cancel();  // unblock the host
  host_thread.join();
  if (!guest_status.ok() && !host_status.ok() && absl::IsCancelled(guest_status)) {
    return absl::Status(host_status.code(), absl::StrCat("host: ", host_status.message()));
  }
  if (!guest_status.ok()) {
    return absl::Status(guest_status.code(), absl::StrCat("guest: ", guest_status.message()));
  }
  if (!host_status.ok()) {
    return absl::Status(host_status.code(), absl::StrCat("host: ", host_status.message()));
  }
  return absl::OkStatus();
}

absl::Status Demo::Save() {
  v1::SavePartitionRequest req;
  req.set_partition_id(partition_);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(deadline_));
  const absl::Time start = absl::Now();
  auto reader = client_->save_restore().SavePartition(&context, req);
  v1::SaveChunk chunk;
  uint64_t bytes = 0, chunks = 0, total = 0;
  bool last = false;
  while (reader->Read(&chunk)) {
    if (chunk.offset() != bytes) {
      context.TryCancel();
      reader->Finish().ok();
      return absl::DataLossError(absl::StrCat("SavePartition: chunk ", chunks, " at offset ",
                                              chunk.offset(), ", expected ", bytes));
    }
    bytes += chunk.data().size();
    blob_ += chunk.data();
    ++chunks;
    if (chunk.last()) {
      last = true;
      total = chunk.total_bytes();
    }
  }
  DEMO_RETURN_IF_ERROR(kmcld::remote::FromGrpc(reader->Finish(), "SavePartition"));
  if (!last) return absl::DataLossError("SavePartition: the stream ended without a last chunk");
  if (total != bytes) {
    return absl::DataLossError(absl::StrCat("SavePartition: last chunk says ", total,
                                            " bytes, received ", bytes));
  }
  Say("save", "partition \"%s\" saved: %" PRIu64 " bytes (%.2f MiB) in %" PRIu64
      " chunk(s) in %.1f ms",
      partition_.c_str(), bytes, bytes / 1048576.0, chunks,
      absl::ToDoubleMilliseconds(absl::Now() - start));
  return absl::OkStatus();
}

// Restores the saved blob as a new partition beside the original, checks
// that the channel came back opened on both sides, then deletes the copy.
absl::Status Demo::Restore() {
  const std::string copy = absl::StrCat(partition_, "-restored");
  const absl::Time start = absl::Now();
  {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(deadline_));
    v1::Partition restored;
    auto writer = client_->save_restore().RestorePartition(&context, &restored);
    v1::RestoreChunk first;
    first.mutable_target()->set_partition_id(copy);
    bool ok = writer->Write(first);
    constexpr size_t kChunk = 256 << 10;
    for (size_t at = 0; ok && at < blob_.size(); at += kChunk) {
      v1::RestoreChunk c;
      c.set_data(blob_.substr(at, kChunk));
      ok = writer->Write(c);
    }
    writer->WritesDone();
    DEMO_RETURN_IF_ERROR(kmcld::remote::FromGrpc(writer->Finish(), "RestorePartition"));
    Say("save", "restored as partition \"%s\": %u channel(s) in %.1f ms", restored.id().c_str(),
        restored.channel_count(), absl::ToDoubleMilliseconds(absl::Now() - start));
  }
  v1::ChannelRequest get = ChannelReq();
  get.mutable_channel()->set_partition_id(copy);
  DEMO_ASSIGN_OR_RETURN(c, client_->Call(&v1::HostChannelService::Stub::GetChannel,
                                         client_->host(), get, "GetChannel (restored)"));
  if (c.channel().host().connection() != v1::CONNECTION_STATE_OPENED ||
      c.channel().guest().connection() != v1::CONNECTION_STATE_OPENED) {
    return absl::InternalError("the restored channel is not opened on both sides");
  }
  Say("save", "restored channel %u: host and guest endpoints OPENED, running=%s",
      c.channel().offer().channel().channel_id(), c.channel().host().running() ? "yes" : "no");
  v1::DeletePartitionRequest del;
  del.set_id(copy);
  del.set_force(true);
  DEMO_RETURN_IF_ERROR(client_->Call(&v1::PartitionService::Stub::DeletePartition,
                                     client_->partitions(), del, "DeletePartition").status());
  Say("save", "partition \"%s\" deleted again", copy.c_str());
  return absl::OkStatus();
}

absl::Status Demo::Teardown() {
  DEMO_ASSIGN_OR_RETURN(closed, client_->Call(&v1::GuestChannelService::Stub::CloseChannel,
                                              client_->guest(), ChannelReq(), "CloseChannel"));
  guest_open_ = false;
  Say("guest", "closed channel %u: host now %s/%s", channel_.channel_id(),
      ConnectionOf(closed.channel().host()), RunStateOf(closed.channel().host()));
  DEMO_ASSIGN_OR_RETURN(rescinded, client_->Call(&v1::HostChannelService::Stub::RescindChannel,
                                                 client_->host(), ChannelReq(), "RescindChannel"));
  rescinded_ = true;
  Say("host", "rescinded channel %u: %s", channel_.channel_id(),
      ConnectionOf(rescinded.channel().host()));
  DEMO_RETURN_IF_ERROR(client_->Call(&v1::HostChannelService::Stub::CleanupChannel,
                                     client_->host(), ChannelReq(), "CleanupChannel")
                           .status());
  offered_ = false;
  Say("host", "cleaned up channel %u", channel_.channel_id());
  return absl::OkStatus();
}

void Demo::Cleanup() {
  if (client_ == nullptr) return;
  client_->set_call_timeout(absl::Seconds(10));
  auto warn = [](const absl::Status& s) {
    if (!s.ok()) Say("clean", "(ignored) %s", s.ToString().c_str());
  };
  if (lease_id_ != 0) {
    v1::UnmapGpadlRequest r;
    r.set_lease_id(lease_id_);
    warn(client_->Call(&v1::GpadlService::Stub::UnmapGpadl, client_->gpadl(), r, "UnmapGpadl")
             .status());
  }
  if (guest_open_) {  // also tears down the guest's GPADLs
    warn(client_->Call(&v1::GuestChannelService::Stub::CloseChannel, client_->guest(), ChannelReq(),
                       "CloseChannel")
             .status());
  } else if (gpadl_id_ != 0) {
    v1::TeardownGpadlRequest r;
    *r.mutable_channel() = channel_;
    r.set_gpadl_id(gpadl_id_);
    r.set_wait(true);
    warn(client_->Call(&v1::GpadlService::Stub::TeardownGpadl, client_->gpadl(), r,
                       "TeardownGpadl")
             .status());
  }
  if (buffer_id_ != 0) {
    v1::FreeGuestBufferRequest r;
    r.set_partition_id(partition_);
    r.set_buffer_id(buffer_id_);
    warn(client_->Call(&v1::GpadlService::Stub::FreeGuestBuffer, client_->gpadl(), r,
                       "FreeGuestBuffer")
             .status());
  }
  if (offered_) {
    if (!rescinded_) {
      warn(client_->Call(&v1::HostChannelService::Stub::RescindChannel, client_->host(),
                         ChannelReq(), "RescindChannel")
               .status());
    }
    warn(client_->Call(&v1::HostChannelService::Stub::CleanupChannel, client_->host(),
                       ChannelReq(), "CleanupChannel")
             .status());
  }
  Say("clean", "cleanup done");
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
  Demo demo;
  absl::Status status = demo.Run();
  if (!status.ok()) {
    std::fflush(stdout);
    std::fprintf(stderr, "remote_demo: FAILED: %s\n", status.ToString().c_str());
    demo.Cleanup();
    return 1;
  }
  Say("demo", "OK");
  return 0;
}
