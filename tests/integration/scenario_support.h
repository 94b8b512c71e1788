/*
 * scenario_support.h - the set-up the coffer-restore integration tests
 * share: a test PKI and one or two coffer-vault processes, a work
 * directory with the agent's key and escrow files, agent and restore
 * configurations, coffer-agent init and backups, coffer-restore runs
 * with their output captured, and a Maildir store of generated messages
 * (domain/user/Maildir below the scenario's mail directory).
 *
 * Unlike agent_run_support.h these helpers call cmocka: a step that goes
 * wrong fails the test where it stands (scn_setup alone returns -1, for a
 * group set-up). Call them from the test's thread only.
 */
#ifndef SCENARIO_SUPPORT_H
#define SCENARIO_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h> /* struct timespec */

#include "agent_run_support.h"    /* struct ars_out */
#include "vault_client_support.h" /* struct vc_objset */
#include "vault_support.h"        /* struct vs_env, struct vs_vault */

#define SCN_VAULTS_MAX 3
#define SCN_PATH       (VS_PATH_MAX + 96)
#define SCN_DOMAIN     "example.org"
#define SCN_MAX_SNAPS  16

/* In a test's struct scn initialiser: the programs its build names (an
 * undeclared identifier here: the build did not define them). */
#define SCN_PROGRAMS                                                           \
    .agent_bin = COFFER_AGENT_BIN, .restore_bin = COFFER_RESTORE_BIN

/* snprintf into an array, failing the test when it does not fit. */
#define SCN_FMT(buf, ...)                                                      \
    assert_true((size_t)snprintf((buf), sizeof(buf), __VA_ARGS__) < sizeof(buf))

struct scn {
    /* Set before scn_setup. */
    const char *escrow_pw;
    const char *agent_bin, *restore_bin;
    size_t n_vaults;         /* 1 to SCN_VAULTS_MAX */
    bool test_mode;          /* the vaults' clocks will move */
    const char *vault_extra; /* appended to each vault's config; NULL */
    /* Restore configurations with the acme-admin certificate, one per
     * vault beside the one for all (conf_one), and a 20 s timeout; else
     * ars_restore_conf_write's for vault 0 alone. */
    bool admin_confs;
    int64_t run_ms; /* each program's time limit; 0: 60 s */
    /* The agent's mailboxes / mailbox_pattern lines; "" (the default):
     * every domain/user/Maildir below mail. */
    char mailboxes[3 * VS_PATH_MAX];

    /* Filled by scn_setup. */
    struct vs_env env;
    struct vs_vault vaults[SCN_VAULTS_MAX];
    int ports[SCN_VAULTS_MAX];
    char dir[VS_PATH_MAX + 64];  /* <env>/work: files of the programs */
    char mail[VS_PATH_MAX + 64]; /* <env>/mail */
    char key_file[SCN_PATH], pass_file[SCN_PATH], escrow[SCN_PATH],
        escrow_pass[SCN_PATH], agent_conf[SCN_PATH], conf_all[SCN_PATH],
        conf_one[SCN_VAULTS_MAX][SCN_PATH];
};

/* The PKI, the vaults (named v0, v1), the directories, the escrow
 * passphrase file. 0 or -1. */
int scn_setup(struct scn *s);
/* Stops the vaults and removes everything. */
void scn_teardown(struct scn *s);
/* A cmocka group teardown: scn_teardown of the scenario scn_setup last
 * set up. */
int scn_group_teardown(void **state);
/* (Re)writes the agent and restore configurations for the current
 * ports. */
void scn_write_confs(struct scn *s);
/* scn_write_confs, then coffer-agent init with the escrow key. The exit
 * code (0: done). */
int scn_init(struct scn *s);
/* Restarts every vault with the test clock offset (e.g. "29d") and
 * rewrites the configurations (the ports change). */
void scn_move_clock(struct scn *s, const char *offset);

/* Runs bin with args; the exit code, stdout into *out_r (owned) when not
 * NULL. A failed run's output goes to stderr for the log. */
int scn_run(const struct scn *s, const char *bin, const char *const *args,
            char **out_r);
/* coffer-restore --config conf ARGS... with both outputs captured (set
 * COFFER_TEST_SHOW to see them). */
