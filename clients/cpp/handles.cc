#include "clients/cpp/handles.h"

#include <utility>

namespace kmcl::client {

// Each handle's release, used by its destructor, its move assignment and
// its explicit call. The explicit call reports the daemon's status.
#define KMCL_DEFINE_MOVE_ASSIGN(Type, field, release)  \
  Type& Type::operator=(Type&& other) noexcept {       \
    if (this != &other) {                              \
      if (owned_) release.IgnoreError();               \
      Handle::operator=(std::move(other));             \
      field = std::move(other.field);                  \
    }                                                  \
    return *this;                                      \
  }                                                    \
  Type::~Type() {                                      \
    if (owned_) release.IgnoreError();                 \
  }

// --- Partition

absl::StatusOr<Partition> Partition::Create(std::shared_ptr<Client> client,
                                            const v1::CreatePartitionRequest& request) {
  absl::StatusOr<v1::Partition> p = client->CreatePartition(request);
  if (!p.ok()) return p.status();
  return Partition(std::move(client), *std::move(p));
}

absl::Status Partition::Delete(bool force) {
  if (!owned_) return absl::FailedPreconditionError("Partition: the handle owns nothing");
  owned_ = false;
  return client_->DeletePartition(info_.id(), force);
}

KMCL_DEFINE_MOVE_ASSIGN(Partition, info_, Delete())

// --- HostChannel

absl::StatusOr<HostChannel> HostChannel::Offer(std::shared_ptr<Client> client,
                                               const std::string& partition_id,
                                               const v1::ServerChannelSettings& settings) {
  absl::StatusOr<v1::Channel> c = client->OfferChannel(partition_id, settings);
  if (!c.ok()) return c.status();
  return HostChannel(std::move(client), c->offer().channel());
}

v1::EndpointRef HostChannel::endpoint() const {
  v1::EndpointRef e;
  *e.mutable_channel() = ref_;
  e.set_role(v1::ENDPOINT_ROLE_HOST);
  return e;
}

absl::Status HostChannel::Rescind() {
  if (!owned_) return absl::FailedPreconditionError("HostChannel: the handle owns nothing");
  owned_ = false;
  absl::StatusOr<v1::Channel> c = client_->GetChannel(ref_);
  if (!c.ok()) return c.status();
  if (c->host().present() && c->host().connection() != v1::CONNECTION_STATE_RESCINDED &&
      c->host().connection() != v1::CONNECTION_STATE_DISABLED) {
    KMCL_RETURN_IF_ERROR(client_->RescindChannel(ref_).status());
  }
  return client_->CleanupChannel(ref_);
}

KMCL_DEFINE_MOVE_ASSIGN(HostChannel, ref_, Rescind())

// --- GuestChannel

absl::StatusOr<GuestChannel> GuestChannel::Open(std::shared_ptr<Client> client,
                                                const v1::OpenChannelRequest& request,
                                                absl::Duration timeout) {
  absl::StatusOr<v1::Channel> c = client->OpenChannel(request, timeout);
  if (!c.ok()) return c.status();
  return GuestChannel(std::move(client), c->offer().channel());
}

v1::EndpointRef GuestChannel::endpoint() const {
  v1::EndpointRef e;
  *e.mutable_channel() = ref_;
  e.set_role(v1::ENDPOINT_ROLE_GUEST);
  return e;
}

absl::Status GuestChannel::Close() {
  if (!owned_) return absl::FailedPreconditionError("GuestChannel: the handle owns nothing");
  owned_ = false;
  return client_->CloseChannel(ref_).status();
}

KMCL_DEFINE_MOVE_ASSIGN(GuestChannel, ref_, Close())

// --- GuestBuffer

absl::StatusOr<GuestBuffer> GuestBuffer::Allocate(std::shared_ptr<Client> client,
                                                  const std::string& partition_id,
                                                  uint64_t bytes) {
  absl::StatusOr<v1::GuestBuffer> b = client->AllocateGuestBuffer(partition_id, bytes);
  if (!b.ok()) return b.status();
  return GuestBuffer(std::move(client), *std::move(b));
}

absl::Status GuestBuffer::Write(uint64_t offset, absl::string_view data) {
  v1::WriteGuestMemoryRequest where;
  where.set_partition_id(info_.partition_id());
  where.set_buffer_id(info_.buffer_id());
  where.set_offset(offset);
  return client_->WriteGuestMemory(where, data);
}

absl::StatusOr<std::string> GuestBuffer::Read(uint64_t offset, uint64_t length) {
  v1::ReadGuestMemoryRequest where;
  where.set_partition_id(info_.partition_id());
  where.set_buffer_id(info_.buffer_id());
  where.set_offset(offset);
  return client_->ReadGuestMemory(where, length);
}

absl::Status GuestBuffer::Free() {
  if (!owned_) return absl::FailedPreconditionError("GuestBuffer: the handle owns nothing");
  owned_ = false;
  return client_->FreeGuestBuffer(info_.partition_id(), info_.buffer_id());
}

KMCL_DEFINE_MOVE_ASSIGN(GuestBuffer, info_, Free())

// --- Gpadl

absl::StatusOr<Gpadl> Gpadl::Create(std::shared_ptr<Client> client, const v1::ChannelRef& ref,
                                    const GuestBuffer& buffer, uint64_t offset, uint64_t length,
                                    bool read_only) {
  v1::CreateGpadlRequest request;
  *request.mutable_channel() = ref;
  request.mutable_buffer()->set_buffer_id(buffer.id());
  request.mutable_buffer()->set_offset(offset);
  request.mutable_buffer()->set_length(length);
  request.set_read_only(read_only);
  absl::StatusOr<v1::Gpadl> g = client->CreateGpadl(request);
  if (!g.ok()) return g.status();
  return Gpadl(std::move(client), *std::move(g));
}

absl::Status Gpadl::Teardown(bool wait) {
  if (!owned_) return absl::FailedPreconditionError("Gpadl: the handle owns nothing");
  owned_ = false;
  return client_->TeardownGpadl(info_.channel(), info_.gpadl_id(), wait).status();
}

KMCL_DEFINE_MOVE_ASSIGN(Gpadl, info_, Teardown(false))

// --- GpadlLease

absl::StatusOr<GpadlLease> GpadlLease::Map(std::shared_ptr<Client> client,
                                           const v1::ChannelRef& ref, uint32_t gpadl_id,
                                           bool read_only) {
  absl::StatusOr<v1::GpadlLease> l = client->MapGpadl(ref, gpadl_id, read_only);
  if (!l.ok()) return l.status();
  return GpadlLease(std::move(client), *std::move(l));
}

absl::Status GpadlLease::Unmap() {
  if (!owned_) return absl::FailedPreconditionError("GpadlLease: the handle owns nothing");
  owned_ = false;
  return client_->UnmapGpadl(info_.lease_id());
}

KMCL_DEFINE_MOVE_ASSIGN(GpadlLease, info_, Unmap())

#undef KMCL_DEFINE_MOVE_ASSIGN

}  // namespace kmcl::client
