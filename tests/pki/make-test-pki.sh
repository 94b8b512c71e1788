#!/usr/bin/env bash
# Generates a throwaway test PKI for the gRPC transport tests (EC P-256).
#
#   tests/pki/make-test-pki.sh DIR
#
# DIR must exist (the tests pass a fresh mkdtemp directory). Nothing here is
# ever committed: every key is created on the spot and dies with DIR.
#
# Files written (PEM; keys are mode 0600). Names are acme's unless said:
#   ca.pem                 the test CA clients and server trust
#   clients-ca.pem         what a vault trusts for clients (same CA)
#   server.pem server.key  SAN DNS:localhost, IP:127.0.0.1 (serverAuth)
#   agent.pem agent.key    SAN URI:coffer://tenant/acme/role/agent
#   agent2.pem agent2.key  a second acme agent (CN "acme agent 2"), the
#                          one tests revoke
#   restore.pem restore.key SAN URI:coffer://tenant/globex/role/restore
#   acme-admin acme-admin2 two acme admins, CN "acme-admin" / "acme-admin2"
#   acme-restore acme-auditor  acme's restore and auditor identities
#   globex-agent           SAN URI:coffer://tenant/globex/role/agent
#   operator operator2     SAN URI:coffer://operator/alice and .../bob,
#                          CN alice / bob: vault-wide operators
#   noid.pem noid.key      valid chain, but only a CN: no coffer identity
#   twoid.pem twoid.key    two coffer URIs: ambiguous, so no identity
#   expired.pem expired.key coffer identity, validity ended in 2020
#   notyet.pem notyet.key  coffer identity, valid only from 2099
#   serveronly.pem .key    coffer identity, but extendedKeyUsage serverAuth
#   rogue-ca.pem           a second, unrelated CA
#   rogue.pem rogue.key    coffer identity signed by the rogue CA
#   vault-a vault-b vault-c peer vaults (replication): SAN DNS:localhost,
#                          IP:127.0.0.1, URI:coffer://vault/vault-<x>,
#                          serverAuth and clientAuth, CN vault-<x>
#   vault-x                the same shape, for a vault no one lists as a
#                          peer

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
mkleaf agent2 ca "acme agent 2" clientAuth "URI:coffer://tenant/acme/role/agent"
for role in admin admin2 restore auditor; do
    mkleaf "acme-$role" ca "acme-$role" clientAuth \
        "URI:coffer://tenant/acme/role/${role%2}"
done
mkleaf globex-agent ca "globex-agent" clientAuth \
    "URI:coffer://tenant/globex/role/agent"
mkleaf operator ca alice clientAuth "URI:coffer://operator/alice"
mkleaf operator2 ca bob clientAuth "URI:coffer://operator/bob"
mkleaf serveronly ca "server-only agent" serverAuth \
    "URI:coffer://tenant/acme/role/agent"
for v in a b c x; do
    mkleaf "vault-$v" ca "vault-$v" serverAuth,clientAuth \
        "DNS:localhost,IP:127.0.0.1,URI:coffer://vault/vault-$v"
done

# openssl x509 cannot date a certificate outside "now", openssl ca can: a
# minimal CA database just for the leaves valid one day in 2020 (expired)
# and one day in 2099 (not yet valid).
mkdir -p dated-ca
: > dated-ca/index.txt
echo 1000 > dated-ca/serial
cat > dated-ca/ca.cnf <<CNF
[ca]
default_ca = test
[test]
database = dated-ca/index.txt
serial = dated-ca/serial
new_certs_dir = dated-ca
default_md = sha256
policy = any
copy_extensions = none
x509_extensions = leaf
unique_subject = no
[any]
commonName = supplied
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = URI:coffer://tenant/acme/role/agent
CNF
dated() {
    local name=$1 from=$2 until=$3
    newkey "$name.key"
    openssl req -new -key "$name.key" -out "$name.csr" \
        -subj "/CN=$name agent" 2>/dev/null
    openssl ca -batch -config dated-ca/ca.cnf -cert ca.pem -keyfile ca.key \
        -startdate "$from" -enddate "$until" \
        -in "$name.csr" -out "$name.pem" -notext 2>/dev/null
    rm -f "$name.csr"
}
dated expired 20200101000000Z 20200102000000Z
dated notyet 20990101000000Z 20990102000000Z
rm -rf dated-ca ca.srl rogue-ca.srl
cp ca.pem clients-ca.pem

# A step that failed quietly must not leave a test with a missing identity.
for name in server agent agent2 restore acme-admin acme-admin2 acme-restore \
    acme-auditor globex-agent operator operator2 noid twoid expired notyet \
    serveronly rogue vault-a vault-b vault-c vault-x; do
    [ -s "$name.pem" ] && [ -s "$name.key" ] ||
        { echo "make-test-pki: $name was not created" >&2; exit 1; }
done

# The CA keys are not needed once the leaves exist.
rm -f ca.key rogue-ca.key
chmod 600 ./*.key
chmod 644 ./*.pem
