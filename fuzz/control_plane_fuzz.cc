// libFuzzer target: the VMBus control plane, a VmbusServer (host) and a
// VmbusClient (guest, VTL 0), driven by arbitrary sequences of host calls,
// guest calls and message deliveries.
//
// Messages in flight wait in one FIFO queue per direction, so the input
// decides what happens between a request and its answer: rescinds racing
// GPADL creation, GPADL_HEADER and its bodies split by host events, unloads,
// save/restore at any point. The first byte picks the guest: a compliant one
// (only VmbusClient calls) or a hostile one that also injects arbitrary
// guest-to-host messages.
//
// After every step the target checks (docs/control-plane.md):
//   - both state machines' CheckInvariants (no entry owned by a released
//     relid or by a connection that unloaded);
//   - no reply without a request: every GPADL_CREATED, GPADL_TORNDOWN,
//     OPENCHANNEL_RESULT, VERSION_RESPONSE, ALLOFFERS_DELIVERED and
//     UNLOAD_RESPONSE answers a request the host received and has not
//     answered yet, and whose relid (or connection) is still alive;
//   - compliant guest: the client never sees a protocol error.
// At the end a compliant run settles (the host endpoint accepts opens,
// completes closes and unmaps everything; all messages are delivered) and
// then every request must have been answered exactly once.
//
// Threading: single-threaded, like the state machines.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "fuzz/fuzz_input.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "kmcl_core/control/vmbus_client.h"
#include "kmcl_core/control/vmbus_server.h"
#include "kmcl_core/memory/gpadl_table.h"
#include "kmcl_core/memory/guest_memory.h"
#include "kmcl_core/saved/saved_state.pb.h"
#include "kmcl_core/wire/gpadl_messages.h"
#include "kmcl_core/wire/vmbus_messages.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl {
namespace {

constexpr uint64_t kPages = 64;
constexpr uint32_t kMaxVersion = wire::kVersionCopper;

[[noreturn]] void Fail(const char* what, uint64_t a = 0, uint64_t b = 0) {
  std::fprintf(stderr, "control_plane_fuzz: %s (%llu, %llu)\n", what,
               static_cast<unsigned long long>(a), static_cast<unsigned long long>(b));
  std::abort();
}

// Map fields make plain serialization order-dependent.
std::string Bytes(const google::protobuf::MessageLite& m) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    m.SerializeToCodedStream(&coded);
  }
  return out;
}

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

// The requests the host received and has not answered, keyed so that an
// answer names exactly one of them.
class Requests {
 public:
  void Received(const VmbusMessage& m) {
    std::visit(Overloaded{
                   [&](const InitiateContact&) { ++contacts_; },
                   [&](const RequestOffers&) { ++offer_requests_; },
                   [&](const GpadlHeader& h) { ++creates_[{h.child_relid, h.gpadl}]; },
                   [&](const GpadlTeardown& t) {
                     // A teardown of a GPADL still being assembled abandons it.
                     creates_.erase({t.child_relid, t.gpadl});
                     ++teardowns_[{t.child_relid, t.gpadl}];
                   },
                   [&](const OpenChannel& o) { ++opens_[{o.child_relid, o.open_id}]; },
                   [&](const Unload&) { ++unloads_; },
                   [&](const auto&) {},
               },
               m);
  }

  // A host-to-guest message: an answer must match an open request.
  void Sent(const VmbusMessage& m) {
    std::visit(Overloaded{
                   [&](const VersionResponse&) { Take(contacts_, "VERSION_RESPONSE"); },
                   [&](const AllOffersDelivered&) { Take(offer_requests_, "ALLOFFERS"); },
                   [&](const GpadlCreated& c) {
                     Take(creates_, {c.child_relid, c.gpadl}, "GPADL_CREATED");
                   },
                   [&](const GpadlTorndown& t) { TakeTeardown(t.gpadl); },
                   [&](const OpenResult& r) {
                     Take(opens_, {r.child_relid, r.open_id}, "OPENCHANNEL_RESULT");
                   },
                   [&](const UnloadResponse&) { Take(unloads_, "UNLOAD_RESPONSE"); },
                   [&](const auto&) {},
               },
               m);
  }

