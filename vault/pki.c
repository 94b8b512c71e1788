/*
 * pki.c - CA creation and certificate issuance with OpenSSL libcrypto.
 *
 * Invariants:
 *  1. Every identity URI this file writes into a certificate has first
 *     been accepted by cfr_rpc_identity_parse, the very function the
 *     server reads it with, and a client certificate carries exactly one.
 *  2. Nothing from a CSR but its public key reaches a certificate: the
 *     subject, SANs, key usages and validity are the CA's decision.
 *  3. No file is replaced: final names are created with link(2), which
 *     fails when the name exists, and only after the content was written
 *     and synced under a temporary name. A failed issue leaves no output.
 *  4. Private key bytes exist only inside OpenSSL objects and secure-memory
 *     BIOs (cleared on free) on their way to a 0600 file; they are never
 *     copied into struct vault_pki_info or an error message.
 *  5. SAN values are built as GENERAL_NAME objects, never as OpenSSL
 *     configuration strings, so no input can smuggle in an extra SAN.
 */
#include "pki.h"

#include <arpa/inet.h> /* inet_pton, inet_ntop for IP SANs */
#include <errno.h>
#include <fcntl.h>
#include <limits.h> /* PATH_MAX */
#include <stdio.h>
#include <stdlib.h> /* mkstemp, strtoul */
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "mem.h"

/* PEM inputs are a few KiB; anything larger is not what we were given. */
#define PEM_FILE_MAX (1024 * 1024)
/* Leaves start slightly in the past so a host whose clock runs a little
 * behind the CA's does not reject a fresh certificate. */
#define BACKDATE_SECONDS 300
#define DEFAULT_CA_NAME  "Coffer CA"
#define SUBJECT_ORG      "Coffer"
#define CN_MAX           64 /* X.520 ub-common-name */

static const char *const role_names[] = {
    [VAULT_PKI_AGENT] = "agent",     [VAULT_PKI_RESTORE] = "restore",
    [VAULT_PKI_AUDITOR] = "auditor", [VAULT_PKI_ADMIN] = "admin",
    [VAULT_PKI_VAULT] = "vault",     [VAULT_PKI_OPERATOR] = "operator",
};
#define ROLE_COUNT (sizeof(role_names) / sizeof(role_names[0]))

/* ---- small helpers ------------------------------------------------------ */

/* Records the newest OpenSSL error under what, then empties its queue. */
static int
ossl_fail(struct cfr_err *err, int code, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    char detail[160] = "no detail";
    if (e != 0) {
        ERR_error_string_n(e, detail, sizeof(detail));
    }
    ERR_clear_error();
    return CFR_ERR(err, code, "%s: %s", what, detail);
}

static int
path_join(char *out, size_t size, const char *a, const char *b,
          struct cfr_err *err)
{
    int n = snprintf(out, size, "%s%s", a, b);
    if (n < 0 || (size_t)n >= size) {
        return CFR_ERR(err, CFR_EINVAL, "path too long: %s%s", a, b);
    }
    return 0;
}

static bool
path_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 || errno != ENOENT;
}

/* The directory part of path ("." when there is none), into out. */
static void
dir_of(const char *path, char *out, size_t size)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        snprintf(out, size, ".");
    } else if (slash == path) {
        snprintf(out, size, "/");
    } else {
        snprintf(out, size, "%.*s", (int)(slash - path), path);
    }
}

/*
 * Writes data to path with mode, all or nothing: a temporary file in the
 * same directory is written, synced, then linked to path (which fails with
 * CFR_EEXIST if path exists) and the directory synced. Borrows data.
 */
static int
write_new_file(const char *path, const void *data, size_t len, mode_t mode,
               struct cfr_err *err)
{
    char tmp[PATH_MAX], dir[PATH_MAX];
    int fd = -1, dfd = -1, rc = 0;
    bool tmp_made = false;

    if ((rc = path_join(tmp, sizeof(tmp), path, ".tmp-XXXXXX", err)) != 0) {
        goto out;
    }
    fd = mkstemp(tmp);
    if (fd < 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "cannot create %s", tmp);
        goto out;
    }
    tmp_made = true;
    if (fchmod(fd, mode) != 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "chmod %s", tmp);
        goto out;
    }
    const unsigned char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            rc = CFR_ERR_ERRNO(err, CFR_EIO, "write %s", tmp);
            goto out;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "fsync %s", tmp);
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "close %s", tmp);
        goto out;
    }
    fd = -1;
    if (link(tmp, path) != 0) {
        if (errno == EEXIST) {
            rc = CFR_ERR(err, CFR_EEXIST, "%s exists; refusing to overwrite",
                         path);
        } else {
            rc = CFR_ERR_ERRNO(err, CFR_EIO, "cannot create %s", path);
        }
        goto out;
    }
    dir_of(path, dir, sizeof(dir));
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "fsync directory %s", dir);
        (void)unlink(path);
        goto out;
    }
out:
    if (fd >= 0) {
        (void)close(fd);
    }
    if (dfd >= 0) {
        (void)close(dfd);
    }
    if (tmp_made) {
        (void)unlink(tmp);
    }
    return rc;
}

/* Writes the contents of a memory BIO to a new file. */
static int
write_bio(const char *path, BIO *bio, mode_t mode, struct cfr_err *err)
{
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    if (n <= 0 || data == NULL) {
        return CFR_ERR(err, CFR_EINTERNAL, "nothing to write to %s", path);
    }
    return write_new_file(path, data, (size_t)n, mode, err);
}

