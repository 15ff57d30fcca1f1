// clients/cpp/handles.h: RAII handles for what a tool creates in kmcld:
// partitions, host (VSP) channels, guest (VSC) channels, guest buffers,
// GPADLs and host GPADL leases. Part of the kmcl C++ client library (see
// clients/cpp/kmcl.h).
//
// Each handle is move-only and releases what it holds when destroyed, in
// the order KMCL wants, with the client's unary deadline:
//   Partition    -> DeletePartition(force = true)
//   HostChannel  -> RescindChannel (unless already rescinded) + CleanupChannel
//   GuestChannel -> CloseChannel
//   GuestBuffer  -> FreeGuestBuffer
//   Gpadl        -> TeardownGpadl(wait = false)
//   GpadlLease   -> UnmapGpadl
// The explicit calls (Delete, Rescind, Close, Free, Teardown, Unmap) return
// the daemon's status and leave the handle empty; destructors ignore
// errors. Release() gives up ownership without freeing anything (the
// object stays in kmcld). Destroy a lease before its GPADL, a GPADL before
// its buffer, and a guest channel before the host channel it opened.
//
// Threading: a handle is thread-compatible (one thread at a time); its
// Client is thread-safe and kept alive by the handle.
#ifndef KMCLD_CLIENTS_CPP_HANDLES_H_
#define KMCLD_CLIENTS_CPP_HANDLES_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "clients/cpp/client.h"

namespace kmcl::client {

// What every handle shares: the client and whether it still owns the object.
class Handle {
 public:
  Handle() = default;
  Handle(Handle&& other) noexcept
      : client_(std::move(other.client_)), owned_(std::exchange(other.owned_, false)) {}
  Handle& operator=(Handle&& other) noexcept {
    client_ = std::move(other.client_);
    owned_ = std::exchange(other.owned_, false);
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  bool owned() const { return owned_; }
  // Keeps the object in kmcld; the handle no longer frees it.
  void Release() { owned_ = false; }
  const std::shared_ptr<Client>& client() const { return client_; }

 protected:
  explicit Handle(std::shared_ptr<Client> client) : client_(std::move(client)), owned_(true) {}
  ~Handle() = default;

  std::shared_ptr<Client> client_;
  bool owned_ = false;
};

class Partition : public Handle {
 public:
  static absl::StatusOr<Partition> Create(std::shared_ptr<Client> client,
                                          const v1::CreatePartitionRequest& request);
  Partition() = default;
  Partition(Partition&&) noexcept = default;
  Partition& operator=(Partition&& other) noexcept;
  ~Partition();

  const std::string& id() const { return info_.id(); }
  const v1::Partition& info() const { return info_; }
  absl::Status Delete(bool force = true);

 private:
  Partition(std::shared_ptr<Client> client, v1::Partition info)
      : Handle(std::move(client)), info_(std::move(info)) {}
  v1::Partition info_;
};

class HostChannel : public Handle {
 public:
  static absl::StatusOr<HostChannel> Offer(std::shared_ptr<Client> client,
                                           const std::string& partition_id,
                                           const v1::ServerChannelSettings& settings);
  HostChannel() = default;
  HostChannel(HostChannel&&) noexcept = default;
  HostChannel& operator=(HostChannel&& other) noexcept;
  ~HostChannel();

  // The channel, with its offer_sequence (so calls never hit a reused relid).
  const v1::ChannelRef& ref() const { return ref_; }
  v1::EndpointRef endpoint() const;
  absl::StatusOr<v1::Channel> Get() { return client_->GetChannel(ref_); }
  absl::StatusOr<v1::Channel> Start() { return client_->StartChannel(ref_); }
  absl::StatusOr<v1::Channel> Pause() { return client_->PauseChannel(ref_); }
  // Rescind + cleanup.
  absl::Status Rescind();

