/* kmcl_core/kmcl/kmcl_api.h: the KMCL compatibility surface.
 *
 * The Windows VMBus Kernel Mode Client Library API (vmbuskernelmodeclientlibapi.h)
 * with its names, C signatures, handle types, NTSTATUS codes, flag values,
 * callback typedefs, VMB_CHANNEL_STATE_CHANGE_CALLBACKS with its INIT helper,
 * MDLs, and the function tables KMCL_CLIENT_INTERFACE_V1 (41 members),
 * KMCL_SERVER_ONLY_METHODS (14) and KMCL_SERVER_INTERFACE_V1 in the
 * documented member order, obtained through KmclQueryInterface (the
 * emulation's WdfFdoQueryForInterface). A VSP or VSC written against KMCL
 * ports with minimal changes: fetch the table, then call through it.
 *
 * Emulation specifics (a driver author would not find these in the WDK):
 * - Devices: a PDEVICE_OBJECT comes from KmclGetVmbusDevice(vmbus_handle, vtl):
 *   the VMBus device of one partition at one VTL. A VSC passes it to
 *   VmbChannelAllocate; a VSP may too (or bind later with
 *   VmbServerChannelInitSetVmbusHandle).
 * - Guest memory: guest drivers run in this process, so their buffers must be
 *   guest memory: KmclAllocateGuestMemory returns such a buffer (its address
 *   is valid for VmbChannelCreateGpadlFromBuffer) and KmclBuildGuestMdl
 *   describes one as an MDL.
 * - GUID values of the interface types and the version numbers are not
 *   public; the values below are this emulation's (docs/kmcl.md).
 * - VmbChannelPacketGetExternalData never returns STATUS_PENDING: emulated
 *   guest pages are always resident.
 *
 * Threading: as documented for KMCL; see kmcl_core/runtime/channel.h for which
 * calls may be made from which callback.
 */
#ifndef KMCLD_KMCL_CORE_KMCL_KMCL_API_H_
#define KMCLD_KMCL_CORE_KMCL_KMCL_API_H_

#include <stddef.h>
#include <stdint.h>

#include "kmcl_core/base/ntstatus_values.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Basic Windows types --------------------------------------------------------- */
typedef uint8_t UINT8, UCHAR, BOOLEAN;
typedef uint16_t UINT16, USHORT, WCHAR;
typedef int16_t CSHORT;
typedef uint32_t UINT32, ULONG;
typedef uint64_t UINT64, ULONG_PTR;
typedef void VOID;
typedef void* PVOID;
typedef void* HANDLE;
typedef HANDLE* PHANDLE;
typedef UINT16* PUINT16;
typedef UINT32* PUINT32;
typedef ULONG* PULONG;
typedef UINT64* PUINT64;
typedef WCHAR* PWSTR;
typedef ULONG_PTR PFN_NUMBER, *PPFN_NUMBER;
#ifndef TRUE
#define TRUE 1
#define FALSE 0
#endif

typedef struct _GUID {
  uint32_t Data1;
  uint16_t Data2;
  uint16_t Data3;
  uint8_t Data4[8];
} GUID;
typedef GUID* LPGUID;
typedef const GUID* LPCGUID;

typedef union _LARGE_INTEGER {
  struct {
    uint32_t LowPart;
    int32_t HighPart;
  } u;
  int64_t QuadPart;
} LARGE_INTEGER, *PLARGE_INTEGER;

typedef struct _UNICODE_STRING {
  USHORT Length;         /* bytes, without a terminator */
  USHORT MaximumLength;  /* bytes */
  PWSTR Buffer;
} UNICODE_STRING, *PUNICODE_STRING;
typedef const UNICODE_STRING* PCUNICODE_STRING;

typedef struct _DEVICE_OBJECT DEVICE_OBJECT, *PDEVICE_OBJECT;
typedef struct WDFDEVICE__* WDFDEVICE;