  // The host released `relid`: nothing on it is answered any more.
  void Released(uint32_t relid) {
    for (auto* table : {&creates_, &teardowns_, &opens_}) {
      std::erase_if(*table, [&](const auto& e) { return e.first.first == relid; });
    }
  }
  // The connection unloaded: only UNLOAD itself is still answered.
  void Unloaded() {
    creates_.clear();
    teardowns_.clear();
    opens_.clear();
    offer_requests_ = 0;
  }

  void ExpectNoneOpen() const {
    if (contacts_ || offer_requests_ || unloads_) {
      Fail("request never answered", contacts_, unloads_);
    }
    for (const auto* table : {&creates_, &teardowns_, &opens_}) {
      if (!table->empty()) {
        Fail("request never answered", table->begin()->first.first, table->begin()->first.second);
      }
    }
  }

 private:
  using Key = std::pair<uint32_t, uint32_t>;
  static void Take(uint32_t& count, const char* what) {
    if (count == 0) Fail(what);
    --count;
  }
  static void Take(std::map<Key, uint32_t>& table, Key key, const char* what) {
    auto it = table.find(key);
    if (it == table.end()) Fail(what, key.first, key.second);
    if (--it->second == 0) table.erase(it);
  }
  void TakeTeardown(uint32_t gpadl) {
    for (auto it = teardowns_.begin(); it != teardowns_.end(); ++it) {
      if (it->first.second != gpadl) continue;
      if (--it->second == 0) teardowns_.erase(it);
      return;
    }
    Fail("GPADL_TORNDOWN nobody asked for", gpadl);
  }

  uint32_t contacts_ = 0, offer_requests_ = 0, unloads_ = 0;
  std::map<Key, uint32_t> creates_, teardowns_, opens_;
};

class Harness {
 public:
  explicit Harness(bool hostile)
      : hostile_(hostile),
        memory_(*GuestMemory::Create(kPages * wire::kPageSize)),
        table_(*memory_),
        server_(std::make_unique<VmbusServer>(table_, kPages, std::set<uint8_t>{0}, kMaxVersion)),
        client_(std::make_unique<VmbusClient>(0, kMaxVersion)) {}

  void Step(fuzz::FuzzInput& in) {
    const uint8_t op = in.Take<uint8_t>() % (hostile_ ? 18 : 17);
    const uint32_t relid = 1 + in.Take<uint8_t>() % 5;
    const uint32_t gpadl = 1 + in.Take<uint8_t>() % 6;
    const uint8_t arg = in.Take<uint8_t>();
    switch (op) {
      case 0: client_->Connect(); break;
      case 1: {
        ServerOffer offer;
        offer.interface_instance.data1 = arg;
        if (server_->Channels().size() < 6) (void)server_->Offer(offer);
        break;
      }
      case 2: (void)server_->Revoke(relid); break;
      case 3:
        (void)server_->AcceptOpen(relid, arg & 1 ? kStatusSuccess : kStatusUnsuccessful);
        break;
      case 4: (void)server_->CloseComplete(relid); break;
      case 5: Map(gpadl); break;
      case 6: Unmap(gpadl); break;
      case 7: {
        const uint32_t count = 1 + arg % 40;  // more than 26 PFNs needs GPADL_BODY
        GpaRange r{count * 4096, 0, {}};
        for (uint32_t i = 0; i < count; ++i) r.pfns.push_back((arg + i) % kPages);
        (void)client_->CreateGpadl(relid, gpadl, std::vector<GpaRange>{r});
        break;
      }
      case 8: (void)client_->TeardownGpadl(relid, gpadl); break;
      case 9: {
        OpenParams p;
        p.ring_gpadl_id = gpadl;
        p.downstream_page_offset = 1 + arg % 3;
        (void)client_->Open(relid, p);
        break;
      }
      case 10: (void)client_->Close(relid); break;
      case 11: (void)client_->Release(relid); break;
      case 12: client_->Unload(); break;
      case 13: DeliverToHost(); break;
      case 14: DeliverToGuest(); break;
      case 15: DeliverAll(); break;
      case 16: SaveAndRestore(); break;
      case 17: to_host_.push_back(Hostile(in, relid, gpadl, arg)); break;
    }
    Collect();
    Check();
  }

