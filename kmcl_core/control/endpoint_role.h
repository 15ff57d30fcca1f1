// kmcl_core/control/endpoint_role.h: which side of a VMBus channel an endpoint is.
//
// In VMBus terms the host side runs the VSP and is the server (it offers
// the channel); the guest side runs the VSC and is the client (it claims an
// offer, allocates the rings and opens). KMCL passes this as the BOOLEAN
// IsServer of VmbChannelAllocate; kmcl_core carries it as this enum so that
// a call site says which side it means (Channel::Allocate(p,
// EndpointRole::kHost)) instead of a bare `true`.
//
// Used by the control plane's EndpointStateMachine, the bus's RingLink and
// the runtime's Channel. The saved-state format keeps its `is_server` bool
// (docs/saved-state.md); IsHost/RoleFromIsServer convert at that edge.
#ifndef KMCLD_KMCL_CORE_CONTROL_ENDPOINT_ROLE_H_
#define KMCLD_KMCL_CORE_CONTROL_ENDPOINT_ROLE_H_

namespace kmcl {

enum class EndpointRole {
  kHost,   // VSP, VMBus server: offers the channel
  kGuest,  // VSC, VMBus client: opens an offer
};

constexpr bool IsHost(EndpointRole role) { return role == EndpointRole::kHost; }
constexpr EndpointRole RoleFromIsServer(bool is_server) {
  return is_server ? EndpointRole::kHost : EndpointRole::kGuest;
}
// "host" or "guest", for messages.
constexpr const char* EndpointRoleName(EndpointRole role) {
  return IsHost(role) ? "host" : "guest";
}

}  // namespace kmcl

#endif  // KMCLD_KMCL_CORE_CONTROL_ENDPOINT_ROLE_H_
