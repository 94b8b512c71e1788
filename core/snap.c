/*
 * snap.c - manifests, reference lists and snapshot headers over the
 * protobuf-c messages of proto/coffer_format.proto and the page trees of
 * tree.c.
 *
 * Invariants:
 *  1. Entries are packed by protobuf-c one at a time and framed by the tree
 *     builder, so a leaf page is exactly what protobuf-c would pack for the
 *     ManifestPage holding those entries (tree.c, invariant 1).
 *  2. No entry leaves a writer or a reader unchecked: key, info, Message-ID
 *     and chunk list within their limits, a known kind, chunk IDs a whole
 *     number of 32-byte IDs, no unknown fields.
 *  3. Before protobuf-c allocates anything for a page, cfr_tree_page_scan
 *     has bounded its size, its fields and its record count, so a hostile
 *     page costs at most a few MiB to reject.
 *  4. A reference list is a set: IDs strictly increase within and across
 *     pages, which also makes its pages deterministic.
 *  5. A header is read only at the version this build writes; the roots it
 *     names have a height within CFR_TREE_HEIGHT_MAX and 32-byte IDs.
 */
#include "snap.h"

#include <string.h>

#include "mem.h" /* cfr_calloc, cfr_free */

struct cfr_snap_manifest_writer {
    struct cfr_tree_builder *tree;
    struct cfr_buf scratch; /* one packed entry */
};

struct cfr_snap_manifest_reader {
    struct cfr_tree_cursor *cur;
    const struct cfr_tree_page *leaf;
    size_t idx;
};

struct cfr_snap_refs_writer {
    struct cfr_tree_builder *tree;
};

struct cfr_snap_refs_reader {
    struct cfr_tree_cursor *cur;
    const struct cfr_tree_page *leaf;
    size_t idx;
};

/*
 * Page sizes, measured with bench/meta_growth.c (100,000 messages, 720
 * hours). Each hour's few edits land on random pages, and each rewrites
 * one page per level, so the hourly cost is about (edits) x (the sum of
 * page sizes over the levels). Small pages keep that low until inner
 * levels, which every edit also rewrites, start to dominate. A boundary
 * needs min items and then fires with probability 1/target, so sizes
 * spread little: edits hit pages in proportion to their size, and a wide
 * spread would make the page an edit rewrites twice the average.
 *
 * Manifest: leaves of 16 entries on average (about 3 KiB of realistic
 * entries), inner pages of about 24 children.
 */
void
cfr_snap_manifest_params(struct cfr_tree_params *params_r)
{
    memset(params_r, 0, sizeof(*params_r));
    params_r->leaf_target = 8;
    params_r->leaf_min = 8;
    params_r->leaf_max = 64;
    params_r->inner_target = 12;
    params_r->inner_min = 12;
    params_r->inner_max = 96;
    params_r->page_bytes = 256 * 1024;
}

/*
 * Reference lists: leaves of about 32 IDs (1 KiB) and inner pages of about
 * 32 children. IDs are random, so every added or dropped ID (new chunks,
 * deleted ones, and the old and new IDs of each rewritten manifest page)
 * lands on its own leaf.
 */
void
cfr_snap_refs_params(struct cfr_tree_params *params_r)
{
    memset(params_r, 0, sizeof(*params_r));
    params_r->leaf_target = 16;
    params_r->leaf_min = 16;
    params_r->leaf_max = 128;
    params_r->inner_target = 16;
    params_r->inner_min = 16;
    params_r->inner_max = 128;
    params_r->page_bytes = 256 * 1024;
}

static int
key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0) {
        return c;
    }
    return alen < blen ? -1 : (alen > blen ? 1 : 0);
}