/* Opens a PEM input after checking it is a regular file of sane size. */
static int
open_pem(const char *path, const char *what, BIO **bio_r, struct cfr_err *err)
{
    struct stat st;
    *bio_r = NULL;
    if (stat(path, &st) != 0) {
        return CFR_ERR_ERRNO(err, errno == ENOENT ? CFR_ENOTFOUND : CFR_EIO,
                             "%s %s", what, path);
    }
    if (!S_ISREG(st.st_mode) || st.st_size > PEM_FILE_MAX) {
        return CFR_ERR(err, CFR_ECORRUPT,
                       "%s %s: not a regular file of at most %d bytes", what,
                       path, PEM_FILE_MAX);
    }
    *bio_r = BIO_new_file(path, "r");
    if (*bio_r == NULL) {
        return ossl_fail(err, CFR_EIO, path);
    }
    return 0;
}

/* A passphrase callback that refuses, so OpenSSL never prompts on a tty. */
static int
no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

static int
read_cert(const char *path, X509 **x_r, struct cfr_err *err)
{
    BIO *bio = NULL;
    int rc = open_pem(path, "certificate", &bio, err);
    if (rc == 0) {
        *x_r = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL);
        if (*x_r == NULL) {
            rc = ossl_fail(err, CFR_ECORRUPT, path);
        }
    }
    BIO_free(bio);
    return rc;
}

static bool
is_p256(const EVP_PKEY *pkey)
{
    char group[64];
    size_t n = 0;
    if (!EVP_PKEY_is_a(pkey, "EC") ||
        EVP_PKEY_get_group_name(pkey, group, sizeof(group), &n) != 1) {
        return false;
    }
    return strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0;
}

/* ---- names and values --------------------------------------------------- */

const char *
vault_pki_role_name(enum vault_pki_role role)
{
    if ((unsigned)role >= ROLE_COUNT) {
        return NULL;
    }
    return role_names[role];
}

int
vault_pki_role_parse(const char *s, enum vault_pki_role *role_r,
                     struct cfr_err *err)
{
    for (size_t i = 0; s != NULL && i < ROLE_COUNT; i++) {
        if (strcmp(s, role_names[i]) == 0) {
            *role_r = (enum vault_pki_role)i;
            return 0;
        }
    }
    return CFR_ERR(err, CFR_EINVAL,
                   "unknown role '%.40s' (expected agent, restore, auditor, "
                   "admin, vault or operator)",
                   s != NULL ? s : "");
}

int
vault_pki_name_check(const char *what, const char *name, struct cfr_err *err)
{
    size_t n = name != NULL ? strlen(name) : 0;
    if (n == 0 || n >= CFR_RPC_TENANT_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "%s must be 1 to %d bytes long", what,
                       CFR_RPC_TENANT_MAX - 1);
    }
    if (name[0] == '.' || name[0] == '-') {
        return CFR_ERR(err, CFR_EINVAL, "%s '%s' must not start with '%c'",
                       what, name, name[0]);
    }
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok) {
            return CFR_ERR(
                err, CFR_EINVAL,
                "%s may hold only a-z 0-9 . _ - (byte %zu is 0x%02x)", what,
                i + 1, (unsigned)(unsigned char)c);
        }
    }
    return 0;
}

int
vault_pki_days_parse(const char *s, unsigned *days_r, struct cfr_err *err)
{
    char *end = NULL;
    unsigned long v = 0;
    if (s != NULL && s[0] >= '0' && s[0] <= '9') {
        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno != 0) {
            end = NULL;
        }
    }
    if (end == NULL || *end != '\0' || v < 1 || v > VAULT_PKI_DAYS_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "days must be a number from 1 to %d",
                       VAULT_PKI_DAYS_MAX);
    }
    *days_r = (unsigned)v;
    return 0;
}

/* Subject CNs are printable ASCII so that they print and compare plainly. */
static int
cn_check(const char *cn, struct cfr_err *err)
{
    size_t n = strlen(cn);
    if (n == 0 || n > CN_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "name must be 1 to %d bytes long",
                       CN_MAX);
    }
    for (size_t i = 0; i < n; i++) {
        if (cn[i] < 0x20 || cn[i] > 0x7e) {
            return CFR_ERR(err, CFR_EINVAL,
                           "name may hold only printable ASCII characters");
        }
    }
    return 0;
}

/* A host name as TLS matches it: LDH labels, no wildcard, lower-cased. */
static int
dns_normalise(const char *in, char out[VAULT_PKI_DNS_MAX + 1],
              struct cfr_err *err)
{
    size_t n = strlen(in), label = 0;
    if (n == 0 || n > VAULT_PKI_DNS_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "DNS name must be 1 to %d bytes long",
                       VAULT_PKI_DNS_MAX);
    }
    for (size_t i = 0; i <= n; i++) {
        char c = in[i];
        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63 || in[i - 1] == '-') {
                return CFR_ERR(err, CFR_EINVAL,
                               "bad DNS name '%.80s': each label must be 1 to "
                               "63 bytes and not end with '-'",
                               in);
            }
            label = 0;
            out[i] = c;
            continue;
        }
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || (c == '-' && label > 0);
        if (!ok) {
            return CFR_ERR(err, CFR_EINVAL,
                           "bad DNS name '%.80s': only letters, digits, '-' "
                           "and '.' (no wildcards)",
                           in);
        }
        out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
        label++;
    }
    return 0;
}

/* ---- describing a certificate ------------------------------------------ */

