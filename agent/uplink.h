/*
 * uplink.h - the agent's side of the wire: one run's sealed objects fanned
 * out to every configured vault at once, with a write quorum.
 *
 * A run opens one uplink, which first asks each vault with a configured
 * region where it is (Health; a vault that names another region is
 * REFUSED for the run: it is misconfigured, or not the vault meant), then
 * opens an upload lease on each vault still OK (the sealing session's
 * public key names the run). Then, per batch of at most
 * AGENT_UPLINK_IDS_MAX IDs:
 *
 *   agent_uplink_missing  asks every live vault in parallel which IDs it
 *                         lacks (under the lease, so what a vault already
 *                         holds stays protected until the commit), giving
 *                         per ID the set of vaults that lack it;
 *   agent_uplink_put      queues one sealed object for exactly those
 *                         vaults (the same bytes for each);
 *   agent_uplink_commit   flushes, then commits a snapshot on every vault
 *                         that acknowledged everything it was sent, but
 *                         only when at least the quorum did.
 *
 * The quorum is a count and, with opts.span_regions, a place: the vaults
 * it counts must also be in at least two distinct configured regions, so
 * an acknowledged backup is always off-site. Everywhere below, "the quorum
 * is met" means both; a run whose OK vaults no longer span two regions is
 * lost exactly like one with too few OK vaults (nothing is committed
 * anywhere), and a commit that reached the count but not two regions
 * fails with a message naming the regions that acknowledged it.
 *
 * Vault states (a vault only ever leaves OK, and never comes back in the
 * same run):
 *
 *   OK --Health/OpenLease/Missing/PutObjects/Commit fails, link--> UNREACHABLE
 *      --same, the vault answered with a refusal----------------> REFUSED
 *      --Health names another region than configured------------> REFUSED
 *      --too slow while the others still meet the quorum---------> LAGGING
 *
 * The uplink keeps no set of what it queued (memory would grow with the
 * run): an ID the caller puts twice before the commit is sent twice, and
 * the vault counts the second as already present. Deduplicating within a
 * run is the caller's job.
 *
 * A vault that is not OK gets no more calls, in particular no commit: a
 * vault that missed objects would refuse it anyway, and a commit that
 * cannot reach the quorum is sent nowhere, so a failed run leaves no
 * snapshot behind on any vault. What reached a vault stays there and the
 * next run's Missing finds it (nothing is re-sent).
 *
 * Acknowledged means a PutObjects stream the vault finished with OK: it
 * stores each message as one synced batch and answers once all are.
 * Streams are cut at opts.stream_bytes and at every flush.
 *
 * Threads: one sender thread per vault runs its PutObjects streams from a
 * bounded queue (opts.queue_bytes). The rpc client is blocking (core/rpc.h;
 * gRPC types stay in rpc*.c), so a thread per vault is the simple way to
 * keep every vault busy at its own pace. Missing and Commit run on
 * short-lived threads, one per live vault, joined before the call returns.
 * agent_uplink_put blocks while a target vault's queue is full: a slow
 * vault slows the producer, unless the others still meet the quorum and
 * it has made no room for opts.stall_ms, in which case it is dropped
 * (LAGGING) and its stream cancelled. Memory is bounded by the queues:
 * each object is copied once and shared by every queue holding it.
 *
 * Thread safety: one thread drives an uplink (open, missing, put, flush,
 * commit, report, free); the sender threads are internal.
 */
#ifndef AGENT_UPLINK_H
#define AGENT_UPLINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h" /* struct cfr_err */

#define AGENT_UPLINK_VAULTS_MAX  8
#define AGENT_UPLINK_IDS_MAX     4096 /* IDs per Missing, as the vault allows */
#define AGENT_UPLINK_ID_LEN      32
#define AGENT_UPLINK_LEASE_LEN   16
#define AGENT_UPLINK_SESSION_LEN 32
#define AGENT_UPLINK_NAME_MAX    64
#define AGENT_UPLINK_MSG_MAX     256
#define AGENT_UPLINK_REGION_MAX  32 /* a region name, NUL included */

/* Object kinds: the values of proto ObjectKind. */
enum agent_uplink_kind {
    AGENT_UPLINK_SEALED = 1,   /* an envelope: chunk or manifest page */
    AGENT_UPLINK_REF_PAGE = 2, /* a clear reference-list page */
};

