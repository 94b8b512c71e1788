/*
 * maint.c - retention, the retention audit, purge, holds and approvals
 * (maint.h, docs/RETENTION.md).
 *
 * Invariants:
 *  1. Options are parsed and checked before the session opens: a usage
 *     error touches no vault and asks for no passphrase.
 *  2. Every vault is handled on its own: one that fails or waits for a
 *     second factor is reported and the others still run; the exit code
 *     says the worst (failure > pending > a check that found something).
 *  3. The audit reads each replica through its own one-vault fetcher, so
 *     a replica is never vouched for with another's data, and compares
 *     times with that vault's own clock (Health), the clock retention
 *     uses.
 *  4. Nothing secret is printed: TOTP codes and keys never appear in
 *     output or logs; the packed request holding a code is wiped.
 */
#include "maint.h"

#include <inttypes.h> /* PRIu64 */
#include <stdio.h>    /* printf */
#include <stdlib.h>   /* qsort */
#include <string.h>   /* memcmp, strcmp */
#include <strings.h>  /* strncasecmp */
#include <time.h>     /* clock_gettime */

#include "buf.h"               /* cfr_hex_encode, struct cfr_buf */
#include "cfg.h"               /* cfr_cfg_read_file, cfr_parse_duration_ms */
#include "coffer_vault.pb-c.h" /* AdminRequest */
#include "id.h"                /* cfr_id_plain */
#include "json.h"              /* cfr_json_fput */
#include "log.h"               /* cfr_log_quote */
#include "manifest.h"          /* restore_manifest_* */
#include "mem.h"               /* cfr_malloc */
#include "rpc.h"               /* cfr_rpc_unary */
#include "select.h"            /* restore_parse_at */
#include "commands.h"          /* restore_cmd_* */
#include "session.h"           /* restore_session, exit codes */

#define M_ADMIN  "/coffer.v1.Vault/Admin"
#define M_HEALTH "/coffer.v1.Vault/Health"
#define M_LIST   "/coffer.v1.Vault/ListSnapshots"

#define ID_LEN        32
#define APPROVAL_LEN  16
#define APPROVALS_MAX RESTORE_FETCH_VAULTS_MAX
#define REASON_MAX    400
#define RESP_MAX      ((size_t)64 << 20)
#define NV            RESTORE_FETCH_VAULTS_MAX

/* ---- the audit's analysis ----------------------------------------------- */

bool
restore_audit_violation(const struct restore_audit_counts *c)
{
    return c->deleted_beyond > 0 || c->stale > 0 || c->gaps > 0 ||
           c->unreadable > 0;
}

static int
id_cmp(const void *a, const void *b)
{
    return memcmp(a, b, ID_LEN);
}

/* A message identity and the last snapshot (index) that held it. */
struct ident {
    uint8_t id[ID_LEN];
    size_t last;
    bool held;
};

int
restore_audit_mailbox(const struct restore_audit_snap *v, size_t n,
                      int64_t cutoff_ms, struct restore_audit_counts *c,
                      struct cfr_err *err)
{
    struct ident *map = NULL, *next = NULL;
    uint8_t(*cur)[ID_LEN] = NULL;
    size_t n_map = 0;
    int rc = 0;

    for (size_t i = 0; i < n; i++) {
        const struct restore_audit_snap *s = &v[i];
        size_t n_cur = 0, a = 0, b = 0, k = 0;
        c->snapshots++;
        c->held += s->held;
        /*
         * A snapshot is what the mailbox held until the next one: once
         * that next one is older than the window, retention must have
         * dropped it (unless held). Its staying is a violation even when
         * no message tells (the audit may not see every kind of file).
         */
        if (i + 1 < n && !s->held && v[i + 1].received_ms < cutoff_ms) {
            c->stale++;
        }
        /*
         * The parent link names the snapshot this one superseded. When it
         * is gone although this one was received inside the window, mail
         * deleted between the two may have been lost.
         */
        if (!s->has_parent) {
            c->unlinked++;
        } else if ((i == 0 ||
                    memcmp(s->parent, v[i - 1].header_id, ID_LEN) != 0) &&
                   s->received_ms >= cutoff_ms) {
            bool found = false;
            for (size_t j = 0; j < n && !found; j++) {
                found = memcmp(v[j].header_id, s->parent, ID_LEN) == 0;
            }
            c->gaps += !found;
        }
        if (!s->readable) {
            c->unreadable++;
            continue;
        }
        cfr_free(cur);
        cur = NULL;
        if (s->n_ids > 0) {
            if ((cur = cfr_malloc(s->n_ids * ID_LEN)) == NULL) {
                rc = CFR_ERR(err, CFR_ENOMEM, "audit: out of memory");
                goto out;
            }
            memcpy(cur, s->ids, s->n_ids * ID_LEN);
            qsort(cur, s->n_ids, ID_LEN, id_cmp);
            for (size_t j = 0; j < s->n_ids; j++) {
                if (n_cur == 0 || memcmp(cur[n_cur - 1], cur[j], ID_LEN) != 0) {
                    memmove(cur[n_cur++], cur[j], ID_LEN);
                }
            }
        }
        /* Merge: the union, each identity's last appearance updated. */
        if ((next = cfr_calloc(n_map + n_cur + 1, sizeof(*next))) == NULL) {
            rc = CFR_ERR(err, CFR_ENOMEM, "audit: out of memory");
            goto out;
        }
        while (a < n_map || b < n_cur) {
            int d = a == n_map   ? 1
                    : b == n_cur ? -1
                                 : memcmp(map[a].id, cur[b], ID_LEN);
            if (d < 0) {
                next[k++] = map[a++];
                continue;
            }
            if (d == 0) {
                next[k] = map[a++];
            } else {
                memcpy(next[k].id, cur[b], ID_LEN);
                next[k].held = false;
            }
            next[k].last = i;
            next[k].held |= s->held;
            k++;
            b++;
        }
        cfr_free(map);
        map = next;
        next = NULL;
        n_map = k;
    }
    for (size_t j = 0; j < n_map; j++) {
        const struct ident *m = &map[j];
        if (m->last + 1 == n) {
            c->live++;
        } else if (v[m->last + 1].received_ms >= cutoff_ms) {
            c->deleted_within++;
        } else if (m->held) {
            c->deleted_held++;
        } else {
            c->deleted_beyond++;
        }
    }
out:
    cfr_free(cur);
    cfr_free(map);
    cfr_free(next);
    return rc;
}

/* ---- options ------------------------------------------------------------ */

enum {
    O_AUDIT = 1u << 0,
    O_WINDOW = 1u << 1,
    O_MAILBOX = 1u << 2,
    O_SNAPSHOT = 1u << 3,
    O_AT = 1u << 4,
    O_FACTOR = 1u << 5, /* --approval, --totp */
    O_REASON = 1u << 6,
    O_VAULT = 1u << 7,
};

