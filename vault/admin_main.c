/*
 * admin_main.c - coffer-admin, the operator's tool: the Coffer CA and the
 * certificates that identify agents, restore hosts, auditors, admins,
 * operators and vaults (vault/pki.c does that work), and the operations on
 * running vaults over their System RPC (vault/admin_client.c): tenants,
 * revocation, the deny list, the audit log, approvals, admins' TOTP
 * enrolment and the replication between vaults. This file parses, prints and
 * maps outcomes to exit codes.
 *
 * Invariants:
 *  1. Exit codes are fixed (docs/ADMIN.md, and the EXIT STATUS section of
 *     the usage text): 0 ok, 1 failure, 2 usage, 3 exists, 4 file missing
 *     or I/O, 5 unreadable or inconsistent input, 6 unsafe permissions,
 *     7 a vault unreachable, 8 refused by a vault, 9 pending approval,
 *     10 replication status found a replica behind or failing.
 *  2. Nothing secret is printed: only public certificate data goes to
 *     stdout, and errors name files, never their contents. The one
 *     exception is deliberate: `totp enroll` prints the new TOTP secret
 *     once, on stdout, for the admin's authenticator, and wipes it.
 *  3. Every option is checked before anything is written or any vault is
 *     contacted, so a refused command leaves the file system and every
 *     vault as they were.
 *  4. A vault operation runs on each vault given, in order, whatever
 *     happened on the previous ones, and reports each vault's outcome on
 *     its own line; the exit code is that of the first vault that failed,
 *     else 9 if any is waiting for an approval, else 0 (replication
 *     status: else 10 if a replica is behind or failing).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h> /* offsetof */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h> /* qsort */
#include <string.h>
#include <sys/stat.h>
#include <time.h> /* clock_gettime for --since */

#include "admin_client.h" /* System RPC client and argument checks */
#include "buf.h"          /* cfr_hex_encode */
#include "cfg.h"          /* cfr_parse_duration_ms */
#include "err.h"
#include "json.h"   /* cfr_json_fput */
#include "log.h"    /* quiet the transport's log lines */
#include "mem.h"    /* cfr_malloc */
#include "pki.h"    /* certificates, fingerprints, credential checks */
#include "rpc.h"    /* cfr_rpc_global_init, status names */
#include "secret.h" /* the client key's PEM, cfr_wipe */
#include "totp.h"   /* TOTP secrets and otpauth:// URIs */

enum exit_code {
    EXIT_OK = 0,
    EXIT_FAIL = 1,
    EXIT_USAGE = 2,
    EXIT_EXISTS = 3,
    EXIT_IO = 4,
    EXIT_INPUT = 5,
    EXIT_PERM = 6,
    EXIT_UNREACHABLE = 7,
    EXIT_REFUSED = 8,
    EXIT_PENDING = 9,
    EXIT_BEHIND = 10, /* replication status: a replica behind or failing */
};

static const char usage_text[] =
    "NAME\n"
    "    coffer-admin - Coffer CA, certificates and vault operations\n"
    "\n"
    "SYNOPSIS\n"
    "    coffer-admin ca init --dir DIR [--name NAME] [--days N]\n"
    "    coffer-admin cert issue --ca DIR --role ROLE [--tenant T]\n"
    "                 --out PREFIX [--dns NAME]... [--ip ADDR]...\n"
    "                 [--name NAME] [--days N] [--csr FILE]\n"
    "    coffer-admin cert show FILE\n"
    "\n"
    "    coffer-admin tenant add NAME [--region R]... [--retention DUR]\n"
    "                 [--notify TARGET]... [--reason TEXT] CONNECTION\n"
    "    coffer-admin tenant set NAME [--region R]... [--no-regions]\n"
    "                 [--retention DUR] [--notify TARGET]... [--no-notify]\n"
    "                 [--totp CODE | --approval ID] [--reason TEXT]\n"
    "                 CONNECTION\n"
    "    coffer-admin tenant list [--json] CONNECTION\n"
    "    coffer-admin revoke (--identity URI | --fingerprint HEX |\n"
    "                 --cert FILE) [--reason TEXT]\n"
    "                 [--totp CODE | --approval ID] CONNECTION\n"
    "    coffer-admin unrevoke (--identity URI | --fingerprint HEX |\n"
    "                 --cert FILE) [--reason TEXT] CONNECTION\n"
    "    coffer-admin deny list [--json] CONNECTION\n"
    "    coffer-admin audit [--tenant T] [--since DUR | --since-ms MS]\n"
    "                 [--limit N] [--json] CONNECTION\n"
    "    coffer-admin approve ID [--reason TEXT] CONNECTION\n"
    "    coffer-admin totp enroll [--tenant T] --principal CN\n"
    "                 [--totp CODE | --approval ID] [--reason TEXT]\n"
    "                 CONNECTION\n"
    "    coffer-admin replication status [--tenant T] [--json] CONNECTION\n"
    "    coffer-admin replication sync [--tenant T] CONNECTION\n"
    "    coffer-admin help | --help\n"
    "\n"
    "    CONNECTION is --vault HOST:PORT... --cert FILE --key FILE\n"
    "    --ca-cert FILE [--tls-name NAME] [--timeout DUR], or --connect\n"
    "    FILE holding the same; options given on the command line win.\n"
    "\n"
    "DESCRIPTION\n"
    "    coffer-admin creates the Coffer certificate authority and issues\n"
    "    the certificates every Coffer connection is authenticated with\n"
    "    (mutual TLS). Keys are EC P-256, signatures ECDSA with SHA-256,\n"
    "    serials 128 random bits. No existing file is ever overwritten.\n"
    "\n"
    "    It also manages running vaults through their System RPC, as an\n"
    "    operator (a certificate of role operator): the tenant registry,\n"
    "    revocation (the deny list), the vault-wide audit log, approvals,\n"
    "    admins' TOTP enrolment and replication between vaults. A running\n"
    "    vault holds its system database locked, so these operations\n"
    "    always go over its port.\n"
    "\n"
    "COMMANDS\n"
    "    ca init\n"
    "        Creates DIR (mode 0700) if needed, a CA key DIR/ca.key (0600)\n"
    "        and a self-signed CA certificate DIR/ca.pem (CA:TRUE,\n"
    "        pathlen 0, keyCertSign, cRLSign). Refuses when DIR already\n"
    "        holds a CA. --name sets the CA's common name (default\n"
    "        \"Coffer CA\", up to 64 printable ASCII characters); --days\n"
    "        its lifetime (default 3650).\n"
    "\n"
    "    cert issue\n"
    "        Issues PREFIX.pem, signed by the CA in DIR, and generates its\n"
    "        key PREFIX.key (0600) unless --csr names a certificate\n"
    "        signing request: then only the CSR's public key is used (EC\n"
    "        P-256, its signature must verify) and the key never leaves\n"
    "        the host that made it. Prints the certificate's serial and\n"
    "        SHA-256 fingerprint.\n"
    "\n"
    "        ROLE is one of:\n"
    "          agent    adds backups of tenant T       (needs --tenant)\n"
    "          restore  reads backups of tenant T      (needs --tenant)\n"
    "          auditor  reads metadata and audit log   (needs --tenant)\n"
    "          admin    retention, holds, purges of T  (needs --tenant)\n"
    "          operator runs vaults: tenants, revocation, vault-wide\n"
    "                   audit; never any tenant's data (needs --name)\n"
    "          vault    a vault server, also the client side of vault-to-\n"
    "                   vault replication (needs --dns and/or --ip)\n"
    "\n"
    "        Tenant certificates carry the identity\n"
    "        URI:coffer://tenant/T/role/ROLE, operator certificates\n"
    "        URI:coffer://operator/NAME with CN NAME; both have\n"
    "        extendedKeyUsage clientAuth. --tenant is refused for\n"
    "        operators. Vault certificates carry the --dns and --ip\n"
    "        names, the URI coffer://vault/NAME (NAME from --name, else\n"
    "        the first --dns), and extendedKeyUsage serverAuth,\n"
    "        clientAuth; they never act for a tenant. Tenant, operator and\n"
    "        vault names are 1 to 63 characters of a-z 0-9 . _ -, not\n"
    "        starting with . or -. --days: 1 to 3650, default 365, and\n"
    "        never past the CA's own expiry. For tenant roles, --name\n"
    "        names the holder and becomes the certificate's CN (default:\n"
    "        the role); give every admin and every operator a distinct\n"
    "        --name, since a second approval is told apart by it.\n"
    "\n"
    "    cert show FILE\n"
    "        Prints a certificate's subject, issuer, SANs, the Coffer\n"
    "        identity it carries as the vault reads it, validity, serial\n"
    "        and SHA-256 fingerprint.\n"
    "\n"
    "    tenant add NAME\n"
    "        Registers tenant NAME on each vault: --region (repeatable)\n"
    "        limits where its data may live (none: anywhere), --retention\n"
    "        how long deleted mail stays restorable (e.g. 30d; default:\n"
    "        the vault's), --notify (repeatable) where its security\n"
    "        events go (https://..., mailto:user@host). A vault that\n"
    "        already has NAME with the same settings reports \"exists\"\n"
    "        (success); with other settings it is an error (exit 3): use\n"
    "        tenant set.\n"
    "\n"
    "    tenant set NAME\n"
    "        Changes a registered tenant. Settings not given are kept:\n"
    "        --region replaces the regions (--no-regions clears them),\n"
    "        --notify the targets (--no-notify clears them). Shortening\n"
    "        the retention needs a second factor: the vault answers\n"
    "        pending with an approval ID, another operator runs\n"
    "        coffer-admin approve ID, and you repeat the command with\n"
    "        --approval ID; or give --totp CODE at once.\n"
    "\n"
    "    tenant list\n"
    "        Every tenant with its settings and usage: objects, bytes,\n"
    "        snapshots.\n"
    "\n"
    "    revoke, unrevoke\n"
    "        Adds to (removes from) the deny list, effective for the next\n"
    "        call without a restart. --identity denies every certificate\n"
    "        of an identity (coffer://tenant/T/role/R,\n"
    "        coffer://operator/NAME, coffer://vault/NAME); --fingerprint\n"
    "        one certificate by its SHA-256 (64 hex digits or AA:BB:...);\n"
    "        --cert FILE one certificate, whose fingerprint is computed\n"
    "        here (in these two commands --cert names the certificate to\n"
    "        deny: give your own with --tls-cert or --connect). Revoking\n"
    "        a coffer://vault/ identity needs a second factor, as above.\n"
    "\n"
    "    deny list\n"
    "        The deny list: kind, value, who added it, when, why.\n"
    "\n"
    "    audit\n"
    "        Vault-wide audit records, oldest first: --tenant filters,\n"
    "        --since 2h (relative to now) or --since-ms (Unix ms) sets\n"
    "        the start, --limit (1 to 10000, default the vault's 1000).\n"
    "\n"
    "    approve ID\n"
    "        Approves another operator's pending request on one vault (an\n"
    "        approval ID belongs to the vault that issued it).\n"
    "\n"
    "    totp enroll\n"
    "        Generates a 20-byte TOTP secret, registers it on each vault\n"
    "        for the admin with certificate CN --principal of tenant\n"
    "        --tenant (without --tenant: for operator --principal), and\n"
    "        prints the otpauth:// URI and the base32 secret once, for\n"
    "        the authenticator app. Nothing else ever shows it. Replacing\n"
    "        a registered secret needs a second factor.\n"
    "\n"
    "    replication status\n"
    "        Asks every vault for its replication state and prints one\n"
    "        table per tenant (--tenant: only T), one row per vault:\n"
    "        region, snapshots, newest snapshot, lag (the newest\n"
    "        replica's newest snapshot minus this one's; - when it has\n"
    "        none), last sync (the least recently synced of its peers,\n"
    "        as an age, or never), behind (snapshots its peers had that\n"
    "        it lacked at the last compare), repairs/repair failures,\n"
    "        last repair and the latest peer error. A vault that did not\n"
    "        answer is a row \"unreachable: STATUS\". Exit 10 when every\n"
    "        vault answered but a replica is behind or a peer failed.\n"
    "\n"
    "    replication sync\n"
    "        Starts a sync round on every vault now (--tenant: only T)\n"
    "        and returns at once; replication status shows the result.\n"
    "\n"
    "CONNECTION\n"
    "    --vault HOST:PORT    a vault; repeat for several ([ADDR]:PORT for\n"
    "                         IPv6). The operation runs on each in order.\n"
    "    --cert, --tls-cert FILE   your operator certificate\n"
    "    --key, --tls-key FILE     its key (mode 0600)\n"
    "    --ca-cert FILE       the CA that signed the vaults' certificates\n"
    "    --tls-name NAME      the name the vaults' certificates carry,\n"
    "                         when it is not the host given in --vault\n"
    "    --timeout DUR        deadline of each call (default 10s)\n"
    "    --connect FILE       a libconfig file:\n"
    "                           vaults = [ \"v1.example.net:7443\" ];\n"
    "                           tls = { cert = \"alice.pem\";\n"
    "                                   key = \"alice.key\";\n"
    "                                   ca = \"ca.pem\"; name = \"...\"; };\n"
    "                           timeout = \"10s\";\n"
    "                         (relative paths: next to FILE)\n"
    "\n"
    "OUTPUT\n"
    "    ca init, cert issue and cert show print \"key: value\" lines on\n"
    "    stdout: certificate, key, subject, issuer, identity, san, eku,\n"
    "    not-before, not-after, serial, sha256. Vault operations print\n"
    "    one line per vault, \"HOST:PORT: outcome\"; a pending one adds\n"
    "    approval_id=ID and the commands that finish it. Listings print\n"
    "    a table per vault, or with --json one object:\n"
    "    {\"vaults\":[{\"vault\":..., \"ok\":true, \"tenants\"|\"denied\"|\n"
    "    \"entries\":[...]}, {\"vault\":..., \"ok\":false, \"status\":...,\n"
    "    \"error\":...}]}. replication status --json adds, after the\n"
    "    vaults' raw \"sync\" lines, \"tenants\":[{\"tenant\":...,\n"
    "    \"replicas\":[...one per vault...]}] and \"alert\". Errors go to\n"
    "    stderr.\n"
    "\n"
    "EXIT STATUS\n"
    "    0  success (on every vault)\n"
    "    1  any other failure (a bug, an OpenSSL or a vault failure)\n"
    "    2  usage: unknown command or option, missing or invalid value\n"
    "    3  refused: the CA or an output file already exists; a tenant\n"
    "       exists with other settings\n"
    "    4  a file is missing, or reading or writing it failed\n"
    "    5  an input file is not what it should be (bad PEM, CSR\n"
    "       signature, CA key not matching ca.pem, not a CA certificate,\n"
    "       a key not matching its certificate, a bad connection file)\n"
    "    6  unsafe permissions: a private key readable by group or others\n"
    "    7  a vault could not be reached (down, TLS failure, deadline)\n"
    "    8  a vault refused the operation (not an operator, revoked, bad\n"
    "       argument, unknown tenant or entry, approval not valid)\n"
    "    9  pending: a vault waits for a second operator's approval\n"
    "    10 replication status: every vault answered, but a replica is\n"
    "       behind its peers or its last sync with a peer failed\n"
    "    With several vaults: the code of the first vault that failed,\n"
    "    else 9 if one is pending, else 10 as above, else 0.\n"
    "\n"
    "EXAMPLES\n"
    "    coffer-admin ca init --dir /etc/coffer/ca --name \"Example CA\"\n"
    "    coffer-admin cert issue --ca /etc/coffer/ca --role agent \\\n"
    "        --tenant acme --out acme-agent\n"
    "    coffer-admin cert issue --ca /etc/coffer/ca --role vault \\\n"
    "        --dns vault1.example.net --ip 192.0.2.10 --out vault1\n"
    "    coffer-admin cert issue --ca /etc/coffer/ca --role operator \\\n"
    "        --name alice --out alice\n"
    "    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 \\\n"
    "        -nodes -keyout host.key -subj /CN=host -out host.csr\n"
    "    coffer-admin cert issue --ca /etc/coffer/ca --role restore \\\n"
    "        --tenant acme --csr host.csr --out host\n"
    "    coffer-admin tenant add acme --region eu-west --region eu-north \\\n"
    "        --retention 30d --notify mailto:sec@acme.example \\\n"
    "        --connect /etc/coffer/ops.conf\n"
    "    coffer-admin revoke --cert lost-laptop.pem --reason stolen \\\n"
    "        --connect /etc/coffer/ops.conf\n"
    "    coffer-admin audit --tenant acme --since 1h --json \\\n"
    "        --connect /etc/coffer/ops.conf\n"
    "    coffer-admin replication status --tenant acme \\\n"
    "        --connect /etc/coffer/ops.conf\n"
    "\n"
    "SEE ALSO\n"
    "    docs/ADMIN.md, docs/VAULT.md, docs/FORMAT.md (Identity),\n"
    "    openssl-verify(1)\n";

