// kmclctl end to end: two kmcld processes (A on its Unix socket, B over TCP
// on loopback through a proxy in front of its socket, so both target forms
// are used) and one address where nothing listens. Every command runs as a child process;
// tables and --json output are parsed and checked, the down target is
// reported on stderr with exit code 1, a partition is saved to a file on
// one daemon and restored on the other, and watch resumes after a sequence.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "clients/cpp/kmcl.h"
#include "clients/cpp/kmclctl/kmclctl.pb.h"
#include "clients/cpp/kmclctl/struct_access.h"
#include "clients/cpp/testing/kmcld.h"
#include "clients/cpp/testing/subprocess.h"
#include "clients/cpp/testing/tcp_proxy.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "proto/devices.pb.h"
#include "tools/build_info.h"

namespace kmcl::client::testing {
namespace {

using Row = std::map<std::string, std::string>;
constexpr char kType[] = "7c0ffee0-1234-4abc-8def-0123456789ab";

// Splits an aligned table into rows keyed by header (cells may hold spaces:
// each column starts where its header word starts).
std::vector<Row> ParseTable(const std::string& text) {
  std::vector<std::string> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
  std::vector<Row> rows;
  if (lines.empty()) return rows;
  std::vector<std::pair<size_t, std::string>> columns;
  const std::string& header = lines[0];
  for (size_t i = 0; i < header.size();) {
    if (header[i] == ' ') {
      ++i;
      continue;
    }
    size_t end = header.find(' ', i);
    if (end == std::string::npos) end = header.size();
    columns.emplace_back(i, header.substr(i, end - i));
    i = end;
  }
  for (size_t l = 1; l < lines.size(); ++l) {
    Row row;
    for (size_t c = 0; c < columns.size(); ++c) {
      const size_t begin = columns[c].first;
      const size_t end = c + 1 < columns.size() ? columns[c + 1].first : std::string::npos;
      std::string cell = begin < lines[l].size() ? lines[l].substr(begin, end - begin) : "";
      row[columns[c].second] = std::string(absl::StripAsciiWhitespace(cell));
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

template <typename Message>
Message FromJson(const std::string& json) {
  Message m;
  auto status = google::protobuf::util::JsonStringToMessage(json, &m);
  EXPECT_TRUE(status.ok()) << status.message() << "\n" << json;
  return m;
}

// The row of `table` whose `column` is `value` (an empty row if none):
// kmcld may have channels of its own (built-in devices) beside the test's.
Row Find(const std::vector<Row>& table, const std::string& column, const std::string& value) {
  for (const Row& r : table) {
    auto it = r.find(column);
    if (it != r.end() && it->second == value) return r;
  }
  return Row();
}

// An address on loopback where nothing listens: bound, never listened.
std::string DownAddress() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), len);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
}

class KmclctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(a_.Start().ok()) << a_.process.output();
    ASSERT_TRUE(b_.Start().ok()) << b_.process.output();
    ASSERT_TRUE(b_proxy_.Start(b_.process.uds_path()).ok());
    A = a_.target();
    B = b_proxy_.address();
    down_ = DownAddress();
  }
  // kmclctl with `args` (no shell).
  RunResult Ctl(std::vector<std::string> args) {
    args.insert(args.begin(), Runfile("clients/cpp/kmclctl/kmclctl"));
    return testing::Run(args);
  }
  RunResult On(const std::string& target, std::vector<std::string> args) {
    args.insert(args.begin(), {"--target", target, "--timeout=5"});
    return Ctl(args);
  }
  std::string TempFile(const std::string& name) {
    const char* dir = std::getenv("TEST_TMPDIR");
    return absl::StrCat(dir ? dir : "/tmp", "/", name);
  }

  TestDaemon a_, b_;
  TcpProxy b_proxy_;
  std::string A, B, down_;
};

