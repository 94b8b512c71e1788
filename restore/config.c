/*
 * config.c - reads coffer-restore's configuration and its passphrase
 * (config.h).
 *
 * Invariants:
 *  1. Every setting is checked for type and range and any unknown name is
 *     refused, so a typo never silently becomes a default.
 *  2. The passphrase is only ever in sodium_malloc'd memory (secret.h):
 *     read straight into it from the file or the terminal, never copied
 *     into ordinary buffers, never logged.
 *  3. A passphrase file that group or others may access is refused, like
 *     OpenSSH refuses a private key: the escrow passphrase opens every
 *     mailbox of the tenant.
 */
#include "config.h"

#include <errno.h>    /* errno */
#include <stdio.h>    /* snprintf */
#include <fcntl.h>    /* open */
#include <string.h>   /* memset */
#include <sys/stat.h> /* fstat */
#include <termios.h>  /* echo off for the prompt */
#include <unistd.h>   /* read, close, isatty */

#include "cfg.h" /* libconfig access with checked values */

static const char *const top_keys[] = {
    "tenant", "key_file", "passphrase_file", "vaults", "tls",    "parallelism",
    "batch",  "timeout",  "log_level",       "verify", "notify", "admin_tls",
    NULL};
static const char *const tls_keys[] = {"ca", "cert", "key", "server_name",
                                       NULL};

static int
opt_string(const struct cfr_cfg *cfg, const char *path, const char **out,
           struct cfr_err *err)
{
    *out = NULL;
    if (!cfr_cfg_has(cfg, path)) {
        return 0;
    }
    return cfr_cfg_string(cfg, path, NULL, out, err);
}

static const char *const verify_keys[] = {
    "scratch_dir",      "report",          "metrics",  "state",
    "sample_mailboxes", "sample_messages", "schedule", "jitter",
    "coverage_window",  "live_store",      NULL};
static const char *const notify_keys[] = {
    "webhooks",  "mail_to",   "smtp_url",
    "smtp_from", "smtp_user", "smtp_password_file",
    "ca",        "source",    "timeout",
    "retries",   NULL};

/* An absolute path without NUL tricks; relative paths would depend on the
   working directory of a timer-started service. */
static int
opt_abs_path(const struct cfr_cfg *cfg, const char *path, const char *def,
             const char **out, struct cfr_err *err)
{
    int rc;
    *out = def;
    if (!cfr_cfg_has(cfg, path)) {
        return 0;
    }
    if ((rc = cfr_cfg_string(cfg, path, NULL, out, err)) != 0) {
        return rc;
    }
    if ((*out)[0] != '/') {
        return cfr_cfg_fail(cfg, path, err, "must be an absolute path");
    }
    return 0;
}

static int
read_verify(const struct cfr_cfg *cfg, struct restore_verify_settings *v,
            struct cfr_err *err)
{
    const int64_t zero = 0;
    int64_t n;
    int rc;

    if ((rc = cfr_cfg_check_keys(cfg, "verify", verify_keys, err)) != 0 ||
        (rc = opt_abs_path(cfg, "verify.scratch_dir",
                           "/var/lib/coffer/verify-scratch", &v->scratch_dir,
                           err)) != 0 ||
        (rc = opt_abs_path(cfg, "verify.report", NULL, &v->report_path, err)) !=
            0 ||
        (rc = opt_abs_path(cfg, "verify.metrics", NULL, &v->metrics_path,
                           err)) != 0 ||
        (rc = opt_abs_path(cfg, "verify.state",
                           "/var/lib/coffer/verify/state.json", &v->state_path,
                           err)) != 0 ||
        (rc = opt_abs_path(cfg, "verify.live_store", NULL, &v->live_store,
                           err)) != 0 ||
        (rc = cfr_cfg_duration_ms(cfg, "verify.schedule", "24h", 1000,
                                  INT64_C(30) * 86400000, &v->schedule_ms,
                                  err)) != 0 ||
        (rc = cfr_cfg_duration_ms(cfg, "verify.jitter", "0s", 0, v->schedule_ms,
                                  &v->jitter_ms, err)) != 0 ||
        (rc = cfr_cfg_duration_ms(cfg, "verify.coverage_window", "30d", 3600000,
                                  INT64_C(3650) * 86400000,
                                  &v->coverage_window_ms, err)) != 0 ||
        (rc = cfr_cfg_int(cfg, "verify.sample_mailboxes", &zero, 0,
                          RESTORE_VERIFY_SAMPLE_MAX, &n, err)) != 0) {
        return rc;
    }
    v->sample_mailboxes = (uint64_t)n;
    if ((rc = cfr_cfg_int(cfg, "verify.sample_messages", &zero, 0,
                          RESTORE_VERIFY_SAMPLE_MAX, &n, err)) != 0) {
        return rc;
    }
    v->sample_messages = (uint64_t)n;
    /* One store for every mailbox only makes sense with the mailbox in
       the path; verify expands the pattern and checks the escapes. */
    if (v->live_store != NULL && strstr(v->live_store, "%m") == NULL &&
        strstr(v->live_store, "%u") == NULL) {
        return cfr_cfg_fail(cfg, "verify.live_store", err,
                            "must contain %%m (the mailbox name) or %%u "
                            "(its local part)");
    }
    return 0;
}

