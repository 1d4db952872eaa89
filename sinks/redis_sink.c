/* redis_sink.c - cache invalidations in Redis: the sink table over a command buffer per
 * transaction (redis_cmdbuf) and one connection (redis_conn).
 *
 * Each transaction collects its commands while it is decoded and sends nothing before its
 * Commit: a reader must not re-cache a value that is about to change.  Committed transactions
 * are pipelined in commit order over the connection, several per write when they arrive
 * together.  A transaction is acked once Redis has answered every command for it and for every
 * transaction before it.  When the connection breaks, everything unacked is sent again from the
 * oldest transaction once it is back; the commands are idempotent (DEL, UNLINK, SET to a
 * position) or harmless to repeat (INCR, PUBLISH).
 *
 * With standbys listed (redis.replicas), a transaction is not acked after its first pass: it
 * is held until every standby has replayed past its end (the horizon, from cdc/replicas.c),
 * plus redis.second_pass_delay_ms for reads already in flight, and then its commands are sent
 * a second time.  A reader that filled from a standby that had not replayed the change loses
 * its value to that pass.  The slot is confirmed past a transaction only after both passes.
 * After each ack the read-your-writes key (redis.ryw_key) is raised to the acked position. */
#include "sinks/redis_sink.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/histogram.h"
#include "common/log.h"
#include "common/lsn.h"
#include "sinks/redis_cacheops.h"
#include "sinks/redis_cmdbuf.h"
#include "sinks/redis_conn.h"
#include "sinks/redis_lease.h"
#include "sinks/redis_scripts.h"
#include "sinks/txn_ring.h"

/* An open transaction's commands move to disk beyond this many bytes. */
#define SPILL_BYTES (4u << 20)
/* Commands sent and not yet answered, at most; keeps hiredis's buffers small. */
#define MAX_OUTSTANDING 2048
/* The reply tag of the read-your-writes command; transactions' tags are ring sequences. */
#define RYW_TAG UINT64_MAX

/* Where a transaction with commands stands. */
enum pass { P_FIRST = 0, P_HELD, P_SECOND };

/* One transaction in the ring.  h.pending is always replies + unsent + hold (sync_pending), so
 * the ring pops it only when nothing is owed, unsent or held. */
struct rtxn {
    struct txn_head h;
    uint64_t commit_lsn;
    struct redis_cmdbuf *cmds; /* NULL until the transaction has a command */
    size_t counted;            /* bytes counted in inflight_bytes */
    uint32_t replies;          /* commands of the current pass sent and not answered */
    unsigned char unsent;      /* commands of the current pass remain to be sent */
    unsigned char hold;        /* a second pass is still to come */
    unsigned char phase;       /* enum pass */
    unsigned char passes;      /* 2 once the second pass went */
    int64_t first_done_at;     /* when Redis answered the whole first pass */
    int64_t eligible_at;       /* when the standbys were seen past end_lsn; 0 = not yet */
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

    struct event *ev_send, *ev_tick;
    int pipe_wr;
    int wake_pending;

    /* Leases (redis.leases): how their names are made, and scratch to build one in. */
    int leases;
    enum pgf_lease_layout lease_layout;
    const char *lease_suffix;
    size_t lease_suffix_len;
    char *lease_buf;
    size_t lease_cap;
    uint64_t lease_unsupported; /* keys given no lease: no name shares their hash slot */
    int lease_unsupported_warned;

    /* The second pass (standbys listed). */
    int second_pass;
    uint64_t horizon;         /* every standby has replayed up to here */
    int64_t horizon_at;       /* as seen at this time */
    int64_t delay_us, max_wait_us;
    struct event *ev_pass2;   /* the next held transaction falls due */
    size_t held;
    uint64_t second_passes, forced;
    int64_t forced_warn_us;
    struct pgf_hist pass2_latency;

    /* Read-your-writes (redis.ryw_key). */
    char *ryw_key;            /* NULL: off */
    int ryw_inflight;
    uint64_t ryw_sent, ryw_done, idle_lsn;
    int ryw_warned;
    int64_t ryw_retry_at;     /* after a refusal, no raise before this (pgf_mono_us) */
    int ryw_backoff_ms;

    /* The cacheops preset (redis.cacheops): its constants, scratch for one row object and its
     * values, and what was already logged, so each table and column is logged once. */
    int cacheops_on;
    struct pgf_cacheops_call cacheops;
    struct pgf_cacheops_buf cacheops_row;
    const struct pgf_value **cacheops_vals;
    size_t cacheops_vals_cap;
    char **cacheops_logged;
    size_t cacheops_nlogged;
    uint64_t cacheops_rows, cacheops_unconvertible, cacheops_wide;

