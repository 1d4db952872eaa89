/* redis_sink.c - cache invalidations in Redis through hiredis's async API on our libevent loop.
 *
 * Each transaction collects its commands (deduplicated keys, generations, publishes) while it
 * is decoded and sends nothing before its Commit: a reader must not re-cache a value that is
 * about to change.  Committed transactions are pipelined in commit order over one connection,
 * several per write when they arrive together.  A transaction is acked once Redis has answered
 * every command for it and for every transaction before it.  When the connection breaks,
 * everything unacked is sent again from the oldest transaction, after a backoff; the commands
 * are idempotent (DEL, UNLINK, SET to a position) or harmless to repeat (INCR, PUBLISH).
 * A transaction too large to hold in memory spills its commands to an unlinked temp file. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cdc/histogram.h"
#include "cdc/log.h"
#include "cdc/lsn.h"
#include "sinks/redis_conn.h"
#include "sinks/redis_rules.h"
#include "sinks/redis_sink.h"
#include "sinks/txn_ring.h"

/* An open transaction's commands move to disk beyond this many bytes. */
#define SPILL_BYTES (4u << 20)
/* Commands sent and not yet answered, at most; keeps hiredis's buffers small. */
#define MAX_OUTSTANDING 2048
/* Keys per DEL or UNLINK command. */
#define KEYS_PER_DEL 256

/* What one stored entry asks of Redis. */
enum ekind { E_DEL = PGF_REDIS_DEL, E_UNLINK = PGF_REDIS_UNLINK, E_PUBLISH, E_GEN_LSN, E_GEN_INCR };

/* A growable byte buffer. */
struct buf {
    char *p;
    size_t len, cap;
};

/* One transaction's commands: a spilled prefix in a file, then the rest in memory.  Entries
 * are [kind:1][alen:4][a][blen:4][b]; a is the key or channel, b the payload (or empty). */
struct rtxn {
    struct txn_head h; /* pending: unanswered commands, plus 1 until every command is sent */
    uint64_t commit_lsn;
    int64_t commit_time;
    struct buf mem;
    FILE *spill;
    uint64_t spill_len;
    uint64_t sent;    /* entry bytes already turned into commands */
    size_t counted;   /* bytes counted in inflight_bytes */
};

struct redis_sink {
    struct sink base;
    struct pgf_redis_rules *rules;
    const struct pgf_redis_cfg *cfg;
    struct event_base *evbase;
    struct redis_conn *conn;
    struct redis_conn_handler handler; /* the conn borrows it */

    struct txn_ring ring;
    int open;
    uint64_t send_seq; /* first transaction with commands still to send */

    /* Deduplication of the open transaction: offsets+1 of entries in its mem buffer. */
    uint32_t *set;
    size_t set_cap, set_used;

    struct event *ev_send, *ev_tick;
    int pipe_wr;
    int wake_pending;

    /* Reading spilled entries back: a window of the file of transaction rd_seq. */
    struct buf rd;
    uint64_t rd_seq, rd_off;
    int rd_valid;
    struct buf args;  /* copies of the arguments of the command being built */

    struct pgf_hist latency;
    uint64_t keys_sent, commands_sent, txns_done;
    char failure[512];
};

/* Returns transaction seq's entry. */
static struct rtxn *txn_at(struct redis_sink *r, uint64_t seq)
{
    return txn_ring_at(&r->ring, seq);
}

/* Frees what a transaction holds (its ring slot stays). */
static void txn_release(struct rtxn *t)
{
    free(t->mem.p);
    t->mem = (struct buf){0};
    if (t->spill)
        fclose(t->spill);
    t->spill = NULL;
}

/* Total entry bytes of a transaction. */
static uint64_t txn_size(const struct rtxn *t)
{
    return t->spill_len + t->mem.len;
}

/* Wakes the stream so it sees the new acked_lsn (it may resume reading, or confirm). */
static void wake(struct redis_sink *r)
{
    if (!r->wake_pending && r->pipe_wr >= 0 && write(r->pipe_wr, "1", 1) == 1)
        r->wake_pending = 1;
}

