#!/bin/sh
# The one-shot `db-tls` service of deploy/compose.yaml: a private CA and PostgreSQL's
# server certificate, made inside the stack (no key is ever in git), before `postgres`
# starts. LOCAL ONLY: production certificates come from your PKI.
#
#   DB_TLS_CA_DIR      ca.crt only: the volume rotator mounts, read-only    (/tls/ca)
#   DB_TLS_SERVER_DIR  server.crt and server.key: postgres's volume only   (/tls/server)
#   DB_TLS_HOSTNAME    the name clients connect to, which verify-full checks (postgres)
#   DB_TLS_KEY_OWNER   who owns server.key when this runs as root (postgres): PostgreSQL
#                      refuses a key file that others may read
#
# Idempotent: while the certificate is signed by ca.crt, names DB_TLS_HOSTNAME and is
# valid for 30 more days, nothing changes. The CA's key never leaves this run: once the
# server certificate is signed it is deleted, so nothing else can be signed by that CA.
set -eu
umask 077

ca_dir=${DB_TLS_CA_DIR:-/tls/ca}
server_dir=${DB_TLS_SERVER_DIR:-/tls/server}
host=${DB_TLS_HOSTNAME:-postgres}
key_owner=${DB_TLS_KEY_OWNER:-postgres}

if [ -s "$ca_dir/ca.crt" ] && [ -s "$server_dir/server.key" ] \
    && openssl verify -CAfile "$ca_dir/ca.crt" -verify_hostname "$host" \
        "$server_dir/server.crt" >/dev/null 2>&1 \
    && openssl x509 -checkend 2592000 -noout -in "$server_dir/server.crt" >/dev/null; then
    echo "db-tls: the certificate for $host is in place"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$work/ca.key" -out "$work/ca.crt" -days 3650 \
    -subj "/CN=rotator compose PostgreSQL CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$work/server.key" -out "$work/server.csr" -subj "/CN=$host"
cat > "$work/server.ext" <<EXT
subjectAltName = DNS:$host
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
EXT
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
    -CAcreateserial -days 825 -extfile "$work/server.ext" -out "$work/server.crt"

# Each file is complete before it takes its name (a rename), so postgres never reads half.
mkdir -p "$ca_dir" "$server_dir"
install -m 0600 "$work/server.key" "$server_dir/server.key.tmp"
install -m 0444 "$work/server.crt" "$server_dir/server.crt.tmp"
install -m 0444 "$work/ca.crt" "$ca_dir/ca.crt.tmp"
if [ "$(id -u)" = 0 ]; then
    chown "$key_owner" "$server_dir" "$server_dir/server.key.tmp" "$server_dir/server.crt.tmp"
fi
chmod 0700 "$server_dir"
chmod 0755 "$ca_dir"        # rotator's user (10001) reads ca.crt, and nothing else is there
mv -f "$server_dir/server.key.tmp" "$server_dir/server.key"
mv -f "$server_dir/server.crt.tmp" "$server_dir/server.crt"
mv -f "$ca_dir/ca.crt.tmp" "$ca_dir/ca.crt"
echo "db-tls: a new CA and a certificate for $host"
