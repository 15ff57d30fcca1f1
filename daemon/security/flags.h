// daemon/security/flags.h: kmcld's security flags (--tls_cert, --tls_key,
// --tls_ca, --tls_refresh_s, --tls_min_version, --insecure_plaintext_tcp, --uds_group, --policy,
// --audit_log), defined here so that kmcld_main.cc only asks for them, and
// their counterparts in the --config file (KmcldConfig.security).
//
// Thread-compatible: read once at start-up.
#ifndef KMCLD_DAEMON_SECURITY_FLAGS_H_
#define KMCLD_DAEMON_SECURITY_FLAGS_H_

#include "daemon/config.pb.h"
#include "daemon/security/server_security.h"

namespace kmcld::security {

// The config file's settings, each overridden by its flag when that was given
// (differs from its default).
SecurityOptions SecurityOptionsFromFlags(const config::Security& file);

}  // namespace kmcld::security

#endif  // KMCLD_DAEMON_SECURITY_FLAGS_H_
