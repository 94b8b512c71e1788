/*
 * vault_support.c - starts, stops and talks to real coffer-vault processes
 * for the integration tests.
 *
 * Invariants:
 *  1. Every file lives under one mkdtemp directory, removed at the end, so
 *     tests never touch anything outside it and never collide.
 *  2. A vault is "started" only once it answers Health over mutual TLS:
 *     tests never race its start-up.
 *  3. Every wait is bounded; a stuck vault fails the test instead of
 *     hanging it, and is killed.
 *  4. A vault's stderr goes to <dir>/vault.log, appended across restarts,
 *     so a failing test can show what the vault said.
 */
#include "vault_support.h"

#include <errno.h>    /* errno */
#include <fcntl.h>    /* open */
#include <signal.h>   /* kill */
#include <stdio.h>    /* snprintf, FILE */
#include <stdlib.h>   /* mkdtemp, system */
#include <string.h>   /* memset, strlen */
#include <sys/stat.h> /* mkdir */
#include <sys/wait.h> /* waitpid */
#include <time.h>     /* nanosleep */
#include <unistd.h>   /* fork, execv */

#include "coffer_vault.pb-c.h" /* HealthRequest, SystemRequest */
#include "mem.h"               /* cfr_malloc */

#define FILE_MAX ((size_t)1 << 20)

static void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads a whole file (capped) into a NUL-terminated owned string. */
static char *
slurp(const char *path, size_t *len_r)
{
    FILE *f = fopen(path, "rb");
    char *p = NULL;
    size_t n = 0;
    if (f == NULL) {
        return NULL;
    }
    p = cfr_malloc(FILE_MAX + 1);
    if (p != NULL) {
        n = fread(p, 1, FILE_MAX, f);
        p[n] = '\0';
    }
    fclose(f);
    if (len_r != NULL) {
        *len_r = n;
    }
    return p;
}

const char *
vs_env_path(const struct vs_env *env, const char *name, char *out, size_t n)
{
    int r = snprintf(out, n, "%s/%s", env->dir, name);
    if (r < 0 || (size_t)r >= n) {
        out[0] = '\0'; /* a truncated path would name another file */
    }
    return out;
}

int
vs_env_init(struct vs_env *env)
{
    char cmd[4 * VS_PATH_MAX];

    memset(env, 0, sizeof(*env));
    snprintf(env->dir, sizeof(env->dir), "/tmp/coffer-vault-test-XXXXXX");
    if (mkdtemp(env->dir) == NULL) {
        perror("mkdtemp");
        return -1;
    }
    snprintf(cmd, sizeof(cmd), "bash %s %s", COFFER_PKI_SCRIPT, env->dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "vault_support: %s failed\n", cmd);
        return -1;
    }
    return 0;
}

void
vs_env_fini(struct vs_env *env)
{
    char cmd[2 * VS_PATH_MAX];
    if (env->dir[0] == '\0') {
        return;
    }
    if (getenv("COFFER_KEEP_TEST_DIR") == NULL) {
        snprintf(cmd, sizeof(cmd), "rm -rf %s", env->dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "vault_support: could not remove %s\n", env->dir);
        }
    } else {
        fprintf(stderr, "vault_support: kept %s\n", env->dir);
    }
    env->dir[0] = '\0';
}

int
vs_vault_init(struct vs_vault *v, struct vs_env *env, const char *name)
{
    memset(v, 0, sizeof(*v));
    v->env = env;
    v->pid = -1;
    snprintf(v->name, sizeof(v->name), "%s", name);
    snprintf(v->dir, sizeof(v->dir), "%s/%s", env->dir, name);
    if (mkdir(v->dir, 0700) != 0 && errno != EEXIST) {
        perror(v->dir);
        return -1;
    }
    return 0;
}