static int usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static int
usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("coffer-admin: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\nTry 'coffer-admin --help'.\n", stderr);
    va_end(ap);
    return EXIT_USAGE;
}

static int
exit_for(const struct cfr_err *err)
{
    fprintf(stderr, "coffer-admin: %s: %s\n", cfr_code_name(err->code),
            err->msg);
    switch (err->code) {
    case CFR_EINVAL:
        return EXIT_USAGE;
    case CFR_EEXIST:
        return EXIT_EXISTS;
    case CFR_EIO:
    case CFR_ENOTFOUND:
        return EXIT_IO;
    case CFR_ECORRUPT:
    case CFR_EAUTH:
    case CFR_ECONFIG:
        return EXIT_INPUT;
    case CFR_EDENIED:
        return EXIT_PERM;
    default:
        return EXIT_FAIL;
    }
}

static void
print_info(const struct vault_pki_info *in)
{
    printf("subject: %s\n", in->subject);
    printf("issuer: %s\n", in->issuer);
    if (in->has_identity && in->operator_name[0] != '\0') {
        printf("identity: operator=%s\n", in->operator_name);
    } else if (in->has_identity && in->vault_name[0] != '\0') {
        printf("identity: vault=%s\n", in->vault_name);
    } else if (in->has_identity) {
        printf("identity: tenant=%s role=%s\n", in->tenant, in->role);
    } else if (in->ambiguous) {
        printf("identity: none (two or more coffer identity URIs)\n");
    } else if (in->is_ca) {
        printf("identity: certificate authority\n");
    } else {
        printf("identity: none\n");
    }
    printf("san: %s\n", in->sans[0] != '\0' ? in->sans : "(none)");
    printf("eku: %s\n", in->eku);
    printf("not-before: %s\n", in->not_before);
    printf("not-after: %s\n", in->not_after);
    printf("serial: %s\n", in->serial);
    printf("sha256: %s\n", in->sha256);
}

/*
 * Options of one subcommand: "--opt VALUE" or "--opt=VALUE". A value option
 * given twice is an error, except the repeatable SAN lists.
 */
struct args {
    const char *dir, *name, *days, *ca, *role, *tenant, *out, *csr;
    const char *dns[VAULT_PKI_SANS_MAX + 1];
    const char *ips[VAULT_PKI_SANS_MAX + 1];
    size_t ndns, nips;
    const char *positional;
    bool help;
};

struct opt_spec {
    const char *name;
    size_t field; /* offsetof in struct args, or a list marker */
};

#define LIST_DNS ((size_t)-1)
#define LIST_IP  ((size_t)-2)

static int
parse_args(int argc, char **argv, const struct opt_spec *specs, bool want_pos,
           struct args *a)
{
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            a->help = true;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            if (!want_pos || a->positional != NULL) {
                return usage_error("unexpected argument '%s'", arg);
            }
            a->positional = arg;
            continue;
        }
        const char *eq = strchr(arg, '=');
        size_t nlen = eq != NULL ? (size_t)(eq - arg - 2) : strlen(arg + 2);
        const struct opt_spec *s = specs;
        while (s->name != NULL && (strlen(s->name) != nlen ||
                                   memcmp(s->name, arg + 2, nlen) != 0)) {
            s++;
        }
        if (s->name == NULL) {
            return usage_error("unknown option '%s'", arg);
        }
        const char *val = eq != NULL ? eq + 1 : NULL;
        if (val == NULL) {
            if (i + 1 >= argc) {
                return usage_error("option '%s' needs a value", arg);
            }
            val = argv[++i];
        }
        if (s->field == LIST_DNS || s->field == LIST_IP) {
            bool dns = s->field == LIST_DNS;
            size_t *n = dns ? &a->ndns : &a->nips;
            if (a->ndns + a->nips >= VAULT_PKI_SANS_MAX) {
                return usage_error("too many --dns/--ip values");
            }
            (dns ? a->dns : a->ips)[(*n)++] = val;
            continue;
        }
        const char **slot = (const char **)((char *)a + s->field);
        if (*slot != NULL) {
            return usage_error("option '--%s' given twice", s->name);
        }
        *slot = val;
    }
    return 0;
}

#define OPT(n, f)                                                              \
    {                                                                          \
        n, offsetof(struct args, f)                                            \
    }

static int
cmd_ca_init(int argc, char **argv)
{
    static const struct opt_spec specs[] = {
        OPT("dir", dir), OPT("name", name), OPT("days", days), {NULL, 0}};
    struct args a = {0};
    struct cfr_err err;
    struct vault_pki_info info;
    struct vault_pki_ca_opts o = {0};
    int rc = parse_args(argc, argv, specs, false, &a);
    if (rc != 0 || a.help) {
        if (a.help) {
            fputs(usage_text, stdout);
        }
        return rc;
    }
    if (a.dir == NULL) {
        return usage_error("ca init needs --dir DIR");
    }
    cfr_err_clear(&err);
    o.dir = a.dir;
    o.name = a.name;
    if (a.days != NULL && vault_pki_days_parse(a.days, &o.days, &err) != 0) {
        return exit_for(&err);
    }
    if (vault_pki_ca_init(&o, &info, &err) != 0) {
        return exit_for(&err);
    }
    printf("certificate: %s/ca.pem\n", a.dir);
    printf("key: %s/ca.key (mode 0600; keep it offline if you can)\n", a.dir);
    print_info(&info);
    return EXIT_OK;
}

static int
cmd_cert_issue(int argc, char **argv)
{
    static const struct opt_spec specs[] = {
        OPT("ca", ca),   OPT("role", role), OPT("tenant", tenant),
        OPT("out", out), OPT("name", name), OPT("days", days),
        OPT("csr", csr), {"dns", LIST_DNS}, {"ip", LIST_IP},
        {NULL, 0}};
    struct args a = {0};
    struct cfr_err err;
    struct vault_pki_info info;
    struct vault_pki_issue_opts o = {0};
    int rc = parse_args(argc, argv, specs, false, &a);
    if (rc != 0 || a.help) {
        if (a.help) {
            fputs(usage_text, stdout);
        }
        return rc;
    }
    if (a.ca == NULL || a.role == NULL || a.out == NULL) {
        return usage_error("cert issue needs --ca DIR, --role ROLE and "
                           "--out PREFIX");
    }
    cfr_err_clear(&err);
    if (vault_pki_role_parse(a.role, &o.role, &err) != 0 ||
        (a.days != NULL && vault_pki_days_parse(a.days, &o.days, &err) != 0)) {
        return exit_for(&err);
    }
    o.ca_dir = a.ca;
    o.tenant = a.tenant;
    o.name = a.name;
    o.dns = a.dns;
    o.ndns = a.ndns;
    o.ips = a.ips;
    o.nips = a.nips;
    o.csr_path = a.csr;
    o.out_prefix = a.out;
    if (vault_pki_cert_issue(&o, &info, &err) != 0) {
        return exit_for(&err);
    }
    printf("certificate: %s.pem\n", a.out);
    if (a.csr != NULL) {
        printf("key: stays with the host that made %s\n", a.csr);
    } else {
        printf("key: %s.key (mode 0600)\n", a.out);
    }
    print_info(&info);
    return EXIT_OK;
}

