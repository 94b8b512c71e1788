/*
 * tree.c - content-defined page trees: the builder, the cursor, and the
 * wire-level checks both tree types share.
 *
 * Invariants:
 *  1. Page bytes depend only on the records and the params: no time, no
 *     address, no randomness. The builder frames pages exactly as
 *     protobuf-c packs ManifestPage and RefPage (fields in number order,
 *     defaults omitted), so the same records give the same bytes and a
 *     page re-packed by protobuf-c is unchanged.
 *  2. Boundaries depend on keys (and counts since the last boundary), never
 *     on absolute positions, so an edit cannot move a boundary beyond the
 *     next one that the edit did not touch.
 *  3. The builder holds one open page per level and never more than
 *     CFR_TREE_HEIGHT_MAX levels; each open page stays under page_bytes
 *     unless a single item is bigger (still under CFR_TREE_PAGE_MAX).
 *  4. A tree has exactly one root: the only page of its top level. A level
 *     holding one page is never given a parent.
 *  5. The cursor holds at most one decoded page per level and trusts no
 *     page: every level, count, key order and parent/child agreement is
 *     checked before a record is handed out; after an error it stays
 *     failed.
 */
#include "tree.h"

#include <string.h>

#include "mem.h" /* cfr_malloc, cfr_calloc, cfr_free */

#define K1 UINT64_C(0x9e3779b97f4a7c15)
#define K2 UINT64_C(0xbf58476d1ce4e5b9)
#define K3 UINT64_C(0x94d049bb133111eb)

/* Tag bytes of the fields a page uses (field << 3 | wire type). */
#define TAG_LEVEL    0x08 /* field 1, varint */
#define TAG_ITEMS    0x12 /* field 2, length-delimited */
#define TAG_CHILDREN 0x1a /* field 3, length-delimited */

/* A varint is at most 10 bytes; a page header is a tag plus a varint. */
#define VARINT_MAX 10
#define FRAME_MAX  (1 + VARINT_MAX)
/* A packed PageRef: id, key, entries, each with tag and length. */
#define REF_MAX (2 * FRAME_MAX + CFR_TREE_ID_LEN + CFR_TREE_KEY_MAX + FRAME_MAX)

struct tree_level {
    struct cfr_buf body;      /* framed items of the open page */
    size_t count;             /* items in the open page */
    uint64_t entries;         /* leaf records below the open page */
    struct cfr_buf first_key; /* the open page's first key */
    uint64_t emitted;         /* pages finished at this level */
    uint8_t last_id[CFR_TREE_ID_LEN];
    uint8_t ref[REF_MAX]; /* this level's last PageRef, packed */
};

struct cfr_tree_builder {
    struct cfr_tree_params params;
    struct cfr_tree_layout layout;
    cfr_tree_put_fn *put;
    void *ctx;
    struct tree_level levels[CFR_TREE_HEIGHT_MAX];
    size_t n_levels;
    struct cfr_buf prev_key;
    bool have_prev;
    struct cfr_buf page; /* assembly of the page being emitted */
    uint64_t total;
    bool failed;
    bool finished;
};

struct cursor_level {
    struct cfr_tree_page page;
    bool loaded;
    size_t idx; /* the child being walked (inner levels) */
};

struct cfr_tree_cursor {
    const struct cfr_tree_codec *codec;
    cfr_tree_get_fn *get;
    void *ctx;
    struct cfr_tree_root root;
    struct cursor_level levels[CFR_TREE_HEIGHT_MAX];
    struct cfr_buf raw;      /* the page being decoded */
    struct cfr_buf prev_key; /* the last key of the previous leaf */
    bool have_prev;
    bool started;
    bool done;
    int failed; /* the error that stopped the cursor, or 0 */
};

static uint64_t
mix(uint64_t x)
{
    x ^= x >> 30;
    x *= K2;
    x ^= x >> 27;
    x *= K3;
    x ^= x >> 31;
    return x;
}