int
vs_vault_write_config(struct vs_vault *v)
{
    char path[2 * VS_PATH_MAX];
    FILE *f;
    snprintf(path, sizeof(path), "%s/vault.conf", v->dir);
    if ((f = fopen(path, "w")) == NULL) {
        perror(path);
        return -1;
    }
    const char *cert = v->cert_stem[0] != '\0' ? v->cert_stem : "server";
    fprintf(f,
            "listen = \"127.0.0.1:%d\";\n"
            "port_file = \"%s/port\";\n"
            "data_dir = \"%s/data\";\n"
            "region = \"%s\";\n"
            "cache_size = \"16M\";\n"
            "workers = 4;\n"
            "shutdown_grace = \"2s\";\n"
            "tls = { cert = \"%s/%s.pem\"; key = \"%s/%s.key\";\n"
            "        client_ca = \"%s/clients-ca.pem\"; };\n"
            "stats = { file = \"%s/vault.prom\"; interval = \"500ms\"; };\n"
            "%s\n",
            v->listen_port, v->dir, v->dir,
            v->region[0] != '\0' ? v->region : "test-1", v->env->dir, cert,
            v->env->dir, cert, v->env->dir, v->dir, v->extra_cfg);
    fclose(f);
    return 0;
}

bool
vs_vault_alive(struct vs_vault *v)
{
    int st;
    if (v->pid <= 0) {
        return false;
    }
    if (waitpid(v->pid, &st, WNOHANG) == v->pid) {
        v->pid = -1;
        return false;
    }
    return true;
}

const char *
vs_vault_log(const struct vs_vault *v, char *out, size_t n)
{
    char path[2 * VS_PATH_MAX];
    size_t len = 0;
    char *p;
    snprintf(path, sizeof(path), "%s/vault.log", v->dir);
    out[0] = '\0';
    p = slurp(path, &len);
    if (p != NULL) {
        /* The tail is what explains a failure. */
        const char *s = len >= n ? p + len - (n - 1) : p;
        snprintf(out, n, "%s", s);
        cfr_free(p);
    }
    return out;
}

static void
dump_log(const struct vs_vault *v)
{
    char *buf = cfr_malloc(16384);
    if (buf != NULL) {
        fprintf(stderr, "---- %s/vault.log (tail) ----\n%s\n----\n", v->dir,
                vs_vault_log(v, buf, 16384));
        cfr_free(buf);
    }
}

static pid_t
spawn(const char *const *argv, const char *log_path, bool append)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log_path,
                      O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0600);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
            close(fd);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static int
wait_exit(pid_t pid, int64_t timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    int st;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            if (WIFEXITED(st)) {
                return WEXITSTATUS(st);
            }
            if (WIFSIGNALED(st)) {
                return 128 + WTERMSIG(st);
            }
            return -1;
        }
        if (r < 0 || now_ms() > end) {
            return -1;
        }
        sleep_ms(20);
    }
}

/* The vault refuses unregistered tenants: register the test ones. */
static int
register_test_tenants(struct vs_vault *v)
{
    static const char *const tenants[] = {"acme", "globex"};
    char msg[256];
    if (v->no_register) {
        return 0;
    }
    for (size_t i = 0; i < sizeof(tenants) / sizeof(tenants[0]); i++) {
        int st = vs_tenant_add(v, tenants[i], NULL, msg, sizeof(msg));
        if (st != CFR_RPC_OK && st != CFR_RPC_ALREADY_EXISTS) {
            fprintf(stderr, "vault_support: registering %s: %s: %s\n",
                    tenants[i], cfr_rpc_status_name(st), msg);
            dump_log(v);
            vs_vault_stop(v, SIGKILL, 5000);
            return -1;
        }
    }
    return 0;
}

