/*
 * agent_run_support.c - see agent_run_support.h.
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include "agent_run_support.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mem.h" /* cfr_malloc */

#define ARS_FILE_MAX ((size_t)64 << 20)

static int64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

char *
ars_slurp(const char *path, size_t *len_r)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    char *p = NULL;
    size_t got = 0;
    if (fd < 0) {
        return NULL;
    }
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size > ARS_FILE_MAX ||
        (p = cfr_malloc((size_t)st.st_size + 1)) == NULL) {
        close(fd);
        return NULL;
    }
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, p + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break; /* shorter than stat said: what is there */
        }
        got += (size_t)r;
    }
    close(fd);
    p[got] = '\0';
    if (len_r != NULL) {
        *len_r = got;
    }
    return p;
}

int
ars_write(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    const char *p = data;
    if (fd < 0) {
        return -1;
    }
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            close(fd);
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    if (fchmod(fd, mode) != 0) {
        close(fd);
        return -1;
    }
    return close(fd);
}

int
ars_mkdirs(const char *path)
{
    char p[PATH_MAX];
    if ((size_t)snprintf(p, sizeof(p), "%s", path) >= sizeof(p) ||
        p[0] == '\0') {
        return -1;
    }
    for (char *s = p + 1; *s != '\0'; s++) {
        if (*s == '/') {
            *s = '\0';
            if (mkdir(p, 0700) != 0 && errno != EEXIST) {
                return -1;
            }
            *s = '/';
        }
    }
    return mkdir(p, 0700) == 0 || errno == EEXIST ? 0 : -1;
}

pid_t
ars_spawn(const char *bin, const char *const *args, const char *out_path,
          const char *err_path)
{
    char *argv[40];
    size_t n = 0;
    argv[n++] = (char *)bin;
    for (size_t i = 0; args[i] != NULL && n < 39; i++) {
        argv[n++] = (char *)args[i];
    }
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid != 0) {
        return pid;
    }
    /* Child: only async-signal-safe calls (the parent may have threads). */
    int in = open("/dev/null", O_RDONLY);
    if (in < 0 || dup2(in, 0) < 0) {
        _exit(126);
    }
    if (out_path != NULL) {
        int o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (o < 0 || dup2(o, 1) < 0) {
            _exit(126);
        }
    }
    if (err_path != NULL) {
        int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (e < 0 || dup2(e, 2) < 0) {
            _exit(126);
        }
    }
    setsid();
    execv(argv[0], argv);
    _exit(127);
}

static int
status_code(int st)
{
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int
ars_poll(pid_t pid)
{
    int st = 0;
    pid_t r = waitpid(pid, &st, WNOHANG);
    return r == pid ? status_code(st) : -1;
}

int
ars_wait(pid_t pid, int64_t timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    int st = 0;
    if (pid <= 0) {
        return -1;
    }
    for (;;) {
        int c = ars_poll(pid);
        if (c >= 0) {
            return c;
        }
        if (mono_ms() > deadline) {
            kill(pid, SIGKILL);
            (void)waitpid(pid, &st, 0);
            return -1;
        }
        nap_ms(5);
    }
}

int
ars_run(const char *bin, const char *const *args, const char *out_path,
        const char *err_path, int64_t timeout_ms)
{
    return ars_wait(ars_spawn(bin, args, out_path, err_path), timeout_ms);
}

int
ars_capture(const char *bin, const char *const *args, const char *dir,
            int64_t timeout_ms, struct ars_out *o)
{
    /* Shared by the threads of no test: a plain counter will do. */
    static unsigned seq;
    char op[PATH_MAX], ep[PATH_MAX];
    unsigned n = ++seq;
    memset(o, 0, sizeof(*o));
    if ((size_t)snprintf(op, sizeof(op), "%s/run%u.out", dir, n) >=
            sizeof(op) ||
        (size_t)snprintf(ep, sizeof(ep), "%s/run%u.err", dir, n) >=
            sizeof(ep)) {
        return -1;
    }
    o->code = ars_run(bin, args, op, ep, timeout_ms);
    o->out = ars_slurp(op, NULL);
    o->err = ars_slurp(ep, NULL);
    if (o->out == NULL || o->err == NULL) {
        ars_out_fini(o);
        return -1;
    }
    return 0;
}

void
ars_out_fini(struct ars_out *o)
{
    cfr_free(o->out);
    cfr_free(o->err);
    memset(o, 0, sizeof(*o));
}

int
ars_agent_conf_write(const char *path, const struct ars_agent_conf *c)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        return -1;
    }
    fprintf(f,
            "tenant = \"acme\";\nkey_file = \"%s\";\npassphrase_file = "
            "\"%s\";\nstate_dir = \"%s\";\nlog_level = \"warn\";\n"
            "host = \"system-test\";\ntmp_dir = \"%s\";\n%s\nvaults = (\n",
            c->key_file, c->pass_file, c->state_dir, c->tmp_dir, c->mailboxes);
    for (size_t i = 0; i < c->n_vaults; i++) {
        fprintf(f,
                "  { address = \"127.0.0.1:%d\"; name = \"vault-%c\"; "
                "tls_name = \"localhost\"; region = \"test-1\"; }%s\n",
                c->ports[i], (char)('a' + i), i + 1 < c->n_vaults ? "," : "");
    }
    /* The guard is off: the corpus evolution and the mutator delete
     * freely, and exit 7 is not what these tests are about. Every harness
     * vault runs on loopback in region test-1 (vault_support.c): the
     * region is given so each run's Health check is exercised, and one
     * region is allowed explicitly. */
    fprintf(f,
            ");\nallow_single_region = true;\n"
            "tls = { ca = \"%s/ca.pem\"; cert = \"%s/agent.pem\"; "
            "key = \"%s/agent.key\"; };\nquorum = %u;\nworkers = 2;\n"
            "cpu_nice = 0;\nmass_deletion = { percent = 100; min_files = 50; "
            "};\ntimeouts = { call = \"5s\"; stream = \"60s\"; stall = "
            "\"10s\"; };\n",
            c->pki_dir, c->pki_dir, c->pki_dir, c->quorum);
    return fclose(f) == 0 ? 0 : -1;
}