/* Pops every leading transaction Redis has fully answered, recording its latency. */
static void advance(struct redis_sink *r)
{
    uint64_t before = r->base.acked_lsn;
    struct rtxn *t;
    while ((t = txn_ring_done_head(&r->ring)) != NULL) {
        if (txn_size(t) > 0 && t->h.end_lsn != 0) {
            /* A non-transactional message has no commit, so no commit time to measure from. */
            if (t->commit_time != 0)
                pgf_hist_record(&r->latency, pgf_pgtime_now() - t->commit_time);
            r->txns_done++;
        }
        r->base.inflight_bytes -= t->counted < r->base.inflight_bytes ? t->counted : r->base.inflight_bytes;
        if (r->base.inflight_msgs)
            r->base.inflight_msgs--;
        txn_release(t);
        txn_ring_pop(&r->ring, &r->base.acked_lsn);
    }
    if (r->base.acked_lsn != before)
        wake(r);
}

/* ---- building a transaction ---- */

/* Hashes an entry's kind and key (FNV-1a). */
static uint32_t entry_hash(int kind, const char *key, size_t len)
{
    uint32_t h = 2166136261u ^ (uint32_t)kind;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 16777619u;
    return h;
}

/* Reads the key of the mem entry at off. */
static const char *mem_key(const struct rtxn *t, uint32_t off, int *kind, uint32_t *len)
{
    const char *e = t->mem.p + off;
    *kind = (unsigned char)e[0];
    memcpy(len, e + 1, 4);
    return e + 5;
}

/* Looks up (kind, key) in the open transaction's set; returns the slot to use and sets
 * *found when the entry is already there. */
static size_t set_slot(struct redis_sink *r, const struct rtxn *t, int kind, const char *key, size_t len, int *found)
{
    size_t mask = r->set_cap - 1, i = entry_hash(kind, key, len) & mask;
    *found = 0;
    for (; r->set[i] != 0; i = (i + 1) & mask) {
        int k;
        uint32_t l;
        const char *s = mem_key(t, r->set[i] - 1, &k, &l);
        if (k == kind && l == len && memcmp(s, key, len) == 0) {
            *found = 1;
            break;
        }
    }
    return i;
}

/* Doubles the set, rehashing the entries it holds; returns 0 or -1. */
static int set_grow(struct redis_sink *r, const struct rtxn *t)
{
    size_t ncap = r->set_cap ? r->set_cap * 2 : 1024;
    uint32_t *old = r->set;
    size_t oldcap = r->set_cap;
    if ((r->set = calloc(ncap, sizeof *r->set)) == NULL) {
        r->set = old;
        return -1;
    }
    r->set_cap = ncap;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i]) {
            int k, found;
            uint32_t l;
            const char *s = mem_key(t, old[i] - 1, &k, &l);
            r->set[set_slot(r, t, k, s, l, &found)] = old[i];
        }
    free(old);
    return 0;
}

/* Empties the set for the next transaction (or after a spill). */
static void set_clear(struct redis_sink *r)
{
    if (r->set_used)
        memset(r->set, 0, r->set_cap * sizeof *r->set);
    r->set_used = 0;
}

/* Moves the open transaction's entries to its spill file; returns 0 or -1 with errstr. */
static int spill(struct redis_sink *r, struct rtxn *t)
{
    if (t->spill == NULL && (t->spill = tmpfile()) == NULL)
        return sink_fail(&r->base, "cannot create a temporary file for a large transaction: %s", strerror(errno));
    if (fwrite(t->mem.p, 1, t->mem.len, t->spill) != t->mem.len || fflush(t->spill) != 0)
        return sink_fail(&r->base, "cannot write a large transaction to a temporary file: %s", strerror(errno));
    t->spill_len += t->mem.len;
    t->mem.len = 0;
    set_clear(r);
    return 0;
}

