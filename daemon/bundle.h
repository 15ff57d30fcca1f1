// daemon/bundle.h: save and restore of what kmcld holds, as
// kmcld.saved.SavedBundle (daemon/saved_bundle.proto) around kmcl_core's
// blobs. docs/saved-state.md ("kmcld bundles") has the sequence.
//
// Partition save: every endpoint kmcld holds that is running is paused
// (KMCL's Pause: waits until the tools have completed what they hold), the
// built-in devices are paused and saved (their guests first), each endpoint
// is saved, then the partition (guest memory, GPADLs, both control planes);
// unless stay_paused, the endpoints are thawed and the ones that were
// running started again, and the devices resume. Restore builds the
// partition, restores the devices (so a heartbeat or KVP request in flight
// continues), re-creates each endpoint from its blob (Enable re-attaches it
// without wire traffic and replays Opened) and starts the ones that were
// running before the save, whatever stay_paused said (it concerns the
// source only). Tools re-attach to get their outstanding deliveries and
// completions.
//
// Thread-safe; blocking (run on the blocking pool).
#ifndef KMCLD_DAEMON_BUNDLE_H_
#define KMCLD_DAEMON_BUNDLE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "daemon/registry.h"
#include "daemon/saved_bundle.pb.h"

namespace kmcld {

// The newest format this kmcld reads and writes; a bundle without built-in
// devices is still written as version 1.
inline constexpr uint32_t kBundleVersion = 3;

absl::StatusOr<std::string> SavePartitionBundle(Registry& registry, const std::string& id,
                                                bool stay_paused);
// `id` empty: the saved id. INVALID_ARGUMENT for an id ValidatePartitionId
// refuses (given or saved) or a bad blob; ALREADY_EXISTS if taken;
// FAILED_PRECONDITION for a newer version; NOT_FOUND ("was deleted") when a
// DeletePartition of the new partition ran meanwhile. Nothing is left behind
// on failure.
absl::StatusOr<std::shared_ptr<PartitionEntry>> RestorePartitionBundle(Registry& registry,
                                                                       const std::string& blob,
                                                                       const std::string& id);

// One host endpoint, which must be paused by its tool (FAILED_PRECONDITION).
absl::StatusOr<std::string> SaveChannelBundle(Registry& registry, const kmcl::v1::ChannelRef& ref);
// Into an existing partition whose control plane knows the channel (a
// restored partition), or afresh with FORCE_NEW_CHANNEL.
absl::StatusOr<kmcl::v1::ChannelRef> RestoreChannelBundle(Registry& registry,
                                                          const std::string& partition_id,
                                                          const std::string& blob);

}  // namespace kmcld

#endif  // KMCLD_DAEMON_BUNDLE_H_