/* The same address rule as core/notify (no CR/LF, angle brackets, blanks). */
static bool
address_ok(const char *a)
{
    const char *at = strchr(a, '@');
    if (at == NULL || at == a || at[1] == '\0' || strlen(a) > 254) {
        return false;
    }
    for (const char *p = a; *p != '\0'; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch <= ' ' || ch == 0x7f || ch == '<' || ch == '>' || ch == ',' ||
            ch == '"') {
            return false;
        }
    }
    return true;
}

static bool
has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int
read_list(const struct cfr_cfg *cfg, const char *path, const char **out,
          size_t max, size_t *n_r, struct cfr_err *err)
{
    size_t n = 0;
    int rc;
    if ((rc = cfr_cfg_count(cfg, path, &n, err)) != 0) {
        return rc;
    }
    if (n > max) {
        return cfr_cfg_fail(cfg, path, err, "at most %zu entries", max);
    }
    for (size_t i = 0; i < n; i++) {
        if ((rc = cfr_cfg_string_at(cfg, path, i, &out[i], err)) != 0) {
            return rc;
        }
    }
    *n_r = n;
    return 0;
}

static int
read_notify(const struct cfr_cfg *cfg, struct restore_notify_settings *ns,
            struct cfr_err *err)
{
    const int64_t retries_def = 2;
    int64_t v;
    int rc;

    if ((rc = cfr_cfg_check_keys(cfg, "notify", notify_keys, err)) != 0 ||
        (rc = read_list(cfg, "notify.webhooks", ns->webhooks,
                        RESTORE_NOTIFY_WEBHOOKS_MAX, &ns->n_webhooks, err)) !=
            0 ||
        (rc = read_list(cfg, "notify.mail_to", ns->mail_to,
                        RESTORE_NOTIFY_MAIL_TO_MAX, &ns->n_mail_to, err)) !=
            0 ||
        (rc = opt_string(cfg, "notify.smtp_url", &ns->smtp_url, err)) != 0 ||
        (rc = opt_string(cfg, "notify.smtp_from", &ns->smtp_from, err)) != 0 ||
        (rc = opt_string(cfg, "notify.smtp_user", &ns->smtp_user, err)) != 0 ||
        (rc = opt_abs_path(cfg, "notify.smtp_password_file", NULL,
                           &ns->smtp_password_file, err)) != 0 ||
        (rc = opt_abs_path(cfg, "notify.ca", NULL, &ns->ca_file, err)) != 0 ||
        (rc = opt_string(cfg, "notify.source", &ns->source, err)) != 0 ||
        (rc = cfr_cfg_duration_ms(cfg, "notify.timeout", "10s", 100, 300000,
                                  &ns->timeout_ms, err)) != 0 ||
        (rc = cfr_cfg_int(cfg, "notify.retries", &retries_def, 0, 10, &v,
                          err)) != 0) {
        return rc;
    }
    ns->retries = (unsigned)v;
    for (size_t i = 0; i < ns->n_webhooks; i++) {
        if (!has_prefix(ns->webhooks[i], "http://") &&
            !has_prefix(ns->webhooks[i], "https://")) {
            return cfr_cfg_fail(cfg, "notify.webhooks", err,
                                "entry %zu is not an http:// or https:// URL",
                                i + 1);
        }
    }
    for (size_t i = 0; i < ns->n_mail_to; i++) {
        if (!address_ok(ns->mail_to[i])) {
            return cfr_cfg_fail(cfg, "notify.mail_to", err,
                                "entry %zu is not a mail address", i + 1);
        }
    }
    if (ns->smtp_from != NULL && !address_ok(ns->smtp_from)) {
        return cfr_cfg_fail(cfg, "notify.smtp_from", err, "not a mail address");
    }
    if (ns->smtp_url != NULL && !has_prefix(ns->smtp_url, "smtp://") &&
        !has_prefix(ns->smtp_url, "smtps://")) {
        return cfr_cfg_fail(cfg, "notify.smtp_url", err,
                            "must be an smtp:// or smtps:// URL");
    }
    if (ns->smtp_url != NULL && strchr(ns->smtp_url, '@') != NULL) {
        /* user-info in the URL would put a password in the config. */
        return cfr_cfg_fail(cfg, "notify.smtp_url", err,
                            "must not contain user-info; use smtp_user and "
                            "smtp_password_file");
    }
    if (ns->n_mail_to > 0 && (ns->smtp_url == NULL || ns->smtp_from == NULL)) {
        return cfr_cfg_fail(cfg, "notify.mail_to", err,
                            "needs notify.smtp_url and notify.smtp_from");
    }
    if (ns->smtp_password_file != NULL && ns->smtp_user == NULL) {
        return cfr_cfg_fail(cfg, "notify.smtp_password_file", err,
                            "needs notify.smtp_user");
    }
    return 0;
}

