#!/usr/bin/env bash
# Generates a throwaway test PKI for the gRPC transport tests (EC P-256).
#
#   tests/pki/make-test-pki.sh DIR
#
# DIR must exist (the tests pass a fresh mkdtemp directory). Nothing here is
# ever committed: every key is created on the spot and dies with DIR.
#
# Files written (PEM; keys are mode 0600):
#   ca.pem                 the test CA clients and server trust
#   server.pem server.key  SAN DNS:localhost, IP:127.0.0.1
#   agent.pem agent.key    SAN URI:coffer://tenant/acme/role/agent
#   restore.pem restore.key SAN URI:coffer://tenant/globex/role/restore
#   noid.pem noid.key      valid chain, but only a CN: no coffer identity
#   twoid.pem twoid.key    two coffer URIs: ambiguous, so no identity
#   expired.pem expired.key coffer identity, validity ended in 2020
#   rogue-ca.pem           a second, unrelated CA
#   rogue.pem rogue.key    coffer identity signed by the rogue CA
set -euo pipefail

dir=${1:?usage: make-test-pki.sh DIR}
[ -d "$dir" ] || { echo "make-test-pki: $dir is not a directory" >&2; exit 1; }
cd "$dir"
umask 077

# A fresh P-256 key into $1.
newkey() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -out "$1" 2>/dev/null
}

# A self-signed CA: name, subject CN.
mkca() {
    newkey "$1.key"
    openssl req -x509 -new -key "$1.key" -out "$1.pem" -days 30 \
        -subj "/O=Coffer test/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

# A leaf: name, CA name, CN, extended key usage, SAN (may be empty).
mkleaf() {
    local name=$1 ca=$2 cn=$3 eku=$4 san=$5
    newkey "$name.key"
    openssl req -new -key "$name.key" -out "$name.csr" \
        -subj "/O=Coffer test/CN=$cn" 2>/dev/null
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature"
        echo "extendedKeyUsage=$eku"
        [ -n "$san" ] && echo "subjectAltName=$san"
    } > "$name.ext"
    openssl x509 -req -in "$name.csr" -CA "$ca.pem" -CAkey "$ca.key" \
        -CAcreateserial -days 30 -sha256 -extfile "$name.ext" \
        -out "$name.pem" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}

mkca ca "Coffer test CA"
mkca rogue-ca "Unrelated CA"

mkleaf server ca localhost serverAuth "DNS:localhost,IP:127.0.0.1"
mkleaf agent ca "acme agent" clientAuth "URI:coffer://tenant/acme/role/agent"
mkleaf restore ca "globex restore" clientAuth \
    "URI:coffer://tenant/globex/role/restore"
mkleaf noid ca "no identity" clientAuth ""
mkleaf twoid ca "two identities" clientAuth \
    "URI:coffer://tenant/acme/role/agent,URI:coffer://tenant/acme/role/admin"
mkleaf rogue rogue-ca "rogue agent" clientAuth \
    "URI:coffer://tenant/acme/role/agent"

# openssl x509 cannot back-date a certificate, openssl ca can: a minimal CA
# database just for the expired leaf, valid for one day in 2020.
mkdir -p expired-ca
: > expired-ca/index.txt
echo 1000 > expired-ca/serial
cat > expired-ca/ca.cnf <<CNF
[ca]
default_ca = test
[test]
database = expired-ca/index.txt
serial = expired-ca/serial
new_certs_dir = expired-ca
default_md = sha256
policy = any
copy_extensions = none
x509_extensions = leaf
[any]
commonName = supplied
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = URI:coffer://tenant/acme/role/agent
CNF
newkey expired.key
openssl req -new -key expired.key -out expired.csr -subj "/CN=expired agent" \
    2>/dev/null
openssl ca -batch -config expired-ca/ca.cnf -cert ca.pem -keyfile ca.key \
    -startdate 20200101000000Z -enddate 20200102000000Z \
    -in expired.csr -out expired.pem -notext 2>/dev/null
rm -rf expired-ca expired.csr ca.srl rogue-ca.srl

# The CA keys are not needed once the leaves exist.
rm -f ca.key rogue-ca.key
chmod 600 ./*.key
chmod 644 ./*.pem
