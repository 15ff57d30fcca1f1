#include "kmcl_core/memory/gpadl_table.h"

#include <cstring>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl {
namespace {

using ::testing::HasSubstr;

class GpadlTableTest : public ::testing::Test {
 protected:
  void SetUp() override { memory_ = *GuestMemory::Create(256 * 4096); }

  // A buffer of `pages` fresh pages with recognisable contents.
  std::vector<GpaRange> Buffer(uint32_t pages, uint32_t offset = 0, uint32_t count = 0) {
    auto pfns = *memory_->AllocatePages(pages);
    for (uint32_t i = 0; i < pages; ++i) {
      std::vector<uint8_t> page(4096, static_cast<uint8_t>(0x10 + i));
      EXPECT_TRUE(memory_->Write(pfns[i] * 4096, page).ok());
    }
    return {{count ? count : pages * 4096 - offset, offset, pfns}};
  }

  std::unique_ptr<GuestMemory> memory_;
};

TEST_F(GpadlTableTest, MapGivesAZeroCopyViewOfTheGuestBuffer) {
  GpadlTable table(*memory_);
  auto ranges = Buffer(3, 100, 3 * 4096 - 200);
  ASSERT_TRUE(table.Create(1, 5, ranges, false).ok());
  auto lease = table.Map(1, false);
  ASSERT_TRUE(lease.ok()) << lease.status();
  EXPECT_EQ(lease->byte_count, 3u * 4096 - 200);
  ASSERT_EQ(lease->bytes().size(), 3u * 4096 - 200);
  EXPECT_EQ(lease->bytes()[0], 0x10);
  EXPECT_EQ(lease->bytes()[4096 - 100], 0x11);
  lease->bytes()[5] = 0x99;  // visible in guest memory: same pages
  std::vector<uint8_t> b(1);
  ASSERT_TRUE(memory_->Read(ranges[0].pfns[0] * 4096 + 105, std::span(b)).ok());
  EXPECT_EQ(b[0], 0x99);
  auto info = table.Get(1);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->lease_id, lease->lease_id);
  EXPECT_EQ(info->channel_id, 5u);
}

TEST_F(GpadlTableTest, ALayoutReordersTheViewAndLeaseCopiesStillUseGpadlOffsets) {
  GpadlTable table(*memory_);
  // Two ranges: 2 pages from offset 16, then 2 whole pages.
  auto first = Buffer(2, 16, 2 * 4096 - 16);
  auto second = Buffer(2);
  for (uint32_t i = 0; i < 2; ++i) {
    std::vector<uint8_t> page(4096, static_cast<uint8_t>(0x20 + i));
    ASSERT_TRUE(memory_->Write(second[0].pfns[i] * 4096, page).ok());
  }
  ASSERT_TRUE(table.Create(1, 5, {first[0], second[0]}, false).ok());
  uint64_t seen_pages = 0;
  // Pages 0..3 of the GPADL in the order 3, 0, 1, 0, 2.
  auto lease = table.Map(1, false, [&](uint64_t pages) -> absl::StatusOr<std::vector<uint32_t>> {
    seen_pages = pages;
    return std::vector<uint32_t>{3, 0, 1, 0, 2};
  });
  ASSERT_TRUE(lease.ok()) << lease.status();
  EXPECT_EQ(seen_pages, 4u);
  ASSERT_EQ(lease->pages.size(), 5u * 4096);
  EXPECT_EQ(lease->pages[0], 0x21);
  EXPECT_EQ(lease->pages[4096], 0x10);
  EXPECT_EQ(lease->pages[2 * 4096], 0x11);
  EXPECT_EQ(lease->pages[4 * 4096], 0x20);
  // Segments follow each page's first appearance: GPADL bytes [0, 8176) are
  // view [4096 + 16, 3 * 4096), the second range's pages view 4 then 0.
  std::vector<uint8_t> out(3 * 4096);
  ASSERT_TRUE(table.ReadLease(lease->lease_id, 2 * 4096 - 16 - 2, std::span(out).first(6)).ok());
  EXPECT_EQ(std::vector<uint8_t>(out.begin(), out.begin() + 6),
            (std::vector<uint8_t>{0x11, 0x11, 0x20, 0x20, 0x20, 0x20}));
  ASSERT_TRUE(table.ReadLease(lease->lease_id, 2 * 4096 - 16 + 4096 - 1, std::span(out).first(2)).ok());
  EXPECT_EQ(out[0], 0x20);
  EXPECT_EQ(out[1], 0x21);
  std::vector<uint8_t> mark = {0xAA};
  ASSERT_TRUE(table.WriteLease(lease->lease_id, 0, mark).ok());
  EXPECT_EQ(lease->pages[4096 + 16], 0xAA);
  EXPECT_EQ(lease->pages[3 * 4096 + 16], 0xAA) << "the repeated page is the same memory";
  EXPECT_TRUE(lease->bytes().empty()) << "several segments: no single span";
  ASSERT_TRUE(table.Unmap(lease->lease_id).ok());
}

