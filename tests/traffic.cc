#include "tests/traffic.h"

#include <vector>

#include "absl/strings/str_cat.h"

namespace kmcld::testing {

namespace {
absl::Status FromGrpc(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}
}  // namespace

absl::StatusOr<TrafficChannel> OfferAndOpen(Kmcld& k, const std::string& friendly_name,
                                            const std::string& type) {
  kmcl::v1::OfferChannelRequest req;
  req.set_partition_id("default");
  req.mutable_settings()->mutable_interface_type()->set_value(type);
  req.mutable_settings()->set_friendly_name(friendly_name);
  req.mutable_settings()->set_start(true);
  kmcl::v1::ChannelResponse offered;
  if (grpc::Status s = k.host->OfferChannel(Kmcld::Context().get(), req, &offered); !s.ok()) {
    return FromGrpc(s);
  }
  if (auto opened = k.Open("default", type); !opened.ok()) return opened.status();
  return TrafficChannel{offered.channel().offer().channel()};
}

absl::Status RunTransactions(Kmcld& k, const TrafficChannel& channel, int packets,
                             const std::string& payload) {
  AttachStream host(*k.packets, channel.ref, kmcl::v1::ENDPOINT_ROLE_HOST,
                    /*delivery_credits=*/static_cast<uint32_t>(packets));
  AttachStream guest(*k.packets, channel.ref, kmcl::v1::ENDPOINT_ROLE_GUEST);
  if (!host.ok() || !guest.ok()) return absl::UnavailableError("attach failed");
  int sent = 0;
  while (sent < packets) {
    // In batches within the guest's send credits.
    std::vector<kmcl::v1::SendPacket> batch;
    while (sent < packets && batch.size() < guest.send_credits()) {
      batch.push_back(Packet(static_cast<uint64_t>(sent) + 1, payload));
      ++sent;
    }
    if (batch.empty()) return absl::InternalError("no send credits");
    if (!guest.Send(batch)) return absl::UnavailableError("guest send failed");
    std::vector<kmcl::v1::ReceivedPacket> delivered;
    if (!host.ReadDeliveries(batch.size(), &delivered)) return absl::UnavailableError("host read failed");
    std::vector<std::pair<uint64_t, std::string>> completions;
    for (const auto& d : delivered) completions.emplace_back(d.delivery_id(), "");
    if (!host.Complete(completions)) return absl::UnavailableError("host complete failed");
    std::vector<kmcl::v1::SendCompletion> done;
    if (!guest.ReadCompletions(batch.size(), &done)) return absl::UnavailableError("guest read failed");
  }
  if (grpc::Status s = host.Close(); !s.ok()) return FromGrpc(s);
  if (grpc::Status s = guest.Close(); !s.ok()) return FromGrpc(s);
  return absl::OkStatus();
}

}  // namespace kmcld::testing