/* Appends an entry to the open transaction unless an equal one is there; returns 0 or -1. */
static int add_entry(struct redis_sink *r, int kind, const char *a, size_t alen, const char *b, size_t blen)
{
    struct rtxn *t = txn_at(r, r->ring.tail - 1);
    int dedupe = kind != E_PUBLISH;
    size_t slot = 0;
    if (dedupe) {
        if ((r->set_used + 1) * 2 > r->set_cap && set_grow(r, t) != 0)
            return -1;
        int found;
        slot = set_slot(r, t, kind, a, alen, &found);
        if (found)
            return 0;
    }
    if (alen > UINT32_MAX - 16 || blen > UINT32_MAX - 16 || t->mem.len + alen + blen + 9 > UINT32_MAX)
        return -1;
    if (sink_grow((void **)&t->mem.p, &t->mem.cap, t->mem.len + 9 + alen + blen) != 0)
        return -1;
    char *e = t->mem.p + t->mem.len;
    uint32_t l32 = (uint32_t)alen, b32 = (uint32_t)blen;
    e[0] = (char)kind;
    memcpy(e + 1, &l32, 4);
    memcpy(e + 5, a, alen);
    memcpy(e + 5 + alen, &b32, 4);
    if (blen)
        memcpy(e + 9 + alen, b, blen);
    if (dedupe) {
        r->set[slot] = (uint32_t)t->mem.len + 1;
        r->set_used++;
    }
    t->mem.len += 9 + alen + blen;
    return 0;
}

/* pgf_inval_out callbacks. */
static int out_key(void *ctx, enum pgf_redis_action action, const char *key, size_t len)
{
    return add_entry(ctx, action == PGF_REDIS_UNLINK ? E_UNLINK : E_DEL, key, len, NULL, 0);
}

static int out_generation(void *ctx, enum pgf_redis_generation mode, const char *key, size_t len)
{
    return add_entry(ctx, mode == PGF_GEN_INCR ? E_GEN_INCR : E_GEN_LSN, key, len, NULL, 0);
}

static int out_publish(void *ctx, const char *channel, const char *payload, size_t len)
{
    return add_entry(ctx, E_PUBLISH, channel, strlen(channel), payload, len);
}

/* The rules stay silent (they are pure); what they find worth telling goes to the log here. */
static void out_notice(void *ctx, const char *msg)
{
    (void)ctx;
    pgf_warn("%s", msg);
}

/* Opens the entry of a new transaction; returns 0 or -1. */
static int txn_open(struct redis_sink *r)
{
    if (txn_ring_push(&r->ring) == NULL)
        return -1;
    r->open = 1;
    set_clear(r);
    return 0;
}

/* Collects the commands of one change; see sink_ops. */
static int redis_emit(struct sink *sink, const struct pgf_event *ev)
{
    struct redis_sink *r = (struct redis_sink *)sink;
    if (r->failure[0])
        return sink_fail(sink, "%s", r->failure);
    if (!r->open && txn_open(r) != 0)
        return sink_fail(sink, "out of memory");
    struct pgf_inval_out out = {.key = out_key, .generation = out_generation, .publish = out_publish,
                                .notice = out_notice, .ctx = r};
    if (pgf_redis_rules_apply(r->rules, ev, &out) != 0)
        return sink_fail(sink, "out of memory collecting cache keys");
    struct rtxn *t = txn_at(r, r->ring.tail - 1);
    if (t->mem.len > SPILL_BYTES)
        return spill(r, t);
    return 0;
}

/* ---- sending ---- */

/* Returns len bytes of transaction t's spill file at off, through a read window; NULL on error. */
static const char *spill_bytes(struct redis_sink *r, uint64_t seq, struct rtxn *t, uint64_t off, size_t len)
{
    if (r->rd_valid && r->rd_seq == seq && off >= r->rd_off && off + len <= r->rd_off + r->rd.len)
        return r->rd.p + (off - r->rd_off);
    size_t want = len > (256u << 10) ? len : (256u << 10);
    if (want > t->spill_len - off)
        want = (size_t)(t->spill_len - off);
    if (want < len || sink_grow((void **)&r->rd.p, &r->rd.cap, want) != 0)
        return NULL;
    ssize_t got = pread(fileno(t->spill), r->rd.p, want, (off_t)off);
    if (got < 0 || (size_t)got < len)
        return NULL;
    r->rd.len = (size_t)got;
    r->rd_seq = seq;
    r->rd_off = off;
    r->rd_valid = 1;
    return r->rd.p;
}

