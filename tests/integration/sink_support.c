/*
 * sink_support.c - the HTTP listener and SMTP sink of sink_support.h.
 *
 * One thread per sink serves one connection at a time: enough for
 * core/notify, whose single worker delivers one target after another, and
 * it keeps the recording free of races. The thread waits in poll() on the
 * listening socket and a wake-up pipe, so sink_stop never depends on a
 * client going away.
 */
#include "sink_support.h"

#include <arpa/inet.h>  /* htonl */
#include <errno.h>      /* errno */
#include <fcntl.h>      /* fcntl */
#include <netinet/in.h> /* sockaddr_in */
#include <poll.h>       /* poll */
#include <pthread.h>    /* the server thread */
#include <stdio.h>      /* fprintf */
#include <stdlib.h>     /* calloc */
#include <string.h>     /* memcpy */
#include <strings.h>    /* strncasecmp */
#include <sys/socket.h> /* socket */
#include <sys/time.h>   /* struct timeval */
#include <time.h>       /* clock_gettime */
#include <unistd.h>     /* close */

#define HEAD_MAX     65536     /* HTTP request line and headers */
#define BODY_MAX     (1 << 20) /* HTTP body or SMTP DATA */
#define LINE_MAX_LEN 4096      /* one SMTP command line */
#define IO_TIMEOUT_S 5         /* per read: a stuck client is dropped */

struct sink {
    enum sink_kind kind;
    int status; /* HTTP answer */
    int fd;
    int wake[2];
    int port;
    pthread_t th;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    size_t count;
    struct sink_msg msgs[SINK_MSGS_MAX];
};

/* A buffered reader over one connection. */
struct conn {
    int fd;
    char buf[8192];
    size_t len, pos;
};

static int
conn_fill(struct conn *c)
{
    if (c->pos < c->len) {
        return 1;
    }
    ssize_t n;
    do {
        n = read(c->fd, c->buf, sizeof(c->buf));
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
        return 0; /* EOF, error or the timeout */
    }
    c->len = (size_t)n;
    c->pos = 0;
    return 1;
}

/* One line without its CRLF (or LF) into out; false at EOF or too long. */
static bool
conn_line(struct conn *c, char *out, size_t n, size_t *len_r)
{
    size_t len = 0;
    for (;;) {
        if (!conn_fill(c)) {
            return false;
        }
        char ch = c->buf[c->pos++];
        if (ch == '\n') {
            if (len > 0 && out[len - 1] == '\r') {
                len--;
            }
            out[len] = '\0';
            *len_r = len;
            return true;
        }
        if (len + 1 >= n) {
            return false;
        }
        out[len++] = ch;
    }
}

static bool
conn_bytes(struct conn *c, char *out, size_t n)
{
    size_t got = 0;
    while (got < n) {
        if (!conn_fill(c)) {
            return false;
        }
        size_t k = c->len - c->pos;
        if (k > n - got) {
            k = n - got;
        }
        memcpy(out + got, c->buf + c->pos, k);
        c->pos += k;
        got += k;
    }
    return true;
}

static void
send_all(int fd, const char *s)
{
    size_t len = strlen(s), off = 0;
    while (off < len) {
        ssize_t n = write(fd, s + off, len - off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return;
        }
        off += (size_t)n;
    }
}

/* Copies s into out[n], cut when too long (recorded names are bounded). */
static void
copy_cut(char *out, size_t n, const char *s)
{
    size_t len = strnlen(s, n - 1);
    memcpy(out, s, len);
    out[len] = '\0';
}

/* Keeps m (taking its buffers) and wakes waiters. */
static void
record(struct sink *s, struct sink_msg *m)
{
    pthread_mutex_lock(&s->lock);
    if (s->count < SINK_MSGS_MAX) {
        s->msgs[s->count] = *m;
        memset(m, 0, sizeof(*m));
    }
    s->count++;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    free(m->headers);
    free(m->body);
    memset(m, 0, sizeof(*m));
}

bool
sink_header(const struct sink_msg *m, const char *name, char *out, size_t n)
{
    size_t nl = strlen(name);
    const char *p = m->headers;
    while (p != NULL && *p != '\0') {
        const char *eol = strstr(p, "\r\n");
        size_t ll = eol != NULL ? (size_t)(eol - p) : strlen(p);
        if (ll > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ' || *v == '\t') {
                v++;
            }
            size_t vl = ll - (size_t)(v - p);
            if (vl >= n) {
                vl = n - 1;
            }
            memcpy(out, v, vl);
            out[vl] = '\0';
            return true;
        }
        p = eol != NULL ? eol + 2 : NULL;
    }
    return false;
}

