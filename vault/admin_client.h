/*
 * admin_client.h - coffer-admin's side of the vault's System RPC
 * (proto/coffer_vault.proto): which vaults to reach and with which
 * credentials, one client per vault, the call itself, and the checks and
 * comparisons the command layer (admin_main.c) and its tests share.
 *
 * A running vault holds the lock on its system database, so operators
 * change it over the vault's own mutual-TLS port with an operator
 * certificate (coffer://operator/<name>), never by opening the files.
 *
 * Invariants:
 *  1. Every value this module accepts from a command line or a connection
 *     file is checked before any connection is made (the *_check and
 *     *_parse functions below), so a refused command has touched no vault.
 *  2. The packed request is wiped after the call: it may hold a TOTP
 *     secret (TOTP_SET) or a one-time code.
 *  3. The private key's PEM lives in a struct cfr_secret (guarded, wiped on
 *     free); this module never prints or logs it, nor any other option
 *     value that could be a secret.
 *
 * Thread safety: a struct vault_admin_client may be used by one thread at
 * a time; the helpers are reentrant.
 */
#ifndef VAULT_ADMIN_CLIENT_H
#define VAULT_ADMIN_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h> /* FILE, for the JSON writers */

#include "coffer_vault.pb-c.h" /* SystemRequest, SystemResponse */
#include "err.h"               /* struct cfr_err */
#include "rpc.h"               /* CFR_RPC_FINGERPRINT_LEN */

#define VAULT_ADMIN_VAULTS_MAX  32
#define VAULT_ADMIN_TARGET_MAX  262 /* "[v6 address]:port" or "name:port" */
#define VAULT_ADMIN_PATH_MAX    1024
#define VAULT_ADMIN_TIMEOUT_MS  10000       /* per call, by default */
#define VAULT_ADMIN_TIMEOUT_MAX 600000      /* ten minutes */
#define VAULT_ADMIN_APPROVAL_ID 16          /* bytes (32 hex digits) */
#define VAULT_ADMIN_LIMIT_MAX   10000       /* audit entries per call */
#define VAULT_ADMIN_RESP_MAX    (64u << 20) /* the largest answer read */
/* What sysdb.h allows a tenant; checked here so no vault sees worse. */
#define VAULT_ADMIN_REGIONS_MAX 16
#define VAULT_ADMIN_REGION_MAX  31 /* bytes */
#define VAULT_ADMIN_NOTIFY_MAX  8
#define VAULT_ADMIN_TARGET_TEXT 255 /* bytes of a notify target */
#define VAULT_ADMIN_REASON_MAX  400 /* bytes of a reason */

/*
 * Where and how to connect. Paths are copied in; a connection file and the
 * command line fill one each, and vault_admin_conn_merge lets the command
 * line win field by field.
 */
struct vault_admin_conn {
    size_t n_vaults;
    char vaults[VAULT_ADMIN_VAULTS_MAX][VAULT_ADMIN_TARGET_MAX];
    char cert[VAULT_ADMIN_PATH_MAX];       /* operator certificate (PEM) */
    char key[VAULT_ADMIN_PATH_MAX];        /* its private key (PEM) */
    char ca[VAULT_ADMIN_PATH_MAX];         /* CA that signed the vaults */
    char tls_name[VAULT_ADMIN_TARGET_MAX]; /* "" = each vault's host */
    int64_t timeout_ms;                    /* 0 = not set */
};

/*
 * Reads a libconfig connection file:
 *   vaults = [ "vault1.example.net:7443", "vault2.example.net:7443" ];
 *   tls = { cert = "alice.pem"; key = "alice.key"; ca = "ca.pem";
 *           name = "vault.example.net"; };   # name is optional
 *   timeout = "10s";                         # optional
 * Relative paths are taken relative to the file's directory. Unknown
 * settings are refused. CFR_ECONFIG (located "file:line: setting: ..."),
 * CFR_ENOTFOUND or CFR_EIO.
 */
int vault_admin_conn_load(const char *path, struct vault_admin_conn *c_r,
                          struct cfr_err *err);

/* Copies into dst every field src sets (vaults as a whole list). */
void vault_admin_conn_merge(struct vault_admin_conn *dst,
                            const struct vault_admin_conn *src);

/*
 * Checks a complete connection: at least one vault, every target a
 * "host:port" (port 1..65535, IPv6 as [addr]:port), no vault twice, cert,
 * key and ca given. CFR_EINVAL naming what is wrong.
 */
int vault_admin_conn_check(const struct vault_admin_conn *c,
                           struct cfr_err *err);
int vault_admin_target_check(const char *target, struct cfr_err *err);