struct mopts {
    const char *cmd;
    bool json, audit, window_given;
    int64_t window_ms;
    const char *mailbox, *snapshot, *at, *totp, *reason, *vault;
    const char *approval[APPROVALS_MAX];
    size_t n_approval;
};

static bool
printable(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        if ((unsigned char)s[n] < 0x20 || (unsigned char)s[n] > 0x7e) {
            return false;
        }
    }
    return n <= max;
}

static bool
hex_ok(const char *s, size_t len)
{
    size_t n = strlen(s);
    if (n != len) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') ||
              (ch >= 'A' && ch <= 'F'))) {
            return false;
        }
    }
    return true;
}

/* The ID part of an --approval value ("ID" or "HOST:PORT=ID"). */
static const char *
approval_id_part(const char *a)
{
    const char *eq = strrchr(a, '=');
    return eq != NULL ? eq + 1 : a;
}

static int
mparse(const char *cmd, unsigned allow, int argc, char **argv, struct mopts *o)
{
    memset(o, 0, sizeof(*o));
    o->cmd = cmd;
    o->window_ms = RESTORE_AUDIT_WINDOW_DEFAULT_MS;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool more = i + 1 < argc;
        if (strcmp(a, "--json") == 0) {
            o->json = true;
        } else if ((allow & O_AUDIT) && strcmp(a, "--audit") == 0) {
            o->audit = true;
        } else if ((allow & O_WINDOW) && strcmp(a, "--window") == 0 && more) {
            const char *w = argv[++i];
            if (cfr_parse_duration_ms(w, &o->window_ms) != 0 ||
                o->window_ms <= 0) {
                fprintf(stderr,
                        "coffer-restore %s: --window: \"%s\" is not a "
                        "positive duration (30d, 12h, 90m)\n",
                        cmd, w);
                return -1;
            }
            o->window_given = true;
        } else if ((allow & O_MAILBOX) && strcmp(a, "--mailbox") == 0 && more) {
            o->mailbox = argv[++i];
        } else if ((allow & O_SNAPSHOT) && strcmp(a, "--snapshot") == 0 &&
                   more) {
            o->snapshot = argv[++i];
        } else if ((allow & O_AT) && strcmp(a, "--at") == 0 && more) {
            o->at = argv[++i];
        } else if ((allow & O_FACTOR) && strcmp(a, "--totp") == 0 && more) {
            o->totp = argv[++i];
        } else if ((allow & O_FACTOR) && strcmp(a, "--approval") == 0 && more) {
            if (o->n_approval == APPROVALS_MAX) {
                fprintf(stderr, "coffer-restore %s: too many --approval\n",
                        cmd);
                return -1;
            }
            o->approval[o->n_approval++] = argv[++i];
        } else if ((allow & O_REASON) && strcmp(a, "--reason") == 0 && more) {
            o->reason = argv[++i];
        } else if ((allow & O_VAULT) && strcmp(a, "--vault") == 0 && more) {
            o->vault = argv[++i];
        } else {
            fprintf(stderr,
                    "coffer-restore %s: unknown or incomplete option \"%s\"\n",
                    cmd, a);
            return -1;
        }
    }
    if (o->window_given && !o->audit) {
        fprintf(stderr,
                "coffer-restore %s: --window goes with --audit (the "
                "vaults apply their own window)\n",
                cmd);
        return -1;
    }
    if (o->mailbox != NULL &&
        (o->mailbox[0] == '\0' || strlen(o->mailbox) > CFR_SNAP_MAILBOX_MAX)) {
        fprintf(stderr, "coffer-restore %s: --mailbox: 1..%d bytes\n", cmd,
                CFR_SNAP_MAILBOX_MAX);
        return -1;
    }
    if (o->snapshot != NULL &&
        (strlen(o->snapshot) < 8 || strlen(o->snapshot) > 2 * ID_LEN ||
         !hex_ok(o->snapshot, strlen(o->snapshot)))) {
        fprintf(stderr,
                "coffer-restore %s: --snapshot: 8 to 64 hex digits "
                "(an ID or a unique prefix, as snapshots prints)\n",
                cmd);
        return -1;
    }
    if (o->totp != NULL) {
        size_t n = strlen(o->totp);
        bool digits = n >= 6 && n <= 8;
        for (size_t k = 0; digits && k < n; k++) {
            digits = o->totp[k] >= '0' && o->totp[k] <= '9';
        }
        if (!digits) {
            fprintf(stderr, "coffer-restore %s: --totp: 6 to 8 digits\n", cmd);
            return -1;
        }
        if (o->n_approval > 0) {
            fprintf(stderr,
                    "coffer-restore %s: --totp or --approval, not both\n", cmd);
            return -1;
        }
    }
    for (size_t k = 0; k < o->n_approval; k++) {
        const char *id = approval_id_part(o->approval[k]);
        if (!hex_ok(id, 2 * APPROVAL_LEN) ||
            (id != o->approval[k] && id - 1 == o->approval[k])) {
            fprintf(stderr,
                    "coffer-restore %s: --approval: 32 hex digits, or "
                    "HOST:PORT=ID for one vault\n",
                    cmd);
            return -1;
        }
    }
    if (o->reason != NULL && !printable(o->reason, REASON_MAX)) {
        fprintf(stderr,
                "coffer-restore %s: --reason: printable ASCII, at most %d "
                "bytes\n",
                cmd, REASON_MAX);
        return -1;
    }
    return 0;
}

/* ---- the session: restore session plus admin clients --------------------- */

struct msess {
    struct restore_session s;
    char *admin_cert, *admin_key;
    struct cfr_rpc_client *adm[NV];
    struct cfr_rpc_client *rd[NV]; /* restore certificate (Health, List) */
};

static void
msess_fini(struct msess *m)
{
    for (size_t i = 0; i < NV; i++) {
        cfr_rpc_client_free(m->adm[i]);
        cfr_rpc_client_free(m->rd[i]);
        m->adm[i] = m->rd[i] = NULL;
    }
    cfr_cfg_free_file(m->admin_cert);
    cfr_cfg_free_file(m->admin_key);
    m->admin_cert = m->admin_key = NULL;
    restore_session_fini(&m->s);
}

