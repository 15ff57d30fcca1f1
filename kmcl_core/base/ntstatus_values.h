/* kmcl_core/base/ntstatus_values.h: the NTSTATUS type and every NTSTATUS value
 * kmcld knows, in one list shared by the C surface (kmcl_api.h includes this
 * file) and the C++ core (ntstatus.h includes it too).
 *
 * The values are the STATUS_* macros below, written as Windows' ntstatus.h
 * writes them, so C drivers use them unchanged (in `case` labels and
 * `#ifdef` alike). KMCL_NTSTATUS_LIST names each macro once more, with its
 * C++ spelling, for code that walks every value: ntstatus.h makes its
 * kStatus* constants and NtStatusName from it. ntstatus_test checks that the
 * list names exactly the macros defined here, so to add a value write its
 * #define and its list entry side by side.
 *
 * C and C++; no other includes than <stdint.h>. */
#ifndef KMCLD_KMCL_CORE_BASE_NTSTATUS_VALUES_H_
#define KMCLD_KMCL_CORE_BASE_NTSTATUS_VALUES_H_

#include <stdint.h>

typedef int32_t NTSTATUS;

/* Values as in Windows' ntstatus.h. */
#define STATUS_SUCCESS ((NTSTATUS)0x00000000L)
#define STATUS_TIMEOUT ((NTSTATUS)0x00000102L)
#define STATUS_PENDING ((NTSTATUS)0x00000103L)
#define STATUS_BUFFER_OVERFLOW ((NTSTATUS)0x80000005L)
#define STATUS_UNSUCCESSFUL ((NTSTATUS)0xC0000001L)
#define STATUS_INVALID_HANDLE ((NTSTATUS)0xC0000008L)
#define STATUS_INVALID_PARAMETER ((NTSTATUS)0xC000000DL)
#define STATUS_MORE_PROCESSING_REQUIRED ((NTSTATUS)0xC0000016L)
#define STATUS_BUFFER_TOO_SMALL ((NTSTATUS)0xC0000023L)
#define STATUS_DATA_ERROR ((NTSTATUS)0xC000003EL)
#define STATUS_REVISION_MISMATCH ((NTSTATUS)0xC0000059L)
#define STATUS_INSUFFICIENT_RESOURCES ((NTSTATUS)0xC000009AL)
#define STATUS_NOT_SUPPORTED ((NTSTATUS)0xC00000BBL)
#define STATUS_INVALID_PARAMETER_1 ((NTSTATUS)0xC00000EFL)
#define STATUS_INVALID_PARAMETER_2 ((NTSTATUS)0xC00000F0L)
#define STATUS_INVALID_PARAMETER_3 ((NTSTATUS)0xC00000F1L)
#define STATUS_INVALID_PARAMETER_4 ((NTSTATUS)0xC00000F2L)
#define STATUS_CANCELLED ((NTSTATUS)0xC0000120L)
#define STATUS_INVALID_DEVICE_STATE ((NTSTATUS)0xC0000184L)
#define STATUS_DEVICE_REMOVED ((NTSTATUS)0xC00002B6L)

#define NT_SUCCESS(Status) (((NTSTATUS)(Status)) >= 0)

/* X(C name, C++ name) for every value above. */
#define KMCL_NTSTATUS_LIST(X)                                      \
  X(STATUS_SUCCESS, kStatusSuccess)                                \
  X(STATUS_TIMEOUT, kStatusTimeout)                                \
  X(STATUS_PENDING, kStatusPending)                                \
  X(STATUS_BUFFER_OVERFLOW, kStatusBufferOverflow)                 \
  X(STATUS_UNSUCCESSFUL, kStatusUnsuccessful)                      \
  X(STATUS_INVALID_HANDLE, kStatusInvalidHandle)                   \
  X(STATUS_INVALID_PARAMETER, kStatusInvalidParameter)             \
  X(STATUS_MORE_PROCESSING_REQUIRED, kStatusMoreProcessingRequired) \
  X(STATUS_BUFFER_TOO_SMALL, kStatusBufferTooSmall)                \
  X(STATUS_DATA_ERROR, kStatusDataError)                           \
  X(STATUS_REVISION_MISMATCH, kStatusRevisionMismatch)             \
  X(STATUS_INSUFFICIENT_RESOURCES, kStatusInsufficientResources)   \
  X(STATUS_NOT_SUPPORTED, kStatusNotSupported)                     \
  X(STATUS_INVALID_PARAMETER_1, kStatusInvalidParameter1)          \
  X(STATUS_INVALID_PARAMETER_2, kStatusInvalidParameter2)          \
  X(STATUS_INVALID_PARAMETER_3, kStatusInvalidParameter3)          \
  X(STATUS_INVALID_PARAMETER_4, kStatusInvalidParameter4)          \
  X(STATUS_CANCELLED, kStatusCancelled)                            \
  X(STATUS_INVALID_DEVICE_STATE, kStatusInvalidDeviceState)        \
  X(STATUS_DEVICE_REMOVED, kStatusDeviceRemoved)

#endif /* KMCLD_KMCL_CORE_BASE_NTSTATUS_VALUES_H_ */