    struct pgf_hist latency;
    uint64_t keys_sent, leases_sent, commands_sent, txns_done;
    char failure[SINK_ERRSTR_SIZE];
};

/* Returns transaction seq's entry. */
static struct rtxn *txn_at(struct redis_sink *r, uint64_t seq)
{
    return txn_ring_at(&r->ring, seq);
}

/* Total command bytes of a transaction; 0 means there is nothing to send. */
static uint64_t txn_size(const struct rtxn *t)
{
    return t->cmds ? redis_cmdbuf_size(t->cmds) : 0;
}

/* Wakes the stream so it sees the new acked_lsn (it may resume reading, or confirm). */
static void wake(struct redis_sink *r)
{
    if (!r->wake_pending && r->pipe_wr >= 0 && write(r->pipe_wr, "1", 1) == 1)
        r->wake_pending = 1;
}

/* Records a permanent failure; the stream stops without confirming what Redis has not done. */
static void fail(struct redis_sink *r, const char *fmt, const char *detail)
{
    if (!r->failure[0])
        snprintf(r->failure, sizeof r->failure, fmt, detail);
    wake(r); /* the stream polls us and sees the failure */
}

/* Keeps h.pending equal to what the transaction still owes. */
static void sync_pending(struct rtxn *t)
{
    t->h.pending = t->replies + t->unsent + t->hold;
}

/* Raises the read-your-writes key to what is acked (or, with nothing in flight, to the
 * stream's last keepalive position), one command at a time.  It goes out after the replies
 * it reports on, on the same connection, so it never claims more than Redis has done. */
static void ryw_kick(struct redis_sink *r)
{
    uint64_t target = r->base.acked_lsn;
    if (r->ring.head == r->ring.tail && !r->open && r->idle_lsn > target)
        target = r->idle_lsn;
    if (r->ryw_key == NULL || r->ryw_inflight || target <= r->ryw_done || !redis_conn_ready(r->conn) ||
        r->failure[0] || (r->ryw_retry_at && pgf_mono_us() < r->ryw_retry_at))
        return;
    char lsn[24], err[256];
    snprintf(lsn, sizeof lsn, "%" PRIu64, target);
    const char *argv[] = {"EVALSHA", redis_script_sha(REDIS_SCRIPT_RAISE), "1", r->ryw_key, lsn};
    size_t argl[] = {7, 40, 1, strlen(r->ryw_key), strlen(lsn)};
    if (redis_conn_send(r->conn, RYW_TAG, 5, argv, argl, err, sizeof err) != 0)
        return; /* the connection is going down; up() calls again */
    r->ryw_inflight = 1;
    r->ryw_sent = target;
}

/* Pops every leading transaction Redis has fully answered, recording its latency. */
static void advance(struct redis_sink *r)
{
    uint64_t before = r->base.acked_lsn;
    struct rtxn *t;
    while ((t = txn_ring_done_head(&r->ring)) != NULL) {
        if (txn_size(t) > 0 && t->h.end_lsn != 0) {
            /* A non-transactional message has no commit, so no commit time to measure from. */
            /* pgf_pgtime_age refuses an infinite commit time, which is no latency. */
            int64_t age;
            if (t->h.commit_time != 0 && pgf_pgtime_age(pgf_pgtime_now(), t->h.commit_time, &age) == 0) {
                pgf_hist_record(&r->latency, age);
                if (t->passes == 2)
                    pgf_hist_record(&r->pass2_latency, age);
            }
            r->txns_done++;
        }
        r->base.inflight_bytes -= t->counted < r->base.inflight_bytes ? t->counted : r->base.inflight_bytes;
        if (r->base.inflight_msgs)
            r->base.inflight_msgs--;
        redis_cmdbuf_free(t->cmds);
        t->cmds = NULL;
        txn_ring_pop(&r->ring, &r->base.acked_lsn);
    }
    r->base.pending_since = txn_ring_pending_since(&r->ring);
    if (r->base.acked_lsn != before)
        wake(r);
    ryw_kick(r);
}

/* ---- building a transaction ---- */

/* Returns the open transaction's command buffer, made on first use; NULL when out of memory. */
static struct redis_cmdbuf *open_cmds(struct redis_sink *r)
{
    struct rtxn *t = txn_at(r, r->ring.tail - 1);
    if (t->cmds == NULL)
        t->cmds = redis_cmdbuf_new(SPILL_BYTES);
    return t->cmds;
}

