#include "daemon/services/gpadl_service.h"

#include <algorithm>
#include <map>
#include <span>
#include <string>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "daemon/convert.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcld {

namespace {

constexpr uint64_t kPage = kmcl::wire::kPageSize;

void LogGpadl(EventLog& log, const ResolvedChannel& c, kmcl::v1::EventKind kind, uint32_t id) {
  kmcl::v1::Event e;
  e.set_kind(kind);
  e.set_partition_id(c.partition->id());
  e.mutable_channel()->set_partition_id(c.partition->id());
  e.mutable_channel()->set_channel_id(c.relid);
  e.mutable_channel()->set_offer_sequence(c.offer_sequence);
  e.set_role(kmcl::v1::ENDPOINT_ROLE_GUEST);
  e.set_detail(absl::StrCat("GPADL ", id));
  log.Append(std::move(e));
}

// A tool's explicit ranges may only describe pages of the partition's guest
// buffers (AllocateGuestBuffer): not pages nobody allocated, nor another
// channel's rings. INVALID_ARGUMENT naming the first other PFN. The buffers
// they lie in stay in use (no FreeGuestBuffer) while the returned BufferUse
// lives: the caller keeps it until the GPADL covers the pages.
absl::StatusOr<BufferUse> UseBufferPages(const std::shared_ptr<PartitionEntry>& partition,
                                          std::span<const kmcl::GpaRange> ranges) {
  absl::flat_hash_set<uint64_t> unowned;
  for (const kmcl::GpaRange& r : ranges) unowned.insert(r.pfns.begin(), r.pfns.end());
  {
    kmcl::MutexLock lock(&partition->mu);
    std::vector<uint64_t> owners;
    for (const auto& [id, buffer] : partition->buffers) {
      bool owns = false;
      for (uint64_t pfn : buffer.pfns) owns |= unowned.erase(pfn) != 0;
      if (owns) owners.push_back(id);
      if (unowned.empty()) break;
    }
    if (unowned.empty()) return UseBuffersLocked(partition, std::move(owners));
  }
  for (size_t i = 0; i < ranges.size(); ++i) {
    for (size_t j = 0; j < ranges[i].pfns.size(); ++j) {
      if (!unowned.contains(ranges[i].pfns[j])) continue;
      return absl::InvalidArgumentError(absl::StrCat(
          "PFN ", ranges[i].pfns[j], " (range ", i, ", page ", j,
          ") is not in a guest buffer of partition '", partition->id(),
          "': describe pages from AllocateGuestBuffer"));
    }
  }
  return absl::InternalError("no page of the ranges is outside the guest buffers, yet not all are inside");
}

// The guest VTL that owns a channel's GPADLs.
uint8_t GuestVtl(const ResolvedChannel& c) {
  if (c.guest != nullptr) return c.guest->channel().client_vtl();
  return c.info.has_value() ? c.info->offer.target_vtl : 0;
}

}  // namespace