/* A memory descriptor list: the header, then a PFN_NUMBER per page. */
typedef struct _MDL {
  struct _MDL* Next;
  CSHORT Size;
  CSHORT MdlFlags;
  void* Process;
  PVOID MappedSystemVa;
  PVOID StartVa;
  ULONG ByteCount;
  ULONG ByteOffset;
} MDL, *PMDL;

#define MmGetMdlByteCount(Mdl) ((Mdl)->ByteCount)
#define MmGetMdlByteOffset(Mdl) ((Mdl)->ByteOffset)
#define MmGetMdlPfnArray(Mdl) ((PPFN_NUMBER)((Mdl) + 1))
#define MmGetSystemAddressForMdlSafe(Mdl, Priority) ((Mdl)->MappedSystemVa)

typedef VOID (*PINTERFACE_REFERENCE)(PVOID Context);
typedef VOID (*PINTERFACE_DEREFERENCE)(PVOID Context);
typedef struct _INTERFACE {
  USHORT Size;
  USHORT Version;
  PVOID Context;
  PINTERFACE_REFERENCE InterfaceReference;
  PINTERFACE_DEREFERENCE InterfaceDereference;
} INTERFACE, *PINTERFACE;

/* ---- NTSTATUS values (Windows' ntstatus.h) ------------------------------------------ */
/* NTSTATUS, STATUS_* and NT_SUCCESS come from kmcl_core/base/ntstatus_values.h, the one
 * list the C++ core uses too. */

/* ---- Flags (vmbuskernelmodeclientlibapi.h) --------------------------------------------------- */
#define VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION 0x1
#define VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH 0x2
#define VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER 0x4
#define VMBUS_CHANNEL_FORMAT_FLAGS 0x7
#define VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY 0x1
#define VMBUS_CHANNEL_GPADL_READ_ONLY VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY
#define VMBUS_CHANNEL_GPADL_FLAGS 0x1
#define VMBUS_CHANNEL_INIT_FLAG_IS_PIPE 0x1
#define VMBUS_CHANNEL_INIT_FLAGS 0x1
#define VMBUS_SERVER_CHANNEL_INIT_FLAG_LOOPBACK_OFFER 0x1
#define VMBUS_SERVER_CHANNEL_INIT_FLAG_ENUMERATE_DEVICE_INTERFACE 0x2
#define VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE 0x4
#define VMBUS_SERVER_CHANNEL_INIT_FLAG_FORCE_NEW_CHANNEL 0x8
#define VMBUS_SERVER_CHANNEL_INIT_FLAG_TLNPI_PROVIDER_OFFER 0x10
#define VMBUS_SERVER_CHANNEL_INIT_FLAGS 0x1F
#define VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA 0x1
#define VMBUS_CHANNEL_PROCESS_PACKET_FLAGS 0x1
#define VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY 0x1
#define VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAGS 0x1
#define VMBUS_SERVER_CHANNEL_INIT_MAXIMUM_OFFER_DATA 120

/* ---- Handles ----------------------------------------------------------------------- */
typedef struct VMBCHANNEL__* VMBCHANNEL;
typedef struct VMBPACKET__* VMBPACKET;
typedef struct VMBPACKETCOMPLETION__* VMBPACKETCOMPLETION;