static int
msess_open(struct msess *m, const char *config, bool admin, struct cfr_err *err)
{
    const struct restore_config *c;
    int code;

    memset(m, 0, sizeof(*m));
    m->s.config_path = config;
    if ((code = restore_session_open(&m->s, err)) != RESTORE_EXIT_OK) {
        return code;
    }
    c = &m->s.cfg;
    if (admin) {
        if (c->admin_tls_cert == NULL || c->admin_tls_key == NULL) {
            CFR_ERR(err, CFR_ECONFIG,
                    "admin_tls = { cert = ...; key = ... } is not configured: "
                    "this command needs the tenant's admin certificate");
            return RESTORE_EXIT_CONFIG;
        }
        if ((m->admin_cert = cfr_cfg_read_file(
                 c->admin_tls_cert, "admin_tls.cert", err)) == NULL ||
            (m->admin_key = cfr_cfg_read_file(c->admin_tls_key, "admin_tls.key",
                                              err)) == NULL) {
            return RESTORE_EXIT_CONFIG;
        }
    }
    for (size_t i = 0; i < c->n_vaults; i++) {
        struct cfr_rpc_client_opts co;
        memset(&co, 0, sizeof(co));
        co.target = c->vaults[i];
        co.target_name = c->tls_server_name;
        co.ca_pem = m->s.ca;
        co.max_msg = RESP_MAX;
        co.cert_pem = m->s.cert;
        co.key_pem = m->s.key;
        if (cfr_rpc_client_new(&co, &m->rd[i], err) != 0) {
            return RESTORE_EXIT_OTHER;
        }
        if (admin) {
            co.cert_pem = m->admin_cert;
            co.key_pem = m->admin_key;
            if (cfr_rpc_client_new(&co, &m->adm[i], err) != 0) {
                return RESTORE_EXIT_OTHER;
            }
        }
    }
    return RESTORE_EXIT_OK;
}

static int64_t
mtimeout(const struct msess *m)
{
    return m->s.cfg.timeout_ms > 0 ? m->s.cfg.timeout_ms : 120000;
}

/* Which configured vaults a command runs on: all, or --vault's one. */
static int
targets(const struct msess *m, const struct mopts *o, bool *on,
        struct cfr_err *err)
{
    bool any = false;
    for (size_t i = 0; i < m->s.cfg.n_vaults; i++) {
        on[i] = o->vault == NULL || strcmp(o->vault, m->s.cfg.vaults[i]) == 0;
        any |= on[i];
    }
    if (!any) {
        return CFR_ERR(err, CFR_EINVAL,
                       "--vault %s is not one of the configured vaults",
                       o->vault);
    }
    return 0;
}

/*
 * The approval ID given for vault target: "HOST:PORT=ID" naming it, or a
 * bare ID when exactly one vault is addressed. false: none.
 */
static bool
approval_for(const struct mopts *o, const char *target, bool one_vault,
             uint8_t out[APPROVAL_LEN])
{
    for (size_t k = 0; k < o->n_approval; k++) {
        const char *a = o->approval[k];
        const char *id = approval_id_part(a);
        bool match = id == a ? one_vault
                             : (size_t)(id - 1 - a) == strlen(target) &&
                                   memcmp(a, target, strlen(target)) == 0;
        if (match && cfr_hex_decode(id, out, APPROVAL_LEN) == 0) {
            return true;
        }
    }
    return false;
}

/* One Admin call. *resp_r owned on success. */
static int
admin_call(struct cfr_rpc_client *cli, int64_t timeout_ms,
           const Coffer__V1__AdminRequest *req,
           Coffer__V1__AdminResponse **resp_r, int *status_r,
           struct cfr_err *err)
{
    size_t len = coffer__v1__admin_request__get_packed_size(req);
    uint8_t *p = cfr_malloc(len + 1);
    struct cfr_buf resp;
    int rc;

    *resp_r = NULL;
    *status_r = CFR_RPC_INTERNAL;
    if (p == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "admin request: out of memory");
    }
    coffer__v1__admin_request__pack(req, p);
    cfr_buf_init(&resp, RESP_MAX);
    rc = cfr_rpc_unary(cli, M_ADMIN, p, len, timeout_ms, &resp, status_r, err);
    /* It may carry a one-time code. */
    memset(p, 0, len);
    cfr_free(p);
    if (rc == 0) {
        *resp_r = coffer__v1__admin_response__unpack(NULL, resp.len, resp.data);
        if (*resp_r == NULL) {
            *status_r = CFR_RPC_INTERNAL;
            rc = CFR_ERR(err, CFR_ECORRUPT, "Admin: answer does not decode");
        }
    }
    cfr_buf_fini(&resp);
    return rc;
}

/* ListSnapshots of one mailbox (NULL: all) on one client. */
static int
list_call(struct cfr_rpc_client *cli, int64_t timeout_ms,
          const uint8_t *mailbox_id, Coffer__V1__ListSnapshotsResponse **resp_r,
          struct cfr_err *err)
{
    Coffer__V1__ListSnapshotsRequest req =
        COFFER__V1__LIST_SNAPSHOTS_REQUEST__INIT;
    uint8_t p[64];
    size_t len;
    struct cfr_buf resp;
    int st, rc;

    *resp_r = NULL;
    if (mailbox_id != NULL) {
        req.mailbox_id.data = (uint8_t *)mailbox_id;
        req.mailbox_id.len = ID_LEN;
    }
    len = coffer__v1__list_snapshots_request__pack(&req, p);
    cfr_buf_init(&resp, RESP_MAX);
    rc = cfr_rpc_unary(cli, M_LIST, p, len, timeout_ms, &resp, &st, err);
    if (rc == 0) {
        *resp_r = coffer__v1__list_snapshots_response__unpack(NULL, resp.len,
                                                              resp.data);
        if (*resp_r == NULL) {
            rc = CFR_ERR(err, CFR_ECORRUPT,
                         "ListSnapshots: answer does not decode");
        }
    }
    cfr_buf_fini(&resp);
    return rc;
}

/* The vault's clock (Health). */
static int
vault_time(struct cfr_rpc_client *cli, int64_t timeout_ms, int64_t *ms_r,
           struct cfr_err *err)
{
    struct cfr_buf resp;
    Coffer__V1__HealthResponse *h;
    int st, rc;

    cfr_buf_init(&resp, 1 << 16);
    rc = cfr_rpc_unary(cli, M_HEALTH, "", 0, timeout_ms, &resp, &st, err);
    if (rc == 0) {
        h = coffer__v1__health_response__unpack(NULL, resp.len, resp.data);
        if (h == NULL || h->time_ms <= 0) {
            rc = CFR_ERR(err, CFR_ECORRUPT, "Health: no time in the answer");
        } else {
            *ms_r = h->time_ms;
        }
        if (h != NULL) {
            coffer__v1__health_response__free_unpacked(h, NULL);
        }
    }
    cfr_buf_fini(&resp);
    return rc;
}

/* ---- per-vault results of admin operations ------------------------------ */

enum vres { V_SKIP = 0, V_DONE, V_PENDING, V_FAILED, V_NOTHING };

struct vout {
    uint64_t snapshots_removed, objects_removed, bytes_removed;
    uint64_t left; /* purge: snapshots still listed afterwards */
    struct cfr_err err;
    enum vres res;
    bool checked;
    uint8_t approval[APPROVAL_LEN];
};