/* A vault's state in this run; never renumbered (reports print them). */
enum agent_uplink_state {
    AGENT_UPLINK_OK = 0,
    AGENT_UPLINK_LAGGING = 1,     /* dropped: too slow, quorum met without */
    AGENT_UPLINK_UNREACHABLE = 2, /* no answer: link down, deadline passed */
    AGENT_UPLINK_REFUSED = 3,     /* the vault answered with an error */
};

/* "ok", "lagging", "unreachable", "refused". */
const char *agent_uplink_state_name(int state);

struct agent_uplink_vault_opts {
    const char *name;        /* for reports and logs; NULL = target */
    const char *target;      /* "host:port" */
    const char *target_name; /* TLS name override; NULL = host part */
    const char *ca_pem;      /* CA the vault's certificate chains to */
    const char *cert_pem;    /* the agent's certificate (role agent) */
    const char *key_pem;     /* its key */
    const char *region;      /* what its Health must report (1..31 bytes);
                              * NULL = not checked */
};

struct agent_uplink_opts {
    const struct agent_uplink_vault_opts *vaults; /* borrowed during open */
    size_t n_vaults;                              /* 1..8 */
    unsigned quorum;   /* vaults that must acknowledge; 0 = all */
    bool span_regions; /* the quorum must also span 2 regions; then every
                        * vault needs a region, 2 distinct at least */
    uint8_t session_public[AGENT_UPLINK_SESSION_LEN]; /* goes to OpenLease */
    uint64_t lease_ttl_ms;     /* 0 = the vault's longest */
    size_t msg_bytes;          /* PutObjects message, framing included;
                                * keep it within the vaults' max_msg
                                * (one larger object goes alone);
                                * 0 = 1 MiB (gRPC holds two more copies) */
    size_t stream_bytes;       /* bytes per stream before it is cut
                                * (acknowledged); 0 = 64 MiB */
    size_t queue_bytes;        /* per vault; 0 = 4 MiB */
    int64_t call_timeout_ms;   /* OpenLease, Missing, Commit; 0 = 30 s */
    int64_t stream_timeout_ms; /* one PutObjects stream; 0 = 300 s */
    int64_t stall_ms;          /* no room for this long: may drop; 0 = 30 s */
};

/* One vault's part in the run, for the run report. */
struct agent_uplink_report {
    char name[AGENT_UPLINK_NAME_MAX];
    char region[AGENT_UPLINK_REGION_MAX]; /* configured; "" = none */
    enum agent_uplink_state state;
    int status; /* gRPC status of the failure; 0 if OK */
    char message[AGENT_UPLINK_MSG_MAX]; /* why it left OK; "" while OK */
    uint64_t objects_present;           /* Missing said the vault had them */
    uint64_t objects_sent;  /* put on the wire in PutObjects messages */
    uint64_t bytes_sent;    /* object bytes of those */
    uint64_t objects_acked; /* in streams the vault finished with OK */
    uint64_t bytes_acked;
    uint64_t objects_stored;  /* of those, new to the vault (its count) */
    uint64_t objects_unacked; /* queued or sent, never acknowledged */
    uint64_t commits;         /* snapshots committed (or already were) */
    bool committed;           /* the last agent_uplink_commit reached it */
};

/* What a commit names (see core/snap.h and proto CommitRequest). */
struct agent_uplink_commit {
    uint8_t mailbox_id[AGENT_UPLINK_ID_LEN];
    uint8_t header_id[AGENT_UPLINK_ID_LEN];
    const uint8_t *header; /* sealed header envelope; borrowed */
    size_t header_len;
    uint8_t refs_id[AGENT_UPLINK_ID_LEN]; /* root of the reference list */
    uint32_t refs_height;
    uint64_t refs_entries;
    uint32_t flags; /* SNAPSHOT_FLAG_* */
    bool hold_previous;
};

struct agent_uplink;

