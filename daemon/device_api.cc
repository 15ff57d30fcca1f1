#include "daemon/device_api.h"

#include <optional>

#include "absl/strings/str_cat.h"

namespace kmcld {

namespace ic = kmcl::devices::ic;
using ic::IcHostService;
using ic::IcOutput;
using ic::IcService;

namespace {

kmcl::v1::DeviceKind KindOf(IcService s) {
  switch (s) {
    case IcService::kHeartbeat:
      return kmcl::v1::DEVICE_KIND_HEARTBEAT;
    case IcService::kShutdown:
      return kmcl::v1::DEVICE_KIND_SHUTDOWN;
    case IcService::kTimeSync:
      return kmcl::v1::DEVICE_KIND_TIMESYNC;
    case IcService::kKvp:
      return kmcl::v1::DEVICE_KIND_KVP;
  }
  return kmcl::v1::DEVICE_KIND_UNSPECIFIED;
}

int64_t UnixNanos(absl::Time t) { return absl::ToUnixNanos(t); }

// Submits a request on `vsp` and waits for its result, at most `timeout`
// (the core times requests out itself; this only bounds the wait).
template <typename Host, typename Result>
absl::StatusOr<Result> Ask(ic::IcVsp& vsp, absl::Duration timeout,
                           const std::function<absl::StatusOr<uint64_t>(Host&, absl::Time, IcOutput&)>& submit) {
  absl::StatusOr<uint64_t> op = absl::UnknownError("not submitted");
  vsp.Run([&](IcHostService& s, absl::Time now, IcOutput& out) { op = submit(static_cast<Host&>(s), now, out); });
  if (!op.ok()) return op.status();
  std::optional<absl::StatusOr<Result>> result;
  vsp.WaitUntil(
      [&](IcHostService& s) {
        if (!result) result = static_cast<Host&>(s).TakeResult(*op);
        return result.has_value();
      },
      timeout);
  if (!result) {
    return absl::DeadlineExceededError(
        absl::StrCat(ic::ServiceInfo(vsp.service()).name, ": the guest did not answer within ",
                     absl::FormatDuration(timeout)));
  }
  return *std::move(result);
}

absl::Status NeedPool(uint32_t pool) {
  if (pool < ic::kKvpPoolCount) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("KVP pool ", pool, " is not 0..4"));
}

}  // namespace

absl::StatusOr<DeviceApi::Target> DeviceApi::Find(const std::string& partition_id, IcService service) const {
  auto partition = registry_.GetPartition(partition_id);
  if (!partition.ok()) return partition.status();
  std::shared_ptr<PartitionDevices> devices = (*partition)->devices();
  ic::IcVsp* vsp = devices == nullptr ? nullptr : devices->vsp(service);
  if (vsp == nullptr) {
    return absl::NotFoundError(absl::StrCat("partition \"", partition_id, "\" has no ",
                                            ic::ServiceInfo(service).name, " device"));
  }
  return Target{*std::move(partition), std::move(devices), vsp};
}

absl::Status DeviceApi::CheckDevice(const std::string& partition_id, IcService service) const {
  return Find(partition_id, service).status();
}