/* ---- Callbacks (EVT_VMB_CHANNEL_*) ------------------------------------------------ */
typedef NTSTATUS EVT_VMB_CHANNEL_OPENED(VMBCHANNEL Channel);
typedef EVT_VMB_CHANNEL_OPENED* PFN_VMB_CHANNEL_OPENED;
typedef VOID EVT_VMB_CHANNEL_CLOSED(VMBCHANNEL Channel);
typedef EVT_VMB_CHANNEL_CLOSED* PFN_VMB_CHANNEL_CLOSED;
typedef VOID EVT_VMB_CHANNEL_SUSPEND(VMBCHANNEL Channel);
typedef EVT_VMB_CHANNEL_SUSPEND* PFN_VMB_CHANNEL_SUSPEND;
typedef VOID EVT_VMB_CHANNEL_STARTED(VMBCHANNEL Channel);
typedef EVT_VMB_CHANNEL_STARTED* PFN_VMB_CHANNEL_STARTED;
typedef VOID EVT_VMB_CHANNEL_POST_STARTED(VMBCHANNEL Channel);
typedef EVT_VMB_CHANNEL_POST_STARTED* PFN_VMB_CHANNEL_POST_STARTED;
typedef VOID EVT_VMB_CHANNEL_PNP_FAILURE(VMBCHANNEL Channel, NTSTATUS FailureStatus);
typedef EVT_VMB_CHANNEL_PNP_FAILURE* PFN_VMB_CHANNEL_PNP_FAILURE;
typedef VOID EVT_VMB_CHANNEL_PROCESS_PACKET(VMBCHANNEL Channel, VMBPACKETCOMPLETION Packet,
                                            PVOID Buffer, UINT32 BufferLength, UINT32 Flags);
typedef EVT_VMB_CHANNEL_PROCESS_PACKET* PFN_VMB_CHANNEL_PROCESS_PACKET;
typedef VOID EVT_VMB_CHANNEL_PROCESSING_COMPLETE(VMBCHANNEL Channel, UINT32 PacketsProcessed);
typedef EVT_VMB_CHANNEL_PROCESSING_COMPLETE* PFN_VMB_CHANNEL_PROCESSING_COMPLETE;
typedef NTSTATUS EVT_VMB_CHANNEL_SAVE_PACKET(VMBCHANNEL Channel, VMBPACKET Packet, PVOID SaveBuf,
                                             UINT32 SaveBufSize, PUINT32 BytesNeeded);
typedef EVT_VMB_CHANNEL_SAVE_PACKET* PFN_VMB_CHANNEL_SAVE_PACKET;
typedef NTSTATUS EVT_VMB_CHANNEL_RESTORE_PACKET(VMBCHANNEL Channel, PVOID LibBuf,
                                                UINT32 LibBufSize, PVOID SaveBuf,
                                                UINT32 SaveBufSize);
typedef EVT_VMB_CHANNEL_RESTORE_PACKET* PFN_VMB_CHANNEL_RESTORE_PACKET;
typedef VOID EVT_VMB_PACKET_COMPLETION_ROUTINE(VMBPACKET Packet, NTSTATUS Status, PVOID Buffer,
                                               UINT32 BufferLength);
typedef EVT_VMB_PACKET_COMPLETION_ROUTINE* PFN_VMB_PACKET_COMPLETION_ROUTINE;

typedef struct _VMB_CHANNEL_STATE_CHANGE_CALLBACKS {
  ULONG Version; /* must be 1 */
  ULONG Size;    /* sizeof(VMB_CHANNEL_STATE_CHANGE_CALLBACKS) */
  PFN_VMB_CHANNEL_OPENED EvtChannelOpened;
  PFN_VMB_CHANNEL_CLOSED EvtChannelClosed;
  PFN_VMB_CHANNEL_SUSPEND EvtChannelSuspend;
  PFN_VMB_CHANNEL_STARTED EvtChannelStarted;
  PFN_VMB_CHANNEL_POST_STARTED EvtChannelPostStarted;
} VMB_CHANNEL_STATE_CHANGE_CALLBACKS, *PVMB_CHANNEL_STATE_CHANGE_CALLBACKS;

static inline VOID VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT(
    PVMB_CHANNEL_STATE_CHANGE_CALLBACKS Callbacks) {
  unsigned char* p = (unsigned char*)Callbacks;
  for (size_t i = 0; i < sizeof(*Callbacks); ++i) p[i] = 0;
  Callbacks->Version = 1;
  Callbacks->Size = sizeof(*Callbacks);
}

