/*
 * admin_test.c - coffer-admin's CA and certificates, checked from outside:
 * the real binary is run, and what it wrote is judged by openssl(1) and by
 * the real transport (core/rpc.h), never by coffer-admin's own reading.
 *
 * A CA is created once per run in a mkdtemp directory; each test issues
 * what it needs under its own prefix. The last test serves a cfr_rpc
 * server with an issued vault certificate and calls it with issued client
 * certificates, proving the output is usable as is.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "err.h"
#include "log.h"
#include "mem.h"
#include "rpc.h"

#define OUT_MAX  (64 * 1024)
#define PATH_LEN 512
#define CMD_LEN  2048
#define M_WHO    "/coffer.v1.Test/WhoAmI"

static char dir[64];
static char ca_dir[PATH_LEN];
static char out[OUT_MAX]; /* stdout and stderr of the last run */

/* ---- helpers ------------------------------------------------------------ */

/* Runs a shell command, keeps its output in out, returns its exit code. */
static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int
run(const char *fmt, ...)
{
    char cmd[CMD_LEN];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof(cmd) - 8, fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < sizeof(cmd) - 8);
    strncat(cmd, " 2>&1", sizeof(cmd) - strlen(cmd) - 1);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t len = fread(out, 1, sizeof(out) - 1, p);
    out[len] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int admin(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int
admin(const char *fmt, ...)
{
    char args[CMD_LEN - 256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < sizeof(args));
    return run("%s %s", COFFER_ADMIN_BIN, args);
}

static void
path(char *buf, const char *name)
{
    int n = snprintf(buf, PATH_LEN, "%s/%s", dir, name);
    assert_true(n > 0 && n < PATH_LEN);
}

static bool
exists(const char *name)
{
    char p[PATH_LEN];
    struct stat st;
    path(p, name);
    return stat(p, &st) == 0;
}

static unsigned
mode_of(const char *name)
{
    char p[PATH_LEN];
    struct stat st;
    path(p, name);
    assert_int_equal(stat(p, &st), 0);
    return (unsigned)(st.st_mode & 07777);
}

/* Returns an owned copy of a file under dir (NUL-terminated). */
static char *
slurp(const char *name)
{
    char p[PATH_LEN];
    path(p, name);
    FILE *f = fopen(p, "rb");
    if (f == NULL) {
        return NULL;
    }
    char *s = cfr_calloc(1, OUT_MAX);
    if (s != NULL) {
        size_t n = fread(s, 1, OUT_MAX - 1, f);
        s[n] = '\0';
    }
    fclose(f);
    return s;
}

/* The value of "key: value" in out, copied into val. */
static void
field(const char *key, char *val, size_t size)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\n%s: ", key);
    const char *p = strstr(out, pat);
    assert_non_null(p);
    p += strlen(pat);
    size_t n = strcspn(p, "\n");
    assert_true(n < size);
    memcpy(val, p, n);
    val[n] = '\0';
}

static int
count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p != NULL;
         p = strstr(p + 1, needle)) {
        n++;
    }
    return n;
}

/* Checks a printed serial and fingerprint against what openssl reads. */
static void
check_serial_and_fingerprint(const char *pem)
{
    char serial[64], fpr[128], want[160];
    field("serial", serial, sizeof(serial));
    field("sha256", fpr, sizeof(fpr));
    /* 128 random bits: 32 hex digits, fewer only by leading zero bytes. */
    assert_true(strlen(serial) >= 28 && strlen(serial) <= 34);
    assert_int_equal(strlen(fpr), 95);
    assert_int_equal(
        run("cd %s && openssl x509 -in %s -noout -serial -fingerprint -sha256",
            dir, pem),
        0);
    snprintf(want, sizeof(want), "serial=%s\n", serial);
    assert_non_null(strstr(out, want));
    snprintf(want, sizeof(want), "Fingerprint=%s\n", fpr);
    assert_non_null(strstr(out, want));
}

