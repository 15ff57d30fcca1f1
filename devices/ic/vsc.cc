#include "devices/ic/vsc.h"

#include "absl/status/status.h"
#include "devices/ic/state_codec.h"

namespace kmcl::devices::ic {

IcVsc::IcVsc(IcService service, GuestOptions options, std::function<absl::Time()> clock)
    : clock_(std::move(clock)), guest_(service, std::move(options)) {}

absl::StatusOr<std::unique_ptr<IcVsc>> IcVsc::Create(Partition& partition, IcService service,
                                                     GuestOptions options, const std::string* saved,
                                                     std::function<absl::Time()> clock) {
  std::unique_ptr<IcVsc> vsc(new IcVsc(service, std::move(options), std::move(clock)));
  absl::StatusOr<std::unique_ptr<Channel>> channel =
      Channel::Allocate(partition, EndpointRole::kGuest);
  if (!channel.ok()) return channel.status();
  vsc->channel_ = *std::move(channel);
  Channel& ch = *vsc->channel_;
  ChannelCallbacks callbacks;
  IcVsc* self = vsc.get();
  callbacks.process_packet = [self](Channel& c, Delivery& d, std::span<const uint8_t> payload, uint32_t) {
    self->OnPacket(c, d, payload);
  };
  if (absl::Status s = ch.SetTargetPnp(ServiceInfo(service).interface_type, std::nullopt); !s.ok()) return s;
  if (absl::Status s = ch.SetMaximumPacketSize(kMaxIcPacketSize); !s.ok()) return s;
  if (absl::Status s = ch.SetCallbacks(std::move(callbacks)); !s.ok()) return s;
  bool resume = false;
  if (saved != nullptr) {
    StateReader r(*saved);
    std::string guest = r.Str();
    std::string channel_blob = r.Str();
    if (!r.done()) return absl::InvalidArgumentError("IC VSC saved state: truncated");
    if (absl::Status s = ch.Restore(channel_blob); !s.ok()) return s;
    MutexLock lock(&vsc->mu_);
    if (absl::Status s = vsc->guest_.Restore(guest); !s.ok()) return s;
    resume = true;
  }
  if (absl::Status s = ch.Enable(); !s.ok()) return s;
  if (resume) {
    if (absl::Status s = ch.Start(); !s.ok()) return s;
  }
  return vsc;
}

IcVsc::~IcVsc() {
  if (channel_) channel_->Disable().IgnoreError();
}

void IcVsc::OnPacket(Channel& channel, Delivery& delivery, std::span<const uint8_t> payload) {
  std::optional<Bytes> answer;
  {
    MutexLock lock(&mu_);
    answer = guest_.OnPacket(payload, clock_());
  }
  if (answer) {
    Packet* packet = channel.AllocatePacket();
    if (!channel.Send(*packet, *answer, {}, 0).ok()) {
      channel.FreePacket(packet).IgnoreError();
      MutexLock lock(&mu_);
      ++send_failures_;
    }
  }
  channel.Complete(delivery, {});
  MutexLock lock(&mu_);
  changed_.SignalAll();
}

void IcVsc::Inspect(const std::function<void(IcGuest&)>& fn) {
  MutexLock lock(&mu_);
  fn(guest_);
}

bool IcVsc::WaitUntil(const std::function<bool(IcGuest&)>& pred, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  MutexLock lock(&mu_);
  while (!pred(guest_)) {
    if (changed_.WaitWithDeadline(&mu_, deadline)) return pred(guest_);
  }
  return true;
}

uint64_t IcVsc::send_failures() const {
  MutexLock lock(&mu_);
  return send_failures_;
}

absl::StatusOr<std::string> IcVsc::Save() {
  if (absl::Status s = channel_->Pause(); !s.ok()) return s;
  absl::StatusOr<std::string> blob = channel_->Save();
  if (!blob.ok()) return blob.status();
  StateWriter w;
  {
    MutexLock lock(&mu_);
    w.Str(guest_.Save());
  }
  w.Str(*blob);
  return w.Take();
}

absl::Status IcVsc::Resume() { return channel_->Start(); }

}  // namespace kmcl::devices::ic
