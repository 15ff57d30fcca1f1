#include "kmcl_core/memory/guest_memory.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <numeric>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kmcl {
namespace {

using ::testing::HasSubstr;

// Whether `p` lies in one of the process's mappings (/proc/self/maps).
bool IsMapped(const void* p) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  const auto at = reinterpret_cast<uintptr_t>(p);
  while (std::getline(maps, line)) {
    uintptr_t start = 0, end = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &start, &end) == 2 && at >= start && at < end) {
      return true;
    }
  }
  return false;
}

TEST(GuestMemory, FourGibibytesAreCheapUntilTouched) {
  auto mem = GuestMemory::Create(kDefaultGuestMemoryBytes);
  ASSERT_TRUE(mem.ok()) << mem.status();
  EXPECT_EQ((*mem)->page_count(), 1u << 20);
  // Touch the last page only.
  std::vector<uint8_t> data = {1, 2, 3};
  ASSERT_TRUE((*mem)->Write(kDefaultGuestMemoryBytes - 3, data).ok());
  std::vector<uint8_t> back(3);
  ASSERT_TRUE((*mem)->Read(kDefaultGuestMemoryBytes - 3, std::span(back)).ok());
  EXPECT_EQ(back, data);
}

TEST(GuestMemory, RejectsBadSizes) {
  EXPECT_FALSE(GuestMemory::Create(0).ok());
  EXPECT_FALSE(GuestMemory::Create(4095).ok());
  EXPECT_FALSE(GuestMemory::Create(kMaxGuestMemoryBytes + 4096).ok());
}

