// kmclctl's pieces without a daemon: the targets file, channel references,
// hex payloads, tables and JSON keyed by target.
#include <stdlib.h>

#include <map>

#include "clients/cpp/kmclctl/commands.h"
#include "clients/cpp/kmclctl/output.h"
#include "clients/cpp/kmclctl/struct_access.h"
#include "clients/cpp/kmclctl/targets.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"

namespace kmclctl {
namespace {

TEST(TargetsTest, ParsesPrometheusFileSd) {
  auto t = ParseFileSd(R"([
    {"targets": ["10.0.0.1:50551", "unix:///run/kmcld/kmcld.sock"], "labels": {"rack": "a"}},
    {"targets": ["10.0.0.2:50551"]}
  ])");
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->size(), 3u);
  EXPECT_EQ((*t)[0].address, "10.0.0.1:50551");
  EXPECT_EQ((*t)[0].labels.at("rack"), "a");
  EXPECT_EQ((*t)[1].address, "unix:/run/kmcld/kmcld.sock");
  EXPECT_TRUE((*t)[2].labels.empty());
}

TEST(TargetsTest, RejectsWhatIsNotFileSd) {
  for (const char* bad : {"", "{}", "[1]", R"([{"labels": {}}])", R"([{"targets": "x:1"}])",
                          R"([{"targets": [1]}])", R"([{"targets": ["nohost"]}])",
                          R"([{"targets": ["a:1"], "labels": {"k": 1}}])", "[{\"targets\": [\"a:1\""}) {
    EXPECT_EQ(ParseFileSd(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(TargetsTest, FlagsThenFileWithoutDuplicatesAndAFallback) {
  auto t = ResolveTargets({"127.0.0.1:1", "127.0.0.1:1", "unix:/x"}, "", "127.0.0.1:9");
  ASSERT_TRUE(t.ok());
  ASSERT_EQ(t->size(), 2u);
  auto fallback = ResolveTargets({}, "", "127.0.0.1:9");
  ASSERT_TRUE(fallback.ok());
  EXPECT_EQ((*fallback)[0].address, "127.0.0.1:9");
  EXPECT_FALSE(ResolveTargets({}, "/nonexistent/targets.json", "x:1").ok());
  EXPECT_FALSE(ResolveTargets({"bad target"}, "", "x:1").ok());
}

TEST(TargetsTest, DefaultIsKmcldTargetElseTheDaemonsSocket) {
  ::setenv("KMCLD_TARGET", "10.1.2.3:50551", 1);
  EXPECT_EQ(DefaultTarget(), "10.1.2.3:50551");
  ::unsetenv("KMCLD_TARGET");
  ::setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
  EXPECT_EQ(DefaultTarget(), "unix:/run/user/1000/kmcld/kmcld.sock");
}

TEST(ChannelRefTest, ParsesPartitionChannelAndSequence) {
  auto r = ParseChannelRef("p-1/3@7");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->partition_id(), "p-1");
  EXPECT_EQ(r->channel_id(), 3u);
  EXPECT_EQ(r->offer_sequence(), 7u);
  EXPECT_EQ(FormatChannelRef(*r), "p-1/3");
  for (const char* bad : {"", "default", "/1", "default/", "default/0", "default/x", "a/1/2",
                          "default/1@", "default/1@x", "default/1@2@3", "default/99999999999"}) {
    EXPECT_FALSE(ParseChannelRef(bad).ok()) << bad;
  }
}

TEST(HexTest, AcceptsSpacesColonsAndPrefix) {
  EXPECT_EQ(*ParseHex("de ad:BE,ef"), std::string("\xde\xad\xbe\xef"));
  EXPECT_EQ(*ParseHex("0x0102"), std::string("\x01\x02"));
  EXPECT_EQ(*ParseHex(""), "");
  EXPECT_FALSE(ParseHex("abc").ok());
  EXPECT_FALSE(ParseHex("zz").ok());
}

TEST(OutputTest, AlignsColumnsAndAddsTargetsAndWideColumns) {
  Table a, b;
  a.columns = b.columns = {{"ID"}, {"SIZE"}, {"EXTRA", true}};
  a.Add({"default", "4.0 GiB", "x"});
  b.Add({"p-12345", "1 B", "yy"});
  EXPECT_EQ(RenderTable({&a}, {}, false), "ID       SIZE\ndefault  4.0 GiB\n");
  EXPECT_EQ(RenderTable({&a, &b}, {"h1:1", "host-2:2"}, true),
            "TARGET    ID       SIZE     EXTRA\n"
            "h1:1      default  4.0 GiB  x\n"
            "host-2:2  p-12345  1 B      yy\n");
}

TEST(OutputTest, LabelsColumnFollowsTheTarget) {
  Table a, b;
  a.columns = b.columns = {{"ID"}};
  a.Add({"default"});
  b.Add({"p-1"});
  const Target labelled{"h1:1", {{"zone", "z"}, {"rack", "a"}}};
  const Target bare{"h2:2", {}};
  EXPECT_EQ(FormatLabels(labelled), "rack=a,zone=z") << "sorted by name";
  EXPECT_EQ(FormatLabels(bare), "");
  const std::string table =
      RenderTable({&a, &b}, {"h1:1", "h2:2"}, true, {FormatLabels(labelled), FormatLabels(bare)});
  EXPECT_EQ(table,
            "TARGET  LABELS         ID\n"
            "h1:1    rack=a,zone=z  default\n"
            "h2:2    -              p-1\n");
}

TEST(OutputTest, JsonUsesTheApiFieldNamesAndKeysByTarget) {
  kmcl::v1::Partition p;
  p.set_id("default");
  p.set_guest_memory_bytes(4096);
  auto one = ToJson(p, false);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(*one, R"({"id":"default","guest_memory_bytes":"4096"})");
  auto merged = ToJsonByTarget({{"a:1", &p}, {"b:2", &p}}, false);
  ASSERT_TRUE(merged.ok());
  google::protobuf::Struct parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(*merged, &parsed).ok());
  std::map<std::string, const google::protobuf::Value*> fields;
  for (const auto& [k, v] : StructFields(parsed)) fields[k] = v;
  ASSERT_EQ(fields.size(), 2u);
  std::map<std::string, std::string> inner;
  for (const auto& [k, v] : StructFields(fields.at("b:2")->struct_value())) {
    inner[k] = v->string_value();
  }
  EXPECT_EQ(inner.at("id"), "default");
}

TEST(CliTest, TimeoutBoundsSaveAndRestoreOnlyWhenGiven) {
  Cli defaults;
  EXPECT_EQ(defaults.client_options().call_timeout, absl::Seconds(10));
  EXPECT_EQ(defaults.client_options().stream_timeout, kc::ClientOptions().stream_timeout);
  Cli given;
  given.timeout_s = 3;
  EXPECT_EQ(given.client_options().connect_timeout, absl::Seconds(3));
  EXPECT_EQ(given.client_options().call_timeout, absl::Seconds(3));
  EXPECT_EQ(given.client_options().stream_timeout, absl::Seconds(3)) << "kmclctl --timeout 3 save ...";
}

TEST(OutputTest, HexdumpShowsOffsetsBytesAndText) {
  EXPECT_EQ(Hexdump("AB\x01", 16),
            "00000010  41 42 01                                          |AB.|\n");
}

}  // namespace
}  // namespace kmclctl