  // The host endpoints finish everything they were asked; every message
  // arrives. Then nothing may be left unanswered.
  void Settle() {
    for (int round = 0; round < 64; ++round) {
      DeliverAll();
      for (const ServerChannelInfo& c : server_->Channels()) {
        if (c.state == ServerChannelState::kOpening) (void)server_->AcceptOpen(c.relid, 0);
        if (c.state == ServerChannelState::kClosing ||
            c.state == ServerChannelState::kClosingReopen) {
          (void)server_->CloseComplete(c.relid);
        }
      }
      while (!leases_.empty()) Unmap(leases_.begin()->first);
      Collect();
      Check();
      if (to_host_.empty() && to_guest_.empty()) break;
    }
    if (!to_host_.empty() || !to_guest_.empty()) Fail("the control plane did not settle");
    requests_.ExpectNoneOpen();
    if (client_->unloading()) Fail("UNLOAD never answered");
    for (const ClientChannelInfo& c : client_->Channels()) {
      if (c.release_pending) Fail("RELID_RELEASED held forever", c.offer.child_relid);
      if (c.state == ClientChannelState::kOpening) Fail("open never answered", c.offer.child_relid);
      for (const auto& [id, state] : c.gpadls) {
        if (state != ClientGpadlState::kCreated) Fail("GPADL request never answered", id);
      }
    }
  }

  bool hostile() const { return hostile_; }

 private:
  void Map(uint32_t gpadl) {
    absl::StatusOr<GpadlLease> lease = table_.Map(gpadl, false);
    if (lease.ok()) leases_[gpadl] = lease->lease_id;
  }
  void Unmap(uint32_t gpadl) {
    auto it = leases_.find(gpadl);
    if (it == leases_.end()) return;
    absl::StatusOr<UnmapResult> r = table_.Unmap(it->second);
    leases_.erase(it);
    if (!r.ok()) Fail("unmap of a live lease failed", gpadl);
    server_->GpadlUnmapped(*r);
  }

  void DeliverToHost() {
    if (to_host_.empty()) return;
    std::vector<uint8_t> bytes = std::move(to_host_.front());
    to_host_.pop_front();
    absl::StatusOr<VmbusMessage> m = ParseChannelMessage(bytes);
    const bool was_connected = server_->ConnectedVersion(0).has_value();
    server_->HandleGuestMessage(0, bytes);
    if (!m.ok()) return;
    if (std::holds_alternative<Unload>(*m)) {
      // An accepted UNLOAD ends every other request; a refused one (not
      // connected) is not answered at all.
      if (!was_connected || server_->ConnectedVersion(0).has_value()) return;
      requests_.Unloaded();
    }
    requests_.Received(*m);
  }
  void DeliverToGuest() {
    if (to_guest_.empty()) return;
    std::vector<uint8_t> bytes = std::move(to_guest_.front());
    to_guest_.pop_front();
    client_->HandleHostMessage(bytes);
  }
  void DeliverAll() {
    for (int i = 0; i < 4096 && !(to_host_.empty() && to_guest_.empty()); ++i) {
      DeliverToHost();
      Collect();
      DeliverToGuest();
      Collect();
    }
  }

  // Takes both sides' effects: messages join their queues, releases and
  // protocol errors update the model.
  void Collect() {
    for (ServerEffect& e : server_->TakeEffects()) {
      if (auto* send = std::get_if<SendToGuest>(&e)) {
        to_guest_.push_back(Encode(send->message));
      }
      // A reply is checked where the host produced it, in order with the
      // releases of the same step.
      std::visit(Overloaded{
                     [&](SendToGuest& s) { requests_.Sent(s.message); },
                     [&](ChannelReleased& r) { requests_.Released(r.relid); },
                     [&](auto&) {},
                 },
                 e);
    }
    for (ClientEffect& e : client_->TakeEffects()) {
      if (auto* send = std::get_if<SendToHost>(&e)) to_host_.push_back(Encode(send->message));
      if (auto* error = std::get_if<ClientProtocolError>(&e); error != nullptr && !hostile_) {
        std::fprintf(stderr, "control_plane_fuzz: guest: %s\n", error->what.c_str());
        Fail("the host sent the compliant guest something it did not ask for");
      }
    }
  }

  void Check() const {
    if (absl::Status s = server_->CheckInvariants(); !s.ok()) {
      std::fprintf(stderr, "control_plane_fuzz: host: %s\n", s.ToString().c_str());
      Fail("host invariant");
    }
    if (absl::Status s = client_->CheckInvariants(); !s.ok()) {
      std::fprintf(stderr, "control_plane_fuzz: guest: %s\n", s.ToString().c_str());
      Fail("guest invariant");
    }
  }

