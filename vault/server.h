/*
 * server.h - the vault service: coffer_vault.proto over core/rpc.h,
 * calling vault/store.h, plus the vault's own schedule (retention and GC)
 * and its Prometheus statistics file.
 *
 * Every call is authenticated by rpc.c (mutual TLS), authorized here by
 * role (authz.h) and scoped to the caller's tenant: a handler opens only
 * the tenant named by the caller's certificate, so another tenant's IDs
 * are simply absent. Every decision is audited: a structured log line
 * (event vault.audit) and a record in the system database (sysdb.h).
 * Denials count towards a lockout per identity and address
 * (core/ratelimit.h); security events go to the notifier (core/notify.h).
 *
 * With peers configured (vault/sync.h) the server also owns the
 * replication engine: created by vault_server_new, started by
 * vault_server_start, stopped by vault_server_stop before the owner closes
 * the store. Peer vaults call the read-only Sync methods; operators
 * trigger rounds and read their state through System (SYNC, SYNC_STATUS).
 *
 * States: vault_server_new (bound, not serving) -> vault_server_start
 * (serving, schedule and sync running) -> vault_server_stop (no calls,
 * sync and schedule joined, stats written) -> vault_server_free. A storage
 * write error makes vault_server_failed true; the owner must then stop and exit
 * (an fsync error is never retried).
 *
 * Thread safety: new/start/stop/free from one thread; vault_server_failed
 * and vault_server_port from any.
 */
#ifndef VAULT_SERVER_H
#define VAULT_SERVER_H

#include <stdatomic.h> /* the corrupt-read relay */
#include <stdbool.h>
#include <stdint.h>

#include "clock.h"  /* struct cfr_clock */
#include "config.h" /* struct vault_config */
#include "err.h"    /* struct cfr_err */
#include "notify.h" /* struct cfr_notify */
#include "store.h"  /* struct vault_store */
#include "sysdb.h"  /* struct vault_sysdb */

#define VAULT_VERSION "0.1.0"

struct vault_server;

struct vault_server_opts {
    const struct vault_config *cfg; /* borrowed, outlives the server */
    struct vault_store *store;      /* borrowed */
    struct vault_sysdb *sysdb;      /* borrowed: audit, approvals, tenants */
    struct cfr_notify *notify;      /* borrowed; security notifications */
    struct cfr_clock *clock;        /* borrowed; the vault's time */
    const char *cert_pem;           /* PEM text; copied by rpc */
    const char *key_pem;
    const char *client_ca_pem;
};

/*
 * Binds the listen address (CFR_EIO when it cannot: port in use, bad
 * address) and registers every method. Returns owned in *srv_r.
 */
int vault_server_new(const struct vault_server_opts *opts,
                     struct vault_server **srv_r, struct cfr_err *err);
int vault_server_port(const struct vault_server *srv);
/* Starts serving and the maintenance thread. */
int vault_server_start(struct vault_server *srv, struct cfr_err *err);
/* True once a storage write failed: the vault must stop. */
bool vault_server_failed(const struct vault_server *srv);
/*
 * Stops accepting calls, lets those in flight finish for grace_ms, cancels
 * the rest, joins the maintenance thread and writes the stats file a last
 * time. Idempotent.
 */
void vault_server_stop(struct vault_server *srv, int64_t grace_ms);
/* Stops (grace 0) if needed and frees; accepts NULL. */
void vault_server_free(struct vault_server *srv);

/*
 * The store is opened before the server exists, yet a read that fails its
 * checksum must reach the server's replication engine for repair. The
 * owner gives the store vault_server_on_corrupt with a relay as context,
 * points the relay at the server once it is created, and back at NULL
 * after vault_server_stop and before vault_server_free. Reports arriving
 * while it is NULL, or on a vault without peers, are dropped (a scrub
 * finds the object again).
 */
struct vault_server_relay {
    _Atomic(struct vault_server *) srv;
};
void vault_server_relay_set(struct vault_server_relay *r,
                            struct vault_server *srv);
/* A vault_corrupt_fn (store.h); ctx is a struct vault_server_relay. */
void vault_server_on_corrupt(void *ctx, const char *tenant,
                             const uint8_t id[VAULT_ID_LEN]);

#endif /* VAULT_SERVER_H */