static void
name_text(const X509_NAME *name, char *out, size_t size)
{
    out[0] = '\0';
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL) {
        return;
    }
    if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) >= 0) {
        char *data = NULL;
        long n = BIO_get_mem_data(bio, &data);
        if (n > 0 && data != NULL) {
            snprintf(out, size, "%.*s", (int)n, data);
        }
    }
    BIO_free(bio);
}

static void
time_text(const ASN1_TIME *t, char *out, size_t size)
{
    struct tm tm;
    out[0] = '\0';
    if (t != NULL && ASN1_TIME_to_tm(t, &tm) == 1) {
        strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
}

/* Appends "sep""prefix""value" to the SAN text, with unprintable bytes
 * replaced so that a hostile certificate cannot drive the terminal. */
static void
sans_append(struct vault_pki_info *info, const char *prefix,
            const unsigned char *v, size_t n)
{
    size_t len = strlen(info->sans), cap = sizeof(info->sans);
    int w =
        snprintf(info->sans + len, cap - len, "%s%s", len ? ", " : "", prefix);
    if (w < 0 || (size_t)w >= cap - len) {
        return;
    }
    len += (size_t)w;
    for (size_t i = 0; i < n && len + 1 < cap; i++) {
        info->sans[len++] = (v[i] >= 0x20 && v[i] < 0x7f) ? (char)v[i] : '?';
    }
    info->sans[len] = '\0';
}

/* Reads one URI SAN the way the transport does (rpc_server.c peer_fill). */
static void
uri_identity(struct vault_pki_info *info, const unsigned char *v, size_t n,
             int *found)
{
    char uri[CFR_RPC_NAME_MAX], t[CFR_RPC_TENANT_MAX], r[CFR_RPC_ROLE_MAX];
    if (n >= sizeof(uri) || memchr(v, '\0', n) != NULL) {
        return;
    }
    memcpy(uri, v, n);
    uri[n] = '\0';
    if (cfr_rpc_identity_parse(uri, t, r) == 0) {
        if ((*found)++ == 0) {
            memcpy(info->tenant, t, sizeof(t));
            memcpy(info->role, r, sizeof(r));
            size_t olen = strlen(VAULT_PKI_OPERATOR_URI);
            /* The parser accepted the name, which bounds its length. */
            if (strcmp(r, CFR_RPC_ROLE_OPERATOR) == 0 && n > olen &&
                n - olen < sizeof(info->operator_name)) {
                memcpy(info->operator_name, uri + olen, n - olen);
                info->operator_name[n - olen] = '\0';
            }
            size_t plen = strlen(VAULT_PKI_VAULT_URI);
            /* A peer vault's identity (replication): its name, no tenant. */
            if (strcmp(r, CFR_RPC_ROLE_VAULT) == 0 && t[0] == '\0' &&
                n > plen && n - plen < sizeof(info->vault_name)) {
                memcpy(info->vault_name, uri + plen, n - plen);
                info->vault_name[n - plen] = '\0';
            }
        }
    }
}

static int
describe(X509 *x, struct vault_pki_info *info, struct cfr_err *err)
{
    int rc = 0, found = 0;
    GENERAL_NAMES *gens = NULL;
    BIGNUM *bn = NULL;
    char *hex = NULL;

    memset(info, 0, sizeof(*info));
    name_text(X509_get_subject_name(x), info->subject, sizeof(info->subject));
    name_text(X509_get_issuer_name(x), info->issuer, sizeof(info->issuer));
    time_text(X509_get0_notBefore(x), info->not_before,
              sizeof(info->not_before));
    time_text(X509_get0_notAfter(x), info->not_after, sizeof(info->not_after));
    info->is_ca = (X509_get_extension_flags(x) & EXFLAG_CA) != 0;

    uint32_t xku = X509_get_extended_key_usage(x);
    if (xku == UINT32_MAX) {
        snprintf(info->eku, sizeof(info->eku), "(any: no extension)");
    } else {
        snprintf(info->eku, sizeof(info->eku), "%s%s%s",
                 (xku & XKU_SSL_SERVER) ? "serverAuth" : "",
                 (xku & XKU_SSL_SERVER) && (xku & XKU_SSL_CLIENT) ? "," : "",
                 (xku & XKU_SSL_CLIENT) ? "clientAuth" : "");
        if (info->eku[0] == '\0') {
            snprintf(info->eku, sizeof(info->eku), "(neither TLS usage)");
        }
    }

    gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        int type = 0;
        const ASN1_STRING *s = GENERAL_NAME_get0_value(g, &type);
        const unsigned char *v = s != NULL ? ASN1_STRING_get0_data(s) : NULL;
        size_t n = s != NULL ? (size_t)ASN1_STRING_length(s) : 0;
        if (type == GEN_DNS && v != NULL) {
            sans_append(info, "DNS:", v, n);
        } else if (type == GEN_URI && v != NULL) {
            sans_append(info, "URI:", v, n);
            uri_identity(info, v, n, &found);
        } else if (type == GEN_IPADD && v != NULL && (n == 4 || n == 16)) {
            char ip[INET6_ADDRSTRLEN];
            if (inet_ntop(n == 4 ? AF_INET : AF_INET6, v, ip, sizeof(ip))) {
                sans_append(info, "IP:", (const unsigned char *)ip, strlen(ip));
            }
        } else {
            sans_append(info, "(other)", NULL, 0);
        }
    }
    info->has_identity = found == 1;
    info->ambiguous = found > 1;
    if (!info->has_identity) {
        info->tenant[0] = '\0';
        info->role[0] = '\0';
        info->operator_name[0] = '\0';
    }

    bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    hex = bn != NULL ? BN_bn2hex(bn) : NULL;
    if (hex == NULL) {
        rc = ossl_fail(err, CFR_ECORRUPT, "certificate serial");
        goto out;
    }
    snprintf(info->serial, sizeof(info->serial), "%s", hex);

    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (X509_digest(x, EVP_sha256(), md, &mdlen) != 1) {
        rc = ossl_fail(err, CFR_EINTERNAL, "certificate fingerprint");
        goto out;
    }
    for (unsigned int i = 0; i < mdlen && 3 * i + 3 <= sizeof(info->sha256);
         i++) {
        snprintf(info->sha256 + 3 * i, 4, i + 1 < mdlen ? "%02X:" : "%02X",
                 md[i]);
    }
out:
    GENERAL_NAMES_free(gens);
    OPENSSL_free(hex);
    BN_free(bn);
    return rc;
}

