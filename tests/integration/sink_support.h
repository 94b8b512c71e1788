/*
 * sink_support.h - notification sinks for integration tests: an HTTP/1.1
 * listener that records every request (a webhook receiver) and an SMTP
 * sink that speaks enough SMTP for libcurl (EHLO/HELO, MAIL FROM, RCPT TO,
 * DATA, RSET, NOOP, QUIT) and records every mail, each on 127.0.0.1 on a
 * port the kernel picks, served by its own thread.
 *
 *   struct sink *hook = sink_http_start(200);
 *   ... configure "http://127.0.0.1:<sink_port(hook)>/hook" ...
 *   assert_true(sink_wait(hook, 1, 10000));
 *   const struct sink_msg *m = sink_get(hook, 0);   // m->body, m->path
 *   sink_stop(hook);
 *
 * Invariants:
 *  1. Every wait is bounded: sink_wait polls a condition variable with a
 *     deadline; the server thread reads with a per-connection timeout, so
 *     a stuck client cannot hang it; sink_stop always returns.
 *  2. At most SINK_MSGS_MAX messages are kept (more are counted in
 *     sink_count but not kept); a kept message never moves, so a pointer
 *     from sink_get stays valid until sink_stop.
 *  3. Only what the peer sent is recorded: requests and mails are kept
 *     byte for byte (bodies NUL-terminated for convenience; SMTP DATA with
 *     dot-stuffing undone and the final "." line removed).
 *
 * Thread safety: sink_count, sink_wait and sink_get may be called from any
 * thread while the server runs; sink_stop from one thread, once.
 */
#ifndef SINK_SUPPORT_H
#define SINK_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>

#define SINK_MSGS_MAX 64
#define SINK_RCPT_MAX 16

enum sink_kind { SINK_HTTP, SINK_SMTP };

struct sink_msg {
    enum sink_kind kind;
    /* HTTP: the request line and header block ("Name: value\r\n"...). */
    char method[16];
    char path[512];
    char *headers;
    /* SMTP: the envelope (addresses without the angle brackets) and the
       HELO/EHLO name the client gave. */
    char helo[256];
    char mail_from[256];
    char rcpt[SINK_RCPT_MAX][256];
    size_t n_rcpt;
    /* HTTP body or SMTP DATA (headers and text of the mail). */
    char *body;
    size_t body_len;
};

struct sink;

/* Starts an HTTP listener answering every request with status (200, 500).
   Returns NULL (message on stderr) when it cannot listen. */
struct sink *sink_http_start(int status);
/* Starts an SMTP sink; NULL as above. */
struct sink *sink_smtp_start(void);

int sink_port(const struct sink *s);
/* Messages received so far (kept or not). */
size_t sink_count(struct sink *s);
/* Waits until at least n messages arrived, at most timeout_ms. */
bool sink_wait(struct sink *s, size_t n, int timeout_ms);
/* Message i (< SINK_MSGS_MAX and < sink_count), or NULL. */
const struct sink_msg *sink_get(struct sink *s, size_t i);
/* The value of header name (case-insensitive) of an HTTP message into out,
   or false when absent. */
bool sink_header(const struct sink_msg *m, const char *name, char *out,
                 size_t n);
/* Stops the thread, closes the socket and frees everything; NULL is fine. */
void sink_stop(struct sink *s);

#endif /* SINK_SUPPORT_H */
