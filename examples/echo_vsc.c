/* examples/echo_vsc.c: the echo VSC (see echo_vsp.h). Only kmcl_api.h. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "examples/echo_vsp.h"

struct _ECHO_VSC {
  KMCL_CLIENT_INTERFACE_V1 Kmcl;
  VMBCHANNEL Channel;
  pthread_mutex_t Lock;
  pthread_cond_t Changed;
  int Running;
  UINT64 InFlight;
  atomic_ullong Completions;
  atomic_ullong Mismatches;
  UINT32 PayloadBytes;
};

/* The packet's pointer holds the sequence number it carried. */
static VOID EchoVscCompletion(VMBPACKET Packet, NTSTATUS Status, PVOID Buffer, UINT32 BufferLength) {
  VMBCHANNEL channel = VmbPacketGetChannel(Packet);
  ECHO_VSC* vsc = (ECHO_VSC*)VmbChannelGetPointer(channel);
  UINT64 sequence = (UINT64)(ULONG_PTR)vsc->Kmcl.VmbPacketGetPointer(Packet);
  UINT64 echoed = 0;
  if (!NT_SUCCESS(Status) || BufferLength < vsc->PayloadBytes || BufferLength < sizeof(echoed)) {
    atomic_fetch_add(&vsc->Mismatches, 1);
  } else {
    memcpy(&echoed, Buffer, sizeof(echoed));
    if (echoed != sequence) atomic_fetch_add(&vsc->Mismatches, 1);
  }
  atomic_fetch_add(&vsc->Completions, 1);
  vsc->Kmcl.VmbPacketFree(Packet);
  pthread_mutex_lock(&vsc->Lock);
  vsc->InFlight--;
  pthread_cond_broadcast(&vsc->Changed);
  pthread_mutex_unlock(&vsc->Lock);
}

static VOID EchoVscPostStarted(VMBCHANNEL Channel) {
  ECHO_VSC* vsc = (ECHO_VSC*)VmbChannelGetPointer(Channel);
  pthread_mutex_lock(&vsc->Lock);
  vsc->Running = 1;
  pthread_cond_broadcast(&vsc->Changed);
  pthread_mutex_unlock(&vsc->Lock);
}

static VOID EchoVscSuspend(VMBCHANNEL Channel) {
  ECHO_VSC* vsc = (ECHO_VSC*)VmbChannelGetPointer(Channel);
  pthread_mutex_lock(&vsc->Lock);
  vsc->Running = 0;
  pthread_cond_broadcast(&vsc->Changed);
  pthread_mutex_unlock(&vsc->Lock);
}

static VOID EchoVscProcessPacket(VMBCHANNEL Channel, VMBPACKETCOMPLETION Packet, PVOID Buffer,
                                 UINT32 BufferLength, UINT32 Flags) {
  ECHO_VSC* vsc = (ECHO_VSC*)VmbChannelGetPointer(Channel);
  (void)Buffer;
  (void)BufferLength;
  (void)Flags;
  vsc->Kmcl.VmbChannelPacketComplete(Packet, NULL, 0);
}

