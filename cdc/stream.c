/* stream.c - the replication loop on libevent, after pg_recvlogical.c. */
#include "cdc/stream.h"

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/checkpoint.h"
#include "cdc/keys.h"
#include "common/log.h"
#include "cdc/metrics.h"
#include "cdc/snapshot.h"
#include "common/lsn.h"
#include "decoders/pgoutput.h"
#include "decoders/txn.h"

struct stream {
    PGconn *conn;
    const struct pgf_options *opts;
    struct sink *const *sinks;
    size_t nsinks;
    struct pgo_decoder *dec;
    struct pgf_txn_asm *txns; /* Begin..Commit, --endpos and heartbeats: pgoutput messages to events */
    struct pgf_snapshot *snap; /* snapshot chunks enter the stream at their high watermarks; or NULL */
    struct pgf_keys *keys;     /* chooses each relation's record key */
    struct event_base *base;

    uint64_t received; /* highest WAL position the server told us about */
    struct pgf_checkpoint cp;

    struct event *ev_read;
    int paused; /* too many bytes unacknowledged: not reading the slot */
    int keying; /* a relation's record key is being looked up: not reading the slot */
    volatile sig_atomic_t *stop_signal;
    int stop_requested; /* a signal arrived: stop at the next transaction boundary */
    int64_t stop_at_us;  /* when it arrived (pgf_mono_us): the shutdown timeout counts from here */
    struct event *finish_timer; /* bounds the wait for the current transaction after a signal */
    int failed;
    int lost; /* the connection broke; the caller reconnects */
    int copy_ended; /* the server ended COPY: no status update can be sent any more */
    int stopped; /* stop_loop ran: the loop is shared, so its own break flag is not ours */
    struct sink *failed_sink; /* already reported; not drained again at the end */
};

/* Writes a big-endian 64-bit integer. */
static void put_u64(char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (char)(v & 0xff);
}

/* Reads a big-endian 64-bit integer. */
static uint64_t get_u64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | (unsigned char)p[i];
    return v;
}

/* Sends a standby status update; returns 0, or -1 after logging. */
static int send_feedback(struct stream *st)
{
    uint64_t flushed = pgf_checkpoint_update(&st->cp, st->sinks, st->nsinks);
    uint64_t written = st->cp.written > flushed ? st->cp.written : flushed;
    char msg[1 + 8 + 8 + 8 + 8 + 1];
    msg[0] = 'r';
    put_u64(msg + 1, written);        /* write: handed to the sinks */
    put_u64(msg + 9, flushed);        /* flush: acked by every sink; the slot may advance to here */
    put_u64(msg + 17, flushed);       /* apply: same as flush, nothing is applied later */
    put_u64(msg + 25, (uint64_t)pgf_pgtime_now());
    msg[33] = 0;                      /* no reply wanted */
    if (PQputCopyData(st->conn, msg, sizeof msg) <= 0 || PQflush(st->conn) != 0) {
        pgf_error("cannot send status update to PostgreSQL: %s", PQerrorMessage(st->conn));
        st->lost = 1;
        return -1;
    }
    pgf_metrics.confirmed_lsn = flushed;
    char w[PGF_LSN_BUFSZ], f[PGF_LSN_BUFSZ];
    pgf_debug("status update: written %s, flushed %s", pgf_lsn_format(written, w), pgf_lsn_format(flushed, f));
    return 0;
}

/* Ends the loop; final feedback is sent by the caller once the loop has stopped. */
static void stop_loop(struct stream *st)
{
    st->stopped = 1;
    event_base_loopbreak(st->base);
}

/* Logs a sink's error and stops with failure; nothing it did not ack is confirmed. */
static void sink_failed(struct stream *st, struct sink *sink)
{
    pgf_error("%s sink: %s", sink->ops->name, sink->errstr);
    st->failed = 1;
    st->failed_sink = sink;
    stop_loop(st);
}

/* Hands one event to every sink; returns 0, or -1 after a sink failed (the loop is stopped). */
static int to_sinks(void *ctx, const struct pgf_event *ev)
{
    struct stream *st = ctx;
    pgf_metrics_count(ev);
    for (size_t i = 0; i < st->nsinks; i++)
        if (sink_emit(st->sinks[i], ev) != 0) {
            sink_failed(st, st->sinks[i]);
            return -1;
        }
    return 0;
}