/* Shared by writers (CFR_EINVAL) and readers (CFR_ECORRUPT). */
static int
entry_check(const struct cfr_snap_entry *e, int code, struct cfr_err *err)
{
    if (e->key_len < 1 || e->key_len > CFR_SNAP_KEY_MAX) {
        return CFR_ERR(err, code, "entry: key of %zu bytes", e->key_len);
    }
    if (e->kind < CFR_SNAP_MAILDIR_MESSAGE || e->kind > CFR_SNAP_OPAQUE) {
        return CFR_ERR(err, code, "entry: kind %d", (int)e->kind);
    }
    if (e->info_len > CFR_SNAP_INFO_MAX) {
        return CFR_ERR(err, code, "entry: info of %zu bytes", e->info_len);
    }
    if (e->message_id_len > CFR_SNAP_MESSAGE_ID_MAX) {
        return CFR_ERR(err, code, "entry: Message-ID of %zu bytes",
                       e->message_id_len);
    }
    if (e->n_chunks > CFR_SNAP_CHUNKS_MAX) {
        return CFR_ERR(err, code == CFR_EINVAL ? CFR_ELIMIT : code,
                       "entry: %zu chunks", e->n_chunks);
    }
    return 0;
}

int
cfr_snap_entry_check(const struct cfr_snap_entry *e, struct cfr_err *err)
{
    return entry_check(e, CFR_EINVAL, err);
}

/* protobuf-c leaves absent bytes NULL; views never are (memcmp-safe). */
static const uint8_t *
bytes_of(const ProtobufCBinaryData *b)
{
    static const uint8_t empty[1];
    return b->len > 0 ? b->data : empty;
}

/* Fills a view of a decoded entry; CFR_ECORRUPT when it breaks a limit. */
static int
entry_from_pb(const Coffer__V1__ManifestEntry *m, struct cfr_snap_entry *e,
              struct cfr_err *err)
{
    int rc = 0;
    /* The view is filled first, so no path leaves a pointer NULL. */
    memset(e, 0, sizeof(*e));
    e->key = bytes_of(&m->key);
    e->key_len = m->key.len;
    e->kind = (enum cfr_snap_kind)m->kind;
    e->info = bytes_of(&m->info);
    e->info_len = m->info.len;
    e->in_new = m->in_new != 0;
    e->size = m->size;
    e->mtime_ns = m->mtime_ns;
    e->mode = m->mode;
    e->message_id = bytes_of(&m->message_id);
    e->message_id_len = m->message_id.len;
    e->chunk_ids = bytes_of(&m->chunk_ids);
    e->n_chunks = m->chunk_ids.len / CFR_SNAP_ID_LEN;
    if (m->base.n_unknown_fields != 0) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "entry: unknown fields");
        goto out;
    }
    if (m->chunk_ids.len % CFR_SNAP_ID_LEN != 0) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "entry: chunk IDs of %zu bytes",
                     m->chunk_ids.len);
        goto out;
    }
    rc = entry_check(e, CFR_ECORRUPT, err);
out:
    return rc;
}

/* Inner-page checks shared by both codecs. */
static int
children_check(Coffer__V1__PageRef **children, size_t n, bool child_keys,
               struct cfr_err *err)
{
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if ((rc = cfr_tree_ref_check(children[i], child_keys, err)) != 0) {
            goto out;
        }
    }
out:
    return rc;
}

/* Codecs. */

static int
manifest_decode(const uint8_t *p, size_t n, struct cfr_tree_page *page,
                struct cfr_err *err)
{
    int rc;
    size_t counts[4];
    Coffer__V1__ManifestPage *m = NULL;
    memset(page, 0, sizeof(*page));
    if ((rc = cfr_tree_page_scan(p, n, counts, err)) != 0) {
        goto out;
    }
    struct cfr_tree_alloc alloc;
    cfr_tree_alloc_init(&alloc);
    m = coffer__v1__manifest_page__unpack(&alloc.pb, n, p);
    if (m == NULL) {
        rc = alloc.failed
                 ? CFR_ERR(err, CFR_ENOMEM, "decoding a manifest page")
                 : CFR_ERR(err, CFR_ECORRUPT, "manifest page does not decode");
        goto out;
    }
    if (m->base.n_unknown_fields != 0) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "manifest page: unknown fields");
        goto out;
    }
    page->level = m->level;
    if (m->level >= CFR_TREE_HEIGHT_MAX) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "manifest page: level %u", m->level);
        goto out;
    }
    if (m->level > 0) {
        if (m->n_entries != 0) {
            rc = CFR_ERR(err, CFR_ECORRUPT,
                         "manifest page: entries at "
                         "level %u",
                         m->level);
            goto out;
        }
        page->children = m->children;
        page->n_items = m->n_children;
        rc = children_check(m->children, m->n_children, true, err);
        goto out;
    }
    if (m->n_children != 0) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "manifest page: leaf with children");
        goto out;
    }
    struct cfr_snap_entry e;
    const uint8_t *prev = NULL;
    size_t prev_len = 0;
    for (size_t i = 0; i < m->n_entries; i++) {
        if ((rc = entry_from_pb(m->entries[i], &e, err)) != 0) {
            goto out;
        }
        if (prev != NULL && key_cmp(prev, prev_len, e.key, e.key_len) >= 0) {
            rc = CFR_ERR(err, CFR_ECORRUPT,
                         "manifest page: entry %zu out "
                         "of order",
                         i);
            goto out;
        }
        prev = e.key;
        prev_len = e.key_len;
    }
    page->n_items = m->n_entries;
    if (m->n_entries > 0) {
        page->first_key = m->entries[0]->key.data;
        page->first_key_len = m->entries[0]->key.len;
        page->last_key = prev;
        page->last_key_len = prev_len;
    }
