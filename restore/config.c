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
#include <fcntl.h>    /* open */
#include <string.h>   /* memset */
#include <sys/stat.h> /* fstat */
#include <termios.h>  /* echo off for the prompt */
#include <unistd.h>   /* read, close, isatty */

#include "cfg.h" /* libconfig access with checked values */

static const char *const top_keys[] = {
    "tenant",      "key_file", "passphrase_file", "vaults",    "tls",
    "parallelism", "batch",    "timeout",         "log_level", NULL};
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