/* Returns the position every sink has acknowledged. */
static uint64_t acked_by_all(const struct stream *st)
{
    uint64_t acked = UINT64_MAX;
    for (size_t i = 0; i < st->nsinks; i++)
        if (st->sinks[i]->acked_lsn < acked)
            acked = st->sinks[i]->acked_lsn;
    return st->nsinks ? acked : 0;
}

/* Tells the snapshot what the sinks acknowledged; stops when snapshot: initial_only is done. */
static void snapshot_poll(struct stream *st)
{
    if (st->snap == NULL)
        return;
    pgf_snapshot_acked(st->snap, acked_by_all(st), pgf_metrics.confirmed_lsn);
    if (pgf_snapshot_finished(st->snap) && !st->stop_requested) {
        pgf_info("snapshot: initial_only is done; stopping");
        st->stop_requested = 1;
        if (!pgf_txn_asm_in_txn(st->txns))
            stop_loop(st);
    }
}

/* The snapshot has news for the stream (initial_only is done). */
static void snapshot_wake(void *ctx)
{
    snapshot_poll(ctx);
}

/* The event stage: the snapshot sees each event first (recording changes of tables it reads,
 * taking its own messages, adding a chunk's rows at its high watermark), then the sinks. */
static int emit_all(void *ctx, const struct pgf_event *ev)
{
    struct stream *st = ctx;
    if (st->snap) {
        int rc = pgf_snapshot_event(st->snap, ev, to_sinks, st);
        if (rc != 0) {
            if (rc < 0 && !st->failed) {
                st->failed = 1;
                stop_loop(st);
            }
            return rc < 0 ? -1 : 0;
        }
    }
    return to_sinks(st, ev);
}

/* Ends a transaction (or a non-transactional message) in every sink and notes it written. */
static int commit_all(void *ctx, const struct pgf_txn *txn)
{
    struct stream *st = ctx;
    for (size_t i = 0; i < st->nsinks; i++)
        if (sink_commit(st->sinks[i], txn) != 0 || sink_poll(st->sinks[i]) != 0) {
            sink_failed(st, st->sinks[i]);
            return -1;
        }
    pgf_checkpoint_written(&st->cp, txn->end_lsn);
    if (st->snap) {
        pgf_snapshot_committed(st->snap, txn);
        snapshot_poll(st);
    }
    if (txn->end_lsn > pgf_metrics.written_lsn)
        pgf_metrics.written_lsn = txn->end_lsn;
    if (txn->commit_time != 0) {
        pgf_metrics.last_commit_time = txn->commit_time;
        pgf_metrics.transactions++;
    }
    return 0;
}

/* Closes an abandoned transaction in every sink: it acks nothing, and errors do not matter
 * any more (the slot sends it again). */
static int abandon_all(void *ctx, const struct pgf_txn *txn)
{
    struct stream *st = ctx;
    for (size_t i = 0; i < st->nsinks; i++)
        sink_commit(st->sinks[i], txn);
    return 0;
}

/* A relation's record key is chosen: set it, then read the slot again unless held back. */
static void on_key(void *arg, uint32_t oid, const uint16_t *atts, uint16_t n)
{
    struct stream *st = arg;
    st->keying = 0;
    if (n == UINT16_MAX || pgo_decoder_set_key(st->dec, oid, atts, n) != 0) {
        if (n != UINT16_MAX)
            pgf_error("cannot set the record key of relation %u (out of memory, or a column it no longer has)",
                      oid);
        st->failed = 1;
        stop_loop(st);
        return;
    }
    if (!st->paused && !st->stopped) {
        event_add(st->ev_read, NULL);
        event_active(st->ev_read, EV_READ, 0); /* libpq may hold data already read */
    }
}

