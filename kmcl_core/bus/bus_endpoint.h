// kmcl_core/bus/bus_endpoint.h: what the emulated VMBus (Partition) knows of an
// endpoint attached to it: the control-plane events it delivers and the ring
// interrupt. The KMCL runtime's Channel implements it; tests implement it to
// drive a Partition synchronously, without channel threads.
//
// The bus depends on this interface only, never on the runtime above it (as
// OpenVMM's vmbus_server reaches its channels through traits rather than the
// device runtime; see openvmm vm/devices/vmbus/vmbus_server).
//
// Threading: the Partition calls every On*() method with its own lock held,
// so an implementation must only record the event and queue work: it must
// not call back into the Partition or block. NotifyIo() comes from the peer
// endpoint's thread through RingLink, without the partition lock.
#ifndef KMCLD_KMCL_CORE_BUS_BUS_ENDPOINT_H_
#define KMCLD_KMCL_CORE_BUS_BUS_ENDPOINT_H_

#include <cstdint>

#include "kmcl_core/base/ntstatus.h"
#include "kmcl_core/control/vmbus_server.h"
#include "kmcl_core/wire/vmbus_messages.h"

namespace kmcl {

class BusEndpoint {
 public:
  virtual ~BusEndpoint() = default;

  // ---- Server (host) endpoints ----
  // The offer got `handle`. Called before the offer reaches any guest, so
  // the endpoint knows its relid before an OPENCHANNEL for it can arrive.
  virtual void OnOffered(const OfferHandle& handle) = 0;
  // The guest sent OPENCHANNEL; answer with Partition::AcceptOpen.
  virtual void OnOpenRequested(const OpenChannel& open) = 0;
  // The guest gave up an open it had requested (it closed or went away).
  virtual void OnOpenCancelled() = 0;
  // The relid was released and belongs to the next offer now.
  virtual void OnReleased() = 0;

  // ---- Client (guest) endpoints ----
  // Partition::Connect claimed `offer` (relid `relid`) for this endpoint.
  virtual void OnOfferMatched(uint32_t relid, const OfferChannel& offer) = 0;
  // The host answered OPENCHANNEL (OPENCHANNEL_RESULT's status).
  virtual void OnOpenCompleted(NTSTATUS status) = 0;

  // ---- Both ----
  // Server: the guest closed the channel. Client: the host rescinded it.
  virtual void OnPeerClosed() = 0;
  // A ring interrupt from the peer endpoint.
  virtual void NotifyIo() = 0;
};

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_BUS_BUS_ENDPOINT_H_