int
vs_tenant_add(const struct vs_vault *v, const char *name,
              const char *const *regions, char *msg, size_t msg_size)
{
    Coffer__V1__SystemRequest req = COFFER__V1__SYSTEM_REQUEST__INIT;
    Coffer__V1__TenantInfo ti = COFFER__V1__TENANT_INFO__INIT;
    struct cfr_rpc_client *cli = vs_client(v, "operator");
    ProtobufCMessage *resp = NULL;
    struct cfr_err err;
    size_t n = 0;
    int st;

    cfr_err_clear(&err);
    while (regions != NULL && regions[n] != NULL) {
        n++;
    }
    ti.name = (char *)name;
    ti.n_regions = n;
    ti.regions = (char **)regions;
    req.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_TENANT_ADD;
    req.tenant = &ti;
    st = cli != NULL
             ? vs_unary(cli, "System", &req.base,
                        &coffer__v1__system_response__descriptor, &resp, &err)
             : CFR_RPC_UNAVAILABLE;
    if (msg != NULL && msg_size > 0) {
        snprintf(msg, msg_size, "%s", cli != NULL ? err.msg : "no client");
    }
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    cfr_rpc_client_free(cli);
    return st;
}

int
vs_vault_start(struct vs_vault *v, int64_t timeout_ms)
{
    char conf[2 * VS_PATH_MAX], log_path[2 * VS_PATH_MAX];
    char port_path[2 * VS_PATH_MAX];
    const char *argv[8];
    int argc = 0;
    int64_t end = now_ms() + timeout_ms;

    if (vs_vault_write_config(v) != 0) {
        return -1;
    }
    snprintf(conf, sizeof(conf), "%s/vault.conf", v->dir);
    snprintf(log_path, sizeof(log_path), "%s/vault.log", v->dir);
    snprintf(port_path, sizeof(port_path), "%s/port", v->dir);
    (void)unlink(port_path);
    argv[argc++] = COFFER_VAULT_BIN;
    argv[argc++] = "--config";
    argv[argc++] = conf;
    if (v->test_mode) {
        argv[argc++] = "--test-mode";
    }
    if (v->clock_offset[0] != '\0') {
        argv[argc++] = "--test-clock-offset";
        argv[argc++] = v->clock_offset;
    }
    argv[argc] = NULL;
    v->port = 0;
    if ((v->pid = spawn(argv, log_path, true)) < 0) {
        perror("fork");
        return -1;
    }
    /* The port file appears once the vault is bound and serving. */
    while (v->port == 0) {
        char *p = slurp(port_path, NULL);
        if (p != NULL) {
            v->port = (int)strtol(p, NULL, 10);
            cfr_free(p);
        }
        if (v->port != 0) {
            break;
        }
        if (!vs_vault_alive(v) || now_ms() > end) {
            fprintf(stderr, "vault_support: %s did not start\n", v->name);
            dump_log(v);
            vs_vault_stop(v, SIGKILL, 5000);
            return -1;
        }
        sleep_ms(20);
    }
    /* Invariant 2: serving means answering Health over mutual TLS. */
    for (;;) {
        struct cfr_rpc_client *cli = vs_client(v, "agent");
        Coffer__V1__HealthRequest req = COFFER__V1__HEALTH_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        struct cfr_err err;
        int st = cli != NULL
                     ? vs_unary(cli, "Health", &req.base,
                                &coffer__v1__health_response__descriptor, &resp,
                                &err)
                     : -1;
        if (resp != NULL) {
            protobuf_c_message_free_unpacked(resp, NULL);
        }
        cfr_rpc_client_free(cli);
        if (st == CFR_RPC_OK) {
            return register_test_tenants(v);
        }
        if (!vs_vault_alive(v) || now_ms() > end) {
            fprintf(stderr, "vault_support: %s never answered Health\n",
                    v->name);
            dump_log(v);
            vs_vault_stop(v, SIGKILL, 5000);
            return -1;
        }
        sleep_ms(50);
    }
}

int
vs_vault_stop(struct vs_vault *v, int sig, int64_t timeout_ms)
{
    int rc;
    if (v->pid <= 0) {
        return -1;
    }
    kill(v->pid, sig);
    rc = wait_exit(v->pid, timeout_ms);
    if (rc < 0) {
        /* Invariant 3: never leave a stuck vault behind. */
        kill(v->pid, SIGKILL);
        (void)wait_exit(v->pid, 10000);
    }
    v->pid = -1;
    return rc;
}