/* pgf_inval_out callbacks: the rules' keys become commands of the open transaction. */
static int out_key(void *ctx, enum pgf_redis_action action, const char *key, size_t len)
{
    struct redis_sink *r = ctx;
    struct redis_cmdbuf *b = open_cmds(r);
    enum redis_cmd_kind kind = action == PGF_REDIS_UNLINK ? REDIS_CMD_UNLINK : REDIS_CMD_DEL;
    if (b == NULL)
        return -1;
    if (!r->leases)
        return redis_cmdbuf_add_key(b, kind, key, len);
    if (sink_grow((void **)&r->lease_buf, &r->lease_cap, pgf_redis_lease_key_max(r->lease_suffix_len, len)) != 0)
        return -1;
    long n = pgf_redis_lease_key(r->lease_layout, r->lease_suffix, r->lease_suffix_len, key, len, r->lease_buf,
                                 r->lease_cap);
    if (n < 0)
        return -1;
    if (n == 0) {
        r->lease_unsupported++;
        if (!r->lease_unsupported_warned) {
            r->lease_unsupported_warned = 1;
            pgf_warn("redis: key '%.*s' contains a '}' but no valid {hash tag}, so no lease key can share its "
                     "Redis Cluster hash slot; it is deleted without a lease (counted in "
                     "pgfanout_redis_lease_unsupported_total). Give such keys an explicit {tag}",
                     (int)(len > 200 ? 200 : len), key);
        }
    }
    return redis_cmdbuf_add_key_lease(b, kind, key, len, r->lease_buf, (size_t)n);
}

static int out_generation(void *ctx, enum pgf_redis_generation mode, const char *key, size_t len)
{
    struct redis_cmdbuf *b = open_cmds(ctx);
    return b ? redis_cmdbuf_add_key(b, mode == PGF_GEN_INCR ? REDIS_CMD_GEN_INCR : REDIS_CMD_GEN_LSN, key, len) : -1;
}

static int out_publish(void *ctx, const char *channel, const char *payload, size_t len)
{
    struct redis_cmdbuf *b = open_cmds(ctx);
    return b ? redis_cmdbuf_add_publish(b, channel, strlen(channel), payload, len) : -1;
}

/* The rules stay silent (they are pure); what they find worth telling goes to the log here. */
static void out_notice(void *ctx, const char *msg)
{
    (void)ctx;
    pgf_warn("%s", msg);
}

/* ---- the cacheops preset ---- */

/* Logs what (a table, or table.column) once: returns 1 when it was new, 0 when logged before
 * or out of memory (then staying quiet is the lesser harm). */
static int cacheops_log_once(struct redis_sink *r, const char *what)
{
    for (size_t i = 0; i < r->cacheops_nlogged; i++)
        if (strcmp(r->cacheops_logged[i], what) == 0)
            return 0;
    char **grown = realloc(r->cacheops_logged, (r->cacheops_nlogged + 1) * sizeof *grown);
    if (grown == NULL)
        return 0;
    r->cacheops_logged = grown;
    if ((grown[r->cacheops_nlogged] = strdup(what)) == NULL)
        return 0;
    r->cacheops_nlogged++;
    return 1;
}

/* Context of the encoder's report about a column it left out. */
struct cacheops_skip_ctx {
    struct redis_sink *r;
    const struct pgf_relation *rel;
};

/* The encoder left a column out: count it, and say once per column what that costs. */
static void cacheops_skipped(void *arg, uint16_t att, const char *why)
{
    struct cacheops_skip_ctx *c = arg;
    char what[512];
    c->r->cacheops_unconvertible++;
    snprintf(what, sizeof what, "%s.%s.%s", c->rel->nspname, c->rel->relname, c->rel->attrs[att].name);
    if (cacheops_log_once(c->r, what))
        pgf_warn("redis.cacheops: column %s holds %s, which pgfanout cannot write exactly as cacheops does; "
                 "the column is left out, so a cached query filtered on it invalidates all of %s's cached "
                 "queries instead (counted; logged once per column)", what, why, c->rel->relname);
}

/* Queues one row image: vals from img (the old or the new row) with unchanged TOAST values
 * taken from the old image.  Returns 0 or -1 (out of memory). */
