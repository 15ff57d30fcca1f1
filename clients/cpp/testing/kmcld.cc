#include "clients/cpp/testing/kmcld.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace kmcl::client::testing {

absl::Status TestDaemon::Start(const std::vector<std::string>& flags) {
  std::vector<std::string> args = {"--listen=", "--uds=" + dir.Join("kmcld.sock")};
  args.insert(args.end(), flags.begin(), flags.end());
  return process.Start(args);
}

absl::StatusOr<EchoChannel> OfferAndOpen(std::shared_ptr<Client> host,
                                         std::shared_ptr<Client> guest,
                                         const std::string& partition, uint32_t max_packet_size) {
  v1::ServerChannelSettings settings;
  settings.mutable_interface_type()->set_value(kTestType);
  settings.set_start(true);
  settings.set_max_packet_size(max_packet_size);
  settings.set_friendly_name("client library test");
  EchoChannel out;
  KMCL_ASSIGN_OR_RETURN(out.host, HostChannel::Offer(host, partition, settings));
  v1::OpenChannelRequest open;
  open.set_partition_id(partition);
  open.mutable_interface_type()->set_value(kTestType);
  open.set_max_packet_size(max_packet_size);
  KMCL_ASSIGN_OR_RETURN(out.guest, GuestChannel::Open(guest, open));
  return out;
}

std::string Padded(std::string s) {
  s.resize((s.size() + 7) & ~size_t{7}, '\0');
  return s;
}

}  // namespace kmcl::client::testing