out:
    if (m != NULL && rc != 0) {
        coffer__v1__manifest_page__free_unpacked(m, cfr_tree_allocator());
        m = NULL;
    }
    page->msg = m;
    return rc;
}

static void
manifest_release(struct cfr_tree_page *page)
{
    if (page->msg != NULL) {
        coffer__v1__manifest_page__free_unpacked(page->msg,
                                                 cfr_tree_allocator());
    }
    memset(page, 0, sizeof(*page));
}

static int
refs_decode(const uint8_t *p, size_t n, struct cfr_tree_page *page,
            struct cfr_err *err)
{
    int rc;
    size_t counts[4];
    Coffer__V1__RefPage *m = NULL;
    memset(page, 0, sizeof(*page));
    if ((rc = cfr_tree_page_scan(p, n, counts, err)) != 0) {
        goto out;
    }
    if (counts[2] > 1) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "reference page: IDs given twice");
        goto out;
    }
    struct cfr_tree_alloc alloc;
    cfr_tree_alloc_init(&alloc);
    m = coffer__v1__ref_page__unpack(&alloc.pb, n, p);
    if (m == NULL) {
        rc = alloc.failed
                 ? CFR_ERR(err, CFR_ENOMEM, "decoding a reference page")
                 : CFR_ERR(err, CFR_ECORRUPT, "reference page does not decode");
        goto out;
    }
    if (m->base.n_unknown_fields != 0) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "reference page: unknown fields");
        goto out;
    }
    page->level = m->level;
    if (m->level >= CFR_TREE_HEIGHT_MAX) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "reference page: level %u", m->level);
        goto out;
    }
    if (m->level > 0) {
        if (m->ids.len != 0) {
            rc = CFR_ERR(err, CFR_ECORRUPT, "reference page: IDs at level %u",
                         m->level);
            goto out;
        }
        page->children = m->children;
        page->n_items = m->n_children;
        rc = children_check(m->children, m->n_children, false, err);
        goto out;
    }
    if (m->n_children != 0) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "reference page: leaf with children");
        goto out;
    }
    if (m->ids.len % CFR_SNAP_ID_LEN != 0) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "reference page: %zu bytes of IDs",
                     m->ids.len);
        goto out;
    }
    size_t count = m->ids.len / CFR_SNAP_ID_LEN;
    for (size_t i = 1; i < count; i++) {
        const uint8_t *id = m->ids.data + i * CFR_SNAP_ID_LEN;
        if (memcmp(id - CFR_SNAP_ID_LEN, id, CFR_SNAP_ID_LEN) >= 0) {
            rc = CFR_ERR(err, CFR_ECORRUPT,
                         "reference page: ID %zu out of "
                         "order",
                         i);
            goto out;
        }
    }
    page->n_items = count;
    if (count > 0) {
        page->first_key = m->ids.data;
        page->first_key_len = CFR_SNAP_ID_LEN;
        page->last_key = m->ids.data + (count - 1) * CFR_SNAP_ID_LEN;
        page->last_key_len = CFR_SNAP_ID_LEN;
    }
out:
    if (m != NULL && rc != 0) {
        coffer__v1__ref_page__free_unpacked(m, cfr_tree_allocator());
        m = NULL;
    }
    page->msg = m;
    return rc;
}