/* Passes one decoded pgoutput message at WAL position lsn through transaction assembly. */
static void handle_message(struct stream *st, uint64_t lsn, const struct pgo_msg *msg)
{
    if (msg->type == PGO_MSG_RELATION)
        pgf_debug("relation %u is %s.%s with %u columns", msg->u.relation->oid, msg->u.relation->nspname,
                  msg->u.relation->relname, msg->u.relation->natts);
    const struct pgf_txn_consumer to_sinks = {.event = emit_all, .commit = commit_all, .ctx = st};
    switch (pgf_txn_asm_feed(st->txns, lsn, msg, &to_sinks)) {
    case PGF_TXN_OK:
        if (msg->type == PGO_MSG_RELATION) {
            /* No change of the table is keyed before its key is known: hold the slot. */
            int rc = pgf_keys_resolve(st->keys, msg->u.relation, on_key, st);
            if (rc > 0) {
                st->keying = 1;
                event_del(st->ev_read);
            } else if (rc < 0) {
                pgf_error("out of memory looking up the record key of %s.%s", msg->u.relation->nspname,
                          msg->u.relation->relname);
                break;
            }
            return;
        }
        /* A signal asks to stop at the next transaction boundary: this may be one. */
        if (st->stop_requested && !pgf_txn_asm_in_txn(st->txns))
            stop_loop(st);
        return;
    case PGF_TXN_ENDPOS: {
        char end[PGF_LSN_BUFSZ], at[PGF_LSN_BUFSZ];
        pgf_info("reached --endpos %s: the next change is at %s; stopping", pgf_lsn_format(st->opts->endpos, end),
                 pgf_lsn_format(lsn, at));
        stop_loop(st);
        return;
    }
    case PGF_TXN_STOPPED:
        return; /* a sink failed: already logged, and the loop stopped */
    case PGF_TXN_OUT_OF_STEP:
        pgf_error("%s message at %X/%X outside a transaction; the stream is out of step",
                  pgo_msg_type_name(msg->type), (unsigned)(lsn >> 32), (unsigned)lsn);
        break;
    case PGF_TXN_OOM:
        pgf_error("out of memory building the event of a %s message at %X/%X", pgo_msg_type_name(msg->type),
                  (unsigned)(lsn >> 32), (unsigned)lsn);
        break;
    }
    st->failed = 1;
    stop_loop(st);
}

/* Handles one CopyData message from the walsender: XLogData or a keepalive. */
static void handle_copydata(struct stream *st, const char *buf, int len)
{
    if (len >= 25 && buf[0] == 'w') {
        uint64_t start = get_u64(buf + 1), wal_end = get_u64(buf + 9);
        if (wal_end > st->received)
            st->received = pgf_metrics.server_lsn = wal_end;
        pgf_metrics.received_bytes += (uint64_t)len - 25;
        pgf_metrics.caught_up = 0;
        struct pgo_msg msg;
        int rc = pgo_decode(st->dec, (const uint8_t *)buf + 25, (size_t)len - 25, &msg);
        if (rc != PGO_OK) {
            char at[PGF_LSN_BUFSZ];
            pgf_error("cannot decode pgoutput data at %s: %s; stopping without confirming it",
                      pgf_lsn_format(start, at), pgo_decoder_errstr(st->dec));
            st->failed = 1;
            stop_loop(st);
            return;
        }
        handle_message(st, start, &msg);
    } else if (len >= 18 && buf[0] == 'k') {
        uint64_t wal_end = get_u64(buf + 1);
        int reply = buf[17] != 0;
        char at[PGF_LSN_BUFSZ];
        pgf_debug("keepalive: server WAL end %s%s", pgf_lsn_format(wal_end, at), reply ? ", reply requested" : "");
        if (wal_end > st->received)
            st->received = pgf_metrics.server_lsn = wal_end;
        int in_txn = pgf_txn_asm_in_txn(st->txns);
        if (!in_txn) {
            pgf_checkpoint_idle(&st->cp, wal_end);
            for (size_t i = 0; i < st->nsinks; i++)
                if (st->sinks[i]->ops->idle)
                    st->sinks[i]->ops->idle(st->sinks[i], wal_end);
            /* The server had nothing more for us up to wal_end: WAL beyond our last commit is
             * other databases' or unpublished tables', so there is no lag to report. */
            pgf_metrics.caught_up = 1;
        }
        /* Answer at once when asked, or the server drops us after wal_sender_timeout. */
        if (reply && send_feedback(st) != 0) {
            stop_loop(st);
            return;
        }
        if (!in_txn && !st->stop_requested && st->opts->has_endpos && wal_end >= st->opts->endpos) {
            char end[PGF_LSN_BUFSZ];
            pgf_info("reached --endpos %s: the server has sent everything before %s; stopping",
                     pgf_lsn_format(st->opts->endpos, end), pgf_lsn_format(wal_end, at));
            stop_loop(st);
        } else if (!in_txn && st->stop_requested) {
            stop_loop(st);
        }
    } else if (len > 0 && (buf[0] == 'w' || buf[0] == 'k')) {
        /* A known message cut short: say so, rather than calling it an unknown type. */
        pgf_error("short replication message: a '%c' message of %d bytes, shorter than its %d-byte header; "
                  "stopping without confirming it", buf[0], len, buf[0] == 'w' ? 25 : 18);
        st->failed = 1;
        stop_loop(st);
    } else {
        pgf_error("unexpected replication message type 0x%02x of %d bytes", len > 0 ? (unsigned char)buf[0] : 0, len);
        st->failed = 1;
        stop_loop(st);
    }
}

