/*
 * vault_tls_test.c - a real coffer-vault refuses every client that TLS
 * alone would have let through or turned away silently, and says so.
 *
 * What it proves:
 *  1. No certificate, a certificate from another CA, an expired one, one
 *     not yet valid, and one without clientAuth usage: each call is
 *     refused UNAUTHENTICATED with its reason, and each refusal is a
 *     "vault.audit" line in the vault's log naming the certificate's
 *     status and SHA-256 fingerprint, the same as `openssl x509
 *     -fingerprint -sha256` prints.
 *  2. TLS 1.1 and 1.0 clients, and bytes that are not TLS, are refused in
 *     the handshake, and each failure is a "vault.audit" line too.
 *  3. Those refusals count toward the per-address lockout: with
 *     limits.max_failures = 3, three certificate-less calls lock out
 *     127.0.0.1, good certificate or not.
 *  4. After all of it the vault still serves a good client.
 */
#include <setjmp.h> /* cmocka */
#include <stdarg.h> /* cmocka */
#include <stddef.h> /* cmocka */
#include <stdint.h> /* cmocka */

#include <cmocka.h>

#include <arpa/inet.h>  /* htonl */
#include <ctype.h>      /* isxdigit, tolower */
#include <netinet/in.h> /* sockaddr_in */
#include <signal.h>     /* SIGTERM */
#include <stdio.h>      /* snprintf, popen */
#include <string.h>     /* strstr */
#include <sys/socket.h> /* socket */
#include <time.h>       /* nanosleep */
#include <unistd.h>     /* close, write */

#include "mem.h"                  /* cfr_malloc */
#include "vault_client_support.h" /* vc_health */
#include "vault_support.h"        /* the harness */

#define LOG_MAX (1u << 20)

static struct vs_env env;
static struct vs_vault vault;

static void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Lines of v's log holding every one of needles (NULL-terminated). */
static int
log_count(const struct vs_vault *v, const char *const *needles)
{
    char *buf = cfr_malloc(LOG_MAX);
    int n = 0;
    assert_non_null(buf);
    vs_vault_log(v, buf, LOG_MAX);
    for (char *line = buf; line != NULL && *line != '\0';) {
        char *nl = strchr(line, '\n');
        if (nl != NULL) {
            *nl = '\0';
        }
        bool all = true;
        for (size_t i = 0; needles[i] != NULL && all; i++) {
            all = strstr(line, needles[i]) != NULL;
        }
        n += all;
        line = nl != NULL ? nl + 1 : NULL;
    }
    cfr_free(buf);
    return n;
}

/* Polls (up to 5 s) until log_count reaches want; returns the last count. */
static int
log_wait(const struct vs_vault *v, const char *const *needles, int want)
{
    int n = 0;
    for (int i = 0; i < 250; i++) {
        if ((n = log_count(v, needles)) >= want) {
            break;
        }
        sleep_ms(20);
    }
    return n;
}