int
vault_pki_cert_show(const char *path, struct vault_pki_info *info_r,
                    struct cfr_err *err)
{
    X509 *x = NULL;
    int rc = read_cert(path, &x, err);
    if (rc == 0) {
        rc = describe(x, info_r, err);
    }
    X509_free(x);
    return rc;
}

int
vault_pki_cert_fingerprint(const char *path,
                           char out[CFR_RPC_FINGERPRINT_LEN + 1],
                           struct cfr_err *err)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    X509 *x = NULL;
    int rc;

    out[0] = '\0';
    if ((rc = read_cert(path, &x, err)) != 0) {
        goto out;
    }
    /* X509_digest hashes the DER encoding, as the transport does. */
    if (X509_digest(x, EVP_sha256(), md, &mdlen) != 1 ||
        2 * (size_t)mdlen != CFR_RPC_FINGERPRINT_LEN) {
        rc = ossl_fail(err, CFR_EINTERNAL, "certificate fingerprint");
        goto out;
    }
    for (unsigned int i = 0; i < mdlen; i++) {
        out[2 * i] = digits[md[i] >> 4];
        out[2 * i + 1] = digits[md[i] & 15];
    }
    out[2 * mdlen] = '\0';
out:
    X509_free(x);
    return rc;
}

int
vault_pki_client_check(const char *cert_path, const char *key_path,
                       const char *ca_path, struct vault_pki_info *info_r,
                       struct cfr_err *err)
{
    X509 *x = NULL, *ca = NULL;
    EVP_PKEY *k = NULL;
    BIO *bio = NULL;
    struct stat st;
    int rc;

    if ((rc = read_cert(cert_path, &x, err)) != 0 ||
        (rc = describe(x, info_r, err)) != 0 ||
        (rc = read_cert(ca_path, &ca, err)) != 0) {
        goto out;
    }
    if (X509_check_ca(ca) == 0) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "%s is not a CA certificate", ca_path);
        goto out;
    }
    if ((rc = open_pem(key_path, "key", &bio, err)) != 0) {
        goto out;
    }
    /* A client key others can read may already be someone else's. */
    if (stat(key_path, &st) == 0 && (st.st_mode & 077) != 0) {
        rc = CFR_ERR(err, CFR_EDENIED,
                     "%s is accessible by group or others (mode %04o); "
                     "chmod 600 it",
                     key_path, (unsigned)(st.st_mode & 07777));
        goto out;
    }
    k = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    if (k == NULL) {
        rc = ossl_fail(err, CFR_ECORRUPT, key_path);
        goto out;
    }
    if (X509_check_private_key(x, k) != 1) {
        ERR_clear_error();
        rc = CFR_ERR(err, CFR_ECORRUPT, "%s is not the key of %s", key_path,
                     cert_path);
        goto out;
    }
out:
    EVP_PKEY_free(k);
    BIO_free(bio);
    X509_free(x);
    X509_free(ca);
    return rc;
}

/* ---- building certificates --------------------------------------------- */

static EVP_PKEY *
key_generate(struct cfr_err *err)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (k == NULL) {
        (void)ossl_fail(err, CFR_EINTERNAL, "EC P-256 key generation");
    }
    return k;
}

/* A fresh X.509 v3 certificate: random 128-bit serial, subject, validity
 * and public key set; issuer, extensions and signature still to come. */
static int
cert_new(EVP_PKEY *pub, const char *ou, const char *cn, unsigned days,
         X509 **x_r, struct cfr_err *err)
{
    X509 *x = X509_new();
    BIGNUM *bn = BN_new();
    X509_NAME *name = NULL;
    int rc = 0;

    if (x == NULL || bn == NULL || X509_set_version(x, X509_VERSION_3) != 1) {
        rc = ossl_fail(err, CFR_ENOMEM, "new certificate");
        goto out;
    }
    /* RFC 5280 wants unique positive serials; 128 random bits make a
     * collision negligible without a serial database. */
    do {
        if (BN_rand(bn, 128, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1) {
            rc = ossl_fail(err, CFR_EINTERNAL, "random serial");
            goto out;
        }
    } while (BN_is_zero(bn));
    if (BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL) {
        rc = ossl_fail(err, CFR_EINTERNAL, "serial");
        goto out;
    }
    name = X509_get_subject_name(x);
    if (X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                   (const unsigned char *)SUBJECT_ORG, -1, -1,
                                   0) != 1 ||
        (ou != NULL && X509_NAME_add_entry_by_txt(name, "OU", MBSTRING_UTF8,
                                                  (const unsigned char *)ou, -1,
                                                  -1, 0) != 1) ||
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                   (const unsigned char *)cn, -1, -1, 0) != 1) {
        rc = ossl_fail(err, CFR_EINVAL, "certificate subject");
        goto out;
    }
    if (X509_time_adj_ex(X509_getm_notBefore(x), 0, -BACKDATE_SECONDS, NULL) ==
            NULL ||
        X509_time_adj_ex(X509_getm_notAfter(x), (int)days, 0, NULL) == NULL ||
        X509_set_pubkey(x, pub) != 1) {
        rc = ossl_fail(err, CFR_EINTERNAL, "certificate validity or key");
        goto out;
    }
