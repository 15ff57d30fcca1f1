/* examples/echo_vsp.c: the echo VSP (see echo_vsp.h). Only kmcl_api.h. */
#include <stdatomic.h>
#include <stdlib.h>

#include "examples/echo_vsp.h"

const GUID ECHO_INTERFACE_TYPE = {0x6c0d2a1e, 0x77b3, 0x4c8e, {0x9f, 0x10, 0x45, 0x43, 0x48, 0x4f, 0x56, 0x53}};

/* The channel's name in kmcld's diagnostics and metrics. */
static WCHAR kEchoName[] = {'e', 'c', 'h', 'o'};
static const UNICODE_STRING kEchoFriendlyName = {sizeof(kEchoName), sizeof(kEchoName), kEchoName};

struct _ECHO_VSP {
  KMCL_SERVER_INTERFACE_V1 Kmcl;
  VMBCHANNEL Channel;
  atomic_ullong Echoed;
};

static VOID EchoVspProcessPacket(VMBCHANNEL Channel, VMBPACKETCOMPLETION Packet, PVOID Buffer,
                                 UINT32 BufferLength, UINT32 Flags) {
  ECHO_VSP* vsp = (ECHO_VSP*)VmbChannelGetPointer(Channel);
  (void)Flags;
  atomic_fetch_add(&vsp->Echoed, 1);
  /* The completion carries the request's bytes back. */
  vsp->Kmcl.VmbChannelPacketComplete(Packet, Buffer, BufferLength);
}

NTSTATUS EchoVspCreate(UINT64 VmbusHandle, const GUID* InterfaceInstance, ECHO_VSP** Vsp) {
  NTSTATUS status;
  HANDLE kernel_handle;
  ECHO_VSP* vsp = (ECHO_VSP*)calloc(1, sizeof(*vsp));
  if (vsp == NULL) return STATUS_INSUFFICIENT_RESOURCES;
  status = KmclQueryInterface(NULL, &KMCL_SERVER_INTERFACE_TYPE, (PINTERFACE)&vsp->Kmcl,
                              sizeof(vsp->Kmcl), KMCL_SERVER_INTERFACE_VERSION_V1, NULL);
  if (!NT_SUCCESS(status)) goto fail;
  status = vsp->Kmcl.VmbChannelAllocate(KmclGetVmbusDevice(VmbusHandle, 0), TRUE, &vsp->Channel);
  if (!NT_SUCCESS(status)) goto fail;
  vsp->Kmcl.VmbChannelSetPointer(vsp->Channel, vsp);
  status = vsp->Kmcl.VmbConvertVmbusHandleToKernelHandle((HANDLE)(ULONG_PTR)VmbusHandle, &kernel_handle);
  if (NT_SUCCESS(status)) status = vsp->Kmcl.VmbServerChannelInitSetVmbusHandle(vsp->Channel, kernel_handle);
  if (NT_SUCCESS(status)) {
    status = vsp->Kmcl.VmbServerChannelInitSetTargetInterfaceId(vsp->Channel, ECHO_INTERFACE_TYPE,
                                                                *InterfaceInstance);
  }
  if (NT_SUCCESS(status)) status = vsp->Kmcl.VmbChannelInitSetMaximumPacketSize(vsp->Channel, 4096);
  if (NT_SUCCESS(status)) status = vsp->Kmcl.VmbChannelInitSetFriendlyName(vsp->Channel, &kEchoFriendlyName);
  if (NT_SUCCESS(status)) {
    status = vsp->Kmcl.VmbChannelInitSetProcessPacketCallbacks(vsp->Channel, EchoVspProcessPacket, NULL);
  }
  if (NT_SUCCESS(status)) status = vsp->Kmcl.VmbChannelEnable(vsp->Channel);
  if (!NT_SUCCESS(status)) goto fail;
  vsp->Kmcl.VmbChannelStart(vsp->Channel);
  *Vsp = vsp;
  return STATUS_SUCCESS;
fail:
  if (vsp->Channel != NULL) vsp->Kmcl.VmbChannelCleanup(vsp->Channel);
  free(vsp);
  return status;
}

UINT64 EchoVspPacketsEchoed(ECHO_VSP* Vsp) { return atomic_load(&Vsp->Echoed); }

VOID EchoVspDestroy(ECHO_VSP* Vsp) {
  Vsp->Kmcl.VmbChannelDisable(Vsp->Channel);
  Vsp->Kmcl.VmbChannelCleanup(Vsp->Channel);
  free(Vsp);
}
