/* heartbeat.c - see heartbeat.h. */
#include "cdc/heartbeat.h"

#include <event2/event.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/log.h"
#include "common/lsn.h"
#include "cdc/metrics.h"
#include "cdc/pgconn.h"
#include "decoders/txn.h"

struct pgf_heartbeat {
    struct event_base *base;
    const char *dsn;
    struct pgf_pgconn *pc; /* NULL until a tick connects; dropped after a connection error */
    int ready;             /* connected and session set up */
    struct event *timer;
    int64_t last_warn_us;
};

/* Logs a failure at most once a minute, so a long outage does not flood the log. */
static void warn_throttled(struct pgf_heartbeat *hb, const char *what)
{
    int64_t now = pgf_pgtime_now();
    pgf_metrics.heartbeat_errors++;
    if (now - hb->last_warn_us >= 60 * 1000000LL) {
        hb->last_warn_us = now;
        pgf_warn("heartbeat: %s", what);
    }
}

/* Drops the connection after an error that may have broken it; the next tick reconnects. */
static void drop(struct pgf_heartbeat *hb)
{
    pgf_pgconn_free(hb->pc);
    hb->pc = NULL;
    hb->ready = 0;
}

/* The heartbeat's answer. */
static void on_written(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    struct pgf_heartbeat *hb = arg;
    if (err == NULL) {
        pgf_metrics.heartbeats++;
        return;
    }
    char msg[1200];
    int alive = PQstatus(pgf_pgconn_pq(pc)) == CONNECTION_OK && res != NULL;
    snprintf(msg, sizeof msg, "%s%s%s%s", err,
             alive ? " (the role needs: GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO "
                   : "",
             alive ? PQuser(pgf_pgconn_pq(pc)) : "", alive ? ";)" : "");
    warn_throttled(hb, msg);
    if (!alive)
        drop(hb);
}

static void on_tick(evutil_socket_t fd, short what, void *arg);

/* The session is set up: the first heartbeat goes now, the rest on the timer. */
static void on_session(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    (void)pc;
    (void)res;
    struct pgf_heartbeat *hb = arg;
    if (err) {
        warn_throttled(hb, err);
        drop(hb);
        return;
    }
    hb->ready = 1;
    on_tick(-1, 0, hb);
}

/* Connected, or not: bound each statement, so a slow server answers with an error. */
static void on_connected(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    (void)res;
    struct pgf_heartbeat *hb = arg;
    if (err || pgf_pgconn_query(pc, "SET statement_timeout = '5s'", 0, on_session, hb) != 0) {
        warn_throttled(hb, err ? err : "cannot send to PostgreSQL");
        drop(hb);
    }
}

/* Writes one heartbeat, on the loop: a tick that finds the last one still unanswered (a slow
 * or frozen server) skips, so nothing waits and nothing piles up. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pgf_heartbeat *hb = arg;
    if (hb->pc == NULL) {
        hb->pc = pgf_pgconn_connect(hb->base, hb->dsn, 0, 10000, on_connected, hb);
        return;
    }
    if (!hb->ready || pgf_pgconn_busy(hb->pc))
        return;
    if (pgf_pgconn_query(hb->pc, "SELECT pg_logical_emit_message(true, '" PGF_HEARTBEAT_PREFIX "', now()::text)", 0,
                         on_written, hb) != 0) {
        warn_throttled(hb, "cannot send to PostgreSQL");
        drop(hb);
    }
}

/* Arms the persistent timer; see heartbeat.h. */
struct pgf_heartbeat *pgf_heartbeat_start(struct event_base *base, const char *dsn, int interval_ms)
{
    struct pgf_heartbeat *hb = calloc(1, sizeof *hb);
    if (hb == NULL)
        return NULL;
    hb->base = base;
    hb->dsn = dsn;
    hb->timer = event_new(base, -1, EV_PERSIST, on_tick, hb);
    if (hb->timer == NULL) {
        free(hb);
        return NULL;
    }
    struct timeval tv = {interval_ms / 1000, (interval_ms % 1000) * 1000};
    event_add(hb->timer, &tv);
    return hb;
}

/* Frees the timer and the connection. */
void pgf_heartbeat_stop(struct pgf_heartbeat *hb)
{
    if (hb == NULL)
        return;
    event_free(hb->timer);
    pgf_pgconn_free(hb->pc);
    free(hb);
}