static void
print_pending_hint(const struct msess *m, const struct mopts *o,
                   const struct vout *v)
{
    bool any = false;
    for (size_t i = 0; i < m->s.cfg.n_vaults; i++) {
        char hex[2 * APPROVAL_LEN + 1];
        if (v[i].res != V_PENDING) {
            continue;
        }
        cfr_hex_encode(v[i].approval, APPROVAL_LEN, hex);
        if (!any) {
            printf("A second admin of the tenant approves each (with their "
                   "own admin_tls):\n");
        }
        any = true;
        printf("  coffer-restore approve --vault %s --approval %s\n",
               m->s.cfg.vaults[i], hex);
    }
    if (!any) {
        return;
    }
    printf("then repeat this command with, for each vault, --approval "
           "HOST:PORT=ID\n");
    for (size_t i = 0; i < m->s.cfg.n_vaults; i++) {
        char hex[2 * APPROVAL_LEN + 1];
        if (v[i].res == V_PENDING) {
            printf("  --approval %s=%s\n", m->s.cfg.vaults[i],
                   cfr_hex_encode(v[i].approval, APPROVAL_LEN, hex));
        }
    }
    printf("or with --totp CODE from your authenticator.\n");
    (void)o;
}

static void
print_vouts_json(const struct msess *m, const char *op, const struct vout *v,
                 int code)
{
    printf("{\"op\":");
    cfr_json_fput(stdout, op);
    printf(",\"ok\":%s,\"exit\":%d,\"vaults\":[",
           code == RESTORE_EXIT_OK ? "true" : "false", code);
    for (size_t i = 0, k = 0; i < m->s.cfg.n_vaults; i++) {
        static const char *const names[] = {"skipped", "done", "pending",
                                            "failed", "nothing-to-do"};
        char hex[2 * APPROVAL_LEN + 1];
        if (v[i].res == V_SKIP) {
            continue;
        }
        printf("%s{\"vault\":", k++ > 0 ? "," : "");
        cfr_json_fput(stdout, m->s.cfg.vaults[i]);
        printf(",\"result\":\"%s\"", names[v[i].res]);
        if (v[i].res == V_PENDING) {
            printf(",\"approval_id\":\"%s\"",
                   cfr_hex_encode(v[i].approval, APPROVAL_LEN, hex));
        }
        printf(",\"snapshots_removed\":%" PRIu64 ",\"objects_removed\":%" PRIu64
               ",\"bytes_removed\":%" PRIu64,
               v[i].snapshots_removed, v[i].objects_removed,
               v[i].bytes_removed);
        if (v[i].checked) {
            printf(",\"snapshots_left\":%" PRIu64, v[i].left);
        }
        printf(",\"error\":");
        if (v[i].res == V_FAILED) {
            cfr_json_fput(stdout, v[i].err.msg);
        } else {
            printf("null");
        }
        printf("}");
    }
    printf("]}\n");
}

/* failure > pending > a failed check > ok (invariant 2). */
static int
vouts_exit(const struct msess *m, const struct vout *v)
{
    bool pending = false, left = false, failed = false;
    for (size_t i = 0; i < m->s.cfg.n_vaults; i++) {
        failed |= v[i].res == V_FAILED;
        pending |= v[i].res == V_PENDING;
        left |= v[i].checked && v[i].left > 0;
    }
    return failed    ? RESTORE_EXIT_VAULT
           : pending ? RESTORE_MAINT_PENDING
           : left    ? RESTORE_EXIT_VERIFY
                     : RESTORE_EXIT_OK;
}

/* One admin op on vault i into v; 0 when it ran (done or pending). */
static int
run_op(struct msess *m, size_t i, const struct mopts *o, Coffer__V1__AdminOp op,
       const uint8_t *mailbox_id, const uint8_t *header_id, bool factor,
       struct vout *v)
{
    Coffer__V1__AdminRequest req = COFFER__V1__ADMIN_REQUEST__INIT;
    Coffer__V1__AdminResponse *resp = NULL;
    uint8_t appr[APPROVAL_LEN];
    int st, rc;

    req.op = op;
    if (mailbox_id != NULL) {
        req.mailbox_id.data = (uint8_t *)mailbox_id;
        req.mailbox_id.len = ID_LEN;
    }
    if (header_id != NULL) {
        req.header_id.data = (uint8_t *)header_id;
        req.header_id.len = ID_LEN;
    }
    req.reason = (char *)(o->reason != NULL ? o->reason : "");
    if (factor) {
        bool one = o->vault != NULL || m->s.cfg.n_vaults == 1;
        if (o->totp != NULL) {
            req.totp = (char *)o->totp;
        } else if (approval_for(o, m->s.cfg.vaults[i], one, appr)) {
            req.approval_id.data = appr;
            req.approval_id.len = APPROVAL_LEN;
        }
    }
    cfr_err_clear(&v->err);
    rc = admin_call(m->adm[i], mtimeout(m), &req, &resp, &st, &v->err);
    if (rc != 0 || resp == NULL) {
        v->res = V_FAILED;
        return rc != 0 ? rc : CFR_EINTERNAL;
    }
    if (resp->pending) {
        v->res = V_PENDING;
        if (resp->approval_id.len == APPROVAL_LEN) {
            memcpy(v->approval, resp->approval_id.data, APPROVAL_LEN);
        }
    } else {
        v->res = V_DONE;
        v->snapshots_removed += resp->snapshots_removed;
        v->objects_removed += resp->objects_removed;
        v->bytes_removed += resp->bytes_removed;
    }
    coffer__v1__admin_response__free_unpacked(resp, NULL);
    return 0;
}

static void
say_failed(const struct msess *m, size_t i, const struct vout *v, bool json)
{
    if (!json) {
        printf("%s: failed: %s\n", m->s.cfg.vaults[i], v->err.msg);
    }
    fprintf(stderr, "coffer-restore: %s: %s\n", m->s.cfg.vaults[i], v->err.msg);
}

/*
 * GC on vault i after a retention run or a purge: it deletes what they
 * left unreferenced and compacts it off disk (the vault has no separate
 * compaction call). Its counts go into v; when it fails, v is failed and
 * said so. 0 or -1.
 */
static int
gc_into(struct msess *m, size_t i, const struct mopts *o, struct vout *v)
{
    struct vout g;
    memset(&g, 0, sizeof(g));
    if (run_op(m, i, o, COFFER__V1__ADMIN_OP__ADMIN_OP_GC, NULL, NULL, false,
               &g) != 0) {
        v->res = V_FAILED;
        v->err = g.err;
        say_failed(m, i, v, o->json);
        return -1;
    }
    v->objects_removed = g.objects_removed;
    v->bytes_removed = g.bytes_removed;
    return 0;
}

/* ---- retention ---------------------------------------------------------- */