uint64_t
cfr_tree_hash(uint64_t seed, const void *key, size_t len)
{
    const uint8_t *p = key;
    /* The constant keeps seed 0 and length 0 from hashing to 0. */
    uint64_t h = mix(seed + K3) + (uint64_t)len * K1;
    while (len >= 8) {
        h = mix(h ^ cfr_get_le64(p)) + K1;
        p += 8;
        len -= 8;
    }
    if (len > 0) {
        uint8_t tail[8] = {0};
        memcpy(tail, p, len);
        h = mix(h ^ cfr_get_le64(tail)) + K1;
    }
    return mix(h);
}

int
cfr_tree_params_check(const struct cfr_tree_params *params, struct cfr_err *err)
{
    const struct cfr_tree_params *p = params;
    if (p->leaf_target == 0 || p->inner_target == 0) {
        return CFR_ERR(err, CFR_EINVAL, "tree params: zero target");
    }
    if (p->leaf_min < 1 || p->leaf_max < p->leaf_min ||
        p->leaf_max > CFR_TREE_ITEMS_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "tree params: leaf min %u max %u",
                       p->leaf_min, p->leaf_max);
    }
    /* An inner page of one child would make a chain that never ends. */
    if (p->inner_min < 2 || p->inner_max < p->inner_min ||
        p->inner_max > CFR_TREE_ITEMS_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "tree params: inner min %u max %u",
                       p->inner_min, p->inner_max);
    }
    if (p->page_bytes < 2 * REF_MAX || p->page_bytes > CFR_TREE_PAGE_MAX) {
        return CFR_ERR(err, CFR_EINVAL, "tree params: page_bytes %zu",
                       p->page_bytes);
    }
    return 0;
}

static size_t
varint_put(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

/* Reads a varint at *pos; 0, or -1 when truncated or over 64 bits. */
static int
varint_get(const uint8_t *p, size_t n, size_t *pos, uint64_t *v_r)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < VARINT_MAX; i++) {
        if (*pos >= n) {
            return -1;
        }
        uint8_t byte = p[(*pos)++];
        if (i == 9 && byte > 1) {
            return -1;
        }
        v |= (uint64_t)(byte & 0x7f) << (7 * i);
        if ((byte & 0x80) == 0) {
            *v_r = v;
            return 0;
        }
    }
    return -1;
}

int
cfr_tree_page_scan(const uint8_t *p, size_t n, size_t counts_r[4],
                   struct cfr_err *err)
{
    int rc = 0;
    size_t pos = 0;
    memset(counts_r, 0, 4 * sizeof(counts_r[0]));
    if (n > CFR_TREE_PAGE_MAX) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "page of %zu bytes over the limit", n);
        goto out;
    }
    while (pos < n) {
        uint64_t tag, v;
        if (varint_get(p, n, &pos, &tag) != 0) {
            rc = CFR_ERR(err, CFR_ECORRUPT, "page: bad tag at %zu", pos);
            goto out;
        }
        if (tag == TAG_LEVEL) {
            if (varint_get(p, n, &pos, &v) != 0 || v > UINT32_MAX) {
                rc = CFR_ERR(err, CFR_ECORRUPT, "page: bad level");
                goto out;
            }
            counts_r[1]++;
        } else if (tag == TAG_ITEMS || tag == TAG_CHILDREN) {
            if (varint_get(p, n, &pos, &v) != 0 || v > n - pos) {
                rc = CFR_ERR(err, CFR_ECORRUPT, "page: field past the end");
                goto out;
            }
            pos += (size_t)v;
            counts_r[tag >> 3]++;
        } else {
            rc = CFR_ERR(err, CFR_ECORRUPT,
                         "page: unexpected field %llu wire type %u",
                         (unsigned long long)(tag >> 3), (unsigned)(tag & 7));
            goto out;
        }
    }
    if (counts_r[1] > 1) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "page: level given twice");
        goto out;
    }
    if (counts_r[2] > CFR_TREE_ITEMS_MAX || counts_r[3] > CFR_TREE_ITEMS_MAX) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "page: %zu records, %zu children",
                     counts_r[2], counts_r[3]);
        goto out;
    }
