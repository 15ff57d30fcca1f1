// kmcl_core/runtime/fake_link_test_util.h: what the send path and delivery
// path tests share to run a path without a partition or a channel: a bus
// endpoint that only counts ring interrupts (the "peer" of a RingLink), and
// packets built without a channel, and reading a ring back.
//
//   CountingEndpoint self, peer;
//   auto link = std::make_shared<RingLink>();
//   link->Attach(&self, EndpointRole::kHost);
//   link->Attach(&peer, EndpointRole::kGuest);
//   SendPath send(&self, {...});  // send.Attach(ring.memory(), link)
//   ... peer.interrupts counts SendPath's signals.
//
// Thread-compatible: the tests use it on one thread.
#ifndef KMCLD_KMCL_CORE_RUNTIME_FAKE_LINK_TEST_UTIL_H_
#define KMCLD_KMCL_CORE_RUNTIME_FAKE_LINK_TEST_UTIL_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kmcl_core/bus/bus_endpoint.h"
#include "kmcl_core/ring/ring_buffer.h"
#include "kmcl_core/runtime/channel.h"

namespace kmcl {

// Builds packets without a channel (Packet's constructor is private).
struct PacketTestAccess {
  static std::unique_ptr<Packet> Make(std::vector<uint8_t>& storage) {
    return std::unique_ptr<Packet>(
        new Packet(nullptr, storage.data(), static_cast<uint32_t>(storage.size()), false));
  }
  static uint64_t transaction_id(const Packet& p) { return p.transaction_id_; }
};

// A bus endpoint that only counts ring interrupts.
class CountingEndpoint : public BusEndpoint {
 public:
  void OnOffered(const OfferHandle&) override {}
  void OnOpenRequested(const OpenChannel&) override {}
  void OnOpenCancelled() override {}
  void OnReleased() override {}
  void OnOfferMatched(uint32_t, const OfferChannel&) override {}
  void OnOpenCompleted(NTSTATUS) override {}
  void OnPeerClosed() override {}
  void NotifyIo() override { ++interrupts; }
  int interrupts = 0;
};

inline std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// Every packet in `reader`'s ring now, consumed.
inline std::vector<IncomingPacket> ReadAll(RingReader& reader) {
  std::vector<IncomingPacket> out;
  IncomingPacket in;
  while (reader.Read(in) == RingStatus::kOk) out.push_back(in);
  reader.CommitRead();
  return out;
}

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_RUNTIME_FAKE_LINK_TEST_UTIL_H_