static int cacheops_row(struct redis_sink *r, struct redis_cmdbuf *b, const struct pgf_event *ev,
                        const struct pgf_value *img, const struct pgf_value *old)
{
    const struct pgf_relation *rel = ev->rel;
    if (r->cacheops_vals_cap < rel->natts) {
        const struct pgf_value **v = realloc(r->cacheops_vals, rel->natts * sizeof *v);
        if (v == NULL)
            return -1;
        r->cacheops_vals = v;
        r->cacheops_vals_cap = rel->natts;
    }
    for (uint16_t att = 0; att < rel->natts; att++) {
        const struct pgf_value *v = &img[att];
        if (v->kind == PGF_VALUE_UNCHANGED_TOAST && old)
            v = &old[att];
        r->cacheops_vals[att] = v;
    }
    struct cacheops_skip_ctx c = {r, rel};
    r->cacheops_row.len = 0;
    if (pgf_cacheops_encode_row(&r->cacheops, rel, r->cacheops_vals, &r->cacheops_row, cacheops_skipped, &c) != 0)
        return -1;
    r->cacheops_rows++;
    return redis_cmdbuf_add_cacheops(b, &r->cacheops, rel->relname, strlen(rel->relname), r->cacheops_row.p,
                                     r->cacheops_row.len);
}

/* Queues an invalidation of every cached query on rel's table. */
static int cacheops_wide(struct redis_sink *r, struct redis_cmdbuf *b, const struct pgf_relation *rel)
{
    r->cacheops_wide++;
    return redis_cmdbuf_add_cacheops(b, &r->cacheops, rel->relname, strlen(rel->relname), NULL, 0);
}

/* Queues what one change asks of cacheops: the new row of an insert, the old and the new row
 * of an update, the old row of a delete, the whole table for a truncate.  An update without
 * an old row (the table is not REPLICA IDENTITY FULL) cannot say which queries held the row
 * before, so it invalidates the whole table.  Returns 0 or -1 (out of memory). */
static int cacheops_change(struct redis_sink *r, const struct pgf_event *ev)
{
    struct redis_cmdbuf *b;
    if (ev->op == PGF_OP_TRUNCATE) {
        if ((b = open_cmds(r)) == NULL)
            return -1;
        for (uint32_t i = 0; i < ev->truncate.nrels; i++)
            if (cacheops_wide(r, b, ev->truncate.rels[i]) != 0)
                return -1;
        return 0;
    }
    int read = ev->op == PGF_OP_READ && r->cfg->on_read && strcmp(r->cfg->on_read, "invalidate") == 0;
    if (ev->op != PGF_OP_INSERT && ev->op != PGF_OP_UPDATE && ev->op != PGF_OP_DELETE && !read)
        return 0;
    if ((b = open_cmds(r)) == NULL)
        return -1;
    if (ev->op == PGF_OP_UPDATE && ev->before == NULL) {
        char what[512];
        snprintf(what, sizeof what, "%s.%s", ev->rel->nspname, ev->rel->relname);
        if (cacheops_log_once(r, what))
            pgf_warn("redis.cacheops: an UPDATE of %s came without its old row, so every cached query on %s is "
                     "invalidated (and again for each such update). Fix: ALTER TABLE %s REPLICA IDENTITY FULL",
                     what, ev->rel->relname, what);
        return cacheops_wide(r, b, ev->rel);
    }
    if (ev->op == PGF_OP_UPDATE || ev->op == PGF_OP_DELETE)
        if (cacheops_row(r, b, ev, ev->before ? ev->before : ev->key, NULL) != 0)
            return -1;
    if (ev->after && cacheops_row(r, b, ev, ev->after, ev->before) != 0)
        return -1;
    return 0;
}

/* Opens the entry of a new transaction; returns 0 or -1. */
static int txn_open(struct redis_sink *r)
{
    if (txn_ring_push(&r->ring) == NULL)
        return -1;
    r->open = 1;
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
    if (pgf_redis_rules_apply(r->rules, ev, &out) != 0 || (r->cacheops_on && cacheops_change(r, ev) != 0))
        return sink_fail(sink, "out of memory collecting cache keys");
    struct rtxn *t = txn_at(r, r->ring.tail - 1);
    if (t->cmds && redis_cmdbuf_end_change(t->cmds, sink->errstr, sizeof sink->errstr) != 0)
        return -1;
    return 0;
}

/* ---- sending ---- */

