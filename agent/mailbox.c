/*
 * mailbox.c - mailbox lists and %d/%n pattern expansion (see mailbox.h).
 *
 * Invariants:
 *  1. A pattern is parsed once into components (literal text, or literal
 *     prefix + placeholder + literal suffix); every rule is checked before
 *     any directory is read.
 *  2. Expansion recurses once per placeholder level (at most two), holding
 *     one sorted name list per level; the path buffer is bounded by
 *     AGENT_MAILBOX_PATH_MAX.
 */
#include "mailbox.h"

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"  /* cfr_log: unreadable levels */
#include "mem.h"  /* cfr_malloc, cfr_free */
#include "snap.h" /* CFR_SNAP_MAILBOX_MAX */

struct comp {
    char *pre; /* literal text (all of it when ph == 0) */
    char ph;   /* 0, 'd' or 'n' */
    char *suf;
};

struct pattern {
    struct comp *comps;
    size_t n;
    char *text; /* storage for every pre/suf, NUL-separated */
};

struct expand {
    const struct pattern *p;
    agent_mailbox_fn *fn;
    void *ctx;
    struct agent_mailbox_stats *stats;
    struct cfr_err *err;
    char path[AGENT_MAILBOX_PATH_MAX + 1];
    size_t path_len;
    char value[2][256]; /* [0] domain, [1] user */
    bool first_level;   /* no placeholder level walked yet */
};

static void
pattern_free(struct pattern *p)
{
    cfr_free(p->comps);
    cfr_free(p->text);
    memset(p, 0, sizeof(*p));
}

/* Parses pattern into p; every rule of mailbox.h is checked. */
static int
pattern_parse(const char *pattern, struct pattern *p, struct cfr_err *err)
{
    size_t len = strlen(pattern);
    memset(p, 0, sizeof(*p));
    if (len == 0 || pattern[0] != '/') {
        return CFR_ERR(err, CFR_ECONFIG,
                       "mailbox pattern: must be an absolute path");
    }
    if (len > AGENT_MAILBOX_PATH_MAX) {
        return CFR_ERR(err, CFR_ECONFIG, "mailbox pattern: longer than %d",
                       AGENT_MAILBOX_PATH_MAX);
    }
    /* Each component needs at most its own length + 2 NULs of text. */
    p->comps = cfr_calloc(len, sizeof(*p->comps));
    p->text = cfr_malloc(2 * len + 2);
    if (p->comps == NULL || p->text == NULL) {
        pattern_free(p);
        return CFR_ERR(err, CFR_ENOMEM, "mailbox pattern");
    }
    char *t = p->text;
    bool seen_d = false;
    bool seen_n = false;
    size_t i = 0;
    while (i < len) {
        while (i < len && pattern[i] == '/') {
            i++;
        }
        if (i == len) {
            break;
        }
        struct comp *c = &p->comps[p->n++];
        c->pre = t;
        c->ph = 0;
        c->suf = NULL;
        for (; i < len && pattern[i] != '/'; i++) {
            if (pattern[i] != '%') {
                *t++ = pattern[i];
                continue;
            }
            char x = i + 1 < len ? pattern[i + 1] : '\0';
            i++;
            if (x == '%') {
                *t++ = '%';
                continue;
            }
            if (x != 'd' && x != 'n') {
                pattern_free(p);
                return CFR_ERR(err, CFR_ECONFIG,
                               "mailbox pattern: unknown placeholder %%%c "
                               "(only %%d, %%n and %%%%)",
                               x != '\0' ? x : '?');
            }
            bool *seen = x == 'd' ? &seen_d : &seen_n;
            if (*seen || c->ph != 0) {
                pattern_free(p);
                return CFR_ERR(err, CFR_ECONFIG,
                               *seen ? "mailbox pattern: %%%c appears twice"
                                     : "mailbox pattern: two placeholders in "
                                       "one path component (%%%c)",
                               x);
            }
            *seen = true;
            c->ph = x;
            *t++ = '\0';
            c->suf = t;
        }
        *t++ = '\0';
        if (c->ph == 0 &&
            (strcmp(c->pre, ".") == 0 || strcmp(c->pre, "..") == 0)) {
            pattern_free(p);
            return CFR_ERR(err, CFR_ECONFIG,
                           "mailbox pattern: \".\" or \"..\" component");
        }
        if (c->ph == 0) {
            c->suf = t - 1; /* "" */
        }
    }
    if (!seen_d && !seen_n) {
        pattern_free(p);
        return CFR_ERR(err, CFR_ECONFIG,
                       "mailbox pattern: names neither %%d nor %%n");
    }
    return 0;
}

