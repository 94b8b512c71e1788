/*
 * pki.h - the Coffer certificate authority: creates a CA and issues the
 * client and vault certificates that core/rpc.h authenticates.
 *
 * Every key is EC P-256 and every signature ECDSA with SHA-256. A client
 * certificate carries exactly one subjectAltName URI of the form
 * coffer://tenant/<tenant>/role/<role> (docs/FORMAT.md "Identity"); the
 * issuer builds that URI and then checks it with cfr_rpc_identity_parse, so
 * the tool can never issue an identity the server would read differently.
 * An operator certificate carries coffer://operator/<name> (CN <name>): the
 * vault's own operators, vault-wide and never inside a tenant.
 * A vault certificate names its host by DNS and IP SANs (TLS checks those)
 * and itself by the URI coffer://vault/<name>, a form the transport does
 * not read as a tenant identity: a vault certificate can never act for a
 * tenant (docs/ADMIN.md).
 *
 * Files: a CA directory holds ca.pem and ca.key (0600). Issuing writes
 * PREFIX.pem and, unless a CSR supplied the public key, PREFIX.key (0600).
 * No existing file is ever replaced, and no final file name is ever seen
 * half-written (each is written to a temporary file, synced, then linked).
 *
 * Private keys are held only by OpenSSL objects and never printed; the
 * structs below carry public data only.
 *
 * Thread safety: functions may run concurrently on different files.
 */
#ifndef VAULT_PKI_H
#define VAULT_PKI_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h" /* struct cfr_err */
#include "rpc.h" /* CFR_RPC_TENANT_MAX, CFR_RPC_ROLE_MAX, CFR_RPC_NAME_MAX */

#define VAULT_PKI_DAYS_MAX      3650
#define VAULT_PKI_CA_DAYS       3650 /* default CA lifetime */
#define VAULT_PKI_LEAF_DAYS     365  /* default leaf lifetime */
#define VAULT_PKI_SANS_MAX      16   /* --dns plus --ip values */
#define VAULT_PKI_DNS_MAX       253  /* bytes of a DNS name */
#define VAULT_PKI_SUBJECT_MAX   256
#define VAULT_PKI_SANS_TEXT_MAX 2048
#define VAULT_PKI_SERIAL_MAX    48 /* hex digits of a 20-octet serial, NUL */
#define VAULT_PKI_FPR_MAX       96 /* 32 bytes as AA:BB:..., NUL */
#define VAULT_PKI_TIME_MAX      32

/* The URI prefix of a vault's own certificate. */
#define VAULT_PKI_VAULT_URI CFR_RPC_VAULT_URI
/* The URI prefix of an operator's certificate. */
#define VAULT_PKI_OPERATOR_URI CFR_RPC_OPERATOR_URI

enum vault_pki_role {
    VAULT_PKI_AGENT = 0,
    VAULT_PKI_RESTORE = 1,
    VAULT_PKI_AUDITOR = 2,
    VAULT_PKI_ADMIN = 3,
    VAULT_PKI_VAULT = 4,    /* server, and client towards peer vaults */
    VAULT_PKI_OPERATOR = 5, /* the vault's operators: System calls */
};

/* "agent", "restore", ...; NULL for a value outside the enum. */
const char *vault_pki_role_name(enum vault_pki_role role);

/* CFR_EINVAL, naming the accepted roles, for anything else. */
int vault_pki_role_parse(const char *s, enum vault_pki_role *role_r,
                         struct cfr_err *err);

/*
 * Checks a tenant or vault name against the identity rule of
 * docs/FORMAT.md: 1 to 63 bytes of [a-z0-9._-], not starting with '.' or
 * '-'. what ("tenant", "vault name") starts the error message.
 */
int vault_pki_name_check(const char *what, const char *name,
                         struct cfr_err *err);

/* Parses a decimal day count in 1..VAULT_PKI_DAYS_MAX, nothing else. */
int vault_pki_days_parse(const char *s, unsigned *days_r, struct cfr_err *err);

/*
 * What a certificate says, all public. Filled by the three operations
 * below. Strings are empty when absent.
 */
