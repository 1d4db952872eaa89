/* heartbeat.c - see heartbeat.h. */
#include "cdc/heartbeat.h"

#include <event2/event.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>

#include "cdc/log.h"
#include "cdc/lsn.h"
#include "cdc/metrics.h"
#include "cdc/replconn.h"

struct pgf_heartbeat {
    const char *dsn;
    PGconn *conn;
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

/* Writes one heartbeat.  Blocking, but one short statement on a connection kept open; the
 * statement_timeout bounds it when the server is slow. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pgf_heartbeat *hb = arg;
    char err[1024];
    if (hb->conn == NULL) {
        pgf_replconn_hold_idle_hook(1); /* we are inside the loop's callback */
        hb->conn = pgf_replconn_open(hb->dsn, 0, err, sizeof err);
        pgf_replconn_hold_idle_hook(0);
        if (hb->conn == NULL) {
            warn_throttled(hb, err);
            return;
        }
        PQclear(PQexec(hb->conn, "SET statement_timeout = '5s'"));
    }
    PGresult *res = PQexec(hb->conn, "SELECT pg_logical_emit_message(true, '" PGF_HEARTBEAT_PREFIX "', now()::text)");
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        pgf_metrics.heartbeats++;
    } else {
        char msg[1200];
        snprintf(msg, sizeof msg, "%s%s", PQresultErrorMessage(res),
                 PQstatus(hb->conn) == CONNECTION_OK
                     ? " (the role needs: GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO it)"
                     : "");
        warn_throttled(hb, msg);
        if (PQstatus(hb->conn) != CONNECTION_OK) {
            PQfinish(hb->conn);
            hb->conn = NULL;
        }
    }
    PQclear(res);
}

/* Arms the persistent timer; see heartbeat.h. */
struct pgf_heartbeat *pgf_heartbeat_start(struct event_base *base, const char *dsn, int interval_ms)
{
    struct pgf_heartbeat *hb = calloc(1, sizeof *hb);
    if (hb == NULL)
        return NULL;
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
    PQfinish(hb->conn);
    free(hb);
}