int
ars_restore_conf_write(const char *path, const char *pki_dir,
                       const char *key_file, const char *pass_file, int port)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        return -1;
    }
    fprintf(f,
            "tenant = \"acme\";\nkey_file = \"%s\";\npassphrase_file = "
            "\"%s\";\nvaults = [ \"127.0.0.1:%d\" ];\ntls = { ca = "
            "\"%s/ca.pem\"; cert = \"%s/acme-restore.pem\"; key = "
            "\"%s/acme-restore.key\"; server_name = \"localhost\"; };\n"
            "parallelism = 4;\nlog_level = \"error\";\n",
            key_file, pass_file, port, pki_dir, pki_dir, pki_dir);
    return fclose(f) == 0 ? 0 : -1;
}

static const char *
json_at(const char *doc, const char *from, const char *key, const char *tail)
{
    char pat[128];
    const char *p = from != NULL ? strstr(doc, from) : doc;
    if (p == NULL || (size_t)snprintf(pat, sizeof(pat), "\"%s\":%s", key,
                                      tail) >= sizeof(pat)) {
        return NULL;
    }
    p = strstr(p, pat);
    return p != NULL ? p + strlen(pat) : NULL;
}

bool
ars_json_u64(const char *doc, const char *from, const char *key, uint64_t *v)
{
    const char *p = json_at(doc, from, key, "");
    char *end = NULL;
    if (p == NULL || *p < '0' || *p > '9') {
        return false;
    }
    errno = 0;
    unsigned long long x = strtoull(p, &end, 10);
    if (errno != 0 || end == p) {
        return false;
    }
    *v = (uint64_t)x;
    return true;
}

bool
ars_json_str(const char *doc, const char *from, const char *key, char *out,
             size_t n)
{
    const char *p = json_at(doc, from, key, "\"");
    const char *e = p != NULL ? strchr(p, '"') : NULL;
    if (e == NULL || (size_t)(e - p) >= n) {
        return false;
    }
    memcpy(out, p, (size_t)(e - p));
    out[e - p] = '\0';
    return true;
}

bool
ars_prom_u64(const char *path, const char *metric, uint64_t *v)
{
    char *t = ars_slurp(path, NULL);
    size_t ml = strlen(metric);
    bool ok = false;
    for (const char *l = t; l != NULL && *l != '\0' && !ok;) {
        if (strncmp(l, metric, ml) == 0 && l[ml] == ' ') {
            /* Counters may print as floats ("1.2e+06"). */
            double d = strtod(l + ml + 1, NULL);
            *v = d > 0 ? (uint64_t)d : 0;
            ok = true;
        }
        l = strchr(l, '\n');
        l = l != NULL ? l + 1 : NULL;
    }
    cfr_free(t);
    return ok;
}

int
ars_gen_corpus(const char *const *args)
{
    char self[PATH_MAX], gen[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) {
        return -1;
    }
    self[n] = '\0';
    *strrchr(self, '/') = '\0';
    if ((size_t)snprintf(gen, sizeof(gen), "%s/../bench/gen_corpus", self) >=
            sizeof(gen) ||
        access(gen, X_OK) != 0) {
        fprintf(stderr, "agent_run_support: gen_corpus not built: %s\n", gen);
        return -1;
    }
    return ars_run(gen, args, NULL, NULL, 120000) == 0 ? 0 : -1;
}

/* ---- trees ---------------------------------------------------------------
 */

struct flist {
    char **v;
    size_t n, cap;
};

static void
flist_fini(struct flist *l)
{
    for (size_t i = 0; i < l->n; i++) {
        cfr_free(l->v[i]);
    }
    cfr_free(l->v);
    memset(l, 0, sizeof(*l));
}