static int
retention_apply(struct msess *m, const struct mopts *o)
{
    struct vout v[NV];
    int code;

    memset(v, 0, sizeof(v));
    for (size_t i = 0; i < m->s.cfg.n_vaults; i++) {
        if (run_op(m, i, o, COFFER__V1__ADMIN_OP__ADMIN_OP_APPLY_RETENTION,
                   NULL, NULL, false, &v[i]) != 0) {
            say_failed(m, i, &v[i], o->json);
            continue;
        }
        if (gc_into(m, i, o, &v[i]) != 0) {
            continue;
        }
        if (!o->json) {
            printf("%s: retention dropped %" PRIu64
                   " snapshot(s); GC removed %" PRIu64 " object(s), %" PRIu64
                   " bytes, compacted\n",
                   m->s.cfg.vaults[i], v[i].snapshots_removed,
                   v[i].objects_removed, v[i].bytes_removed);
        }
    }
    code = vouts_exit(m, v);
    if (o->json) {
        print_vouts_json(m, "retention", v, code);
    }
    return code;
}

/* ---- retention --audit -------------------------------------------------- */

static int
snap_order(const void *a, const void *b)
{
    const struct restore_snapshot *x = a, *y = b;
    int d = memcmp(x->mailbox_id, y->mailbox_id, ID_LEN);
    if (d != 0) {
        return d;
    }
    if (x->received_ms != y->received_ms) {
        return x->received_ms < y->received_ms ? -1 : 1;
    }
    return memcmp(x->header_id, y->header_id, ID_LEN);
}

/* A message's identity: its Message-ID when it has one, else folder and
 * Maildir base name (flags are not part of it: they change). */
static void
entry_identity(const struct cfr_snap_entry *e, uint8_t out[ID_LEN])
{
    uint8_t buf[1 + CFR_SNAP_MESSAGE_ID_MAX + CFR_SNAP_KEY_MAX];
    size_t n;
    if (e->message_id_len > 0) {
        buf[0] = 'm';
        memcpy(buf + 1, e->message_id, e->message_id_len);
        n = 1 + e->message_id_len;
    } else {
        buf[0] = 'k';
        memcpy(buf + 1, e->key, e->key_len);
        n = 1 + e->key_len;
    }
    cfr_id_plain(buf, n, out);
}

/* Every message identity of one snapshot into *ids_r (owned). */
static int
snap_identities(struct restore_fetcher *f, const struct cfr_keyring *kr,
                const struct cfr_snap_header *h, uint8_t (**ids_r)[ID_LEN],
                size_t *n_r, struct cfr_err *err)
{
    struct restore_manifest *mw = NULL;
    struct cfr_snap_entry e;
    uint8_t(*ids)[ID_LEN] = NULL;
    size_t n = 0, cap = 0;
    int rc;

    *ids_r = NULL;
    *n_r = 0;
    if ((rc = restore_manifest_open(f, kr, h, &mw, err)) != 0) {
        return rc;
    }
    while ((rc = restore_manifest_next(mw, &e, err)) == 1) {
        if (e.kind != CFR_SNAP_MAILDIR_MESSAGE) {
            continue;
        }
        if (n == cap) {
            size_t ncap = cap == 0 ? 256 : 2 * cap;
            uint8_t(*nv)[ID_LEN] = cfr_realloc(ids, ncap * ID_LEN);
            if (nv == NULL) {
                rc = CFR_ERR(err, CFR_ENOMEM, "audit: out of memory");
                break;
            }
            ids = nv;
            cap = ncap;
        }
        entry_identity(&e, ids[n++]);
    }
    restore_manifest_free(mw);
    if (rc != 0) {
        cfr_free(ids);
        return rc;
    }
    *ids_r = ids;
    *n_r = n;
    return 0;
}

static void
print_counts_json(const struct restore_audit_counts *c)
{
    printf("\"snapshots\":%" PRIu64 ",\"held\":%" PRIu64 ",\"live\":%" PRIu64
           ",\"deleted_within_window\":%" PRIu64
           ",\"deleted_beyond_window_held\":%" PRIu64
           ",\"deleted_beyond_window_restorable\":%" PRIu64
           ",\"stale_snapshots\":%" PRIu64 ",\"window_gaps\":%" PRIu64
           ",\"unreadable\":%" PRIu64 ",\"unlinked\":%" PRIu64
           ",\"compliant\":%s",
           c->snapshots, c->held, c->live, c->deleted_within, c->deleted_held,
           c->deleted_beyond, c->stale, c->gaps, c->unreadable, c->unlinked,
           restore_audit_violation(c) ? "false" : "true");
}

/* One snapshot's message identities (owned). */
struct snap_ids {
    uint8_t (*v)[ID_LEN];
};

/* Audits one mailbox (v[0..n), oldest first) read through f. */
static int
audit_one(struct restore_fetcher *f, const struct cfr_keyring *kr,
          const struct restore_snapshot *v, size_t n, int64_t cutoff,
          struct restore_audit_counts *c, struct cfr_err *err)
{
    struct restore_audit_snap *as = cfr_calloc(n + 1, sizeof(*as));
    struct snap_ids *ids = cfr_calloc(n + 1, sizeof(*ids));
    int rc = 0;

    if (as == NULL || ids == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "audit: out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        struct cfr_err e;
        memcpy(as[i].header_id, v[i].header_id, ID_LEN);
        as[i].received_ms = v[i].received_ms;
        as[i].held = v[i].held;
        as[i].readable = v[i].open_rc == 0;
        if (!as[i].readable) {
            continue;
        }
        as[i].has_parent = v[i].h.has_parent;
        memcpy(as[i].parent, v[i].h.parent, ID_LEN);
        cfr_err_clear(&e);
        int r = snap_identities(f, kr, &v[i].h, &ids[i].v, &as[i].n_ids, &e);
        if (r == CFR_ENOMEM) {
            *err = e;
            rc = r;
            goto out;
        }
        if (r != 0) {
            char hex[2 * ID_LEN + 1];
            /* Missing, damaged, or the vault stopped answering: either way
             * this replica cannot show what the snapshot holds. */
            as[i].readable = false;
            fprintf(stderr, "coffer-restore: snapshot %.16s: %s\n",
                    cfr_hex_encode(v[i].header_id, ID_LEN, hex), e.msg);
        }
        as[i].ids = (const uint8_t(*)[ID_LEN])ids[i].v;
    }
    rc = restore_audit_mailbox(as, n, cutoff, c, err);
out:
    for (size_t i = 0; ids != NULL && i < n; i++) {
        cfr_free(ids[i].v);
    }
    cfr_free(ids);
    cfr_free(as);
    return rc;
}