absl::Status GpadlService::GuestIo(const std::string& partition_id, bool has_gpa, uint64_t gpa,
                                   bool has_buffer, uint64_t buffer_id, uint64_t offset,
                                   uint8_t* data, uint64_t length, bool write) {
  if (length > ctx_.limits.max_transfer_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("a transfer of ", length,
                                                   " bytes is above the limit of ",
                                                   ctx_.limits.max_transfer_bytes));
  }
  auto p = ctx_.registry.GetPartition(partition_id);
  if (!p.ok()) return p.status();
  kmcl::GuestMemory& memory = (*p)->partition().memory();
  if (has_gpa) {
    return write ? memory.Write(gpa, {data, length}) : memory.Read(gpa, {data, length});
  }
  if (!has_buffer) return absl::InvalidArgumentError("set either gpa or buffer_id");
  std::vector<uint64_t> pfns;
  BufferUse use;  // the pages stay the buffer's until the transfer is done
  {
    kmcl::MutexLock lock(&(*p)->mu);
    auto it = (*p)->buffers.find(buffer_id);
    if (it == (*p)->buffers.end()) {
      return absl::NotFoundError(absl::StrCat("guest buffer ", buffer_id, " does not exist"));
    }
    const uint64_t size = it->second.byte_count;
    if (offset > size || length > size - offset) {
      return absl::OutOfRangeError(absl::StrCat("bytes [", offset, ", ", offset + length,
                                                ") are outside guest buffer ", buffer_id, " of ",
                                                size, " bytes"));
    }
    pfns = it->second.pfns;
    use = UseBuffersLocked(*p, {buffer_id});
  }
  uint64_t done = 0;
  while (done < length) {
    const uint64_t at = offset + done;
    const uint64_t chunk = std::min(length - done, kPage - at % kPage);
    const uint64_t address = pfns[at / kPage] * kPage + at % kPage;
    absl::Status s = write ? memory.Write(address, {data + done, chunk})
                           : memory.Read(address, {data + done, chunk});
    if (!s.ok()) return s;
    done += chunk;
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* GpadlService::AllocateGuestBuffer(
    grpc::CallbackServerContext* ctx, const kmcl::v1::AllocateGuestBufferRequest* request,
    kmcl::v1::GuestBuffer* response) {
  if (absl::Status s = Authorize(ctx_, ctx, "AllocateGuestBuffer", *request); !s.ok()) return FinishNow(ctx, s);
  auto p = ctx_.registry.GetPartition(request->partition_id());
  if (!p.ok()) return FinishNow(ctx, p.status());
  if (request->byte_count() == 0) {
    return FinishNow(ctx, absl::InvalidArgumentError("byte_count must be non-zero"));
  }
  const uint64_t limit = ctx_.registry.limits().guest_buffer_bytes_per_partition;
  if (request->byte_count() > limit) {
    return FinishNow(ctx, absl::ResourceExhaustedError(absl::StrCat(
                              "byte_count ", request->byte_count(),
                              " is above the guest-buffer limit of ", limit, " bytes per partition")));
  }
  const uint64_t pages = (request->byte_count() + kPage - 1) / kPage;
  auto charge = ChargeCaller(ctx_, ctx, "AllocateGuestBuffer", security::Resource::kGuestBufferBytes, pages * kPage);
  if (!charge.ok()) return FinishNow(ctx, charge.status());
  kmcl::MutexLock lock(&(*p)->mu);
  if ((*p)->buffer_bytes + pages * kPage > limit) {
    return FinishNow(ctx, absl::ResourceExhaustedError(absl::StrCat(
                              "partition '", (*p)->id(), "' already holds ", (*p)->buffer_bytes,
                              " bytes of guest buffers; the limit is ", limit)));
  }
  auto pfns = (*p)->partition().memory().AllocatePages(pages);
  if (!pfns.ok()) return FinishNow(ctx, pfns.status());
  GuestBuffer buffer;
  buffer.buffer_id = (*p)->next_buffer_id++;
  buffer.byte_count = pages * kPage;
  buffer.pfns = *std::move(pfns);
  buffer.charge = *std::move(charge);
  (*p)->buffer_bytes += buffer.byte_count;
  response->set_partition_id((*p)->id());
  response->set_buffer_id(buffer.buffer_id);
  response->set_byte_count(buffer.byte_count);
  for (uint64_t pfn : buffer.pfns) response->add_pfns(pfn);
  (*p)->buffers.emplace(buffer.buffer_id, std::move(buffer));
  return FinishNow(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* GpadlService::FreeGuestBuffer(
    grpc::CallbackServerContext* ctx, const kmcl::v1::FreeGuestBufferRequest* request,
    kmcl::v1::FreeGuestBufferResponse*) {
  if (absl::Status s = Authorize(ctx_, ctx, "FreeGuestBuffer", *request); !s.ok()) return FinishNow(ctx, s);
  auto p = ctx_.registry.GetPartition(request->partition_id());
  if (!p.ok()) return FinishNow(ctx, p.status());
  return FinishNow(ctx, (*p)->FreeBuffer(request->buffer_id()));
}

grpc::ServerUnaryReactor* GpadlService::WriteGuestMemory(
    grpc::CallbackServerContext* ctx, const kmcl::v1::WriteGuestMemoryRequest* r,
    kmcl::v1::WriteGuestMemoryResponse*) {
  if (absl::Status s = Authorize(ctx_, ctx, "WriteGuestMemory", *r); !s.ok()) return FinishNow(ctx, s);
  std::string data = r->data();
  return FinishNow(ctx, GuestIo(r->partition_id(), r->has_gpa(), r->gpa(), r->has_buffer_id(),
                                r->buffer_id(), r->offset(), reinterpret_cast<uint8_t*>(data.data()),
                                data.size(), /*write=*/true));
}

grpc::ServerUnaryReactor* GpadlService::ReadGuestMemory(
    grpc::CallbackServerContext* ctx, const kmcl::v1::ReadGuestMemoryRequest* r,
    kmcl::v1::ReadGuestMemoryResponse* response) {
  if (absl::Status s = Authorize(ctx_, ctx, "ReadGuestMemory", *r); !s.ok()) return FinishNow(ctx, s);
  if (r->length() > ctx_.limits.max_transfer_bytes) {
    return FinishNow(ctx, absl::InvalidArgumentError(absl::StrCat(
                              "a transfer of ", r->length(), " bytes is above the limit of ",
                              ctx_.limits.max_transfer_bytes)));
  }
  std::string data(r->length(), '\0');
  absl::Status s = GuestIo(r->partition_id(), r->has_gpa(), r->gpa(), r->has_buffer_id(),
                           r->buffer_id(), r->offset(), reinterpret_cast<uint8_t*>(data.data()),
                           data.size(), /*write=*/false);
  if (s.ok()) response->set_data(std::move(data));
  return FinishNow(ctx, s);
}

kmcl::v1::Gpadl GpadlService::ToApi(const std::shared_ptr<PartitionEntry>& partition,
                                    uint64_t offer_sequence, const kmcl::GpadlInfo& info,
                                    const std::vector<LeaseRecord>& leases, bool include_ranges) {
  kmcl::v1::Gpadl out;
  out.mutable_channel()->set_partition_id(partition->id());
  out.mutable_channel()->set_channel_id(info.channel_id);
  out.mutable_channel()->set_offer_sequence(offer_sequence);
  out.set_gpadl_id(info.gpadl_id);
  uint64_t pages = 0;
  for (const kmcl::GpaRange& r : info.ranges) {
    if (include_ranges) ToProto(r, out.add_ranges());
    pages += r.pfns.size();
  }
  out.set_range_count(static_cast<uint32_t>(info.ranges.size()));
  out.set_page_count(pages);
  out.set_byte_count(info.byte_count);
  out.set_read_only(info.read_only);
  out.set_state(info.state == kmcl::GpadlState::kCreated ? kmcl::v1::GPADL_STATE_CREATED
                                                         : kmcl::v1::GPADL_STATE_TEARING_DOWN);
  for (const LeaseRecord& l : leases) {
    if (l.partition.lock() == partition && l.relid == info.channel_id &&
        l.gpadl_id == info.gpadl_id) {
      out.set_lease_id(l.lease_id);
      out.set_lease_read_only(l.read_only);
    }
  }
  return out;
}

absl::StatusOr<kmcl::v1::Gpadl> GpadlService::Describe(const ResolvedChannel& c, uint32_t id) {
  std::optional<kmcl::GpadlInfo> info = c.partition->partition().gpadls().Get(id);
  if (!info.has_value() || info->channel_id != c.relid) {
    return absl::NotFoundError(absl::StrCat("GPADL ", id, " does not exist on channel ", c.relid));
  }
  return ToApi(c.partition, c.offer_sequence, *info, leases_.List(), /*include_ranges=*/true);
}

grpc::ServerUnaryReactor* GpadlService::ListGpadls(grpc::CallbackServerContext* ctx,
                                                   const kmcl::v1::ListGpadlsRequest* request,
                                                   kmcl::v1::ListGpadlsResponse* response) {
  if (absl::Status s = Authorize(ctx_, ctx, "ListGpadls", *request); !s.ok()) return FinishNow(ctx, s);
  if (request->partition_id().empty() && request->channel_id() != 0) {
    return FinishNow(ctx, absl::InvalidArgumentError(
                              "ListGpadls: a channel_id needs its partition_id"));
  }
  auto partitions = ctx_.registry.PartitionsFor(request->partition_id());
  if (!partitions.ok()) return FinishNow(ctx, partitions.status());
  const std::vector<LeaseRecord> leases = leases_.List();
  for (const std::shared_ptr<PartitionEntry>& p : *partitions) {
    // Offer sequences of the channels the registry knows (the built-in
    // devices' channels have none: 0).
    std::map<uint32_t, uint64_t> sequences;
    for (const ResolvedChannel& c : ctx_.registry.Channels(p)) sequences[c.relid] = c.offer_sequence;
    if (request->channel_id() != 0 && !sequences.contains(request->channel_id())) {
      return FinishNow(ctx, absl::NotFoundError(absl::StrCat("channel ", request->channel_id(),
                                                             " does not exist in partition ",
                                                             p->id())));
    }
    std::vector<kmcl::GpadlInfo> gpadls = request->channel_id() != 0
                                              ? p->partition().gpadls().ListForChannel(request->channel_id())
                                              : p->partition().gpadls().List();
    std::sort(gpadls.begin(), gpadls.end(), [](const kmcl::GpadlInfo& a, const kmcl::GpadlInfo& b) {
      return std::tie(a.channel_id, a.gpadl_id) < std::tie(b.channel_id, b.gpadl_id);
    });
    for (const kmcl::GpadlInfo& g : gpadls) {
      auto seq = sequences.find(g.channel_id);
      *response->add_gpadls() = ToApi(p, seq == sequences.end() ? 0 : seq->second, g, leases,
                                      request->include_ranges());
    }
  }
  KeepVisible(ctx_, ctx, request->partition_id(), *response);
  return FinishNow(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* GpadlService::CreateGpadl(grpc::CallbackServerContext* ctx,
                                                    const kmcl::v1::CreateGpadlRequest* request,
                                                    kmcl::v1::Gpadl* response) {
  if (absl::Status s = Authorize(ctx_, ctx, "CreateGpadl", *request); !s.ok()) return FinishNow(ctx, s);
  auto c = ctx_.registry.Resolve(request->channel());
  if (!c.ok()) return FinishNow(ctx, c.status());
  if (c->guest == nullptr || c->guest->channel().connection() != kmcl::ConnectionState::kOpened) {
    return FinishNow(ctx, absl::FailedPreconditionError(absl::StrCat(
                              "channel ", c->relid,
                              ": GPADLs are created by the guest role on a channel it has open")));
  }
  std::vector<kmcl::GpaRange> ranges;
  // Until the GPADL covers them, FreeGuestBuffer must not return the pages.
  BufferUse use;
  switch (request->source_case()) {
    case kmcl::v1::CreateGpadlRequest::kBuffer: {
      const kmcl::v1::BufferSlice& slice = request->buffer();
      kmcl::MutexLock lock(&c->partition->mu);
      auto it = c->partition->buffers.find(slice.buffer_id());
      if (it == c->partition->buffers.end()) {
        return FinishNow(ctx, absl::NotFoundError(absl::StrCat("guest buffer ", slice.buffer_id(),
                                                               " does not exist")));
      }
      kmcl::GpaRange whole;
      whole.byte_count = static_cast<uint32_t>(it->second.byte_count);
      whole.pfns = it->second.pfns;
      if (it->second.byte_count > UINT32_MAX) {
        return FinishNow(ctx, absl::InvalidArgumentError("a guest buffer above 4 GiB cannot be one range"));
      }
      auto sliced = SliceRanges({whole}, slice.offset(), slice.length());
      if (!sliced.ok()) return FinishNow(ctx, sliced.status());
      ranges = *std::move(sliced);
      use = UseBuffersLocked(c->partition, {slice.buffer_id()});
      break;
    }
    case kmcl::v1::CreateGpadlRequest::kRanges: {
      auto parsed = FromProto(request->ranges());
      if (!parsed.ok()) return FinishNow(ctx, parsed.status());
      if (absl::Status s = kmcl::ValidateGpaRanges(*parsed, c->partition->partition().memory().page_count());
          !s.ok()) {
        return FinishNow(ctx, s);  // OUT_OF_RANGE outside guest memory
      }
      auto used = UseBufferPages(c->partition, *parsed);
      if (!used.ok()) return FinishNow(ctx, used.status());
      use = *std::move(used);
      ranges = *std::move(parsed);
      break;
    }
    case kmcl::v1::CreateGpadlRequest::SOURCE_NOT_SET:
      return FinishNow(ctx, absl::InvalidArgumentError("set either buffer or ranges"));
  }
  kmcl::Partition& partition = c->partition->partition();
  const uint32_t id = partition.gpadls().AllocateId();
  absl::Status s = partition.CreateGuestGpadl(GuestVtl(*c), c->relid, id, std::move(ranges));
  if (s.ok() && request->read_only()) s = partition.gpadls().MarkReadOnly(id);
  if (!s.ok()) return FinishNow(ctx, s);
  LogGpadl(ctx_.registry.log(), *c, kmcl::v1::EVENT_KIND_GPADL_CREATED, id);
  auto described = Describe(*c, id);
  if (described.ok()) *response = *std::move(described);
  return FinishNow(ctx, described.status());
}

grpc::ServerUnaryReactor* GpadlService::TeardownGpadl(grpc::CallbackServerContext* ctx,
                                                      const kmcl::v1::TeardownGpadlRequest* request,
                                                      kmcl::v1::Gpadl* response) {
  if (absl::Status s = Authorize(ctx_, ctx, "TeardownGpadl", *request); !s.ok()) return FinishNow(ctx, s);
  auto c = ctx_.registry.Resolve(request->channel());
  if (!c.ok()) return FinishNow(ctx, c.status());
  auto before = Describe(*c, request->gpadl_id());
  if (!before.ok()) return FinishNow(ctx, before.status());
  // Only the guest role kmcld plays for a tool tears down, as it creates;
  // and never the ring of an open channel (that is the channel's close),
  // which would leave the channel without rings and its saved state
  // unrestorable.
  if (c->guest == nullptr) {
    return FinishNow(ctx, absl::FailedPreconditionError(absl::StrCat(
                              "channel ", c->relid, ": GPADLs are torn down by the guest role that created them, ",
                              "and kmcld holds no guest endpoint for this channel")));
  }
  if (c->info.has_value() && c->info->open.has_value() &&
      c->info->open->ring_buffer_gpadl == request->gpadl_id()) {  // Resolve looked the channel up
    return FinishNow(ctx, absl::FailedPreconditionError(absl::StrCat(
                              "GPADL ", request->gpadl_id(), " holds channel ", c->relid,
                              "'s rings; close the channel (CloseChannel) to release it")));
  }
  if (before->state() == kmcl::v1::GPADL_STATE_TEARING_DOWN) {
    return FinishNow(ctx, absl::FailedPreconditionError(absl::StrCat(
                              "GPADL ", request->gpadl_id(), " is already being torn down")));
  }
  const auto deadline = ctx->deadline();
  const absl::Duration wait =
      !request->wait() ? absl::ZeroDuration()
      : deadline == std::chrono::system_clock::time_point::max()
          ? absl::InfiniteDuration()
          : std::max(absl::FromChrono(deadline) - absl::Now(), absl::ZeroDuration());
  return FinishBlocking(ctx, ctx_.pool, {c->partition->id(), ""}, [this, c = *c, request, response, wait,
                                         before = *before]() mutable -> absl::Status {
    std::optional<absl::Duration> how_long;
    if (wait != absl::InfiniteDuration()) how_long = wait;
    absl::Status s = c.partition->partition().TeardownGuestGpadl(GuestVtl(c), c.relid,
                                                                 request->gpadl_id(), how_long);
    *response = before;
    if (s.ok()) {
      response->set_state(kmcl::v1::GPADL_STATE_TORN_DOWN);
      response->set_lease_id(0);
      LogGpadl(ctx_.registry.log(), c, kmcl::v1::EVENT_KIND_GPADL_TORN_DOWN, request->gpadl_id());
      return s;
    }
    if (s.code() == absl::StatusCode::kDeadlineExceeded) {
      response->set_state(kmcl::v1::GPADL_STATE_TEARING_DOWN);
      return request->wait() ? s : absl::OkStatus();
    }
    return s;
  });
}

grpc::ServerUnaryReactor* GpadlService::GetGpadl(grpc::CallbackServerContext* ctx,
                                                 const kmcl::v1::GetGpadlRequest* request,
                                                 kmcl::v1::Gpadl* response) {
  if (absl::Status s = Authorize(ctx_, ctx, "GetGpadl", *request); !s.ok()) return FinishNow(ctx, s);
  auto c = ctx_.registry.Resolve(request->channel());
  if (!c.ok()) return FinishNow(ctx, c.status());
  auto described = Describe(*c, request->gpadl_id());
  if (described.ok()) *response = *std::move(described);
  return FinishNow(ctx, described.status());
}

grpc::ServerUnaryReactor* GpadlService::MapGpadl(grpc::CallbackServerContext* ctx,
                                                 const kmcl::v1::MapGpadlRequest* request,
                                                 kmcl::v1::GpadlLease* response) {
  if (absl::Status s = Authorize(ctx_, ctx, "MapGpadl", *request); !s.ok()) return FinishNow(ctx, s);
  auto c = ctx_.registry.Resolve(request->channel());
  if (!c.ok()) return FinishNow(ctx, c.status());
  if (c->host == nullptr) {
    return FinishNow(ctx, absl::FailedPreconditionError(absl::StrCat(
                              "channel ", c->relid, " has no host endpoint in kmcld to map with")));
  }
  auto lease = leases_.Map(c->partition, c->relid, request->gpadl_id(), request->read_only());
  if (!lease.ok()) return FinishNow(ctx, lease.status());
  response->set_lease_id(lease->lease_id);
  response->mutable_channel()->set_partition_id(c->partition->id());
  response->mutable_channel()->set_channel_id(c->relid);
  response->mutable_channel()->set_offer_sequence(c->offer_sequence);
  response->set_gpadl_id(lease->gpadl_id);
  response->set_byte_count(lease->byte_count);
  response->set_read_only(lease->read_only);
  return FinishNow(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* GpadlService::ReadLease(grpc::CallbackServerContext* ctx,
                                                  const kmcl::v1::LeaseIoRequest* request,
                                                  kmcl::v1::LeaseIoResponse* response) {
  if (absl::Status s = Authorize(ctx_, ctx, "ReadLease", *request); !s.ok()) return FinishNow(ctx, s);
  if (request->length() > ctx_.limits.max_transfer_bytes) {
    return FinishNow(ctx, absl::InvalidArgumentError(absl::StrCat(
                              "a transfer of ", request->length(), " bytes is above the limit of ",
                              ctx_.limits.max_transfer_bytes)));
  }
  std::string data(request->length(), '\0');
  absl::Status s = leases_.Read(request->lease_id(), request->offset(),
                                {reinterpret_cast<uint8_t*>(data.data()), data.size()});
  if (s.ok()) response->set_data(std::move(data));
  return FinishNow(ctx, s);
}

grpc::ServerUnaryReactor* GpadlService::WriteLease(grpc::CallbackServerContext* ctx,
                                                   const kmcl::v1::LeaseIoRequest* request,
                                                   kmcl::v1::LeaseIoResponse*) {
  if (absl::Status s = Authorize(ctx_, ctx, "WriteLease", *request); !s.ok()) return FinishNow(ctx, s);
  if (request->data().size() > ctx_.limits.max_transfer_bytes) {
    return FinishNow(ctx, absl::InvalidArgumentError(absl::StrCat(
                              "a transfer of ", request->data().size(),
                              " bytes is above the limit of ", ctx_.limits.max_transfer_bytes)));
  }
  const std::string& d = request->data();
  return FinishNow(ctx, leases_.Write(request->lease_id(), request->offset(),
                                      {reinterpret_cast<const uint8_t*>(d.data()), d.size()}));
}

grpc::ServerUnaryReactor* GpadlService::UnmapGpadl(grpc::CallbackServerContext* ctx,
                                                   const kmcl::v1::UnmapGpadlRequest* request,
                                                   kmcl::v1::UnmapGpadlResponse*) {
  if (absl::Status s = Authorize(ctx_, ctx, "UnmapGpadl", *request); !s.ok()) return FinishNow(ctx, s);
  return FinishNow(ctx, leases_.Unmap(request->lease_id()));
}

}  // namespace kmcld
