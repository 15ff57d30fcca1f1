#include "kmcl_core/memory/guest_memory.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "kmcl_core/base/status_macros.h"

namespace kmcl {
namespace {

constexpr uint64_t kPage = 4096;

absl::Status Errno(absl::string_view what) {
  return absl::ResourceExhaustedError(absl::StrCat(what, ": ", std::strerror(errno)));
}

}  // namespace

// ---- GuestView ----------------------------------------------------------------

namespace guest_memory_internal {

struct ViewCache {
  struct Key {
    std::vector<uint64_t> pfns;
    bool writable = false;
    friend bool operator==(const Key&, const Key&) = default;
    template <typename H>
    friend H AbslHashValue(H h, const Key& k) {
      return H::combine(std::move(h), k.pfns, k.writable);
    }
  };
  Mutex mu;
  absl::flat_hash_map<Key, std::weak_ptr<const GuestView::Mapping>> live ABSL_GUARDED_BY(mu);
};

}  // namespace guest_memory_internal

using guest_memory_internal::ViewCache;

struct GuestView::Mapping {
  Mapping(uint8_t* data, size_t size, std::shared_ptr<ViewCache> cache,
          ViewCache::Key key)
      : data(data), size(size), cache(std::move(cache)), key(std::move(key)) {}
  ~Mapping() {
    ::munmap(data, size);
    MutexLock lock(&cache->mu);
    // A MapPages that found this mapping expired may have put a new one
    // under the same key: only an expired entry is this one's.
    auto it = cache->live.find(key);
    if (it != cache->live.end() && it->second.expired()) cache->live.erase(it);
  }
  uint8_t* const data;
  const size_t size;
  const std::shared_ptr<ViewCache> cache;
  const ViewCache::Key key;
};

GuestView::GuestView(GuestView&& other) noexcept
    : mapping_(std::move(other.mapping_)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      writable_(other.writable_) {}

GuestView& GuestView::operator=(GuestView&& other) noexcept {
  if (this != &other) {
    mapping_ = std::move(other.mapping_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    writable_ = other.writable_;
  }
  return *this;
}

// ---- GuestMemory --------------------------------------------------------------

absl::StatusOr<std::unique_ptr<GuestMemory>> GuestMemory::Create(uint64_t size_bytes) {
  if (size_bytes == 0 || size_bytes % kPage != 0 || size_bytes > kMaxGuestMemoryBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "guest memory size ", size_bytes, " is not a non-zero multiple of 4096 up to ",
        kMaxGuestMemoryBytes));
  }
  int fd = ::memfd_create("kmcl-guest-memory", MFD_CLOEXEC);
  if (fd < 0) return Errno("memfd_create");
  if (::ftruncate(fd, static_cast<off_t>(size_bytes)) != 0) {
    absl::Status s = Errno("ftruncate guest memory");
    ::close(fd);
    return s;
  }
  void* base = ::mmap(nullptr, size_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
                      fd, 0);
  if (base == MAP_FAILED) {
    absl::Status s = Errno("mmap guest memory");
    ::close(fd);
    return s;
  }
  return std::unique_ptr<GuestMemory>(
      new GuestMemory(fd, static_cast<uint8_t*>(base), size_bytes));
}

GuestMemory::GuestMemory(int fd, uint8_t* base, uint64_t size)
    : fd_(fd), base_(base), size_(size), views_(std::make_shared<ViewCache>()) {
  MutexLock lock(&mu_);
  free_extents_[0] = page_count();
  free_pages_ = page_count();
  allocated_bits_.assign((page_count() + 63) / 64, 0);
}

GuestMemory::~GuestMemory() {
  ::munmap(base_, size_);
  ::close(fd_);
}

absl::Status GuestMemory::Read(uint64_t gpa, std::span<uint8_t> out) const {
  if (gpa > size_ || out.size() > size_ - gpa) {
    return absl::OutOfRangeError(absl::StrCat("guest read of ", out.size(), " bytes at GPA 0x",
                                              absl::Hex(gpa), " is outside guest memory (",
                                              size_, " bytes)"));
  }
  if (!out.empty()) std::memcpy(out.data(), base_ + gpa, out.size());
  return absl::OkStatus();
}

absl::Status GuestMemory::Write(uint64_t gpa, std::span<const uint8_t> data) const {
  if (gpa > size_ || data.size() > size_ - gpa) {
    return absl::OutOfRangeError(absl::StrCat("guest write of ", data.size(), " bytes at GPA 0x",
                                              absl::Hex(gpa), " is outside guest memory (",
                                              size_, " bytes)"));
  }
  if (!data.empty()) std::memcpy(base_ + gpa, data.data(), data.size());
  return absl::OkStatus();
}

absl::Status GuestMemory::WritePages(std::span<const uint64_t> pfns,
                                     std::span<const uint8_t* const> pages) const {
  if (pfns.size() != pages.size()) {
    return absl::InvalidArgumentError(absl::StrCat(pfns.size(), " PFNs for ", pages.size(), " pages"));
  }
  RETURN_IF_ERROR(CheckPages(pfns));
  std::vector<iovec> iov;
  size_t i = 0;
  while (i < pfns.size()) {
    // One run of consecutive PFNs, at most IOV_MAX pages.
    size_t n = 1;
    while (i + n < pfns.size() && n < IOV_MAX && pfns[i + n] == pfns[i] + n) ++n;
    iov.clear();
    for (size_t k = 0; k < n; ++k) iov.push_back({const_cast<uint8_t*>(pages[i + k]), kPage});
    off_t offset = static_cast<off_t>(pfns[i] * kPage);
    size_t first = 0;
    while (first < iov.size()) {
      const ssize_t wrote = ::pwritev(fd_, iov.data() + first, static_cast<int>(iov.size() - first), offset);
      if (wrote < 0 && errno == EINTR) continue;
      if (wrote < 0) return Errno(absl::StrCat("write guest page 0x", absl::Hex(pfns[i + first])));
      if (wrote == 0) {  // no progress and no errno to report
        return absl::ResourceExhaustedError(
            absl::StrCat("write guest page 0x", absl::Hex(pfns[i + first]), ": no bytes written"));
      }
      // A short write ends inside some page: go on from there.
      size_t left = static_cast<size_t>(wrote);
      offset += wrote;
      while (left > 0 && left >= iov[first].iov_len) left -= iov[first++].iov_len;
      if (left > 0) {
        iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + left;
        iov[first].iov_len -= left;
      }
    }
    i += n;
  }
  return absl::OkStatus();
}

absl::Status GuestMemory::CheckPages(std::span<const uint64_t> pfns) const {
  for (uint64_t pfn : pfns) {
    if (pfn >= page_count()) {
      return absl::OutOfRangeError(absl::StrCat("PFN 0x", absl::Hex(pfn),
                                                " is outside guest memory (", page_count(),
                                                " pages)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<GuestView> GuestMemory::MapPages(std::span<const uint64_t> pfns,
                                                bool writable) const {
  if (pfns.empty()) return absl::InvalidArgumentError("no pages to map");
  RETURN_IF_ERROR(CheckPages(pfns));
  size_t runs = 1;
  for (size_t i = 1; i < pfns.size(); ++i) runs += pfns[i] != pfns[i - 1] + 1;
  if (runs > kMaxViewRuns) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "page list has ", runs, " discontiguous runs; at most ", kMaxViewRuns, " can be mapped"));
  }
  const size_t bytes = pfns.size() * kPage;
  ViewCache::Key key{std::vector<uint64_t>(pfns.begin(), pfns.end()), writable};
  MutexLock lock(&views_->mu);
  if (auto it = views_->live.find(key); it != views_->live.end()) {
    if (std::shared_ptr<const GuestView::Mapping> m = it->second.lock()) {
      uint8_t* data = m->data;
      return GuestView(std::move(m), data, bytes, writable);
    }
  }
  void* reserve = ::mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                         -1, 0);
  if (reserve == MAP_FAILED) return Errno("reserve guest view");
  auto* base = static_cast<uint8_t*>(reserve);
  const int prot = writable ? PROT_READ | PROT_WRITE : PROT_READ;
  size_t i = 0;
  while (i < pfns.size()) {
    size_t run = 1;
    while (i + run < pfns.size() && pfns[i + run] == pfns[i] + run) ++run;
    void* at = ::mmap(base + i * kPage, run * kPage, prot, MAP_SHARED | MAP_FIXED, fd_,
                      static_cast<off_t>(pfns[i] * kPage));
    if (at == MAP_FAILED) {
      absl::Status s = Errno("map guest pages");
      ::munmap(base, bytes);
      return s;
    }
    i += run;
  }
  auto mapping = std::make_shared<const GuestView::Mapping>(base, bytes, views_, key);
  views_->live[std::move(key)] = mapping;
  return GuestView(mapping, base, bytes, writable);
}

absl::StatusOr<GuestView> GuestMemory::MapPages(std::span<const uint64_t> pfns,
                                                std::span<const uint32_t> order,
                                                bool writable) const {
  std::vector<uint64_t> ordered;
  ordered.reserve(order.size());
  for (uint32_t index : order) {
    if (index >= pfns.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("page index ", index, " is past the ", pfns.size(), " pages to map"));
    }
    ordered.push_back(pfns[index]);
  }
  return MapPages(ordered, writable);
}