out:
    BN_free(bn);
    if (rc != 0) {
        X509_free(x);
        x = NULL;
    }
    *x_r = x;
    return rc;
}

/* Adds one extension from OpenSSL's fixed text form; value is ours. */
static int
ext_add(X509 *x, X509 *issuer, int nid, const char *value, struct cfr_err *err)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    int ok = ext != NULL && X509_add_ext(x, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    if (!ok) {
        char what[96];
        snprintf(what, sizeof(what), "extension %s=%s", OBJ_nid2sn(nid), value);
        return ossl_fail(err, CFR_EINTERNAL, what);
    }
    return 0;
}

static int
gen_push(GENERAL_NAMES *gens, int type, const void *v, size_t n,
         struct cfr_err *err)
{
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_STRING *s =
        type == GEN_IPADD ? ASN1_OCTET_STRING_new() : ASN1_IA5STRING_new();
    if (g == NULL || s == NULL || n > INT_MAX ||
        ASN1_STRING_set(s, v, (int)n) != 1) {
        GENERAL_NAME_free(g);
        ASN1_STRING_free(s);
        return ossl_fail(err, CFR_ENOMEM, "subjectAltName");
    }
    GENERAL_NAME_set0_value(g, type, s);
    if (sk_GENERAL_NAME_push(gens, g) <= 0) {
        GENERAL_NAME_free(g);
        return ossl_fail(err, CFR_ENOMEM, "subjectAltName");
    }
    return 0;
}

static int
sign(X509 *x, X509 *issuer, EVP_PKEY *issuer_key, struct cfr_err *err)
{
    X509_NAME *iname = X509_get_subject_name(issuer != NULL ? issuer : x);
    if (X509_set_issuer_name(x, iname) != 1 ||
        X509_sign(x, issuer_key, EVP_sha256()) <= 0) {
        return ossl_fail(err, CFR_EINTERNAL, "signing");
    }
    return 0;
}

static int
key_to_pem(EVP_PKEY *k, BIO **bio_r, struct cfr_err *err)
{
    /* Secure-memory BIO: its buffer is cleansed when freed. */
    BIO *bio = BIO_new(BIO_s_secmem());
    if (bio == NULL ||
        PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL) != 1) {
        BIO_free(bio);
        *bio_r = NULL;
        return ossl_fail(err, CFR_EINTERNAL, "private key encoding");
    }
    *bio_r = bio;
    return 0;
}

static int
cert_to_pem(X509 *x, BIO **bio_r, struct cfr_err *err)
{
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL || PEM_write_bio_X509(bio, x) != 1) {
        BIO_free(bio);
        *bio_r = NULL;
        return ossl_fail(err, CFR_EINTERNAL, "certificate encoding");
    }
    *bio_r = bio;
    return 0;
}

/* ---- CA ----------------------------------------------------------------- */

int
vault_pki_ca_init(const struct vault_pki_ca_opts *opts,
                  struct vault_pki_info *info_r, struct cfr_err *err)
{
    char key_path[PATH_MAX], cert_path[PATH_MAX];
    const char *cn = opts->name != NULL ? opts->name : DEFAULT_CA_NAME;
    unsigned days = opts->days != 0 ? opts->days : VAULT_PKI_CA_DAYS;
    EVP_PKEY *k = NULL;
    X509 *x = NULL;
    BIO *kbio = NULL, *cbio = NULL;
    bool key_written = false;
    struct stat st;
    int rc = 0;