/* Returns the bytes emitted but not yet acknowledged, over all sinks. */
static size_t inflight_bytes(const struct stream *st)
{
    size_t n = 0;
    for (size_t i = 0; i < st->nsinks; i++)
        n += st->sinks[i]->inflight_bytes;
    return n;
}

/* True when the sinks owe more acknowledgements than --max-inflight-bytes allows, or one
 * holds records it cannot hand on yet (a full librdkafka queue). */
static int over_limit(const struct stream *st)
{
    for (size_t i = 0; i < st->nsinks; i++)
        if (st->sinks[i]->backlogged)
            return 1;
    return inflight_bytes(st) > st->opts->max_inflight_bytes;
}

/* Stops reading the slot until acks catch up.  The server is not left waiting: the status
 * timer keeps sending updates, which is what it wants from a keepalive reply. */
static void pause_reading(struct stream *st)
{
    if (st->paused)
        return;
    st->paused = 1;
    event_del(st->ev_read);
    /* After a signal too: the transaction may still finish once the sinks catch up, and
     * on_finish_timeout bounds the wait. */
    pgf_debug("back-pressure: %zu bytes unacknowledged, pausing the slot", inflight_bytes(st));
}

/* Resumes reading once in-flight bytes fall to half the bound (hysteresis, so we do not
 * flap at the limit).  libpq may hold data already read, so run the reader at once. */
static void maybe_resume(struct stream *st)
{
    if (!st->paused || inflight_bytes(st) > st->opts->max_inflight_bytes / 2)
        return;
    for (size_t i = 0; i < st->nsinks; i++)
        if (st->sinks[i]->backlogged)
            return;
    st->paused = 0;
    pgf_debug("back-pressure: resumed reading the slot");
    if (st->keying)
        return; /* on_key reads on */
    event_add(st->ev_read, NULL);
    event_active(st->ev_read, EV_READ, 0);
}

/* Reads everything the socket has, then returns to the loop so timers and signals run. */
static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct stream *st = arg;
    if (PQconsumeInput(st->conn) == 0) {
        pgf_error("lost the connection to PostgreSQL: %s", PQerrorMessage(st->conn));
        st->lost = 1;
        stop_loop(st);
        return;
    }
    while (!st->stopped && !st->keying) {
        if (over_limit(st)) {
            pause_reading(st);
            return;
        }
        char *buf = NULL;
        int len = PQgetCopyData(st->conn, &buf, 1);
        if (len == 0)
            return;
        if (len < 0) {
            /* The server ended COPY (it is shutting down) or the socket broke: either way a
             * reconnect resumes from the slot's confirmed position. */
            PGresult *res = len == -1 ? PQgetResult(st->conn) : NULL;
            const char *why = res && PQresultStatus(res) != PGRES_COMMAND_OK ? PQresultErrorMessage(res)
                                                                             : PQerrorMessage(st->conn);
            pgf_error("PostgreSQL ended replication: %s", why);
            st->copy_ended = 1;
            /* undefined_object: pgoutput could not find the publication as of the WAL it decodes. */
            const char *code = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
            if (code && strcmp(code, "42704") == 0) {
                /* pgoutput reads the catalog as of each change: WAL from before the publication
                 * existed cannot be decoded with it, and a reconnect would hit the same wall. */
                pgf_error("the slot \"%s\" was created before publication \"%s\" (or the publication was "
                          "dropped): changes from before it cannot be decoded with it. Fix: drop and recreate "
                          "the slot after the publication (SELECT pg_drop_replication_slot('%s'), then run with "
                          "--create-slot), or skip that WAL with pg_replication_slot_advance",
                          st->opts->slot, st->opts->publication, st->opts->slot);
                st->failed = 1;
            } else {
                st->lost = 1;
            }
            PQclear(res);
            stop_loop(st);
            return;
        }
        handle_copydata(st, buf, len);
        PQfreemem(buf);
    }
}