bool GuestMemory::IsAllocatedLocked(uint64_t pfn) const {
  return (allocated_bits_[pfn / 64] >> (pfn % 64)) & 1;
}

void GuestMemory::SetAllocatedLocked(uint64_t pfn, bool allocated) {
  uint64_t bit = uint64_t{1} << (pfn % 64);
  if (allocated) {
    allocated_bits_[pfn / 64] |= bit;
  } else {
    allocated_bits_[pfn / 64] &= ~bit;
  }
}

uint64_t GuestMemory::resident_bytes() const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_blocks) * 512;  // st_blocks: 512-byte units
}

bool GuestMemory::IsAllocated(uint64_t pfn) const {
  MutexLock lock(&mu_);
  return pfn < page_count() && IsAllocatedLocked(pfn);
}

std::vector<uint64_t> GuestMemory::AllocatedPages() const {
  MutexLock lock(&mu_);
  std::vector<uint64_t> out;
  for (size_t w = 0; w < allocated_bits_.size(); ++w) {
    for (uint64_t bits = allocated_bits_[w]; bits != 0; bits &= bits - 1) {
      out.push_back(w * 64 + __builtin_ctzll(bits));
    }
  }
  return out;
}

uint64_t GuestMemory::free_page_count() const {
  MutexLock lock(&mu_);
  return free_pages_;
}

