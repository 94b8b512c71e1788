/*
 * snap.h - snapshot metadata: manifest entries, the manifest tree, the
 * reference-list tree and the snapshot header.
 *
 * A snapshot (one mailbox, one backup run) is three things:
 *  - a manifest: every file of the mailbox as a ManifestEntry, sorted by
 *    key, in a content-defined page tree (tree.h) whose pages the agent
 *    seals: an unchanged page keeps its ID and is stored once, so metadata
 *    grows with change, not with mailbox size;
 *  - a reference list: the sorted set of object IDs the snapshot keeps
 *    alive (every data chunk and every manifest page), in a page tree of
 *    the same kind stored in clear, so a vault can collect garbage without
 *    any key;
 *  - a header naming both roots, sealed and committed last.
 *
 * The writers take their input in key order and keep one page per level;
 * the readers load one page per level. Neither knows how pages are stored
 * or named: that is the sink and the getter (tree.h). Everything read is
 * treated as hostile and checked; see cfr_tree_cursor_next.
 *
 * Thread safety: each writer and reader belongs to one thread at a time.
 */
#ifndef CFR_SNAP_H
#define CFR_SNAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"  /* struct cfr_buf */
#include "err.h"  /* struct cfr_err */
#include "tree.h" /* params, roots, sinks and getters */

/* The snapshot format this build writes and the only one it reads. */
#define CFR_SNAP_FORMAT_VERSION 1

#define CFR_SNAP_ID_LEN CFR_TREE_ID_LEN
/* Per-entry limits; a page holding an entry is still under 1 MiB. */
#define CFR_SNAP_KEY_MAX        CFR_TREE_KEY_MAX
#define CFR_SNAP_INFO_MAX       256
#define CFR_SNAP_MESSAGE_ID_MAX 1024
/*
 * The most chunk IDs an entry lists inline: 512 KiB of IDs, a file of
 * about 2 GiB at 64 KiB average chunks. Larger files are refused with
 * CFR_ELIMIT until the format grows an indirect chunk list.
 */
#define CFR_SNAP_CHUNKS_MAX 16384
/* Header strings (NUL-free bytes). */
#define CFR_SNAP_MAILBOX_MAX 1024
#define CFR_SNAP_HOST_MAX    255
#define CFR_SNAP_AGENT_MAX   64
/* A header is far smaller; anything bigger is not one. */
#define CFR_SNAP_HEADER_MAX 8192

enum cfr_snap_kind {
    CFR_SNAP_MAILDIR_MESSAGE = 1,
    CFR_SNAP_MBOX = 2,
    CFR_SNAP_DOVECOT_META = 3,
    CFR_SNAP_OPAQUE = 4,
};

/*
 * One manifest entry, as a view: every pointer borrows (from the caller
 * when writing, from the reader's current page when reading). Byte
 * strings are not NUL-terminated; a reader never leaves a pointer NULL,
 * even for an empty field. key = folder "\0" name (see
 * proto/coffer_format.proto for the convention).
 */
struct cfr_snap_entry {
    const uint8_t *key;
    size_t key_len; /* 1..CFR_SNAP_KEY_MAX */
    enum cfr_snap_kind kind;
    const uint8_t *info; /* Maildir ":2,<flags>" suffix */
    size_t info_len;     /* 0..CFR_SNAP_INFO_MAX */
    bool in_new;
    uint64_t size;
    int64_t mtime_ns;
    uint32_t mode;
    const uint8_t *message_id;
    size_t message_id_len;    /* 0..CFR_SNAP_MESSAGE_ID_MAX */
    const uint8_t *chunk_ids; /* n_chunks * CFR_SNAP_ID_LEN bytes */
    size_t n_chunks;          /* 0..CFR_SNAP_CHUNKS_MAX */
};

/* The snapshot header, decoded. Strings are NUL-terminated copies. */
struct cfr_snap_header {
    char mailbox[CFR_SNAP_MAILBOX_MAX + 1];
    char host[CFR_SNAP_HOST_MAX + 1];
    char agent_version[CFR_SNAP_AGENT_MAX + 1];
    int64_t agent_time_ms;
    struct cfr_tree_root manifest; /* entries = manifest entries */
    struct cfr_tree_root refs;     /* entries = IDs referenced */
    uint64_t total_bytes;
    bool has_parent;
    uint8_t parent[CFR_SNAP_ID_LEN];
    bool mass_deletion;
    uint32_t vanished;
};

struct cfr_snap_manifest_writer;
struct cfr_snap_manifest_reader;
struct cfr_snap_refs_writer;
struct cfr_snap_refs_reader;