TEST_F(KmclctlTest, UsageErrorsExitTwoAndHelpExitsZero) {
  RunResult help = Ctl({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const char* command : {"partitions", "channels", "offers", "offer", "open", "close",
                              "rescind", "send", "gpadl", "watch", "save", "restore", "health",
                              "version"}) {
    EXPECT_TRUE(absl::StrContains(help.out, command)) << command;
  }
  RunResult sub = Ctl({"gpadl", "read", "--help"});
  EXPECT_EQ(sub.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(sub.out, "--offset")) << sub.out;
  for (std::vector<std::string> bad : std::vector<std::vector<std::string>>{
           {},
           {"nonsense"},
           {"partitions"},
           {"--output=yaml", "health"},
           {"--target", "no port", "health"},
           {"--targets-file", "/nonexistent", "health"},
           {"channels", "show", "default"},
           {"send", "default/1"},
           {"send", "default/1", "--hex", "xyz"},
           {"partitions", "create", "big", "--memory-mib", "17592186044416"},  // 2^44: wraps to 0
           {"top", "--once", "--interval", "1e9"},  // 31 years
           {"-t", "127.0.0.1:1", "-t", "127.0.0.1:2", "save", "default", "-o", "/tmp/x"}}) {
    RunResult r = Ctl(bad);
    EXPECT_EQ(r.exit_code, 2) << absl::StrJoin(bad, " ") << "\n" << r.out << r.err;
    EXPECT_FALSE(r.err.empty()) << absl::StrJoin(bad, " ");
  }
}

TEST_F(KmclctlTest, FanOutMergesAnswersAndReportsTheDownTarget) {
  RunResult r = Ctl({"-t", A, "-t", B, "-t", down_, "--timeout=2", "partitions", "list"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, down_)) << r.err;
  EXPECT_FALSE(absl::StrContains(r.err, A));
  std::vector<Row> rows = ParseTable(r.out);
  ASSERT_EQ(rows.size(), 2u) << r.out;
  EXPECT_EQ(rows[0]["TARGET"], A);
  EXPECT_EQ(rows[1]["TARGET"], B);
  for (Row& row : rows) {
    EXPECT_EQ(row["ID"], "default");
    EXPECT_EQ(row["VMBUS"], "6.0");
    EXPECT_EQ(row["MEMORY"], "4.0 GiB");
  }

  RunResult j = Ctl({"-t", A, "-t", B, "-t", down_, "--timeout=2", "--json", "partitions", "list"});
  EXPECT_EQ(j.exit_code, 1);
  auto merged = FromJson<google::protobuf::Struct>(j.out);
  std::map<std::string, const google::protobuf::Value*> by_target;
  for (const auto& [k, v] : kmclctl::StructFields(merged)) by_target[k] = v;
  ASSERT_EQ(by_target.size(), 2u) << j.out;
  for (const std::string& t : {A, B}) {
    ASSERT_TRUE(by_target.count(t)) << t;
    std::string one;
    ASSERT_TRUE(google::protobuf::util::MessageToJsonString(*by_target[t], &one).ok());
    auto list = FromJson<v1::ListPartitionsResponse>(one);
    ASSERT_EQ(list.partitions_size(), 1);
    EXPECT_EQ(list.partitions(0).guest_memory_bytes(), uint64_t{4} << 30);
  }

  // The same fleet from a Prometheus file_sd file: all up, exit 0.
  const std::string file = TempFile("targets.json");
  std::ofstream(file) << "[{\"targets\": [\"" << A << "\"], \"labels\": {\"rack\": \"r1\"}},"
                      << " {\"targets\": [\"" << B << "\"]}]";
  RunResult f = Ctl({"--targets-file", file, "health"});
  EXPECT_EQ(f.exit_code, 0) << f.err;
  rows = ParseTable(f.out);
  ASSERT_EQ(rows.size(), 2u) << f.out;
  EXPECT_EQ(rows[0]["STATUS"], "SERVING");
  EXPECT_EQ(rows[1]["TARGET"], B);
  EXPECT_EQ(rows[0].count("LABELS"), 0u) << "labels are a wide column";
  // The file's labels: a column of wide tables, "@labels" beside the answers.
  rows = ParseTable(Ctl({"--targets-file", file, "-o", "wide", "health"}).out);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["LABELS"], "rack=r1");
  EXPECT_EQ(rows[1]["LABELS"], "-");
  RunResult fj = Ctl({"--targets-file", file, "--json", "health"});
  ASSERT_EQ(fj.exit_code, 0) << fj.err;
  std::map<std::string, const google::protobuf::Value*> answers;
  auto labelled = FromJson<google::protobuf::Struct>(fj.out);
  for (const auto& [k, v] : kmclctl::StructFields(labelled)) answers[k] = v;
  ASSERT_EQ(answers.size(), 3u) << fj.out;
  ASSERT_TRUE(answers.count("@labels")) << fj.out;
  std::map<std::string, const google::protobuf::Value*> labels;
  for (const auto& [k, v] : kmclctl::StructFields(answers["@labels"]->struct_value())) labels[k] = v;
  ASSERT_EQ(labels.size(), 1u) << "only A has labels: " << fj.out;
  ASSERT_TRUE(labels.count(A)) << fj.out;
  std::map<std::string, const google::protobuf::Value*> a_labels;
  for (const auto& [k, v] : kmclctl::StructFields(labels[A]->struct_value())) a_labels[k] = v;
  ASSERT_TRUE(a_labels.count("rack"));
  EXPECT_EQ(a_labels["rack"]->string_value(), "r1");
  RunResult down = Ctl({"-t", down_, "--timeout=2", "health"});
  EXPECT_EQ(down.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(down.err, "UNAVAILABLE")) << down.err;
}