struct vault_pki_info {
    char subject[VAULT_PKI_SUBJECT_MAX]; /* RFC 2253 */
    char issuer[VAULT_PKI_SUBJECT_MAX];
    char sans[VAULT_PKI_SANS_TEXT_MAX];  /* "DNS:a, IP:127.0.0.1, URI:..." */
    char eku[64];                        /* "clientAuth", "serverAuth,..." */
    char not_before[VAULT_PKI_TIME_MAX]; /* 2026-11-23T09:30:00Z */
    char not_after[VAULT_PKI_TIME_MAX];
    char serial[VAULT_PKI_SERIAL_MAX]; /* upper-case hex */
    char sha256[VAULT_PKI_FPR_MAX];    /* AA:BB:... of the DER */
    bool is_ca;
    /* The coffer identity, exactly as the transport would read it. */
    bool has_identity;
    bool ambiguous; /* two or more identity URIs: no identity */
    char tenant[CFR_RPC_TENANT_MAX];
    char role[CFR_RPC_ROLE_MAX];
    char vault_name[CFR_RPC_TENANT_MAX]; /* from coffer://vault/<name> */
    /* From coffer://operator/<name> (then role is "operator", tenant ""). */
    char operator_name[CFR_RPC_TENANT_MAX];
};

struct vault_pki_ca_opts {
    const char *dir;  /* created (0700) when missing */
    const char *name; /* subject CN; NULL = "Coffer CA" */
    unsigned days;    /* 0 = VAULT_PKI_CA_DAYS */
};

/*
 * Creates DIR/ca.key (0600) and the self-signed DIR/ca.pem. CFR_EEXIST
 * when either file already exists (nothing is changed then), CFR_EINVAL
 * for bad options, CFR_EIO for file system failures.
 */
int vault_pki_ca_init(const struct vault_pki_ca_opts *opts,
                      struct vault_pki_info *info_r, struct cfr_err *err);

struct vault_pki_issue_opts {
    const char *ca_dir;
    enum vault_pki_role role;
    const char *tenant; /* required for tenant roles, refused for vault and
                           operator */
    /* vault: its name (NULL = the first DNS name); operator: required,
     * the operator's name (URI and CN); other roles: the holder's name,
     * the certificate's CN (NULL = the role), which tells two admins
     * apart for approvals. */
    const char *name;
    const char *const *dns;
    size_t ndns;
    const char *const *ips; /* IPv4 or IPv6 literals */
    size_t nips;
    unsigned days;        /* 0 = VAULT_PKI_LEAF_DAYS */
    const char *csr_path; /* NULL = generate the key here */
    const char *out_prefix;
};

/*
 * Issues one certificate signed by the CA in opts->ca_dir. Only the public
 * key of a CSR is used (it must be EC P-256 and self-signed correctly); its
 * subject and extensions are ignored, since the CA alone decides what a
 * certificate says. CFR_EINVAL for bad options (dns/ip without vault, a
 * validity past the CA's), CFR_EEXIST when an output file exists,
 * CFR_ECORRUPT for an unreadable or inconsistent CA or CSR, CFR_EIO.
 */
int vault_pki_cert_issue(const struct vault_pki_issue_opts *opts,
                         struct vault_pki_info *info_r, struct cfr_err *err);

/* Reads a PEM certificate and describes it. */
int vault_pki_cert_show(const char *path, struct vault_pki_info *info_r,
                        struct cfr_err *err);

/*
 * The SHA-256 of a PEM certificate's DER encoding as 64 lower-case hex
 * digits: what the vault's deny list compares a client certificate with
 * (struct cfr_rpc_peer.fingerprint). CFR_ENOTFOUND, CFR_EIO, CFR_ECORRUPT.
 */
int vault_pki_cert_fingerprint(const char *path,
                               char out[CFR_RPC_FINGERPRINT_LEN + 1],
                               struct cfr_err *err);

/*
 * Checks client credentials before they are used to connect anywhere:
 * cert_path is a PEM certificate (described into *info_r), key_path its
 * private key (same public key; not accessible by group or others: the
 * check ssh makes), ca_path a PEM CA certificate. Nothing is kept and no
 * key byte leaves OpenSSL. CFR_ENOTFOUND/CFR_EIO for unreadable files,
 * CFR_ECORRUPT for wrong content or a key that does not match,
 * CFR_EDENIED for a key file others can read.
 */
int vault_pki_client_check(const char *cert_path, const char *key_path,
                           const char *ca_path, struct vault_pki_info *info_r,
                           struct cfr_err *err);

#endif /* VAULT_PKI_H */