/* One decoded entry; pointers are valid until the next read. */
struct entry {
    int kind;
    const char *a, *b;
    uint32_t alen, blen;
    size_t size;
};

/* Reads the entry at offset off of transaction seq; returns 0 or -1 with errstr. */
static int read_entry(struct redis_sink *r, uint64_t seq, struct rtxn *t, uint64_t off, struct entry *e)
{
    const char *p;
    uint32_t alen, blen;
    if (off >= t->spill_len) {
        p = t->mem.p + (off - t->spill_len);
    } else {
        /* Each read covers the earlier ones, so the last pointer holds the whole entry. */
        if ((p = spill_bytes(r, seq, t, off, 5)) == NULL)
            goto fail;
        memcpy(&alen, p + 1, 4);
        if ((p = spill_bytes(r, seq, t, off, 9 + (size_t)alen)) == NULL)
            goto fail;
        memcpy(&blen, p + 5 + alen, 4);
        if ((p = spill_bytes(r, seq, t, off, 9 + (size_t)alen + blen)) == NULL)
            goto fail;
    }
    e->kind = (unsigned char)p[0];
    memcpy(&e->alen, p + 1, 4);
    e->a = p + 5;
    memcpy(&e->blen, p + 5 + e->alen, 4);
    e->b = p + 9 + e->alen;
    e->size = 9 + (size_t)e->alen + e->blen;
    return 0;
fail:
    return sink_fail(&r->base, "cannot read a large transaction back from its temporary file: %s",
                     strerror(errno ? errno : EIO));
}

/* Sends the next command of transaction seq: up to KEYS_PER_DEL consecutive keys of one
 * kind as one DEL/UNLINK, or one PUBLISH, SET or INCR.  Returns 0 or -1 with errstr. */
static int send_next(struct redis_sink *r, uint64_t seq, struct rtxn *t)
{
    struct entry e = {0}; /* read_entry fills it; GCC 12 -O3 cannot tell */
    if (read_entry(r, seq, t, t->sent, &e) != 0)
        return -1;
    const char *argv[KEYS_PER_DEL + 1];
    size_t argl[KEYS_PER_DEL + 1];
    char lsn[24]; /* lives until the command is formatted below */
    int argc = 0;
    if (e.kind == E_DEL || e.kind == E_UNLINK) {
        int kind = e.kind;
        size_t offs[KEYS_PER_DEL];
        r->args.len = 0;
        uint64_t end = txn_size(t);
        /* Copy the keys: reading further entries may move the spill window under them. */
        while (argc < KEYS_PER_DEL) {
            if (sink_grow((void **)&r->args.p, &r->args.cap, r->args.len + e.alen) != 0)
                return sink_fail(&r->base, "out of memory");
            memcpy(r->args.p + r->args.len, e.a, e.alen);
            offs[argc] = r->args.len;
            argl[argc + 1] = e.alen;
            r->args.len += e.alen;
            argc++;
            t->sent += e.size;
            if (t->sent >= end)
                break;
            if (read_entry(r, seq, t, t->sent, &e) != 0)
                return -1;
            if (e.kind != kind)
                break;
        }
        argv[0] = kind == E_UNLINK ? "UNLINK" : "DEL";
        argl[0] = strlen(argv[0]);
        for (int i = 0; i < argc; i++)
            argv[i + 1] = r->args.p + offs[i];
        r->keys_sent += (uint64_t)argc;
        argc++;
    } else {
        switch (e.kind) {
        case E_PUBLISH:
            argv[0] = "PUBLISH", argv[1] = e.a, argv[2] = e.b;
            argl[1] = e.alen, argl[2] = e.blen;
            argc = 3;
            break;
        case E_GEN_LSN:
            /* A decimal position: comparable, and an int to Django's cache, which unpickles
             * anything that is not. */
            snprintf(lsn, sizeof lsn, "%" PRIu64, t->commit_lsn);
            argv[0] = "SET", argv[1] = e.a, argv[2] = lsn;
            argl[1] = e.alen, argl[2] = strlen(lsn);
            argc = 3;
            break;
        case E_GEN_INCR:
            argv[0] = "INCR", argv[1] = e.a;
            argl[1] = e.alen;
            argc = 2;
            break;
        default:
            return sink_fail(&r->base, "corrupt command buffer (entry kind %d)", e.kind);
        }
        argl[0] = strlen(argv[0]);
        r->keys_sent++;
        t->sent += e.size;
    }
    if (redis_conn_send(r->conn, seq, argc, argv, argl, r->base.errstr, sizeof r->base.errstr) != 0)
        return -1;
    t->h.pending++;
    r->commands_sent++;
    return 0;
}

