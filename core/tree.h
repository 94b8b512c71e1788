/*
 * tree.h - content-defined page trees ("prolly trees") over sorted records.
 *
 * A tree stores a sequence of records with strictly increasing keys in
 * pages. Leaf pages (level 0) hold records; inner pages (level >= 1) hold
 * references to the pages of the level below (PageRef: child ID, child's
 * first key, entries below it). Where a page ends is decided by the keys
 * alone: after a record whose key hashes to 0 modulo a target (bounded by a
 * minimum and a maximum count and a byte size), and likewise one level up
 * on each child's first key. So an edit rewrites only its page and the
 * pages above it, an insertion does not move later boundaries, and the
 * same records always give byte-identical pages, which a content-addressed
 * store keeps once.
 *
 * The builder takes records in key order and keeps one open page per
 * level, so its memory is bounded by the page size times the height,
 * whatever the number of records. The cursor walks a tree in key order
 * with one decoded page per level. Pages go out through a caller-supplied
 * sink, which stores them and names them by a 32-byte object ID, and come
 * back through a caller-supplied getter: this module knows no cryptography.
 *
 * Page bytes are the protobuf encodings of ManifestPage or RefPage
 * (proto/coffer_format.proto): field 1 the level (omitted at 0), field 2
 * the leaf records (one length-delimited field per record, or one bytes
 * field holding all records packed), field 3 the children.
 *
 * Thread safety: a builder or cursor belongs to one thread at a time.
 */
#ifndef CFR_TREE_H
#define CFR_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"                /* struct cfr_buf, for getters */
#include "coffer_format.pb-c.h" /* Coffer__V1__PageRef */
#include "err.h"                /* struct cfr_err */

#define CFR_TREE_ID_LEN 32
/* The largest page anyone writes or reads. */
#define CFR_TREE_PAGE_MAX ((size_t)1 << 20)
/* The most levels a tree may have; 8 levels of even 16 children is 4e9. */
#define CFR_TREE_HEIGHT_MAX 8
/* The longest key (a folder path plus a file name). */
#define CFR_TREE_KEY_MAX 4096
/* The most records or children one page may hold (packed IDs excepted). */
#define CFR_TREE_ITEMS_MAX 8192

/*
 * How pages are cut. Counts are per page; a boundary falls after an item
 * when count >= min and hash(seed, level, key) % target == 0, or when
 * count == max, or before an item that would take the page past
 * page_bytes. seed lets an agent make boundaries unpredictable to whoever
 * sees page sizes (derive it from a tenant key); it must stay the same
 * from one snapshot to the next, or no page is shared.
 */
struct cfr_tree_params {
    uint64_t seed;
    uint32_t leaf_target, leaf_min, leaf_max;
    uint32_t inner_target, inner_min, inner_max;
    size_t page_bytes; /* at most CFR_TREE_PAGE_MAX */
};

/* What names a tree: its root page, its height and its record count. */
struct cfr_tree_root {
    uint8_t id[CFR_TREE_ID_LEN];
    uint32_t height; /* levels: 1 = the root is a leaf */
    uint64_t entries;
};

/* How leaf records are framed inside field 2 of a leaf page. */
enum cfr_tree_leaf_mode {
    CFR_TREE_LEAF_RECORDS = 1, /* one length-delimited field per record */
    CFR_TREE_LEAF_PACKED = 2,  /* one bytes field, records concatenated */
};

/*
 * A tree type's page layout. With child_keys, each PageRef carries its
 * child's first key, so a reader can seek to a key in height pages and
 * check order at every level; without, PageRefs are half the size, which
 * a reference list (random IDs, read only whole) takes, and order is
 * checked across leaves only.
 */
struct cfr_tree_layout {
    enum cfr_tree_leaf_mode leaf_mode;
    bool child_keys;
};

/*
 * Stores one page (borrowed) and returns its object ID in id_r. Called for
 * every page of every tree built, also for pages the store already holds,
 * so a caller can collect the IDs of all pages of a tree. Returns 0 or a
 * negative enum cfr_code with err filled.
 */
typedef int cfr_tree_put_fn(void *ctx, uint32_t level, const uint8_t *page,
                            size_t len, uint8_t id_r[CFR_TREE_ID_LEN],
                            struct cfr_err *err);

/*
 * Appends the bytes of page id to page (empty on entry, capped at
 * CFR_TREE_PAGE_MAX by the caller, so an oversized page is CFR_ELIMIT).
 * CFR_ENOTFOUND when the store lacks it.
 */
typedef int cfr_tree_get_fn(void *ctx, const uint8_t id[CFR_TREE_ID_LEN],
                            struct cfr_buf *page, struct cfr_err *err);

/*
 * A decoded page as the cursor sees it, filled by a codec. Keys and
 * children borrow from msg.
 */
