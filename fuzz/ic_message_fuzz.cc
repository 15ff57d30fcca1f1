// libFuzzer target: the integration services' message parsers and both
// sides' state machines (devices/ic). The first byte picks the service; the
// rest is a sequence of packets, each prefixed by a two-byte length, fed to
// the emulated guest and to an opened host alike, with the host ticked
// between them. Whatever the bytes: no crash or out-of-bounds read (ASan),
// every guest answer is a RESPONSE echoing the request's transaction id and
// as long as the request (a NEGOTIATE at least 44: 28 + 8 + two versions), the host never
// has more than one request outstanding, and a KVP body that decodes
// re-encodes to one that decodes the same.
#include <cstdint>
#include <cstdlib>

#include "devices/ic/guest.h"
#include "devices/ic/host_services.h"
#include "devices/ic/kvp_wire.h"
#include "fuzz/fuzz_input.h"

namespace ic = kmcl::devices::ic;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kmcl::fuzz::FuzzInput in(data, size);
  const auto service = static_cast<ic::IcService>(in.Take<uint8_t>() % 4);
  ic::IcGuest guest(service, ic::GuestOptions{.kvp_pool_capacity = 4});
  std::unique_ptr<ic::IcHostService> host = ic::MakeHostService(service, ic::HostOptions{});
  absl::Time now = absl::FromUnixSeconds(1000);
  ic::IcOutput out;
  host->Open(now, out);
  while (in.remaining() > 0) {
    auto packet = in.TakeBytes(in.Take<uint16_t>() % (ic::kMaxIcPacketSize + 64));
    std::optional<ic::Bytes> answer = guest.OnPacket(packet, now);
    if (answer) {
      auto request = ic::ParseIcMessage(packet);
      auto reply = ic::ParseIcMessage(*answer);
      if (!request.ok() || !reply.ok()) std::abort();  // only well-headed packets are answered
      if (reply->header.flags != (ic::kFlagTransaction | ic::kFlagResponse)) std::abort();
      if (reply->header.transaction_id != request->header.transaction_id) std::abort();
      const size_t want = request->header.type == ic::kMsgNegotiate ? std::max<size_t>(packet.size(), 44) : packet.size();
      if (answer->size() != want) std::abort();
    }
    host->OnPacket(packet, now, out);
    now += absl::Seconds(1);
    host->Tick(now, out);
    if (host->core().pending() > 64) std::abort();  // nothing accumulates from garbage alone
    out = ic::IcOutput{};
    if (packet.size() > ic::kIcMessageHeaderSize) {
      auto body = ic::DecodeKvpBody(packet.subspan(ic::kIcMessageHeaderSize));
      if (body.ok()) {
        auto again = ic::EncodeKvpBody(*body);
        if (!again.ok()) std::abort();
        auto round = ic::DecodeKvpBody(*again);
        if (!round.ok() || round->key != body->key || round->value != body->value ||
            round->index != body->index || round->value_type != body->value_type) {
          std::abort();
        }
      }
    }
  }
  return 0;
}