/* ---- Functions ----------------------------------------------------------------------- */
#define KMCL_FUNCTIONS(X)                                                                     \
  X(NTSTATUS, VmbChannelAllocate, VMB_CHANNEL_ALLOCATE,                                        \
    (PDEVICE_OBJECT ParentDeviceObject, BOOLEAN IsServer, VMBCHANNEL* Channel))              \
  X(VOID, VmbChannelCleanup, VMB_CHANNEL_CLEANUP, (VMBCHANNEL Channel))                      \
  X(NTSTATUS, VmbChannelCreateGpadlFromBuffer, VMB_CHANNEL_CREATE_GPADL_FROM_BUFFER,          \
    (VMBCHANNEL Channel, UINT32 Flags, PVOID Buffer, UINT32 ByteCount, PUINT32 GpadlHandle)) \
  X(NTSTATUS, VmbChannelCreateGpadlFromMdl, VMB_CHANNEL_CREATE_GPADL_FROM_MDL,                \
    (VMBCHANNEL Channel, UINT32 Flags, PMDL Mdl, UINT32 StartOffsetWithinMdl,                \
     UINT32 DataLengthWithinMdl, PUINT32 GpadlHandle))                                       \
  X(VOID, VmbChannelDeleteGpadl, VMB_CHANNEL_DELETE_GPADL, (VMBCHANNEL Channel, UINT32 GpadlHandle)) \
  X(VOID, VmbChannelDisable, VMB_CHANNEL_DISABLE, (VMBCHANNEL Channel))                      \
  X(NTSTATUS, VmbChannelEnable, VMB_CHANNEL_ENABLE, (VMBCHANNEL Channel))                    \
  X(VOID, VmbChannelGetInterfaceInstance, VMB_CHANNEL_GET_INTERFACE_INSTANCE,                 \
    (VMBCHANNEL Channel, LPGUID InterfaceInstance))                                          \
  X(VOID, VmbChannelGetMmioSpace, VMB_CHANNEL_GET_MMIO_SPACE,                                 \
    (VMBCHANNEL Channel, UINT64* MmioAddress, UINT64* MmioSize))                             \
  X(PVOID, VmbChannelGetPointer, VMB_CHANNEL_GET_POINTER, (VMBCHANNEL Channel))              \
  X(NTSTATUS, VmbChannelInitSetClientContextSize, VMB_CHANNEL_INIT_SET_CLIENT_CONTEXT_SIZE,   \
    (VMBCHANNEL Channel, UINT32 ContextSize))                                                \
  X(NTSTATUS, VmbChannelInitSetFlags, VMB_CHANNEL_INIT_SET_FLAGS, (VMBCHANNEL Channel, UINT32 Flags)) \
  X(NTSTATUS, VmbChannelInitSetFriendlyName, VMB_CHANNEL_INIT_SET_FRIENDLY_NAME,              \
    (VMBCHANNEL Channel, PCUNICODE_STRING Name))                                             \
  X(NTSTATUS, VmbChannelInitSetMaximumExternalData, VMB_CHANNEL_INIT_SET_MAXIMUM_EXTERNAL_DATA, \
    (VMBCHANNEL Channel, UINT32 DataSize, UINT32 ChainLength))                               \
  X(NTSTATUS, VmbChannelInitSetMaximumPacketSize, VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_SIZE,   \
    (VMBCHANNEL Channel, UINT32 PacketSize))                                                 \
  X(NTSTATUS, VmbChannelInitSetProcessPacketCallbacks,                                       \
    VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS,                                           \
    (VMBCHANNEL Channel, PFN_VMB_CHANNEL_PROCESS_PACKET ProcessPacketCallback,               \
     PFN_VMB_CHANNEL_PROCESSING_COMPLETE ProcessingCompleteCallback))                        \
  X(NTSTATUS, VmbChannelInitSetStateChangeCallbacks, VMB_CHANNEL_INIT_SET_STATE_CHANGE_CALLBACKS, \
    (VMBCHANNEL Channel, PVMB_CHANNEL_STATE_CHANGE_CALLBACKS StateChangeCallbacks))          \
  X(VOID, VmbChannelPacketComplete, VMB_CHANNEL_PACKET_COMPLETE,                             \
    (VMBPACKETCOMPLETION PacketCompletionContext, PVOID PacketCompletionBuffer, UINT32 BufSize)) \
  X(VOID, VmbChannelPacketDeferToPassive, VMB_CHANNEL_PACKET_DEFER_TO_PASSIVE,                \
    (VMBPACKETCOMPLETION PacketCompletionContext))                                           \
  X(VOID, VmbChannelPacketFail, VMB_CHANNEL_PACKET_FAIL, (VMBPACKETCOMPLETION PacketCompletionContext)) \
  X(NTSTATUS, VmbChannelPacketGetExternalData, VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA,          \
    (VMBPACKETCOMPLETION PacketCompletionContext, UINT32 Flags, PMDL* Mdl))                  \
  X(VOID, VmbChannelPause, VMB_CHANNEL_PAUSE, (VMBCHANNEL Channel))                          \
  X(NTSTATUS, VmbChannelSendSynchronousRequest, VMB_CHANNEL_SEND_SYNCHRONOUS_REQUEST,         \
    (VMBCHANNEL Channel, PVOID Buffer, UINT32 BufferSize, PMDL ExternalDataMdl, UINT32 Flags, \
     PVOID CompletionBuffer, PUINT32 CompletionBufferSize, PLARGE_INTEGER Timeout))          \
  X(VOID, VmbChannelSetIncomingProcessingAtPassive, VMB_CHANNEL_SET_INCOMING_PROCESSING_AT_PASSIVE, \
    (VMBCHANNEL Channel, BOOLEAN RequirePassive))                                            \
  X(NTSTATUS, VmbChannelSetInterruptLatency, VMB_CHANNEL_SET_INTERRUPT_LATENCY,               \
    (VMBCHANNEL Channel, UINT16 Latency, PUINT16 OriginalLatency))                           \
  X(VOID, VmbChannelSetPointer, VMB_CHANNEL_SET_POINTER, (VMBCHANNEL Channel, PVOID Pointer)) \
  X(VOID, VmbChannelSetTransactionQuota, VMB_CHANNEL_SET_TRANSACTION_QUOTA,                   \
    (VMBCHANNEL Channel, UINT32 Quota))                                                      \
  X(UINT32, VmbChannelSizeofPacket, VMB_CHANNEL_SIZEOF_PACKET, (VMBCHANNEL Channel))         \
  X(VOID, VmbChannelStart, VMB_CHANNEL_START, (VMBCHANNEL Channel))                          \
  X(NTSTATUS, VmbClientChannelInitSetRingBufferPageCount,                                    \
    VMB_CLIENT_CHANNEL_INIT_SET_RING_BUFFER_PAGE_COUNT,                                      \
    (VMBCHANNEL Channel, UINT32 IncomingPageCount, UINT32 OutgoingPageCount))                \
  X(NTSTATUS, VmbClientChannelInitSetTargetPnp, VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PNP,       \
    (VMBCHANNEL Channel, LPCGUID InterfaceType, LPCGUID InterfaceInstance,                   \
     PFN_VMB_CHANNEL_PNP_FAILURE PnpFailureCallback))                                        \
  X(VMBPACKET, VmbPacketAllocate, VMB_PACKET_ALLOCATE, (VMBCHANNEL Channel))                 \
  X(VOID, VmbPacketFree, VMB_PACKET_FREE, (VMBPACKET VmbPacket))                             \
  X(VMBCHANNEL, VmbPacketGetChannel, VMB_PACKET_GET_CHANNEL, (VMBPACKET PacketObject))       \
  X(PVOID, VmbPacketGetPointer, VMB_PACKET_GET_POINTER, (VMBPACKET PacketObject))            \
  X(NTSTATUS, VmbPacketInitialize, VMB_PACKET_INITIALIZE,                                    \
    (VMBCHANNEL Channel, VMBPACKET VmbPacket, UINT32 ByteCount))                             \
  X(NTSTATUS, VmbPacketSend, VMB_PACKET_SEND,                                                \
    (VMBPACKET PacketObject, PVOID Buffer, UINT32 BufferLength, PMDL ExternalDataMdl,        \
     UINT32 Flags))                                                                          \
  X(NTSTATUS, VmbPacketSendWithExternalMdl, VMB_PACKET_SEND_WITH_EXTERNAL_MDL,                \
    (VMBPACKET PacketObject, PVOID Buffer, UINT32 BufferLength, PMDL ExternalDataMdl,        \
     UINT32 MdlOffset, UINT32 MdlLength, UINT32 Flags))                                      \
  X(NTSTATUS, VmbPacketSendWithExternalPfns, VMB_PACKET_SEND_WITH_EXTERNAL_PFNS,              \
    (VMBPACKET PacketObject, PVOID Buffer, UINT32 BufferLength, PPFN_NUMBER ExternalDataPfns, \
     UINT32 PfnLength, UINT32 Flags))                                                        \
  X(VOID, VmbPacketSetCompletionRoutine, VMB_PACKET_SET_COMPLETION_ROUTINE,                   \
    (VMBPACKET PacketObject, PFN_VMB_PACKET_COMPLETION_ROUTINE CompletionRoutine))           \
  X(VOID, VmbPacketSetPointer, VMB_PACKET_SET_POINTER, (VMBPACKET PacketObject, PVOID Pointer))

