#!/usr/bin/env bash
# ansible-lint (Debian's package, offline, production profile from
# ansible/.ansible-lint) on the Coffer roles and playbooks: no violation
# and no warning may remain. Exit 77 when ansible-lint is not installed.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
src=${COFFER_SOURCE_DIR:-$(cd "$here/../.." && pwd -P)}
if ! command -v ansible-lint >/dev/null; then
    echo "lint_test: SKIP: ansible-lint is not installed (scripts/deps.sh)" >&2
    exit 77
fi
T=$(mktemp -d /tmp/coffer-ansible-lint.XXXXXX)
trap 'rm -rf "$T"' EXIT
export ANSIBLE_CONFIG=$src/ansible/ansible.cfg ANSIBLE_HOME=$T/home
export ANSIBLE_LOCAL_TEMP=$T/tmp NO_COLOR=1
cd "$src/ansible"
rc=0
out=$(ansible-lint --offline --nocolor 2>&1) || rc=$?
if [ "$rc" -ne 0 ] || ! grep -q '0 failure(s), 0 warning(s)' <<<"$out"; then
    printf '%s\n' "$out" >&2
    echo "lint_test: FAIL: ansible-lint exited $rc" >&2
    exit 1
fi
grep 'Passed' <<<"$out"