void scn_restore(const struct scn *s, const char *conf, const char *const *args,
                 struct ars_out *o);
/* Fails the test with o's output unless it exited with code. */
void scn_expect_code(const struct ars_out *o, int code, const char *what);
/* coffer-agent backup --quiet of user@SCN_DOMAIN (NULL: every mailbox);
 * fails the test unless it exits 0. */
void scn_backup(const struct scn *s, const char *user);

/* ---- files below a root (paths root "/" rel) --------------------------------
 */

/* mkdir -p root/rel. */
void scn_mkdirs(const char *root, const char *rel);
/* Writes root/rel (mode 0600) with len bytes of data, its mtime *mtime
 * (NULL: left as written). */
void scn_put(const char *root, const char *rel, const void *data, size_t len,
             const struct timespec *mtime);
/* rename root/from to root/to. */
void scn_mv(const char *root, const char *from, const char *to);
/* unlink root/rel. */
void scn_rm(const char *root, const char *rel);

/* ---- generated mail (domain SCN_DOMAIN below s->mail) --------------------
 */

/* Makes user's Maildir (cur, new, tmp). */
void scn_mailbox_make(const struct scn *s, const char *user);
/* Message n of user: headers with Message-ID <user-n@retention.test> and
 * a 6 KB body no other message shares. Owned (cfr_free). */
char *scn_msg_bytes(const char *user, int n, size_t *len_r);
/* The path of message n in user's Maildir (cur/). */
void scn_msg_path(const struct scn *s, const char *user, int n, char *out,
                  size_t size);
/* Writes message n of (bytes) from into user's Maildir. */
void scn_msg_put(const struct scn *s, const char *user, const char *from,
                 int n);
void scn_msg_write(const struct scn *s, const char *user, int n);
void scn_msg_delete(const struct scn *s, const char *user, int n);
/* Message n of user is in the restored Maildir to, byte for byte. */
bool scn_restored_has(const char *to, const char *user, int n);

/* Snapshot IDs (hex) of user's mailbox on conf's vaults, oldest first
 * (none: coffer-restore may exit 5). */
size_t scn_snapshots(const struct scn *s, const char *conf, const char *user,
                     char ids[SCN_MAX_SNAPS][65]);
/* The same; with must_list, coffer-restore must exit 0; with parents,
 * each one's parent ID too ("" for none). */
size_t scn_snapshots_ex(const struct scn *s, const char *conf, const char *user,
                        bool must_list, char ids[SCN_MAX_SNAPS][65],
                        char parents[SCN_MAX_SNAPS][65]);
/* Restores snapshot id of user into a fresh directory (its path into
 * to); the exit code. */
int scn_restore_snap(const struct scn *s, const char *conf, const char *user,
                     const char *id, char *to, size_t to_size);
/* Snapshot id of user restores from conf's vaults (exit 0) with user's
 * messages numbered in msgs (n of them) byte for byte; the restored tree
 * is removed after. */
void scn_expect_restores(const struct scn *s, const char *conf,
                         const char *user, const char *id, const int *msgs,
                         size_t n);
/* How many of set's IDs vault i lacks (Missing, restore certificate). */
size_t scn_missing_on(const struct scn *s, size_t i,
                      const struct vc_objset *set);

struct cfr_kv;
struct cfr_kv_env;
/* The acme tenant's database of stopped vault v, opened in ke with every
 * column family the vault keeps (chunks first, chunk index second); fails
 * the test when it does not open. Close it with cfr_kv_close. */
struct cfr_kv *scn_vault_db(struct cfr_kv_env *ke, const struct vs_vault *v);

/*
 * The chunk IDs of user's messages numbered in want (n_want of them, as
 * scn_msg_write names them) in the snapshot whose hex ID is snap, read
 * from vault 0 with the escrow key, into set; with exclude, IDs already
 * in exclude are left out. In scenario_view.c: restore_* tests only.
 */
void scn_chunks_of(const struct scn *sc, const char *user, const char *snap,
                   const int *want, size_t n_want,
                   const struct vc_objset *exclude, struct vc_objset *set);

#endif /* SCENARIO_SUPPORT_H */