/* The public key of a certificate and of a private key must be the same. */
static void
check_key_matches(const char *pem, const char *key)
{
    char a[1024];
    assert_int_equal(
        run("cd %s && openssl x509 -in %s -noout -pubkey", dir, pem), 0);
    assert_non_null(strstr(out, "BEGIN PUBLIC KEY"));
    assert_true(strlen(out) < sizeof(a));
    memcpy(a, out, strlen(out) + 1);
    assert_int_equal(run("cd %s && openssl pkey -in %s -pubout", dir, key), 0);
    assert_string_equal(a, out);
}

/* ---- setup -------------------------------------------------------------- */

static int
group_setup(void **state)
{
    (void)state;
    cfr_log_set_level(CFR_LOG_WARN);
    snprintf(dir, sizeof(dir), "/tmp/coffer-admin-test-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        return -1;
    }
    snprintf(ca_dir, sizeof(ca_dir), "%s/ca", dir);
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    char cmd[PATH_LEN + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- tests -------------------------------------------------------------- */

static void
test_admin_ca_init(void **state)
{
    (void)state;
    assert_int_equal(
        admin("ca init --dir %s --name 'Coffer test CA' --days 30", ca_dir), 0);
    assert_non_null(strstr(out, "identity: certificate authority"));
    assert_int_equal(mode_of("ca/ca.key"), 0600);
    assert_int_equal(mode_of("ca") & 077, 0);
    check_serial_and_fingerprint("ca/ca.pem");

    assert_int_equal(
        run("cd %s && openssl x509 -in ca/ca.pem -noout -text", dir), 0);
    assert_non_null(strstr(out, "Subject: O = Coffer, CN = Coffer test CA"));
    assert_non_null(strstr(out, "Issuer: O = Coffer, CN = Coffer test CA"));
    assert_non_null(strstr(out, "X509v3 Basic Constraints: critical\n"
                                "                CA:TRUE, pathlen:0"));
    assert_non_null(strstr(out, "X509v3 Key Usage: critical\n"
                                "                Certificate Sign, CRL Sign"));
    assert_non_null(strstr(out, "X509v3 Subject Key Identifier"));
    assert_non_null(strstr(out, "ASN1 OID: prime256v1"));
    assert_non_null(strstr(out, "Signature Algorithm: ecdsa-with-SHA256"));
    /* A CA that verifies against itself is a well-formed self-signed CA. */
    assert_int_equal(
        run("cd %s && openssl verify -CAfile ca/ca.pem ca/ca.pem", dir), 0);
    assert_int_equal(run("cd %s && openssl pkey -in ca/ca.key -noout", dir), 0);
    check_key_matches("ca/ca.pem", "ca/ca.key");
}

static void
test_admin_ca_refuses_existing(void **state)
{
    (void)state;
    char *before_pem = slurp("ca/ca.pem");
    char *before_key = slurp("ca/ca.key");
    assert_non_null(before_pem);
    assert_non_null(before_key);
    assert_int_equal(admin("ca init --dir %s", ca_dir), 3);
    assert_non_null(strstr(out, "already exists"));
    /* A CA with only one of its two files is refused as well. */
    char p[PATH_LEN];
    path(p, "half");
    assert_int_equal(mkdir(p, 0700), 0);
    assert_int_equal(run("touch %s/ca.key", p), 0);
    assert_int_equal(admin("ca init --dir %s", p), 3);
    assert_false(exists("half/ca.pem"));

    char *after_pem = slurp("ca/ca.pem");
    char *after_key = slurp("ca/ca.key");
    assert_string_equal(before_pem, after_pem);
    assert_string_equal(before_key, after_key);
    /* No temporary file was left behind by either refusal. */
    assert_int_equal(run("ls -A %s/ca | wc -l", dir), 0);
    assert_string_equal(out, "2\n");
    cfr_free(before_pem);
    cfr_free(before_key);
    cfr_free(after_pem);
    cfr_free(after_key);
}

static void
test_admin_issue_each_client_role(void **state)
{
    (void)state;
    static const char *const roles[] = {"agent", "restore", "auditor", "admin"};
    static const char *const tenants[] = {"acme", "globex.mail", "a_b-c",
                                          "0acme"};
    for (size_t i = 0; i < 4; i++) {
        char pem[64], key[64], want[160];
        snprintf(pem, sizeof(pem), "%s.pem", roles[i]);
        snprintf(key, sizeof(key), "%s.key", roles[i]);
        assert_int_equal(admin("cert issue --ca %s --role %s --tenant %s "
                               "--out %s/%s --days 20",
                               ca_dir, roles[i], tenants[i], dir, roles[i]),
                         0);
        snprintf(want, sizeof(want), "identity: tenant=%s role=%s\n",
                 tenants[i], roles[i]);
        assert_non_null(strstr(out, want));
        assert_null(strstr(out, "PRIVATE KEY"));
        check_serial_and_fingerprint(pem);
        assert_int_equal(mode_of(key), 0600);
        assert_int_equal(mode_of(pem), 0644);

        assert_int_equal(run("cd %s && openssl verify -CAfile ca/ca.pem "
                             "-purpose sslclient %s",
                             dir, pem),
                         0);
        /* A client certificate must not pass as a server. */
        assert_int_not_equal(run("cd %s && openssl verify -CAfile ca/ca.pem "
                                 "-purpose sslserver %s",
                                 dir, pem),
                             0);
        assert_int_equal(
            run("cd %s && openssl x509 -in %s -noout -text", dir, pem), 0);
        snprintf(want, sizeof(want),
                 "X509v3 Subject Alternative Name: \n"
                 "                URI:coffer://tenant/%s/role/%s\n",
                 tenants[i], roles[i]);
        assert_non_null(strstr(out, want));
        assert_int_equal(count_of(out, "URI:"), 1);
        assert_non_null(strstr(out, "X509v3 Extended Key Usage: \n"
                                    "                TLS Web Client "
                                    "Authentication\n"));
        assert_null(strstr(out, "Server Authentication"));
        assert_non_null(strstr(out, "CA:FALSE"));
        assert_non_null(strstr(out, "ASN1 OID: prime256v1"));
        check_key_matches(pem, key);

        /* cert show reads the identity back the way the vault does. */
        assert_int_equal(admin("cert show %s/%s", dir, pem), 0);
        snprintf(want, sizeof(want), "identity: tenant=%s role=%s\n",
                 tenants[i], roles[i]);
        assert_non_null(strstr(out, want));
        check_serial_and_fingerprint(pem);
    }
}

/*
 * Two admins of one tenant must be told apart for approvals: --name puts
 * the holder's name in the CN, and without it the CN is the role.
 */
static void
test_admin_issue_named_admins(void **state)
{
    (void)state;
    static const char *const names[] = {"alice", "bob.ops"};
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(admin("cert issue --ca %s --role admin --tenant acme "
                               "--name %s --out %s/admin-%s --days 20",
                               ca_dir, names[i], dir, names[i]),
                         0);
        assert_non_null(strstr(out, "identity: tenant=acme role=admin\n"));
        assert_int_equal(run("cd %s && openssl x509 -in admin-%s.pem -noout "
                             "-subject -nameopt RFC2253",
                             dir, names[i]),
                         0);
        char want[96];
        snprintf(want, sizeof(want), "CN=%s,OU=acme,O=Coffer", names[i]);
        assert_non_null(strstr(out, want));
    }
    /* The default CN is the role. */
    assert_int_equal(run("cd %s && openssl x509 -in admin.pem -noout -subject "
                         "-nameopt RFC2253",
                         dir),
                     0);
    assert_non_null(strstr(out, "CN=admin,OU=0acme,O=Coffer"));
    /* Holder names follow the identity rules. */
    assert_int_equal(admin("cert issue --ca %s --role admin --tenant acme "
                           "--name 'Alice Smith' --out %s/admin-bad",
                           ca_dir, dir),
                     2);
    assert_false(exists("admin-bad.pem"));
}

/*
 * Operators: coffer://operator/NAME with CN NAME, read back by the
 * transport's own parser as role operator without a tenant.
 */
static void
test_admin_issue_operator(void **state)
{
    (void)state;
    assert_int_equal(admin("cert issue --ca %s --role operator --name alice "
                           "--out %s/op-alice --days 20",
                           ca_dir, dir),
                     0);
    assert_non_null(strstr(out, "identity: operator=alice\n"));
    assert_null(strstr(out, "PRIVATE KEY"));
    assert_int_equal(mode_of("op-alice.key"), 0600);
    check_serial_and_fingerprint("op-alice.pem");
    assert_int_equal(run("cd %s && openssl verify -CAfile ca/ca.pem -purpose "
                         "sslclient op-alice.pem",
                         dir),
                     0);
    assert_int_equal(
        run("cd %s && openssl x509 -in op-alice.pem -noout -text", dir), 0);
    assert_non_null(strstr(out,
                           "X509v3 Subject Alternative Name: \n"
                           "                URI:coffer://operator/alice\n"));
    assert_int_equal(count_of(out, "URI:"), 1);
    assert_non_null(strstr(out, "TLS Web Client Authentication"));
    assert_null(strstr(out, "Server Authentication"));
    assert_null(strstr(out, "coffer://tenant/"));
    assert_int_equal(run("cd %s && openssl x509 -in op-alice.pem -noout "
                         "-subject -nameopt RFC2253",
                         dir),
                     0);
    assert_non_null(strstr(out, "CN=alice,O=Coffer"));
    assert_null(strstr(out, "OU="));
    check_key_matches("op-alice.pem", "op-alice.key");
    assert_int_equal(admin("cert show %s/op-alice.pem", dir), 0);
    assert_non_null(strstr(out, "identity: operator=alice\n"));

    /* An operator has no tenant, needs a name, and no host names. */
    static const struct {
        const char *args, *says;
    } bad[] = {
        {"--role operator --name alice --tenant acme", "no --tenant"},
        {"--role operator", "needs --name"},
        {"--role operator --name Alice", "a-z 0-9"},
        {"--role operator --name -x", "must not start"},
        {"--role operator --name alice --dns x.example", "role vault only"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = admin("cert issue --ca %s %s --out %s/op-bad --days 20",
                       ca_dir, bad[i].args, dir);
        if (rc != 2 || strstr(out, bad[i].says) == NULL) {
            fail_msg("case %zu (%s): exit %d: %s", i, bad[i].args, rc, out);
        }
        assert_false(exists("op-bad.pem"));
        assert_false(exists("op-bad.key"));
    }
    /* The refusal of an unknown role lists operator among the roles. */
    assert_int_equal(admin("cert issue --ca %s --role superuser --tenant acme "
                           "--out %s/op-bad",
                           ca_dir, dir),
                     2);
    assert_non_null(strstr(out, "vault or operator"));
}

static void
test_admin_issue_vault(void **state)
{
    (void)state;
    assert_int_equal(admin("cert issue --ca %s --role vault --dns LocalHost "
                           "--ip 127.0.0.1 --ip ::1 --days 20 --out %s/vault",
                           ca_dir, dir),
                     0);
    assert_non_null(strstr(out, "identity: vault=localhost\n"));
    assert_int_equal(mode_of("vault.key"), 0600);
    check_serial_and_fingerprint("vault.pem");
    assert_int_equal(run("cd %s && openssl verify -CAfile ca/ca.pem -purpose "
                         "sslserver vault.pem",
                         dir),
                     0);
    assert_int_equal(run("cd %s && openssl verify -CAfile ca/ca.pem -purpose "
                         "sslclient vault.pem",
                         dir),
                     0);
    assert_int_equal(
        run("cd %s && openssl x509 -in vault.pem -noout -text", dir), 0);
    assert_non_null(strstr(out, "DNS:localhost, IP Address:127.0.0.1, "
                                "IP Address:0:0:0:0:0:0:0:1, "
                                "URI:coffer://vault/localhost\n"));
    assert_non_null(strstr(out, "TLS Web Server Authentication, TLS Web "
                                "Client Authentication"));
    assert_null(strstr(out, "coffer://tenant/"));
    check_key_matches("vault.pem", "vault.key");

    /* With only an address, the vault's name must be given. */
    assert_int_equal(admin("cert issue --ca %s --role vault --ip 10.0.0.7 "
                           "--days 20 --out %s/v2",
                           ca_dir, dir),
                     2);
    assert_false(exists("v2.pem"));
    assert_int_equal(admin("cert issue --ca %s --role vault --ip 10.0.0.7 "
                           "--name vault-2 --days 20 --out %s/v2",
                           ca_dir, dir),
                     0);
    assert_non_null(
        strstr(out, "san: IP:10.0.0.7, URI:coffer://vault/vault-2"));
}

static void
test_admin_issue_from_csr(void **state)
{
    (void)state;
    /* The CSR asks for another tenant and the admin role; the CA must use
     * its public key and nothing else. */
    assert_int_equal(
        run("cd %s && openssl req -new -newkey ec -pkeyopt "
            "ec_paramgen_curve:P-256 -nodes -keyout host.key -out host.csr "
            "-subj '/CN=evil/O=other' -addext "
            "'subjectAltName=URI:coffer://tenant/other/role/admin' -addext "
            "'basicConstraints=critical,CA:TRUE'",
            dir),
        0);
    assert_int_equal(mode_of("host.key") & 077, 0);
    char *key_before = slurp("host.key");
    assert_int_equal(admin("cert issue --ca %s --role restore --tenant acme "
                           "--csr %s/host.csr --days 20 --out %s/host",
                           ca_dir, dir, dir),
                     0);
    assert_non_null(strstr(out, "identity: tenant=acme role=restore\n"));
    assert_non_null(strstr(out, "key: stays with the host"));
    check_serial_and_fingerprint("host.pem");
    char *key_after = slurp("host.key");
    assert_string_equal(key_before, key_after);
    cfr_free(key_before);
    cfr_free(key_after);
    assert_int_equal(
        run("cd %s && openssl verify -CAfile ca/ca.pem host.pem", dir), 0);
    check_key_matches("host.pem", "host.key");
    assert_int_equal(
        run("cd %s && openssl x509 -in host.pem -noout -text", dir), 0);
    assert_non_null(strstr(out, "URI:coffer://tenant/acme/role/restore"));
    assert_null(strstr(out, "other"));
    assert_null(strstr(out, "evil"));
    assert_null(strstr(out, "CA:TRUE"));

    /* An RSA CSR is refused: every Coffer key is P-256. */
    assert_int_equal(run("cd %s && openssl req -new -newkey rsa:2048 -nodes "
                         "-keyout rsa.key -out rsa.csr -subj /CN=rsa",
                         dir),
                     0);
    assert_int_equal(admin("cert issue --ca %s --role agent --tenant acme "
                           "--csr %s/rsa.csr --days 20 --out %s/rsa",
                           ca_dir, dir, dir),
                     2);
    assert_non_null(strstr(out, "P-256"));
    assert_false(exists("rsa.pem"));
    /* A CSR whose signature does not verify is refused: one bit of the
     * signature (near the end of the DER) is flipped. */
    assert_int_equal(run("cd %s && openssl req -in host.csr -outform DER "
                         "-out bad.der",
                         dir),
                     0);
    char p[PATH_LEN];
    path(p, "bad.der");
    FILE *f = fopen(p, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, -3, SEEK_END), 0);
    int c = fgetc(f);
    assert_int_not_equal(c, EOF);
    assert_int_equal(fseek(f, -3, SEEK_END), 0);
    assert_int_equal(fputc(c ^ 0x01, f), c ^ 0x01);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(
        run("cd %s && openssl req -inform DER -in bad.der -out bad.csr", dir),
        0);
    assert_int_equal(admin("cert issue --ca %s --role agent --tenant acme "
                           "--csr %s/bad.csr --days 20 --out %s/bad",
                           ca_dir, dir, dir),
                     5);
    assert_false(exists("bad.pem"));
}

/* Every refusal exits with its documented code and writes nothing. */
static void
test_admin_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *args;
        int code;
        const char *says;
    } cases[] = {
        {"--role agent --tenant Acme", 2, "a-z 0-9"},
        {"--role agent --tenant -acme", 2, "must not start"},
        {"--role agent --tenant .acme", 2, "must not start"},
        {"--role agent --tenant 'ac me'", 2, "a-z 0-9"},
        {"--role agent --tenant 'a/role/admin'", 2, "a-z 0-9"},
        {"--role agent --tenant ''", 2, "1 to 63"},
        {"--role agent --tenant "
         "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcd",
         2, "1 to 63"},
        {"--role agent", 2, "needs --tenant"},
        {"--role superuser --tenant acme", 2, "unknown role"},
        {"--role agent --tenant acme --days 0", 2, "1 to 3650"},
        {"--role agent --tenant acme --days 3651", 2, "1 to 3650"},
        {"--role agent --tenant acme --days 12x", 2, "1 to 3650"},
        {"--role agent --tenant acme --days 40", 2, "outlive its CA"},
        {"--role agent --tenant acme --dns x.example", 2, "role vault only"},
        {"--role vault --tenant acme --dns x.example", 2, "no --tenant"},
        {"--role vault", 2, "--dns or --ip"},
        {"--role vault --dns 'a.example,DNS:evil.example'", 2, "bad DNS"},
        {"--role vault --dns '*.example'", 2, "no wildcards"},
        {"--role vault --ip 300.1.1.1", 2, "bad IP"},
        {"--role agent --tenant acme --tenant globex", 2, "given twice"},
        {"--role agent --tenant acme --bogus 1", 2, "unknown option"},
        {"--role agent --tenant acme --csr /nonexistent.csr", 4, "CSR"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = admin("cert issue --ca %s %s --out %s/refused", ca_dir,
                       cases[i].args, dir);
        if (rc != cases[i].code || strstr(out, cases[i].says) == NULL) {
            fail_msg("case %zu (%s): exit %d, output: %s", i, cases[i].args, rc,
                     out);
        }
        assert_false(exists("refused.pem"));
        assert_false(exists("refused.key"));
    }

    /* Missing pieces of the command line. */
    assert_int_equal(admin("cert issue --role agent --tenant acme --out x"), 2);
    assert_non_null(strstr(out, "needs --ca"));
    assert_int_equal(admin("frobnicate"), 2);
    assert_int_equal(admin("cert"), 2);
    assert_int_equal(admin("ca init"), 2);
    assert_int_equal(admin("cert show"), 2);
    assert_int_equal(admin("cert issue --ca %s --role agent --tenant acme "
                           "--out",
                           ca_dir),
                     2);
    assert_non_null(strstr(out, "needs a value"));

    /* A CA directory without a CA. */
    assert_int_equal(admin("cert issue --ca %s/nowhere --role agent --tenant "
                           "acme --out %s/refused",
                           dir, dir),
                     4);
    assert_false(exists("refused.key"));

    /* An existing output is never replaced. */
    char *before = slurp("agent.pem");
    assert_non_null(before);
    assert_int_equal(admin("cert issue --ca %s --role agent --tenant acme "
                           "--out %s/agent",
                           ca_dir, dir),
                     3);
    char *after = slurp("agent.pem");
    assert_string_equal(before, after);
    cfr_free(before);
    cfr_free(after);

    /* A CA key others can read is refused before it is used. */
    assert_int_equal(run("chmod 0640 %s/ca.key", ca_dir), 0);
    assert_int_equal(admin("cert issue --ca %s --role agent --tenant acme "
                           "--out %s/refused",
                           ca_dir, dir),
                     6);
    assert_int_equal(run("chmod 0600 %s/ca.key", ca_dir), 0);
    assert_false(exists("refused.pem"));

    /* Not a certificate. */
    assert_int_equal(admin("cert show %s/agent.key", dir), 5);
    assert_null(strstr(out, "PRIVATE"));
    assert_int_equal(admin("cert show %s/none.pem", dir), 4);
}