static void
refs_release(struct cfr_tree_page *page)
{
    if (page->msg != NULL) {
        coffer__v1__ref_page__free_unpacked(page->msg, cfr_tree_allocator());
    }
    memset(page, 0, sizeof(*page));
}

/*
 * Manifest children carry first keys so that a restore of one message can
 * seek; reference lists are read whole, by vaults, and take the smaller
 * keyless references.
 */
static const struct cfr_tree_codec manifest_codec = {
    {CFR_TREE_LEAF_RECORDS, true}, manifest_decode, manifest_release};
static const struct cfr_tree_codec refs_codec = {
    {CFR_TREE_LEAF_PACKED, false}, refs_decode, refs_release};

static int
page_check(const struct cfr_tree_codec *codec, const uint8_t *p, size_t n,
           uint32_t *level_r, size_t *count_r, struct cfr_err *err)
{
    struct cfr_tree_page page;
    *level_r = 0;
    *count_r = 0;
    int rc = codec->decode(p, n, &page, err);
    if (rc == 0) {
        *level_r = page.level;
        *count_r = page.n_items;
    }
    codec->release(&page);
    return rc;
}

int
cfr_snap_manifest_page_check(const uint8_t *p, size_t n, uint32_t *level_r,
                             size_t *count_r, struct cfr_err *err)
{
    return page_check(&manifest_codec, p, n, level_r, count_r, err);
}

int
cfr_snap_refs_page_check(const uint8_t *p, size_t n, uint32_t *level_r,
                         size_t *count_r, struct cfr_err *err)
{
    return page_check(&refs_codec, p, n, level_r, count_r, err);
}

/* Manifest writer and reader. */

int
cfr_snap_manifest_writer_new(const struct cfr_tree_params *params,
                             cfr_tree_put_fn *put, void *ctx,
                             struct cfr_snap_manifest_writer **w_r,
                             struct cfr_err *err)
{
    int rc;
    struct cfr_tree_params defaults;
    struct cfr_snap_manifest_writer *w = NULL;
    *w_r = NULL;
    if (params == NULL) {
        cfr_snap_manifest_params(&defaults);
        params = &defaults;
    }
    if ((w = cfr_calloc(1, sizeof(*w))) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "manifest writer");
        goto out;
    }
    cfr_buf_init(&w->scratch, CFR_TREE_PAGE_MAX);
    if ((rc = cfr_tree_builder_new(params, &manifest_codec.layout, put, ctx,
                                   &w->tree, err)) != 0) {
        goto out;
    }
    *w_r = w;
    w = NULL;
out:
    cfr_snap_manifest_writer_free(w);
    return rc;
}

void
cfr_snap_manifest_writer_free(struct cfr_snap_manifest_writer *w)
{
    if (w == NULL) {
        return;
    }
    cfr_tree_builder_free(w->tree);
    cfr_buf_fini(&w->scratch);
    cfr_free(w);
}

int
cfr_snap_manifest_writer_add(struct cfr_snap_manifest_writer *w,
                             const struct cfr_snap_entry *e,
                             struct cfr_err *err)
{
    int rc;
    if ((rc = cfr_snap_entry_check(e, err)) != 0) {
        goto out;
    }
    Coffer__V1__ManifestEntry m = COFFER__V1__MANIFEST_ENTRY__INIT;
    /* protobuf-c takes non-const pointers but only reads when packing. */
    m.key.data = (uint8_t *)e->key;
    m.key.len = e->key_len;
    m.kind = (Coffer__V1__EntryKind)e->kind;
    m.info.data = (uint8_t *)e->info;
    m.info.len = e->info_len;
    m.in_new = e->in_new;
    m.size = e->size;
    m.mtime_ns = e->mtime_ns;
    m.mode = e->mode;
    m.message_id.data = (uint8_t *)e->message_id;
    m.message_id.len = e->message_id_len;
    m.chunk_ids.data = (uint8_t *)e->chunk_ids;
    m.chunk_ids.len = e->n_chunks * CFR_SNAP_ID_LEN;
    size_t need = coffer__v1__manifest_entry__get_packed_size(&m);
    cfr_buf_reset(&w->scratch);
    if ((rc = cfr_buf_reserve(&w->scratch, need, err)) != 0) {
        goto out;
    }
    size_t len = coffer__v1__manifest_entry__pack(&m, w->scratch.data);
    CFR_ASSERT(len == need);
    rc = cfr_tree_builder_add(w->tree, e->key, e->key_len, w->scratch.data, len,
                              err);
out:
    return rc;
}