out:
    return rc;
}

int
cfr_tree_ref_check(const Coffer__V1__PageRef *ref, bool child_keys,
                   struct cfr_err *err)
{
    if (ref->base.n_unknown_fields != 0) {
        return CFR_ERR(err, CFR_ECORRUPT, "page ref: unknown fields");
    }
    if (ref->id.len != CFR_TREE_ID_LEN) {
        return CFR_ERR(err, CFR_ECORRUPT, "page ref: id of %zu bytes",
                       ref->id.len);
    }
    if (child_keys
            ? ref->first_key.len < 1 || ref->first_key.len > CFR_TREE_KEY_MAX
            : ref->first_key.len != 0) {
        return CFR_ERR(err, CFR_ECORRUPT, "page ref: key of %zu bytes",
                       ref->first_key.len);
    }
    if (ref->entries < 1) {
        return CFR_ERR(err, CFR_ECORRUPT, "page ref: no entries");
    }
    return 0;
}

static void *
pb_alloc(void *data, size_t size)
{
    void *p = cfr_malloc(size);
    if (p == NULL && data != NULL) {
        ((struct cfr_tree_alloc *)data)->failed = true;
    }
    return p;
}

static void
pb_free(void *data, void *p)
{
    (void)data;
    cfr_free(p);
}

void
cfr_tree_alloc_init(struct cfr_tree_alloc *a)
{
    a->pb.alloc = pb_alloc;
    a->pb.free = pb_free;
    a->pb.allocator_data = a;
    a->failed = false;
}

ProtobufCAllocator *
cfr_tree_allocator(void)
{
    static ProtobufCAllocator allocator = {pb_alloc, pb_free, NULL};
    return &allocator;
}

/* Builder. */

static int
key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0) {
        return c;
    }
    return alen < blen ? -1 : (alen > blen ? 1 : 0);
}

int
cfr_tree_builder_new(const struct cfr_tree_params *params,
                     const struct cfr_tree_layout *layout, cfr_tree_put_fn *put,
                     void *ctx, struct cfr_tree_builder **b_r,
                     struct cfr_err *err)
{
    int rc;
    struct cfr_tree_builder *b = NULL;
    *b_r = NULL;
    if ((rc = cfr_tree_params_check(params, err)) != 0) {
        goto out;
    }
    if (layout->leaf_mode != CFR_TREE_LEAF_RECORDS &&
        layout->leaf_mode != CFR_TREE_LEAF_PACKED) {
        rc = CFR_ERR(err, CFR_EINVAL, "tree: leaf mode %d",
                     (int)layout->leaf_mode);
        goto out;
    }
    if ((b = cfr_calloc(1, sizeof(*b))) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "tree builder");
        goto out;
    }
    b->params = *params;
    b->layout = *layout;
    b->put = put;
    b->ctx = ctx;
    for (size_t i = 0; i < CFR_TREE_HEIGHT_MAX; i++) {
        cfr_buf_init(&b->levels[i].body, CFR_TREE_PAGE_MAX);
        cfr_buf_init(&b->levels[i].first_key, CFR_TREE_KEY_MAX);
    }
    cfr_buf_init(&b->prev_key, CFR_TREE_KEY_MAX);
    cfr_buf_init(&b->page, CFR_TREE_PAGE_MAX);
    *b_r = b;
out:
    return rc;
}

void
cfr_tree_builder_free(struct cfr_tree_builder *b)
{
    if (b == NULL) {
        return;
    }
    for (size_t i = 0; i < CFR_TREE_HEIGHT_MAX; i++) {
        cfr_buf_fini(&b->levels[i].body);
        cfr_buf_fini(&b->levels[i].first_key);
    }
    cfr_buf_fini(&b->prev_key);
    cfr_buf_fini(&b->page);
    cfr_free(b);
}

