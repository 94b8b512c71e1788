/*
 * agent_run_support.h - helpers for integration tests that drive the real
 * coffer-agent and coffer-restore programs against vaults started with
 * vault_support.h: running a program with bounded waits, writing their
 * configurations, reading fields of their JSON output and of a vault's
 * statistics file, generating a corpus with bench/gen_corpus, and
 * comparing a restored tree with its source.
 *
 * Every wait is bounded; nothing here calls cmocka, so a helper may run on
 * any thread and reports problems through its return value (and a reason
 * string where one helps).
 */
#ifndef AGENT_RUN_SUPPORT_H
#define AGENT_RUN_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h> /* pid_t, mode_t */

/* Whole file into an owned NUL-terminated buffer (cfr_free); NULL when it
 * cannot be read. *len_r (may be NULL) gets the length. */
char *ars_slurp(const char *path, size_t *len_r);
/* Writes path (created or truncated) with mode. 0 or -1. */
int ars_write(const char *path, const void *data, size_t len, mode_t mode);
/* mkdir -p path (mode 0700 for what it makes). 0 or -1. */
int ars_mkdirs(const char *path);

/*
 * Starts bin with args (NULL-terminated, after argv[0]), stdin from
 * /dev/null, stdout into out_path and stderr into err_path (NULL: the
 * test's own), in a new session (no controlling terminal). Returns the
 * pid or -1.
 */
pid_t ars_spawn(const char *bin, const char *const *args, const char *out_path,
                const char *err_path);
/* Non-blocking: the exit code (128 + signal when killed) once pid ended,
 * else -1. */
int ars_poll(pid_t pid);
/* Waits up to timeout_ms; on timeout kills pid (SIGKILL), reaps it and
 * returns -1. Else as ars_poll. */
int ars_wait(pid_t pid, int64_t timeout_ms);
/* ars_spawn then ars_wait. */
int ars_run(const char *bin, const char *const *args, const char *out_path,
            const char *err_path, int64_t timeout_ms);

/* What a program run with ars_capture left: its exit code (as ars_wait)
 * and its whole stdout and stderr (owned; "" when it wrote nothing). */
struct ars_out {
    int code;
    char *out, *err;
};
/*
 * ars_run with stdout and stderr into fresh files below dir (numbered, so
 * each run's stay there to read after a failure), then read back into o.
 * 0, or -1 when an output file could not be read (o is then empty).
 */
int ars_capture(const char *bin, const char *const *args, const char *dir,
                int64_t timeout_ms, struct ars_out *o);
void ars_out_fini(struct ars_out *o);

/* An agent configuration (docs/AGENT.md) for vaults on 127.0.0.1. */
struct ars_agent_conf {
    const char *pki_dir;   /* ca.pem, agent.pem, agent.key */
    const char *key_file;  /* the agent view */
    const char *pass_file; /* its passphrase */
    const char *state_dir; /* lock file: state_dir + ".lock" */
    const char *tmp_dir;
    const int *ports; /* vault i is named "vault-" 'a' + i */
    size_t n_vaults;
    unsigned quorum;       /* 0: all */
    const char *mailboxes; /* the mailboxes / mailbox_pattern lines */
};
/* Writes path from c (mass-deletion guard off, short timeouts). 0 / -1. */
int ars_agent_conf_write(const char *path, const struct ars_agent_conf *c);

/* A coffer-restore configuration reading from one vault (port) with the
 * acme-restore identity of pki_dir. 0 / -1. */
int ars_restore_conf_write(const char *path, const char *pki_dir,
                           const char *key_file, const char *pass_file,
                           int port);

/* The integer after "key": (the first after the text from, when not NULL)
 * into *v. False when absent. */
bool ars_json_u64(const char *doc, const char *from, const char *key,
                  uint64_t *v);
/* The string after "key":" (as above) into out; false when absent or too
 * long. */
bool ars_json_str(const char *doc, const char *from, const char *key, char *out,
                  size_t n);

/* The value of an unlabelled metric in a Prometheus textfile; false when
 * the file or the metric is not there. */
bool ars_prom_u64(const char *path, const char *metric, uint64_t *v);

/* Runs bench/gen_corpus (found beside the test binary's directory) with
 * args (NULL-terminated, after argv[0]). 0 or -1. */
int ars_gen_corpus(const char *const *args);

/*
 * Compares the regular files below src (skipping every tmp/ directory,
 * which the agent never backs up) with those below dst: the same relative
 * paths, bytes, permission bits and mtimes to the nanosecond, and nothing
 * else in dst. Returns the number of files compared, or -1 with the first
 * difference in why.
 */
long ars_tree_compare(const char *src, const char *dst, char *why, size_t n);
/* Sum of the sizes of the regular files below dir, tmp/ excluded. */
uint64_t ars_tree_bytes(const char *dir);
/* rm -r of dir (no symlink followed). */
void ars_rm_tree(const char *dir);

#endif /* AGENT_RUN_SUPPORT_H */