/* cert show applies the transport's identity rules to foreign
 * certificates too (tests/pki/make-test-pki.sh makes the odd ones). */
static void
test_admin_show_foreign(void **state)
{
    (void)state;
    char p[PATH_LEN];
    path(p, "pki");
    assert_int_equal(mkdir(p, 0700), 0);
    assert_int_equal(run("%s %s", COFFER_PKI_SCRIPT, p), 0);
    static const struct {
        const char *file, *identity;
    } cases[] = {
        {"agent.pem", "identity: tenant=acme role=agent\n"},
        {"restore.pem", "identity: tenant=globex role=restore\n"},
        {"operator2.pem", "identity: operator=bob\n"},
        {"twoid.pem", "identity: none (two or more coffer identity URIs)\n"},
        {"noid.pem", "identity: none\n"},
        {"ca.pem", "identity: certificate authority\n"},
        {"server.pem", "identity: none\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(admin("cert show %s/%s", p, cases[i].file), 0);
        if (strstr(out, cases[i].identity) == NULL) {
            fail_msg("%s: %s", cases[i].file, out);
        }
    }
    assert_int_equal(admin("cert show %s/server.pem", p), 0);
    assert_non_null(strstr(out, "san: DNS:localhost, IP:127.0.0.1\n"));
    assert_non_null(strstr(out, "eku: serverAuth\n"));
    assert_int_equal(admin("cert show %s/expired.pem", p), 0);
    assert_non_null(strstr(out, "not-before: 2020-01-01T00:00:00Z\n"));
    assert_non_null(strstr(out, "not-after: 2020-01-02T00:00:00Z\n"));
    /* A foreign CA without its key in the expected place is refused. */
    assert_int_equal(admin("cert issue --ca %s --role agent --tenant acme "
                           "--days 1 --out %s/foreign",
                           p, dir),
                     4);
    assert_false(exists("foreign.pem"));
}

static void
test_admin_help(void **state)
{
    (void)state;
    assert_int_equal(admin("--help"), 0);
    static const char *const sections[] = {"NAME\n",
                                           "SYNOPSIS\n",
                                           "DESCRIPTION\n",
                                           "COMMANDS\n",
                                           "OUTPUT\n",
                                           "EXIT STATUS\n",
                                           "EXAMPLES\n",
                                           "coffer://tenant/T/role",
                                           "coffer://operator/NAME",
                                           "tenant add NAME",
                                           "revoke (--identity",
                                           "audit [--tenant T]",
                                           "totp enroll",
                                           "CONNECTION\n",
                                           "7  a vault could not be reached",
                                           "9  pending"};
    for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++) {
        assert_non_null(strstr(out, sections[i]));
    }
    assert_int_equal(admin("cert issue --help"), 0);
    assert_non_null(strstr(out, "EXIT STATUS\n"));
    assert_int_equal(admin("tenant add --help"), 0);
    assert_non_null(strstr(out, "CONNECTION\n"));
    assert_int_equal(admin("help"), 0);
}

