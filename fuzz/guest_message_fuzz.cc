// libFuzzer target: the guest's VMBus client (VmbusClient) against a hostile
// host. The input is a sequence of steps: guest calls (connect, GPADL
// create and teardown, open, close, release, unload) and host-to-guest
// messages of the input's choosing: well-formed ones aimed at the relids,
// GPADL ids and open ids the guest actually uses (answers for requests it
// never made, duplicate answers, rescinds of unknown relids, offers reusing
// a live relid), or raw bytes.
//
// control_plane_fuzz covers the other direction (the host's server against a
// hostile guest); this target covers what the host can do to a guest.
//
// After every step the target checks:
//   - VmbusClient::CheckInvariants (docs/control-plane.md);
//   - every message the guest sends parses back (the guest never emits
//     malformed wire bytes, whatever it was fed);
//   - no completion without a request: Connected answers an INITIATE_CONTACT
//     in flight, OpenCompleted an OPENCHANNEL, GpadlCreateCompleted a
//     GPADL_HEADER and GpadlTeardownCompleted a GPADL_TEARDOWN that the guest
//     sent and that was not answered yet; OfferRescinded names an offer the
//     guest was told about.
//
// Threading: single-threaded, like the state machine.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <utility>
#include <variant>
#include <vector>

#include "fuzz/fuzz_input.h"
#include "kmcl_core/control/vmbus_client.h"
#include "kmcl_core/wire/gpa_range.h"
#include "kmcl_core/wire/vmbus_messages.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl {
namespace {

[[noreturn]] void Fail(const char* what, uint64_t a = 0, uint64_t b = 0) {
  std::fprintf(stderr, "guest_message_fuzz: %s (%llu, %llu)\n", what,
               static_cast<unsigned long long>(a), static_cast<unsigned long long>(b));
  std::abort();
}

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

class Harness {
 public:
  Harness() : client_(0, wire::kVersionCopper) {}

  // Most inputs start from a connected guest that knows offers 1 to 3, so
  // that the steps spend themselves on open, GPADL and rescind traffic
  // rather than on reaching it.
  void Setup(uint8_t how) {
    if (how % 4 == 0) return;  // from scratch
    client_.Connect();
    Check();
    VersionResponse v;
    v.version_supported = true;
    Deliver(Encode(v));
    Check();
    for (uint32_t relid = 1; relid <= 3; ++relid) {
      OfferChannel o;
      o.interface_instance.data1 = relid;
      o.child_relid = relid;
      o.connection_id = relid;
      Deliver(Encode(o));
    }
    Deliver(Encode(AllOffersDelivered{}));
    Check();
  }

  void Step(fuzz::FuzzInput& in) {
    const uint8_t op = in.Take<uint8_t>() % 16;
    const uint32_t relid = 1 + in.Take<uint8_t>() % 4;
    const uint32_t gpadl = 1 + in.Take<uint8_t>() % 4;
    switch (op) {
      // ---- guest calls (their errors are fine; the checks are below) ----
      case 0: client_.Connect(); break;
      case 1: {
        GpaRange r{(1 + in.Take<uint8_t>() % 3) * wire::kPageSize, 0, {}};
        for (uint64_t i = 0; i * wire::kPageSize < r.byte_count; ++i) r.pfns.push_back(16 + i);
        client_.CreateGpadl(relid, gpadl, std::vector<GpaRange>{r}).IgnoreError();
        break;
      }
      case 2: client_.TeardownGpadl(relid, gpadl).IgnoreError(); break;
      case 3: {
        OpenParams params;
        params.ring_gpadl_id = gpadl;
        params.downstream_page_offset = 1;
        client_.Open(relid, params).IgnoreError();
        break;
      }
      case 4: client_.Close(relid).IgnoreError(); break;
      case 5: client_.Release(relid).IgnoreError(); break;
      case 6: client_.Unload(); break;
      // ---- the host's messages ----
      case 7: {
        VersionResponse v;
        v.version_supported = in.Take<uint8_t>() & 1;
        v.connection_state = in.Take<uint8_t>();
        Deliver(Encode(v));
        break;
      }
      case 8: {
        OfferChannel o;
        o.interface_type = in.Take<Guid>();
        o.interface_instance = in.Take<Guid>();
        o.child_relid = (in.Take<uint8_t>() & 0x80) ? in.Take<uint32_t>() : relid;
        o.channel_flags = in.Take<uint16_t>();
        o.mmio_megabytes = in.Take<uint8_t>();
        o.connection_id = in.Take<uint32_t>();
        Deliver(Encode(o));
        break;
      }
      case 9: Deliver(Encode(RescindChannelOffer{relid})); break;
      case 10: Deliver(Encode(AllOffersDelivered{})); break;
      case 11: {
        // Usually the open id the guest used, sometimes not.
        uint32_t open_id = in.Take<uint8_t>();
        if (auto c = client_.Channel(relid); c.has_value() && (open_id & 1)) open_id = c->open_id;
        Deliver(Encode(OpenResult{relid, open_id, (in.Take<uint8_t>() & 1) ? 0u : 0xC0000001u}));
        break;
      }
      case 12: {
        const uint32_t status = (in.Take<uint8_t>() & 1) ? 0u : 0xC000009Au;
        Deliver(Encode(GpadlCreated{relid, gpadl, status}));
        break;
      }
      case 13: Deliver(Encode(GpadlTorndown{gpadl})); break;
      case 14: Deliver(Encode(UnloadResponse{})); break;
      default: {
        auto bytes = in.TakeBytes(in.Take<uint8_t>() % 96);
        Deliver(std::vector<uint8_t>(bytes.begin(), bytes.end()));
        break;
      }
    }
    Check();
  }