static int
cmd_cert_show(int argc, char **argv)
{
    static const struct opt_spec specs[] = {{NULL, 0}};
    struct args a = {0};
    struct cfr_err err;
    struct vault_pki_info info;
    int rc = parse_args(argc, argv, specs, true, &a);
    if (rc != 0 || a.help) {
        if (a.help) {
            fputs(usage_text, stdout);
        }
        return rc;
    }
    if (a.positional == NULL) {
        return usage_error("cert show needs a certificate FILE");
    }
    cfr_err_clear(&err);
    if (vault_pki_cert_show(a.positional, &info, &err) != 0) {
        return exit_for(&err);
    }
    printf("certificate: %s\n", a.positional);
    print_info(&info);
    return EXIT_OK;
}

/* ---- vault operations: options ------------------------------------------ */

#define LIST_MAX    (VAULT_ADMIN_VAULTS_MAX + 1)
#define PEM_MAX     (1024 * 1024)
#define ISSUER      "Coffer"
#define URI_MAX     512
#define ACCOUNT_MAX 160

struct vlist {
    const char *v[LIST_MAX];
    size_t n;
};

/* Options of a vault operation; NULL or 0 when not given. */
struct vargs {
    struct vlist vault, region, notify;
    const char *cert, *key, *ca_cert, *connect, *timeout, *tls_name;
    const char *retention, *totp, *approval, *reason;
    const char *identity, *fingerprint, *target_cert;
    const char *tenant, *principal, *since, *since_ms, *limit;
    bool json, no_regions, no_notify, help;
    const char *positional;
};

/* Which operation options a command takes (connection ones: all). */
enum {
    O_REGION = 1 << 0,
    O_NOTIFY = 1 << 1,
    O_RETENTION = 1 << 2,
    O_FACTOR = 1 << 3, /* --totp, --approval */
    O_REASON = 1 << 4,
    O_TARGET = 1 << 5, /* --identity, --fingerprint, --cert FILE */
    O_JSON = 1 << 6,
    O_AUDIT = 1 << 7,       /* --tenant, --since, --since-ms, --limit */
    O_TOTP_ENROLL = 1 << 8, /* --tenant, --principal */
    O_CLEAR = 1 << 9,       /* --no-regions, --no-notify */
    O_SYNC = 1 << 10,       /* replication: --tenant */
};

enum vkind { V_ONE, V_LIST, V_FLAG };

struct vspec {
    const char *name;
    enum vkind kind;
    unsigned need; /* 0: a connection option */
    size_t off;
};

#define VONE(n, need, f)                                                       \
    {                                                                          \
        n, V_ONE, need, offsetof(struct vargs, f)                              \
    }
#define VLIST(n, need, f)                                                      \
    {                                                                          \
        n, V_LIST, need, offsetof(struct vargs, f)                             \
    }
#define VFLAG(n, need, f)                                                      \
    {                                                                          \
        n, V_FLAG, need, offsetof(struct vargs, f)                             \
    }

static const struct vspec vspecs[] = {
    VLIST("vault", 0, vault),
    VONE("cert", 0, cert),
    VONE("tls-cert", 0, cert),
    VONE("key", 0, key),
    VONE("tls-key", 0, key),
    VONE("ca-cert", 0, ca_cert),
    VONE("connect", 0, connect),
    VONE("timeout", 0, timeout),
    VONE("tls-name", 0, tls_name),
    VLIST("region", O_REGION, region),
    VLIST("notify", O_NOTIFY, notify),
    VONE("retention", O_RETENTION, retention),
    VONE("totp", O_FACTOR, totp),
    VONE("approval", O_FACTOR, approval),
    VONE("reason", O_REASON, reason),
    VONE("identity", O_TARGET, identity),
    VONE("fingerprint", O_TARGET, fingerprint),
    VONE("tenant", O_AUDIT | O_TOTP_ENROLL | O_SYNC, tenant),
    VONE("principal", O_TOTP_ENROLL, principal),
    VONE("since", O_AUDIT, since),
    VONE("since-ms", O_AUDIT, since_ms),
    VONE("limit", O_AUDIT, limit),
    VFLAG("json", O_JSON, json),
    VFLAG("no-regions", O_CLEAR, no_regions),
    VFLAG("no-notify", O_CLEAR, no_notify),
};

/*
 * Parses the options of a vault operation that takes those in allowed.
 * In revoke and unrevoke (O_TARGET), --cert names the certificate to deny
 * and the operator's own is --tls-cert: both spellings are documented.
 */
static int
parse_vargs(int argc, char **argv, unsigned allowed, bool want_pos,
            struct vargs *a)
{
    memset(a, 0, sizeof(*a));
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            a->help = true;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            if (!want_pos || a->positional != NULL) {
                return usage_error("unexpected argument '%s'", arg);
            }
            a->positional = arg;
            continue;
        }
        const char *eq = strchr(arg, '=');
        size_t nlen = eq != NULL ? (size_t)(eq - arg - 2) : strlen(arg + 2);
        const struct vspec *s = NULL;
        for (size_t k = 0; k < sizeof(vspecs) / sizeof(vspecs[0]); k++) {
            if (strlen(vspecs[k].name) == nlen &&
                memcmp(vspecs[k].name, arg + 2, nlen) == 0 &&
                (vspecs[k].need == 0 || (vspecs[k].need & allowed) != 0)) {
                s = &vspecs[k];
                break;
            }
        }
        if (s == NULL) {
            return usage_error("unknown option '%s'", arg);
        }
        size_t off = s->off;
        if ((allowed & O_TARGET) != 0 && strcmp(s->name, "cert") == 0) {
            off = offsetof(struct vargs, target_cert);
        }
        if (s->kind == V_FLAG) {
            if (eq != NULL) {
                return usage_error("option '--%s' takes no value", s->name);
            }
            *(bool *)((char *)a + off) = true;
            continue;
        }
        const char *val = eq != NULL ? eq + 1 : NULL;
        if (val == NULL) {
            if (i + 1 >= argc) {
                return usage_error("option '%s' needs a value", arg);
            }
            val = argv[++i];
        }
        if (s->kind == V_LIST) {
            struct vlist *l = (struct vlist *)((char *)a + off);
            if (l->n >= LIST_MAX - 1) {
                return usage_error("too many --%s values", s->name);
            }
            l->v[l->n++] = val;
            continue;
        }
        const char **slot = (const char **)((char *)a + off);
        if (*slot != NULL && off == offsetof(struct vargs, target_cert)) {
            return usage_error("in revoke and unrevoke, --cert names the "
                               "certificate to deny; give yours with "
                               "--tls-cert (or --connect)");
        }
        if (*slot != NULL) {
            return usage_error("option '--%s' given twice", s->name);
        }
        *slot = val;
    }
    return 0;
}

/* ---- vault operations: connecting -------------------------------------- */

/* Reads a PEM file (capped) into owned memory, NUL-terminated. */
static int
read_pem(const char *path, char **out_r, struct cfr_err *err)
{
    FILE *f = fopen(path, "rb");
    char *p = NULL;
    size_t n = 0;
    *out_r = NULL;
    if (f == NULL) {
        return CFR_ERR_ERRNO(err, CFR_EIO, "cannot read %s", path);
    }
    p = cfr_malloc(PEM_MAX + 1);
    if (p != NULL) {
        n = fread(p, 1, PEM_MAX, f);
        p[n] = '\0';
    }
    fclose(f);
    if (p == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "out of memory");
    }
    *out_r = p;
    return 0;
}

/* Reads the private key into guarded memory that is wiped when freed. */
static int
read_key(const char *path, struct cfr_secret **key_r, struct cfr_err *err)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    int rc = 0;
    *key_r = NULL;
    if (f == NULL) {
        return CFR_ERR_ERRNO(err, CFR_EIO, "cannot read %s", path);
    }
    if (fstat(fileno(f), &st) != 0 || st.st_size <= 0 || st.st_size > PEM_MAX) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "%s: not a key file", path);
        goto out;
    }
    if ((*key_r = cfr_secret_new((size_t)st.st_size + 1, err)) == NULL) {
        rc = err->code;
        goto out;
    }
    uint8_t *k = cfr_secret_rw(*key_r);
    size_t n = fread(k, 1, (size_t)st.st_size, f);
    k[n] = '\0';
    (void)cfr_secret_ro(*key_r);
out:
    fclose(f);
    return rc;
}

/*
 * Everything an operation needs before the first vault is contacted:
 * the connection (checked), the credentials (read and checked).
 */
struct session {
    struct vault_admin_conn conn;
    char *ca_pem, *cert_pem;
    struct cfr_secret *key;
    char me[CFR_RPC_TENANT_MAX]; /* the operator's name, from --cert */
    bool rpc_up;
};

static void
session_fini(struct session *s)
{
    cfr_free(s->ca_pem);
    cfr_free(s->cert_pem);
    cfr_secret_free(s->key);
    /* grpc_shutdown may wait seconds for its threads; a one-shot tool
     * leaves that to the process exit (rpc.h). */
    s->ca_pem = s->cert_pem = NULL;
    s->key = NULL;
}

static int
session_open(struct session *s, const struct vargs *a)
{
    struct vault_admin_conn cli;
    struct vault_pki_info info;
    struct cfr_err err;

    memset(s, 0, sizeof(*s));
    memset(&cli, 0, sizeof(cli));
    cfr_err_clear(&err);
    if (a->connect != NULL &&
        vault_admin_conn_load(a->connect, &s->conn, &err) != 0) {
        return exit_for(&err);
    }
    if (a->vault.n > VAULT_ADMIN_VAULTS_MAX) {
        return usage_error("at most %d vaults", VAULT_ADMIN_VAULTS_MAX);
    }
    for (size_t i = 0; i < a->vault.n; i++) {
        if (strlen(a->vault.v[i]) >= VAULT_ADMIN_TARGET_MAX) {
            return usage_error("--vault value too long");
        }
        snprintf(cli.vaults[i], sizeof(cli.vaults[i]), "%s", a->vault.v[i]);
    }
    cli.n_vaults = a->vault.n;
    static const struct {
        size_t arg, field, size;
        const char *name;
    } paths[] = {
        {offsetof(struct vargs, cert), offsetof(struct vault_admin_conn, cert),
         VAULT_ADMIN_PATH_MAX, "--cert"},
        {offsetof(struct vargs, key), offsetof(struct vault_admin_conn, key),
         VAULT_ADMIN_PATH_MAX, "--key"},
        {offsetof(struct vargs, ca_cert), offsetof(struct vault_admin_conn, ca),
         VAULT_ADMIN_PATH_MAX, "--ca-cert"},
        {offsetof(struct vargs, tls_name),
         offsetof(struct vault_admin_conn, tls_name), VAULT_ADMIN_TARGET_MAX,
         "--tls-name"},
    };
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        const char *v = *(const char *const *)((const char *)a + paths[i].arg);
        if (v == NULL) {
            continue;
        }
        if (v[0] == '\0' || strlen(v) >= paths[i].size) {
            return usage_error("%s: bad value", paths[i].name);
        }
        snprintf((char *)&cli + paths[i].field, paths[i].size, "%s", v);
    }
    if (a->timeout != NULL) {
        int64_t ms = 0;
        if (cfr_parse_duration_ms(a->timeout, &ms) != 0 || ms < 1 ||
            ms > VAULT_ADMIN_TIMEOUT_MAX) {
            return usage_error("--timeout: a duration from 1ms to 10m "
                               "(e.g. 5s)");
        }
        cli.timeout_ms = ms;
    }
    vault_admin_conn_merge(&s->conn, &cli);
    if (vault_admin_conn_check(&s->conn, &err) != 0) {
        return usage_error("%s", err.msg);
    }
    if (vault_pki_client_check(s->conn.cert, s->conn.key, s->conn.ca, &info,
                               &err) != 0) {
        return exit_for(&err);
    }
    /* The vault would refuse anything else; saying so here is clearer and
     * contacts no vault. */
    if (!info.has_identity || info.operator_name[0] == '\0') {
        return usage_error("%s is not an operator certificate (identity "
                           "%s%s%s); vault operations need one: coffer-admin "
                           "cert issue --role operator --name NAME",
                           s->conn.cert, info.has_identity ? info.role : "none",
                           info.has_identity && info.tenant[0] ? " of " : "",
                           info.has_identity ? info.tenant : "");
    }
    snprintf(s->me, sizeof(s->me), "%s", info.operator_name);
    if (read_pem(s->conn.ca, &s->ca_pem, &err) != 0 ||
        read_pem(s->conn.cert, &s->cert_pem, &err) != 0 ||
        read_key(s->conn.key, &s->key, &err) != 0) {
        session_fini(s);
        return exit_for(&err);
    }
    if (cfr_rpc_global_init(&err) != 0) {
        session_fini(s);
        return exit_for(&err);
    }
    s->rpc_up = true;
    return 0;
}