/* Sends the next command of transaction seq, if any.  Returns 0 or -1 with errstr. */
static int send_next(struct redis_sink *r, uint64_t seq, struct rtxn *t)
{
    struct redis_cmd cmd;
    int rc = redis_cmdbuf_next(t->cmds, t->commit_lsn, &cmd, r->base.errstr, sizeof r->base.errstr);
    if (rc <= 0)
        return rc;
    char end[24];
    if (t->phase == P_SECOND && cmd.argc == 3 && strcmp(cmd.argv[0], "SET") == 0) {
        /* A generation key (generation: lsn) goes to the end LSN, and only upward: a later
         * transaction's first pass may have set it higher already, and caches filled from a
         * stale standby under this transaction's generation are orphaned. */
        snprintf(end, sizeof end, "%" PRIu64, t->h.end_lsn);
        const char *key = cmd.argv[1];
        size_t keylen = cmd.argl[1];
        cmd.argc = 5;
        cmd.argv[0] = "EVALSHA", cmd.argl[0] = 7;
        cmd.argv[1] = redis_script_sha(REDIS_SCRIPT_RAISE), cmd.argl[1] = 40;
        cmd.argv[2] = "1", cmd.argl[2] = 1;
        cmd.argv[3] = key, cmd.argl[3] = keylen;
        cmd.argv[4] = end, cmd.argl[4] = strlen(end);
    }
    if (redis_conn_send(r->conn, seq, cmd.argc, cmd.argv, cmd.argl, r->base.errstr, sizeof r->base.errstr) != 0)
        return -1;
    t->replies++;
    sync_pending(t);
    r->keys_sent += cmd.nkeys - cmd.nleases;
    r->leases_sent += cmd.nleases;
    r->commands_sent++;
    return 0;
}

/* Sends the unsent commands of transaction seq's current pass while the window allows;
 * returns 1 when all went, 0 when some wait for replies, -1 on failure (recorded). */
static int send_pass(struct redis_sink *r, uint64_t seq, struct rtxn *t)
{
    while (redis_cmdbuf_unsent(t->cmds)) {
        if (redis_conn_outstanding(r->conn) >= MAX_OUTSTANDING)
            return 0; /* the reply callbacks call us again */
        if (send_next(r, seq, t) != 0) {
            snprintf(r->failure, sizeof r->failure, "%s", r->base.errstr);
            return -1;
        }
    }
    t->unsent = 0; /* every command is out: drop the "unsent" token */
    sync_pending(t);
    return 1;
}

/* Sends what is committed and unsent: second passes (older transactions) first, then first
 * passes in commit order, while the connection is ready and fewer than MAX_OUTSTANDING
 * commands await replies. */
static void kick(struct redis_sink *r)
{
    /* Empty transactions are acked without being sent, so head can pass send_seq. */
    if (r->send_seq < r->ring.head)
        r->send_seq = r->ring.head;
    /* Second passes form a prefix of the transactions with commands: they fall due in order.
     * Bounded by tail, not send_seq: after a reconnect send_seq restarts at head, and a second
     * pass cut off by it must be sent again before the first-pass loop walks past it. */
    for (uint64_t s = r->ring.head; s < r->ring.tail && r->second_pass; s++) {
        struct rtxn *t = txn_at(r, s);
        if (!redis_conn_ready(r->conn) || r->failure[0] || (txn_size(t) > 0 && t->phase != P_SECOND))
            break;
        if (t->phase == P_SECOND && t->unsent && send_pass(r, s, t) <= 0)
            break;
    }
    while (redis_conn_ready(r->conn) && !r->failure[0] && r->send_seq < r->ring.tail) {
        struct rtxn *t = txn_at(r, r->send_seq);
        if (!t->h.committed)
            break;
        if (t->phase == P_FIRST && t->unsent && send_pass(r, r->send_seq, t) <= 0)
            break;
        r->send_seq++;
    }
    advance(r);
}

/* ---- the second pass ---- */

/* Starts a held transaction's second pass: the same commands again, from the first. */
static void start_second_pass(struct redis_sink *r, struct rtxn *t)
{
    t->phase = P_SECOND;
    t->passes = 2;
    t->hold = 0;
    t->unsent = 1;
    sync_pending(t);
    redis_cmdbuf_rewind(t->cmds);
    r->held--;
    r->second_passes++;
}

/* Logs a forced second pass at most once a minute. */
static void warn_forced(struct redis_sink *r, const struct rtxn *t)
{
    int64_t now = pgf_mono_us();
    if (now - r->forced_warn_us < 60 * 1000000LL)
        return;
    r->forced_warn_us = now;
    char end[PGF_LSN_BUFSZ], h[PGF_LSN_BUFSZ];
    pgf_warn("redis: the standbys have replayed only up to %s, not the transaction ending at %s, after "
             "redis.replica_max_wait (%d s): its second pass goes now so the slot does not hold WAL on the "
             "primary (counted in pgfanout_redis_second_pass_forced_total; see pgfanout_replica_up and "
             "pgfanout_replica_lag_seconds for which standby)",
             pgf_lsn_format(r->horizon, h), pgf_lsn_format(t->h.end_lsn, end), (int)(r->max_wait_us / 1000000));
}

/* Starts every held transaction whose second pass is due, in order, and arms the timer for the
 * next one.  Due means: every standby was seen past its end delay_us ago, or its first pass
 * was answered max_wait_us ago (forced). */