/* Sends what is committed and unsent, in commit order, while the connection is ready and
 * fewer than MAX_OUTSTANDING commands await replies. */
static void kick(struct redis_sink *r)
{
    /* Empty transactions are acked without being sent, so head can pass send_seq. */
    if (r->send_seq < r->ring.head)
        r->send_seq = r->ring.head;
    while (redis_conn_ready(r->conn) && !r->failure[0] && r->send_seq < r->ring.tail) {
        struct rtxn *t = txn_at(r, r->send_seq);
        if (!t->h.committed)
            break;
        while (t->sent < txn_size(t) && redis_conn_outstanding(r->conn) < MAX_OUTSTANDING)
            if (send_next(r, r->send_seq, t) != 0) {
                snprintf(r->failure, sizeof r->failure, "%s", r->base.errstr);
                return;
            }
        if (t->sent < txn_size(t))
            break; /* the reply callbacks call us again */
        if (t->h.end_lsn != 0 && txn_size(t) > 0)
            t->h.pending--; /* every command is out: drop the "unsent" token */
        r->send_seq++;
    }
    advance(r);
}

/* The batch timer: linger_ms (or the end of this pass over the slot's data) has passed. */
static void on_send_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kick(arg);
}

/* Arms the batch timer, or sends at once when window transactions are waiting. */
static void schedule_send(struct redis_sink *r)
{
    unsigned window = r->cfg->window ? r->cfg->window : 64;
    if (r->ring.tail - r->send_seq >= window) {
        kick(r);
        return;
    }
    if (!evtimer_pending(r->ev_send, NULL)) {
        struct timeval tv = {r->cfg->linger_ms / 1000, (r->cfg->linger_ms % 1000) * 1000};
        evtimer_add(r->ev_send, &tv);
    }
}

/* Ends the open transaction; its commands go out with the next batch. */
static int redis_commit(struct sink *sink, const struct pgf_txn *txn)
{
    struct redis_sink *r = (struct redis_sink *)sink;
    if (!r->open && txn_open(r) != 0)
        return sink_fail(sink, "out of memory");
    struct rtxn *t = txn_at(r, r->ring.tail - 1);
    r->open = 0;
    set_clear(r);
    t->h.end_lsn = txn->end_lsn;
    t->h.committed = 1;
    t->commit_lsn = txn->commit_lsn;
    t->commit_time = txn->commit_time;
    if (txn->end_lsn == 0) {
        txn_release(t); /* abandoned: the slot sends it again */
        t->spill_len = 0;
    } else if (txn_size(t) > 0) {
        t->h.pending = 1;
        t->counted = t->mem.len + 64;
        r->base.inflight_bytes += t->counted;
        r->base.inflight_msgs++;
        schedule_send(r);
    }
    advance(r);
    return r->failure[0] ? sink_fail(sink, "%s", r->failure) : 0;
}

/* ---- what the connection reports ---- */