/* ---- checks of operation arguments (all CFR_EINVAL) ------------------- */

/* A tenant name as the vault's registry takes it (sysdb.h). */
int vault_admin_tenant_check(const char *name, struct cfr_err *err);
/* A region: 1..31 bytes of [a-z0-9-]. */
int vault_admin_region_check(const char *region, struct cfr_err *err);
/* "https://...", "http://..." or "mailto:user@host", printable, <= 255. */
int vault_admin_notify_check(const char *target, struct cfr_err *err);
/*
 * An identity the vault can deny: a coffer://tenant/T/role/R or
 * coffer://operator/NAME URI exactly as cfr_rpc_identity_parse reads it,
 * or coffer://vault/NAME. *is_vault_r (may be NULL) tells the last kind,
 * whose revocation needs a second factor.
 */
int vault_admin_identity_check(const char *uri, bool *is_vault_r,
                               struct cfr_err *err);
/*
 * A SHA-256 certificate fingerprint: 64 hex digits, or 32 colon-separated
 * pairs as openssl and "cert show" print it; either case. out gets the
 * lower-case form without colons, which is what the vault compares.
 */
int vault_admin_fingerprint_parse(const char *text,
                                  char out[CFR_RPC_FINGERPRINT_LEN + 1],
                                  struct cfr_err *err);
/* An approval ID: 32 hex digits into 16 bytes. */
int vault_admin_approval_parse(const char *text,
                               uint8_t out[VAULT_ADMIN_APPROVAL_ID],
                               struct cfr_err *err);
/* A TOTP code: 6 to 8 ASCII digits. */
int vault_admin_totp_code_check(const char *code, struct cfr_err *err);
/* Printable ASCII text (a reason), at most VAULT_ADMIN_REASON_MAX bytes. */
int vault_admin_text_check(const char *what, const char *text,
                           struct cfr_err *err);
/* A decimal integer in min..max, nothing else. */
int vault_admin_int_parse(const char *what, const char *text, int64_t min,
                          int64_t max, int64_t *v_r, struct cfr_err *err);

/* ---- calls -------------------------------------------------------------- */

struct vault_admin_client;

/*
 * Connects lazily to target with the given PEM texts (borrowed; copied by
 * the transport). Returns owned in *cli_r.
 */
struct vault_admin_client_opts {
    const char *target;
    const char *tls_name; /* NULL = the host part of target */
    const char *ca_pem;
    const char *cert_pem;
    const char *key_pem;
    int64_t timeout_ms; /* each call's deadline; 0 = the default */
};
int vault_admin_client_new(const struct vault_admin_client_opts *opts,
                           struct vault_admin_client **cli_r,
                           struct cfr_err *err);
void vault_admin_client_free(struct vault_admin_client *cli);

/*
 * One System call. On gRPC OK returns 0 with an owned response in *resp_r
 * (free with coffer__v1__system_response__free_unpacked). Otherwise
 * returns a negative code, *resp_r NULL, and err names the vault, the
 * status and the vault's message. *status_r always gets the gRPC status
 * (CFR_RPC_INTERNAL for an answer that does not decode).
 */
int vault_admin_system(struct vault_admin_client *cli,
                       const Coffer__V1__SystemRequest *req,
                       Coffer__V1__SystemResponse **resp_r, int *status_r,
                       struct cfr_err *err);

/* How a call ended, for exit codes and reports. */
enum vault_admin_outcome {
    VAULT_ADMIN_DONE = 0,        /* OK */
    VAULT_ADMIN_UNREACHABLE = 1, /* no answer: down, TLS, deadline */
    VAULT_ADMIN_REFUSED = 2,     /* the vault answered no */
    VAULT_ADMIN_FAILED = 3,      /* the vault or this tool failed */
};
enum vault_admin_outcome vault_admin_outcome_of(int status);

/* ---- reading answers ----------------------------------------------------
 */

/*
 * True when a registered tenant already has the settings a TENANT_ADD
 * asked for: regions and notify targets as sets, and the retention. A
 * retention of 0 ("the vault's default") in either counts as
 * default_retention_ms; pass 0 for a vault that keeps 0 as asked.
 */
bool vault_admin_tenant_same(const Coffer__V1__TenantInfo *want,
                             const Coffer__V1__TenantInfo *have,
                             int64_t default_retention_ms);

/*
 * Strings the vault keeps in its system database (audit records, deny
 * entries) come back as log-safe tokens (cfr_log_quote: plain, or
 * double-quoted with \" \\ \n \xNN escapes). Writes the value such a token
 * stands for as a JSON string, so JSON readers see "" rather than "\"\"".
 * Anything that is not a well-formed quoted token is written as is.
 */