static void schedule_second_passes(struct redis_sink *r)
{
    int64_t now = pgf_mono_us(), next = 0;
    int started = 0;
    for (uint64_t s = r->ring.head; s < r->ring.tail && r->held > 0; s++) {
        struct rtxn *t = txn_at(r, s);
        if (txn_size(t) == 0 || t->phase == P_SECOND)
            continue;
        if (t->phase != P_HELD)
            break;
        /* The delay runs from when both the replay and the first pass are done. */
        if (t->eligible_at == 0 && t->h.end_lsn <= r->horizon)
            t->eligible_at = r->horizon_at > t->first_done_at ? r->horizon_at : t->first_done_at;
        if (next) {
            /* An earlier one is not due yet: only stamp the rest the horizon covers now, so each
             * one's delay runs from this replay, not from when the one before it went (which
             * let passes through at one per delay while held transactions piled up).  End LSNs
             * grow along the ring: past the first one not covered, none is. */
            if (t->eligible_at == 0)
                break;
            continue;
        }
        int64_t due = t->eligible_at ? t->eligible_at + r->delay_us : t->first_done_at + r->max_wait_us;
        if (due > now) {
            next = due;
            continue;
        }
        if (t->eligible_at == 0) {
            r->forced++;
            warn_forced(r, t);
        }
        start_second_pass(r, t);
        started = 1;
    }
    if (next) {
        int64_t wait = next - now;
        struct timeval tv = {(time_t)(wait / 1000000), (suseconds_t)(wait % 1000000)};
        evtimer_add(r->ev_pass2, &tv);
    }
    if (started)
        kick(r);
}

/* The first pass of a transaction that waits for a second one was answered in full. */
static void first_pass_done(struct redis_sink *r, struct rtxn *t)
{
    t->phase = P_HELD;
    t->first_done_at = pgf_mono_us();
    r->held++;
    schedule_second_passes(r);
}

/* The timer of the next due second pass. */
static void on_pass2_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    schedule_second_passes(arg);
}

/* Takes the standbys' new horizon; see redis_sink.h. */
void redis_sink_replay_horizon(struct sink *sink, uint64_t horizon, int64_t observed_at_us)
{
    if (sink == NULL || sink->ops->name == NULL || strcmp(sink->ops->name, "redis") != 0)
        return;
    struct redis_sink *r = (struct redis_sink *)sink;
    if (horizon <= r->horizon)
        return;
    r->horizon = horizon;
    r->horizon_at = observed_at_us;
    schedule_second_passes(r);
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
    if (t->cmds)
        redis_cmdbuf_seal(t->cmds);
    t->h.end_lsn = txn->end_lsn;
    t->h.committed = 1;
    t->commit_lsn = txn->commit_lsn;
    t->h.commit_time = txn->commit_time;
    if (txn->end_lsn == 0) {
        if (t->cmds)
            redis_cmdbuf_reset(t->cmds); /* abandoned: the slot sends it again */
    } else if (txn_size(t) > 0) {
        t->unsent = 1;
        t->hold = (unsigned char)r->second_pass;
        sync_pending(t);
        t->counted = redis_cmdbuf_memory(t->cmds) + 64;
        r->base.inflight_bytes += t->counted;
        r->base.inflight_msgs++;
        schedule_send(r);
    }
    advance(r);
    return r->failure[0] ? sink_fail(sink, "%s", r->failure) : 0;
}

/* ---- what the connection reports ---- */

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
    ryw_kick(r);
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
            /* A held transaction's first pass was answered: only its second pass is owed. */
            t->replies = 0;
            if (t->phase != P_HELD) {
                t->unsent = 1;
                redis_cmdbuf_rewind(t->cmds);
            }
            sync_pending(t);
        }
    }
    r->send_seq = r->ring.head;
    r->ryw_inflight = 0;
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
    if (seq == RYW_TAG) {
        r->ryw_inflight = 0;
        if (error == NULL) {
            r->ryw_done = r->ryw_sent;
            r->ryw_retry_at = 0;
            r->ryw_backoff_ms = 0;
        } else {
            /* Invalidation goes on; only waits on the key are affected, and they time out.  The
             * raise is tried again after a doubling pause (an ACL or OOM refusal lasts). */
            r->ryw_backoff_ms = r->ryw_backoff_ms ? (r->ryw_backoff_ms >= 30000 ? 60000 : r->ryw_backoff_ms * 2)
                                                  : 1000;
            r->ryw_retry_at = pgf_mono_us() + (int64_t)r->ryw_backoff_ms * 1000;
            if (!r->ryw_warned) {
                r->ryw_warned = 1;
                pgf_warn("redis: cannot raise the read-your-writes key %s: %s; check that nothing else writes "
                         "that key and that the ACL of redis.username allows EVALSHA on it (redis.ryw_key; "
                         "\"\" turns it off); retrying with a growing pause", r->ryw_key, error);
            }
        }
        ryw_kick(r);
        return;
    }
    if (error) {
        r->base.errors++;
        fail(r, "Redis refused a command: %s; nothing after it is confirmed. Check the rules (a generation "
                "key holding a non-number?) and the ACL of redis.username", error);
        return;
    }
    if (seq >= r->ring.head && seq < r->ring.tail && txn_at(r, seq)->replies > 0) {
        struct rtxn *t = txn_at(r, seq);
        t->replies--;
        sync_pending(t);
        if (t->phase == P_FIRST && t->hold && !t->unsent && t->replies == 0)
            first_pass_done(r, t);
    }
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