#define KMCL_SERVER_ONLY_FUNCTIONS(X)                                                         \
  X(NTSTATUS, VmbChannelMapGpadl, VMB_CHANNEL_MAP_GPADL,                                      \
    (VMBCHANNEL Channel, UINT32 Flags, UINT32 GpadlHandle, PMDL* Mdl))                       \
  X(NTSTATUS, VmbChannelRestoreFromBuffer, VMB_CHANNEL_RESTORE_FROM_BUFFER,                   \
    (VMBCHANNEL Channel, PVOID Buffer, ULONG BufferSize))                                    \
  X(NTSTATUS, VmbChannelSaveBegin, VMB_CHANNEL_SAVE_BEGIN, (VMBCHANNEL Channel))             \
  X(NTSTATUS, VmbChannelSaveContinue, VMB_CHANNEL_SAVE_CONTINUE,                              \
    (VMBCHANNEL Channel, PVOID SaveBuffer, ULONG SaveBufferSize, PULONG BytesFilled,          \
     PULONG BytesRequired))                                                                  \
  X(VOID, VmbChannelSaveEnd, VMB_CHANNEL_SAVE_END, (VMBCHANNEL Channel))                     \
  X(VOID, VmbChannelUnmapGpadl, VMB_CHANNEL_UNMAP_GPADL, (VMBCHANNEL Channel, UINT32 GpadlHandle)) \
  X(NTSTATUS, VmbConvertVmbusHandleToKernelHandle, VMB_CONVERT_VMBUS_HANDLE_TO_KERNEL_HANDLE, \
    (HANDLE VmbusHandle, PHANDLE KernelHandle))                                              \
  X(NTSTATUS, VmbPacketRestore, VMB_PACKET_RESTORE,                                          \
    (VMBPACKET PacketObject, PVOID Buffer, ULONG BufferSize))                                \
  X(NTSTATUS, VmbServerChannelInitSetFlags, VMB_SERVER_CHANNEL_INIT_SET_FLAGS,                \
    (VMBCHANNEL Channel, UINT32 Flags))                                                      \
  X(NTSTATUS, VmbServerChannelInitSetMmioMegabytes, VMB_SERVER_CHANNEL_INIT_SET_MMIO_MEGABYTES, \
    (VMBCHANNEL Channel, UINT16 MmioMegabytes, UINT16 MmioMegabytesOptional))                \
  X(NTSTATUS, VmbServerChannelInitSetSaveRestorePacketCallbacks,                             \
    VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS,                               \
    (VMBCHANNEL Channel, PFN_VMB_CHANNEL_SAVE_PACKET SavePacketCallback,                     \
     PFN_VMB_CHANNEL_RESTORE_PACKET RestorePacketCallback))                                  \
  X(NTSTATUS, VmbServerChannelInitSetTargetInterfaceId,                                      \
    VMB_SERVER_CHANNEL_INIT_SET_TARGET_INTERFACE_ID,                                         \
    (VMBCHANNEL Channel, GUID InterfaceType, GUID InterfaceInstance))                        \
  X(NTSTATUS, VmbServerChannelInitSetTargetVtl, VMB_SERVER_CHANNEL_INIT_SET_TARGET_VTL,       \
    (VMBCHANNEL Channel, UINT8 TargetVtl))                                                   \
  X(NTSTATUS, VmbServerChannelInitSetVmbusHandle, VMB_SERVER_CHANNEL_INIT_SET_VMBUS_HANDLE,   \
    (VMBCHANNEL Channel, HANDLE VmbusHandle))

