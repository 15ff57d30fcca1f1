// clients/cpp/kmcl.h: the kmcl C++ client library, for tools that drive
// kmcld (host-side VMBus emulation) over its gRPC API, package kmcl.v1,
// without touching the generated stubs. Include this one header and link
// //clients/cpp:kmcl_client.
//
//   #include "clients/cpp/kmcl.h"
//   namespace kc = kmcl::client;
//
//   auto client = kc::Client::Connect("unix:/run/kmcld/kmcld.sock");  // or "host:port"
//   kmcl::v1::ServerChannelSettings settings;
//   settings.mutable_interface_type()->set_value("8e1d0a5e-...");
//   settings.set_start(true);
//   auto channel = kc::HostChannel::Offer(*client, "default", settings);  // RAII
//   auto stream = kc::AttachedStream::Attach(*client, channel->endpoint());
//   for (;;) {
//     auto d = (*stream)->Receive();            // blocking (or on_delivery)
//     if (!d.ok()) break;
//     (*stream)->Complete(d->id, d->payload);   // echo
//   }
//
// Pieces (each header says its threading contract):
//   status.h   absl::Status from gRPC (code + "Method: message"), macros
//   client.h   Client: one connection, every kmcl.v1 call, default deadlines
//   handles.h  Partition, HostChannel, GuestChannel, GuestBuffer, Gpadl,
//              GpadlLease: move-only, release what they hold when destroyed
//   stream.h   AttachedStream: async sends with a result per packet,
//              blocking or callback receive, credits, batching, reconnect
// Examples: examples/kmcl_echo_host.cc and examples/kmcl_guest_tool.cc.
#ifndef KMCLD_CLIENTS_CPP_KMCL_H_
#define KMCLD_CLIENTS_CPP_KMCL_H_

#include "clients/cpp/client.h"   // IWYU pragma: export
#include "clients/cpp/handles.h"  // IWYU pragma: export
#include "clients/cpp/status.h"   // IWYU pragma: export
#include "clients/cpp/stream.h"   // IWYU pragma: export

#endif  // KMCLD_CLIENTS_CPP_KMCL_H_