/*
 * Page parameters measured to keep 720 hourly snapshots of a
 * 100,000-message mailbox under 10x the metadata of one (bench/
 * meta_growth.c). seed 0; an agent should set its own (tree.h).
 */
void cfr_snap_manifest_params(struct cfr_tree_params *params_r);
void cfr_snap_refs_params(struct cfr_tree_params *params_r);

/*
 * CFR_EINVAL unless e is within the limits above with a known kind. The
 * writer checks every entry with it.
 */
int cfr_snap_entry_check(const struct cfr_snap_entry *e, struct cfr_err *err);

/*
 * Manifest writer: params (NULL = cfr_snap_manifest_params) are copied;
 * put and ctx are borrowed until free. Entries must come with strictly
 * increasing keys (CFR_EINVAL otherwise). finish names the root; the
 * header records it.
 */
int cfr_snap_manifest_writer_new(const struct cfr_tree_params *params,
                                 cfr_tree_put_fn *put, void *ctx,
                                 struct cfr_snap_manifest_writer **w_r,
                                 struct cfr_err *err);
int cfr_snap_manifest_writer_add(struct cfr_snap_manifest_writer *w,
                                 const struct cfr_snap_entry *e,
                                 struct cfr_err *err);
int cfr_snap_manifest_writer_finish(struct cfr_snap_manifest_writer *w,
                                    struct cfr_tree_root *root_r,
                                    struct cfr_err *err);
void cfr_snap_manifest_writer_free(struct cfr_snap_manifest_writer *w);

/*
 * Manifest reader over the tree named by root (copied); get and ctx are
 * borrowed until free. next returns 1 with *e_r filled (its pointers valid
 * until the next call), 0 after the last entry, or a negative code; a
 * corrupt page anywhere is CFR_ECORRUPT and ends the walk.
 */
int cfr_snap_manifest_reader_new(cfr_tree_get_fn *get, void *ctx,
                                 const struct cfr_tree_root *root,
                                 struct cfr_snap_manifest_reader **r_r,
                                 struct cfr_err *err);
int cfr_snap_manifest_reader_next(struct cfr_snap_manifest_reader *r,
                                  struct cfr_snap_entry *e_r,
                                  struct cfr_err *err);
void cfr_snap_manifest_reader_free(struct cfr_snap_manifest_reader *r);

/*
 * Reference-list writer: IDs must come strictly increasing (sorted, no
 * duplicates), else CFR_EINVAL.
 */
int cfr_snap_refs_writer_new(const struct cfr_tree_params *params,
                             cfr_tree_put_fn *put, void *ctx,
                             struct cfr_snap_refs_writer **w_r,
                             struct cfr_err *err);
int cfr_snap_refs_writer_add(struct cfr_snap_refs_writer *w,
                             const uint8_t id[CFR_SNAP_ID_LEN],
                             struct cfr_err *err);
int cfr_snap_refs_writer_finish(struct cfr_snap_refs_writer *w,
                                struct cfr_tree_root *root_r,
                                struct cfr_err *err);
void cfr_snap_refs_writer_free(struct cfr_snap_refs_writer *w);

/* Reference-list reader: next returns 1 with id_r filled, 0 at the end. */
int cfr_snap_refs_reader_new(cfr_tree_get_fn *get, void *ctx,
                             const struct cfr_tree_root *root,
                             struct cfr_snap_refs_reader **r_r,
                             struct cfr_err *err);
int cfr_snap_refs_reader_next(struct cfr_snap_refs_reader *r,
                              uint8_t id_r[CFR_SNAP_ID_LEN],
                              struct cfr_err *err);
void cfr_snap_refs_reader_free(struct cfr_snap_refs_reader *r);

/*
 * Decodes and checks one page on its own (what it can say without its
 * parent): its level and its count of entries, IDs or children.
 * CFR_ECORRUPT for anything malformed.
 */
int cfr_snap_manifest_page_check(const uint8_t *p, size_t n, uint32_t *level_r,
                                 size_t *count_r, struct cfr_err *err);
int cfr_snap_refs_page_check(const uint8_t *p, size_t n, uint32_t *level_r,
                             size_t *count_r, struct cfr_err *err);

/*
 * Header: encode appends to out (CFR_EINVAL for a header outside the
 * limits); decode fills h_r from untrusted bytes: CFR_EVERSION for a
 * format_version other than CFR_SNAP_FORMAT_VERSION, CFR_ECORRUPT for
 * anything else wrong.
 */
int cfr_snap_header_encode(const struct cfr_snap_header *h, struct cfr_buf *out,
                           struct cfr_err *err);
int cfr_snap_header_decode(const uint8_t *p, size_t n,
                           struct cfr_snap_header *h_r, struct cfr_err *err);

#endif /* CFR_SNAP_H */