// Nothing at the address: kmclctl fails at once (not after --timeout),
// exit 1, naming the address and why.
TEST_F(KmclctlTest, AMissingSocketOrRefusedPortFailsAtOnceNamingIt) {
  const std::string missing = TempFile("no-kmcld-here.sock");
  RunResult uds = Ctl({"-t", "unix:" + missing, "--timeout=30", "health"});
  EXPECT_EQ(uds.exit_code, 1) << uds.err;
  EXPECT_TRUE(absl::StrContains(uds.err, "no kmcld socket at " + missing)) << uds.err;
  EXPECT_TRUE(absl::StrContains(uds.err, "No such file")) << uds.err;
  RunResult tcp = Ctl({"-t", down_, "--timeout=30", "partitions", "list"});
  EXPECT_EQ(tcp.exit_code, 1) << tcp.err;
  EXPECT_TRUE(absl::StrContains(tcp.err, "cannot connect to kmcld at " + down_)) << tcp.err;
  EXPECT_TRUE(absl::StrContains(tcp.err, "refused")) << tcp.err;
}

TEST_F(KmclctlTest, PartitionsCreateAndDelete) {
  RunResult c = On(A, {"--json", "partitions", "create", "e2e-p", "--vmbus-version", "5.0",
                       "--vtl", "0", "--vtl", "2", "--memory-mib", "64"});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  auto p = FromJson<v1::Partition>(c.out);
  EXPECT_EQ(p.id(), "e2e-p");
  EXPECT_EQ(p.vmbus_version(), v1::VMBUS_VERSION_WIN10_V5);
  EXPECT_EQ(p.client_vtls_size(), 2);
  EXPECT_EQ(p.guest_memory_bytes(), uint64_t{64} << 20);
  std::vector<Row> rows = ParseTable(On(A, {"-o", "wide", "partitions", "list"}).out);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["ID"], "default");
  EXPECT_EQ(rows[1]["VTLS"], "0,2");
  EXPECT_EQ(rows[1]["MMIO_BASE"], "0x1000000000");
  EXPECT_EQ(On(A, {"partitions", "create", "e2e-p"}).exit_code, 1) << "ALREADY_EXISTS";
  RunResult d = On(A, {"partitions", "delete", "e2e-p"});
  EXPECT_EQ(d.exit_code, 0) << d.err;
  EXPECT_EQ(ParseTable(d.out)[0]["RESULT"], "deleted");
  RunResult again = On(A, {"partitions", "delete", "e2e-p"});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(again.err, "NOT_FOUND")) << again.err;
}