absl::StatusOr<std::vector<uint64_t>> GuestMemory::AllocatePages(uint64_t count) {
  if (count == 0) return absl::InvalidArgumentError("cannot allocate zero pages");
  std::vector<uint64_t> pfns;
  {
    MutexLock lock(&mu_);
    if (count > free_pages_) {
      return absl::ResourceExhaustedError(absl::StrCat("guest memory full: ", count,
                                                       " pages wanted, ", free_pages_, " free"));
    }
    pfns.reserve(count);
    // First fit in one extent if any is large enough, else gather extents.
    auto it = free_extents_.begin();
    for (auto e = free_extents_.begin(); e != free_extents_.end(); ++e) {
      if (e->second >= count) {
        it = e;
        break;
      }
    }
    while (pfns.size() < count) {
      auto [start, len] = *it;
      uint64_t take = std::min(len, count - pfns.size());
      for (uint64_t p = start; p < start + take; ++p) {
        pfns.push_back(p);
        SetAllocatedLocked(p, true);
      }
      it = free_extents_.erase(it);
      if (take < len) it = free_extents_.emplace(start + take, len - take).first;
      if (it == free_extents_.end()) it = free_extents_.begin();
    }
    free_pages_ -= count;
  }
  // Fresh pages read as zero, as on a new VM: drop any old contents.
  for (size_t i = 0; i < pfns.size();) {
    size_t run = 1;
    while (i + run < pfns.size() && pfns[i + run] == pfns[i] + run) ++run;
    ::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                static_cast<off_t>(pfns[i] * kPage), static_cast<off_t>(run * kPage));
    i += run;
  }
  return pfns;
}

void GuestMemory::RemoveFromFreeLocked(uint64_t pfn) {
  auto it = free_extents_.upper_bound(pfn);
  --it;  // the extent containing pfn (caller checked it is free)
  auto [start, len] = *it;
  free_extents_.erase(it);
  if (pfn > start) free_extents_.emplace(start, pfn - start);
  if (pfn + 1 < start + len) free_extents_.emplace(pfn + 1, start + len - pfn - 1);
}

void GuestMemory::AddToFreeLocked(uint64_t pfn) {
  uint64_t start = pfn;
  uint64_t len = 1;
  auto next = free_extents_.find(pfn + 1);
  if (next != free_extents_.end()) {
    len += next->second;
    free_extents_.erase(next);
  }
  auto prev = free_extents_.lower_bound(pfn);
  if (prev != free_extents_.begin()) {
    --prev;
    if (prev->first + prev->second == pfn) {
      start = prev->first;
      len += prev->second;
      free_extents_.erase(prev);
    }
  }
  free_extents_.emplace(start, len);
}

absl::Status GuestMemory::FreePages(std::span<const uint64_t> pfns) {
  RETURN_IF_ERROR(CheckPages(pfns));
  MutexLock lock(&mu_);
  for (size_t i = 0; i < pfns.size(); ++i) {
    if (!IsAllocatedLocked(pfns[i])) {
      // Not allocated, or listed twice: undo this call so nothing is half freed.
      for (size_t j = 0; j < i; ++j) {
        SetAllocatedLocked(pfns[j], true);
        RemoveFromFreeLocked(pfns[j]);
      }
      free_pages_ -= i;
      return absl::FailedPreconditionError(absl::StrCat(
          "PFN 0x", absl::Hex(pfns[i]), " is not allocated (or is listed twice)"));
    }
    SetAllocatedLocked(pfns[i], false);
    AddToFreeLocked(pfns[i]);
    ++free_pages_;
  }
  return absl::OkStatus();
}

absl::Status GuestMemory::ClaimPages(std::span<const uint64_t> pfns) {
  RETURN_IF_ERROR(CheckPages(pfns));
  MutexLock lock(&mu_);
  for (size_t i = 0; i < pfns.size(); ++i) {
    if (IsAllocatedLocked(pfns[i])) {
      for (size_t j = 0; j < i; ++j) {
        SetAllocatedLocked(pfns[j], false);
        AddToFreeLocked(pfns[j]);
      }
      free_pages_ += i;
      return absl::FailedPreconditionError(
          absl::StrCat("PFN 0x", absl::Hex(pfns[i]), " is already allocated"));
    }
    SetAllocatedLocked(pfns[i], true);
    RemoveFromFreeLocked(pfns[i]);
    --free_pages_;
  }
  return absl::OkStatus();
}

}  // namespace kmcl