static bool
is_packed(const struct cfr_tree_builder *b, size_t lvl)
{
    return lvl == 0 && b->layout.leaf_mode == CFR_TREE_LEAF_PACKED;
}

static int level_add(struct cfr_tree_builder *b, size_t lvl, const uint8_t *key,
                     size_t key_len, const uint8_t *item, size_t item_len,
                     uint64_t entries, struct cfr_err *err);

/*
 * Frames the open page of level lvl, hands it to the sink and, unless
 * as_root, passes a reference to it up to level lvl + 1.
 */
static int
close_page(struct cfr_tree_builder *b, size_t lvl, bool as_root,
           struct cfr_err *err)
{
    int rc;
    struct tree_level *L = &b->levels[lvl];
    uint8_t head[2 * FRAME_MAX];
    size_t hn = 0;
    if (lvl > 0) {
        head[hn++] = TAG_LEVEL;
        hn += varint_put(head + hn, lvl);
    }
    if (is_packed(b, lvl) && L->body.len > 0) {
        head[hn++] = TAG_ITEMS;
        hn += varint_put(head + hn, L->body.len);
    }
    cfr_buf_reset(&b->page);
    if ((rc = cfr_buf_append(&b->page, head, hn, err)) != 0 ||
        (rc = cfr_buf_append(&b->page, L->body.data, L->body.len, err)) != 0) {
        goto out;
    }
    /* An empty page still gets a valid pointer: sinks may memcpy it. */
    static const uint8_t empty[1];
    const uint8_t *bytes = b->page.len > 0 ? b->page.data : empty;
    if ((rc = b->put(b->ctx, (uint32_t)lvl, bytes, b->page.len, L->last_id,
                     err)) != 0) {
        goto out;
    }
    L->emitted++;
    if (!as_root) {
        Coffer__V1__PageRef ref = COFFER__V1__PAGE_REF__INIT;
        ref.id.data = L->last_id;
        ref.id.len = CFR_TREE_ID_LEN;
        if (b->layout.child_keys) {
            ref.first_key.data = L->first_key.data;
            ref.first_key.len = L->first_key.len;
        }
        ref.entries = L->entries;
        CFR_ASSERT(coffer__v1__page_ref__get_packed_size(&ref) <= REF_MAX);
        size_t rn = coffer__v1__page_ref__pack(&ref, L->ref);
        if ((rc = level_add(b, lvl + 1, L->first_key.data, L->first_key.len,
                            L->ref, rn, L->entries, err)) != 0) {
            goto out;
        }
    }
    L->count = 0;
    L->entries = 0;
    cfr_buf_reset(&L->body);
    cfr_buf_reset(&L->first_key);
out:
    return rc;
}