/* 0 audited, 1 unreachable (reported), <0 fatal. *viol_r counts. */
static int
audit_replica(struct msess *m, size_t vi, const struct mopts *o, size_t *viol_r,
              bool *first_json)
{
    const struct restore_config *c = &m->s.cfg;
    struct restore_fetch_opts fo;
    struct restore_fetcher *f = NULL;
    struct restore_snapshot *v = NULL;
    size_t n = 0;
    int64_t now = 0, cutoff;
    struct cfr_err err;
    char when[32], cut[32];
    int rc;

    cfr_err_clear(&err);
    memset(&fo, 0, sizeof(fo));
    fo.targets = &c->vaults[vi];
    fo.n_targets = 1;
    fo.target_name = c->tls_server_name;
    fo.ca_pem = m->s.ca;
    fo.cert_pem = m->s.cert;
    fo.key_pem = m->s.key;
    fo.timeout_ms = c->timeout_ms;
    if ((rc = restore_fetcher_new(&fo, &f, &err)) != 0 ||
        (rc = vault_time(m->rd[vi], mtimeout(m), &now, &err)) != 0 ||
        (rc = restore_list(f, m->s.kr, NULL, &v, &n, &err)) != 0) {
        restore_fetcher_free(f);
        if (o->json) {
            printf("%s{\"vault\":", *first_json ? "" : ",");
            *first_json = false;
            cfr_json_fput(stdout, c->vaults[vi]);
            printf(",\"reachable\":false,\"error\":");
            cfr_json_fput(stdout, err.msg);
            printf("}");
        } else {
            printf("%s: unreachable: %s\n", c->vaults[vi], err.msg);
        }
        fprintf(stderr, "coffer-restore: %s: %s\n", c->vaults[vi], err.msg);
        return rc == CFR_ENOMEM ? rc : 1;
    }
    cutoff = now - o->window_ms;
    qsort(v, n, sizeof(*v), snap_order);
    if (o->json) {
        printf("%s{\"vault\":", *first_json ? "" : ",");
        *first_json = false;
        cfr_json_fput(stdout, c->vaults[vi]);
        printf(",\"reachable\":true,\"vault_time\":\"%s\",\"cutoff\":\"%s\","
               "\"mailboxes\":[",
               restore_iso_time(now, when), restore_iso_time(cutoff, cut));
    } else {
        printf("%s: vault time %s, window cutoff %s\n", c->vaults[vi],
               restore_iso_time(now, when), restore_iso_time(cutoff, cut));
        printf("  %-28s %5s %4s %6s %7s %6s %7s %5s %4s %5s %s\n", "MAILBOX",
               "SNAPS", "HELD", "LIVE", "DEL<WIN", "DEL-H", "DEL>WIN", "STALE",
               "GAPS", "UNRD", "RESULT");
    }
    rc = 0;
    for (size_t a = 0, k = 0; a < n && rc == 0; k++) {
        size_t b = a;
        struct restore_audit_counts cnt;
        const char *name = NULL;
        while (b < n && memcmp(v[b].mailbox_id, v[a].mailbox_id, ID_LEN) == 0) {
            if (v[b].open_rc == 0) {
                name = v[b].h.mailbox;
            }
            b++;
        }
        memset(&cnt, 0, sizeof(cnt));
        rc = audit_one(f, m->s.kr, &v[a], b - a, cutoff, &cnt, &err);
        if (rc != 0) {
            break;
        }
        *viol_r += restore_audit_violation(&cnt);
        if (o->json) {
            char hex[2 * ID_LEN + 1];
            printf("%s{\"mailbox\":", k > 0 ? "," : "");
            if (name != NULL) {
                cfr_json_fput(stdout, name);
            } else {
                printf("null");
            }
            printf(",\"mailbox_id\":\"%s\",",
                   cfr_hex_encode(v[a].mailbox_id, ID_LEN, hex));
            print_counts_json(&cnt);
            printf("}");
        } else {
            char q[64];
            printf("  %-28s %5" PRIu64 " %4" PRIu64 " %6" PRIu64 " %7" PRIu64
                   " %6" PRIu64 " %7" PRIu64 " %5" PRIu64 " %4" PRIu64
                   " %5" PRIu64 " %s\n",
                   name != NULL ? cfr_log_quote(name, q, sizeof(q))
                                : "(unreadable)",
                   cnt.snapshots, cnt.held, cnt.live, cnt.deleted_within,
                   cnt.deleted_held, cnt.deleted_beyond, cnt.stale, cnt.gaps,
                   cnt.unreadable,
                   restore_audit_violation(&cnt) ? "VIOLATION" : "ok");
        }
        a = b;
    }
    if (o->json) {
        printf("]}");
    }
    restore_fetcher_free(f);
    cfr_free(v);
    if (rc != 0) {
        fprintf(stderr, "coffer-restore: %s: %s\n", c->vaults[vi], err.msg);
    }
    return rc;
}

static int
retention_audit(struct msess *m, const struct mopts *o)
{
    size_t viol = 0, unreachable = 0;
    bool first = true;
    int rc = 0;

    if (o->json) {
        printf("{\"op\":\"retention-audit\",\"window_ms\":%" PRId64
               ",\"window_source\":\"%s\",\"replicas\":[",
               o->window_ms, o->window_given ? "--window" : "default");
    } else {
        printf("window %" PRId64 " h (%s; a tenant identity cannot ask the "
               "vault for its window)\n",
               o->window_ms / 3600000,
               o->window_given ? "--window" : "default: 30 days");
    }
    for (size_t i = 0; i < m->s.cfg.n_vaults && rc >= 0; i++) {
        rc = audit_replica(m, i, o, &viol, &first);
        unreachable += rc == 1;
    }
    int code = rc < 0            ? RESTORE_EXIT_OTHER
               : viol > 0        ? RESTORE_EXIT_VERIFY
               : unreachable > 0 ? RESTORE_EXIT_VAULT
                                 : RESTORE_EXIT_OK;
    if (o->json) {
        printf("],\"violations\":%zu,\"unreachable\":%zu,\"ok\":%s,"
               "\"exit\":%d}\n",
               viol, unreachable, code == 0 ? "true" : "false", code);
    } else {
        printf("%s: %zu mailbox violation(s), %zu replica(s) unreachable\n",
               code == 0 ? "compliant" : "NOT compliant", viol, unreachable);
    }
    return code;
}

/* ---- command plumbing --------------------------------------------------- */

typedef int mrun_fn(struct msess *m, const struct mopts *o);

static int
mcommand(const char *config, const struct mopts *o, bool admin, mrun_fn *run)
{
    struct msess m;
    struct cfr_err err;
    int code;

    cfr_err_clear(&err);
    code = msess_open(&m, config, admin, &err);
    if (code == RESTORE_EXIT_OK) {
        bool on[NV];
        if (targets(&m, o, on, &err) != 0) {
            fprintf(stderr, "coffer-restore %s: %s\n", o->cmd, err.msg);
            code = RESTORE_EXIT_USAGE;
        } else {
            code = run(&m, o);
        }
    } else {
        restore_session_report(code, o->json, &err);
    }
    fflush(stdout);
    msess_fini(&m);
    return code;
}

int
restore_cmd_retention(const char *config, int argc, char **argv)
{
    struct mopts o;
    if (mparse("retention", O_AUDIT | O_WINDOW, argc, argv, &o) != 0) {
        return RESTORE_EXIT_USAGE;
    }
    return o.audit ? mcommand(config, &o, false, retention_audit)
                   : mcommand(config, &o, true, retention_apply);
}