// offer, offers, open, channels list/show, send (to the echo example),
// gpadl list/read, close, rescind.
TEST_F(KmclctlTest, ChannelLifecycleSendAndGpadls) {
  Background echo({Runfile("examples/kmcl_echo_host"), "--target=" + A, std::string("--type=") + kType,
                   "--count=1"});
  ASSERT_TRUE(echo.WaitForStdout("echoing").ok()) << echo.out();
  RunResult offers = On(A, {"--json", "offers", "--type", kType});
  ASSERT_EQ(offers.exit_code, 0) << offers.err;
  auto listed = FromJson<v1::ListOffersResponse>(offers.out);
  ASSERT_EQ(listed.offers_size(), 1) << offers.out;
  EXPECT_FALSE(listed.offers(0).opened());
  const std::string ch = absl::StrCat("default/", listed.offers(0).channel().channel_id());

  RunResult open = On(A, {"--json", "open", "--type", kType});
  ASSERT_EQ(open.exit_code, 0) << open.err;
  EXPECT_EQ(FromJson<v1::ChannelResponse>(open.out).channel().guest().connection(),
            v1::CONNECTION_STATE_OPENED);
  std::vector<Row> rows = ParseTable(On(A, {"channels", "list"}).out);
  Row row = Find(rows, "CHANNEL", ch);
  EXPECT_EQ(row["HOST"], "OPENED/ACTIVE+attached");
  EXPECT_EQ(row["GUEST"], "OPENED/ACTIVE");
  EXPECT_EQ(row["NAME"], "kmcl_echo_host");

  // A GPADL the guest creates (through the library), seen and read by kmclctl.
  auto client = Client::Connect(A);
  ASSERT_TRUE(client.ok());
  auto ref = (*client)->GetChannel(FromJson<v1::ChannelResponse>(open.out).channel().offer().channel());
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto buffer = GuestBuffer::Allocate(*client, "default", 8192);
  ASSERT_TRUE(buffer.ok());
  ASSERT_TRUE(buffer->Write(4090, "kmclctl reads this").ok());
  auto gpadl = Gpadl::Create(*client, ref->offer().channel(), *buffer);
  ASSERT_TRUE(gpadl.ok()) << gpadl.status();
  const std::string id = absl::StrCat(gpadl->id());
  rows = ParseTable(On(A, {"gpadl", "list", ch}).out);
  ASSERT_EQ(rows.size(), 2u) << "the ring's GPADL and ours";
  Row ours = Find(rows, "GPADL", id);
  EXPECT_EQ(ours["CHANNEL"], ch);
  EXPECT_EQ(ours["BYTES"], "8192");
  EXPECT_EQ(ours["RANGES"], "1");
  EXPECT_EQ(ours["PAGES"], "2");
  EXPECT_EQ(ours["STATE"], "CREATED");
  EXPECT_EQ(ours["READ_ONLY"], "no");
  EXPECT_EQ(ours["LEASE"], "-");
  // A host lease shows, with its mode; the partition-wide list has it too.
  auto lease = (*client)->MapGpadl(ref->offer().channel(), gpadl->id(), /*read_only=*/true);
  ASSERT_TRUE(lease.ok()) << lease.status();
  ours = Find(ParseTable(On(A, {"-o", "wide", "gpadl", "list", "--partition", "default"}).out),
              "GPADL", id);
  EXPECT_EQ(ours["LEASE"], absl::StrCat(lease->lease_id()));
  EXPECT_EQ(ours["LEASE_MODE"], "read-only");
  EXPECT_EQ(ours["FIRST_PFN"], absl::StrCat("0x", absl::Hex(buffer->info().pfns(0))));
  RunResult listed_json = On(A, {"--json", "gpadl", "list", ch});
  ASSERT_EQ(listed_json.exit_code, 0) << listed_json.err;
  auto gpadls = FromJson<v1::ListGpadlsResponse>(listed_json.out);
  ASSERT_EQ(gpadls.gpadls_size(), 2);
  EXPECT_EQ(gpadls.gpadls(1).gpadl_id(), gpadl->id());
  EXPECT_EQ(gpadls.gpadls(1).ranges_size(), 1) << "JSON carries the page lists";
  EXPECT_TRUE(gpadls.gpadls(1).lease_read_only());
  ASSERT_TRUE((*client)->UnmapGpadl(lease->lease_id()).ok());
  RunResult nowhere = On(A, {"gpadl", "list", "default/999"});
  EXPECT_EQ(nowhere.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(nowhere.err, "NOT_FOUND")) << nowhere.err;
  RunResult read = On(A, {"--json", "gpadl", "read", ch, id, "--offset", "4090", "--length", "18"});
  ASSERT_EQ(read.exit_code, 0) << read.err;
  EXPECT_EQ(FromJson<kmclctl::json::GpadlData>(read.out).data(), "kmclctl reads this");
  RunResult dump = On(A, {"gpadl", "read", ch, id, "--offset", "4090", "--length", "18"});
  EXPECT_TRUE(absl::StrContains(dump.out, "00000ffa  6b 6d 63 6c")) << dump.out;
  EXPECT_TRUE(absl::StrContains(dump.out, "|kmclctl ")) << dump.out;
  EXPECT_EQ(On(A, {"gpadl", "read", ch, "999"}).exit_code, 1);

  RunResult show = On(A, {"--json", "channels", "show", ch});
  ASSERT_EQ(show.exit_code, 0);
  auto diag = FromJson<v1::ChannelDiagnostics>(show.out);
  EXPECT_EQ(diag.gpadl_count(), 2u) << "the ring's and ours";
  ASSERT_TRUE(gpadl->Teardown().ok());
  ASSERT_TRUE(buffer->Free().ok());

  RunResult send = On(A, {"send", ch, "--wait", "--hex", "68 69"});
  ASSERT_EQ(send.exit_code, 0) << send.err;
  rows = ParseTable(send.out);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["STATUS"], "STATUS_SUCCESS");
  EXPECT_EQ(rows[0]["COMPLETION"], "6869000000000000") << "the echo, padded to 8";
  EXPECT_EQ(echo.Wait(), 0) << echo.out();

  // The echo host exited after one echo: its handle rescinded the offer.
  rows = ParseTable(On(A, {"channels", "show", ch}).out);
  Row fields;
  for (Row& r : rows) fields[r["FIELD"]] = r["VALUE"];
  EXPECT_EQ(fields["guest.counters.packets_sent"], "1");
  EXPECT_EQ(fields["guest.counters.completions_received"], "1");
  EXPECT_EQ(fields["host.state"], "-");
  EXPECT_TRUE(absl::StartsWith(fields["guest.state"], "RESCINDED/")) << fields["guest.state"];

  RunResult close = On(A, {"close", ch});
  EXPECT_EQ(close.exit_code, 0) << close.err;
  EXPECT_EQ(On(A, {"close", ch}).exit_code, 1);
  EXPECT_TRUE(Find(ParseTable(On(A, {"channels", "list"}).out), "CHANNEL", ch).empty());
}