/* openssl's SHA-256 fingerprint of <env>/<stem>.pem as 64 lower-case hex. */
static void
openssl_fingerprint(const char *stem, char out[65])
{
    char path[2 * VS_PATH_MAX], cmd[3 * VS_PATH_MAX], line[256];
    char name[64];
    out[0] = '\0';
    snprintf(name, sizeof(name), "%s.pem", stem);
    vs_env_path(&env, name, path, sizeof(path));
    snprintf(cmd, sizeof(cmd),
             "openssl x509 -noout -fingerprint -sha256 -in %s", path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    if (fgets(line, sizeof(line), p) != NULL && strchr(line, '=') != NULL) {
        size_t n = 0;
        for (const char *c = strchr(line, '=') + 1; *c != '\0'; c++) {
            if (isxdigit((unsigned char)*c) && n < 64) {
                out[n++] = (char)tolower((unsigned char)*c);
            }
        }
        out[n] = '\0';
    }
    pclose(p);
    assert_int_equal(strlen(out), 64);
}

/* Runs openssl s_client with the agent's certificate; returns its output. */
static char *
s_client(const struct vs_vault *v, const char *flags)
{
    char cmd[8 * VS_PATH_MAX], ca[2 * VS_PATH_MAX], cert[2 * VS_PATH_MAX];
    char key[2 * VS_PATH_MAX];
    vs_env_path(&env, "ca.pem", ca, sizeof(ca));
    vs_env_path(&env, "agent.pem", cert, sizeof(cert));
    vs_env_path(&env, "agent.key", key, sizeof(key));
    snprintf(cmd, sizeof(cmd),
             "openssl s_client -connect 127.0.0.1:%d %s -alpn h2 -brief "
             "-CAfile %s -cert %s -key %s </dev/null 2>&1",
             v->port, flags, ca, cert, key);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char *out = cfr_malloc(16384);
    assert_non_null(out);
    size_t n = fread(out, 1, 16383, p);
    out[n] = '\0';
    pclose(p);
    return out;
}

static void
assert_serves_agent(const struct vs_vault *v)
{
    struct cfr_rpc_client *agent = vs_client(v, "agent");
    assert_non_null(agent);
    assert_int_equal(vc_health(agent, NULL), CFR_RPC_OK);
    cfr_rpc_client_free(agent);
}

static int
group_setup(void **state)
{
    (void)state;
    struct cfr_err err;
    if (cfr_rpc_global_init(&err) != 0 || vs_env_init(&env) != 0 ||
        vs_vault_init(&vault, &env, "tls") != 0) {
        return -1;
    }
    /* Refusals below must not lock 127.0.0.1 out of this vault. */
    snprintf(vault.extra_cfg, sizeof(vault.extra_cfg),
             "limits = { max_failures = 64; };");
    return vs_vault_start(&vault, 30000);
}

static int
group_teardown(void **state)
{
    (void)state;
    int rc = vs_vault_stop(&vault, SIGTERM, 20000);
    vs_env_fini(&env);
    cfr_rpc_global_fini();
    return rc == 0 ? 0 : -1;
}

static void
test_vault_tls_bad_certificates_refused_and_audited(void **state)
{
    (void)state;
    static const struct {
        const char *ident, *detail, *cert;
    } cases[] = {
        {NULL, "no client certificate", "none"},
        {"rogue", "client certificate not issued by a trusted CA", "untrusted"},
        {"expired", "client certificate expired", "expired"},
        {"notyet", "client certificate not yet valid", "not-yet-valid"},
        {"serveronly", "client certificate not valid for client authentication",
         "bad-usage"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *audit[] = {"vault.audit", "status=UNAUTHENTICATED",
                               cases[i].detail, NULL};
        int before = log_count(&vault, audit);
        struct cfr_rpc_client *cli = vs_client(&vault, cases[i].ident);
        assert_non_null(cli);
        struct cfr_err err;
        struct cfr_buf resp;
        cfr_buf_init(&resp, 1024);
        cfr_err_clear(&err);
        /* Health: the one method every identity may call. */
        int st = vs_unary_raw(cli, "Health", "", 0, &resp, &err);
        assert_int_equal(st, CFR_RPC_UNAUTHENTICATED);
        assert_non_null(strstr(err.msg, cases[i].detail));
        assert_int_equal(resp.len, 0);
        cfr_buf_fini(&resp);
        cfr_rpc_client_free(cli);
        assert_int_equal(log_wait(&vault, audit, before + 1), before + 1);

        /* The record names the certificate. */
        char fp[65] = "fingerprint=-", cert[32], fpn[80];
        snprintf(cert, sizeof(cert), "cert=%s", cases[i].cert);
        if (cases[i].ident != NULL) {
            openssl_fingerprint(cases[i].ident, fp);
        }
        snprintf(fpn, sizeof(fpn), "%s%s",
                 cases[i].ident != NULL ? "fingerprint=" : "", fp);
        const char *rpc[] = {"vault.audit", "/coffer.v1.Vault/Health", cert,
                             fpn,           "status=UNAUTHENTICATED",  NULL};
        assert_true(log_wait(&vault, rpc, 1) >= 1);
    }
    assert_serves_agent(&vault);
    assert_true(vs_vault_alive(&vault));
}

static void
test_vault_tls_handshake_failures_audited(void **state)
{
    (void)state;
    /* SECLEVEL=0 lets openssl offer TLS 1.0/1.1 at all: the refusal is
     * then the vault's, not a local one. */
    static const char *const old[] = {"-tls1_1", "-tls1"};
    const char *proto[] = {"vault.audit",
                           "TLS handshake failed: unsupported protocol", NULL};
    for (size_t i = 0; i < 2; i++) {
        char flags[64];
        int before = log_count(&vault, proto);
        snprintf(flags, sizeof(flags), "%s -cipher DEFAULT:@SECLEVEL=0",
                 old[i]);
        char *out = s_client(&vault, flags);
        assert_null(strstr(out, "CONNECTION ESTABLISHED"));
        assert_null(strstr(out, "no protocols available"));
        cfr_free(out);
        assert_int_equal(log_wait(&vault, proto, before + 1), before + 1);
    }
    /* TLS 1.2 and 1.3 are what the vault speaks. */
    char *out = s_client(&vault, "-tls1_2");
    assert_non_null(strstr(out, "Protocol version: TLSv1.2"));
    cfr_free(out);
    out = s_client(&vault, "");
    assert_non_null(strstr(out, "Protocol version: TLSv1.3"));
    cfr_free(out);

    /* Bytes that are not TLS at all. */
    const char *junk[] = {"vault.audit",
                          "TLS handshake failed: wrong version number", NULL};
    int before = log_count(&vault, junk);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)vault.port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    static const char garbage[] = "GARBAGE\r\n\x01\x02\x03 not a ClientHello";
    assert_int_equal(write(fd, garbage, sizeof(garbage)),
                     (ssize_t)sizeof(garbage));
    char buf[64];
    ssize_t got = read(fd, buf, sizeof(buf)); /* the vault hangs up */
    assert_true(got <= 0);
    close(fd);
    assert_int_equal(log_wait(&vault, junk, before + 1), before + 1);

    assert_serves_agent(&vault);
    assert_true(vs_vault_alive(&vault));
}

static void
test_vault_tls_refusals_lock_out_the_address(void **state)
{
    (void)state;
    struct vs_vault strict;
    assert_int_equal(vs_vault_init(&strict, &env, "strict"), 0);
    snprintf(strict.extra_cfg, sizeof(strict.extra_cfg),
             "limits = { max_failures = 3; lockout = \"1m\"; };");
    assert_int_equal(vs_vault_start(&strict, 30000), 0);
    assert_serves_agent(&strict);
    struct cfr_rpc_client *none = vs_client(&strict, NULL);
    assert_non_null(none);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(vc_health(none, NULL), CFR_RPC_UNAUTHENTICATED);
    }
    cfr_rpc_client_free(none);
    /* Now 127.0.0.1 itself is locked out, whatever certificate it shows. */
    struct cfr_rpc_client *agent = vs_client(&strict, "agent");
    assert_non_null(agent);
    assert_int_equal(vc_health(agent, NULL), CFR_RPC_PERMISSION_DENIED);
    cfr_rpc_client_free(agent);
    const char *lock[] = {"vault.lockout", "locked_address=1", NULL};
    assert_true(log_wait(&strict, lock, 1) >= 1);
    assert_int_equal(vs_vault_stop(&strict, SIGTERM, 20000), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vault_tls_bad_certificates_refused_and_audited),
        cmocka_unit_test(test_vault_tls_handshake_failures_audited),
        cmocka_unit_test(test_vault_tls_refusals_lock_out_the_address),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