TEST_F(GpadlTableTest, ABadLayoutFailsTheMapAndLeavesTheGpadlMappable) {
  GpadlTable table(*memory_);
  ASSERT_TRUE(table.Create(1, 5, Buffer(3), false).ok());
  using Order = absl::StatusOr<std::vector<uint32_t>>;
  EXPECT_EQ(table.Map(1, false, [](uint64_t) -> Order { return std::vector<uint32_t>{0, 1}; })
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument)
      << "page 2 left out";
  EXPECT_EQ(table.Map(1, false, [](uint64_t) -> Order { return std::vector<uint32_t>{0, 1, 2, 3}; })
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument)
      << "page 3 does not exist";
  EXPECT_EQ(table.Map(1, false, [](uint64_t) -> Order { return absl::InvalidArgumentError("no"); })
                .status(),
            absl::InvalidArgumentError("no"));
  EXPECT_EQ(table.Get(1)->lease_id, 0u);
  EXPECT_TRUE(table.Map(1, false).ok());
}

TEST_F(GpadlTableTest, OneLeaseAtATime) {
  GpadlTable table(*memory_);
  ASSERT_TRUE(table.Create(1, 1, Buffer(1), false).ok());
  auto lease = table.Map(1, true);
  ASSERT_TRUE(lease.ok());
  auto second = table.Map(1, true);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("already mapped"));
  ASSERT_TRUE(table.Unmap(lease->lease_id).ok());
  EXPECT_TRUE(table.Map(1, true).ok()) << "mappable again after unmap";
}

TEST_F(GpadlTableTest, ReadOnlyIsHonouredAndEnforced) {
  GpadlTable table(*memory_);
  ASSERT_TRUE(table.Create(1, 1, Buffer(1), /*read_only=*/true).ok());
  EXPECT_EQ(table.Map(1, false).status().code(), absl::StatusCode::kFailedPrecondition);
  auto lease = table.Map(1, true);
  ASSERT_TRUE(lease.ok());
  std::vector<uint8_t> data = {1, 2, 3};
  EXPECT_EQ(table.WriteLease(lease->lease_id, 0, data).code(),
            absl::StatusCode::kPermissionDenied);
  volatile uint8_t* p = lease->bytes().data();
  EXPECT_EQ(p[0], 0x10);
  EXPECT_DEATH({ p[0] = 1; }, "") << "the view is mapped without write permission";
}

TEST_F(GpadlTableTest, TeardownWhileMappedWaitsForTheLease) {
  GpadlTable table(*memory_);
  ASSERT_TRUE(table.Create(1, 1, Buffer(1), false).ok());
  auto lease = *table.Map(1, false);
  auto t = table.Teardown(1);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t, TeardownResult::kPending);
  EXPECT_EQ(table.Get(1)->state, GpadlState::kTearingDown);
  EXPECT_EQ(table.Teardown(1).status().code(), absl::StatusCode::kFailedPrecondition);
  std::vector<uint8_t> out(4);
  EXPECT_TRUE(table.ReadLease(lease.lease_id, 0, std::span(out)).ok())
      << "the lease stays usable until unmapped";
  auto u = table.Unmap(lease.lease_id);
  ASSERT_TRUE(u.ok());
  EXPECT_TRUE(u->completed_teardown);
  EXPECT_FALSE(table.Get(1).has_value());
  EXPECT_EQ(table.Map(1, false).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(GpadlTableTest, NewMapsFailWhileTeardownIsPending) {
  GpadlTable table(*memory_);
  ASSERT_TRUE(table.Create(1, 1, Buffer(1), false).ok());
  auto lease = *table.Map(1, false);
  ASSERT_EQ(*table.Teardown(1), TeardownResult::kPending);
  auto again = table.Map(1, false);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(again.status().message()), HasSubstr("torn down"));
}