// The guest's transactions the host tool holds show in channels show, each
// with its size and age, oldest first.
TEST_F(KmclctlTest, ChannelsShowListsOutstandingTransactionsWithTheirAge) {
  auto client = Client::Connect(A);
  ASSERT_TRUE(client.ok());
  auto channel = OfferAndOpen(*client, *client);
  ASSERT_TRUE(channel.ok()) << channel.status();
  auto host = AttachedStream::Attach(*client, channel->host.endpoint());
  ASSERT_TRUE(host.ok()) << host.status();
  auto guest = AttachedStream::Attach(*client, channel->guest.endpoint());
  ASSERT_TRUE(guest.ok()) << guest.status();
  auto first = (*guest)->Send({"ten bytes!"});
  auto second = (*guest)->Send({std::string(100, 'x')});
  std::vector<Delivery> held;
  for (int i = 0; i < 2; ++i) {
    auto d = (*host)->Receive(absl::Now() + absl::Seconds(30));
    ASSERT_TRUE(d.ok()) << d.status();
    held.push_back(*std::move(d));
  }
  const std::string ch = absl::StrCat("default/", channel->guest.ref().channel_id());
  RunResult show = On(A, {"--json", "channels", "show", ch});
  ASSERT_EQ(show.exit_code, 0) << show.err;
  auto diag = FromJson<v1::ChannelDiagnostics>(show.out);
  EXPECT_EQ(diag.guest().outstanding_transactions(), 2u);
  ASSERT_EQ(diag.guest().outstanding_size(), 2) << show.out;
  EXPECT_EQ(diag.guest().outstanding(0).payload_bytes(), 10u);
  EXPECT_EQ(diag.guest().outstanding(1).payload_bytes(), 100u);
  EXPECT_GE(diag.guest().outstanding(0).age_micros(), diag.guest().outstanding(1).age_micros())
      << "oldest first";
  EXPECT_EQ(diag.host().outstanding_size(), 0);
  Row fields;
  for (Row& r : ParseTable(On(A, {"channels", "show", ch}).out)) fields[r["FIELD"]] = r["VALUE"];
  const std::string key =
      absl::StrCat("guest.transaction.", diag.guest().outstanding(0).transaction_id());
  ASSERT_TRUE(fields.count(key)) << key;
  EXPECT_TRUE(absl::StartsWith(fields[key], "10 bytes, age ")) << fields[key];
  for (const Delivery& d : held) ASSERT_TRUE((*host)->Complete(d.id, "").ok());
  ASSERT_TRUE(first.get().ok());
  ASSERT_TRUE(second.get().ok());
  diag = FromJson<v1::ChannelDiagnostics>(On(A, {"--json", "channels", "show", ch}).out);
  EXPECT_EQ(diag.guest().outstanding_size(), 0);
}

