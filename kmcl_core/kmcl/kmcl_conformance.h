// kmcl_core/kmcl/kmcl_conformance.h: the fixture of the KMCL conformance suite.
// Tests drive kmcl_core only through the KMCL function tables, as a Windows
// driver would; every gtest suite is named after the KMCL function or
// callback it checks (VmbChannelEnable, EvtVmbChannelSuspend, ...).
#ifndef KMCLD_KMCL_CORE_KMCL_KMCL_CONFORMANCE_H_
#define KMCLD_KMCL_CORE_KMCL_KMCL_CONFORMANCE_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kmcl_core/bus/partition.h"
#include "kmcl_core/kmcl/kmcl_api.h"
#include "kmcl_core/runtime/channel_test_util.h"
#include "kmcl_core/runtime/executor.h"

namespace kmcl::conformance {

using kmcl::testing::Recorder;

inline const GUID kType = {0x9d1f7a2e, 0x4b0c, 0x4c51, {0x8a, 0x7e, 0x3f, 0x5e, 0x2d, 0x6c, 0x1b, 0x00}};
inline const GUID kInstance = {0x00000000, 0x0000, 0x4000, {0x80, 0, 0, 0, 0, 0, 0, 0x01}};

// One driver's channel context, reached from C callbacks through
// VmbChannelGetPointer.
struct Endpoint {
  std::string name;
  Recorder* rec = nullptr;
  NTSTATUS opened_result = STATUS_SUCCESS;
  // ProcessPacket behaviour; the default completes with the same bytes.
  std::function<void(VMBCHANNEL, VMBPACKETCOMPLETION, PVOID, UINT32, UINT32)> on_packet;
  std::atomic<uint64_t> batches{0}, batch_packets{0}, packets{0};
  // Where the last state callback and the last ProcessPacket ran (the
  // executor standing for the IRQL: see runtime/executor.h).
  std::atomic<const kmcl::Executor*> callback_executor{};
  std::atomic<const kmcl::Executor*> packet_executor{};
};

class KmclTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // A server channel on the fixture's partition, configured with every
  // callback; enabled and started unless told otherwise.
  VMBCHANNEL Server(Endpoint& e, bool enable = true, bool start = true);
  VMBCHANNEL Client(Endpoint& e, bool enable = true);
  Endpoint& NewEndpoint(const std::string& name);
  // Server + client, both running.
  void OpenPair(VMBCHANNEL* server, VMBCHANNEL* client);
  // Sends `bytes` on a fresh packet; returns the send status.
  NTSTATUS SendBytes(VMBCHANNEL channel, std::vector<uint8_t> bytes, UINT32 flags);

  KMCL_SERVER_INTERFACE_V1 kmcl_ = {};
  std::unique_ptr<Partition> partition_;
  PDEVICE_OBJECT device_ = nullptr;
  Recorder rec_;
  Endpoint* host_ = nullptr;
  Endpoint* guest_ = nullptr;
  std::vector<VMBCHANNEL> channels_;  // cleaned up in reverse in TearDown
  std::vector<std::unique_ptr<Endpoint>> endpoints_;
};

// Suites named after what they test.
#define KMCL_SUITE(name) \
  class name : public KmclTest {};

}  // namespace kmcl::conformance

#endif  // KMCLD_KMCL_CORE_KMCL_KMCL_CONFORMANCE_H_
