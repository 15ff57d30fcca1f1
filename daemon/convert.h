// daemon/convert.h: the one place where kmcl.v1 messages and kmcl_core
// values are converted into each other (the bridge's boundary, as
// kmcl_core/control/saved_convert.h is the saved state's). Every conversion of
// untrusted input validates and returns INVALID_ARGUMENT naming the field.
//
// Thread-safe (pure functions).
#ifndef KMCLD_DAEMON_CONVERT_H_
#define KMCLD_DAEMON_CONVERT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "devices/ic/host_core.h"
#include "kmcl_core/base/guid.h"
#include "kmcl_core/control/vmbus_client.h"
#include "kmcl_core/control/vmbus_server.h"
#include "kmcl_core/runtime/channel.h"
#include "kmcl_core/wire/gpa_range.h"
#include "proto/channel.pb.h"
#include "proto/common.pb.h"
#include "proto/diagnostics.pb.h"
#include "proto/event.pb.h"

namespace kmcld {

const char* EndpointRoleName(kmcl::v1::EndpointRole role);  // "host", "guest"

// A built-in device's event as the event log's kind (EVENT_KIND_DEVICE_*).
kmcl::v1::EventKind ToProto(const kmcl::devices::ic::IcEvent& event);

// A Guid message; `field` names it in errors. Empty text is the null GUID
// when `allow_empty`, else INVALID_ARGUMENT.
absl::StatusOr<kmcl::Guid> FromProto(const kmcl::v1::Guid& guid, absl::string_view field,
                                     bool allow_empty);
kmcl::v1::Guid ToProto(const kmcl::Guid& guid);

// GpaRanges in VMBus form, validated (offset < 4096, PFN count exact).
absl::StatusOr<std::vector<kmcl::GpaRange>> FromProto(const kmcl::v1::GpaRanges& ranges);
void ToProto(const kmcl::GpaRange& range, kmcl::v1::GpaRange* out);

// `length` bytes from `offset` of the memory `ranges` describe, as ranges.
// OUT_OF_RANGE beyond their total; length 0 means "to the end".
absl::StatusOr<std::vector<kmcl::GpaRange>> SliceRanges(const std::vector<kmcl::GpaRange>& ranges,
                                                       uint64_t offset, uint64_t length);

// ServerChannelSettings applied to a disabled server channel through KMCL's
// setters, after validating every field (unknown flag bits, VTL > 2,
// user_defined > 120 bytes, or > 116 in pipe mode, whose first 4 bytes carry
// the pipe type as Linux's vmbus_channel_offer does).
absl::Status ApplyServerSettings(const kmcl::v1::ServerChannelSettings& settings,
                                 kmcl::Channel& channel);

// The offer as the host made it.
kmcl::v1::Offer ToProto(const kmcl::ServerChannelInfo& info, const std::string& partition_id);
// The offer as a guest sees it.
kmcl::v1::Offer ToProto(const kmcl::ClientChannelInfo& info, const std::string& partition_id,
                        uint8_t vtl);

// An endpoint's state from its channel (present = true).
kmcl::v1::EndpointState ToProto(const kmcl::ChannelSnapshot& snapshot,
                                kmcl::v1::EndpointRole role, bool rescinded, bool attached);
void ToProto(const kmcl::RingSnapshot& ring, kmcl::v1::RingDiagnostics* out);
void ToProto(const kmcl::ChannelStats& stats, kmcl::v1::EndpointCounters* out);
// The completion-latency histogram with its bounds, in seconds.
void ToProto(const kmcl::LatencyHistogram& histogram, kmcl::v1::LatencyHistogram* out);

}  // namespace kmcld

#endif  // KMCLD_DAEMON_CONVERT_H_
