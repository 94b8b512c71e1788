/*
 * authz.h - the vault's role matrix: which role may call which method.
 *
 * A caller's tenant and role come only from its verified client
 * certificate (core/rpc.h); nothing in a request can widen them. This
 * module answers the static question "may role R call method M" and maps
 * an RPC path to a method. Operators (coffer://operator/NAME) have no
 * tenant: they may call System and Health only, so no operator certificate
 * ever reaches tenant data. The tenant part of authorization is structural:
 * server.c opens only the caller's own tenant database, so another
 * tenant's data is not reachable at all and looks exactly like "absent".
 *
 * Peer vaults (coffer://vault/NAME, role vault, no tenant) may call Health
 * and the three read-only Sync methods, nothing else; no tenant role and
 * no operator may call Sync*. A Sync request names its tenant itself
 * (vault_authz_tenant_in_request), so its handler, not the role matrix,
 * checks the peer is listed and the tenant is registered and placed here.
 *
 * Thread safety: pure functions over constant tables.
 */
#ifndef VAULT_AUTHZ_H
#define VAULT_AUTHZ_H

#include <stdbool.h>

enum vault_method {
    VAULT_M_MISSING = 0,
    VAULT_M_OPEN_LEASE,
    VAULT_M_PUT_OBJECTS,
    VAULT_M_GET_OBJECTS,
    VAULT_M_COMMIT,
    VAULT_M_LIST_SNAPSHOTS,
    VAULT_M_ADMIN,
    VAULT_M_AUDIT,
    VAULT_M_HEALTH,
    VAULT_M_SYSTEM,
    VAULT_M_SYNC_DIGEST, /* replication: role vault only */
    VAULT_M_SYNC_LIST,
    VAULT_M_SYNC_GET,
    VAULT_M_COUNT,
};

enum vault_role {
    VAULT_ROLE_NONE = 0, /* not a role the vault knows: allowed nothing */
    VAULT_ROLE_AGENT,
    VAULT_ROLE_RESTORE,
    VAULT_ROLE_AUDITOR,
    VAULT_ROLE_ADMIN,
    VAULT_ROLE_VAULT,
    VAULT_ROLE_OPERATOR, /* coffer://operator/NAME: vault-wide, no tenant */
};

#define VAULT_SERVICE_PREFIX "/coffer.v1.Vault/"

/* "/coffer.v1.Vault/Missing" -> VAULT_M_MISSING; VAULT_M_COUNT if unknown. */
enum vault_method vault_authz_method(const char *path);
/* The full path of m ("/coffer.v1.Vault/Missing"). */
const char *vault_authz_path(enum vault_method m);
/* The short name of m ("Missing"), for stats and logs. */
const char *vault_authz_name(enum vault_method m);

/* "agent" -> VAULT_ROLE_AGENT; VAULT_ROLE_NONE for anything else. */
enum vault_role vault_authz_role(const char *name);

/*
 * The role of a caller whose certificate named tenant (empty for the
 * coffer://operator/ and coffer://vault/ forms) and role name: operator
 * and vault only without a tenant, the tenant roles only with one, so a
 * tenant certificate that says "role/vault" or "role/operator" is allowed
 * nothing. VAULT_ROLE_NONE otherwise.
 */
enum vault_role vault_authz_peer_role(const char *tenant, const char *name);

/* Whether role may call m at all (the tenant is checked by scoping). */
bool vault_authz_allowed(enum vault_role role, enum vault_method m);

/* Whether role sees Health statistics (auditor, admin, peer vault). */
bool vault_authz_sees_stats(enum vault_role role);

/*
 * Whether a call of m by a tenant identity needs that tenant to be
 * registered: every method but Health (which only says the vault is up).
 */
bool vault_authz_needs_registration(enum vault_method m);

/*
 * Whether m reads or writes tenant data, and so is refused where the
 * tenant's allowed regions exclude this vault: Missing, OpenLease,
 * PutObjects, GetObjects, Commit, and the three Sync methods (whose
 * handlers also require the caller peer's region).
 */
bool vault_authz_is_data(enum vault_method m);

/*
 * Whether m takes its tenant from the request rather than the caller's
 * certificate: the Sync methods, called by a peer vault, which has none.
 */
bool vault_authz_tenant_in_request(enum vault_method m);

#endif /* VAULT_AUTHZ_H */