  // Both state machines go through their saved form; what restores must
  // save to the same bytes again.
  void SaveAndRestore() {
    saved::v1::SavedPartition host;
    server_->Save(host);
    auto server = std::make_unique<VmbusServer>(table_, kPages, std::set<uint8_t>{0}, kMaxVersion);
    if (absl::Status s = server->Restore(host); !s.ok()) {
      std::fprintf(stderr, "control_plane_fuzz: %s\n", s.ToString().c_str());
      Fail("the host's own saved state does not restore");
    }
    saved::v1::SavedPartition again;
    server->Save(again);
    if (Bytes(again) != Bytes(host)) Fail("host save is not stable");
    server_ = std::move(server);
    saved::v1::Client guest;
    client_->Save(guest);
    auto client = std::make_unique<VmbusClient>(0, kMaxVersion);
    if (!client->Restore(guest).ok()) Fail("the guest's own saved state does not restore");
    // A restored client is not in the middle of version negotiation; keep
    // the old one if it was (its answer is still in flight).
    saved::v1::Client check;
    client->Save(check);
    if (Bytes(check) != Bytes(guest)) Fail("guest save is not stable");
    if (!connecting()) client_ = std::move(client);
  }
  bool connecting() const {
    // VERSION_RESPONSE pending: negotiation state is not saved.
    for (const auto& bytes : to_host_) {
      absl::StatusOr<VmbusMessage> m = ParseChannelMessage(bytes);
      if (m.ok() && std::holds_alternative<InitiateContact>(*m)) return true;
    }
    for (const auto& bytes : to_guest_) {
      absl::StatusOr<VmbusMessage> m = ParseChannelMessage(bytes);
      if (m.ok() && std::holds_alternative<VersionResponse>(*m)) return true;
    }
    return false;
  }

  // A guest-to-host message of the input's choosing.
  std::vector<uint8_t> Hostile(fuzz::FuzzInput& in, uint32_t relid, uint32_t gpadl, uint8_t arg) {
    switch (arg % 9) {
      case 0: {
        const uint32_t version = in.Take<uint32_t>();
        const auto vtl = static_cast<uint8_t>(in.Take<uint8_t>() % 3);
        return Encode(InitiateContact{version, 0, 2, vtl});
      }
      case 1: return Encode(RequestOffers{});
      case 2: {
        OpenChannel o;
        o.child_relid = relid;
        o.open_id = in.Take<uint8_t>();
        o.ring_buffer_gpadl = gpadl;
        o.downstream_page_offset = in.Take<uint8_t>() % 10;
        return Encode(o);
      }
      case 3: return Encode(CloseChannel{relid});
      case 4:
      case 5: {
        // One message of a GPADL: the header, or a body, in any order.
        GpaRange r{40 * 4096, 0, {}};
        for (uint64_t i = 0; i < 40; ++i) r.pfns.push_back(i + in.Take<uint8_t>() % 24);
        auto messages = EncodeGpadlMessages(relid, gpadl, std::vector<GpaRange>{r});
        if (!messages.ok()) Fail("encoding a valid GPADL failed");
        return (*messages)[arg % 9 == 4 ? 0 : 1];
      }
      case 6: return Encode(GpadlTeardown{relid, gpadl});
      case 7: return Encode(RelIdReleased{relid});
      default: {
        auto bytes = in.TakeBytes(in.Take<uint8_t>() % 64);
        if (in.Take<uint8_t>() & 1) return Encode(Unload{});
        return {bytes.begin(), bytes.end()};
      }
    }
  }

  const bool hostile_;
  std::unique_ptr<GuestMemory> memory_;
  GpadlTable table_;
  std::unique_ptr<VmbusServer> server_;
  std::unique_ptr<VmbusClient> client_;
  std::deque<std::vector<uint8_t>> to_host_;
  std::deque<std::vector<uint8_t>> to_guest_;
  std::map<uint32_t, uint64_t> leases_;  // by GPADL id
  Requests requests_;
};

}  // namespace
}  // namespace kmcl

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kmcl::fuzz::FuzzInput in(data, size);
  kmcl::Harness harness(/*hostile=*/in.Take<uint8_t>() & 1);
  for (int steps = 0; in.remaining() > 0 && steps < 96; ++steps) harness.Step(in);
  if (!harness.hostile()) harness.Settle();
  return 0;
}
