// kmcl_core/control/control_plane_loopback.h: a VmbusServer (host) and VmbusClients
// (guest, one per VTL) exchanging real encoded messages through a loopback
// pump, for synchronous control-plane tests.
//
// Threading: thread-compatible, like the state machines it drives; tests
// use it from one thread.
#ifndef KMCLD_KMCL_CORE_CONTROL_CONTROL_PLANE_LOOPBACK_H_
#define KMCLD_KMCL_CORE_CONTROL_CONTROL_PLANE_LOOPBACK_H_

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kmcl_core/control/vmbus_client.h"
#include "kmcl_core/control/vmbus_server.h"
#include "kmcl_core/memory/guest_memory.h"
#include "kmcl_core/wire/vmbus_wire.h"

namespace kmcl {

// Guest memory of the loopback partition, in pages.
inline constexpr uint64_t kGuestPages = 2048;

class Loopback {
 public:
  explicit Loopback(std::set<uint8_t> vtls = {0}, uint32_t server_max = wire::kVersionCopper,
                    uint32_t client_max = wire::kVersionCopper)
      : memory_(*GuestMemory::Create(kGuestPages * 4096)),
        table_(*memory_),
        server_(table_, memory_->page_count(), vtls, server_max) {
    for (uint8_t vtl : vtls) clients_.emplace(vtl, VmbusClient(vtl, client_max));
  }

  // Delivers messages both ways until none are left; keeps other effects.
  void Pump() {
    for (int round = 0; round < 1000; ++round) {
      bool moved = false;
      for (ServerEffect& e : server_.TakeEffects()) {
        if (auto* send = std::get_if<SendToGuest>(&e)) {
          host_to_guest_.push_back(MessageName(send->message));
          client(send->vtl).HandleHostMessage(Encode(send->message));
          moved = true;
        } else {
          host_.push_back(std::move(e));
        }
      }
      for (auto& [vtl, c] : clients_) {
        for (ClientEffect& e : c.TakeEffects()) {
          if (auto* send = std::get_if<SendToHost>(&e)) {
            server_.HandleGuestMessage(vtl, Encode(send->message));
            moved = true;
          } else {
            guest_[vtl].push_back(std::move(e));
          }
        }
      }
      if (!moved) return;
    }
    ADD_FAILURE() << "control plane did not settle";
  }

  // Removes and returns the host (or guest) effects of type T.
  template <typename T>
  std::vector<T> Host() {
    return Extract<T>(host_);
  }
  template <typename T>
  std::vector<T> Guest(uint8_t vtl = 0) {
    return Extract<T>(guest_[vtl]);
  }

  void Connect() {
    for (auto& [vtl, c] : clients_) c.Connect();
    Pump();
  }

  OfferHandle Offer(uint8_t vtl = 0, const char* type = "f8615163-df3e-46c5-913f-f2d2f965ed0e") {
    ServerOffer offer;
    offer.interface_type = *Guid::Parse(type);
    offer.interface_instance = Guid::Random();
    offer.target_vtl = vtl;
    auto handle = server_.Offer(offer);
    EXPECT_TRUE(handle.ok()) << handle.status();
    Pump();
    return *handle;
  }

  // Allocates guest pages and creates a GPADL over them on `relid`.
  uint32_t CreateGpadl(uint32_t relid, uint32_t pages, uint8_t vtl = 0) {
    auto pfns = *memory_->AllocatePages(pages);
    std::vector<GpaRange> ranges = {{pages * 4096, 0, pfns}};
    uint32_t id = table_.AllocateId();
    while (assigned_.contains(id)) id = table_.AllocateId();
    assigned_.insert(id);
    EXPECT_TRUE(client(vtl).CreateGpadl(relid, id, ranges).ok());
    Pump();
    return id;
  }

  // Ring GPADL + OPENCHANNEL; the host side is left in OpenRequested.
  uint32_t StartOpen(uint32_t relid, uint8_t vtl = 0) {
    uint32_t ring = CreateGpadl(relid, 8, vtl);
    auto created = Guest<GpadlCreateCompleted>(vtl);
    EXPECT_EQ(created.size(), 1u);
    OpenParams p;
    p.ring_gpadl_id = ring;
    p.downstream_page_offset = 4;
    EXPECT_TRUE(client(vtl).Open(relid, p).ok());
    Pump();
    return ring;
  }

  VmbusClient& client(uint8_t vtl) { return clients_.at(vtl); }
  VmbusServer& server() { return server_; }
  GpadlTable& table() { return table_; }
  std::vector<std::string>& host_to_guest() { return host_to_guest_; }

 private:
  template <typename T, typename E>
  static std::vector<T> Extract(std::vector<E>& effects) {
    std::vector<T> out;
    for (auto it = effects.begin(); it != effects.end();) {
      if (auto* t = std::get_if<T>(&*it)) {
        out.push_back(std::move(*t));
        it = effects.erase(it);
      } else {
        ++it;
      }
    }
    return out;
  }

  std::unique_ptr<GuestMemory> memory_;
  GpadlTable table_;
  VmbusServer server_;
  std::map<uint8_t, VmbusClient> clients_;
  std::vector<ServerEffect> host_;
  std::map<uint8_t, std::vector<ClientEffect>> guest_;
  std::vector<std::string> host_to_guest_;
  std::set<uint32_t> assigned_;
};

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_CONTROL_CONTROL_PLANE_LOOPBACK_H_