static void Deadline(struct timespec* ts, UINT32 ms) {
  clock_gettime(CLOCK_REALTIME, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

NTSTATUS EchoVscCreate(UINT64 VmbusHandle, UINT32 TimeoutMs, ECHO_VSC** Vsc) {
  VMB_CHANNEL_STATE_CHANGE_CALLBACKS callbacks;
  struct timespec deadline;
  NTSTATUS status;
  ECHO_VSC* vsc = (ECHO_VSC*)calloc(1, sizeof(*vsc));
  if (vsc == NULL) return STATUS_INSUFFICIENT_RESOURCES;
  pthread_mutex_init(&vsc->Lock, NULL);
  pthread_cond_init(&vsc->Changed, NULL);
  status = KmclQueryInterface(NULL, &KMCL_CLIENT_INTERFACE_TYPE, (PINTERFACE)&vsc->Kmcl,
                              sizeof(vsc->Kmcl), KMCL_CLIENT_INTERFACE_VERSION_V1, NULL);
  if (!NT_SUCCESS(status)) goto fail;
  status = vsc->Kmcl.VmbChannelAllocate(KmclGetVmbusDevice(VmbusHandle, 0), FALSE, &vsc->Channel);
  if (!NT_SUCCESS(status)) goto fail;
  vsc->Kmcl.VmbChannelSetPointer(vsc->Channel, vsc);
  VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT(&callbacks);
  callbacks.EvtChannelPostStarted = EchoVscPostStarted;
  callbacks.EvtChannelSuspend = EchoVscSuspend;
  status = vsc->Kmcl.VmbChannelInitSetStateChangeCallbacks(vsc->Channel, &callbacks);
  if (NT_SUCCESS(status)) {
    status = vsc->Kmcl.VmbChannelInitSetProcessPacketCallbacks(vsc->Channel, EchoVscProcessPacket, NULL);
  }
  if (NT_SUCCESS(status)) status = vsc->Kmcl.VmbClientChannelInitSetRingBufferPageCount(vsc->Channel, 64, 64);
  if (NT_SUCCESS(status)) {
    status = vsc->Kmcl.VmbClientChannelInitSetTargetPnp(vsc->Channel, &ECHO_INTERFACE_TYPE, NULL, NULL);
  }
  if (NT_SUCCESS(status)) status = vsc->Kmcl.VmbChannelEnable(vsc->Channel);
  if (!NT_SUCCESS(status)) goto fail;
  Deadline(&deadline, TimeoutMs);
  pthread_mutex_lock(&vsc->Lock);
  while (!vsc->Running) {
    if (pthread_cond_timedwait(&vsc->Changed, &vsc->Lock, &deadline) != 0) break;
  }
  status = vsc->Running ? STATUS_SUCCESS : STATUS_TIMEOUT;
  pthread_mutex_unlock(&vsc->Lock);
  if (!NT_SUCCESS(status)) goto fail;
  *Vsc = vsc;
  return STATUS_SUCCESS;
fail:
  if (vsc->Channel != NULL) {
    vsc->Kmcl.VmbChannelDisable(vsc->Channel);
    vsc->Kmcl.VmbChannelCleanup(vsc->Channel);
  }
  free(vsc);
  return status;
}

UINT64 EchoVscRun(ECHO_VSC* Vsc, UINT64 Count, UINT32 PayloadBytes, UINT32 Window) {
  unsigned char payload[4096];
  UINT64 sent = 0;
  UINT64 failed_sends = 0;
  if (PayloadBytes < sizeof(UINT64)) PayloadBytes = sizeof(UINT64);
  if (PayloadBytes > sizeof(payload)) PayloadBytes = sizeof(payload);
  if (Window == 0) Window = 1;
  Vsc->PayloadBytes = PayloadBytes;
  memset(payload, 0xA5, sizeof(payload));
  while (sent < Count) {
    VMBPACKET packet;
    pthread_mutex_lock(&Vsc->Lock);
    while (Vsc->InFlight >= Window) pthread_cond_wait(&Vsc->Changed, &Vsc->Lock);
    Vsc->InFlight++;
    pthread_mutex_unlock(&Vsc->Lock);
    packet = Vsc->Kmcl.VmbPacketAllocate(Vsc->Channel);
    Vsc->Kmcl.VmbPacketSetPointer(packet, (PVOID)(ULONG_PTR)sent);
    Vsc->Kmcl.VmbPacketSetCompletionRoutine(packet, EchoVscCompletion);
    memcpy(payload, &sent, sizeof(sent));
    if (!NT_SUCCESS(Vsc->Kmcl.VmbPacketSend(packet, payload, PayloadBytes, NULL,
                                            VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION))) {
      Vsc->Kmcl.VmbPacketFree(packet);
      failed_sends++;
      pthread_mutex_lock(&Vsc->Lock);
      Vsc->InFlight--;
      pthread_mutex_unlock(&Vsc->Lock);
    }
    sent++;
  }
  pthread_mutex_lock(&Vsc->Lock);
  while (Vsc->InFlight > 0) pthread_cond_wait(&Vsc->Changed, &Vsc->Lock);
  pthread_mutex_unlock(&Vsc->Lock);
  return atomic_load(&Vsc->Mismatches) + failed_sends;
}

UINT64 EchoVscCompletions(ECHO_VSC* Vsc) { return atomic_load(&Vsc->Completions); }

VOID EchoVscDestroy(ECHO_VSC* Vsc) {
  Vsc->Kmcl.VmbChannelDisable(Vsc->Channel);
  Vsc->Kmcl.VmbChannelCleanup(Vsc->Channel);
  pthread_mutex_destroy(&Vsc->Lock);
  pthread_cond_destroy(&Vsc->Changed);
  free(Vsc);
}
