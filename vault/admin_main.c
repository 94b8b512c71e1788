/*
 * admin_main.c - coffer-admin, the operator's tool: for now the Coffer CA
 * and the certificates that identify agents, restore hosts, auditors,
 * admins and vaults (vault/pki.c does the work; this file parses, prints
 * and maps errors to exit codes).
 *
 * Invariants:
 *  1. Exit codes are fixed (docs/ADMIN.md, and the EXIT STATUS section of
 *     the usage text): 0 ok, 1 failure, 2 usage, 3 exists, 4 file missing
 *     or I/O, 5 unreadable or inconsistent input, 6 unsafe permissions.
 *  2. Nothing secret is printed: only public certificate data goes to
 *     stdout, and errors name files, never their contents.
 *  3. Every option is checked before anything is written, so a refused
 *     command leaves the file system as it was.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h> /* offsetof */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "err.h"
#include "pki.h"

enum exit_code {
    EXIT_OK = 0,
    EXIT_FAIL = 1,
    EXIT_USAGE = 2,
    EXIT_EXISTS = 3,
    EXIT_IO = 4,
    EXIT_INPUT = 5,
    EXIT_PERM = 6,
};

static const char usage_text[] =
    "NAME\n"
    "    coffer-admin - Coffer CA and certificates\n"
    "\n"
    "SYNOPSIS\n"
    "    coffer-admin ca init --dir DIR [--name NAME] [--days N]\n"
    "    coffer-admin cert issue --ca DIR --role ROLE [--tenant T] --out "
    "PREFIX\n"
    "                 [--dns NAME]... [--ip ADDR]... [--name NAME] [--days "
    "N]\n"
    "                 [--csr FILE]\n"
    "    coffer-admin cert show FILE\n"
    "    coffer-admin help | --help\n"
    "\n"
    "DESCRIPTION\n"
    "    coffer-admin creates the Coffer certificate authority and issues the\n"
    "    certificates every Coffer connection is authenticated with (mutual\n"
    "    TLS). Keys are EC P-256, signatures ECDSA with SHA-256, serials 128\n"
    "    random bits. No existing file is ever overwritten.\n"
    "\n"
    "COMMANDS\n"
    "    ca init\n"
    "        Creates DIR (mode 0700) if needed, a CA key DIR/ca.key (0600)\n"
    "        and a self-signed CA certificate DIR/ca.pem (CA:TRUE, pathlen "
    "0,\n"
    "        keyCertSign, cRLSign). Refuses when DIR already holds a CA.\n"
    "        --name sets the CA's common name (default \"Coffer CA\", up to "
    "64\n"
    "        printable ASCII characters); --days its lifetime (default "
    "3650).\n"
    "\n"
    "    cert issue\n"
    "        Issues PREFIX.pem, signed by the CA in DIR, and generates its\n"
    "        key PREFIX.key (0600) unless --csr names a certificate signing\n"
    "        request: then only the CSR's public key is used (EC P-256, its\n"
    "        signature must verify) and the key never leaves the host that\n"
    "        made it. Prints the certificate's serial and SHA-256 "
    "fingerprint.\n"
    "\n"
    "        ROLE is one of:\n"
    "          agent    adds backups of tenant T       (needs --tenant)\n"
    "          restore  reads backups of tenant T      (needs --tenant)\n"
    "          auditor  reads metadata and audit log   (needs --tenant)\n"
    "          admin    retention, holds, purges of T  (needs --tenant)\n"
    "          vault    a vault server, also the client side of vault-to-\n"
    "                   vault replication (needs --dns and/or --ip)\n"
    "\n"
    "        Client certificates carry the identity\n"
    "        URI:coffer://tenant/T/role/ROLE and extendedKeyUsage "
    "clientAuth.\n"
    "        Vault certificates carry the --dns and --ip names, the URI\n"
    "        coffer://vault/NAME (NAME from --name, else the first --dns), "
    "and\n"
    "        extendedKeyUsage serverAuth, clientAuth; they never act for a\n"
    "        tenant. Tenant and vault names are 1 to 63 characters of a-z "
    "0-9\n"
    "        . _ -, not starting with . or -. --days: 1 to 3650, default "
    "365,\n"
    "        and never past the CA's own expiry. For client roles, --name\n"
    "        names the holder and becomes the certificate's CN (default:\n"
    "        the role); give every admin a distinct --name, since a second\n"
    "        admin's approval is told apart by it.\n"
    "\n"
    "    cert show FILE\n"
    "        Prints a certificate's subject, issuer, SANs, the Coffer "
    "identity\n"
    "        it carries as the vault reads it, validity, serial and "
    "SHA-256\n"
    "        fingerprint.\n"
    "\n"
    "OUTPUT\n"
    "    ca init, cert issue and cert show print \"key: value\" lines on\n"
    "    stdout: certificate, key, subject, issuer, identity, san, eku,\n"
    "    not-before, not-after, serial, sha256. Errors go to stderr.\n"
    "\n"
    "EXIT STATUS\n"
    "    0  success\n"
    "    1  any other failure (a bug or an OpenSSL failure)\n"
    "    2  usage: unknown command or option, missing or invalid value\n"
    "    3  refused: the CA or an output file already exists\n"
    "    4  a file is missing, or reading or writing it failed\n"
    "    5  an input file is not what it should be (bad PEM, CSR signature,\n"
    "       CA key not matching ca.pem, not a CA certificate)\n"
    "    6  unsafe permissions: the CA key is readable by group or others\n"
    "\n"
    "EXAMPLES\n"
    "    coffer-admin ca init --dir /etc/coffer/ca --name \"Example Coffer "
    "CA\"\n"
    "    coffer-admin cert issue --ca /etc/coffer/ca --role agent \\\n"
    "        --tenant acme --out acme-agent\n"
    "    coffer-admin cert issue --ca /etc/coffer/ca --role vault \\\n"
    "        --dns vault1.example.net --ip 192.0.2.10 --out vault1\n"
    "    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
    "-nodes \\\n"
    "        -keyout host.key -subj /CN=host -out host.csr\n"
    "    coffer-admin cert issue --ca /etc/coffer/ca --role restore \\\n"
    "        --tenant acme --csr host.csr --out host\n"
    "\n"
    "SEE ALSO\n"
    "    docs/ADMIN.md, docs/FORMAT.md (Identity), openssl-verify(1)\n";

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
    if (in->has_identity) {
        printf("identity: tenant=%s role=%s\n", in->tenant, in->role);
    } else if (in->ambiguous) {
        printf("identity: none (two or more coffer identity URIs)\n");
    } else if (in->vault_name[0] != '\0') {
        printf("identity: vault=%s\n", in->vault_name);
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

int
main(int argc, char **argv)
{
    /* Keys are written 0600 explicitly; this only covers the CA directory
     * and temporary files should anything else ever be created. */
    umask(077);
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
    return usage_error("unknown command '%s'", c1);
}