absl::Status DeviceApi::ListDevices(const kmcl::v1::ListDevicesRequest& request,
                                    kmcl::v1::ListDevicesResponse* response) {
  auto partitions = registry_.PartitionsFor(request.partition_id());
  if (!partitions.ok()) return partitions.status();
  for (const auto& p : *partitions) {
    std::shared_ptr<PartitionDevices> d = p->devices();
    if (d == nullptr) continue;
    for (IcService s : d->options().services) {
      ic::IcVsp* vsp = d->vsp(s);
      kmcl::v1::Device* out = response->add_devices();
      out->set_partition_id(d->partition_id());
      out->set_kind(KindOf(s));
      out->set_interface_type(ic::ServiceInfo(s).interface_type.ToString());
      out->set_emulated_guest(d->vsc(s) != nullptr);
      vsp->Run([&](IcHostService& host, absl::Time, IcOutput&) {
        const ic::IcHostCore& core = host.core();
        out->set_negotiated(core.state() == ic::IcHostCore::State::kReady);
        if (core.negotiated()) {
          out->set_framework_version(core.negotiated()->framework.ToString());
          out->set_message_version(core.negotiated()->message.ToString());
        }
        out->set_negotiation_failure(core.failure());
      });
      const ic::VspStats stats = vsp->stats();
      kmcl::v1::DeviceCounters* c = out->mutable_counters();
      c->set_requests_sent(stats.protocol.requests_sent);
      c->set_responses(stats.protocol.responses);
      c->set_timeouts(stats.protocol.timeouts);
      c->set_short_packets(stats.protocol.short_packets);
      c->set_not_response(stats.protocol.not_response);
      c->set_wrong_type(stats.protocol.wrong_type);
      c->set_bad_size(stats.protocol.bad_size);
      c->set_bad_body(stats.protocol.bad_body);
      c->set_unexpected(stats.protocol.unexpected);
      c->set_send_failures(stats.send_failures);
    }
    for (const DeviceEventRecord& e : d->RecentEvents()) {
      kmcl::v1::DeviceEvent* out = response->add_recent_events();
      out->set_time_unix_nanos(UnixNanos(e.time));
      out->set_partition_id(e.partition_id);
      out->set_kind(KindOf(e.service));
      out->set_name(ic::IcEventName(e.event.kind));
      out->set_detail(e.event.detail);
    }
  }
  return absl::OkStatus();
}

absl::Status DeviceApi::GetHeartbeat(const kmcl::v1::GetHeartbeatRequest& request,
                                     kmcl::v1::HeartbeatState* response) {
  absl::StatusOr<Target> t = Find(request.partition_id(), IcService::kHeartbeat);
  if (!t.ok()) return t.status();
  t->vsp->Run([&](IcHostService& s, absl::Time now, IcOutput&) {
    const ic::HeartbeatStatus hb = static_cast<ic::HeartbeatHost&>(s).Status(now);
    response->set_negotiated(hb.negotiated);
    response->set_alive(hb.alive);
    response->set_last_sequence(hb.last_sequence);
    if (hb.last_answer) response->set_last_answer_unix_nanos(UnixNanos(*hb.last_answer));
    response->set_answers(hb.answers);
    response->set_unresponsive_events(hb.unresponsive_events);
  });
  response->set_timeout_ms(absl::ToInt64Milliseconds(t->devices->options().host.heartbeat_timeout));
  return absl::OkStatus();
}

absl::Status DeviceApi::RequestShutdown(const kmcl::v1::RequestShutdownRequest& request,
                                        kmcl::v1::RequestShutdownResponse* response) {
  absl::StatusOr<Target> t = Find(request.partition_id(), IcService::kShutdown);
  if (!t.ok()) return t.status();
  ic::ShutdownBody body;
  body.reason_code = request.reason_code();
  body.timeout_seconds = request.timeout_seconds();
  body.display_message = request.message();
  switch (request.action()) {
    case kmcl::v1::SHUTDOWN_ACTION_RESTART:
      body.flags = ic::kShutdownFlagRestart;
      break;
    case kmcl::v1::SHUTDOWN_ACTION_HIBERNATE:
      body.flags = ic::kShutdownFlagHibernate;
      break;
    case kmcl::v1::SHUTDOWN_ACTION_SHUTDOWN:
      body.flags = ic::kShutdownFlagShutdown;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown shutdown action ", request.action(),
                                                     " (0 shutdown, 1 restart, 2 hibernate)"));
  }
  if (request.force()) body.flags |= ic::kShutdownFlagForce;
  auto r = Ask<ic::ShutdownHost, ic::ShutdownResult>(
      *t->vsp, t->devices->options().host.request_timeout + absl::Seconds(2),
      [&](ic::ShutdownHost& h, absl::Time now, IcOutput& out) { return h.RequestShutdown(body, now, out); });
  if (!r.ok()) return r.status();
  response->set_guest_status(r->guest_status);
  response->set_acknowledged(r->guest_status == ic::kHvSOk);
  return absl::OkStatus();
}

