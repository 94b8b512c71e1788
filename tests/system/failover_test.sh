#!/usr/bin/env bash
# failover_test.sh - a restore loses its vault midway. Three vaults hold a
# larger mailbox; coffer-restore reads from vault-a (the nearest, first in
# its list) one object per call; once files appear in the target, vault-a
# is cut off. The restore goes on from another replica and its result is
# byte-exact.
set -euo pipefail
# shellcheck source=netns-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/netns-lib.sh"

# The links get their delay once the backup is in (a backup of this
# size over 100-300 ms round trips takes minutes: gRPC's flow-control
# window, not the link, is the limit); no loss, so that the data moves
# at a rate the test can time.
cl_cluster failover later
cl_tenant_add --region r1 --region r2 --region r3
root=$(cl_maildir box 150)
CL_MAILBOXES=("box=$root")
cl_agent_setup 3 vault-a vault-b vault-c
cl_backup backup || nl_fail "backup exited $? (logs/backup.log)"
cl_delays
total=$(cd "$root" && find . -type f -not -path '*/tmp/*' | wc -l)

CL_RESTORE_TIMEOUT=5s
conf=$(cl_restore_conf failover vault-a vault-b vault-c)
# Few objects per call and one file at a time: the restore lasts long
# enough to be cut in the middle (one object per call on a bridge without
# delay).
batch=1
[ "$NL_NETEM" = 0 ] && [ "$NL_EMU" = 0 ] || batch=8
printf 'parallelism = 1;\nbatch = %d;\n' "$batch" >>"$conf"
to=$NL_DIR/restored
nl_spawn cl restore "$NL_DIR/logs/restore.log" "$COFFER_RESTORE_BIN" \
    --config "$conf" restore --mailbox box --to "$to" --json
started() {
    local n
    n=$(find "$to" -type f 2>/dev/null | wc -l)
    [ "$n" -ge 5 ]
}
nl_wait_until 60 "the restore writing files" started
done_n=$(find "$to" -type f 2>/dev/null | wc -l)
nl_alive restore || nl_fail "the restore finished before the cut ($done_n of $total files): too fast to test a failover"
nl_cut vault-a
nl_say "vault-a cut off after $done_n of $total files"
deadline=$(($(nl_now_ms) + 180000))
while nl_alive restore; do
    [ "$(nl_now_ms)" -lt "$deadline" ] || nl_fail "the restore did not finish in 180 s"
    sleep 0.2
done
nl_stop restore
[ "$NL_RC" = 0 ] || nl_fail "the restore exited $NL_RC after vault-a was cut off"
grep -q "restore.switch from=$(cl_addr vault-a)" "$NL_DIR/logs/restore.log" ||
    nl_fail "the restore never switched away from vault-a (logs/restore.log)"
grep -q '"switches":[1-9]' "$NL_DIR/logs/restore.log" ||
    nl_fail "the restore's JSON reports no switch"
diff -r -x tmp "$root" "$to" >"$NL_DIR/logs/diff.log" 2>&1 ||
    nl_fail "restore differs: $(head -n 5 "$NL_DIR/logs/diff.log")"
nl_say "PASS: restore finished from another replica, byte-exact ($total files)"