/* The stream is between transactions at lsn: with nothing in flight, the read-your-writes
 * key may claim it. */
static void redis_idle(struct sink *sink, uint64_t lsn)
{
    struct redis_sink *r = (struct redis_sink *)sink;
    if (lsn > r->idle_lsn)
        r->idle_lsn = lsn;
    ryw_kick(r);
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
        /* Replies wake the loop; the timer only ends the wait at the deadline. */
        int64_t left = deadline - pgf_pgtime_now();
        struct timeval tv = {(time_t)(left / 1000000), (suseconds_t)(left % 1000000)};
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
        /* The lease count goes last: scripts and the bench parse the line as it was before. */
        pgf_info("redis: %" PRIu64 " transactions, %" PRIu64 " keys in %" PRIu64
                 " commands; commit-to-ack latency p50 %.1f ms, p99 %.1f ms, max %.1f ms; %" PRIu64
                 " lease keys deleted with the keys",
                 r->txns_done, r->keys_sent, r->commands_sent, pgf_hist_quantile(&r->latency, 0.5) / 1000.0,
                 pgf_hist_quantile(&r->latency, 0.99) / 1000.0, r->latency.max_us / 1000.0, r->leases_sent);
    if (r->cacheops_on)
        pgf_info("redis.cacheops: %" PRIu64 " row images sent, %" PRIu64 " values left out as unconvertible, %"
                 PRIu64 " whole-table invalidations", r->cacheops_rows, r->cacheops_unconvertible, r->cacheops_wide);
    redis_conn_close(r->conn);
    if (r->ev_send)
        event_free(r->ev_send);
    if (r->ev_tick)
        event_free(r->ev_tick);
    if (r->ev_pass2)
        event_free(r->ev_pass2);
    free(r->ryw_key);
    if (r->ring.slots)
        for (uint64_t s = r->ring.head; s < r->ring.tail; s++)
            redis_cmdbuf_free(txn_at(r, s)->cmds);
    txn_ring_free(&r->ring);
    if (sink->wake_fd >= 0)
        close(sink->wake_fd);
    if (r->pipe_wr >= 0)
        close(r->pipe_wr);
    pgf_redis_rules_free(r->rules);
    free(r->lease_buf);
    free(r->cacheops_row.p);
    free(r->cacheops_vals);
    for (size_t i = 0; i < r->cacheops_nlogged; i++)
        free(r->cacheops_logged[i]);
    free(r->cacheops_logged);
    free(r);
}

static const struct sink_ops redis_ops = {
    .name = "redis",
    .emit = redis_emit,
    .commit = redis_commit,
    .poll = redis_poll,
    .flush = redis_flush,
    .idle = redis_idle,
    .close = redis_close,
};

/* Returns 1 when s ends with suffix (of len n), else 0. */
static int ends_with(const char *s, const char *suffix, size_t n)
{
    size_t len = strlen(s);
    return n > 0 && len >= n && memcmp(s + len - n, suffix, n) == 0;
}

/* Warns about each key template or table key that ends with the lease suffix: that key could
 * be some other key's lease, and the lease scripts would then read a cached value as a token. */
static void warn_lease_collisions(const struct redis_sink *r)
{
    const struct pgf_redis_cfg *cfg = r->cfg;
    for (unsigned i = 0; r->leases && r->lease_layout == PGF_LEASE_SUFFIX && i < cfg->rules_count; i++) {
        const struct pgf_redis_rule_cfg *ru = &cfg->rules[i];
        for (unsigned k = 0; k < ru->keys_count + ru->table_keys_count; k++) {
            const char *key = k < ru->keys_count ? ru->keys[k] : ru->table_keys[k - ru->keys_count];
            if (ends_with(key, r->lease_suffix, r->lease_suffix_len))
                pgf_warn("redis: key '%s' of the rule for %s ends with redis.lease_suffix '%s', so it can be "
                         "another key's lease key; choose another suffix or key name", key, ru->table,
                         r->lease_suffix);
        }
    }
}