absl::Status DeviceApi::SendTimeSample(const kmcl::v1::SendTimeSampleRequest& request,
                                       kmcl::v1::TimeSample* response) {
  absl::StatusOr<Target> t = Find(request.partition_id(), IcService::kTimeSync);
  if (!t.ok()) return t.status();
  const uint8_t flags = request.sync() ? ic::kTimeSyncSync : ic::kTimeSyncSample;
  auto r = Ask<ic::TimeSyncHost, ic::TimeSyncResult>(
      *t->vsp, t->devices->options().host.request_timeout + absl::Seconds(2),
      [&](ic::TimeSyncHost& h, absl::Time now, IcOutput& out) { return h.SendSample(flags, now, out); });
  if (!r.ok()) return r.status();
  response->set_parent_time_100ns(r->sent.parent_time);
  response->set_host_time_unix_nanos(static_cast<int64_t>(r->sent.parent_time - ic::kWindowsToUnixEpoch100ns) * 100);
  response->set_answered_unix_nanos(UnixNanos(r->answered_at));
  response->set_guest_status(r->guest_status);
  t->vsp->Run([&](IcHostService& s, absl::Time, IcOutput&) {
    response->set_samples_answered(static_cast<ic::TimeSyncHost&>(s).samples_answered());
  });
  return absl::OkStatus();
}

absl::Status DeviceApi::KvpOnce(
    const std::string& partition_id, uint32_t pool,
    const std::function<absl::StatusOr<uint64_t>(ic::KvpHost&, absl::Time, IcOutput&)>& submit,
    const std::function<void(const ic::KvpResult&)>& fill) {
  if (absl::Status s = NeedPool(pool); !s.ok()) return s;
  absl::StatusOr<Target> t = Find(partition_id, IcService::kKvp);
  if (!t.ok()) return t.status();
  auto r = Ask<ic::KvpHost, ic::KvpResult>(*t->vsp, t->devices->options().host.request_timeout + absl::Seconds(2),
                                           submit);
  if (!r.ok()) return r.status();
  fill(*r);
  return absl::OkStatus();
}

absl::Status DeviceApi::KvpGet(const kmcl::v1::KvpGetRequest& request, kmcl::v1::KvpGetResponse* response) {
  return KvpOnce(
      request.partition_id(), request.pool(),
      [&](ic::KvpHost& h, absl::Time now, IcOutput& out) {
        return h.Get(static_cast<uint8_t>(request.pool()), request.key(), now, out);
      },
      [&](const ic::KvpResult& r) {
        response->set_guest_status(r.guest_status);
        response->set_found(r.guest_status == ic::kHvSOk);
        response->set_value(r.value);
      });
}

absl::Status DeviceApi::KvpSet(const kmcl::v1::KvpSetRequest& request, kmcl::v1::KvpStatus* response) {
  return KvpOnce(
      request.partition_id(), request.pool(),
      [&](ic::KvpHost& h, absl::Time now, IcOutput& out) {
        return h.Set(static_cast<uint8_t>(request.pool()), request.key(), request.value(), now, out);
      },
      [&](const ic::KvpResult& r) { response->set_guest_status(r.guest_status); });
}

absl::Status DeviceApi::KvpDelete(const kmcl::v1::KvpDeleteRequest& request, kmcl::v1::KvpStatus* response) {
  return KvpOnce(
      request.partition_id(), request.pool(),
      [&](ic::KvpHost& h, absl::Time now, IcOutput& out) {
        return h.Delete(static_cast<uint8_t>(request.pool()), request.key(), now, out);
      },
      [&](const ic::KvpResult& r) { response->set_guest_status(r.guest_status); });
}

absl::Status DeviceApi::KvpEnumerate(const kmcl::v1::KvpEnumerateRequest& request,
                                     kmcl::v1::KvpEnumerateResponse* response) {
  constexpr uint32_t kMaxRecords = 4096;
  for (uint32_t index = 0; index < kMaxRecords; ++index) {
    bool more = false;
    absl::Status s = KvpOnce(
        request.partition_id(), request.pool(),
        [&](ic::KvpHost& h, absl::Time now, IcOutput& out) {
          return h.Enumerate(static_cast<uint8_t>(request.pool()), index, now, out);
        },
        [&](const ic::KvpResult& r) {
          more = r.guest_status == ic::kHvSOk;  // HV_S_CONT: no more items
          if (!more) return;
          kmcl::v1::KvpPair* pair = response->add_pairs();
          pair->set_key(r.key);
          pair->set_value(r.value);
        });
    if (!s.ok()) return s;
    if (!more) break;
  }
  return absl::OkStatus();
}

}  // namespace kmcld