TEST(GuestMemory, AccessOutsideMemoryIsOutOfRange) {
  auto mem = *GuestMemory::Create(16 * 4096);
  std::vector<uint8_t> buf(8);
  EXPECT_EQ(mem->Read(16 * 4096 - 4, std::span(buf)).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(mem->Write(UINT64_MAX - 2, buf).code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(mem->Read(16 * 4096 - 8, std::span(buf)).ok());
  std::vector<uint64_t> pfns = {3, 16};
  absl::Status s = mem->CheckPages(pfns);
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(s.message()), HasSubstr("0x10"));
}

TEST(GuestMemory, MapPagesIsAZeroCopyContiguousViewOfScatteredPages) {
  auto mem = *GuestMemory::Create(64 * 4096);
  for (uint64_t pfn : {5u, 9u, 10u, 2u}) {
    std::vector<uint8_t> page(4096, static_cast<uint8_t>(pfn));
    ASSERT_TRUE(mem->Write(pfn * 4096, page).ok());
  }
  std::vector<uint64_t> pfns = {5, 9, 10, 2};
  auto view = mem->MapPages(pfns, /*writable=*/true);
  ASSERT_TRUE(view.ok()) << view.status();
  ASSERT_EQ(view->size(), 4u * 4096);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(view->data()[i * 4096 + 100], pfns[i]);
  // Writes through the view land in guest memory, and vice versa.
  view->data()[4096 + 7] = 0xAB;
  std::vector<uint8_t> b(1);
  ASSERT_TRUE(mem->Read(9 * 4096 + 7, std::span(b)).ok());
  EXPECT_EQ(b[0], 0xAB);
  std::vector<uint8_t> c = {0xCD};
  ASSERT_TRUE(mem->Write(2 * 4096, c).ok());
  EXPECT_EQ(view->data()[3 * 4096], 0xCD);
}

TEST(GuestMemory, MapPagesInAnOrderMayRepeatPages) {
  auto mem = *GuestMemory::Create(64 * 4096);
  std::vector<uint64_t> pfns = {7, 8, 3};
  for (uint64_t pfn : pfns) {
    std::vector<uint8_t> page(4096, static_cast<uint8_t>(pfn));
    ASSERT_TRUE(mem->Write(pfn * 4096, page).ok());
  }
  // A ring's layout: page 0 once, pages 1 and 2 twice.
  std::vector<uint32_t> order = {0, 1, 2, 1, 2};
  auto view = mem->MapPages(pfns, order, /*writable=*/true);
  ASSERT_TRUE(view.ok()) << view.status();
  ASSERT_EQ(view->size(), 5u * 4096);
  for (size_t i = 0; i < order.size(); ++i) {
    EXPECT_EQ(view->data()[i * 4096 + 9], pfns[order[i]]) << i;
  }
  // Both appearances of a page are the same memory.
  view->data()[4096 + 5] = 0xEE;
  EXPECT_EQ(view->data()[3 * 4096 + 5], 0xEE);
  view->data()[4 * 4096 + 4095] = 0x77;
  EXPECT_EQ(view->data()[2 * 4096 + 4095], 0x77);
  std::vector<uint32_t> bad = {0, 3};
  EXPECT_EQ(mem->MapPages(pfns, bad, true).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GuestMemory, EqualViewsShareOneMappingUntilTheLastGoes) {
  auto mem = *GuestMemory::Create(64 * 4096);
  std::vector<uint64_t> pfns = {7, 8, 3};
  std::vector<uint32_t> order = {0, 1, 2, 1, 2};
  auto first = mem->MapPages(pfns, order, /*writable=*/true);
  auto second = mem->MapPages(pfns, order, /*writable=*/true);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(first->data(), second->data());  // one mapping, not two
  // Another access, order or page list is another mapping.
  auto read_only = mem->MapPages(pfns, order, /*writable=*/false);
  auto in_order = mem->MapPages(pfns, /*writable=*/true);
  ASSERT_TRUE(read_only.ok() && in_order.ok());
  EXPECT_NE(read_only->data(), first->data());
  EXPECT_NE(in_order->data(), first->data());
  EXPECT_FALSE(read_only->writable());

  uint8_t* shared = first->data();
  first = GuestView();  // the second view keeps the range mapped
  ASSERT_TRUE(IsMapped(shared));
  second->data()[4096] = 0x42;
  std::vector<uint8_t> byte(1);
  ASSERT_TRUE(mem->Read(8 * 4096, byte).ok());
  EXPECT_EQ(byte[0], 0x42);
  // A moved view carries its share.
  GuestView moved = *std::move(second);
  EXPECT_EQ(moved.data(), shared);
  EXPECT_EQ(second->data(), nullptr);
  moved = GuestView();
  EXPECT_FALSE(IsMapped(shared));  // unmapped with its last view
  // Mapping the list again makes a fresh mapping that works.
  auto again = mem->MapPages(pfns, order, /*writable=*/true);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->data()[4096], 0x42);
}

TEST(GuestMemory, AViewMayOutliveItsMemory) {
  auto mem = *GuestMemory::Create(8 * 4096);
  std::vector<uint64_t> pfns = {1, 2};
  auto view = mem->MapPages(pfns, /*writable=*/true);
  ASSERT_TRUE(view.ok());
  mem.reset();
  view->data()[4096] = 1;  // the pages stay mapped until the view goes
  EXPECT_EQ(view->data()[4096], 1);
}

TEST(GuestMemory, ReadOnlyViewFaultsOnWrite) {
  auto mem = *GuestMemory::Create(8 * 4096);
  std::vector<uint64_t> pfns = {1};
  auto view = mem->MapPages(pfns, /*writable=*/false);
  ASSERT_TRUE(view.ok());
  EXPECT_FALSE(view->writable());
  EXPECT_EQ(view->data()[0], 0);  // readable
  volatile uint8_t* p = view->data();
  EXPECT_DEATH({ p[0] = 1; }, "");
}

TEST(GuestMemory, MapRejectsPagesOutsideMemory) {
  auto mem = *GuestMemory::Create(8 * 4096);
  std::vector<uint64_t> pfns = {1, 8};
  EXPECT_EQ(mem->MapPages(pfns, true).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(mem->MapPages({}, true).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GuestMemory, AllocatorHandsOutDistinctZeroedPagesAndReclaimsThem) {
  auto mem = *GuestMemory::Create(32 * 4096);
  auto a = mem->AllocatePages(10);
  ASSERT_TRUE(a.ok());
  std::vector<uint64_t> expect(10);
  std::iota(expect.begin(), expect.end(), 0);
  EXPECT_EQ(*a, expect) << "contiguous when possible";
  std::vector<uint8_t> junk(4096, 0xEE);
  ASSERT_TRUE(mem->Write(3 * 4096, junk).ok());
  auto b = mem->AllocatePages(22);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(mem->free_page_count(), 0u);
  EXPECT_EQ(mem->AllocatePages(1).status().code(), absl::StatusCode::kResourceExhausted);
  std::set<uint64_t> all(a->begin(), a->end());
  all.insert(b->begin(), b->end());
  EXPECT_EQ(all.size(), 32u);

  // Free every other page of a, then a 5-page allocation gathers fragments.
  std::vector<uint64_t> odd = {1, 3, 5, 7, 9};
  ASSERT_TRUE(mem->FreePages(odd).ok());
  EXPECT_EQ(mem->free_page_count(), 5u);
  auto c = mem->AllocatePages(5);
  ASSERT_TRUE(c.ok());
  std::sort(c->begin(), c->end());
  EXPECT_EQ(*c, odd);
  std::vector<uint8_t> page(4096);
  ASSERT_TRUE(mem->Read(3 * 4096, std::span(page)).ok());
  EXPECT_EQ(std::count(page.begin(), page.end(), 0), 4096) << "re-allocated pages are zeroed";
}

TEST(GuestMemory, DoubleFreeAndDuplicatesFreeNothing) {
  auto mem = *GuestMemory::Create(16 * 4096);
  auto a = *mem->AllocatePages(4);
  std::vector<uint64_t> dup = {a[0], a[1], a[0]};
  EXPECT_EQ(mem->FreePages(dup).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(mem->free_page_count(), 12u) << "nothing freed";
  EXPECT_TRUE(mem->IsAllocated(a[0]));
  EXPECT_TRUE(mem->IsAllocated(a[1]));
  ASSERT_TRUE(mem->FreePages(a).ok());
  EXPECT_EQ(mem->FreePages(a).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(mem->free_page_count(), 16u);
  // Coalesced back into one extent: one contiguous 16-page allocation.
  auto all = mem->AllocatePages(16);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ((*all)[15], 15u);
}

TEST(GuestMemory, ClaimPagesMarksASavedLayoutAllocated) {
  auto mem = *GuestMemory::Create(16 * 4096);
  std::vector<uint64_t> claim = {7, 2, 11};
  ASSERT_TRUE(mem->ClaimPages(claim).ok());
  EXPECT_EQ(mem->free_page_count(), 13u);
  std::vector<uint64_t> again = {3, 7};
  EXPECT_EQ(mem->ClaimPages(again).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(mem->IsAllocated(3)) << "a failed claim is rolled back";
  auto rest = *mem->AllocatePages(13);
  for (uint64_t p : rest) EXPECT_TRUE(p != 7 && p != 2 && p != 11);
}

// Restore writes pages through the memory file in runs; what lands must be
// what a mapping of the same pages shows.
TEST(GuestMemory, WritePagesLandsEveryPageInRunsOfAnyLength) {
  constexpr uint64_t kPages = 3000;  // a run longer than IOV_MAX (1,024)
  auto mem = *GuestMemory::Create((kPages + 16) * 4096);
  std::vector<uint64_t> pfns;
  for (uint64_t pfn = 5; pfn < 5 + 2500; ++pfn) pfns.push_back(pfn);  // one long run
  pfns.push_back(2600);                                                // alone
  pfns.push_back(2);                                                   // backwards
  pfns.push_back(3);
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<const uint8_t*> pages;
  for (uint64_t pfn : pfns) {
    bytes.emplace_back(4096);
    for (size_t i = 0; i < 4096; ++i) bytes.back()[i] = static_cast<uint8_t>(pfn * 7 + i);
  }
  for (const auto& b : bytes) pages.push_back(b.data());
  ASSERT_TRUE(mem->WritePages(pfns, pages).ok());
  std::vector<uint8_t> got(4096);
  for (size_t k = 0; k < pfns.size(); ++k) {
    ASSERT_TRUE(mem->Read(pfns[k] * 4096, std::span(got)).ok());
    ASSERT_EQ(got, bytes[k]) << "page " << pfns[k];
  }
  ASSERT_TRUE(mem->Read(4 * 4096, std::span(got)).ok());  // untouched
  EXPECT_EQ(got, std::vector<uint8_t>(4096, 0));
}

TEST(GuestMemory, WritePagesOutsideMemoryWritesNothing) {
  auto mem = *GuestMemory::Create(16 * 4096);
  std::vector<uint8_t> page(4096, 0xEE);
  std::vector<uint64_t> pfns = {1, 16};
  std::vector<const uint8_t*> pages = {page.data(), page.data()};
  absl::Status s = mem->WritePages(pfns, pages);
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(s.message()), HasSubstr("0x10"));
  std::vector<uint8_t> got(4096);
  ASSERT_TRUE(mem->Read(4096, std::span(got)).ok());
  EXPECT_EQ(got, std::vector<uint8_t>(4096, 0));
  pages.pop_back();
  EXPECT_EQ(mem->WritePages(pfns, pages).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kmcl