/* FN_VMB_* function types, PFN_VMB_* pointers and the exported functions. */
#define KMCL_DECLARE(ret, name, upper, params) \
  typedef ret FN_##upper params;               \
  typedef FN_##upper* PFN_##upper;             \
  ret name params;
KMCL_FUNCTIONS(KMCL_DECLARE)
KMCL_SERVER_ONLY_FUNCTIONS(KMCL_DECLARE)
#undef KMCL_DECLARE

/* ---- Function tables (KMCL_CLIENT_INTERFACE_V1) --------------------------------------------- */
/* The WDK declares these with unnamed members (an unnamed INTERFACE, and the
 * server table as an unnamed client table followed by unnamed server-only
 * methods), a Microsoft extension that GCC's C++ lacks. Expanding the members
 * in place gives the same layout and the same member names
 * (table.Size, table.InterfaceDereference, server.VmbChannelAllocate,
 * server.VmbChannelMapGpadl). */
#define KMCL_TABLE_MEMBER(ret, name, upper, params) PFN_##upper name;
#define KMCL_INTERFACE_HEADER                 \
  USHORT Size;                                \
  USHORT Version;                             \
  PVOID Context;                              \
  PINTERFACE_REFERENCE InterfaceReference;    \
  PINTERFACE_DEREFERENCE InterfaceDereference;