TEST_F(KmclctlTest, OfferOpenCloseRescindByHand) {
  RunResult offer = On(A, {"--json", "offer", "--type", kType, "--name", "by-hand", "--start",
                           "--user-defined", "0102"});
  ASSERT_EQ(offer.exit_code, 0) << offer.err;
  auto offered = FromJson<v1::ChannelResponse>(offer.out).channel();
  const std::string ch = absl::StrCat("default/", offered.offer().channel().channel_id());
  EXPECT_EQ(offered.host().connection(), v1::CONNECTION_STATE_ENABLED);
  EXPECT_EQ(offered.offer().user_defined().substr(0, 2), "\x01\x02");
  ASSERT_EQ(On(A, {"open", "--type", kType}).exit_code, 0);
  Row row = Find(ParseTable(On(A, {"-o", "wide", "channels", "list"}).out), "CHANNEL", ch);
  EXPECT_EQ(row["HOST_OUT_FILL"], "0/65536 (0%)");
  EXPECT_EQ(row["GPADLS"], "1");
  ASSERT_EQ(On(A, {"close", ch}).exit_code, 0);
  RunResult rescind = On(A, {"rescind", ch, "--cleanup"});
  EXPECT_EQ(rescind.exit_code, 0) << rescind.err;
  EXPECT_TRUE(Find(ParseTable(On(A, {"channels", "list"}).out), "CHANNEL", ch).empty());
  EXPECT_EQ(On(A, {"rescind", ch}).exit_code, 1);
}

// Saved on A to a file, restored on B; stderr stays empty (no progress bar
// when it is not a terminal).
TEST_F(KmclctlTest, SaveToAFileThenRestoreOnAnotherDaemon) {
  ASSERT_EQ(On(A, {"partitions", "create", "e2e-save"}).exit_code, 0);
  ASSERT_EQ(On(A, {"offer", "--partition", "e2e-save", "--type", kType, "--start"}).exit_code, 0);
  ASSERT_EQ(On(A, {"open", "--partition", "e2e-save", "--type", kType}).exit_code, 0);
  const std::string file = TempFile("e2e-save.blob");
  RunResult save = On(A, {"save", "e2e-save", "-o", file});
  ASSERT_EQ(save.exit_code, 0) << save.err;
  EXPECT_EQ(save.err, "");
  std::vector<Row> rows = ParseTable(save.out);
  ASSERT_EQ(rows.size(), 1u);
  uint64_t bytes = 0;
  ASSERT_TRUE(absl::SimpleAtoi(rows[0]["BYTES"], &bytes));
  std::ifstream in(file, std::ios::binary | std::ios::ate);
  EXPECT_EQ(static_cast<uint64_t>(in.tellg()), bytes);

  RunResult restore = On(B, {"--json", "restore", "partition", "-i", file});
  ASSERT_EQ(restore.exit_code, 0) << restore.err;
  EXPECT_EQ(restore.err, "");
  auto t = FromJson<kmclctl::json::Transfer>(restore.out);
  EXPECT_EQ(t.restored_partition(), "e2e-save");
  EXPECT_EQ(t.bytes(), bytes);
  auto list = FromJson<v1::ListChannelDiagnosticsResponse>(
      On(B, {"--json", "channels", "list", "--partition", "e2e-save"}).out);
  ASSERT_EQ(list.channels_size(), 1);
  EXPECT_EQ(list.channels(0).channel().guest().connection(), v1::CONNECTION_STATE_OPENED);
  RunResult twice = On(B, {"restore", "partition", "-i", file});
  EXPECT_EQ(twice.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(twice.err, "ALREADY_EXISTS")) << twice.err;
  std::ofstream(TempFile("garbage.blob")) << "not a blob";
  EXPECT_EQ(On(B, {"restore", "partition", "-i", TempFile("garbage.blob"), "--partition", "g"})
                .exit_code, 1);
}