/* ---- the issued certificates against the real transport --------------- */

static pthread_mutex_t seen_mu = PTHREAD_MUTEX_INITIALIZER;
static struct cfr_rpc_peer seen;
static int seen_calls;

static int
authz_all(void *ctx, const struct cfr_rpc_peer *peer, const char *method)
{
    (void)ctx;
    (void)peer;
    (void)method;
    return CFR_RPC_OK;
}

static void
h_who(struct cfr_rpc_ctx *ctx, void *arg)
{
    (void)arg;
    const struct cfr_rpc_peer *p = cfr_rpc_ctx_peer(ctx);
    pthread_mutex_lock(&seen_mu);
    seen = *p;
    seen_calls++;
    pthread_mutex_unlock(&seen_mu);
    char resp[CFR_RPC_TENANT_MAX + CFR_RPC_ROLE_MAX + 2];
    int n = snprintf(resp, sizeof(resp), "%s/%s", p->tenant, p->role);
    (void)cfr_rpc_ctx_finish(ctx, CFR_RPC_OK, NULL, resp, (size_t)n, NULL);
}

/* One unary call with the given client certificate; returns the status. */
static int
call_as(int port, const char *ca, const char *cert, const char *key,
        char *resp_r, size_t resp_size)
{
    char target[64];
    struct cfr_rpc_client *cli = NULL;
    struct cfr_err err;
    struct cfr_buf resp;
    int status = -1;
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    struct cfr_rpc_client_opts o = {
        .target = target,
        .ca_pem = ca,
        .cert_pem = cert,
        .key_pem = key,
    };
    assert_int_equal(cfr_rpc_client_new(&o, &cli, &err), 0);
    cfr_buf_init(&resp, 1024);
    (void)cfr_rpc_unary(cli, M_WHO, "?", 1, 10000, &resp, &status, &err);
    snprintf(resp_r, resp_size, "%.*s", (int)resp.len, (const char *)resp.data);
    cfr_buf_fini(&resp);
    cfr_rpc_client_free(cli);
    return status;
}