/* Periodic status update, so the slot advances and the server knows we are alive. */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct stream *st = arg;
    for (size_t i = 0; i < st->nsinks; i++)
        if (sink_poll(st->sinks[i]) != 0) {
            sink_failed(st, st->sinks[i]);
            return;
        }
    maybe_resume(st);
    snapshot_poll(st);
    if (send_feedback(st) != 0)
        stop_loop(st);
}

/* A sink's wake fd is readable: serve its acknowledgements, then maybe read the slot again. */
static void on_sink_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct stream *st = arg;
    for (size_t i = 0; i < st->nsinks; i++)
        if (st->sinks[i]->wake_fd == fd && sink_poll(st->sinks[i]) != 0) {
            sink_failed(st, st->sinks[i]);
            return;
        }
    maybe_resume(st);
    snapshot_poll(st);
}

/* The current transaction did not finish in its share of the shutdown timeout: stop without it. */
static void on_finish_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct stream *st = arg;
    if (st->stopped)
        return;
    pgf_warn("the current transaction did not finish within %.1f s of the signal (half the shutdown timeout); "
             "stopping without it: it stays unconfirmed and is sent again on the next start",
             st->opts->shutdown_timeout_ms / 2000.0);
    stop_loop(st);
}

/* SIGINT/SIGTERM: stop now between transactions, or after the current one commits. */
static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct stream *st = arg;
    pgf_info("received %s, stopping after the current transaction", sig == SIGINT ? "SIGINT" : "SIGTERM");
    int first = !st->stop_requested;
    if (first)
        st->stop_at_us = pgf_mono_us();
    st->stop_requested = 1;
    *st->stop_signal = (sig_atomic_t)sig;
    if (!pgf_txn_asm_in_txn(st->txns)) {
        stop_loop(st);
    } else if (first) { /* a second signal does not move the deadline */
        /* The transaction ends when its Commit is read, which may take long (a huge one) or
         * never come (paused while the broker is down): it gets half the shutdown timeout, the
         * drain the rest.  Stopping at once would leave it half-written in Kafka, to be sent
         * whole again on the next start. */
        int ms = st->opts->shutdown_timeout_ms / 2;
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
        event_add(st->finish_timer, &tv);
    }
}

/* Ends COPY and reads what the server still sends, so a last error is not missed. */
static void end_copy(struct stream *st)
{
    if (PQputCopyEnd(st->conn, NULL) <= 0 || PQflush(st->conn) != 0)
        return;
    char *buf;
    int len;
    while ((len = PQgetCopyData(st->conn, &buf, 0)) > 0)
        PQfreemem(buf); /* after our stop point: not delivered, so not confirmed either */
    PGresult *res;
    while ((res = PQgetResult(st->conn)) != NULL) {
        if (PQresultStatus(res) == PGRES_FATAL_ERROR)
            pgf_warn("PostgreSQL at end of stream: %s", PQresultErrorMessage(res));
        PQclear(res);
    }
}

/* Runs the loop; see stream.h. */
enum pgf_stream_result pgf_stream_run(PGconn *conn, const struct pgf_options *opts, struct sink *const *sinks,
                                      size_t nsinks, uint64_t confirmed, volatile sig_atomic_t *stop_signal,
                                      struct event_base *base, struct pgf_snapshot *snap)
{
    struct stream st = {.conn = conn, .opts = opts, .sinks = sinks, .nsinks = nsinks, .stop_signal = stop_signal,
                        .base = base, .snap = snap};
    /* Start from the slot's position, so no feedback can ever move it backwards. */
    st.cp.written = st.cp.idle = st.cp.confirmed = confirmed;
    st.dec = pgo_decoder_new();
    st.txns = pgf_txn_asm_new(opts->has_endpos, opts->endpos);
    st.keys = pgf_keys_new(base, opts->dsn, opts->key_columns);
    if (st.dec == NULL || st.txns == NULL || st.keys == NULL) {
        pgf_error("out of memory starting the stream");
        pgo_decoder_free(st.dec);
        pgf_txn_asm_free(st.txns);
        pgf_keys_free(st.keys);
        return PGF_STREAM_FAILED;
    }
    struct event *events[8];
    size_t nevents = 0;
    st.ev_read = event_new(st.base, PQsocket(conn), EV_READ | EV_PERSIST, on_readable, &st);
    events[nevents++] = st.ev_read;
    struct event *ev_timer = event_new(st.base, -1, EV_PERSIST, on_timer, &st);
    events[nevents++] = ev_timer;
    events[nevents++] = evsignal_new(st.base, SIGINT, on_signal, &st);
    events[nevents++] = evsignal_new(st.base, SIGTERM, on_signal, &st);
    st.finish_timer = evtimer_new(st.base, on_finish_timeout, &st); /* added by on_signal */
    for (size_t i = 0; i < nsinks && nevents < sizeof events / sizeof *events; i++)
        if (sinks[i]->wake_fd >= 0)
            events[nevents++] = event_new(st.base, sinks[i]->wake_fd, EV_READ | EV_PERSIST, on_sink_wake, &st);
    struct timeval interval = {opts->status_interval_ms / 1000, (opts->status_interval_ms % 1000) * 1000};
    for (size_t i = 0; i < nevents; i++)
        event_add(events[i], events[i] == ev_timer ? &interval : NULL);

