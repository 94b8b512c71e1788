/*
 * manifest.c - the checked manifest walk (manifest.h).
 *
 * Invariant: a page's bytes reach the tree reader only after the envelope
 * opened (its tag authenticates it under the tenant's key) and its keyed
 * hash equals the ID it was asked for, so a vault can neither forge a page
 * nor answer with another snapshot's page.
 */
#include "manifest.h"

#include "buf.h" /* cfr_hex_encode */
#include "env.h" /* cfr_opener, cfr_env_open */
#include "id.h"  /* cfr_id_equal */
#include "mem.h" /* cfr_calloc */

#define ID_LEN 32
/* Object kinds of coffer_vault.proto, without including the messages. */
#define KIND_SEALED 1

struct restore_manifest {
    struct restore_fetcher *f;
    const struct cfr_keyring *kr;
    struct cfr_opener *op;
    struct cfr_buf env;
    bool damaged; /* the last page fetch failed for the data's sake */
    struct cfr_snap_manifest_reader *reader;
    struct restore_page_cache *cache; /* NULL: none */
};

static int
page_get(void *ctx, const uint8_t id[CFR_TREE_ID_LEN], struct cfr_buf *page,
         struct cfr_err *err)
{
    struct restore_manifest *m = ctx;
    uint8_t again[ID_LEN];
    char hex[2 * ID_LEN + 1];
    int kind = 0, rc;

    if (m->cache != NULL && m->cache->get(m->cache, id, page) == 1) {
        return 0;
    }
    if ((rc = restore_fetcher_get_one(m->f, id, &m->env, &kind, err)) != 0) {
        if (rc == CFR_ENOTFOUND || rc == CFR_ECORRUPT) {
            m->damaged = true;
        }
        return rc;
    }
    m->damaged = true; /* until it opened */
    if (kind != KIND_SEALED) {
        return CFR_ERR(err, CFR_ECORRUPT, "manifest page %s came in clear",
                       cfr_hex_encode(id, ID_LEN, hex));
    }
    if ((rc = cfr_env_open(m->op, CFR_ENV_MANIFEST_PAGE, id, m->env.data,
                           m->env.len, CFR_TREE_PAGE_MAX, page, err)) != 0) {
        return rc;
    }
    /* The agent names pages by their keyed hash (FORMAT.md). */
    cfr_keyring_chunk_id(m->kr, page->data, page->len, again);
    if (!cfr_id_equal(again, id)) {
        cfr_buf_reset(page);
        return CFR_ERR(err, CFR_ECORRUPT,
                       "manifest page %s: content does not match its ID",
                       cfr_hex_encode(id, ID_LEN, hex));
    }
    m->damaged = false;
    if (m->cache != NULL) {
        m->cache->put(m->cache, id, page->data, page->len);
    }
    return 0;
}

int
restore_manifest_open(struct restore_fetcher *f, const struct cfr_keyring *kr,
                      const struct cfr_snap_header *h,
                      struct restore_manifest **m_r, struct cfr_err *err)
{
    return restore_manifest_open_cached(f, kr, h, NULL, m_r, err);
}

int
restore_manifest_open_cached(struct restore_fetcher *f,
                             const struct cfr_keyring *kr,
                             const struct cfr_snap_header *h,
                             struct restore_page_cache *cache,
                             struct restore_manifest **m_r, struct cfr_err *err)
{
    struct restore_manifest *m;
    int rc;

    *m_r = NULL;
    if ((m = cfr_calloc(1, sizeof(*m))) == NULL) {
        return CFR_ERR(err, CFR_ENOMEM, "manifest: out of memory");
    }
    m->f = f;
    m->kr = kr;
    m->cache = cache;
    cfr_buf_init(&m->env, RESTORE_FETCH_MSG_MAX);
    if ((m->op = cfr_opener_new(kr, err)) == NULL) {
        restore_manifest_free(m);
        return err != NULL ? err->code : CFR_ENOMEM;
    }
    if ((rc = cfr_snap_manifest_reader_new(page_get, m, &h->manifest,
                                           &m->reader, err)) != 0) {
        restore_manifest_free(m);
        return rc;
    }
    *m_r = m;
    return 0;
}

int
restore_manifest_next(struct restore_manifest *m, struct cfr_snap_entry *e_r,
                      struct cfr_err *err)
{
    return cfr_snap_manifest_reader_next(m->reader, e_r, err);
}

bool
restore_manifest_damaged(const struct restore_manifest *m, int rc)
{
    return m->damaged || rc == CFR_ECORRUPT || rc == CFR_EAUTH ||
           rc == CFR_EVERSION;
}

void
restore_manifest_free(struct restore_manifest *m)
{
    if (m == NULL) {
        return;
    }
    cfr_snap_manifest_reader_free(m->reader);
    cfr_opener_free(m->op);
    cfr_buf_fini(&m->env);
    cfr_free(m);
}
