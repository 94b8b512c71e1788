#!/usr/bin/env bash
# Installs every Debian package Coffer needs to build, test and benchmark.
# Idempotent: apt-get skips what is already there. Runs on bare bookworm.
#
#   scripts/deps.sh [--bench]
#
# --bench also installs the peers bench/run-peers.sh compares against
# (restic, borgbackup) and GNU time for its probes; the default list does
# not include them.
set -euo pipefail

packages=(
    # Toolchain and build.
    build-essential cmake pkg-config git ca-certificates
    clang libclang-rt-14-dev clang-format clang-tidy cppcheck
    # Libraries the code links against.
    libsodium-dev libzstd-dev libgrpc-dev libprotobuf-c-dev protobuf-c-compiler
    librocksdb-dev libcurl4-openssl-dev libconfig-dev libcmocka-dev
    # Tools the tests and benchmarks drive.
    openssl libssl-dev zstd coreutils python3 iproute2 procps
    # Dovecot reads restored Maildirs in the restore and verify tests.
    dovecot-core dovecot-imapd
    # The Ansible roles and their tests (tests/ansible): ansible-core only
    # (ansible.builtin modules, no Galaxy), ansible-lint (pulls in
    # yamllint, black and python3 libraries), dpkg-dev for the .deb that
    # CPack makes (dpkg-shlibdeps), nftables to check the vault's table.
    ansible-core ansible-lint dpkg-dev nftables
)

case ${1:-} in
"") ;;
--bench) packages+=(restic borgbackup time) ;;
*)
    echo "usage: scripts/deps.sh [--bench]" >&2
    exit 2
    ;;
esac

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "deps: all ${#packages[@]} packages present"
    exit 0
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