/* ---- purge -------------------------------------------------------------- */

/* Snapshots of mailbox_id listed on vault i (admin client). */
static int
count_listed(struct msess *m, size_t i, const uint8_t *mailbox_id,
             uint64_t *n_r, struct cfr_err *err)
{
    Coffer__V1__ListSnapshotsResponse *r = NULL;
    int rc = list_call(m->adm[i], mtimeout(m), mailbox_id, &r, err);
    if (rc == 0) {
        *n_r = 0;
        for (size_t k = 0; k < r->n_snapshots; k++) {
            *n_r += r->snapshots[k]->mailbox_id.len == ID_LEN &&
                    memcmp(r->snapshots[k]->mailbox_id.data, mailbox_id,
                           ID_LEN) == 0;
        }
        coffer__v1__list_snapshots_response__free_unpacked(r, NULL);
    }
    return rc;
}

static int
purge_run(struct msess *m, const struct mopts *o)
{
    struct vout v[NV];
    uint8_t mid[ID_LEN];
    bool on[NV];
    char q[96];
    int code;

    memset(v, 0, sizeof(v));
    (void)targets(m, o, on, NULL);
    cfr_keyring_name_id(m->s.kr, o->mailbox, strlen(o->mailbox), mid);
    for (size_t i = 0; i < m->s.cfg.n_vaults; i++) {
        uint64_t before = 0;
        if (!on[i]) {
            continue;
        }
        /* A vault that lists nothing of the mailbox (purged by an earlier
         * run) is not asked again: that would want a new approval. */
        if (count_listed(m, i, mid, &before, &v[i].err) != 0) {
            v[i].res = V_FAILED;
            say_failed(m, i, &v[i], o->json);
            continue;
        }
        if (before == 0) {
            v[i].res = V_NOTHING;
        } else if (run_op(m, i, o, COFFER__V1__ADMIN_OP__ADMIN_OP_PURGE_MAILBOX,
                          mid, NULL, true, &v[i]) != 0) {
            say_failed(m, i, &v[i], o->json);
            continue;
        }
        if (v[i].res == V_PENDING) {
            char hex[2 * APPROVAL_LEN + 1];
            if (!o->json) {
                printf("%s: pending approval_id=%s\n", m->s.cfg.vaults[i],
                       cfr_hex_encode(v[i].approval, APPROVAL_LEN, hex));
            }
            continue;
        }
        /* Collect and compact what only this mailbox used, then check. */
        if (gc_into(m, i, o, &v[i]) != 0) {
            continue;
        }
        if (count_listed(m, i, mid, &v[i].left, &v[i].err) != 0) {
            v[i].res = V_FAILED;
            say_failed(m, i, &v[i], o->json);
            continue;
        }
        v[i].checked = true;
        if (!o->json) {
            printf("%s: %s %s: %" PRIu64 " snapshot(s) removed, GC removed "
                   "%" PRIu64 " object(s), %" PRIu64
                   " bytes, compacted; %" PRIu64 " snapshot(s) left%s\n",
                   m->s.cfg.vaults[i],
                   v[i].res == V_NOTHING ? "nothing listed of" : "purged",
                   cfr_log_quote(o->mailbox, q, sizeof(q)),
                   v[i].snapshots_removed, v[i].objects_removed,
                   v[i].bytes_removed, v[i].left,
                   v[i].left > 0 ? " (FAILED)" : "");
        }
    }
    code = vouts_exit(m, v);
    if (o->json) {
        print_vouts_json(m, "purge", v, code);
    } else {
        print_pending_hint(m, o, v);
    }
    return code;
}

int
restore_cmd_purge(const char *config, int argc, char **argv)
{
    struct mopts o;
    if (mparse("purge", O_MAILBOX | O_FACTOR | O_REASON | O_VAULT, argc, argv,
               &o) != 0) {
        return RESTORE_EXIT_USAGE;
    }
    if (o.mailbox == NULL) {
        fprintf(stderr, "coffer-restore purge: --mailbox is needed\n");
        return RESTORE_EXIT_USAGE;
    }
    return mcommand(config, &o, true, purge_run);
}

/* ---- hold, release ------------------------------------------------------ */

/* The snapshot --snapshot or --mailbox/--at names, from the nearest
 * vault. Returns an exit code. */
static int
resolve_snapshot(struct msess *m, const struct mopts *o, uint8_t hid[ID_LEN],
                 uint8_t mid[ID_LEN], struct cfr_err *err)
{
    struct restore_snapshot *v = NULL;
    size_t n = 0, found = 0;
    int64_t at = RESTORE_AT_NEWEST;
    int rc;

    if (o->at != NULL) {
        int64_t now = 0;
        if (vault_time(m->rd[0], mtimeout(m), &now, err) != 0) {
            now = 0;
        }
        if (now == 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        }
        if (restore_parse_at(o->at, now, &at, err) != 0) {
            return RESTORE_EXIT_USAGE;
        }
    }
    if ((rc = restore_list(m->s.f, m->s.kr, o->mailbox, &v, &n, err)) != 0) {
        return rc == CFR_ENOMEM ? RESTORE_EXIT_OTHER : RESTORE_EXIT_VAULT;
    }
    /* v is newest first. */
    for (size_t i = 0; i < n; i++) {
        char hex[2 * ID_LEN + 1];
        bool match;
        cfr_hex_encode(v[i].header_id, ID_LEN, hex);
        if (o->snapshot != NULL) {
            match = strncasecmp(hex, o->snapshot, strlen(o->snapshot)) == 0;
        } else {
            match = v[i].received_ms <= at && found == 0;
        }
        if (match) {
            if (found++ == 0) {
                memcpy(hid, v[i].header_id, ID_LEN);
                memcpy(mid, v[i].mailbox_id, ID_LEN);
            }
        }
    }
    cfr_free(v);
    if (found == 0) {
        CFR_ERR(err, CFR_ENOTFOUND, "no snapshot matches %s%s",
                o->snapshot != NULL ? "--snapshot " : "--mailbox ",
                o->snapshot != NULL ? o->snapshot : o->mailbox);
        return RESTORE_EXIT_NOTFOUND;
    }
    if (found > 1) {
        CFR_ERR(err, CFR_EINVAL, "--snapshot %s matches %zu snapshots",
                o->snapshot, found);
        return RESTORE_EXIT_USAGE;
    }
    return RESTORE_EXIT_OK;
}