    if (snap)
        pgf_snapshot_stream_started(snap, sinks, nsinks, snapshot_wake, &st);
    /* A signal that came while we were connecting still counts. */
    if (*stop_signal)
        st.stop_requested = 1;
    /* libpq may already hold data read during START_REPLICATION; serve it before waiting. */
    else
        on_readable(PQsocket(conn), EV_READ, &st);
    pgf_metrics.streaming = 1;
    if (!st.stopped && !st.stop_requested)
        event_base_dispatch(st.base);
    pgf_metrics.streaming = 0;
    /* The sinks may run the loop while they drain; the slot must not be read meanwhile. */
    for (size_t i = 0; i < nevents; i++)
        event_del(events[i]);

    /* Cut off mid-transaction: the slot will send it again, so close its entry in every sink
     * without acking anything. */
    const struct pgf_txn_consumer abandon = {.commit = abandon_all, .ctx = &st};
    pgf_txn_asm_abandon(st.txns, &abandon);
    if (st.finish_timer)
        event_free(st.finish_timer);
    /* The shutdown timeout counts from the signal: waiting for a transaction to finish took
     * part of it. */
    int drain_ms = opts->shutdown_timeout_ms;
    if (st.stop_requested && st.stop_at_us) {
        int64_t left = opts->shutdown_timeout_ms - (pgf_mono_us() - st.stop_at_us) / 1000;
        drain_ms = left > opts->shutdown_timeout_ms / 2 ? (int)left : opts->shutdown_timeout_ms / 2;
    }
    if (!st.lost) {
        /* Drain what the sinks still owe, then confirm exactly what they acked. */
        for (size_t i = 0; i < nsinks; i++) {
            if (sinks[i] == st.failed_sink)
                continue;
            int rc = sink_flush(sinks[i], drain_ms);
            if (rc > 0) { /* out of time: unconfirmed, so the slot replays it; not an error */
                pgf_warn("%s sink: %s", sinks[i]->ops->name, sinks[i]->errstr);
            } else if (rc < 0) {
                pgf_error("%s sink: %s", sinks[i]->ops->name, sinks[i]->errstr);
                st.failed = 1;
            }
        }
    }
    /* Only a status update the server took inside COPY, which end_copy then closed, is known
     * to be its position; otherwise say what was sent, and the caller asks the server. */
    int told = !st.lost && !st.copy_ended && send_feedback(&st) == 0;
    if (told)
        end_copy(&st);
    char pos[PGF_LSN_BUFSZ];
    if (told)
        pgf_info("stopped; confirmed position %s", pgf_lsn_format(st.cp.confirmed, pos));
    else
        pgf_info("%s; the last position sent to PostgreSQL was %s", st.lost ? "stream interrupted" : "stream ended",
                 pgf_lsn_format(pgf_metrics.confirmed_lsn, pos));

    for (size_t i = 0; i < nevents; i++)
        event_free(events[i]);
    pgf_txn_asm_free(st.txns);
    pgf_keys_free(st.keys);
    pgo_decoder_free(st.dec);
    if (st.failed)
        return PGF_STREAM_FAILED;
    return st.lost ? PGF_STREAM_LOST : PGF_STREAM_DONE;
}