int
cfr_snap_manifest_writer_finish(struct cfr_snap_manifest_writer *w,
                                struct cfr_tree_root *root_r,
                                struct cfr_err *err)
{
    return cfr_tree_builder_finish(w->tree, root_r, err);
}

int
cfr_snap_manifest_reader_new(cfr_tree_get_fn *get, void *ctx,
                             const struct cfr_tree_root *root,
                             struct cfr_snap_manifest_reader **r_r,
                             struct cfr_err *err)
{
    int rc;
    struct cfr_snap_manifest_reader *r = NULL;
    *r_r = NULL;
    if ((r = cfr_calloc(1, sizeof(*r))) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "manifest reader");
        goto out;
    }
    if ((rc = cfr_tree_cursor_new(&manifest_codec, get, ctx, root, &r->cur,
                                  err)) != 0) {
        goto out;
    }
    *r_r = r;
    r = NULL;
out:
    cfr_snap_manifest_reader_free(r);
    return rc;
}

void
cfr_snap_manifest_reader_free(struct cfr_snap_manifest_reader *r)
{
    if (r == NULL) {
        return;
    }
    cfr_tree_cursor_free(r->cur);
    cfr_free(r);
}

int
cfr_snap_manifest_reader_next(struct cfr_snap_manifest_reader *r,
                              struct cfr_snap_entry *e_r, struct cfr_err *err)
{
    int rc;
    memset(e_r, 0, sizeof(*e_r));
    /* Empty leaves only occur as the root of an empty tree. */
    while (r->leaf == NULL || r->idx >= r->leaf->n_items) {
        r->leaf = NULL;
        if ((rc = cfr_tree_cursor_next(r->cur, &r->leaf, err)) <= 0) {
            goto out;
        }
        r->idx = 0;
    }
    const Coffer__V1__ManifestPage *m = r->leaf->msg;
    /* The codec checked the entry; this only builds the view. */
    if ((rc = entry_from_pb(m->entries[r->idx], e_r, err)) != 0) {
        goto out;
    }
    r->idx++;
    rc = 1;
out:
    return rc;
}

/* Reference-list writer and reader. */

int
cfr_snap_refs_writer_new(const struct cfr_tree_params *params,
                         cfr_tree_put_fn *put, void *ctx,
                         struct cfr_snap_refs_writer **w_r, struct cfr_err *err)
{
    int rc;
    struct cfr_tree_params defaults;
    struct cfr_snap_refs_writer *w = NULL;
    *w_r = NULL;
    if (params == NULL) {
        cfr_snap_refs_params(&defaults);
        params = &defaults;
    }
    if ((w = cfr_calloc(1, sizeof(*w))) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "reference-list writer");
        goto out;
    }
    if ((rc = cfr_tree_builder_new(params, &refs_codec.layout, put, ctx,
                                   &w->tree, err)) != 0) {
        goto out;
    }
    *w_r = w;
    w = NULL;
out:
    cfr_snap_refs_writer_free(w);
    return rc;
}

void
cfr_snap_refs_writer_free(struct cfr_snap_refs_writer *w)
{
    if (w == NULL) {
        return;
    }
    cfr_tree_builder_free(w->tree);
    cfr_free(w);
}

int
cfr_snap_refs_writer_add(struct cfr_snap_refs_writer *w,
                         const uint8_t id[CFR_SNAP_ID_LEN], struct cfr_err *err)
{
    return cfr_tree_builder_add(w->tree, id, CFR_SNAP_ID_LEN, id,
                                CFR_SNAP_ID_LEN, err);
}

int
cfr_snap_refs_writer_finish(struct cfr_snap_refs_writer *w,
                            struct cfr_tree_root *root_r, struct cfr_err *err)
{
    return cfr_tree_builder_finish(w->tree, root_r, err);
}