 private:
  void Deliver(const std::vector<uint8_t>& bytes) { client_.HandleHostMessage(bytes); }

  // The guest's effects against the requests it has in flight.
  void Check() {
    if (absl::Status s = client_.CheckInvariants(); !s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      Fail("guest invariant broken");
    }
    bool unloaded = false;
    for (ClientEffect& effect : client_.TakeEffects()) {
      std::visit(
          Overloaded{
              [&](const SendToHost& s) { Sent(s.message); },
              [&](const Connected& c) {
                if (!contact_pending_) Fail("Connected without INITIATE_CONTACT", c.version);
                contact_pending_ = false;
              },
              [&](const ConnectFailed&) { contact_pending_ = false; },
              [&](const OfferArrived& o) { offered_.insert(o.offer.child_relid); },
              [&](const OfferRescinded& r) {
                if (!offered_.contains(r.relid)) Fail("rescind of an offer never seen", r.relid);
              },
              [&](const OpenCompleted& o) {
                if (opens_.erase(o.relid) == 0) Fail("OpenCompleted without OPENCHANNEL", o.relid);
              },
              [&](const GpadlCreateCompleted& g) {
                if (creates_.erase({g.relid, g.gpadl_id}) == 0) {
                  Fail("GpadlCreateCompleted without GPADL_HEADER", g.relid, g.gpadl_id);
                }
              },
              [&](const GpadlTeardownCompleted& g) {
                if (teardowns_.erase({g.relid, g.gpadl_id}) == 0) {
                  Fail("GpadlTeardownCompleted without GPADL_TEARDOWN", g.relid, g.gpadl_id);
                }
              },
              [&](const Unloaded&) { unloaded = true; },
              [&](const auto&) {},
          },
          effect);
    }
    if (unloaded) {
      // UNLOAD_RESPONSE ends every request and forgets every channel.
      contact_pending_ = false;
      offered_.clear();
      opens_.clear();
      creates_.clear();
      teardowns_.clear();
    }
  }

  void Sent(const VmbusMessage& m) {
    const ChannelMessage bytes = Encode(m);
    if (!ParseChannelMessage(bytes).ok()) Fail("the guest sent bytes that do not parse");
    std::visit(Overloaded{
                   [&](const InitiateContact&) { contact_pending_ = true; },
                   [&](const OpenChannel& o) { opens_.insert(o.child_relid); },
                   [&](const GpadlHeader& h) { creates_.insert({h.child_relid, h.gpadl}); },
                   [&](const GpadlTeardown& t) { teardowns_.insert({t.child_relid, t.gpadl}); },
                   [&](const RelIdReleased& r) {
                     offered_.erase(r.child_relid);
                     std::erase_if(creates_, [&](const auto& k) { return k.first == r.child_relid; });
                     std::erase_if(teardowns_, [&](const auto& k) { return k.first == r.child_relid; });
                     opens_.erase(r.child_relid);
                   },
                   [&](const auto&) {},
               },
               m);
  }

  VmbusClient client_;
  bool contact_pending_ = false;
  std::set<uint32_t> offered_;
  std::set<uint32_t> opens_;
  std::set<std::pair<uint32_t, uint32_t>> creates_;    // (relid, GPADL id)
  std::set<std::pair<uint32_t, uint32_t>> teardowns_;  // (relid, GPADL id)
};

}  // namespace
}  // namespace kmcl

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kmcl::fuzz::FuzzInput in(data, size);
  kmcl::Harness harness;
  harness.Setup(in.Take<uint8_t>());
  for (int steps = 0; in.remaining() > 0 && steps < 128; ++steps) harness.Step(in);
  return 0;
}