/*
 * Opens a lease on every vault in parallel. Vaults that cannot be reached
 * or refuse are reported and left out. Returns 0 and an owned uplink in
 * *up_r (the options are copied); CFR_EUNAVAIL when fewer than the quorum
 * opened a lease, with *up_r still set so its report names the vaults
 * (free it; nothing else works on it), also when the vaults left OK after
 * the region check do not span two regions under span_regions; CFR_EINVAL
 * for bad options (no vault, more than 8, quorum above n, a bad region, or
 * span_regions with a vault without a region or fewer than two distinct
 * regions), with *up_r NULL.
 * cfr_rpc_global_init must have been called.
 */
int agent_uplink_open(const struct agent_uplink_opts *opts,
                      struct agent_uplink **up_r, struct cfr_err *err);

/*
 * Which vaults lack ids[0..n) (n <= AGENT_UPLINK_IDS_MAX, 32 bytes each):
 * bit v of lack_r[i] is set when live vault v lacks ids[i]. Vaults that
 * fail here leave the run. Returns 0, or CFR_EUNAVAIL when fewer than the
 * quorum are still OK (the run cannot succeed), CFR_EINVAL for bad
 * arguments.
 */
int agent_uplink_missing(struct agent_uplink *up, const uint8_t *ids, size_t n,
                         uint8_t *lack_r, struct cfr_err *err);

/*
 * Queues one object (data copied; borrowed) for the vaults in mask (bits
 * from agent_uplink_missing; vaults no longer OK are skipped). Blocks
 * while a target's queue is full (see the top). Returns 0, CFR_EUNAVAIL
 * when the quorum is lost, CFR_EINVAL for bad arguments.
 */
int agent_uplink_put(struct agent_uplink *up, const uint8_t *id, int kind,
                     const uint8_t *data, size_t len, uint8_t mask,
                     struct cfr_err *err);

/*
 * Waits until every OK vault acknowledged everything queued for it
 * (slow vaults beyond the quorum are dropped after stall_ms). Returns 0
 * when at least the quorum is OK afterwards, else CFR_EUNAVAIL.
 */
int agent_uplink_flush(struct agent_uplink *up, struct cfr_err *err);

/*
 * Flushes, then commits c on every OK vault in parallel, but sends nothing
 * unless at least the quorum is OK (each has then acknowledged every
 * object it was sent). Returns 0 when at least the quorum committed,
 * CFR_EUNAVAIL otherwise. May be called once per snapshot of the run.
 */
int agent_uplink_commit(struct agent_uplink *up,
                        const struct agent_uplink_commit *c,
                        struct cfr_err *err);

/* Number of configured vaults (reports are indexed 0..n-1). */
size_t agent_uplink_count(const struct agent_uplink *up);
/* Vaults currently OK. */
size_t agent_uplink_live(struct agent_uplink *up);
/* Vault i's report so far into *r. */
void agent_uplink_report(struct agent_uplink *up, size_t i,
                         struct agent_uplink_report *r);

/*
 * Cancels every stream still open, joins the threads and frees. Nothing
 * queued and unacknowledged is sent after this; no commit is made.
 * Accepts NULL.
 */
void agent_uplink_free(struct agent_uplink *up);

/* ---- quorum accounting (pure; exposed for the unit test) ------------- */

/*
 * Whether a vault may be dropped for slowness: only when the vaults that
 * would remain OK still meet the quorum. ok counts OK vaults including
 * the candidate.
 */
bool agent_uplink_may_drop(size_t ok, unsigned quorum);
/* The state a failed call leaves a vault in, from its gRPC status. */
enum agent_uplink_state agent_uplink_state_for(int status);
/* The effective quorum: 0 means n; anything above n is invalid (0). */
unsigned agent_uplink_quorum(unsigned quorum, size_t n);
/*
 * Distinct regions among regions[i] for the i (< n <= 32) whose bit is set
 * in mask; NULL and "" count as no region. The span rule holds when this
 * is at least 2.
 */
size_t agent_uplink_regions(const char *const *regions, size_t n,
                            uint32_t mask);
/*
 * Whether the vaults in mask (of n, regions as above) meet quorum (the
 * effective one, 1..n): at least quorum of them and, with span_regions, in
 * at least 2 distinct regions. Every quorum decision of the uplink (go on,
 * drop a slow vault, commit, count a commit) is this on some mask.
 */
bool agent_uplink_quorum_holds(unsigned quorum, bool span_regions,
                               const char *const *regions, size_t n,
                               uint32_t mask);

#endif /* AGENT_UPLINK_H */