/* Whether header hid is held on vault i (*held_r), or not listed. */
static int
held_on(struct msess *m, size_t i, const uint8_t *mid, const uint8_t *hid,
        bool *listed_r, bool *held_r, struct cfr_err *err)
{
    Coffer__V1__ListSnapshotsResponse *r = NULL;
    int rc = list_call(m->adm[i], mtimeout(m), mid, &r, err);
    *listed_r = *held_r = false;
    if (rc == 0) {
        for (size_t k = 0; k < r->n_snapshots; k++) {
            if (r->snapshots[k]->header_id.len == ID_LEN &&
                memcmp(r->snapshots[k]->header_id.data, hid, ID_LEN) == 0) {
                *listed_r = true;
                *held_r = r->snapshots[k]->held;
            }
        }
        coffer__v1__list_snapshots_response__free_unpacked(r, NULL);
    }
    return rc;
}

static int
hold_common(struct msess *m, const struct mopts *o, bool hold)
{
    struct vout v[NV];
    uint8_t hid[ID_LEN], mid[ID_LEN];
    char hex[2 * ID_LEN + 1];
    struct cfr_err err;
    bool on[NV];
    int code;

    cfr_err_clear(&err);
    memset(v, 0, sizeof(v));
    if ((code = resolve_snapshot(m, o, hid, mid, &err)) != RESTORE_EXIT_OK) {
        return restore_session_report(code, o->json, &err);
    }
    cfr_hex_encode(hid, ID_LEN, hex);
    (void)targets(m, o, on, NULL);
    for (size_t i = 0; i < m->s.cfg.n_vaults; i++) {
        bool listed, held;
        if (!on[i]) {
            continue;
        }
        if (held_on(m, i, mid, hid, &listed, &held, &v[i].err) != 0) {
            v[i].res = V_FAILED;
            say_failed(m, i, &v[i], o->json);
            continue;
        }
        if (!listed) {
            v[i].res = V_FAILED;
            CFR_ERR(&v[i].err, CFR_ENOTFOUND, "snapshot %.16s is not on it",
                    hex);
            say_failed(m, i, &v[i], o->json);
            continue;
        }
        if (held == hold) {
            /* Already so: releasing again would want a new approval. */
            v[i].res = V_NOTHING;
        } else if (run_op(m, i, o,
                          hold ? COFFER__V1__ADMIN_OP__ADMIN_OP_HOLD
                               : COFFER__V1__ADMIN_OP__ADMIN_OP_RELEASE,
                          NULL, hid, !hold, &v[i]) != 0) {
            say_failed(m, i, &v[i], o->json);
            continue;
        }
        if (!o->json) {
            char ah[2 * APPROVAL_LEN + 1];
            if (v[i].res == V_PENDING) {
                printf("%s: pending approval_id=%s\n", m->s.cfg.vaults[i],
                       cfr_hex_encode(v[i].approval, APPROVAL_LEN, ah));
            } else {
                printf("%s: snapshot %.16s %s\n", m->s.cfg.vaults[i], hex,
                       v[i].res == V_NOTHING
                           ? (hold ? "was already held" : "was not held")
                           : (hold ? "held" : "released"));
            }
        }
    }
    code = vouts_exit(m, v);
    if (o->json) {
        print_vouts_json(m, hold ? "hold" : "release", v, code);
    } else {
        print_pending_hint(m, o, v);
    }
    return code;
}

static int
hold_run(struct msess *m, const struct mopts *o)
{
    return hold_common(m, o, true);
}

static int
release_run(struct msess *m, const struct mopts *o)
{
    return hold_common(m, o, false);
}

static int
hold_parse(const char *cmd, bool release, int argc, char **argv,
           struct mopts *o)
{
    unsigned allow = O_MAILBOX | O_SNAPSHOT | O_AT | O_REASON | O_VAULT;
    if (mparse(cmd, release ? allow | O_FACTOR : allow, argc, argv, o) != 0) {
        return -1;
    }
    if ((o->mailbox == NULL) == (o->snapshot == NULL) ||
        (o->at != NULL && o->mailbox == NULL)) {
        fprintf(stderr,
                "coffer-restore %s: --snapshot ID, or --mailbox NAME "
                "[--at T]\n",
                cmd);
        return -1;
    }
    return 0;
}

int
restore_cmd_hold(const char *config, int argc, char **argv)
{
    struct mopts o;
    if (hold_parse("hold", false, argc, argv, &o) != 0) {
        return RESTORE_EXIT_USAGE;
    }
    return mcommand(config, &o, true, hold_run);
}

int
restore_cmd_release(const char *config, int argc, char **argv)
{
    struct mopts o;
    if (hold_parse("release", true, argc, argv, &o) != 0) {
        return RESTORE_EXIT_USAGE;
    }
    return mcommand(config, &o, true, release_run);
}

/* ---- approve ------------------------------------------------------------ */

static int
approve_run(struct msess *m, const struct mopts *o)
{
    Coffer__V1__AdminRequest req = COFFER__V1__ADMIN_REQUEST__INIT;
    Coffer__V1__AdminResponse *resp = NULL;
    uint8_t appr[APPROVAL_LEN];
    struct cfr_err err;
    int st, rc = 0;
    size_t i;

    cfr_err_clear(&err);
    for (i = 0; i < m->s.cfg.n_vaults; i++) {
        if (strcmp(m->s.cfg.vaults[i], o->vault) == 0) {
            break;
        }
    }
    if (!approval_for(o, o->vault, true, appr)) {
        fprintf(stderr, "coffer-restore approve: --approval ID\n");
        return RESTORE_EXIT_USAGE;
    }
    req.op = COFFER__V1__ADMIN_OP__ADMIN_OP_APPROVE;
    req.approval_id.data = appr;
    req.approval_id.len = APPROVAL_LEN;
    req.reason = (char *)(o->reason != NULL ? o->reason : "");
    rc = admin_call(m->adm[i], mtimeout(m), &req, &resp, &st, &err);
    if (resp != NULL) {
        coffer__v1__admin_response__free_unpacked(resp, NULL);
    }
    if (o->json) {
        printf("{\"op\":\"approve\",\"vault\":");
        cfr_json_fput(stdout, o->vault);
        printf(",\"ok\":%s,\"error\":", rc == 0 ? "true" : "false");
        if (rc == 0) {
            printf("null");
        } else {
            cfr_json_fput(stdout, err.msg);
        }
        printf("}\n");
    } else if (rc == 0) {
        printf("%s: approved\n", o->vault);
    }
    if (rc != 0) {
        fprintf(stderr, "coffer-restore: %s\n", err.msg);
        return RESTORE_EXIT_VAULT;
    }
    return RESTORE_EXIT_OK;
}

int
restore_cmd_approve(const char *config, int argc, char **argv)
{
    struct mopts o;
    if (mparse("approve", O_FACTOR | O_REASON | O_VAULT, argc, argv, &o) != 0) {
        return RESTORE_EXIT_USAGE;
    }
    if (o.vault == NULL || o.n_approval != 1 || o.totp != NULL) {
        fprintf(stderr, "coffer-restore approve: --vault HOST:PORT "
                        "--approval ID\n");
        return RESTORE_EXIT_USAGE;
    }
    return mcommand(config, &o, true, approve_run);
}