static int
read_all(struct restore_config *c, struct cfr_err *err)
{
    const struct cfr_cfg *cfg = c->cfg;
    const int64_t par_def = 4, batch_def = 256;
    int64_t v;
    size_t n = 0;
    int rc;

    if ((rc = cfr_cfg_check_keys(cfg, "", top_keys, err)) != 0 ||
        (rc = cfr_cfg_check_keys(cfg, "tls", tls_keys, err)) != 0 ||
        (rc = cfr_cfg_string(cfg, "tenant", NULL, &c->tenant, err)) != 0 ||
        (rc = cfr_cfg_string(cfg, "key_file", NULL, &c->key_file, err)) != 0 ||
        (rc = opt_string(cfg, "passphrase_file", &c->passphrase_file, err)) !=
            0 ||
        (rc = cfr_cfg_string(cfg, "tls.ca", NULL, &c->tls_ca, err)) != 0 ||
        (rc = cfr_cfg_string(cfg, "tls.cert", NULL, &c->tls_cert, err)) != 0 ||
        (rc = cfr_cfg_string(cfg, "tls.key", NULL, &c->tls_key, err)) != 0 ||
        (rc = opt_string(cfg, "tls.server_name", &c->tls_server_name, err)) !=
            0 ||
        (rc = cfr_cfg_string(cfg, "log_level", "warn", &c->log_level, err)) !=
            0 ||
        (rc = cfr_cfg_duration_ms(cfg, "timeout", "2m", 1000, INT64_C(3600000),
                                  &c->timeout_ms, err)) != 0 ||
        (rc = cfr_cfg_count(cfg, "vaults", &n, err)) != 0) {
        return rc;
    }
    /* The tenant is a certificate's: the same rule as the URI's. */
    for (const char *p = c->tenant; *p != '\0'; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-') ||
            p - c->tenant >= 63 ||
            (p == c->tenant && (*p == '.' || *p == '-'))) {
            return cfr_cfg_fail(cfg, "tenant", err,
                                "1..63 of [a-z0-9._-], not starting with . "
                                "or -");
        }
    }
    if (n == 0 || n > RESTORE_FETCH_VAULTS_MAX) {
        return cfr_cfg_fail(cfg, "vaults", err,
                            "a list of 1 to %d \"host:port\" addresses",
                            RESTORE_FETCH_VAULTS_MAX);
    }
    for (size_t i = 0; i < n; i++) {
        const char *a;
        if ((rc = cfr_cfg_string_at(cfg, "vaults", i, &a, err)) != 0) {
            return rc;
        }
        if (strrchr(a, ':') == NULL) {
            return cfr_cfg_fail(cfg, "vaults", err,
                                "\"%s\" is not \"host:port\"", a);
        }
        c->vaults[i] = a;
    }
    c->n_vaults = n;
    if ((rc = cfr_cfg_int(cfg, "parallelism", &par_def, 1, 64, &v, err)) != 0) {
        return rc;
    }
    c->parallelism = (unsigned)v;
    if ((rc = cfr_cfg_int(cfg, "batch", &batch_def, 1, RESTORE_FETCH_IDS_MAX,
                          &v, err)) != 0) {
        return rc;
    }
    c->batch = (size_t)v;
    if (cfr_cfg_has(cfg, "admin_tls")) {
        static const char *const admin_keys[] = {"cert", "key", NULL};
        if ((rc = cfr_cfg_check_keys(cfg, "admin_tls", admin_keys, err)) != 0 ||
            (rc = cfr_cfg_string(cfg, "admin_tls.cert", NULL,
                                 &c->admin_tls_cert, err)) != 0 ||
            (rc = cfr_cfg_string(cfg, "admin_tls.key", NULL, &c->admin_tls_key,
                                 err)) != 0) {
            return rc;
        }
    }
    if ((rc = read_verify(cfg, &c->verify, err)) != 0 ||
        (rc = read_notify(cfg, &c->notify, err)) != 0) {
        return rc;
    }
    return 0;
}