struct cfr_tree_page {
    uint32_t level;
    size_t n_items;                 /* records (leaf) or children (inner) */
    Coffer__V1__PageRef **children; /* inner pages */
    const uint8_t *first_key;       /* leaf pages with n_items > 0 */
    size_t first_key_len;
    const uint8_t *last_key;
    size_t last_key_len;
    void *msg; /* the codec's decoded message */
};

/*
 * Decodes and checks one page of one tree type: a leaf's records are valid
 * with strictly increasing keys, an inner page has children and no
 * records. The cursor checks everything that spans pages.
 */
struct cfr_tree_codec {
    struct cfr_tree_layout layout;
    int (*decode)(const uint8_t *p, size_t n, struct cfr_tree_page *page_r,
                  struct cfr_err *err);
    void (*release)(struct cfr_tree_page *page);
};

struct cfr_tree_builder;
struct cfr_tree_cursor;

/*
 * The boundary hash: 64 bits of a seeded, non-cryptographic mix of key.
 * Stable across versions and platforms: it decides page boundaries.
 */
uint64_t cfr_tree_hash(uint64_t seed, const void *key, size_t len);

/* CFR_EINVAL with a reason unless params are usable. */
int cfr_tree_params_check(const struct cfr_tree_params *params,
                          struct cfr_err *err);

/*
 * Counts the top-level fields of a page (counts_r[1..3] for fields 1..3)
 * after checking that it is well-formed protobuf holding only those
 * fields with their wire types, level and field 2 of a packed leaf at most
 * once. Lets a codec bound a hostile page before any allocation.
 */
int cfr_tree_page_scan(const uint8_t *p, size_t n, size_t counts_r[4],
                       struct cfr_err *err);

/*
 * Checks one child reference: a 32-byte ID, a key of 1..CFR_TREE_KEY_MAX
 * bytes with child_keys or none without, at least one entry, no unknown
 * fields.
 */
int cfr_tree_ref_check(const Coffer__V1__PageRef *ref, bool child_keys,
                       struct cfr_err *err);

/*
 * A protobuf-c allocator over cfr_malloc, so decoding takes part in the
 * allocation-failure tests. protobuf-c reports a failed allocation and a
 * malformed message alike (NULL); failed tells them apart, so that an
 * out-of-memory is not mistaken for a corrupt page.
 */
struct cfr_tree_alloc {
    ProtobufCAllocator pb;
    bool failed;
};
void cfr_tree_alloc_init(struct cfr_tree_alloc *a);
/* A shared instance for freeing decoded messages. */
ProtobufCAllocator *cfr_tree_allocator(void);

/*
 * Returns an owned builder in *b_r. params and layout (both copied) fix
 * the pages; put and ctx are borrowed until cfr_tree_builder_free.
 */
int cfr_tree_builder_new(const struct cfr_tree_params *params,
                         const struct cfr_tree_layout *layout,
                         cfr_tree_put_fn *put, void *ctx,
                         struct cfr_tree_builder **b_r, struct cfr_err *err);

/*
 * Adds one record (borrowed): its key, 1..CFR_TREE_KEY_MAX bytes, strictly
 * greater than the previous key (else CFR_EINVAL), and its encoded bytes.
 * May emit pages through the sink. After an error the builder refuses
 * everything but free.
 */
int cfr_tree_builder_add(struct cfr_tree_builder *b, const uint8_t *key,
                         size_t key_len, const uint8_t *item, size_t item_len,
                         struct cfr_err *err);

/*
 * Emits the remaining pages and names the root. An empty tree is one
 * empty leaf page. The builder accepts nothing more afterwards.
 */
int cfr_tree_builder_finish(struct cfr_tree_builder *b,
                            struct cfr_tree_root *root_r, struct cfr_err *err);

/* Accepts NULL. */
void cfr_tree_builder_free(struct cfr_tree_builder *b);

/*
 * Returns an owned cursor over the tree named by root (copied). codec,
 * get and ctx are borrowed until cfr_tree_cursor_free. No page is read
 * until the first cfr_tree_cursor_next.
 */
int cfr_tree_cursor_new(const struct cfr_tree_codec *codec,
                        cfr_tree_get_fn *get, void *ctx,
                        const struct cfr_tree_root *root,
                        struct cfr_tree_cursor **cur_r, struct cfr_err *err);

/*
 * Moves to the next leaf page in key order and returns 1 with *leaf_r
 * borrowed until the next call, 0 after the last leaf, or a negative
 * code (CFR_ECORRUPT for any page that breaks the tree's invariants;
 * then every later call fails too). Checked across pages: levels, entry
 * counts against the parents' and the root's, first keys against the
 * parents', and keys strictly increasing across leaves.
 */
int cfr_tree_cursor_next(struct cfr_tree_cursor *cur,
                         const struct cfr_tree_page **leaf_r,
                         struct cfr_err *err);

/* Accepts NULL. */
void cfr_tree_cursor_free(struct cfr_tree_cursor *cur);

#endif /* CFR_TREE_H */
