/*
 * authz.c - the role matrix of the vault service (proto/coffer_vault.proto
 * lists the same letters beside each method).
 *
 * Invariants:
 *  1. Deny by default: an unknown role, an unknown method, or any pair not
 *     set in the matrix is refused.
 *  2. The agent role is append-only: it never reads object contents back
 *     (GetObjects) and never administers (Admin), so a stolen agent
 *     certificate can neither exfiltrate nor destroy backups.
 *  3. Operators manage the vault (System) and may ask Health; nothing
 *     else. No tenant role may call System, so a tenant certificate can
 *     never touch the registry, the deny list or another tenant's audit.
 *  4. Role names compare byte for byte, like the identity URI they come
 *     from (docs/FORMAT.md, "Identity").
 */
#include "authz.h"

#include <stddef.h> /* NULL */
#include <string.h> /* strcmp, strncmp */

static const char *const method_names[VAULT_M_COUNT] = {
    [VAULT_M_MISSING] = "Missing",
    [VAULT_M_OPEN_LEASE] = "OpenLease",
    [VAULT_M_PUT_OBJECTS] = "PutObjects",
    [VAULT_M_GET_OBJECTS] = "GetObjects",
    [VAULT_M_COMMIT] = "Commit",
    [VAULT_M_LIST_SNAPSHOTS] = "ListSnapshots",
    [VAULT_M_ADMIN] = "Admin",
    [VAULT_M_AUDIT] = "Audit",
    [VAULT_M_HEALTH] = "Health",
    [VAULT_M_SYSTEM] = "System",
    [VAULT_M_SYNC_DIGEST] = "SyncDigest",
    [VAULT_M_SYNC_LIST] = "SyncList",
    [VAULT_M_SYNC_GET] = "SyncGet",
};

static const char *const method_paths[VAULT_M_COUNT] = {
    [VAULT_M_MISSING] = VAULT_SERVICE_PREFIX "Missing",
    [VAULT_M_OPEN_LEASE] = VAULT_SERVICE_PREFIX "OpenLease",
    [VAULT_M_PUT_OBJECTS] = VAULT_SERVICE_PREFIX "PutObjects",
    [VAULT_M_GET_OBJECTS] = VAULT_SERVICE_PREFIX "GetObjects",
    [VAULT_M_COMMIT] = VAULT_SERVICE_PREFIX "Commit",
    [VAULT_M_LIST_SNAPSHOTS] = VAULT_SERVICE_PREFIX "ListSnapshots",
    [VAULT_M_ADMIN] = VAULT_SERVICE_PREFIX "Admin",
    [VAULT_M_AUDIT] = VAULT_SERVICE_PREFIX "Audit",
    [VAULT_M_HEALTH] = VAULT_SERVICE_PREFIX "Health",
    [VAULT_M_SYSTEM] = VAULT_SERVICE_PREFIX "System",
    [VAULT_M_SYNC_DIGEST] = VAULT_SERVICE_PREFIX "SyncDigest",
    [VAULT_M_SYNC_LIST] = VAULT_SERVICE_PREFIX "SyncList",
    [VAULT_M_SYNC_GET] = VAULT_SERVICE_PREFIX "SyncGet",
};

#define A (1u << VAULT_ROLE_AGENT)
#define R (1u << VAULT_ROLE_RESTORE)
#define U (1u << VAULT_ROLE_AUDITOR)
#define D (1u << VAULT_ROLE_ADMIN)
#define V (1u << VAULT_ROLE_VAULT)
#define O (1u << VAULT_ROLE_OPERATOR)

/* One bit per role that may call the method. */
static const unsigned matrix[VAULT_M_COUNT] = {
    [VAULT_M_MISSING] = A | R,
    [VAULT_M_OPEN_LEASE] = A,
    [VAULT_M_PUT_OBJECTS] = A,
    [VAULT_M_GET_OBJECTS] = R,
    [VAULT_M_COMMIT] = A,
    [VAULT_M_LIST_SNAPSHOTS] = A | R | U | D,
    [VAULT_M_ADMIN] = D,
    [VAULT_M_AUDIT] = U | D,
    [VAULT_M_HEALTH] = A | R | U | D | V | O,
    [VAULT_M_SYSTEM] = O,
    [VAULT_M_SYNC_DIGEST] = V,
    [VAULT_M_SYNC_LIST] = V,
    [VAULT_M_SYNC_GET] = V,
};

#undef A
#undef R
#undef U
#undef D
#undef V
#undef O

enum vault_method
vault_authz_method(const char *path)
{
    enum vault_method m = VAULT_M_COUNT;
    if (path == NULL) {
        goto out;
    }
    for (int i = 0; i < VAULT_M_COUNT; i++) {
        if (strcmp(path, method_paths[i]) == 0) {
            m = (enum vault_method)i;
            break;
        }
    }
out:
    return m;
}

const char *
vault_authz_path(enum vault_method m)
{
    return (unsigned)m < VAULT_M_COUNT ? method_paths[m] : "?";
}

const char *
vault_authz_name(enum vault_method m)
{
    return (unsigned)m < VAULT_M_COUNT ? method_names[m] : "?";
}

enum vault_role
vault_authz_role(const char *name)
{
    static const struct {
        const char *name;
        enum vault_role role;
    } roles[] = {
        {"agent", VAULT_ROLE_AGENT},     {"restore", VAULT_ROLE_RESTORE},
        {"auditor", VAULT_ROLE_AUDITOR}, {"admin", VAULT_ROLE_ADMIN},
        {"vault", VAULT_ROLE_VAULT},     {"operator", VAULT_ROLE_OPERATOR},
    };
    enum vault_role r = VAULT_ROLE_NONE;
    if (name == NULL) {
        goto out;
    }
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
        if (strcmp(name, roles[i].name) == 0) {
            r = roles[i].role;
            break;
        }
    }
out:
    return r;
}

enum vault_role
vault_authz_peer_role(const char *tenant, const char *name)
{
    enum vault_role r = vault_authz_role(name);
    bool tenantless = r == VAULT_ROLE_OPERATOR || r == VAULT_ROLE_VAULT;
    bool has_tenant = tenant != NULL && tenant[0] != '\0';
    return tenantless == has_tenant ? VAULT_ROLE_NONE : r;
}

bool
vault_authz_allowed(enum vault_role role, enum vault_method m)
{
    /* Roles index bits of a 32-bit mask: anything else is no role. */
    if (role == VAULT_ROLE_NONE || (unsigned)role >= 32 ||
        (unsigned)m >= VAULT_M_COUNT) {
        return false;
    }
    return (matrix[m] & (1u << role)) != 0;
}

bool
vault_authz_sees_stats(enum vault_role role)
{
    return role == VAULT_ROLE_AUDITOR || role == VAULT_ROLE_ADMIN ||
           role == VAULT_ROLE_VAULT;
}

bool
vault_authz_needs_registration(enum vault_method m)
{
    return (unsigned)m < VAULT_M_COUNT && m != VAULT_M_HEALTH;
}

bool
vault_authz_is_data(enum vault_method m)
{
    return m == VAULT_M_MISSING || m == VAULT_M_OPEN_LEASE ||
           m == VAULT_M_PUT_OBJECTS || m == VAULT_M_GET_OBJECTS ||
           m == VAULT_M_COMMIT || vault_authz_tenant_in_request(m);
}

bool
vault_authz_tenant_in_request(enum vault_method m)
{
    return m == VAULT_M_SYNC_DIGEST || m == VAULT_M_SYNC_LIST ||
           m == VAULT_M_SYNC_GET;
}