int
vs_run_vault(const char *const *args, int64_t timeout_ms, char *out,
             size_t out_size)
{
    char log_path[] = "/tmp/coffer-vault-run-XXXXXX";
    const char *argv[16];
    size_t n = 0;
    int fd, rc;
    pid_t pid;
    char *p;

    argv[n++] = COFFER_VAULT_BIN;
    for (size_t i = 0; args[i] != NULL && n < 15; i++) {
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    if ((fd = mkstemp(log_path)) < 0) {
        return -1;
    }
    close(fd);
    if ((pid = spawn(argv, log_path, false)) < 0) {
        return -1;
    }
    rc = wait_exit(pid, timeout_ms);
    if (rc < 0) {
        kill(pid, SIGKILL);
        (void)wait_exit(pid, 5000);
    }
    out[0] = '\0';
    if ((p = slurp(log_path, NULL)) != NULL) {
        snprintf(out, out_size, "%s", p);
        cfr_free(p);
    }
    unlink(log_path);
    return rc;
}

struct cfr_rpc_client *
vs_client(const struct vs_vault *v, const char *ident)
{
    char path[2 * VS_PATH_MAX], target[64];
    char *ca = NULL, *cert = NULL, *key = NULL;
    struct cfr_rpc_client *cli = NULL;
    struct cfr_rpc_client_opts o;
    struct cfr_err err;

    snprintf(path, sizeof(path), "%s/ca.pem", v->env->dir);
    ca = slurp(path, NULL);
    if (ident != NULL) {
        snprintf(path, sizeof(path), "%s/%s.pem", v->env->dir, ident);
        cert = slurp(path, NULL);
        snprintf(path, sizeof(path), "%s/%s.key", v->env->dir, ident);
        key = slurp(path, NULL);
        if (cert == NULL || key == NULL) {
            fprintf(stderr, "vault_support: no identity %s\n", ident);
            goto out;
        }
    }
    if (ca == NULL) {
        goto out;
    }
    snprintf(target, sizeof(target), "127.0.0.1:%d", v->port);
    memset(&o, 0, sizeof(o));
    o.target = target;
    o.target_name = "localhost";
    o.ca_pem = ca;
    o.cert_pem = cert;
    o.key_pem = key;
    o.max_msg = (size_t)80 << 20;
    if (cfr_rpc_client_new(&o, &cli, &err) != 0) {
        fprintf(stderr, "vault_support: client: %s\n", err.msg);
        cli = NULL;
    }
out:
    cfr_free(ca);
    cfr_free(cert);
    cfr_free(key);
    return cli;
}

int
vs_unary_raw(struct cfr_rpc_client *cli, const char *method, const void *req,
             size_t len, struct cfr_buf *resp, struct cfr_err *err)
{
    char path[CFR_RPC_METHOD_MAX];
    int status = CFR_RPC_UNKNOWN;
    snprintf(path, sizeof(path), "/coffer.v1.Vault/%s", method);
    cfr_err_clear(err);
    (void)cfr_rpc_unary(cli, path, req, len, 20000, resp, &status, err);
    return status;
}

int
vs_unary(struct cfr_rpc_client *cli, const char *method,
         const ProtobufCMessage *req, const ProtobufCMessageDescriptor *desc,
         ProtobufCMessage **resp_r, struct cfr_err *err)
{
    size_t n = protobuf_c_message_get_packed_size(req);
    uint8_t *p = cfr_malloc(n + 1);
    struct cfr_buf resp;
    int status;

    *resp_r = NULL;
    if (p == NULL) {
        return CFR_RPC_INTERNAL;
    }
    protobuf_c_message_pack(req, p);
    cfr_buf_init(&resp, (size_t)80 << 20);
    status = vs_unary_raw(cli, method, p, n, &resp, err);
    if (status == CFR_RPC_OK) {
        *resp_r = protobuf_c_message_unpack(desc, NULL, resp.len, resp.data);
    }
    cfr_buf_fini(&resp);
    cfr_free(p);
    return status;
}
