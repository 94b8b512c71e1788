#!/usr/bin/env bash
# ansible-playbook --syntax-check on every Coffer playbook with the
# example inventory (and on the units test's render playbook).
# Exit 77 (skipped) when ansible-playbook is not installed.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
src=${COFFER_SOURCE_DIR:-$(cd "$here/../.." && pwd -P)}
if ! command -v ansible-playbook >/dev/null; then
    echo "syntax_test: SKIP: ansible-playbook is not installed (scripts/deps.sh)" >&2
    exit 77
fi
T=$(mktemp -d /tmp/coffer-ansible-syntax.XXXXXX)
trap 'rm -rf "$T"' EXIT
export ANSIBLE_CONFIG=$src/ansible/ansible.cfg ANSIBLE_HOME=$T/home
export ANSIBLE_LOCAL_TEMP=$T/tmp ANSIBLE_NOCOLOR=1
cd "$src/ansible"
n=0
for pb in site.yml controller.yml vaults.yml tenants.yml agents.yml verify.yml \
    "$src/tests/ansible/render_units.yml"; do
    if ! out=$(ansible-playbook -i inventory/example --syntax-check "$pb" 2>&1); then
        printf '%s\n' "$out" >&2
        echo "syntax_test: FAIL: $pb" >&2
        exit 1
    fi
    # A syntax check that found no playbook prints no "playbook:" line.
    grep -q "^playbook: " <<<"$out" || { echo "syntax_test: FAIL: $pb: $out" >&2; exit 1; }
    n=$((n + 1))
done
# The example inventory must define the groups the playbooks target.
inv=$(ansible-inventory -i inventory/example --graph 2>&1)
for g in coffer_vaults coffer_agents coffer_verify_hosts; do
    grep -q "@$g:" <<<"$inv" || { echo "syntax_test: FAIL: no group $g in the example inventory" >&2; exit 1; }
done
[ "$(grep -c 'vault-.*example.net' <<<"$inv")" = 3 ] ||
    { echo "syntax_test: FAIL: the example inventory does not have 3 vaults" >&2; exit 1; }
echo "syntax_test: $n playbooks pass --syntax-check; inventory groups present"
