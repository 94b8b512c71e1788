/*
 * vault_support.h - a harness for integration tests that drive real
 * coffer-vault processes over mutual TLS on 127.0.0.1.
 *
 * A struct vs_env is one temporary directory holding a throwaway PKI (made
 * by COFFER_PKI_SCRIPT, plus a second test CA with the extra identities
 * the vault tests need: acme admin/restore/auditor, globex agent), and one
 * subdirectory per vault (config, data, log, port file, stats file).
 * A struct vs_vault is one vault process: start it (port 0, the bound port
 * read back from its port file, ready once Health answers, then the test
 * tenants acme and globex registered through System as the operator,
 * since a vault refuses unregistered tenants), signal it, wait for it,
 * restart it on the same data directory.
 *
 * Identities (file stems in the env directory):
 *   agent        acme agent            globex-agent  globex agent
 *   acme-restore acme restore          restore       globex restore
 *   acme-admin   acme admin            acme-admin2   a second acme admin
 *   acme-auditor acme auditor          noid, twoid, expired, rogue (refused)
 *   agent2       a second acme agent   operator, operator2  vault operators
 *                                                   alice and bob
 *
 * Thread safety: none; one test thread drives a harness (clients may be
 * used from other threads, as core/rpc.h allows).
 */
#ifndef VAULT_SUPPORT_H
#define VAULT_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h> /* pid_t */

#include <protobuf-c/protobuf-c.h> /* generic message pack/unpack */

#include "buf.h" /* struct cfr_buf */
#include "err.h" /* struct cfr_err */
#include "rpc.h" /* struct cfr_rpc_client */

#define VS_PATH_MAX 512

struct vs_env {
    char dir[VS_PATH_MAX];
};

struct vs_vault {
    struct vs_env *env;
    char name[32];
    char dir[VS_PATH_MAX + 40];
    char extra_cfg[2048];  /* appended to the generated config */
    bool test_mode;        /* pass --test-mode */
    char clock_offset[32]; /* --test-clock-offset value, "" = none */
    bool no_register;      /* vs_vault_start leaves acme and globex
                              unregistered (tests of the registry) */
    char region[32];       /* region setting; "" = "test-1" */
    char cert_stem[32];    /* server certificate stem; "" = "server" */
    int listen_port;       /* 0 = any free port (read back) */
    pid_t pid;
    int port;
};

/* Makes the temporary directory and PKI. Returns 0 or -1 (message on
 * stderr). */
int vs_env_init(struct vs_env *env);
/* Removes the directory and everything in it. */
void vs_env_fini(struct vs_env *env);
/* "<env dir>/<name>" into out. */
const char *vs_env_path(const struct vs_env *env, const char *name, char *out,
                        size_t n);

/* Prepares a vault named name (its directory); does not start it. */
int vs_vault_init(struct vs_vault *v, struct vs_env *env, const char *name);
/* Writes <dir>/vault.conf from the defaults plus v->extra_cfg. */
int vs_vault_write_config(struct vs_vault *v);
/*
 * Writes the config, starts the process and waits (up to timeout_ms) until
 * Health answers, then (unless v->no_register) registers acme and globex
 * with no region limit (already registered, on a restart, is fine).
 * Returns 0, or -1 when the vault exited, never answered or refused the
 * registration (its log is on stderr then).
 */
int vs_vault_start(struct vs_vault *v, int64_t timeout_ms);
/* Sends sig (SIGTERM, SIGKILL) and waits up to timeout_ms for the exit.
 * Returns the exit code, 128 + signal when killed, or -1 on timeout. */
int vs_vault_stop(struct vs_vault *v, int sig, int64_t timeout_ms);
/*
 * Runs coffer-vault with args (NULL-terminated, after argv[0]) to its
 * exit (it must not serve), capturing stderr into out (capped). Returns
 * the exit code or -1.
 */
int vs_run_vault(const char *const *args, int64_t timeout_ms, char *out,
                 size_t out_size);
/* The vault's log so far into out (capped); returns out. */
const char *vs_vault_log(const struct vs_vault *v, char *out, size_t n);
/* Whether the process is still running. */
bool vs_vault_alive(struct vs_vault *v);

/*
 * A client for the vault with the certificate stem ident ("agent"), or no
 * client certificate when ident is NULL; ca_stem names the CA the client
 * trusts for the server ("ca"). Returns owned or NULL.
 */
struct cfr_rpc_client *vs_client(const struct vs_vault *v, const char *ident);

/*
 * Unary call of method ("Missing") with req packed; on OK, *resp_r is the
 * unpacked response of type desc (free with protobuf_c_message_free_unpacked)
 * or NULL when the response would not decode. Returns the gRPC status.
 */
int vs_unary(struct cfr_rpc_client *cli, const char *method,
             const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp_r,
             struct cfr_err *err);
/*
 * System TENANT_ADD of name as the operator, allowed in regions
 * (NULL-terminated; NULL or empty: anywhere). Returns the gRPC status;
 * msg (may be NULL) gets the status message.
 */
int vs_tenant_add(const struct vs_vault *v, const char *name,
                  const char *const *regions, char *msg, size_t msg_size);

/* As vs_unary with raw request bytes and no decoding. */
int vs_unary_raw(struct cfr_rpc_client *cli, const char *method,
                 const void *req, size_t len, struct cfr_buf *resp,
                 struct cfr_err *err);

#endif /* VAULT_SUPPORT_H */