void vault_admin_json_token(FILE *f, const char *token);

/* Writes s with every byte outside printable ASCII shown as '?'. */
void vault_admin_print_safe(FILE *f, const char *s);

/* "2026-11-23T12:00:00.123Z" for a Unix time in ms; "-" for 0. */
const char *vault_admin_time_text(int64_t ms, char *out, size_t size);

/*
 * A duration as the vault writes them back: "30d", "12h", "90s", "250ms"
 * (the largest unit that divides it), "default" for 0.
 */
const char *vault_admin_duration_text(int64_t ms, char *out, size_t size);

/* ---- replication status ------------------------------------------------
 *
 * `coffer-admin replication status` asks every vault for its SYNC_STATUS
 * lines (proto SyncStatus: per tenant, the vault's own line with peer ""
 * and one line per peer it pulls from) and shows one table per tenant
 * with one row per vault. The aggregation is a pure function over the
 * answers so that it is tested without vaults.
 */

/* What one vault answered to SYSTEM_OP_SYNC_STATUS, or that it did not. */
struct vault_admin_sync_reply {
    const char *vault; /* "host:port" as given */
    bool answered;
    const char *failure; /* !answered: e.g. "unreachable: UNAVAILABLE" */
    Coffer__V1__SyncStatus *const *lines; /* answered: borrowed */
    size_t n_lines;
};

enum vault_admin_sync_state {
    VAULT_ADMIN_SYNC_OK = 0,        /* the vault has lines for the tenant */
    VAULT_ADMIN_SYNC_ABSENT = 1,    /* answered, but does not sync it */
    VAULT_ADMIN_SYNC_NO_ANSWER = 2, /* the vault did not answer */
};

/* One tenant on one vault. Strings are borrowed from the replies. */
struct vault_admin_sync_row {
    enum vault_admin_sync_state state;
    const char *vault;
    const char *failure; /* NO_ANSWER: the reply's failure text */
    const char *region;  /* the own line's; "" when there is none */
    uint64_t snapshots;
    int64_t newest_ms; /* newest snapshot's received_ms; 0: none */
    /* The newest replica's newest_ms minus this one's; -1 when this one
     * has no snapshot (shown "-"). */
    int64_t lag_ms;
    size_t n_peers; /* peer lines */
    /* The oldest last_ok_ms over the peer lines: how stale the least
     * recently synced peer is. 0: some peer never synced; -1: no peers. */
    int64_t last_sync_ms;
    uint64_t behind; /* sum over the peer lines */
    uint64_t repairs, repair_failures;
    int64_t last_repair_ms;
    /* The error of the most recent failed attempt of any peer line, and
     * that peer; NULL when none. A peer whose last attempt succeeded
     * (last_ok_ms >= last_attempt_ms) has only that round's note there
     * (the guard's "... not pulled (guard)"): shown, with error_note,
     * when that line is behind and no peer failed; else not shown. */
    const char *last_error;
    const char *error_peer;
    bool error_note; /* last_error is a successful round's note */
};

struct vault_admin_sync_tenant {
    const char *name;
    int64_t newest_ms;                 /* over the replicas; 0: none */
    struct vault_admin_sync_row *rows; /* one per reply, in reply order */
};

struct vault_admin_sync_view {
    size_t n_tenants; /* sorted by name */
    struct vault_admin_sync_tenant *tenants;
    size_t n_vaults; /* rows per tenant */
    bool alert;      /* some answered row is behind or has a peer error */
};

/*
 * Builds the view of n replies. tenant (may be NULL) keeps only that
 * tenant, and shows it even when no vault lists it (every row ABSENT or
 * NO_ANSWER); otherwise the tenants are the union of all answers. Lines
 * with an empty tenant are ignored; a vault's second own line for a
 * tenant is ignored. The view borrows from replies: keep them until
 * vault_admin_sync_view_fini. CFR_ENOMEM.
 */
int vault_admin_sync_view_build(const struct vault_admin_sync_reply *replies,
                                size_t n, const char *tenant,
                                struct vault_admin_sync_view *v_r,
                                struct cfr_err *err);
void vault_admin_sync_view_fini(struct vault_admin_sync_view *v);

/* True when row should raise the alarm: answered and behind > 0, or a
 * current peer error. */
bool vault_admin_sync_row_alert(const struct vault_admin_sync_row *r);

/*
 * A span of time, at most two units: "0s" (also for anything under a
 * second or negative), "45s", "4m10s", "3h12m", "2d4h", "12d".
 */
const char *vault_admin_span_text(int64_t ms, char *out, size_t size);

#endif /* VAULT_ADMIN_CLIENT_H */