static int
level_add(struct cfr_tree_builder *b, size_t lvl, const uint8_t *key,
          size_t key_len, const uint8_t *item, size_t item_len,
          uint64_t entries, struct cfr_err *err)
{
    int rc = 0;
    if (lvl >= CFR_TREE_HEIGHT_MAX) {
        rc = CFR_ERR(err, CFR_ELIMIT, "tree: more than %d levels",
                     CFR_TREE_HEIGHT_MAX);
        goto out;
    }
    if (lvl >= b->n_levels) {
        b->n_levels = lvl + 1;
    }
    struct tree_level *L = &b->levels[lvl];
    uint8_t frame[FRAME_MAX];
    size_t fn = 0;
    if (!is_packed(b, lvl)) {
        frame[fn++] = lvl == 0 ? TAG_ITEMS : TAG_CHILDREN;
        fn += varint_put(frame + fn, item_len);
    }
    if (item_len > CFR_TREE_PAGE_MAX - 2 * FRAME_MAX - fn) {
        rc = CFR_ERR(err, CFR_ELIMIT, "tree: item of %zu bytes", item_len);
        goto out;
    }
    /* Close early rather than pass page_bytes; the header fits the slack. */
    size_t projected = 2 * FRAME_MAX + L->body.len + fn + item_len;
    if (L->count > 0 && projected > b->params.page_bytes) {
        if ((rc = close_page(b, lvl, false, err)) != 0) {
            goto out;
        }
    }
    if (L->count == 0 &&
        (rc = cfr_buf_append(&L->first_key, key, key_len, err)) != 0) {
        goto out;
    }
    if ((rc = cfr_buf_append(&L->body, frame, fn, err)) != 0 ||
        (rc = cfr_buf_append(&L->body, item, item_len, err)) != 0) {
        goto out;
    }
    L->count++;
    L->entries += entries;
    uint32_t min = lvl == 0 ? b->params.leaf_min : b->params.inner_min;
    uint32_t max = lvl == 0 ? b->params.leaf_max : b->params.inner_max;
    uint32_t target = lvl == 0 ? b->params.leaf_target : b->params.inner_target;
    bool cut = L->count >= max;
    if (!cut && L->count >= min) {
        uint64_t h =
            cfr_tree_hash(b->params.seed + (uint64_t)lvl * K1, key, key_len);
        cut = h % target == 0;
    }
    if (cut) {
        rc = close_page(b, lvl, false, err);
    }
out:
    return rc;
}

int
cfr_tree_builder_add(struct cfr_tree_builder *b, const uint8_t *key,
                     size_t key_len, const uint8_t *item, size_t item_len,
                     struct cfr_err *err)
{
    int rc = 0;
    if (b->failed || b->finished) {
        rc = CFR_ERR(err, CFR_EINVAL, "tree builder already %s",
                     b->failed ? "failed" : "finished");
        goto out;
    }
    if (key_len < 1 || key_len > CFR_TREE_KEY_MAX) {
        rc = CFR_ERR(err, CFR_EINVAL, "tree: key of %zu bytes", key_len);
        goto out;
    }
    if (b->have_prev &&
        key_cmp(b->prev_key.data, b->prev_key.len, key, key_len) >= 0) {
        rc = CFR_ERR(err, CFR_EINVAL, "tree: keys out of order");
        goto out;
    }
    if ((rc = level_add(b, 0, key, key_len, item, item_len, 1, err)) != 0) {
        goto out;
    }
    cfr_buf_reset(&b->prev_key);
    if ((rc = cfr_buf_append(&b->prev_key, key, key_len, err)) != 0) {
        goto out;
    }
    b->have_prev = true;
    b->total++;
out:
    if (rc != 0 && !b->finished) {
        b->failed = true;
    }
    return rc;
}

int
cfr_tree_builder_finish(struct cfr_tree_builder *b,
                        struct cfr_tree_root *root_r, struct cfr_err *err)
{
    int rc = 0;
    memset(root_r, 0, sizeof(*root_r));
    if (b->failed || b->finished) {
        rc = CFR_ERR(err, CFR_EINVAL, "tree builder already %s",
                     b->failed ? "failed" : "finished");
        goto out;
    }
    if (b->n_levels == 0) {
        b->n_levels = 1; /* the empty tree: one empty leaf */
        if ((rc = close_page(b, 0, true, err)) != 0) {
            goto out;
        }
        memcpy(root_r->id, b->levels[0].last_id, CFR_TREE_ID_LEN);
        root_r->height = 1;
        goto out;
    }
    for (size_t lvl = 0;; lvl++) {
        CFR_ASSERT(lvl < b->n_levels);
        struct tree_level *L = &b->levels[lvl];
        /* A level that never closed a page holds the whole tree: root. */
        bool only = L->emitted == 0;
        if (L->count > 0 && (rc = close_page(b, lvl, only, err)) != 0) {
            goto out;
        }
        if (L->emitted == 1) {
            memcpy(root_r->id, L->last_id, CFR_TREE_ID_LEN);
            root_r->height = (uint32_t)lvl + 1;
            root_r->entries = b->total;
            break;
        }
    }
out:
    if (rc != 0) {
        b->failed = true;
    } else {
        b->finished = true;
    }
    return rc;
}