static void
test_admin_certs_work_with_rpc(void **state)
{
    (void)state;
    char *ca = slurp("ca/ca.pem");
    char *srv_pem = slurp("vault.pem"), *srv_key = slurp("vault.key");
    char *agent_pem = slurp("agent.pem"), *agent_key = slurp("agent.key");
    char *host_pem = slurp("host.pem"), *host_key = slurp("host.key");
    assert_non_null(ca);
    assert_non_null(srv_pem);
    assert_non_null(srv_key);
    assert_non_null(agent_pem);
    assert_non_null(agent_key);
    assert_non_null(host_pem);
    assert_non_null(host_key);

    struct cfr_err err;
    struct cfr_rpc_server *srv = NULL;
    assert_int_equal(cfr_rpc_global_init(&err), 0);
    struct cfr_rpc_server_opts o = {
        .listen_addr = "127.0.0.1:0",
        .cert_pem = srv_pem,
        .key_pem = srv_key,
        .client_ca_pem = ca,
        .authz = authz_all,
    };
    assert_int_equal(cfr_rpc_server_new(&o, &srv, &err), 0);
    assert_int_equal(cfr_rpc_server_add_method(srv, M_WHO, CFR_RPC_KIND_UNARY,
                                               h_who, NULL, &err),
                     0);
    assert_int_equal(cfr_rpc_server_start(srv, &err), 0);
    int port = cfr_rpc_server_port(srv);
    char resp[128];

    /* The generated agent key and certificate: the handler sees them. */
    assert_int_equal(
        call_as(port, ca, agent_pem, agent_key, resp, sizeof(resp)),
        CFR_RPC_OK);
    assert_string_equal(resp, "acme/agent");
    pthread_mutex_lock(&seen_mu);
    assert_int_equal(seen_calls, 1);
    assert_true(seen.authenticated);
    assert_true(seen.has_identity);
    assert_string_equal(seen.tenant, "acme");
    assert_string_equal(seen.role, "agent");
    assert_string_equal(seen.uri, "coffer://tenant/acme/role/agent");
    assert_string_equal(seen.cn, "agent");
    pthread_mutex_unlock(&seen_mu);

    /* The CSR flow: openssl's key with the CA's certificate. */
    assert_int_equal(call_as(port, ca, host_pem, host_key, resp, sizeof(resp)),
                     CFR_RPC_OK);
    assert_string_equal(resp, "acme/restore");

    /* A vault certificate is a TLS client too, for replication: it names
     * a peer vault (role vault) and never a tenant. */
    assert_int_equal(call_as(port, ca, srv_pem, srv_key, resp, sizeof(resp)),
                     CFR_RPC_OK);
    assert_string_equal(resp, "/vault");
    pthread_mutex_lock(&seen_mu);
    assert_int_equal(seen_calls, 3);
    assert_string_equal(seen.tenant, "");
    assert_string_equal(seen.role, CFR_RPC_ROLE_VAULT);
    assert_true(
        strncmp(seen.uri, CFR_RPC_VAULT_URI, strlen(CFR_RPC_VAULT_URI)) == 0);
    pthread_mutex_unlock(&seen_mu);

    cfr_rpc_server_free(srv);
    cfr_rpc_global_fini();
    cfr_free(ca);
    cfr_free(srv_pem);
    cfr_free(srv_key);
    cfr_free(agent_pem);
    cfr_free(agent_key);
    cfr_free(host_pem);
    cfr_free(host_key);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admin_ca_init),
        cmocka_unit_test(test_admin_ca_refuses_existing),
        cmocka_unit_test(test_admin_issue_each_client_role),
        cmocka_unit_test(test_admin_issue_named_admins),
        cmocka_unit_test(test_admin_issue_operator),
        cmocka_unit_test(test_admin_issue_vault),
        cmocka_unit_test(test_admin_issue_from_csr),
        cmocka_unit_test(test_admin_refusals),
        cmocka_unit_test(test_admin_show_foreign),
        cmocka_unit_test(test_admin_help),
        cmocka_unit_test(test_admin_certs_work_with_rpc),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