int
cfr_snap_refs_reader_new(cfr_tree_get_fn *get, void *ctx,
                         const struct cfr_tree_root *root,
                         struct cfr_snap_refs_reader **r_r, struct cfr_err *err)
{
    int rc;
    struct cfr_snap_refs_reader *r = NULL;
    *r_r = NULL;
    if ((r = cfr_calloc(1, sizeof(*r))) == NULL) {
        rc = CFR_ERR(err, CFR_ENOMEM, "reference-list reader");
        goto out;
    }
    if ((rc = cfr_tree_cursor_new(&refs_codec, get, ctx, root, &r->cur, err)) !=
        0) {
        goto out;
    }
    *r_r = r;
    r = NULL;
out:
    cfr_snap_refs_reader_free(r);
    return rc;
}

void
cfr_snap_refs_reader_free(struct cfr_snap_refs_reader *r)
{
    if (r == NULL) {
        return;
    }
    cfr_tree_cursor_free(r->cur);
    cfr_free(r);
}

int
cfr_snap_refs_reader_next(struct cfr_snap_refs_reader *r,
                          uint8_t id_r[CFR_SNAP_ID_LEN], struct cfr_err *err)
{
    int rc;
    memset(id_r, 0, CFR_SNAP_ID_LEN);
    while (r->leaf == NULL || r->idx >= r->leaf->n_items) {
        r->leaf = NULL;
        if ((rc = cfr_tree_cursor_next(r->cur, &r->leaf, err)) <= 0) {
            goto out;
        }
        r->idx = 0;
    }
    const Coffer__V1__RefPage *m = r->leaf->msg;
    memcpy(id_r, m->ids.data + r->idx * CFR_SNAP_ID_LEN, CFR_SNAP_ID_LEN);
    r->idx++;
    rc = 1;
out:
    return rc;
}

/* Snapshot header. */

static int
string_in(const char *s, size_t max, const char *what, struct cfr_err *err)
{
    if (strnlen(s, max + 1) > max) {
        return CFR_ERR(err, CFR_EINVAL, "header: %s too long", what);
    }
    return 0;
}

static int
root_check(const struct cfr_tree_root *root, const char *what, int code,
           struct cfr_err *err)
{
    if (root->height < 1 || root->height > CFR_TREE_HEIGHT_MAX) {
        return CFR_ERR(err, code, "header: %s height %u", what, root->height);
    }
    return 0;
}

int
cfr_snap_header_encode(const struct cfr_snap_header *h, struct cfr_buf *out,
                       struct cfr_err *err)
{
    int rc;
    if ((rc = string_in(h->mailbox, CFR_SNAP_MAILBOX_MAX, "mailbox", err)) !=
            0 ||
        (rc = string_in(h->host, CFR_SNAP_HOST_MAX, "host", err)) != 0 ||
        (rc = string_in(h->agent_version, CFR_SNAP_AGENT_MAX, "agent version",
                        err)) != 0 ||
        (rc = root_check(&h->manifest, "manifest", CFR_EINVAL, err)) != 0 ||
        (rc = root_check(&h->refs, "reference list", CFR_EINVAL, err)) != 0) {
        goto out;
    }
    Coffer__V1__SnapshotHeader m = COFFER__V1__SNAPSHOT_HEADER__INIT;
    m.format_version = CFR_SNAP_FORMAT_VERSION;
    m.mailbox.data = (uint8_t *)h->mailbox;
    m.mailbox.len = strlen(h->mailbox);
    m.host.data = (uint8_t *)h->host;
    m.host.len = strlen(h->host);
    m.agent_time_ms = h->agent_time_ms;
    m.manifest_root.data = (uint8_t *)h->manifest.id;
    m.manifest_root.len = CFR_SNAP_ID_LEN;
    m.manifest_height = h->manifest.height;
    m.entries = h->manifest.entries;
    m.total_bytes = h->total_bytes;
    m.refs_root.data = (uint8_t *)h->refs.id;
    m.refs_root.len = CFR_SNAP_ID_LEN;
    m.refs_height = h->refs.height;
    m.refs_count = h->refs.entries;
    if (h->has_parent) {
        m.parent.data = (uint8_t *)h->parent;
        m.parent.len = CFR_SNAP_ID_LEN;
    }
    m.mass_deletion = h->mass_deletion;
    m.vanished = h->vanished;
    m.agent_version.data = (uint8_t *)h->agent_version;
    m.agent_version.len = strlen(h->agent_version);
    size_t need = coffer__v1__snapshot_header__get_packed_size(&m);
    if ((rc = cfr_buf_reserve(out, need, err)) != 0) {
        goto out;
    }
    size_t len = coffer__v1__snapshot_header__pack(&m, out->data + out->len);
    CFR_ASSERT(len == need);
    out->len += len;
out:
    return rc;
}