/* Relative paths of the regular files below root/rel, tmp/ excluded. */
static int
flist_walk(struct flist *l, const char *root, const char *rel)
{
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof(path), "%s%s%s", root,
                         rel[0] != '\0' ? "/" : "", rel) >= sizeof(path)) {
        return -1;
    }
    DIR *d = opendir(path);
    if (d == NULL) {
        return -1;
    }
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        char sub[PATH_MAX], full[PATH_MAX];
        struct stat st;
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        if ((size_t)snprintf(sub, sizeof(sub), "%s%s%s", rel,
                             rel[0] != '\0' ? "/" : "",
                             de->d_name) >= sizeof(sub) ||
            (size_t)snprintf(full, sizeof(full), "%s/%s", root, sub) >=
                sizeof(full) ||
            lstat(full, &st) != 0) {
            rc = -1;
            break;
        }
        if (S_ISDIR(st.st_mode)) {
            if (strcmp(de->d_name, "tmp") != 0) {
                rc = flist_walk(l, root, sub);
            }
        } else {
            if (l->n == l->cap) {
                size_t cap = l->cap != 0 ? 2 * l->cap : 256;
                char **v = cfr_realloc(l->v, cap * sizeof(*v));
                if (v == NULL) {
                    rc = -1;
                    break;
                }
                l->v = v;
                l->cap = cap;
            }
            l->v[l->n] = cfr_malloc(strlen(sub) + 1);
            if (l->v[l->n] == NULL) {
                rc = -1;
                break;
            }
            memcpy(l->v[l->n++], sub, strlen(sub) + 1);
        }
    }
    closedir(d);
    return rc;
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* why = what + ": " + path; returns -1. */
static long
differ(char *why, size_t n, const char *what, const char *path)
{
    snprintf(why, n, "%s: %s", what, path);
    return -1;
}

long
ars_tree_compare(const char *src, const char *dst, char *why, size_t n)
{
    struct flist a, b;
    long rc = 0;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    if (flist_walk(&a, src, "") != 0 || flist_walk(&b, dst, "") != 0) {
        flist_fini(&a);
        flist_fini(&b);
        return differ(why, n, "cannot list both trees", dst);
    }
    qsort(a.v, a.n, sizeof(*a.v), cmp_str);
    qsort(b.v, b.n, sizeof(*b.v), cmp_str);
    for (size_t i = 0, j = 0; rc == 0 && (i < a.n || j < b.n);) {
        int c = i == a.n ? 1 : j == b.n ? -1 : strcmp(a.v[i], b.v[j]);
        if (c < 0) {
            rc = differ(why, n, "missing from the restore", a.v[i]);
            break;
        }
        if (c > 0) {
            rc = differ(why, n, "extra in the restore", b.v[j]);
            break;
        }
        char pa[PATH_MAX], pb[PATH_MAX];
        struct stat sa, sb;
        size_t la = 0, lb = 0;
        snprintf(pa, sizeof(pa), "%s/%s", src, a.v[i]);
        snprintf(pb, sizeof(pb), "%s/%s", dst, b.v[j]);
        char *da = ars_slurp(pa, &la), *db = ars_slurp(pb, &lb);
        if (da == NULL || db == NULL || lstat(pa, &sa) != 0 ||
            lstat(pb, &sb) != 0) {
            rc = differ(why, n, "unreadable", a.v[i]);
        } else if (la != lb || memcmp(da, db, la) != 0) {
            rc = differ(why, n, "content differs", a.v[i]);
        } else if (!S_ISREG(sb.st_mode) ||
                   (sa.st_mode & 07777) != (sb.st_mode & 07777)) {
            rc = differ(why, n, "type or mode differs", a.v[i]);
        } else if (sa.st_mtim.tv_sec != sb.st_mtim.tv_sec ||
                   sa.st_mtim.tv_nsec != sb.st_mtim.tv_nsec) {
            rc = differ(why, n, "mtime differs", a.v[i]);
        }
        cfr_free(da);
        cfr_free(db);
        i++;
        j++;
    }
    if (rc == 0) {
        rc = (long)a.n;
    }
    flist_fini(&a);
    flist_fini(&b);
    return rc;
}

uint64_t
ars_tree_bytes(const char *dir)
{
    struct flist l;
    uint64_t sum = 0;
    memset(&l, 0, sizeof(l));
    if (flist_walk(&l, dir, "") == 0) {
        for (size_t i = 0; i < l.n; i++) {
            char p[PATH_MAX];
            struct stat st;
            snprintf(p, sizeof(p), "%s/%s", dir, l.v[i]);
            if (lstat(p, &st) == 0) {
                sum += (uint64_t)st.st_size;
            }
        }
    }
    flist_fini(&l);
    return sum;
}

static int
rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)f;
    return flag == FTW_DP ? rmdir(p) : unlink(p);
}

void
ars_rm_tree(const char *dir)
{
    (void)nftw(dir, rm_one, 32, FTW_DEPTH | FTW_PHYS);
}