typedef struct _KMCL_CLIENT_INTERFACE_V1 {
  KMCL_INTERFACE_HEADER
  KMCL_FUNCTIONS(KMCL_TABLE_MEMBER)
} KMCL_CLIENT_INTERFACE_V1, *PKMCL_CLIENT_INTERFACE_V1;

typedef struct _KMCL_SERVER_ONLY_METHODS {
  KMCL_SERVER_ONLY_FUNCTIONS(KMCL_TABLE_MEMBER)
} KMCL_SERVER_ONLY_METHODS, *PKMCL_SERVER_ONLY_METHODS;

typedef struct _KMCL_SERVER_INTERFACE_V1 {
  KMCL_INTERFACE_HEADER
  KMCL_FUNCTIONS(KMCL_TABLE_MEMBER)
  KMCL_SERVER_ONLY_FUNCTIONS(KMCL_TABLE_MEMBER)
} KMCL_SERVER_INTERFACE_V1, *PKMCL_SERVER_INTERFACE_V1;
#undef KMCL_TABLE_MEMBER
#undef KMCL_INTERFACE_HEADER

#define KMCL_CLIENT_INTERFACE_VERSION_V1 1
#define KMCL_CLIENT_INTERFACE_VERSION_LATEST KMCL_CLIENT_INTERFACE_VERSION_V1
#define KMCL_SERVER_INTERFACE_VERSION_V1 1
#define KMCL_SERVER_INTERFACE_VERSION_LATEST KMCL_SERVER_INTERFACE_VERSION_V1
extern const GUID KMCL_CLIENT_INTERFACE_TYPE;
extern const GUID KMCL_SERVER_INTERFACE_TYPE;

