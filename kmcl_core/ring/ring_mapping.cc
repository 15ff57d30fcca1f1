#include "kmcl_core/ring/ring_mapping.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl {
namespace {

constexpr size_t kPage = wire::kPageSize;

absl::Status Errno(absl::string_view what) {
  return absl::ResourceExhaustedError(absl::StrCat(what, ": ", std::strerror(errno)));
}

}  // namespace

absl::StatusOr<DoubleMappedRing> DoubleMappedRing::Create(uint32_t data_pages) {
  if (data_pages == 0 || data_pages >= (uint32_t{1} << 31) / kPage) {
    return absl::InvalidArgumentError(
        absl::StrCat("a ring of ", data_pages, " data pages (1 to 524287)"));
  }
  const size_t data_bytes = size_t{data_pages} * kPage;
  const size_t file_bytes = kPage + data_bytes;
  int fd = ::memfd_create("kmcl-ring", MFD_CLOEXEC);
  if (fd < 0) return Errno("memfd_create ring");
  if (::ftruncate(fd, static_cast<off_t>(file_bytes)) != 0) {
    absl::Status s = Errno("ftruncate ring");
    ::close(fd);
    return s;
  }
  // Reserve the whole range first so the two mappings land back to back.
  const size_t reservation_bytes = kPage + file_bytes + data_bytes + kPage;
  void* reserve = ::mmap(nullptr, reservation_bytes, PROT_NONE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (reserve == MAP_FAILED) {
    absl::Status s = Errno("reserve ring mapping");
    ::close(fd);
    return s;
  }
  auto* base = static_cast<uint8_t*>(reserve);
  uint8_t* control = base + kPage;
  uint8_t* data = control + kPage;
  // [control][data] from file offset 0, then [data] again from offset 4096.
  if (::mmap(control, file_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) ==
          MAP_FAILED ||
      ::mmap(data + data_bytes, data_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
             static_cast<off_t>(kPage)) == MAP_FAILED) {
    absl::Status s = Errno("map ring pages");
    ::munmap(base, reservation_bytes);
    ::close(fd);
    return s;
  }
  absl::StatusOr<RingMemory> memory = RingMemory::Create(control, data, data_bytes);
  if (!memory.ok()) {
    ::munmap(base, reservation_bytes);
    ::close(fd);
    return memory.status();
  }
  return DoubleMappedRing(fd, base, reservation_bytes, *memory);
}

DoubleMappedRing::DoubleMappedRing(DoubleMappedRing&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      reservation_(std::exchange(other.reservation_, nullptr)),
      reservation_bytes_(std::exchange(other.reservation_bytes_, 0)),
      memory_(std::exchange(other.memory_, RingMemory())) {}

DoubleMappedRing& DoubleMappedRing::operator=(DoubleMappedRing&& other) noexcept {
  if (this != &other) {
    Release();
    fd_ = std::exchange(other.fd_, -1);
    reservation_ = std::exchange(other.reservation_, nullptr);
    reservation_bytes_ = std::exchange(other.reservation_bytes_, 0);
    memory_ = std::exchange(other.memory_, RingMemory());
  }
  return *this;
}

DoubleMappedRing::~DoubleMappedRing() { Release(); }

void DoubleMappedRing::Release() {
  if (reservation_ != nullptr) ::munmap(reservation_, reservation_bytes_);
  if (fd_ >= 0) ::close(fd_);
  reservation_ = nullptr;
  fd_ = -1;
}

std::span<uint8_t> DoubleMappedRing::ring_bytes() const {
  if (reservation_ == nullptr) return {};
  return {reservation_ + kPage, kPage + memory_.data_size()};
}

}  // namespace kmcl