 private:
  HostChannel(std::shared_ptr<Client> client, v1::ChannelRef ref)
      : Handle(std::move(client)), ref_(std::move(ref)) {}
  v1::ChannelRef ref_;
};

class GuestChannel : public Handle {
 public:
  static absl::StatusOr<GuestChannel> Open(std::shared_ptr<Client> client,
                                           const v1::OpenChannelRequest& request,
                                           absl::Duration timeout = absl::ZeroDuration());
  GuestChannel() = default;
  GuestChannel(GuestChannel&&) noexcept = default;
  GuestChannel& operator=(GuestChannel&& other) noexcept;
  ~GuestChannel();

  const v1::ChannelRef& ref() const { return ref_; }
  v1::EndpointRef endpoint() const;
  absl::Status Close();

 private:
  GuestChannel(std::shared_ptr<Client> client, v1::ChannelRef ref)
      : Handle(std::move(client)), ref_(std::move(ref)) {}
  v1::ChannelRef ref_;
};

class GuestBuffer : public Handle {
 public:
  static absl::StatusOr<GuestBuffer> Allocate(std::shared_ptr<Client> client,
                                              const std::string& partition_id, uint64_t bytes);
  GuestBuffer() = default;
  GuestBuffer(GuestBuffer&&) noexcept = default;
  GuestBuffer& operator=(GuestBuffer&& other) noexcept;
  ~GuestBuffer();

  const v1::GuestBuffer& info() const { return info_; }
  uint64_t id() const { return info_.buffer_id(); }
  absl::Status Write(uint64_t offset, absl::string_view data);
  absl::StatusOr<std::string> Read(uint64_t offset, uint64_t length);
  absl::Status Free();

 private:
  GuestBuffer(std::shared_ptr<Client> client, v1::GuestBuffer info)
      : Handle(std::move(client)), info_(std::move(info)) {}
  v1::GuestBuffer info_;
};

class Gpadl : public Handle {
 public:
  // Over `length` bytes (0: to the end) of `buffer` from `offset`.
  static absl::StatusOr<Gpadl> Create(std::shared_ptr<Client> client, const v1::ChannelRef& ref,
                                      const GuestBuffer& buffer, uint64_t offset = 0,
                                      uint64_t length = 0, bool read_only = false);
  Gpadl() = default;
  Gpadl(Gpadl&&) noexcept = default;
  Gpadl& operator=(Gpadl&& other) noexcept;
  ~Gpadl();

  const v1::Gpadl& info() const { return info_; }
  uint32_t id() const { return info_.gpadl_id(); }
  absl::Status Teardown(bool wait = true);

 private:
  Gpadl(std::shared_ptr<Client> client, v1::Gpadl info)
      : Handle(std::move(client)), info_(std::move(info)) {}
  v1::Gpadl info_;
};

class GpadlLease : public Handle {
 public:
  static absl::StatusOr<GpadlLease> Map(std::shared_ptr<Client> client, const v1::ChannelRef& ref,
                                        uint32_t gpadl_id, bool read_only);
  GpadlLease() = default;
  GpadlLease(GpadlLease&&) noexcept = default;
  GpadlLease& operator=(GpadlLease&& other) noexcept;
  ~GpadlLease();

  const v1::GpadlLease& info() const { return info_; }
  uint64_t id() const { return info_.lease_id(); }
  absl::StatusOr<std::string> Read(uint64_t offset, uint64_t length) {
    return client_->ReadLease(id(), offset, length);
  }
  absl::Status Write(uint64_t offset, absl::string_view data) {
    return client_->WriteLease(id(), offset, data);
  }
  absl::Status Unmap();

 private:
  GpadlLease(std::shared_ptr<Client> client, v1::GpadlLease info)
      : Handle(std::move(client)), info_(std::move(info)) {}
  v1::GpadlLease info_;
};

}  // namespace kmcl::client

#endif  // KMCLD_CLIENTS_CPP_HANDLES_H_