/* Records a permanent failure; the stream stops without confirming what Redis has not done. */
static void fail(struct redis_sink *r, const char *fmt, const char *detail)
{
    if (!r->failure[0])
        snprintf(r->failure, sizeof r->failure, fmt, detail);
    wake(r); /* the stream polls us and sees the failure */
}

/* The connection is ready: say so, and send what waits. */
static void on_conn_up(void *ctx, int attempts)
{
    struct redis_sink *r = ctx;
    size_t n = (size_t)(r->ring.tail - r->ring.head);
    if (attempts > 0)
        pgf_info("redis at %s: connected again after %d attempt%s; resending %zu unacknowledged transaction%s",
                 redis_conn_where(r->conn), attempts, attempts == 1 ? "" : "s", n, n == 1 ? "" : "s");
    else
        pgf_info("redis at %s: connected", redis_conn_where(r->conn));
    r->base.connected = 1;
    kick(r);
}

/* The connection broke: every unacked transaction is sent again from its first command, in
 * order, once it is back. */
static void on_conn_down(void *ctx, const char *why, int attempt, int retry_ms)
{
    struct redis_sink *r = ctx;
    r->base.errors++;
    r->base.connected = 0;
    size_t n = (size_t)(r->ring.tail - r->ring.head);
    if (attempt == 1 || attempt % 10 == 0)
        pgf_warn("redis at %s: %s; %zu transaction%s unacknowledged, retrying in %d ms (attempt %d)",
                 redis_conn_where(r->conn), why, n, n == 1 ? "" : "s", retry_ms, attempt);
    for (uint64_t s = r->ring.head; s < r->ring.tail; s++) {
        struct rtxn *t = txn_at(r, s);
        if (t->h.committed && t->h.end_lsn != 0 && txn_size(t) > 0) {
            t->h.pending = 1;
            t->sent = 0;
        }
    }
    r->send_seq = r->ring.head;
}

/* A reconnection attempt starts. */
static void on_conn_retrying(void *ctx)
{
    struct redis_sink *r = ctx;
    r->base.retries++;
}

/* A reply to a transaction's command. */
static void on_conn_reply(void *ctx, uint64_t seq, const char *error)
{
    struct redis_sink *r = ctx;
    if (error) {
        r->base.errors++;
        fail(r, "Redis refused a command: %s; nothing after it is confirmed. Check the rules (a generation "
                "key holding a non-number?) and the ACL of redis.username", error);
        return;
    }
    if (seq >= r->ring.head && seq < r->ring.tail && txn_at(r, seq)->h.pending > 0)
        txn_at(r, seq)->h.pending--;
    kick(r);
}

/* The handshake was refused: nothing will be delivered. */
static void on_conn_refused(void *ctx, const char *msg)
{
    fail(ctx, "%s", msg);
}

/* ---- the sink table ---- */

/* Nothing to pull: replies arrive on the event loop.  Drains the wake pipe; reports failure. */
static int redis_poll(struct sink *sink)
{
    struct redis_sink *r = (struct redis_sink *)sink;
    char drain[64];
    while (read(sink->wake_fd, drain, sizeof drain) > 0)
        ;
    r->wake_pending = 0;
    advance(r);
    return r->failure[0] ? sink_fail(sink, "%s", r->failure) : 0;
}

/* Wakes event_base_loop(EVLOOP_ONCE) in flush so it can check the deadline. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* Runs the event loop until every committed transaction is acked or timeout_ms passes. */
static int redis_flush(struct sink *sink, int timeout_ms)
{
    struct redis_sink *r = (struct redis_sink *)sink;
    int64_t deadline = pgf_pgtime_now() + (int64_t)timeout_ms * 1000;
    kick(r);
    for (;;) {
        advance(r);
        int waiting = r->ring.head < r->ring.tail && txn_at(r, r->ring.head)->h.committed;
        if (!waiting || r->failure[0] || pgf_pgtime_now() >= deadline)
            break;
        struct timeval tv = {0, 100000};
        evtimer_add(r->ev_tick, &tv);
        event_base_loop(r->evbase, EVLOOP_ONCE);
    }
    if (r->failure[0])
        return sink_fail(sink, "%s", r->failure);
    if (r->ring.head < r->ring.tail && txn_at(r, r->ring.head)->h.committed) {
        sink_fail(sink, "%zu transactions still unacknowledged by Redis after %d ms; they were not "
                        "confirmed and will be replayed on restart",
                  (size_t)(r->ring.tail - r->ring.head), timeout_ms);
        return 1;
    }
    return 0;
}