int
agent_mailbox_check_pattern(const char *pattern, struct cfr_err *err)
{
    struct pattern p;
    int rc = pattern_parse(pattern, &p, err);
    pattern_free(&p);
    return rc;
}

static bool
path_add(struct expand *x, const char *s, size_t n)
{
    if (x->path_len + 1 + n > AGENT_MAILBOX_PATH_MAX) {
        return false;
    }
    x->path[x->path_len++] = '/';
    memcpy(x->path + x->path_len, s, n);
    x->path_len += n;
    x->path[x->path_len] = '\0';
    return true;
}

static int
name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int expand_from(struct expand *x, size_t ci);

/* Reports the mailbox at x->path once every component is consumed. */
static int
expand_leaf(struct expand *x)
{
    struct stat st;
    if (stat(x->path, &st) != 0) {
        x->stats->missing++;
        return 0;
    }
    if (!S_ISDIR(st.st_mode)) {
        x->stats->skipped++;
        return 0;
    }
    const struct pattern *p = x->p;
    bool has_d = false;
    bool has_n = false;
    for (size_t i = 0; i < p->n; i++) {
        has_d = has_d || p->comps[i].ph == 'd';
        has_n = has_n || p->comps[i].ph == 'n';
    }
    char name[2 * 256 + 2];
    if (has_d && has_n) {
        snprintf(name, sizeof(name), "%s@%s", x->value[1], x->value[0]);
    } else {
        snprintf(name, sizeof(name), "%s", x->value[has_n ? 1 : 0]);
    }
    x->stats->found++;
    return x->fn(x->ctx, name, x->path);
}

/* Reads the directory at x->path for component c; sorted matches. */
static int
read_level(struct expand *x, const struct comp *c, char ***names_r, size_t *n_r)
{
    int rc = 0;
    char **names = NULL;
    size_t n = 0;
    size_t cap = 0;
    size_t pre = strlen(c->pre);
    size_t suf = strlen(c->suf);
    *names_r = NULL;
    *n_r = 0;
    DIR *d = opendir(x->path);
    if (d == NULL) {
        if (errno == ENOENT || errno == ENOTDIR) {
            if (x->first_level) {
                return CFR_ERR(x->err, CFR_ENOTFOUND,
                               "mailbox pattern: %s does not exist", x->path);
            }
            x->stats->missing++;
            return 0;
        }
        char q[256];
        cfr_log(CFR_LOG_WARN, "agent.mailbox.unreadable", "dir=%s errno=%d",
                cfr_log_quote(x->path, q, sizeof(q)), errno);
        x->stats->errors++;
        return 0;
    }
    const struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *s = de->d_name;
        size_t len = strlen(s);
        /* The value: non-empty, not hidden, fits a name. */
        if (len <= pre + suf || strncmp(s, c->pre, pre) != 0 ||
            strcmp(s + len - suf, c->suf) != 0 || s[pre] == '.' ||
            len - pre - suf >= sizeof(x->value[0])) {
            continue;
        }
        if (n == AGENT_MAILBOX_LEVEL_MAX) {
            rc = CFR_ERR(x->err, CFR_ELIMIT,
                         "mailbox pattern: more than %d entries in %s",
                         AGENT_MAILBOX_LEVEL_MAX, x->path);
            break;
        }
        if (n == cap) {
            size_t ncap = cap == 0 ? 64 : cap * 2;
            char **grown = cfr_realloc(names, ncap * sizeof(*names));
            if (grown == NULL) {
                rc = CFR_ERR(x->err, CFR_ENOMEM, "mailbox pattern");
                break;
            }
            names = grown;
            cap = ncap;
        }
        if ((names[n] = cfr_strdup(s)) == NULL) {
            rc = CFR_ERR(x->err, CFR_ENOMEM, "mailbox pattern");
            break;
        }
        n++;
    }
    closedir(d);
    if (rc != 0) {
        for (size_t i = 0; i < n; i++) {
            cfr_free(names[i]);
        }
        cfr_free(names);
        return rc;
    }
    if (n > 1) {
        qsort(names, n, sizeof(*names), name_cmp);
    }
    *names_r = names;
    *n_r = n;
    return 0;
}