/* ---- vault operations: running them on every vault --------------------- */

enum result {
    R_DONE = 0,
    R_EXISTS,   /* tenant add: already there, same settings (success) */
    R_PENDING,  /* waiting for a second factor */
    R_CONFLICT, /* tenant add: there with other settings */
    R_UNREACHABLE,
    R_REFUSED,
    R_FAILED,
};

struct op;
typedef enum result op_fn(struct op *o, struct vault_admin_client *cli,
                          const char *vault);

/* One operation over the vaults. */
struct op {
    const struct vargs *a;
    const struct session *s;
    Coffer__V1__SystemRequest *req;
    op_fn *fn;
    const char *what; /* "tenant add", for the pending hint */
    int argc;         /* the operation's own arguments, for the hint */
    char **argv;
    bool json;
    size_t json_n; /* vault objects written so far */
    bool any_done; /* some vault did it (totp enroll prints then) */
    void *ctx;     /* the command's own state (replication status) */
};

/* The result of a failed call, with one line on stderr. */
static enum result
call_failed(const char *vault, int status, const struct cfr_err *err)
{
    /* The transport names method and target; the vault is named first. */
    const char *msg = err->msg, *to = strstr(msg, " to ");
    size_t vlen = strlen(vault);
    if (strncmp(msg, "rpc ", 4) == 0 && to != NULL &&
        strncmp(to + 4, vault, vlen) == 0 && to[4 + vlen] == ':') {
        msg = to + 4 + vlen + 1 + (to[5 + vlen] == ' ');
    }
    fprintf(stderr, "coffer-admin: %s: %s\n", vault, msg);
    switch (vault_admin_outcome_of(status)) {
    case VAULT_ADMIN_UNREACHABLE:
        return R_UNREACHABLE;
    case VAULT_ADMIN_REFUSED:
        return R_REFUSED;
    default:
        return R_FAILED;
    }
}

/* A word from a shell command line, quoted only when it has to be. */
static void
shell_word(const char *w)
{
    bool plain = w[0] != '\0';
    for (const char *p = w; *p != '\0' && plain; p++) {
        plain = strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                       "0123456789-_./:=@%+,",
                       *p) != NULL;
    }
    if (plain) {
        fputs(w, stdout);
        return;
    }
    putchar('\'');
    for (const char *p = w; *p != '\0'; p++) {
        if (*p == '\'') {
            fputs("'\\''", stdout);
        } else {
            putchar(*p);
        }
    }
    putchar('\'');
}

/*
 * Says what finishes a pending request: the ID is the vault's, so both
 * commands name that one vault. The repeat is this very command line with
 * the vault list, --totp and --approval replaced.
 */
static enum result
report_pending(struct op *o, const char *vault,
               const Coffer__V1__SystemResponse *r)
{
    char hex[2 * VAULT_ADMIN_APPROVAL_ID + 1] = "";
    if (r->approval_id.len == VAULT_ADMIN_APPROVAL_ID) {
        cfr_hex_encode(r->approval_id.data, VAULT_ADMIN_APPROVAL_ID, hex);
    }
    printf("%s: pending approval_id=%s\n", vault, hex[0] ? hex : "(none)");
    if (hex[0] == '\0') {
        return R_FAILED;
    }
    printf("  A second operator approves it (with their own credentials):\n"
           "    coffer-admin approve %s --vault %s\n"
           "  then you run, within the vault's approval window:\n"
           "    coffer-admin %s",
           hex, vault, o->what);
    for (int i = 0; i < o->argc; i++) {
        const char *w = o->argv[i];
        bool drop_next = strcmp(w, "--vault") == 0 ||
                         strcmp(w, "--totp") == 0 ||
                         strcmp(w, "--approval") == 0;
        if (drop_next) {
            i++;
            continue;
        }
        if (strncmp(w, "--vault=", 8) == 0 || strncmp(w, "--totp=", 7) == 0 ||
            strncmp(w, "--approval=", 11) == 0) {
            continue;
        }
        putchar(' ');
        shell_word(w);
    }
    printf(" --vault %s --approval %s\n"
           "  or repeat it with --totp CODE from your authenticator.\n",
           vault, hex);
    return R_PENDING;
}

/* A JSON failure object for one vault. */
static void
json_vault_error(struct op *o, const char *vault, int status,
                 const struct cfr_err *err)
{
    printf("%s{\"vault\":", o->json_n++ > 0 ? "," : "");
    cfr_json_fput(stdout, vault);
    printf(",\"ok\":false,\"status\":");
    cfr_json_fput(stdout, cfr_rpc_status_name(status));
    printf(",\"error\":");
    cfr_json_fput(stdout, err->msg);
    printf("}");
}

/* The exit code of the whole run (invariant 4). */
static int
exit_of(const enum result *res, size_t n)
{
    bool pending = false;
    for (size_t i = 0; i < n; i++) {
        switch (res[i]) {
        case R_UNREACHABLE:
            return EXIT_UNREACHABLE;
        case R_REFUSED:
            return EXIT_REFUSED;
        case R_CONFLICT:
            return EXIT_EXISTS;
        case R_FAILED:
            return EXIT_FAIL;
        case R_PENDING:
            pending = true;
            break;
        default:
            break;
        }
    }
    return pending ? EXIT_PENDING : EXIT_OK;
}

static int
run_on_vaults(struct op *o)
{
    const struct session *s = o->s;
    enum result res[VAULT_ADMIN_VAULTS_MAX];

    if (o->json) {
        printf("{\"vaults\":[");
    }
    for (size_t i = 0; i < s->conn.n_vaults; i++) {
        const char *vault = s->conn.vaults[i];
        struct vault_admin_client *cli = NULL;
        struct cfr_err err;
        struct vault_admin_client_opts co = {
            .target = vault,
            .tls_name = s->conn.tls_name,
            .ca_pem = s->ca_pem,
            .cert_pem = s->cert_pem,
            .key_pem = (const char *)cfr_secret_ro(s->key),
            .timeout_ms = s->conn.timeout_ms,
        };
        cfr_err_clear(&err);
        if (vault_admin_client_new(&co, &cli, &err) != 0) {
            if (o->json) {
                json_vault_error(o, vault, CFR_RPC_INTERNAL, &err);
            }
            res[i] = call_failed(vault, CFR_RPC_INTERNAL, &err);
            continue;
        }
        res[i] = o->fn(o, cli, vault);
        vault_admin_client_free(cli);
        fflush(stdout);
    }
    if (o->json) {
        printf("]}\n");
    }
    return exit_of(res, s->conn.n_vaults);
}

/* One System call with the operation's request; prints failures. */
static int
system_call(struct op *o, struct vault_admin_client *cli, const char *vault,
            const Coffer__V1__SystemRequest *req,
            Coffer__V1__SystemResponse **resp_r, enum result *res_r)
{
    struct cfr_err err;
    int status = 0;
    cfr_err_clear(&err);
    if (vault_admin_system(cli, req, resp_r, &status, &err) == 0) {
        return 0;
    }
    if (o->json) {
        json_vault_error(o, vault, status, &err);
    }
    *res_r = call_failed(vault, status, &err);
    return status;
}

/* ---- vault operations: the commands ------------------------------------ */

static void
print_tenant_settings(const Coffer__V1__TenantInfo *t)
{
    char dur[32];
    printf("regions=");
    for (size_t i = 0; i < t->n_regions; i++) {
        printf("%s%s", i ? "," : "", t->regions[i]);
    }
    printf("%s retention=%s notify=", t->n_regions == 0 ? "(any)" : "",
           vault_admin_duration_text(t->retention_ms, dur, sizeof(dur)));
    for (size_t i = 0; i < t->n_notify; i++) {
        printf("%s%s", i ? "," : "", t->notify[i]);
    }
    printf("%s", t->n_notify == 0 ? "(none)" : "");
}

/* The registered record of name on this vault, via TENANT_LIST. */
static int
tenant_fetch(struct op *o, struct vault_admin_client *cli, const char *vault,
             const char *name, Coffer__V1__SystemResponse **list_r,
             const Coffer__V1__TenantInfo **t_r, enum result *res_r)
{
    Coffer__V1__SystemRequest req = COFFER__V1__SYSTEM_REQUEST__INIT;
    req.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_TENANT_LIST;
    *t_r = NULL;
    if (system_call(o, cli, vault, &req, list_r, res_r) != 0) {
        return -1;
    }
    for (size_t i = 0; i < (*list_r)->n_tenants; i++) {
        if (strcmp((*list_r)->tenants[i]->name, name) == 0) {
            *t_r = (*list_r)->tenants[i];
        }
    }
    return 0;
}

static enum result
op_tenant_add(struct op *o, struct vault_admin_client *cli, const char *vault)
{
    Coffer__V1__SystemResponse *r = NULL, *list = NULL;
    const Coffer__V1__TenantInfo *have = NULL;
    enum result res = R_DONE;
    struct cfr_err err;
    int status = 0;

    cfr_err_clear(&err);
    if (vault_admin_system(cli, o->req, &r, &status, &err) == 0) {
        printf("%s: added tenant %s (", vault, o->req->tenant->name);
        print_tenant_settings(o->req->tenant);
        printf(")\n");
        goto out;
    }
    if (status != CFR_RPC_ALREADY_EXISTS) {
        res = call_failed(vault, status, &err);
        goto out;
    }
    /* Idempotent across vaults and re-runs: the same settings are fine. */
    if (tenant_fetch(o, cli, vault, o->req->tenant->name, &list, &have, &res) !=
        0) {
        goto out;
    }
    if (have == NULL) {
        fprintf(stderr,
                "coffer-admin: %s: the vault says tenant %s exists but does "
                "not list it\n",
                vault, o->req->tenant->name);
        res = R_FAILED;
        goto out;
    }
    /* The registry keeps retention 0 as "the vault's default", so the
     * values compare as they are. */
    if (vault_admin_tenant_same(o->req->tenant, have, 0)) {
        printf("%s: exists tenant %s (same settings)\n", vault, have->name);
        res = R_EXISTS;
        goto out;
    }
    printf("%s: conflict: tenant %s exists with other settings (", vault,
           have->name);
    print_tenant_settings(have);
    printf(")\n");
    fprintf(stderr,
            "coffer-admin: %s: tenant %s exists with other settings; use "
            "'coffer-admin tenant set %s ...' to change them\n",
            vault, have->name, have->name);
    res = R_CONFLICT;
out:
    if (r != NULL) {
        coffer__v1__system_response__free_unpacked(r, NULL);
    }
    if (list != NULL) {
        coffer__v1__system_response__free_unpacked(list, NULL);
    }
    return res;
}

