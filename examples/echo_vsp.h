/* examples/echo_vsp.h: an echo VSP and an echo VSC written only against the
 * KMCL compatibility surface (kmcl_core/kmcl/kmcl_api.h), in plain C, the way a
 * Windows driver would use KMCL: query the function table, allocate a
 * channel, configure it with the Init setters, enable it, and handle packets
 * in EvtVmbChannelProcessPacket.
 *
 * The VSP completes every packet with the packet's own bytes as the
 * completion payload (and counts them). The VSC sends numbered packets with
 * WAIT_FOR_COMPLETION, checks each completion against what it sent, and
 * counts mismatches.
 */
#ifndef KMCLD_EXAMPLES_ECHO_VSP_H_
#define KMCLD_EXAMPLES_ECHO_VSP_H_

#include "kmcl_core/kmcl/kmcl_api.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The interface type both examples use. */
extern const GUID ECHO_INTERFACE_TYPE;

typedef struct _ECHO_VSP ECHO_VSP;
/* Offers an echo channel in the partition named by VmbusHandle (its user
 * VMBus handle) and starts it. */
NTSTATUS EchoVspCreate(UINT64 VmbusHandle, const GUID* InterfaceInstance, ECHO_VSP** Vsp);
UINT64 EchoVspPacketsEchoed(ECHO_VSP* Vsp);
/* Disables (rescinds) and cleans up. */
VOID EchoVspDestroy(ECHO_VSP* Vsp);

typedef struct _ECHO_VSC ECHO_VSC;
/* Opens the echo offer in the partition's guest at VTL 0; returns once
 * EvtVmbChannelPostStarted has run (or STATUS_TIMEOUT after TimeoutMs). */
NTSTATUS EchoVscCreate(UINT64 VmbusHandle, UINT32 TimeoutMs, ECHO_VSC** Vsc);
/* Sends Count packets of PayloadBytes with WAIT_FOR_COMPLETION, keeping at
 * most Window in flight, and waits for every completion. Returns the number
 * of completions whose payload did not match what was sent. */
UINT64 EchoVscRun(ECHO_VSC* Vsc, UINT64 Count, UINT32 PayloadBytes, UINT32 Window);
UINT64 EchoVscCompletions(ECHO_VSC* Vsc);
VOID EchoVscDestroy(ECHO_VSC* Vsc);

#ifdef __cplusplus
}
#endif

#endif /* KMCLD_EXAMPLES_ECHO_VSP_H_ */