/* Cursor. */

int
cfr_tree_cursor_new(const struct cfr_tree_codec *codec, cfr_tree_get_fn *get,
                    void *ctx, const struct cfr_tree_root *root,
                    struct cfr_tree_cursor **cur_r, struct cfr_err *err)
{
    int rc = 0;
    struct cfr_tree_cursor *cur = NULL;
    *cur_r = NULL;
    if (root->height < 1 || root->height > CFR_TREE_HEIGHT_MAX) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "tree root: height %u", root->height);
        goto out;
    }
    if ((cur = cfr_calloc(1, sizeof(*cur))) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "tree cursor");
        goto out;
    }
    cur->codec = codec;
    cur->get = get;
    cur->ctx = ctx;
    cur->root = *root;
    cfr_buf_init(&cur->raw, CFR_TREE_PAGE_MAX);
    cfr_buf_init(&cur->prev_key, CFR_TREE_KEY_MAX);
    *cur_r = cur;
out:
    return rc;
}

static void
level_release(struct cfr_tree_cursor *cur, size_t lvl)
{
    struct cursor_level *CL = &cur->levels[lvl];
    if (CL->loaded) {
        cur->codec->release(&CL->page);
        CL->loaded = false;
    }
}

void
cfr_tree_cursor_free(struct cfr_tree_cursor *cur)
{
    if (cur == NULL) {
        return;
    }
    for (size_t i = 0; i < CFR_TREE_HEIGHT_MAX; i++) {
        level_release(cur, i);
    }
    cfr_buf_fini(&cur->raw);
    cfr_buf_fini(&cur->prev_key);
    cfr_free(cur);
}

/*
 * Loads page id as level lvl, which its parent says holds entries records
 * and starts with first_key (NULL for the root, whose first key nobody
 * states, and ignored without child keys), and checks it against both.
 */