static enum result
op_tenant_set(struct op *o, struct vault_admin_client *cli, const char *vault)
{
    Coffer__V1__SystemResponse *r = NULL, *list = NULL;
    const Coffer__V1__TenantInfo *have = NULL;
    const Coffer__V1__TenantInfo *want = o->req->tenant;
    Coffer__V1__TenantInfo merged = COFFER__V1__TENANT_INFO__INIT;
    Coffer__V1__SystemRequest req = *o->req;
    enum result res = R_DONE;

    /* Settings not given are kept: read them from this vault first. */
    if (tenant_fetch(o, cli, vault, want->name, &list, &have, &res) != 0) {
        goto out;
    }
    if (have == NULL) {
        fprintf(stderr,
                "coffer-admin: %s: tenant %s is not registered here; use "
                "'coffer-admin tenant add'\n",
                vault, want->name);
        res = R_REFUSED;
        goto out;
    }
    merged.name = want->name;
    merged.retention_ms =
        o->a->retention != NULL ? want->retention_ms : have->retention_ms;
    if (o->a->region.n > 0 || o->a->no_regions) {
        merged.n_regions = want->n_regions;
        merged.regions = want->regions;
    } else {
        merged.n_regions = have->n_regions;
        merged.regions = have->regions;
    }
    if (o->a->notify.n > 0 || o->a->no_notify) {
        merged.n_notify = want->n_notify;
        merged.notify = want->notify;
    } else {
        merged.n_notify = have->n_notify;
        merged.notify = have->notify;
    }
    if (vault_admin_tenant_same(&merged, have, 0) && o->a->approval == NULL &&
        o->a->totp == NULL) {
        printf("%s: unchanged tenant %s (", vault, have->name);
        print_tenant_settings(have);
        printf(")\n");
        goto out;
    }
    req.tenant = &merged;
    if (system_call(o, cli, vault, &req, &r, &res) != 0) {
        goto out;
    }
    if (r->pending) {
        res = report_pending(o, vault, r);
        goto out;
    }
    printf("%s: updated tenant %s (", vault, merged.name);
    print_tenant_settings(&merged);
    printf(")\n");
out:
    if (r != NULL) {
        coffer__v1__system_response__free_unpacked(r, NULL);
    }
    if (list != NULL) {
        coffer__v1__system_response__free_unpacked(list, NULL);
    }
    return res;
}

static void
json_string_list(char **v, size_t n)
{
    printf("[");
    for (size_t i = 0; i < n; i++) {
        printf("%s", i ? "," : "");
        cfr_json_fput(stdout, v[i]);
    }
    printf("]");
}

static enum result
op_tenant_list(struct op *o, struct vault_admin_client *cli, const char *vault)
{
    Coffer__V1__SystemResponse *r = NULL;
    enum result res = R_DONE;
    char when[40], dur[32];

    if (system_call(o, cli, vault, o->req, &r, &res) != 0) {
        return res;
    }
    if (o->json) {
        printf("%s{\"vault\":", o->json_n++ > 0 ? "," : "");
        cfr_json_fput(stdout, vault);
        printf(",\"ok\":true,\"tenants\":[");
        for (size_t i = 0; i < r->n_tenants; i++) {
            const Coffer__V1__TenantInfo *t = r->tenants[i];
            printf("%s{\"name\":", i ? "," : "");
            cfr_json_fput(stdout, t->name);
            printf(",\"regions\":");
            json_string_list(t->regions, t->n_regions);
            printf(",\"retention_ms\":%lld,\"notify\":",
                   (long long)t->retention_ms);
            json_string_list(t->notify, t->n_notify);
            printf(",\"created_ms\":%lld,\"objects\":%llu,\"object_bytes\":"
                   "%llu,\"snapshots\":%llu}",
                   (long long)t->created_ms, (unsigned long long)t->objects,
                   (unsigned long long)t->object_bytes,
                   (unsigned long long)t->snapshots);
        }
        printf("]}");
        goto out;
    }
    printf("%s: %zu tenant%s\n", vault, r->n_tenants,
           r->n_tenants == 1 ? "" : "s");
    if (r->n_tenants > 0) {
        printf("  %-24s %10s %14s %9s %9s %-24s %s\n", "TENANT", "OBJECTS",
               "BYTES", "SNAPSHOTS", "RETENTION", "CREATED", "REGIONS/NOTIFY");
    }
    for (size_t i = 0; i < r->n_tenants; i++) {
        const Coffer__V1__TenantInfo *t = r->tenants[i];
        printf("  %-24s %10llu %14llu %9llu %9s %-24s ", t->name,
               (unsigned long long)t->objects,
               (unsigned long long)t->object_bytes,
               (unsigned long long)t->snapshots,
               vault_admin_duration_text(t->retention_ms, dur, sizeof(dur)),
               vault_admin_time_text(t->created_ms, when, sizeof(when)));
        printf("regions=");
        for (size_t k = 0; k < t->n_regions; k++) {
            printf("%s%s", k ? "," : "", t->regions[k]);
        }
        printf("%s notify=", t->n_regions == 0 ? "(any)" : "");
        for (size_t k = 0; k < t->n_notify; k++) {
            printf("%s%s", k ? "," : "", t->notify[k]);
        }
        printf("%s\n", t->n_notify == 0 ? "(none)" : "");
    }
out:
    coffer__v1__system_response__free_unpacked(r, NULL);
    return res;
}

/* REVOKE, UNREVOKE, APPROVE, TOTP_SET: an action that may be pending. */
static enum result
op_action(struct op *o, struct vault_admin_client *cli, const char *vault)
{
    Coffer__V1__SystemResponse *r = NULL;
    enum result res = R_DONE;
    const Coffer__V1__SystemRequest *q = o->req;

    if (system_call(o, cli, vault, q, &r, &res) != 0) {
        return res;
    }
    if (r->pending) {
        res = report_pending(o, vault, r);
        goto out;
    }
    switch (q->op) {
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_REVOKE:
        printf("%s: revoked %s %s\n", vault, q->deny->kind, q->deny->value);
        break;
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_UNREVOKE:
        printf("%s: unrevoked %s %s\n", vault, q->deny->kind, q->deny->value);
        break;
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_APPROVE:
        printf("%s: approved %s\n", vault, o->a->positional);
        break;
    case COFFER__V1__SYSTEM_OP__SYSTEM_OP_SYNC:
        /* The vault starts the round and answers at once: "started" is
         * all this can say; replication status shows how it went. */
        if (q->tenant_name[0] != '\0') {
            printf("%s: sync started for tenant %s\n", vault, q->tenant_name);
        } else {
            printf("%s: sync started for all tenants\n", vault);
        }
        break;
    default:
        if (q->tenant_name[0] != '\0') {
            printf("%s: enrolled TOTP for principal %s of tenant %s\n", vault,
                   q->principal, q->tenant_name);
        } else {
            printf("%s: enrolled TOTP for operator %s\n", vault, q->principal);
        }
        o->any_done = true;
        break;
    }
out:
    coffer__v1__system_response__free_unpacked(r, NULL);
    return res;
}

static enum result
op_deny_list(struct op *o, struct vault_admin_client *cli, const char *vault)
{
    Coffer__V1__SystemResponse *r = NULL;
    enum result res = R_DONE;
    char when[40];

    if (system_call(o, cli, vault, o->req, &r, &res) != 0) {
        return res;
    }
    if (o->json) {
        printf("%s{\"vault\":", o->json_n++ > 0 ? "," : "");
        cfr_json_fput(stdout, vault);
        printf(",\"ok\":true,\"denied\":[");
        for (size_t i = 0; i < r->n_denied; i++) {
            const Coffer__V1__DenyEntry *d = r->denied[i];
            printf("%s{\"kind\":", i ? "," : "");
            vault_admin_json_token(stdout, d->kind);
            printf(",\"value\":");
            vault_admin_json_token(stdout, d->value);
            printf(",\"reason\":");
            vault_admin_json_token(stdout, d->reason);
            printf(",\"by\":");
            vault_admin_json_token(stdout, d->by);
            printf(",\"added_ms\":%lld}", (long long)d->added_ms);
        }
        printf("]}");
        goto out;
    }
    printf("%s: %zu denied\n", vault, r->n_denied);
    for (size_t i = 0; i < r->n_denied; i++) {
        const Coffer__V1__DenyEntry *d = r->denied[i];
        /* The vault sends log-safe tokens; a tool still trusts no bytes. */
        printf("  %-11s ", d->kind);
        vault_admin_print_safe(stdout, d->value);
        printf(" by=");
        vault_admin_print_safe(stdout, d->by);
        printf(" added=%s reason=",
               vault_admin_time_text(d->added_ms, when, sizeof(when)));
        vault_admin_print_safe(stdout, d->reason[0] ? d->reason : "-");
        putchar('\n');
    }
out:
    coffer__v1__system_response__free_unpacked(r, NULL);
    return res;
}

static enum result
op_audit(struct op *o, struct vault_admin_client *cli, const char *vault)
{
    Coffer__V1__SystemResponse *r = NULL;
    enum result res = R_DONE;
    char when[40];

    if (system_call(o, cli, vault, o->req, &r, &res) != 0) {
        return res;
    }
    if (o->json) {
        printf("%s{\"vault\":", o->json_n++ > 0 ? "," : "");
        cfr_json_fput(stdout, vault);
        printf(",\"ok\":true,\"entries\":[");
        for (size_t i = 0; i < r->n_entries; i++) {
            const Coffer__V1__AuditEntry *e = r->entries[i];
            printf("%s{\"time_ms\":%lld,\"tenant\":", i ? "," : "",
                   (long long)e->time_ms);
            vault_admin_json_token(stdout, e->tenant);
            printf(",\"identity\":");
            vault_admin_json_token(stdout, e->identity);
            printf(",\"peer\":");
            vault_admin_json_token(stdout, e->peer);
            printf(",\"method\":");
            vault_admin_json_token(stdout, e->method);
            printf(",\"decision\":");
            vault_admin_json_token(stdout, e->decision);
            printf(",\"status\":");
            vault_admin_json_token(stdout, e->status);
            printf(",\"detail\":");
            vault_admin_json_token(stdout, e->detail);
            printf("}");
        }
        printf("]}");
        goto out;
    }
    printf("%s: %zu audit record%s\n", vault, r->n_entries,
           r->n_entries == 1 ? "" : "s");
    for (size_t i = 0; i < r->n_entries; i++) {
        const Coffer__V1__AuditEntry *e = r->entries[i];
        const char *const fields[][2] = {
            {" tenant=", e->tenant[0] != '\0' && strcmp(e->tenant, "\"\"") != 0
                             ? e->tenant
                             : "-"},
            {" identity=", e->identity},
            {" peer=", e->peer},
            {" method=", e->method},
            {" decision=", e->decision},
            {" status=", e->status},
            {" detail=", e->detail},
        };
        printf("  %s", vault_admin_time_text(e->time_ms, when, sizeof(when)));
        for (size_t k = 0; k < sizeof(fields) / sizeof(fields[0]); k++) {
            fputs(fields[k][0], stdout);
            vault_admin_print_safe(stdout, fields[k][1]);
        }
        putchar('\n');
    }
out:
    coffer__v1__system_response__free_unpacked(r, NULL);
    return res;
}

/* ---- vault operations: building requests -------------------------------- */