static int
expand_level(struct expand *x, size_t ci)
{
    const struct comp *c = &x->p->comps[ci];
    char **names = NULL;
    size_t n = 0;
    int rc = read_level(x, c, &names, &n);
    bool was_first = x->first_level;
    x->first_level = false;
    size_t saved = x->path_len;
    size_t pre = strlen(c->pre);
    size_t suf = strlen(c->suf);
    for (size_t i = 0; i < n && rc == 0; i++) {
        size_t len = strlen(names[i]);
        if (!path_add(x, names[i], len)) {
            x->stats->skipped++;
            continue;
        }
        struct stat st;
        if (lstat(x->path, &st) != 0 || !S_ISDIR(st.st_mode)) {
            x->stats->skipped++; /* symlink, file, or gone */
        } else {
            char *v = x->value[c->ph == 'd' ? 0 : 1];
            memcpy(v, names[i] + pre, len - pre - suf);
            v[len - pre - suf] = '\0';
            rc = expand_from(x, ci + 1);
        }
        x->path_len = saved;
        x->path[saved] = '\0';
    }
    x->first_level = was_first;
    for (size_t i = 0; i < n; i++) {
        cfr_free(names[i]);
    }
    cfr_free(names);
    return rc;
}

static int
expand_from(struct expand *x, size_t ci)
{
    size_t saved = x->path_len;
    int rc = 0;
    for (; ci < x->p->n; ci++) {
        const struct comp *c = &x->p->comps[ci];
        if (c->ph != 0) {
            rc = expand_level(x, ci);
            break;
        }
        if (!path_add(x, c->pre, strlen(c->pre))) {
            x->stats->skipped++;
            break;
        }
    }
    if (ci == x->p->n) {
        rc = expand_leaf(x);
    }
    x->path_len = saved;
    x->path[saved] = '\0';
    return rc;
}

int
agent_mailbox_expand(const char *pattern, agent_mailbox_fn *fn, void *ctx,
                     struct agent_mailbox_stats *stats_r, struct cfr_err *err)
{
    struct agent_mailbox_stats dummy;
    struct pattern p;
    struct expand *x = NULL;
    int rc;
    if (stats_r == NULL) {
        stats_r = &dummy;
    }
    memset(stats_r, 0, sizeof(*stats_r));
    if ((rc = pattern_parse(pattern, &p, err)) != 0) {
        return rc;
    }
    if ((x = cfr_calloc(1, sizeof(*x))) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "mailbox pattern");
        goto out;
    }
    x->p = &p;
    x->fn = fn;
    x->ctx = ctx;
    x->stats = stats_r;
    x->err = err;
    x->first_level = true;
    x->path[0] = '\0';
    rc = expand_from(x, 0);
out:
    cfr_free(x);
    pattern_free(&p);
    return rc;
}

int
agent_mailbox_list(const char *const names[], const char *const roots[],
                   size_t n, agent_mailbox_fn *fn, void *ctx,
                   struct cfr_err *err)
{
    /* Check everything first: a bad list reports nothing. */
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(names[i]);
        if (len == 0 || len > CFR_SNAP_MAILBOX_MAX) {
            return CFR_ERR(err, CFR_ECONFIG,
                           "mailbox %zu: name of %zu bytes (1..%d)", i + 1, len,
                           CFR_SNAP_MAILBOX_MAX);
        }
        if (roots[i][0] != '/') {
            return CFR_ERR(err, CFR_ECONFIG,
                           "mailbox %zu: root must be an absolute path", i + 1);
        }
        /* Lists are configuration-sized: quadratic is fine. */
        for (size_t j = 0; j < i; j++) {
            if (strcmp(names[i], names[j]) == 0) {
                return CFR_ERR(err, CFR_ECONFIG,
                               "mailbox %zu: name given twice (also %zu)",
                               i + 1, j + 1);
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        int rc = fn(ctx, names[i], roots[i]);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}
