// daemon/security/flags.h: kmcld's security flags (--tls_cert, --tls_key,
// --tls_ca, --tls_refresh_s, --insecure_plaintext_tcp, --uds_group, --policy,
// --audit_log), defined here so that kmcld_main.cc only asks for them.
//
// Thread-compatible: read once at start-up.
#ifndef KMCLD_DAEMON_SECURITY_FLAGS_H_
#define KMCLD_DAEMON_SECURITY_FLAGS_H_

#include "daemon/security/server_security.h"

namespace kmcld::security {

SecurityOptions SecurityOptionsFromFlags();

}  // namespace kmcld::security

#endif  // KMCLD_DAEMON_SECURITY_FLAGS_H_