TEST_F(GpadlTableTest, TeardownOfAnUnmappedGpadlIsImmediate) {
  GpadlTable table(*memory_);
  ASSERT_TRUE(table.Create(1, 1, Buffer(1), false).ok());
  EXPECT_EQ(*table.Teardown(1), TeardownResult::kTornDown);
  EXPECT_EQ(table.Teardown(1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(table.Create(1, 1, Buffer(1), false).ok()) << "the id is free again";
}

TEST_F(GpadlTableTest, ClearErrorsForBadIdsLeasesAndRanges) {
  GpadlTable table(*memory_);
  EXPECT_EQ(table.Map(42, true).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(table.Unmap(42).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(table.Create(1, 1, Buffer(1), false).ok());
  EXPECT_EQ(table.Create(1, 2, Buffer(1), false).code(), absl::StatusCode::kAlreadyExists);
  auto lease = *table.Map(1, false);
  ASSERT_TRUE(table.Unmap(lease.lease_id).ok());
  EXPECT_EQ(table.Unmap(lease.lease_id).status().code(), absl::StatusCode::kNotFound)
      << "double unmap";
  std::vector<GpaRange> outside = {{4096, 0, {256}}};
  auto s = table.Create(2, 1, outside, false);
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(s.message()), HasSubstr("GPADL 2"));
  std::vector<GpaRange> bad_offset = {{10, 4096, {1}}};
  EXPECT_EQ(table.Create(3, 1, bad_offset, false).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(GpadlTableTest, LeaseIoFollowsMultiRangeSegments) {
  GpadlTable table(*memory_);
  auto a = Buffer(1, 4000, 96);   // last 96 bytes of a page
  auto b = Buffer(2, 0, 5000);    // 5000 bytes over two pages
  std::vector<GpaRange> ranges = {a[0], b[0]};
  ASSERT_TRUE(table.Create(9, 1, ranges, false).ok());
  auto lease = *table.Map(9, false);
  EXPECT_EQ(lease.byte_count, 5096u);
  EXPECT_TRUE(lease.bytes().empty()) << "two ranges: no single span";
  ASSERT_EQ(lease.segments.size(), 2u);
  std::vector<uint8_t> data(200);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i);
  ASSERT_TRUE(table.WriteLease(lease.lease_id, 0, data).ok());  // spans both ranges
  std::vector<uint8_t> first(96), second(104);
  ASSERT_TRUE(memory_->Read(a[0].pfns[0] * 4096 + 4000, std::span(first)).ok());
  ASSERT_TRUE(memory_->Read(b[0].pfns[0] * 4096, std::span(second)).ok());
  EXPECT_EQ(first[0], 0);
  EXPECT_EQ(first[95], 95);
  EXPECT_EQ(second[0], 96);
  EXPECT_EQ(second[103], 199);
  std::vector<uint8_t> back(200);
  ASSERT_TRUE(table.ReadLease(lease.lease_id, 0, std::span(back)).ok());
  EXPECT_EQ(back, data);
  std::vector<uint8_t> past(2);
  EXPECT_EQ(table.ReadLease(lease.lease_id, 5095, std::span(past)).code(),
            absl::StatusCode::kOutOfRange);
}

TEST_F(GpadlTableTest, IdsAreUniqueAndLeasesListed) {
  GpadlTable table(*memory_);
  uint32_t a = table.AllocateId();
  ASSERT_TRUE(table.Create(a, 1, Buffer(1), false).ok());
  uint32_t b = table.AllocateId();
  EXPECT_NE(a, b);
  ASSERT_TRUE(table.Create(b, 2, Buffer(1), false).ok());
  auto lease = *table.Map(b, true);
  auto leases = table.Leases();
  ASSERT_EQ(leases.size(), 1u);
  EXPECT_EQ(leases[0].gpadl_id, b);
  EXPECT_TRUE(leases[0].read_only);
  EXPECT_EQ(table.ListForChannel(2).size(), 1u);
  EXPECT_TRUE(table.CoversPage(table.Get(a)->ranges[0].pfns[0]));
}

TEST_F(GpadlTableTest, ConcurrentLeaseIoAndUnmapAreSafe) {
  GpadlTable table(*memory_);
  ASSERT_TRUE(table.Create(1, 1, Buffer(4), false).ok());
  for (int round = 0; round < 50; ++round) {
    auto lease = *table.Map(1, false);
    std::thread reader([&] {
      std::vector<uint8_t> out(4096);
      for (int i = 0; i < 100; ++i) {
        absl::Status s = table.ReadLease(lease.lease_id, 0, std::span(out));
        if (!s.ok()) {
          EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
          break;
        }
      }
    });
    ASSERT_TRUE(table.Unmap(lease.lease_id).ok());
    reader.join();
  }
}

}  // namespace
}  // namespace kmcl