/* --totp and --approval, checked; both given is a usage error. */
static int
second_factor_args(const struct vargs *a, Coffer__V1__SystemRequest *req,
                   uint8_t approval[VAULT_ADMIN_APPROVAL_ID],
                   const struct session *s)
{
    struct cfr_err err;
    if (a->totp != NULL && a->approval != NULL) {
        return usage_error("give --totp or --approval, not both");
    }
    if (a->totp != NULL) {
        if (vault_admin_totp_code_check(a->totp, &err) != 0) {
            return usage_error("--totp: %s", err.msg);
        }
        req->totp = (char *)a->totp;
    }
    if (a->approval != NULL) {
        if (vault_admin_approval_parse(a->approval, approval, &err) != 0) {
            return usage_error("--approval: %s", err.msg);
        }
        if (s != NULL && s->conn.n_vaults != 1) {
            return usage_error("an approval ID belongs to the one vault that "
                               "issued it: give exactly one --vault");
        }
        req->approval_id.data = approval;
        req->approval_id.len = VAULT_ADMIN_APPROVAL_ID;
    }
    return 0;
}

static int
reason_arg(const struct vargs *a, Coffer__V1__SystemRequest *req)
{
    struct cfr_err err;
    if (a->reason != NULL) {
        if (vault_admin_text_check("--reason", a->reason, &err) != 0) {
            return usage_error("%s", err.msg);
        }
        req->reason = (char *)a->reason;
    }
    return 0;
}

static int
finish_help(const struct vargs *a, int rc)
{
    if (a->help) {
        fputs(usage_text, stdout);
    }
    return rc;
}

/* The tenant settings of tenant add/set, checked (no vault contacted). */
/* A tenant request's storage: the lists point at argv strings. */
struct tenant_scratch {
    Coffer__V1__TenantInfo t;
    char *regions[LIST_MAX];
    char *notify[LIST_MAX];
};

static int
tenant_args(const struct vargs *a, struct tenant_scratch *ts)
{
    Coffer__V1__TenantInfo *t = &ts->t;
    struct cfr_err err;
    if (vault_admin_tenant_check(a->positional, &err) != 0) {
        return usage_error("%s", err.msg);
    }
    if (a->region.n > VAULT_ADMIN_REGIONS_MAX ||
        a->notify.n > VAULT_ADMIN_NOTIFY_MAX) {
        return usage_error("at most %d --region and %d --notify values",
                           VAULT_ADMIN_REGIONS_MAX, VAULT_ADMIN_NOTIFY_MAX);
    }
    if ((a->region.n > 0 && a->no_regions) ||
        (a->notify.n > 0 && a->no_notify)) {
        return usage_error("--no-regions and --no-notify clear a list: not "
                           "with --region or --notify");
    }
    for (size_t i = 0; i < a->region.n; i++) {
        if (vault_admin_region_check(a->region.v[i], &err) != 0) {
            return usage_error("%s", err.msg);
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(a->region.v[i], a->region.v[j]) == 0) {
                return usage_error("region %s given twice", a->region.v[i]);
            }
        }
    }
    for (size_t i = 0; i < a->notify.n; i++) {
        if (vault_admin_notify_check(a->notify.v[i], &err) != 0) {
            return usage_error("%s", err.msg);
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(a->notify.v[i], a->notify.v[j]) == 0) {
                return usage_error("notify target given twice");
            }
        }
    }
    if (a->retention != NULL) {
        int64_t ms = 0;
        /* At least a day: retention is about deleted mail, and a typo
         * like "30" meaning seconds must not pass. */
        if (cfr_parse_duration_ms(a->retention, &ms) != 0 || ms < 86400000 ||
            ms > 3650 * INT64_C(86400000)) {
            return usage_error("--retention: a duration from 1d to 3650d "
                               "(e.g. 30d)");
        }
        t->retention_ms = ms;
    }
    for (size_t i = 0; i < a->region.n; i++) {
        ts->regions[i] = (char *)a->region.v[i];
    }
    for (size_t i = 0; i < a->notify.n; i++) {
        ts->notify[i] = (char *)a->notify.v[i];
    }
    t->name = (char *)a->positional;
    t->n_regions = a->region.n;
    t->regions = ts->regions;
    t->n_notify = a->notify.n;
    t->notify = ts->notify;
    return 0;
}

/*
 * Runs a vault operation: parse, check everything, open the session, run
 * on every vault. build fills the request (after parsing, before the
 * session: checks that need no connection come first).
 */
typedef int build_fn(const struct vargs *a, Coffer__V1__SystemRequest *req,
                     void *scratch);

static build_fn build_approve;

/* Refuses a revocation of the certificate or identity in use. */
static int
not_myself(const struct session *s, const Coffer__V1__DenyEntry *d)
{
    char mine[CFR_RPC_FINGERPRINT_LEN + 1], uri[CFR_RPC_NAME_MAX];
    struct cfr_err err;
    snprintf(uri, sizeof(uri), "%s%s", VAULT_PKI_OPERATOR_URI, s->me);
    if (vault_pki_cert_fingerprint(s->conn.cert, mine, &err) != 0) {
        return exit_for(&err);
    }
    if (strcmp(d->value, mine) == 0 || strcmp(d->value, uri) == 0) {
        return usage_error(
            "refusing to revoke %s, the %s you are connecting "
            "with (ask another operator)",
            d->value, strcmp(d->value, uri) == 0 ? "identity" : "certificate");
    }
    return 0;
}

static int
vault_command(const char *what, int argc, char **argv, unsigned allowed,
              bool want_pos, const char *pos_name, build_fn *build,
              void *scratch, op_fn *fn, bool listing)
{
    struct vargs a;
    struct session s;
    Coffer__V1__SystemRequest req = COFFER__V1__SYSTEM_REQUEST__INIT;
    uint8_t approval[VAULT_ADMIN_APPROVAL_ID];
    int rc = parse_vargs(argc, argv, allowed, want_pos, &a);
    if (rc != 0 || a.help) {
        return finish_help(&a, rc);
    }
    if (want_pos && a.positional == NULL) {
        return usage_error("%s needs %s", what, pos_name);
    }
    if ((rc = build(&a, &req, scratch)) != 0 ||
        ((allowed & O_REASON) != 0 && (rc = reason_arg(&a, &req)) != 0) ||
        ((allowed & O_FACTOR) != 0 &&
         (rc = second_factor_args(&a, &req, approval, NULL)) != 0)) {
        return rc;
    }
    if ((rc = session_open(&s, &a)) != 0) {
        return rc;
    }
    /* Locking oneself out is never what was meant: --cert in revoke names
     * the target, so a connection option put there would do exactly that. */
    if (req.op == COFFER__V1__SYSTEM_OP__SYSTEM_OP_REVOKE &&
        (rc = not_myself(&s, req.deny)) != 0) {
        session_fini(&s);
        return rc;
    }
    /* Now that the vault list is known: an approval names one vault. */
    if (build == build_approve && s.conn.n_vaults != 1) {
        session_fini(&s);
        return usage_error("an approval ID belongs to the one vault that "
                           "issued it: give exactly one --vault");
    }
    if ((allowed & O_FACTOR) != 0 &&
        (rc = second_factor_args(&a, &req, approval, &s)) != 0) {
        session_fini(&s);
        return rc;
    }
    struct op o = {
        .a = &a,
        .s = &s,
        .req = &req,
        .fn = fn,
        .what = what,
        .argc = argc,
        .argv = argv,
        .json = listing && a.json,
    };
    rc = run_on_vaults(&o);
    session_fini(&s);
    return rc;
}

static int
build_tenant_add(const struct vargs *a, Coffer__V1__SystemRequest *req,
                 void *scratch)
{
    struct tenant_scratch *ts = scratch;
    req->op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_TENANT_ADD;
    req->tenant = &ts->t;
    return tenant_args(a, ts);
}

static int
build_tenant_set(const struct vargs *a, Coffer__V1__SystemRequest *req,
                 void *scratch)
{
    struct tenant_scratch *ts = scratch;
    int rc;
    req->op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_TENANT_SET;
    req->tenant = &ts->t;
    if ((rc = tenant_args(a, ts)) != 0) {
        return rc;
    }
    if (a->region.n == 0 && a->notify.n == 0 && a->retention == NULL &&
        !a->no_regions && !a->no_notify) {
        return usage_error("tenant set needs a change: --region, --no-regions, "
                           "--retention, --notify or --no-notify");
    }
    return 0;
}

static int
build_list(const struct vargs *a, Coffer__V1__SystemRequest *req, void *scratch)
{
    (void)a;
    req->op = *(const Coffer__V1__SystemOp *)scratch;
    return 0;
}

/* What revoke and unrevoke name: exactly one of three forms. */
struct deny_scratch {
    Coffer__V1__DenyEntry d;
    char fpr[CFR_RPC_FINGERPRINT_LEN + 1];
    Coffer__V1__SystemOp op;
};

static int
build_deny(const struct vargs *a, Coffer__V1__SystemRequest *req, void *scratch)
{
    struct deny_scratch *ds = scratch;
    struct cfr_err err;
    int given = (a->identity != NULL) + (a->fingerprint != NULL) +
                (a->target_cert != NULL);
    cfr_err_clear(&err);
    if (given != 1) {
        return usage_error("name exactly one of --identity URI, --fingerprint "
                           "HEX or --cert FILE");
    }
    req->op = ds->op;
    req->deny = &ds->d;
    if (a->identity != NULL) {
        if (vault_admin_identity_check(a->identity, NULL, &err) != 0) {
            return usage_error("%s", err.msg);
        }
        ds->d.kind = "identity";
        ds->d.value = (char *)a->identity;
    } else {
        if (a->fingerprint != NULL) {
            if (vault_admin_fingerprint_parse(a->fingerprint, ds->fpr, &err) !=
                0) {
                return usage_error("%s", err.msg);
            }
        } else if (vault_pki_cert_fingerprint(a->target_cert, ds->fpr, &err) !=
                   0) {
            return exit_for(&err);
        }
        ds->d.kind = "fingerprint";
        ds->d.value = ds->fpr;
    }
    if (a->reason != NULL) {
        if (vault_admin_text_check("--reason", a->reason, &err) != 0) {
            return usage_error("%s", err.msg);
        }
        ds->d.reason = (char *)a->reason;
    }
    return 0;
}

static int
build_audit(const struct vargs *a, Coffer__V1__SystemRequest *req,
            void *scratch)
{
    struct cfr_err err;
    int64_t v = 0;
    (void)scratch;
    req->op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_AUDIT;
    if (a->tenant != NULL) {
        if (vault_admin_tenant_check(a->tenant, &err) != 0) {
            return usage_error("--tenant: %s", err.msg);
        }
        req->tenant_name = (char *)a->tenant;
    }
    if (a->since != NULL && a->since_ms != NULL) {
        return usage_error("give --since or --since-ms, not both");
    }
    if (a->since != NULL) {
        struct timespec ts;
        if (cfr_parse_duration_ms(a->since, &v) != 0 || v < 0) {
            return usage_error("--since: a duration back from now (e.g. 2h)");
        }
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        req->since_ms = v < now ? now - v : 0;
    }
    if (a->since_ms != NULL) {
        if (vault_admin_int_parse("--since-ms", a->since_ms, 0, INT64_MAX, &v,
                                  &err) != 0) {
            return usage_error("%s", err.msg);
        }
        req->since_ms = v;
    }
    if (a->limit != NULL) {
        if (vault_admin_int_parse("--limit", a->limit, 1, VAULT_ADMIN_LIMIT_MAX,
                                  &v, &err) != 0) {
            return usage_error("%s", err.msg);
        }
        req->limit = (uint32_t)v;
    }
    return 0;
}

static int
build_approve(const struct vargs *a, Coffer__V1__SystemRequest *req,
              void *scratch)
{
    uint8_t *id = scratch;
    struct cfr_err err;
    req->op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_APPROVE;
    if (vault_admin_approval_parse(a->positional, id, &err) != 0) {
        return usage_error("%s", err.msg);
    }
    req->approval_id.data = id;
    req->approval_id.len = VAULT_ADMIN_APPROVAL_ID;
    return 0;
}