/* WdfFdoQueryForInterface for the KMCL tables: fills `Interface` (Size bytes,
 * at least the table's size) with the table for `InterfaceType`. Device and
 * InterfaceSpecificData are accepted and ignored. STATUS_NOT_SUPPORTED for an
 * unknown type or version, STATUS_BUFFER_TOO_SMALL for a short Size. */
NTSTATUS KmclQueryInterface(WDFDEVICE Device, LPCGUID InterfaceType, PINTERFACE Interface,
                            USHORT Size, USHORT Version, PVOID InterfaceSpecificData);

/* ---- Emulation helpers (not in the WDK) ---------------------------------------------------- */
/* The VMBus device of a partition at a VTL (NULL if there is no such
 * partition or client). */
PDEVICE_OBJECT KmclGetVmbusDevice(UINT64 VmbusHandle, UINT8 Vtl);
/* Guest memory for guest drivers: zeroed, page-aligned and physically
 * contiguous; NULL on failure. */
PVOID KmclAllocateGuestMemory(PDEVICE_OBJECT Device, UINT32 ByteCount);
VOID KmclFreeGuestMemory(PDEVICE_OBJECT Device, PVOID Buffer, UINT32 ByteCount);
/* An MDL describing guest memory at Buffer (from KmclAllocateGuestMemory);
 * free with KmclFreeMdl. */
PMDL KmclBuildGuestMdl(PDEVICE_OBJECT Device, PVOID Buffer, UINT32 ByteCount);
VOID KmclFreeMdl(PMDL Mdl);
/* The peer broke the VMBus protocol on Channel: a corrupt incoming ring, a
 * malformed pipe frame, or a read_index in the outgoing ring that is not an
 * aligned offset inside it. Problem is a NUL-terminated description, valid
 * only during the call. Called once per detection (the channel counts the
 * same events), on the channel's I/O task with none of its locks held; it
 * must not block. KMCL has no such callback: Windows' VMBus handles a
 * corrupt ring itself. kmcld uses it to name the offender in its log. */
typedef VOID EVT_KMCL_CHANNEL_PEER_ERROR(VMBCHANNEL Channel, const char* Problem);
typedef EVT_KMCL_CHANNEL_PEER_ERROR* PFN_KMCL_CHANNEL_PEER_ERROR;
/* Sets (or, with NULL, clears) Channel's peer-error callback. Like the
 * VmbChannelInitSet* calls, only while the channel is disabled:
 * STATUS_INVALID_PARAMETER_1 for a bad handle or an enabled channel. */
NTSTATUS KmclChannelInitSetPeerErrorCallback(VMBCHANNEL Channel, PFN_KMCL_CHANNEL_PEER_ERROR Callback);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#if defined(__x86_64__) || defined(_M_X64)
#ifdef __cplusplus
static_assert(sizeof(INTERFACE) == 32, "INTERFACE is 32 bytes on x64");
static_assert(sizeof(KMCL_CLIENT_INTERFACE_V1) == 360, "41 pointers after INTERFACE");
static_assert(sizeof(KMCL_SERVER_ONLY_METHODS) == 112, "14 pointers");
static_assert(sizeof(KMCL_SERVER_INTERFACE_V1) == 472, "client table then server-only methods");
static_assert(sizeof(VMB_CHANNEL_STATE_CHANGE_CALLBACKS) == 48, "Version, Size, 5 pointers");
static_assert(sizeof(MDL) == 48, "the x64 MDL header");
static_assert(sizeof(GUID) == 16, "GUID");
#endif
#endif

#endif /* KMCLD_KMCL_CORE_KMCL_KMCL_API_H_ */