static int
load(struct cfr_tree_cursor *cur, size_t lvl, const uint8_t *id,
     uint64_t entries, const uint8_t *first_key, size_t first_key_len,
     struct cfr_err *err)
{
    int rc;
    struct cursor_level *CL = &cur->levels[lvl];
    struct cfr_tree_page *pg = &CL->page;
    bool keyed = cur->codec->layout.child_keys;
    level_release(cur, lvl);
    cfr_buf_reset(&cur->raw);
    if ((rc = cur->get(cur->ctx, id, &cur->raw, err)) != 0) {
        goto out;
    }
    memset(pg, 0, sizeof(*pg));
    if ((rc = cur->codec->decode(cur->raw.data, cur->raw.len, pg, err)) != 0) {
        goto out;
    }
    CL->loaded = true;
    CL->idx = 0;
    if (pg->level != lvl) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "tree: level %u page where %zu due",
                     pg->level, lvl);
        goto out;
    }
    if (lvl == 0) {
        if (pg->n_items != entries) {
            rc = CFR_ERR(err, CFR_ECORRUPT,
                         "tree: leaf of %zu records, "
                         "parent says %llu",
                         pg->n_items, (unsigned long long)entries);
            goto out;
        }
        if (pg->n_items == 0) {
            goto out; /* only an empty root gets here */
        }
        if (keyed && first_key != NULL &&
            key_cmp(pg->first_key, pg->first_key_len, first_key,
                    first_key_len) != 0) {
            rc = CFR_ERR(err, CFR_ECORRUPT,
                         "tree: leaf's first key differs "
                         "from its parent's");
            goto out;
        }
        if (cur->have_prev && key_cmp(cur->prev_key.data, cur->prev_key.len,
                                      pg->first_key, pg->first_key_len) >= 0) {
            rc = CFR_ERR(err, CFR_ECORRUPT,
                         "tree: keys out of order across "
                         "leaves");
            goto out;
        }
        cfr_buf_reset(&cur->prev_key);
        if ((rc = cfr_buf_append(&cur->prev_key, pg->last_key, pg->last_key_len,
                                 err)) != 0) {
            goto out;
        }
        cur->have_prev = true;
        goto out;
    }
    if (pg->n_items == 0) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "tree: inner page without children");
        goto out;
    }
    uint64_t sum = 0;
    for (size_t i = 0; i < pg->n_items; i++) {
        const Coffer__V1__PageRef *ref = pg->children[i];
        if ((rc = cfr_tree_ref_check(ref, keyed, err)) != 0) {
            goto out;
        }
        if (keyed && i > 0) {
            const Coffer__V1__PageRef *prev = pg->children[i - 1];
            if (key_cmp(prev->first_key.data, prev->first_key.len,
                        ref->first_key.data, ref->first_key.len) >= 0) {
                rc = CFR_ERR(err, CFR_ECORRUPT, "tree: children out of order");
                goto out;
            }
        }
        if (ref->entries > UINT64_MAX - sum) {
            rc = CFR_ERR(err, CFR_ECORRUPT, "tree: entry count overflows");
            goto out;
        }
        sum += ref->entries;
    }
    if (sum != entries) {
        rc = CFR_ERR(err, CFR_ECORRUPT,
                     "tree: children hold %llu entries, "
                     "parent says %llu",
                     (unsigned long long)sum, (unsigned long long)entries);
        goto out;
    }
    if (keyed && first_key != NULL &&
        key_cmp(pg->children[0]->first_key.data, pg->children[0]->first_key.len,
                first_key, first_key_len) != 0) {
        rc = CFR_ERR(err, CFR_ECORRUPT,
                     "tree: page's first key differs from "
                     "its parent's");
        goto out;
    }
out:
    return rc;
}

/* Loads the leftmost path below level lvl's current child. */
static int
descend(struct cfr_tree_cursor *cur, size_t lvl, struct cfr_err *err)
{
    int rc = 0;
    while (lvl > 0) {
        struct cursor_level *CL = &cur->levels[lvl];
        const Coffer__V1__PageRef *ref = CL->page.children[CL->idx];
        if ((rc = load(cur, lvl - 1, ref->id.data, ref->entries,
                       ref->first_key.data, ref->first_key.len, err)) != 0) {
            goto out;
        }
        lvl--;
    }
out:
    return rc;
}

int
cfr_tree_cursor_next(struct cfr_tree_cursor *cur,
                     const struct cfr_tree_page **leaf_r, struct cfr_err *err)
{
    int rc = 0;
    size_t top = cur->root.height - 1;
    *leaf_r = NULL;
    if (cur->failed != 0) {
        rc = CFR_ERR(err, cur->failed, "tree cursor failed earlier");
        goto out;
    }
    if (cur->done) {
        goto out;
    }
    if (!cur->started) {
        cur->started = true;
        if ((rc = load(cur, top, cur->root.id, cur->root.entries, NULL, 0,
                       err)) != 0 ||
            (rc = descend(cur, top, err)) != 0) {
            goto out;
        }
    } else {
        /* Climb to the lowest level with a child left, then go down. */
        size_t lvl = 1;
        while (lvl <= top &&
               cur->levels[lvl].idx + 1 >= cur->levels[lvl].page.n_items) {
            lvl++;
        }
        if (lvl > top) {
            cur->done = true;
            goto out;
        }
        cur->levels[lvl].idx++;
        if ((rc = descend(cur, lvl, err)) != 0) {
            goto out;
        }
    }
    *leaf_r = &cur->levels[0].page;
    rc = 1;
out:
    if (rc < 0) {
        cur->failed = rc;
    }
    return rc;
}
