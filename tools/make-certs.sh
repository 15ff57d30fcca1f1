#!/usr/bin/env bash
# tools/make-certs.sh: makes the certificates for running kmcld on TCP with
# mutual TLS (docs/security.md), with Debian's openssl command.
#
#   tools/make-certs.sh DIR [NAME=IDENTITY ...] [--test]
#   tools/make-certs.sh DIR --renew-server [NAME=IDENTITY ...]
#
# DIR/ca.pem, ca.key      a CA (valid 365 days)
# DIR/server.pem, .key    kmcld's certificate: SAN DNS:localhost, IP:127.0.0.1
#                         (more with KMCL_SERVER_SANS="DNS:host1,IP:10.0.0.1")
# DIR/NAME.pem, .key      a client certificate per NAME=IDENTITY; IDENTITY is
#                         its URI SAN (spiffe://example.org/ops), NAME its CN
# --test also makes, for tests of refusals:
# DIR/other-ca.pem        another CA, and DIR/foreign.pem/.key, a client
#                         certificate it signed (spiffe://kmcl.test/foreign)
# DIR/expired.pem, .key   a client certificate of ca.pem that expired
#                         yesterday (spiffe://kmcl.test/expired)
# --renew-server keeps DIR's CA and makes a new server certificate and key
# (and the NAMEs given): a renewal, which kmcld picks up on SIGHUP.
#
# Keys are EC P-256, unencrypted, mode 0600. Existing files are overwritten.
set -euo pipefail

if [[ $# -lt 1 || "$1" == -* ]]; then
  sed -n '4,21p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
dir=$1
shift
test_certs=0
renew=0
idents=()
for arg in "$@"; do
  case "$arg" in
    --test) test_certs=1 ;;
    --renew-server) renew=1 ;;
    *=*) idents+=("$arg") ;;
    *) echo "make-certs.sh: expected NAME=IDENTITY or --test, got '$arg'" >&2; exit 2 ;;
  esac
done
mkdir -p "$dir"
umask 077
cd "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# ca NAME CN: a self-signed CA.
ca() {
  newkey "$1.key"
  openssl req -x509 -new -key "$1.key" -out "$1.pem" -days 365 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

# leaf NAME CA DAYS SAN EKU CN: a certificate NAME.pem signed by CA.
leaf() {
  local name=$1 issuer=$2 days=$3 san=$4 eku=$5 cn=$6
  newkey "$name.key"
  openssl req -new -key "$name.key" -out "$tmp/$name.csr" -subj "/CN=$cn" 2>/dev/null
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
    "$eku" "$san" >"$tmp/$name.ext"
  openssl x509 -req -in "$tmp/$name.csr" -CA "$issuer.pem" -CAkey "$issuer.key" -CAcreateserial \
    -CAserial "$tmp/$issuer.srl" -days "$days" -extfile "$tmp/$name.ext" -out "$name.pem" 2>/dev/null
}

if [[ $renew == 1 ]]; then
  if [[ ! -f ca.pem || ! -f ca.key ]]; then
    echo "make-certs.sh: --renew-server needs $PWD/ca.pem and ca.key" >&2
    exit 2
  fi
else
  ca ca "kmcld CA"
fi
leaf server ca 365 "DNS:localhost,IP:127.0.0.1${KMCL_SERVER_SANS:+,$KMCL_SERVER_SANS}" serverAuth "kmcld"
for ident in "${idents[@]}"; do
  name=${ident%%=*}
  uri=${ident#*=}
  leaf "$name" ca 365 "URI:$uri" clientAuth "$name"
done
if [[ $test_certs == 1 ]]; then
  ca other-ca "another CA"
  leaf foreign other-ca 365 "URI:spiffe://kmcl.test/foreign" clientAuth "foreign"
  # -days -1: notAfter is yesterday, so verification says "certificate has expired".
  leaf expired ca -1 "URI:spiffe://kmcl.test/expired" clientAuth "expired"
fi
chmod 0644 ./*.pem
echo "make-certs.sh: certificates in $PWD" >&2