static int
cmd_tenant(const char *sub, int argc, char **argv)
{
    Coffer__V1__TenantInfo init = COFFER__V1__TENANT_INFO__INIT;
    struct tenant_scratch t;
    Coffer__V1__SystemOp list = COFFER__V1__SYSTEM_OP__SYSTEM_OP_TENANT_LIST;
    memset(&t, 0, sizeof(t));
    t.t = init;
    if (strcmp(sub, "add") == 0) {
        return vault_command("tenant add", argc, argv,
                             O_REGION | O_NOTIFY | O_RETENTION | O_REASON, true,
                             "a tenant NAME", build_tenant_add, &t,
                             op_tenant_add, false);
    }
    if (strcmp(sub, "set") == 0) {
        return vault_command(
            "tenant set", argc, argv,
            O_REGION | O_NOTIFY | O_RETENTION | O_REASON | O_FACTOR | O_CLEAR,
            true, "a tenant NAME", build_tenant_set, &t, op_tenant_set, false);
    }
    if (strcmp(sub, "list") == 0) {
        return vault_command("tenant list", argc, argv, O_JSON, false, NULL,
                             build_list, &list, op_tenant_list, true);
    }
    return usage_error("unknown subcommand 'tenant %s'", sub);
}

static int
cmd_revoke(bool revoke, int argc, char **argv)
{
    struct deny_scratch ds;
    Coffer__V1__DenyEntry d = COFFER__V1__DENY_ENTRY__INIT;
    memset(&ds, 0, sizeof(ds));
    ds.d = d;
    ds.op = revoke ? COFFER__V1__SYSTEM_OP__SYSTEM_OP_REVOKE
                   : COFFER__V1__SYSTEM_OP__SYSTEM_OP_UNREVOKE;
    return vault_command(revoke ? "revoke" : "unrevoke", argc, argv,
                         O_TARGET | O_REASON | (revoke ? O_FACTOR : 0), false,
                         NULL, build_deny, &ds, op_action, false);
}

/*
 * totp enroll: the secret is made here (CSPRNG), sent to every vault in
 * the one request, and shown once at the end if any vault took it.
 */
static int
cmd_totp_enroll(int argc, char **argv)
{
    struct vargs a;
    struct session s;
    struct cfr_err err;
    Coffer__V1__SystemRequest req = COFFER__V1__SYSTEM_REQUEST__INIT;
    uint8_t approval[VAULT_ADMIN_APPROVAL_ID];
    struct cfr_secret *secret = NULL;
    char account[ACCOUNT_MAX];
    int rc =
        parse_vargs(argc, argv, O_TOTP_ENROLL | O_FACTOR | O_REASON, false, &a);
    if (rc != 0 || a.help) {
        return finish_help(&a, rc);
    }
    if (a.principal == NULL) {
        return usage_error("totp enroll needs --principal CN (the admin's "
                           "or operator's certificate CN)");
    }
    if (vault_pki_name_check("principal", a.principal, &err) != 0) {
        return usage_error("%s", err.msg);
    }
    if (a.tenant != NULL && vault_admin_tenant_check(a.tenant, &err) != 0) {
        return usage_error("--tenant: %s", err.msg);
    }
    req.op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_TOTP_SET;
    req.tenant_name = a.tenant != NULL ? (char *)a.tenant : "";
    req.principal = (char *)a.principal;
    if ((rc = reason_arg(&a, &req)) != 0 ||
        (rc = second_factor_args(&a, &req, approval, NULL)) != 0) {
        return rc;
    }
    snprintf(account, sizeof(account), "%s@%s", a.principal,
             a.tenant != NULL ? a.tenant : "operators");
    if ((rc = session_open(&s, &a)) != 0) {
        return rc;
    }
    if ((rc = second_factor_args(&a, &req, approval, &s)) != 0) {
        goto out;
    }
    if ((secret = cfr_secret_new(CFR_TOTP_SECRET_DEFAULT, &err)) == NULL ||
        cfr_totp_secret_generate(cfr_secret_rw(secret), CFR_TOTP_SECRET_DEFAULT,
                                 &err) != 0) {
        rc = exit_for(&err);
        goto out;
    }
    req.totp_secret.data = (uint8_t *)cfr_secret_ro(secret);
    req.totp_secret.len = CFR_TOTP_SECRET_DEFAULT;
    struct op o = {
        .a = &a,
        .s = &s,
        .req = &req,
        .fn = op_action,
        .what = "totp enroll",
        .argc = argc,
        .argv = argv,
    };
    rc = run_on_vaults(&o);
    if (o.any_done) {
        char uri[URI_MAX], b32[CFR_TOTP_BASE32_MAX];
        if (cfr_totp_uri(req.totp_secret.data, req.totp_secret.len, NULL,
                         ISSUER, account, uri, sizeof(uri), &err) != 0 ||
            cfr_base32_encode(req.totp_secret.data, req.totp_secret.len, b32,
                              sizeof(b32), &err) != 0) {
            rc = exit_for(&err);
        } else {
            /* Invariant 2's one exception: shown once, for the app. */
            printf("otpauth: %s\nsecret: %s\n"
                   "Add it to the authenticator now; it is not shown "
                   "again.\n",
                   uri, b32);
            fflush(stdout);
        }
        cfr_wipe(uri, sizeof(uri));
        cfr_wipe(b32, sizeof(b32));
    }
out:
    cfr_secret_free(secret);
    session_fini(&s);
    return rc;
}

/* ---- replication -------------------------------------------------------- */

#define FAILURE_MAX 64  /* "unreachable: DEADLINE_EXCEEDED" */
#define ERROR_MAX   512 /* a vault's error message, for --json */

/* What replication status gathers from the vaults before printing. */
struct sync_collect {
    struct vault_admin_sync_reply rep[VAULT_ADMIN_VAULTS_MAX];
    Coffer__V1__SystemResponse *resp[VAULT_ADMIN_VAULTS_MAX];
    char failure[VAULT_ADMIN_VAULTS_MAX][FAILURE_MAX];
    const char *status[VAULT_ADMIN_VAULTS_MAX]; /* gRPC status name */
    char error[VAULT_ADMIN_VAULTS_MAX][ERROR_MAX];
};

static int
build_sync(const struct vargs *a, Coffer__V1__SystemRequest *req, void *scratch)
{
    struct cfr_err err;
    req->op = *(const Coffer__V1__SystemOp *)scratch;
    if (a->tenant != NULL) {
        if (vault_admin_tenant_check(a->tenant, &err) != 0) {
            return usage_error("--tenant: %s", err.msg);
        }
        req->tenant_name = (char *)a->tenant;
    }
    return 0;
}

/* Which slot of the session's vault list vault is (run_on_vaults passes
 * the list's own strings). */
static size_t
vault_slot(const struct op *o, const char *vault)
{
    for (size_t i = 0; i < o->s->conn.n_vaults; i++) {
        if (o->s->conn.vaults[i] == vault) {
            return i;
        }
    }
    return 0; /* not reached: vault is always one of the list */
}

/* SYNC_STATUS on one vault: keeps the answer; prints nothing but errors
 * (the tables need every vault's answer first). */
static enum result
op_sync_status(struct op *o, struct vault_admin_client *cli, const char *vault)
{
    struct sync_collect *c = o->ctx;
    size_t i = vault_slot(o, vault);
    struct cfr_err err;
    int status = 0;
    enum result res;

    cfr_err_clear(&err);
    if (vault_admin_system(cli, o->req, &c->resp[i], &status, &err) == 0) {
        c->rep[i].answered = true;
        c->rep[i].lines = c->resp[i]->sync;
        c->rep[i].n_lines = c->resp[i]->n_sync;
        return R_DONE;
    }
    res = call_failed(vault, status, &err);
    snprintf(c->failure[i], sizeof(c->failure[i]), "%s: %s",
             res == R_UNREACHABLE ? "unreachable"
             : res == R_REFUSED   ? "refused"
                                  : "failed",
             cfr_rpc_status_name(status));
    c->status[i] = cfr_rpc_status_name(status);
    snprintf(c->error[i], sizeof(c->error[i]), "%s", err.msg);
    return res;
}

static void
json_i64_or_null(const char *key, int64_t v, bool null)
{
    if (null) {
        printf(",\"%s\":null", key);
    } else {
        printf(",\"%s\":%lld", key, (long long)v);
    }
}

static void
json_sync_line(const Coffer__V1__SyncStatus *l)
{
    printf("{\"tenant\":");
    cfr_json_fput(stdout, l->tenant);
    printf(",\"peer\":");
    cfr_json_fput(stdout, l->peer);
    printf(",\"region\":");
    cfr_json_fput(stdout, l->region);
    printf(",\"snapshots\":%llu,\"newest_ms\":%lld,\"last_attempt_ms\":%lld,"
           "\"last_ok_ms\":%lld,\"last_error\":",
           (unsigned long long)l->snapshots, (long long)l->newest_ms,
           (long long)l->last_attempt_ms, (long long)l->last_ok_ms);
    cfr_json_fput(stdout, l->last_error);
    printf(",\"snapshots_pulled\":%llu,\"objects_pulled\":%llu,"
           "\"bytes_pulled\":%llu,\"tombstones_applied\":%llu,\"repairs\":%llu,"
           "\"last_repair_ms\":%lld,\"repair_failures\":%llu,\"behind\":%llu}",
           (unsigned long long)l->snapshots_pulled,
           (unsigned long long)l->objects_pulled,
           (unsigned long long)l->bytes_pulled,
           (unsigned long long)l->tombstones_applied,
           (unsigned long long)l->repairs, (long long)l->last_repair_ms,
           (unsigned long long)l->repair_failures,
           (unsigned long long)l->behind);
}

/* {"vaults":[...raw lines per vault...],"tenants":[...rows...],
 *  "alert":bool} */
static void
json_sync_status(const struct sync_collect *c, size_t n,
                 const struct vault_admin_sync_view *v)
{
    static const char *const states[] = {"ok", "absent", "no_answer"};
    printf("{\"vaults\":[");
    for (size_t i = 0; i < n; i++) {
        printf("%s{\"vault\":", i ? "," : "");
        cfr_json_fput(stdout, c->rep[i].vault);
        if (!c->rep[i].answered) {
            printf(",\"ok\":false,\"status\":");
            cfr_json_fput(stdout,
                          c->status[i] != NULL ? c->status[i] : "INTERNAL");
            printf(",\"error\":");
            cfr_json_fput(stdout, c->error[i]);
            printf("}");
            continue;
        }
        printf(",\"ok\":true,\"sync\":[");
        for (size_t k = 0; k < c->rep[i].n_lines; k++) {
            printf("%s", k ? "," : "");
            json_sync_line(c->rep[i].lines[k]);
        }
        printf("]}");
    }
    printf("],\"tenants\":[");
    for (size_t t = 0; t < v->n_tenants; t++) {
        const struct vault_admin_sync_tenant *vt = &v->tenants[t];
        printf("%s{\"tenant\":", t ? "," : "");
        cfr_json_fput(stdout, vt->name);
        printf(",\"newest_ms\":%lld,\"replicas\":[", (long long)vt->newest_ms);
        for (size_t i = 0; i < v->n_vaults; i++) {
            const struct vault_admin_sync_row *r = &vt->rows[i];
            printf("%s{\"vault\":", i ? "," : "");
            cfr_json_fput(stdout, r->vault);
            printf(",\"state\":\"%s\"", states[r->state]);
            if (r->state == VAULT_ADMIN_SYNC_NO_ANSWER) {
                printf(",\"failure\":");
                cfr_json_fput(stdout, r->failure);
            }
            if (r->state != VAULT_ADMIN_SYNC_OK) {
                printf("}");
                continue;
            }
            printf(",\"region\":");
            cfr_json_fput(stdout, r->region);
            printf(",\"snapshots\":%llu,\"newest_ms\":%lld",
                   (unsigned long long)r->snapshots, (long long)r->newest_ms);
            json_i64_or_null("lag_ms", r->lag_ms, r->lag_ms < 0);
            printf(",\"peers\":%zu", r->n_peers);
            json_i64_or_null("last_sync_ms", r->last_sync_ms,
                             r->last_sync_ms < 0);
            printf(",\"behind\":%llu,\"repairs\":%llu,\"repair_failures\":%llu,"
                   "\"last_repair_ms\":%lld,\"last_error\":",
                   (unsigned long long)r->behind,
                   (unsigned long long)r->repairs,
                   (unsigned long long)r->repair_failures,
                   (long long)r->last_repair_ms);
            cfr_json_fput(stdout, r->last_error);
            printf(",\"error_peer\":");
            cfr_json_fput(stdout, r->error_peer);
            printf(",\"alert\":%s}",
                   vault_admin_sync_row_alert(r) ? "true" : "false");
        }
        printf("]}");
    }
    printf("],\"alert\":%s}\n", v->alert ? "true" : "false");
}