    if (opts->dir == NULL || opts->dir[0] == '\0') {
        rc = CFR_ERR(err, CFR_EINVAL, "a CA directory is required");
        goto out;
    }
    if (days > VAULT_PKI_DAYS_MAX) {
        rc = CFR_ERR(err, CFR_EINVAL, "days must be from 1 to %d",
                     VAULT_PKI_DAYS_MAX);
        goto out;
    }
    if ((rc = cn_check(cn, err)) != 0 ||
        (rc = path_join(key_path, sizeof(key_path), opts->dir, "/ca.key",
                        err)) != 0 ||
        (rc = path_join(cert_path, sizeof(cert_path), opts->dir, "/ca.pem",
                        err)) != 0) {
        goto out;
    }
    if (mkdir(opts->dir, 0700) != 0 && errno != EEXIST) {
        rc = CFR_ERR_ERRNO(err, CFR_EIO, "cannot create %s", opts->dir);
        goto out;
    }
    if (stat(opts->dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        rc = CFR_ERR(err, CFR_EINVAL, "%s is not a directory", opts->dir);
        goto out;
    }
    if (path_exists(key_path) || path_exists(cert_path)) {
        rc = CFR_ERR(err, CFR_EEXIST,
                     "a CA already exists in %s; refusing to overwrite it",
                     opts->dir);
        goto out;
    }
    if ((k = key_generate(err)) == NULL) {
        rc = err != NULL ? err->code : CFR_EINTERNAL;
        goto out;
    }
    if ((rc = cert_new(k, NULL, cn, days, &x, err)) != 0) {
        goto out;
    }
    /* pathlen:0: this CA signs leaves only, never another CA. */
    if ((rc = ext_add(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0",
                      err)) != 0 ||
        (rc = ext_add(x, x, NID_key_usage, "critical,keyCertSign,cRLSign",
                      err)) != 0 ||
        (rc = ext_add(x, x, NID_subject_key_identifier, "hash", err)) != 0 ||
        (rc = sign(x, NULL, k, err)) != 0) {
        goto out;
    }
    if ((rc = describe(x, info_r, err)) != 0 ||
        (rc = key_to_pem(k, &kbio, err)) != 0 ||
        (rc = cert_to_pem(x, &cbio, err)) != 0) {
        goto out;
    }
    if ((rc = write_bio(key_path, kbio, 0600, err)) != 0) {
        goto out;
    }
    key_written = true;
    rc = write_bio(cert_path, cbio, 0644, err);
out:
    if (rc != 0 && key_written) {
        (void)unlink(key_path);
    }
    BIO_free(kbio);
    BIO_free(cbio);
    X509_free(x);
    EVP_PKEY_free(k);
    return rc;
}

/* Loads and checks the CA: a CA certificate, still valid, with its key. */
static int
ca_load(const char *dir, X509 **x_r, EVP_PKEY **k_r, struct cfr_err *err)
{
    char key_path[PATH_MAX], cert_path[PATH_MAX];
    BIO *bio = NULL;
    struct stat st;
    int rc = 0;

    *x_r = NULL;
    *k_r = NULL;
    if ((rc = path_join(key_path, sizeof(key_path), dir, "/ca.key", err)) !=
            0 ||
        (rc = path_join(cert_path, sizeof(cert_path), dir, "/ca.pem", err)) !=
            0 ||
        (rc = read_cert(cert_path, x_r, err)) != 0) {
        goto out;
    }
    if (X509_check_ca(*x_r) != 1) {
        rc =
            CFR_ERR(err, CFR_ECORRUPT, "%s is not a CA certificate", cert_path);
        goto out;
    }
    if (X509_cmp_current_time(X509_get0_notAfter(*x_r)) <= 0) {
        rc = CFR_ERR(err, CFR_EINVAL, "the CA in %s has expired", dir);
        goto out;
    }
    if ((rc = open_pem(key_path, "CA key", &bio, err)) != 0) {
        goto out;
    }
    /* Like ssh with its keys: a CA key others can read is already lost. */
    if (stat(key_path, &st) == 0 && (st.st_mode & 077) != 0) {
        rc = CFR_ERR(err, CFR_EDENIED,
                     "%s is accessible by group or others (mode %04o); "
                     "chmod 600 it",
                     key_path, (unsigned)(st.st_mode & 07777));
        goto out;
    }
    *k_r = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    if (*k_r == NULL) {
        rc = ossl_fail(err, CFR_ECORRUPT, key_path);
        goto out;
    }
    if (X509_check_private_key(*x_r, *k_r) != 1) {
        rc = ossl_fail(err, CFR_ECORRUPT, "ca.key does not match ca.pem");
        goto out;
    }
out:
    BIO_free(bio);
    if (rc != 0) {
        X509_free(*x_r);
        EVP_PKEY_free(*k_r);
        *x_r = NULL;
        *k_r = NULL;
    }
    return rc;
}

/* The public key of a CSR whose own signature verifies; nothing else. */
static int
csr_pubkey(const char *path, EVP_PKEY **k_r, struct cfr_err *err)
{
    BIO *bio = NULL;
    X509_REQ *req = NULL;
    EVP_PKEY *k = NULL;
    int rc = open_pem(path, "CSR", &bio, err);
    if (rc != 0) {
        goto out;
    }
    req = PEM_read_bio_X509_REQ(bio, NULL, no_passphrase, NULL);
    if (req == NULL) {
        rc = ossl_fail(err, CFR_ECORRUPT, path);
        goto out;
    }
    k = X509_REQ_get_pubkey(req);
    if (k == NULL) {
        rc = ossl_fail(err, CFR_ECORRUPT, "CSR public key");
        goto out;
    }
    if (X509_REQ_verify(req, k) != 1) {
        rc = ossl_fail(err, CFR_ECORRUPT, "CSR signature does not verify");
        goto out;
    }
    if (!is_p256(k)) {
        rc = CFR_ERR(err, CFR_EINVAL, "%s: the key must be EC P-256", path);
        goto out;
    }
out:
    if (rc != 0) {
        EVP_PKEY_free(k);
        k = NULL;
    }
    X509_REQ_free(req);
    BIO_free(bio);
    *k_r = k;
    return rc;
}

/* Checks the options that do not need the CA. */
static int
issue_check(const struct vault_pki_issue_opts *o, char *uri, size_t uri_size,
            const char **cn_r, const char **ou_r, char *vname,
            struct cfr_err *err)
{
    const char *role = vault_pki_role_name(o->role);
    char dns[VAULT_PKI_DNS_MAX + 1];
    int rc = 0;