static void
serve_http(struct sink *s, struct conn *c)
{
    struct sink_msg m;
    char line[LINE_MAX_LEN], *sp, *sp2, val[64];
    size_t len, hlen = 0;
    unsigned long long clen = 0;

    memset(&m, 0, sizeof(m));
    m.kind = SINK_HTTP;
    if (!conn_line(c, line, sizeof(line), &len) ||
        (sp = strchr(line, ' ')) == NULL ||
        (sp2 = strchr(sp + 1, ' ')) == NULL) {
        return;
    }
    *sp = '\0';
    *sp2 = '\0';
    copy_cut(m.method, sizeof(m.method), line);
    copy_cut(m.path, sizeof(m.path), sp + 1);
    if ((m.headers = calloc(1, HEAD_MAX)) == NULL) {
        return;
    }
    for (;;) {
        if (!conn_line(c, line, sizeof(line), &len)) {
            goto out;
        }
        if (len == 0) {
            break;
        }
        if (hlen + len + 3 > HEAD_MAX) {
            goto out;
        }
        memcpy(m.headers + hlen, line, len);
        memcpy(m.headers + hlen + len, "\r\n", 3);
        hlen += len + 2;
    }
    if (sink_header(&m, "Content-Length", val, sizeof(val))) {
        char *end;
        clen = strtoull(val, &end, 10);
        if (*end != '\0' || clen > BODY_MAX) {
            send_all(c->fd, "HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n"
                            "Connection: close\r\n\r\n");
            goto out;
        }
    }
    if (sink_header(&m, "Expect", val, sizeof(val)) &&
        strcasecmp(val, "100-continue") == 0) {
        send_all(c->fd, "HTTP/1.1 100 Continue\r\n\r\n");
    }
    if ((m.body = calloc(1, (size_t)clen + 1)) == NULL ||
        !conn_bytes(c, m.body, (size_t)clen)) {
        goto out;
    }
    m.body_len = (size_t)clen;
    record(s, &m);
    snprintf(line, sizeof(line),
             "HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
             s->status, s->status < 300 ? "OK" : "Error");
    send_all(c->fd, line);
    return;
out:
    free(m.headers);
    free(m.body);
}

/* The address inside <...> after "MAIL FROM:" or "RCPT TO:". */
static void
envelope_addr(const char *arg, char *out, size_t n)
{
    const char *lt = strchr(arg, '<'), *gt;
    if (lt == NULL || (gt = strchr(lt, '>')) == NULL) {
        copy_cut(out, n, arg);
        return;
    }
    size_t len = (size_t)(gt - lt - 1);
    if (len >= n) {
        len = n - 1;
    }
    memcpy(out, lt + 1, len);
    out[len] = '\0';
}

static bool
smtp_data(struct conn *c, struct sink_msg *m)
{
    char line[LINE_MAX_LEN];
    size_t len, cap = 65536;
    if ((m->body = calloc(1, cap)) == NULL) {
        return false;
    }
    for (;;) {
        if (!conn_line(c, line, sizeof(line), &len)) {
            return false;
        }
        if (len == 1 && line[0] == '.') {
            return true;
        }
        const char *p = line;
        if (line[0] == '.') { /* dot-stuffing (RFC 5321 4.5.2) */
            p++;
            len--;
        }
        if (m->body_len + len + 3 > cap) {
            if (cap >= BODY_MAX) {
                return false;
            }
            char *nb = realloc(m->body, cap * 2);
            if (nb == NULL) {
                return false;
            }
            m->body = nb;
            cap *= 2;
        }
        memcpy(m->body + m->body_len, p, len);
        memcpy(m->body + m->body_len + len, "\r\n", 3);
        m->body_len += len + 2;
    }
}