/* s with every byte outside printable ASCII as '?', cut to fit out. */
static const char *
safe_text(const char *s, char *out, size_t size)
{
    size_t k = 0;
    for (; s[k] != '\0' && k + 1 < size; k++) {
        unsigned char ch = (unsigned char)s[k];
        out[k] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    out[k] = '\0';
    return out;
}

/* The tables: one per tenant, one row per vault. */
static void
print_sync_status(const struct sync_collect *c, size_t n,
                  const struct vault_admin_sync_view *v, int64_t now)
{
    /* Two times in one printf: each needs its own buffer. */
    char when[40], repaired[40], span[32], ago[48], rep[48], region[64];
    if (v->n_tenants == 0) {
        for (size_t i = 0; i < n; i++) {
            printf("%s: %s\n", c->rep[i].vault,
                   c->rep[i].answered ? "no tenant replicated here"
                                      : c->rep[i].failure);
        }
        return;
    }
    for (size_t t = 0; t < v->n_tenants; t++) {
        const struct vault_admin_sync_tenant *vt = &v->tenants[t];
        printf("%stenant ", t ? "\n" : "");
        vault_admin_print_safe(stdout, vt->name);
        printf(" (newest %s)\n",
               vault_admin_time_text(vt->newest_ms, when, sizeof(when)));
        printf("  %-21s %-10s %9s %-24s %-7s %-11s %6s %-9s %-24s %s\n",
               "VAULT", "REGION", "SNAPSHOTS", "NEWEST", "LAG", "LAST SYNC",
               "BEHIND", "REPAIRS", "LAST REPAIR", "LAST ERROR");
        for (size_t i = 0; i < v->n_vaults; i++) {
            const struct vault_admin_sync_row *r = &vt->rows[i];
            printf("  %-21s ", r->vault);
            if (r->state == VAULT_ADMIN_SYNC_NO_ANSWER) {
                printf("%s\n", r->failure);
                continue;
            }
            if (r->state == VAULT_ADMIN_SYNC_ABSENT) {
                printf("not synced here (tenant not registered, or this "
                       "vault is outside its regions)\n");
                continue;
            }
            if (r->last_sync_ms < 0) {
                snprintf(ago, sizeof(ago), "-");
            } else if (r->last_sync_ms == 0) {
                snprintf(ago, sizeof(ago), "never");
            } else {
                snprintf(ago, sizeof(ago), "%s ago",
                         vault_admin_span_text(now - r->last_sync_ms, span,
                                               sizeof(span)));
            }
            snprintf(rep, sizeof(rep), "%llu/%llu",
                     (unsigned long long)r->repairs,
                     (unsigned long long)r->repair_failures);
            printf("%-10s %9llu %-24s %-7s %-11s %6llu %-9s %-24s ",
                   safe_text(r->region[0] ? r->region : "-", region,
                             sizeof(region)),
                   (unsigned long long)r->snapshots,
                   vault_admin_time_text(r->newest_ms, when, sizeof(when)),
                   r->lag_ms < 0
                       ? "-"
                       : vault_admin_span_text(r->lag_ms, span, sizeof(span)),
                   ago, (unsigned long long)r->behind, rep,
                   vault_admin_time_text(r->last_repair_ms, repaired,
                                         sizeof(repaired)));
            if (r->last_error != NULL) {
                vault_admin_print_safe(stdout, r->error_peer);
                fputs(": ", stdout);
                vault_admin_print_safe(stdout, r->last_error);
            } else {
                fputs("-", stdout);
            }
            putchar('\n');
        }
    }
}

/* One stderr line per replica a cron job should hear about. */
static void
warn_sync_alerts(const struct vault_admin_sync_view *v)
{
    for (size_t t = 0; t < v->n_tenants; t++) {
        for (size_t i = 0; i < v->n_vaults; i++) {
            const struct vault_admin_sync_row *r = &v->tenants[t].rows[i];
            if (!vault_admin_sync_row_alert(r)) {
                continue;
            }
            fprintf(stderr, "coffer-admin: %s: tenant ", r->vault);
            vault_admin_print_safe(stderr, v->tenants[t].name);
            if (r->behind > 0) {
                fprintf(stderr, ": behind by %llu snapshot%s",
                        (unsigned long long)r->behind,
                        r->behind == 1 ? "" : "s");
            }
            if (r->last_error != NULL) {
                fputs(": peer ", stderr);
                vault_admin_print_safe(stderr, r->error_peer);
                fputs(r->error_note ? ": " : " failed: ", stderr);
                vault_admin_print_safe(stderr, r->last_error);
            }
            fputc('\n', stderr);
        }
    }
}

static int
cmd_replication_status(int argc, char **argv)
{
    struct vargs a;
    struct session s;
    struct cfr_err err;
    struct vault_admin_sync_view view;
    Coffer__V1__SystemRequest req = COFFER__V1__SYSTEM_REQUEST__INIT;
    Coffer__V1__SystemOp op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_SYNC_STATUS;
    struct sync_collect *c = NULL;
    struct timespec ts;
    int rc = parse_vargs(argc, argv, O_SYNC | O_JSON, false, &a);

    if (rc != 0 || a.help) {
        return finish_help(&a, rc);
    }
    if ((rc = build_sync(&a, &req, &op)) != 0 ||
        (rc = session_open(&s, &a)) != 0) {
        return rc;
    }
    cfr_err_clear(&err);
    memset(&view, 0, sizeof(view));
    if ((c = cfr_calloc(1, sizeof(*c))) == NULL) {
        session_fini(&s);
        fprintf(stderr, "coffer-admin: out of memory\n");
        return EXIT_FAIL;
    }
    /* A vault whose client cannot even be set up never reaches the op:
     * its row says so rather than staying empty. */
    for (size_t i = 0; i < s.conn.n_vaults; i++) {
        c->rep[i].vault = s.conn.vaults[i];
        c->rep[i].failure = c->failure[i];
        snprintf(c->failure[i], sizeof(c->failure[i]), "failed: INTERNAL");
        snprintf(c->error[i], sizeof(c->error[i]), "no client");
    }
    struct op o = {
        .a = &a,
        .s = &s,
        .req = &req,
        .fn = op_sync_status,
        .what = "replication status",
        .argc = argc,
        .argv = argv,
        .ctx = c,
    };
    rc = run_on_vaults(&o);
    if (vault_admin_sync_view_build(c->rep, s.conn.n_vaults, a.tenant, &view,
                                    &err) != 0) {
        rc = exit_for(&err);
        goto out;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    if (a.json) {
        json_sync_status(c, s.conn.n_vaults, &view);
    } else {
        print_sync_status(c, s.conn.n_vaults, &view,
                          (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    }
    fflush(stdout);
    warn_sync_alerts(&view);
    /* A vault that did not answer is the first thing to fix; otherwise a
     * lagging or failing replica gets its own code for monitoring. */
    if (rc == EXIT_OK && view.alert) {
        rc = EXIT_BEHIND;
    }
out:
    vault_admin_sync_view_fini(&view);
    for (size_t i = 0; i < s.conn.n_vaults; i++) {
        if (c->resp[i] != NULL) {
            coffer__v1__system_response__free_unpacked(c->resp[i], NULL);
        }
    }
    cfr_free(c);
    session_fini(&s);
    return rc;
}

static int
cmd_replication(const char *sub, int argc, char **argv)
{
    if (strcmp(sub, "sync") == 0) {
        Coffer__V1__SystemOp op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_SYNC;
        return vault_command("replication sync", argc, argv, O_SYNC, false,
                             NULL, build_sync, &op, op_action, false);
    }
    if (strcmp(sub, "status") == 0) {
        return cmd_replication_status(argc, argv);
    }
    if (sub[0] == '\0') {
        return usage_error("replication needs a subcommand: status or sync");
    }
    return usage_error("unknown subcommand 'replication %s'", sub);
}

int
main(int argc, char **argv)
{
    /* Keys are written 0600 explicitly; this only covers the CA directory
     * and temporary files should anything else ever be created. */
    umask(077);
    /* The transport's own lines (retries, TLS detail) would bury the one
     * line per vault this tool prints; errors still show. */
    cfr_log_set_level(CFR_LOG_ERROR);
    if (argc < 2) {
        return usage_error("a command is required");
    }
    const char *c1 = argv[1], *c2 = argc > 2 ? argv[2] : "";
    if (strcmp(c1, "--help") == 0 || strcmp(c1, "-h") == 0 ||
        strcmp(c1, "help") == 0) {
        fputs(usage_text, stdout);
        return EXIT_OK;
    }
    if (strcmp(c1, "ca") == 0 && strcmp(c2, "init") == 0) {
        return cmd_ca_init(argc - 3, argv + 3);
    }
    if (strcmp(c1, "cert") == 0 && strcmp(c2, "issue") == 0) {
        return cmd_cert_issue(argc - 3, argv + 3);
    }
    if (strcmp(c1, "cert") == 0 && strcmp(c2, "show") == 0) {
        return cmd_cert_show(argc - 3, argv + 3);
    }
    if (strcmp(c1, "ca") == 0 || strcmp(c1, "cert") == 0) {
        return usage_error("unknown subcommand '%s'", c2);
    }
    if (strcmp(c1, "tenant") == 0) {
        return cmd_tenant(c2, argc - 3, argv + 3);
    }
    if (strcmp(c1, "revoke") == 0 || strcmp(c1, "unrevoke") == 0) {
        return cmd_revoke(c1[0] == 'r', argc - 2, argv + 2);
    }
    if (strcmp(c1, "deny") == 0) {
        Coffer__V1__SystemOp op = COFFER__V1__SYSTEM_OP__SYSTEM_OP_DENY_LIST;
        if (strcmp(c2, "list") != 0) {
            return usage_error("unknown subcommand 'deny %s'", c2);
        }
        return vault_command("deny list", argc - 3, argv + 3, O_JSON, false,
                             NULL, build_list, &op, op_deny_list, true);
    }
    if (strcmp(c1, "audit") == 0) {
        return vault_command("audit", argc - 2, argv + 2, O_AUDIT | O_JSON,
                             false, NULL, build_audit, NULL, op_audit, true);
    }
    if (strcmp(c1, "approve") == 0) {
        uint8_t id[VAULT_ADMIN_APPROVAL_ID];
        return vault_command("approve", argc - 2, argv + 2, O_REASON, true,
                             "an approval ID", build_approve, id, op_action,
                             false);
    }
    if (strcmp(c1, "replication") == 0) {
        return cmd_replication(c2, argc - 3, argv + 3);
    }
    if (strcmp(c1, "totp") == 0) {
        if (strcmp(c2, "enroll") != 0) {
            return usage_error("unknown subcommand 'totp %s'", c2);
        }
        return cmd_totp_enroll(argc - 3, argv + 3);
    }
    return usage_error("unknown command '%s'", c1);
}