    if (role == NULL) {
        return CFR_ERR(err, CFR_EINVAL, "unknown role");
    }
    if (o->ca_dir == NULL || o->out_prefix == NULL || o->out_prefix[0] == 0) {
        return CFR_ERR(err, CFR_EINVAL,
                       "a CA directory and an output "
                       "prefix are required");
    }
    if (o->days > VAULT_PKI_DAYS_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "days must be from 1 to %d",
                       VAULT_PKI_DAYS_MAX);
    }
    if (o->ndns + o->nips > VAULT_PKI_SANS_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "at most %d DNS and IP names",
                       VAULT_PKI_SANS_MAX);
    }
    for (size_t i = 0; i < o->ndns; i++) {
        if ((rc = dns_normalise(o->dns[i], dns, err)) != 0) {
            return rc;
        }
    }
    for (size_t i = 0; i < o->nips; i++) {
        unsigned char a[16];
        if (inet_pton(AF_INET, o->ips[i], a) != 1 &&
            inet_pton(AF_INET6, o->ips[i], a) != 1) {
            return CFR_ERR(err, CFR_EINVAL,
                           "bad IP address '%.64s' (IPv4 or IPv6 literal)",
                           o->ips[i]);
        }
    }
    if (o->role == VAULT_PKI_OPERATOR) {
        char t[CFR_RPC_TENANT_MAX], r[CFR_RPC_ROLE_MAX];
        /* An operator acts on the vault itself, never for a tenant: a
         * tenant in its certificate would suggest a scope it does not have. */
        if (o->tenant != NULL) {
            return CFR_ERR(err, CFR_EINVAL,
                           "role operator acts on the vault, not for a "
                           "tenant: no --tenant");
        }
        if (o->ndns + o->nips > 0) {
            return CFR_ERR(err, CFR_EINVAL,
                           "--dns and --ip apply to role vault only");
        }
        if (o->name == NULL) {
            return CFR_ERR(err, CFR_EINVAL,
                           "role operator needs --name (the operator's name; "
                           "approvals tell operators apart by it)");
        }
        if ((rc = vault_pki_name_check("operator name", o->name, err)) != 0) {
            return rc;
        }
        snprintf(uri, uri_size, "%s%s", VAULT_PKI_OPERATOR_URI, o->name);
        /* Invariant 1, as for the tenant roles. */
        if (cfr_rpc_identity_parse(uri, t, r) != 0 || t[0] != '\0' ||
            strcmp(r, CFR_RPC_ROLE_OPERATOR) != 0) {
            return CFR_ERR(err, CFR_EINTERNAL,
                           "identity %s does not parse back", uri);
        }
        *cn_r = o->name;
        *ou_r = NULL;
        return 0;
    }
    if (o->role != VAULT_PKI_VAULT) {
        char t[CFR_RPC_TENANT_MAX], r[CFR_RPC_ROLE_MAX];
        if (o->tenant == NULL) {
            return CFR_ERR(err, CFR_EINVAL, "role %s needs --tenant", role);
        }
        if (o->ndns + o->nips > 0) {
            return CFR_ERR(err, CFR_EINVAL,
                           "--dns and --ip apply to role vault only");
        }
        if ((rc = vault_pki_name_check("tenant", o->tenant, err)) != 0) {
            return rc;
        }
        /*
         * --name names the person or host holding the certificate. It
         * becomes the CN, which the vault uses to tell two admins of one
         * tenant apart when one approves the other's destructive request.
         */
        if (o->name != NULL &&
            (rc = vault_pki_name_check("holder name", o->name, err)) != 0) {
            return rc;
        }
        snprintf(uri, uri_size, "coffer://tenant/%s/role/%s", o->tenant, role);
        /* Invariant 1: the server's parser must read back what we meant. */
        if (cfr_rpc_identity_parse(uri, t, r) != 0 ||
            strcmp(t, o->tenant) != 0 || strcmp(r, role) != 0) {
            return CFR_ERR(err, CFR_EINTERNAL,
                           "identity %s does not parse back", uri);
        }
        *cn_r = o->name != NULL ? o->name : role;
        *ou_r = o->tenant;
        return 0;
    }
    if (o->tenant != NULL) {
        return CFR_ERR(err, CFR_EINVAL,
                       "role vault serves every tenant: no --tenant");
    }
    if (o->ndns + o->nips == 0) {
        return CFR_ERR(err, CFR_EINVAL,
                       "role vault needs at least one --dns or --ip");
    }
    if (o->name != NULL) {
        snprintf(vname, CFR_RPC_TENANT_MAX, "%s", o->name);
        if ((rc = vault_pki_name_check("vault name", o->name, err)) != 0) {
            return rc;
        }
    } else if (o->ndns > 0) {
        (void)dns_normalise(o->dns[0], dns, NULL);
        if (strlen(dns) >= CFR_RPC_TENANT_MAX) {
            return CFR_ERR(err, CFR_EINVAL,
                           "first DNS name too long for a vault name; give "
                           "--name");
        }
        memcpy(vname, dns, strlen(dns) + 1);
        if ((rc = vault_pki_name_check("vault name", vname, err)) != 0) {
            return rc;
        }
    } else {
        return CFR_ERR(err, CFR_EINVAL,
                       "role vault with only --ip needs --name");
    }
    snprintf(uri, uri_size, "%s%s", VAULT_PKI_VAULT_URI, vname);
    *cn_r = vname;
    *ou_r = NULL;
    return 0;
}