/* Checks what can be checked before connecting; see redis_sink.h. */
int redis_sink_validate(const struct pgf_redis_cfg *cfg, char *errbuf, size_t errlen)
{
    /* An empty suffix would make every lease its own key: the fill script would then see its
     * token as the cached value. */
    if (cfg->leases && cfg->lease_suffix && cfg->lease_suffix[0] == '\0') {
        snprintf(errbuf, errlen, "redis.lease_suffix is empty, so each lease key would be its cache key; set "
                 "a suffix such as \":lease\", or redis.leases: false");
        return -1;
    }
    return redis_conn_check(cfg, errbuf, errlen);
}

/* Reports the lease counters; see redis_sink.h. */
int redis_sink_lease_counts(const struct sink *sink, uint64_t *leases, uint64_t *unsupported)
{
    if (sink == NULL || sink->ops != &redis_ops)
        return -1;
    const struct redis_sink *r = (const struct redis_sink *)sink;
    *leases = r->leases_sent;
    *unsupported = r->lease_unsupported;
    return 0;
}

/* Reports the second pass's figures; see redis_sink.h. */
int redis_sink_pass_stats(const struct sink *sink, struct redis_sink_pass_stats *st)
{
    if (sink == NULL || sink->ops != &redis_ops)
        return -1;
    const struct redis_sink *r = (const struct redis_sink *)sink;
    *st = (struct redis_sink_pass_stats){.second_pass = &r->pass2_latency, .second_passes = r->second_passes,
                                         .forced = r->forced, .held = r->held, .horizon = r->horizon,
                                         .ryw_lsn = r->ryw_done};
    return 0;
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
    r->leases = c->cfg->leases;
    r->lease_layout = c->cfg->lease_layout && strcmp(c->cfg->lease_layout, "cluster") == 0 ? PGF_LEASE_CLUSTER
                                                                                          : PGF_LEASE_SUFFIX;
    r->lease_suffix = c->cfg->lease_suffix ? c->cfg->lease_suffix : ":lease";
    r->lease_suffix_len = strlen(r->lease_suffix);
    if (c->cfg->cacheops) {
        const struct pgf_cacheops_cfg *co = c->cfg->cacheops;
        r->cacheops_on = 1;
        r->cacheops = (struct pgf_cacheops_call){.prefix = co->prefix ? co->prefix : "", .insideout = co->insideout,
                                                 .variants = co->decimal_variants ? *co->decimal_variants : 1};
    }
    r->evbase = c->base;
    r->handler = (struct redis_conn_handler){.up = on_conn_up, .down = on_conn_down, .retrying = on_conn_retrying,
                                             .reply = on_conn_reply, .refused = on_conn_refused, .ctx = r};
    if ((r->conn = redis_conn_new(c->cfg, c->base, &r->handler, errbuf, errlen)) == NULL) {
        redis_close(&r->base);
        return NULL;
    }
    int fds[2];
    if (txn_ring_init(&r->ring, sizeof(struct rtxn)) != 0 || pipe(fds) != 0) {
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
    r->ev_pass2 = evtimer_new(r->evbase, on_pass2_timer, r);
    r->second_pass = c->second_pass != 0;
    if (c->second_pass == 1) {
        /* No standbys: every transaction counts as replayed once its first pass is done. */
        r->horizon = UINT64_MAX;
        r->horizon_at = 1;
    }
    r->delay_us = (int64_t)c->cfg->second_pass_delay_ms * 1000;
    r->max_wait_us = (int64_t)c->cfg->replica_max_wait_ms * 1000;
    const char *ryw = c->cfg->ryw_key;
    char dflt[256];
    if (ryw == NULL) {
        snprintf(dflt, sizeof dflt, "pgfanout:ryw:%s", c->slot ? c->slot : "pgfanout");
        ryw = dflt;
    }
    if (ryw[0] != '\0' && (r->ryw_key = strdup(ryw)) == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        redis_close(&r->base);
        return NULL;
    }
    if (!r->ev_send || !r->ev_tick || !r->ev_pass2) {
        snprintf(errbuf, errlen, "out of memory");
        redis_close(&r->base);
        return NULL;
    }
    warn_lease_collisions(r);
    redis_conn_start(r->conn);
    return &r->base;
}