static int
finish_load(struct restore_config *c, struct cfr_err *err)
{
    int rc = read_all(c, err);
    if (rc != 0) {
        restore_config_fini(c);
    }
    return rc;
}

int
restore_config_load(const char *path, struct restore_config *c_r,
                    struct cfr_err *err)
{
    memset(c_r, 0, sizeof(*c_r));
    if ((c_r->cfg = cfr_cfg_load_file(path, err)) == NULL) {
        return err != NULL && err->code != 0 ? err->code : CFR_ECONFIG;
    }
    return finish_load(c_r, err);
}

int
restore_config_load_string(const char *text, struct restore_config *c_r,
                           struct cfr_err *err)
{
    memset(c_r, 0, sizeof(*c_r));
    if ((c_r->cfg = cfr_cfg_load_string(text, err)) == NULL) {
        return err != NULL && err->code != 0 ? err->code : CFR_ECONFIG;
    }
    return finish_load(c_r, err);
}

void
restore_config_fini(struct restore_config *c)
{
    if (c == NULL) {
        return;
    }
    cfr_cfg_free(c->cfg);
    memset(c, 0, sizeof(*c));
}

/* Reads from fd into s until EOF or a newline; *len_r bytes. */
static int
read_secret(int fd, bool stop_at_newline, struct cfr_secret *s, size_t *len_r,
            struct cfr_err *err)
{
    uint8_t *p = cfr_secret_rw(s);
    size_t cap = cfr_secret_len(s), len = 0;
    for (;;) {
        ssize_t k = read(fd, p + len, stop_at_newline ? 1 : cap - len);
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            return CFR_ERR_ERRNO(err, CFR_EIO, "passphrase: read failed");
        }
        if (k == 0) {
            break;
        }
        len += (size_t)k;
        if (stop_at_newline && p[len - 1] == '\n') {
            break;
        }
        if (len == cap) {
            return CFR_ERR(err, CFR_ELIMIT, "passphrase: longer than %d bytes",
                           RESTORE_PASSPHRASE_MAX);
        }
    }
    /* One trailing newline (echo "x" > file) is not part of it. */
    if (len > 0 && p[len - 1] == '\n') {
        len--;
        if (len > 0 && p[len - 1] == '\r') {
            len--;
        }
    }
    if (len == 0) {
        return CFR_ERR(err, CFR_ECONFIG, "passphrase: empty");
    }
    *len_r = len;
    return 0;
}