// On a terminal, save and restore draw a progress line (bytes and rate).
TEST_F(KmclctlTest, ProgressLineOnlyOnATerminal) {
  ASSERT_EQ(On(A, {"partitions", "create", "e2e-tty"}).exit_code, 0);
  const std::string file = TempFile("e2e-tty.blob");
  RunResult tty = RunOnTerminal({Runfile("clients/cpp/kmclctl/kmclctl"), "-t", A, "save",
                                 "e2e-tty", "-o", file});
  ASSERT_EQ(tty.exit_code, 0) << tty.out;
  EXPECT_TRUE(absl::StrContains(tty.out, "\rsaving e2e-tty: ")) << tty.out;
  EXPECT_TRUE(absl::StrContains(tty.out, "/s")) << tty.out;
  RunResult piped = On(A, {"save", "e2e-tty", "-o", file});
  ASSERT_EQ(piped.exit_code, 0);
  EXPECT_EQ(piped.err, "");
  EXPECT_FALSE(absl::StrContains(piped.out, "saving")) << piped.out;
}

TEST_F(KmclctlTest, WatchResumesAfterASequenceAndFollows) {
  ASSERT_EQ(On(A, {"partitions", "create", "w1"}).exit_code, 0);
  ASSERT_EQ(On(A, {"partitions", "create", "w2"}).exit_code, 0);
  RunResult all = On(A, {"--json", "watch", "--no-follow"});
  ASSERT_EQ(all.exit_code, 0) << all.err;
  std::vector<v1::Event> events;
  for (absl::string_view line : absl::StrSplit(all.out, '\n', absl::SkipEmpty())) {
    events.push_back(FromJson<v1::Event>(std::string(line)));
  }
  ASSERT_GE(events.size(), 3u);
  for (size_t i = 1; i < events.size(); ++i) EXPECT_EQ(events[i].sequence(), events[i - 1].sequence() + 1);
  const uint64_t middle = events[events.size() - 2].sequence();
  RunResult after = On(A, {"watch", "--no-follow", "--after", absl::StrCat(middle)});
  ASSERT_EQ(after.exit_code, 0);
  std::vector<Row> rows = ParseTable(after.out);
  ASSERT_EQ(rows.size(), 1u) << after.out;
  EXPECT_EQ(rows[0]["SEQ"], absl::StrCat(middle + 1));
  EXPECT_EQ(rows[0]["KIND"], "PARTITION_CREATED");
  EXPECT_EQ(rows[0]["PARTITION"], "w2");

  // Following: resumes after the last sequence and sees the next event,
  // whenever the watcher connects (the log keeps it).
  const uint64_t last = events.back().sequence();
  Background follow({Runfile("clients/cpp/kmclctl/kmclctl"), "-t", A, "watch", "--after",
                     absl::StrCat(last), "--count", "1"});
  ASSERT_EQ(On(A, {"partitions", "delete", "w1"}).exit_code, 0);
  EXPECT_EQ(follow.Wait(), 0);
  rows = ParseTable(follow.out());
  ASSERT_EQ(rows.size(), 1u) << follow.out();
  EXPECT_EQ(rows[0]["SEQ"], absl::StrCat(last + 1));
  EXPECT_EQ(rows[0]["KIND"], "PARTITION_DELETED");

  // Two targets: rows carry the target; a down one fails the exit code.
  RunResult fleet = Ctl({"-t", A, "-t", B, "-t", down_, "--timeout=2", "watch", "--no-follow",
                         "--count", "1"});
  EXPECT_EQ(fleet.exit_code, 1);
  rows = ParseTable(fleet.out);
  ASSERT_EQ(rows.size(), 2u) << fleet.out;
  EXPECT_TRUE(absl::StrContains(fleet.err, down_));
  RunResult unknown = On(A, {"watch", "--partition", "no-such", "--no-follow"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(unknown.err, "NOT_FOUND")) << unknown.err;
}

TEST_F(KmclctlTest, VersionAndHealth) {
  RunResult v = On(A, {"--json", "version"});
  ASSERT_EQ(v.exit_code, 0) << v.err;
  auto version = FromJson<kmclctl::json::Version>(v.out);
  EXPECT_EQ(version.kmclctl(), kmcl::build::Version());
  EXPECT_EQ(version.api(), "kmcl.v1");
  EXPECT_EQ(version.api_revision(), static_cast<uint32_t>(v1::API_REVISION_CURRENT));
  EXPECT_FALSE(version.grpc().empty());
  // The daemon's own build, from GetVersion.
  EXPECT_EQ(version.kmcld().version(), kmcl::build::Version());
  EXPECT_EQ(version.kmcld().api_revision(), static_cast<uint32_t>(v1::API_REVISION_CURRENT));
  EXPECT_EQ(version.kmcld().git_commit(), kmcl::build::GitCommit()) << "built together";
  EXPECT_GT(version.kmcld().started().seconds(), 0);
  EXPECT_LE(version.kmcld().started().seconds(), absl::ToUnixSeconds(absl::Now()));
  EXPECT_TRUE(version.kmcld().has_uptime());
  RunResult fleet = Ctl({"-t", A, "-t", B, "-t", down_, "--timeout=2", "version"});
  EXPECT_EQ(fleet.exit_code, 1);
  std::vector<Row> rows = ParseTable(fleet.out);
  ASSERT_EQ(rows.size(), 2u) << fleet.out;
  for (Row& row : rows) {
    EXPECT_EQ(row["KMCLD"], kmcl::build::Version());
    EXPECT_EQ(row["KMCLD_API"], absl::StrCat(v1::API_REVISION_CURRENT));
    EXPECT_EQ(row["KMCLCTL"], kmcl::build::Version());
    EXPECT_FALSE(row["UPTIME"].empty());
  }
  EXPECT_EQ(rows[1]["TARGET"], B);
  RunResult h = On(A, {"--json", "health"});
  ASSERT_EQ(h.exit_code, 0);
  EXPECT_EQ(FromJson<kmclctl::json::Health>(h.out).status(), "SERVING");
}

// The default partition's built-in devices (kmcld's default --devices).
TEST_F(KmclctlTest, DevicesListAndHeartbeat) {
  RunResult l = On(A, {"--json", "devices", "list", "--partition", "default"});
  ASSERT_EQ(l.exit_code, 0) << l.err;
  auto devices = FromJson<v1::ListDevicesResponse>(l.out);
  ASSERT_EQ(devices.devices_size(), 4) << l.out;
  std::set<int> kinds;
  for (const auto& d : devices.devices()) {
    EXPECT_EQ(d.partition_id(), "default");
    EXPECT_TRUE(d.emulated_guest());
    kinds.insert(d.kind());
  }
  EXPECT_EQ(kinds.size(), 4u) << "heartbeat, shutdown, time sync and KVP";
  std::vector<Row> rows = ParseTable(On(A, {"devices", "list"}).out);
  EXPECT_EQ(rows.size(), 4u);
  EXPECT_EQ(Find(rows, "DEVICE", "HEARTBEAT")["PARTITION"], "default");
  EXPECT_EQ(Find(rows, "DEVICE", "KVP")["GUEST"], "emulated");

  RunResult h = On(A, {"--json", "devices", "heartbeat", "default"});
  ASSERT_EQ(h.exit_code, 0) << h.err;
  EXPECT_GT(FromJson<v1::HeartbeatState>(h.out).timeout_ms(), 0);
  RunResult missing = On(A, {"devices", "heartbeat", "no-such-partition"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(missing.err, "NOT_FOUND")) << missing.err;
}

}  // namespace
}  // namespace kmcl::client::testing