/* Copies a NUL-free byte string of at most max bytes into out. */
static int
string_out(const ProtobufCBinaryData *b, char *out, size_t max,
           const char *what, struct cfr_err *err)
{
    if (b->len > max || (b->len > 0 && memchr(b->data, 0, b->len) != NULL)) {
        return CFR_ERR(err, CFR_ECORRUPT, "header: bad %s", what);
    }
    if (b->len > 0) {
        memcpy(out, b->data, b->len);
    }
    out[b->len] = '\0';
    return 0;
}

int
cfr_snap_header_decode(const uint8_t *p, size_t n, struct cfr_snap_header *h_r,
                       struct cfr_err *err)
{
    int rc = 0;
    Coffer__V1__SnapshotHeader *m = NULL;
    memset(h_r, 0, sizeof(*h_r));
    if (n > CFR_SNAP_HEADER_MAX) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "header of %zu bytes", n);
        goto out;
    }
    struct cfr_tree_alloc alloc;
    cfr_tree_alloc_init(&alloc);
    m = coffer__v1__snapshot_header__unpack(&alloc.pb, n, p);
    if (m == NULL) {
        rc = alloc.failed
                 ? CFR_ERR(err, CFR_ENOMEM, "decoding a header")
                 : CFR_ERR(err, CFR_ECORRUPT, "header does not decode");
        goto out;
    }
    /* The version decides how to read the rest, so it is checked first. */
    if (m->format_version != CFR_SNAP_FORMAT_VERSION) {
        rc = CFR_ERR(err, m->format_version == 0 ? CFR_ECORRUPT : CFR_EVERSION,
                     "header: format version %u, this build reads %d",
                     m->format_version, CFR_SNAP_FORMAT_VERSION);
        goto out;
    }
    if (m->base.n_unknown_fields != 0) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "header: unknown fields");
        goto out;
    }
    if (m->manifest_root.len != CFR_SNAP_ID_LEN ||
        m->refs_root.len != CFR_SNAP_ID_LEN ||
        (m->parent.len != 0 && m->parent.len != CFR_SNAP_ID_LEN)) {
        rc = CFR_ERR(err, CFR_ECORRUPT, "header: bad ID length");
        goto out;
    }
    if ((rc = string_out(&m->mailbox, h_r->mailbox, CFR_SNAP_MAILBOX_MAX,
                         "mailbox", err)) != 0 ||
        (rc = string_out(&m->host, h_r->host, CFR_SNAP_HOST_MAX, "host",
                         err)) != 0 ||
        (rc = string_out(&m->agent_version, h_r->agent_version,
                         CFR_SNAP_AGENT_MAX, "agent version", err)) != 0) {
        goto out;
    }
    h_r->agent_time_ms = m->agent_time_ms;
    memcpy(h_r->manifest.id, m->manifest_root.data, CFR_SNAP_ID_LEN);
    h_r->manifest.height = m->manifest_height;
    h_r->manifest.entries = m->entries;
    h_r->total_bytes = m->total_bytes;
    memcpy(h_r->refs.id, m->refs_root.data, CFR_SNAP_ID_LEN);
    h_r->refs.height = m->refs_height;
    h_r->refs.entries = m->refs_count;
    h_r->has_parent = m->parent.len == CFR_SNAP_ID_LEN;
    if (h_r->has_parent) {
        memcpy(h_r->parent, m->parent.data, CFR_SNAP_ID_LEN);
    }
    h_r->mass_deletion = m->mass_deletion != 0;
    h_r->vanished = m->vanished;
    if ((rc = root_check(&h_r->manifest, "manifest", CFR_ECORRUPT, err)) != 0 ||
        (rc = root_check(&h_r->refs, "reference list", CFR_ECORRUPT, err)) !=
            0) {
        goto out;
    }
out:
    if (m != NULL) {
        coffer__v1__snapshot_header__free_unpacked(m, cfr_tree_allocator());
    }
    if (rc != 0) {
        memset(h_r, 0, sizeof(*h_r));
    }
    return rc;
}