int
restore_passphrase_file(const char *path, struct cfr_secret **s_r,
                        size_t *len_r, struct cfr_err *err)
{
    struct cfr_secret *s = NULL;
    struct stat sb;
    int fd, rc = 0;

    *s_r = NULL;
    *len_r = 0;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0) {
        return CFR_ERR_ERRNO(err, CFR_ECONFIG,
                             "passphrase_file: cannot open \"%s\"", path);
    }
    if (fstat(fd, &sb) != 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "passphrase_file: stat");
        goto out;
    }
    if (!S_ISREG(sb.st_mode)) {
        rc = CFR_ERR(err, CFR_EINVAL,
                     "passphrase_file \"%s\" is not a regular file", path);
        goto out;
    }
    if ((sb.st_mode & 077) != 0) {
        rc = CFR_ERR(err, CFR_EDENIED,
                     "passphrase_file \"%s\" is accessible by group or "
                     "others (mode %03o); chmod 600 it",
                     path, (unsigned)(sb.st_mode & 0777));
        goto out;
    }
    if ((s = cfr_secret_new(RESTORE_PASSPHRASE_MAX + 2, err)) == NULL) {
        rc = CFR_ENOMEM;
        goto out;
    }
    if ((rc = read_secret(fd, false, s, len_r, err)) != 0) {
        goto out;
    }
    *s_r = s;
    s = NULL;
out:
    cfr_secret_free(s);
    close(fd);
    return rc;
}

/* Asks on the controlling terminal with echo off. */
static int
prompt(struct cfr_secret **s_r, size_t *len_r, struct cfr_err *err)
{
    static const char ask[] = "Escrow passphrase: ";
    struct cfr_secret *s = NULL;
    struct termios old, quiet;
    bool restore_tty = false;
    int fd, rc;

    *s_r = NULL;
    if ((fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY)) < 0) {
        return CFR_ERR(err, CFR_ECONFIG,
                       "no passphrase_file configured and no terminal to ask "
                       "on");
    }
    if (tcgetattr(fd, &old) == 0) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
        quiet.c_lflag |= ICANON;
        restore_tty = tcsetattr(fd, TCSAFLUSH, &quiet) == 0;
    }
    if (write(fd, ask, sizeof(ask) - 1) < 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "passphrase: cannot prompt");
        goto out;
    }
    if ((s = cfr_secret_new(RESTORE_PASSPHRASE_MAX + 2, err)) == NULL) {
        rc = CFR_ENOMEM;
        goto out;
    }
    if ((rc = read_secret(fd, true, s, len_r, err)) != 0) {
        goto out;
    }
    *s_r = s;
    s = NULL;
out:
    if (restore_tty) {
        (void)tcsetattr(fd, TCSAFLUSH, &old);
        (void)write(fd, "\n", 1);
    }
    cfr_secret_free(s);
    close(fd);
    return rc;
}

int
restore_config_passphrase(const struct restore_config *c,
                          struct cfr_secret **s_r, size_t *len_r,
                          struct cfr_err *err)
{
    if (c->passphrase_file != NULL) {
        return restore_passphrase_file(c->passphrase_file, s_r, len_r, err);
    }
    return prompt(s_r, len_r, err);
}

int
restore_config_smtp_password(const struct restore_notify_settings *ns,
                             struct cfr_secret **s_r, size_t *len_r,
                             struct cfr_err *err)
{
    int rc;
    *s_r = NULL;
    *len_r = 0;
    if (ns->smtp_password_file == NULL) {
        return CFR_ERR(err, CFR_ECONFIG, "notify.smtp_password_file unset");
    }
    /* The passphrase rules fit: a regular file only its owner can read. */
    rc = restore_passphrase_file(ns->smtp_password_file, s_r, len_r, err);
    if (rc != 0) {
        if (err != NULL) {
            /* The message said "passphrase"; name the right setting. */
            static const char pre[] = "notify.smtp_password_file: ";
            char m[CFR_ERR_MSG_MAX];
            size_t keep = sizeof(m) - sizeof(pre);
            memcpy(m, pre, sizeof(pre) - 1);
            size_t len = strnlen(err->msg, keep);
            memcpy(m + sizeof(pre) - 1, err->msg, len);
            m[sizeof(pre) - 1 + len] = '\0';
            memcpy(err->msg, m, sizeof(m));
        }
        return rc;
    }
    /* The buffer holds RESTORE_PASSPHRASE_MAX + 2 bytes: room for a NUL. */
    cfr_secret_rw(*s_r)[*len_r] = 0;
    return 0;
}