static void
serve_smtp(struct sink *s, struct conn *c)
{
    struct sink_msg m;
    char line[LINE_MAX_LEN], helo[256] = "";
    size_t len;

    memset(&m, 0, sizeof(m));
    send_all(c->fd, "220 sink.test ESMTP coffer test sink\r\n");
    while (conn_line(c, line, sizeof(line), &len)) {
        if (strncasecmp(line, "EHLO", 4) == 0 ||
            strncasecmp(line, "HELO", 4) == 0) {
            copy_cut(helo, sizeof(helo), len > 5 ? line + 5 : "");
            send_all(c->fd, line[0] == 'E' || line[0] == 'e'
                                ? "250-sink.test\r\n250 8BITMIME\r\n"
                                : "250 sink.test\r\n");
        } else if (strncasecmp(line, "MAIL FROM:", 10) == 0) {
            free(m.body);
            memset(&m, 0, sizeof(m));
            m.kind = SINK_SMTP;
            copy_cut(m.helo, sizeof(m.helo), helo);
            envelope_addr(line + 10, m.mail_from, sizeof(m.mail_from));
            send_all(c->fd, "250 OK\r\n");
        } else if (strncasecmp(line, "RCPT TO:", 8) == 0) {
            if (m.n_rcpt >= SINK_RCPT_MAX) {
                send_all(c->fd, "452 too many recipients\r\n");
                continue;
            }
            envelope_addr(line + 8, m.rcpt[m.n_rcpt], sizeof(m.rcpt[0]));
            m.n_rcpt++;
            send_all(c->fd, "250 OK\r\n");
        } else if (strcasecmp(line, "DATA") == 0) {
            if (m.n_rcpt == 0) {
                send_all(c->fd, "503 no recipients\r\n");
                continue;
            }
            send_all(c->fd, "354 go ahead\r\n");
            if (!smtp_data(c, &m)) {
                break;
            }
            record(s, &m);
            send_all(c->fd, "250 OK queued\r\n");
        } else if (strcasecmp(line, "RSET") == 0) {
            free(m.body);
            memset(&m, 0, sizeof(m));
            send_all(c->fd, "250 OK\r\n");
        } else if (strcasecmp(line, "NOOP") == 0) {
            send_all(c->fd, "250 OK\r\n");
        } else if (strcasecmp(line, "QUIT") == 0) {
            send_all(c->fd, "221 bye\r\n");
            break;
        } else {
            send_all(c->fd, "502 not implemented\r\n");
        }
    }
    free(m.body);
}

static void *
sink_main(void *arg)
{
    struct sink *s = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = s->fd, .events = POLLIN},
                              {.fd = s->wake[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        if (p[1].revents != 0) {
            break;
        }
        if ((p[0].revents & POLLIN) == 0) {
            continue;
        }
        int fd = accept(s->fd, NULL, NULL);
        if (fd < 0) {
            continue;
        }
        struct timeval tv = {IO_TIMEOUT_S, 0};
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        struct conn *c = calloc(1, sizeof(*c));
        if (c != NULL) {
            c->fd = fd;
            if (s->kind == SINK_HTTP) {
                serve_http(s, c);
            } else {
                serve_smtp(s, c);
            }
            free(c);
        }
        close(fd);
    }
    return NULL;
}

static struct sink *
sink_start(enum sink_kind kind, int status)
{
    struct sockaddr_in a;
    socklen_t al = sizeof(a);
    pthread_condattr_t ca;
    struct sink *s = calloc(1, sizeof(*s));

    if (s == NULL) {
        return NULL;
    }
    s->kind = kind;
    s->status = status;
    s->fd = -1;
    s->wake[0] = s->wake[1] = -1;
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if ((s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
        bind(s->fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(s->fd, 16) != 0 ||
        getsockname(s->fd, (struct sockaddr *)&a, &al) != 0 ||
        pipe(s->wake) != 0) {
        fprintf(stderr, "sink: cannot listen: %s\n", strerror(errno));
        sink_stop(s);
        return NULL;
    }
    s->port = ntohs(a.sin_port);
    if (pthread_create(&s->th, NULL, sink_main, s) != 0) {
        fprintf(stderr, "sink: cannot start its thread\n");
        sink_stop(s);
        return NULL;
    }
    s->started = true;
    return s;
}

struct sink *
sink_http_start(int status)
{
    return sink_start(SINK_HTTP, status);
}

struct sink *
sink_smtp_start(void)
{
    return sink_start(SINK_SMTP, 250);
}

int
sink_port(const struct sink *s)
{
    return s->port;
}

size_t
sink_count(struct sink *s)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->count;
    pthread_mutex_unlock(&s->lock);
    return n;
}

bool
sink_wait(struct sink *s, size_t n, int timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->lock);
    while (s->count < n) {
        if (pthread_cond_timedwait(&s->cond, &s->lock, &ts) == ETIMEDOUT) {
            break;
        }
    }
    bool ok = s->count >= n;
    pthread_mutex_unlock(&s->lock);
    return ok;
}

const struct sink_msg *
sink_get(struct sink *s, size_t i)
{
    pthread_mutex_lock(&s->lock);
    const struct sink_msg *m =
        i < s->count && i < SINK_MSGS_MAX ? &s->msgs[i] : NULL;
    pthread_mutex_unlock(&s->lock);
    return m;
}

void
sink_stop(struct sink *s)
{
    if (s == NULL) {
        return;
    }
    if (s->started) {
        (void)!write(s->wake[1], "x", 1);
        pthread_join(s->th, NULL);
    }
    if (s->fd >= 0) {
        close(s->fd);
    }
    if (s->wake[0] >= 0) {
        close(s->wake[0]);
        close(s->wake[1]);
    }
    for (size_t i = 0; i < SINK_MSGS_MAX; i++) {
        free(s->msgs[i].headers);
        free(s->msgs[i].body);
    }
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