/* Logs what was done and frees everything; unacked work is simply not confirmed. */
static void redis_close(struct sink *sink)
{
    struct redis_sink *r = (struct redis_sink *)sink;
    if (r->commands_sent > 0)
        pgf_info("redis: %" PRIu64 " transactions, %" PRIu64 " keys in %" PRIu64
                 " commands; commit-to-ack latency p50 %.1f ms, p99 %.1f ms, max %.1f ms",
                 r->txns_done, r->keys_sent, r->commands_sent, pgf_hist_quantile(&r->latency, 0.5) / 1000.0,
                 pgf_hist_quantile(&r->latency, 0.99) / 1000.0, r->latency.max_us / 1000.0);
    redis_conn_close(r->conn);
    struct event *evs[] = {r->ev_send, r->ev_tick};
    for (size_t i = 0; i < sizeof evs / sizeof *evs; i++)
        if (evs[i])
            event_free(evs[i]);
    if (r->ring.slots)
        for (uint64_t s = r->ring.head; s < r->ring.tail; s++)
            txn_release(txn_at(r, s));
    txn_ring_free(&r->ring);
    if (sink->wake_fd >= 0)
        close(sink->wake_fd);
    if (r->pipe_wr >= 0)
        close(r->pipe_wr);
    pgf_redis_rules_free(r->rules);
    free(r->set);
    free(r->rd.p);
    free(r->args.p);
    free(r);
}

static const struct sink_ops redis_ops = {
    .name = "redis",
    .emit = redis_emit,
    .commit = redis_commit,
    .poll = redis_poll,
    .flush = redis_flush,
    .close = redis_close,
};

/* Checks what can be checked before connecting; see redis_sink.h. */
int redis_sink_validate(const struct pgf_redis_cfg *cfg, char *errbuf, size_t errlen)
{
    return redis_conn_check(cfg, errbuf, errlen);
}

/* Opens the sink; see redis_sink.h. */
struct sink *redis_sink_open(const struct redis_sink_config *c, char *errbuf, size_t errlen)
{
    struct redis_sink *r = calloc(1, sizeof *r);
    if (r == NULL) {
        pgf_redis_rules_free(c->rules);
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    r->base.ops = &redis_ops;
    r->base.wake_fd = -1;
    r->base.latency = &r->latency;
    r->pipe_wr = -1;
    r->rules = c->rules;
    r->cfg = c->cfg;
    r->evbase = c->base;
    r->handler = (struct redis_conn_handler){.up = on_conn_up, .down = on_conn_down, .retrying = on_conn_retrying,
                                             .reply = on_conn_reply, .refused = on_conn_refused, .ctx = r};
    if ((r->conn = redis_conn_new(c->cfg, c->base, &r->handler, errbuf, errlen)) == NULL) {
        redis_close(&r->base);
        return NULL;
    }
    int fds[2];
    if (txn_ring_init(&r->ring, sizeof(struct rtxn)) != 0 || set_grow(r, NULL) != 0 || pipe(fds) != 0) {
        snprintf(errbuf, errlen, "cannot set up the Redis sink: %s", strerror(errno ? errno : ENOMEM));
        redis_close(&r->base);
        return NULL;
    }
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    r->base.wake_fd = fds[0];
    r->pipe_wr = fds[1];
    r->ev_send = evtimer_new(r->evbase, on_send_timer, r);
    r->ev_tick = evtimer_new(r->evbase, on_tick, r);
    if (!r->ev_send || !r->ev_tick) {
        snprintf(errbuf, errlen, "out of memory");
        redis_close(&r->base);
        return NULL;
    }
    redis_conn_start(r->conn);
    return &r->base;
}