static int
san_build(const struct vault_pki_issue_opts *o, const char *uri,
          GENERAL_NAMES **gens_r, struct cfr_err *err)
{
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    char dns[VAULT_PKI_DNS_MAX + 1];
    int rc = 0;

    if (gens == NULL) {
        rc = ossl_fail(err, CFR_ENOMEM, "subjectAltName");
        goto out;
    }
    for (size_t i = 0; i < o->ndns && rc == 0; i++) {
        if ((rc = dns_normalise(o->dns[i], dns, err)) == 0) {
            rc = gen_push(gens, GEN_DNS, dns, strlen(dns), err);
        }
    }
    for (size_t i = 0; i < o->nips && rc == 0; i++) {
        unsigned char a[16];
        if (inet_pton(AF_INET, o->ips[i], a) == 1) {
            rc = gen_push(gens, GEN_IPADD, a, 4, err);
        } else if (inet_pton(AF_INET6, o->ips[i], a) == 1) {
            rc = gen_push(gens, GEN_IPADD, a, 16, err);
        } else {
            rc = CFR_ERR(err, CFR_EINVAL, "bad IP address");
        }
    }
    if (rc == 0) {
        rc = gen_push(gens, GEN_URI, uri, strlen(uri), err);
    }
out:
    if (rc != 0) {
        GENERAL_NAMES_free(gens);
        gens = NULL;
    }
    *gens_r = gens;
    return rc;
}

int
vault_pki_cert_issue(const struct vault_pki_issue_opts *opts,
                     struct vault_pki_info *info_r, struct cfr_err *err)
{
    char uri[CFR_RPC_NAME_MAX], vname[CFR_RPC_TENANT_MAX] = "";
    char key_path[PATH_MAX], cert_path[PATH_MAX];
    const char *cn = NULL, *ou = NULL;
    unsigned days = opts->days != 0 ? opts->days : VAULT_PKI_LEAF_DAYS;
    X509 *ca = NULL, *x = NULL;
    EVP_PKEY *ca_key = NULL, *k = NULL;
    GENERAL_NAMES *gens = NULL;
    BIO *kbio = NULL, *cbio = NULL;
    bool key_written = false;
    int rc = 0;

    if ((rc = issue_check(opts, uri, sizeof(uri), &cn, &ou, vname, err)) != 0 ||
        (rc = path_join(key_path, sizeof(key_path), opts->out_prefix, ".key",
                        err)) != 0 ||
        (rc = path_join(cert_path, sizeof(cert_path), opts->out_prefix, ".pem",
                        err)) != 0) {
        goto out;
    }
    /* Early and friendly; write_new_file still refuses atomically. */
    if (path_exists(cert_path) ||
        (opts->csr_path == NULL && path_exists(key_path))) {
        rc = CFR_ERR(err, CFR_EEXIST,
                     "%s.pem or .key exists; refusing to "
                     "overwrite",
                     opts->out_prefix);
        goto out;
    }
    if ((rc = ca_load(opts->ca_dir, &ca, &ca_key, err)) != 0) {
        goto out;
    }
    if (opts->csr_path != NULL) {
        rc = csr_pubkey(opts->csr_path, &k, err);
    } else if ((k = key_generate(err)) == NULL) {
        rc = err != NULL ? err->code : CFR_EINTERNAL;
    }
    if (rc != 0) {
        goto out;
    }
    if ((rc = cert_new(k, ou, cn, days, &x, err)) != 0) {
        goto out;
    }
    if (ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(ca)) > 0) {
        char until[VAULT_PKI_TIME_MAX];
        time_text(X509_get0_notAfter(ca), until, sizeof(until));
        rc = CFR_ERR(err, CFR_EINVAL,
                     "the certificate would outlive its CA (valid until %s); "
                     "use fewer --days",
                     until);
        goto out;
    }
    const char *eku =
        opts->role == VAULT_PKI_VAULT ? "serverAuth,clientAuth" : "clientAuth";
    if ((rc = ext_add(x, ca, NID_basic_constraints, "critical,CA:FALSE",
                      err)) != 0 ||
        (rc = ext_add(x, ca, NID_key_usage, "critical,digitalSignature",
                      err)) != 0 ||
        (rc = ext_add(x, ca, NID_ext_key_usage, eku, err)) != 0 ||
        (rc = ext_add(x, ca, NID_subject_key_identifier, "hash", err)) != 0 ||
        (rc = ext_add(x, ca, NID_authority_key_identifier, "keyid", err)) !=
            0 ||
        (rc = san_build(opts, uri, &gens, err)) != 0) {
        goto out;
    }
    if (X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0,
                          X509V3_ADD_DEFAULT) != 1) {
        rc = ossl_fail(err, CFR_EINTERNAL, "subjectAltName");
        goto out;
    }
    if ((rc = sign(x, ca, ca_key, err)) != 0 ||
        (rc = describe(x, info_r, err)) != 0 ||
        (rc = cert_to_pem(x, &cbio, err)) != 0) {
        goto out;
    }
    if (opts->csr_path == NULL) {
        if ((rc = key_to_pem(k, &kbio, err)) != 0 ||
            (rc = write_bio(key_path, kbio, 0600, err)) != 0) {
            goto out;
        }
        key_written = true;
    }
    rc = write_bio(cert_path, cbio, 0644, err);
out:
    if (rc != 0 && key_written) {
        (void)unlink(key_path);
    }
    GENERAL_NAMES_free(gens);
    BIO_free(kbio);
    BIO_free(cbio);
    X509_free(x);
    X509_free(ca);
    EVP_PKEY_free(k);
    EVP_PKEY_free(ca_key);
    return rc;
}
