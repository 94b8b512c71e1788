#!/usr/bin/env bash
# The roles' systemd units (and the vault's nftables table), rendered with
# the roles' defaults, that is as production gets them:
#   - systemd-analyze verify finds nothing to say about them;
#   - every service keeps its hardening (dedicated user, no new
#     privileges, read-only system, private /tmp, a capability bounding
#     set) and every timer its schedule (backup hourly, recovery test and
#     retention daily);
#   - contrib/systemd/coffer-vault.service and coffer-agent.{service,timer}
#     are those renders (so the package ships what the roles install);
#   - nft -c accepts the firewall table (when nft runs here as root).
# Exit 77 when ansible-playbook or systemd-analyze is missing.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
src=${COFFER_SOURCE_DIR:-$(cd "$here/../.." && pwd -P)}
for tool in ansible-playbook systemd-analyze; do
    if ! command -v "$tool" >/dev/null; then
        echo "units_test: SKIP: $tool is not installed" >&2
        exit 77
    fi
done
T=$(mktemp -d /tmp/coffer-ansible-units.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() {
    echo "units_test: FAIL: $*" >&2
    exit 1
}
export ANSIBLE_CONFIG=$src/ansible/ansible.cfg ANSIBLE_HOME=$T/home
export ANSIBLE_LOCAL_TEMP=$T/tmp ANSIBLE_NOCOLOR=1
mkdir -p "$T/render" "$T/verify" "$T/bin"
ansible-playbook -i localhost, "$here/render_units.yml" -e "coffer_src=$src" \
    -e "render_dir=$T/render" -e ansible_python_interpreter=/usr/bin/python3 \
    >"$T/render.log" 2>&1 || { cat "$T/render.log" >&2; fail "rendering failed"; }

services=(coffer-vault.service coffer-agent.service coffer-verify.service coffer-retention.service)
timers=(coffer-agent.timer coffer-verify.timer coffer-retention.timer)
for u in "${services[@]}" "${timers[@]}"; do
    [ -s "$T/render/$u" ] || fail "$u was not rendered"
done

# Hardening, line by line, in every service.
for u in "${services[@]}"; do
    f=$T/render/$u
    for want in '^User=coffer$' '^Group=coffer$' '^NoNewPrivileges=yes$' \
        '^ProtectSystem=strict$' '^PrivateTmp=yes$' '^PrivateDevices=yes$' \
        '^CapabilityBoundingSet=' '^RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX$' \
        '^SystemCallFilter=@system-service$' '^UMask=0077$' '^ExecStart=/usr/bin/coffer-'; do
        grep -q "$want" "$f" || fail "$u lacks $want"
    done
done
# Only the agent may hold a capability, and only the one that reads files.
for u in coffer-vault.service coffer-verify.service coffer-retention.service; do
    grep -q '^CapabilityBoundingSet=$' "$T/render/$u" || fail "$u has capabilities"
done
grep -q '^CapabilityBoundingSet=CAP_DAC_READ_SEARCH$' "$T/render/coffer-agent.service" ||
    fail "coffer-agent.service: bounding set is not CAP_DAC_READ_SEARCH alone"
grep -q '^ReadWritePaths=/var/lib/coffer-vault$' "$T/render/coffer-vault.service" ||
    fail "coffer-vault.service does not write its data directory"
grep -q '^OnCalendar=hourly$' "$T/render/coffer-agent.timer" || fail "backup is not hourly"
grep -q '^OnCalendar=daily$' "$T/render/coffer-verify.timer" || fail "verify is not daily"
grep -q '^OnCalendar=\*-\*-\* 03:00:00$' "$T/render/coffer-retention.timer" ||
    fail "retention is not daily"

# The package's units are the roles' renders (after their own header).
for u in coffer-vault.service coffer-agent.service coffer-agent.timer; do
    /usr/bin/python3 - "$src/contrib/systemd/$u" "$T/render/$u" <<'PY' ||
import sys
contrib, rendered = (open(p).read() for p in sys.argv[1:3])
body = rendered.split("\n", 1)[1]     # without the "managed by" line
sys.exit(0 if contrib.endswith(body) else 1)
PY
        fail "contrib/systemd/$u differs from the role's render; re-render it (docs/DEPLOY.md)"
done

# systemd-analyze checks that ExecStart exists: stand-ins for the programs.
for p in coffer-vault coffer-agent coffer-restore; do
    ln -s /bin/true "$T/bin/$p"
done
for u in "${services[@]}" "${timers[@]}"; do
    sed "s#/usr/bin/coffer-#$T/bin/coffer-#" "$T/render/$u" >"$T/verify/$u"
done
rc=0
out=$(cd "$T/verify" && SYSTEMD_LOG_LEVEL=warning systemd-analyze verify \
    "${services[@]}" "${timers[@]}" 2>&1) || rc=$?
# Remarks about the machine (no systemd running here) do not name our
# units; any remark about them fails, as does a non-zero exit.
if [ "$rc" -ne 0 ] || grep -q 'coffer-' <<<"$out"; then
    printf '%s\n' "$out" >&2
    fail "systemd-analyze verify exited $rc"
fi

nft_note="nft -c not run (needs nft and root)"
if command -v nft >/dev/null && [ "$(id -u)" = 0 ]; then
    nft -c -f "$T/render/coffer-vault.nft" || fail "nft -c rejects coffer-vault.nft"
    nft_note="nft -c accepts coffer-vault.nft"
fi
grep -q '^    tcp dport 7443 accept$' "$T/render/coffer-vault.nft" || fail "vault port not opened"
[ "$(grep -c 'dport' "$T/render/coffer-vault.nft")" = 2 ] ||
    fail "coffer-vault.nft opens more than SSH and the vault port"
grep -q 'policy drop;' "$T/render/coffer-vault.nft" || fail "coffer-vault.nft does not drop by default"
echo "units_test: ${#services[@]} services and ${#timers[@]} timers verified; $nft_note"
