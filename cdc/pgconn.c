/* pgconn.c - see pgconn.h. */
#include "cdc/pgconn.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

/* Session settings that pin PostgreSQL's text output, so events do not depend on the
 * server's or the role's defaults; PostgreSQL's own apply worker pins the same ones. */
static const char pinned_options[] =
    "-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3 "
    "-c bytea_output=hex -c TimeZone=UTC";

/* The result a callback took over with pgf_pgconn_take (one loop thread: one at a time). */
static PGresult *taken;

/* Keeps res from being cleared; see pgconn.h. */
void pgf_pgconn_take(PGresult *res)
{
    taken = res;
}

struct pgf_pgconn {
    struct event_base *base;
    PGconn *conn;
    struct event *io;      /* the socket, for what libpq waits on now */
    struct event *timeout; /* the deadline of the connect or query under way */
    int fd;                /* the socket io watches: libpq may change it while connecting */
    enum { PC_IDLE, PC_CONNECTING, PC_SENDING, PC_RECEIVING } state;
    PGresult *last;        /* the newest result of the query under way */
    pgf_pgconn_cb cb;
    void *arg;
};

/* Copies libpq's message without its trailing newline; see pgconn.h. */
void pgf_pgconn_trim(char *buf, size_t len, const char *msg)
{
    snprintf(buf, len, "%s", msg ? msg : "");
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
}

/* Server notices (client_min_messages) go through our logger, in its format. */
static void notice_to_log(void *arg, const char *message)
{
    (void)arg;
    char msg[1024];
    pgf_pgconn_trim(msg, sizeof msg, message);
    pgf_info("PostgreSQL: %s", msg);
}

/* Returns the user's own "options" setting from the DSN, or PGOPTIONS, malloc'd ("" if none). */
static char *user_options(const char *dsn)
{
    char *out = NULL;
    PQconninfoOption *opts = PQconninfoParse(dsn, NULL);
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, "options") == 0 && o->val)
            out = strdup(o->val);
    PQconninfoFree(opts);
    if (out == NULL)
        out = strdup(getenv("PGOPTIONS") ? getenv("PGOPTIONS") : "");
    return out;
}

/* Opens a libpq connection to dsn with our settings, waiting for it when wait is set
 * (PQconnectdbParams) or only starting it (PQconnectStartParams).  Returns it (check
 * PQstatus), or NULL when out of memory. */
static PGconn *open_params(const char *dsn, int replication, int wait)
{
    char *uopts = user_options(dsn);
    size_t olen = sizeof pinned_options + 1 + (uopts ? strlen(uopts) : 0);
    char *options = malloc(olen);
    if (options)
        /* The user's own -c settings come last, so they win. */
        snprintf(options, olen, "%s %s", pinned_options, uopts ? uopts : "");
    /* Keywords are processed in order and the last value wins: the defaults go before the
     * user's DSN, the settings we depend on after it. */
    const char *keys[] = {"connect_timeout", "fallback_application_name", "dbname", "client_encoding",
                          "options", replication ? "replication" : NULL, NULL};
    const char *vals[] = {"10", "pgfanout", dsn, "UTF8", options ? options : pinned_options, "database", NULL};
    PGconn *conn = wait ? PQconnectdbParams(keys, vals, 1) : PQconnectStartParams(keys, vals, 1);
    free(options);
    free(uopts);
    if (conn)
        PQsetNoticeProcessor(conn, notice_to_log, NULL);
    return conn;
}

/* Connects and waits; see pgconn.h. */
PGconn *pgf_pgconn_open_blocking(const char *dsn, int replication)
{
    return open_params(dsn, replication, 1);
}

/* Ends what is under way: drops the events, then calls the callback (last, since it may free
 * pc) with res, which is cleared afterwards. */
static void finish(struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    event_del(pc->io);
    event_del(pc->timeout);
    pc->state = PC_IDLE;
    pc->last = NULL;
    pgf_pgconn_cb cb = pc->cb;
    void *arg = pc->arg;
    taken = NULL;
    cb(arg, pc, res, err);
    if (res != taken)
        PQclear(res);
    taken = NULL;
}

/* Ends with libpq's current message as the error. */
static void fail(struct pgf_pgconn *pc, PGresult *res)
{
    char msg[1024];
    pgf_pgconn_trim(msg, sizeof msg, res ? PQresultErrorMessage(res) : "");
    if (msg[0] == '\0')
        pgf_pgconn_trim(msg, sizeof msg, PQerrorMessage(pc->conn));
    if (msg[0] == '\0')
        snprintf(msg, sizeof msg, "the connection to the server was lost");
    finish(pc, res, msg);
}

/* Watches the socket for what, re-creating the event when libpq moved to another socket
 * (a connect that tries several hosts or addresses). */
static void watch(struct pgf_pgconn *pc, short what);

/* One step of the connect, on socket readiness. */
static void step_connect(struct pgf_pgconn *pc)
{
    switch (PQconnectPoll(pc->conn)) {
    case PGRES_POLLING_OK:
        finish(pc, NULL, NULL);
        return;
    case PGRES_POLLING_READING:
        watch(pc, EV_READ);
        return;
    case PGRES_POLLING_WRITING:
        watch(pc, EV_WRITE);
        return;
    default:
        fail(pc, NULL);
        return;
    }
}

/* Reads what the server sent; ends the query once libpq has every result. */
static void step_receive(struct pgf_pgconn *pc)
{
    if (PQconsumeInput(pc->conn) == 0) {
        PQclear(pc->last);
        fail(pc, NULL);
        return;
    }
    while (!PQisBusy(pc->conn)) {
        PGresult *res = PQgetResult(pc->conn);
        if (res == NULL || PQresultStatus(res) == PGRES_COPY_BOTH) {
            /* COPY BOTH is the stream's from here on: it ends the query with that result. */
            PGresult *last = res ? res : pc->last;
            if (res)
                PQclear(pc->last);
            ExecStatusType st = last ? PQresultStatus(last) : PGRES_FATAL_ERROR;
            if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_COPY_BOTH)
                finish(pc, last, NULL);
            else
                fail(pc, last);
            return;
        }
        /* Keep an error over what follows it: it is what the caller must see. */
        if (pc->last && PQresultStatus(pc->last) == PGRES_FATAL_ERROR) {
            PQclear(res);
        } else {
            PQclear(pc->last);
            pc->last = res;
        }
    }
    watch(pc, EV_READ);
}

/* Sends what libpq still holds; then waits for the answer. */
static void step_send(struct pgf_pgconn *pc)
{
    int rc = PQflush(pc->conn);
    if (rc < 0) {
        fail(pc, NULL);
    } else if (rc > 0) {
        watch(pc, EV_WRITE | EV_READ); /* the server may need us to read before it reads more */
        if (PQconsumeInput(pc->conn) == 0)
            fail(pc, NULL);
    } else {
        pc->state = PC_RECEIVING;
        step_receive(pc);
    }
}

/* Socket readiness: advances whatever is under way. */
static void on_io(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pgf_pgconn *pc = arg;
    if (pc->state == PC_CONNECTING)
        step_connect(pc);
    else if (pc->state == PC_SENDING)
        step_send(pc);
    else if (pc->state == PC_RECEIVING)
        step_receive(pc);
}

/* The deadline passed with no answer. */
static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pgf_pgconn *pc = arg;
    PQclear(pc->last);
    finish(pc, NULL, pc->state == PC_CONNECTING
                         ? "no answer within the connect timeout (the server accepts connections but does not respond)"
                         : "no answer within the query timeout (the server accepted the query but does not respond)");
}

static void watch(struct pgf_pgconn *pc, short what)
{
    int fd = PQsocket(pc->conn);
    if (fd != pc->fd || (event_get_events(pc->io) & (EV_READ | EV_WRITE)) != what) {
        event_del(pc->io);
        event_assign(pc->io, pc->base, fd, what, on_io, pc);
        pc->fd = fd;
    }
    event_add(pc->io, NULL);
}

/* Arms the deadline of what starts now; 0 for none. */
static void arm_timeout(struct pgf_pgconn *pc, int timeout_ms)
{
    if (timeout_ms > 0) {
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        event_add(pc->timeout, &tv);
    }
}

/* Starts connecting; see pgconn.h. */
struct pgf_pgconn *pgf_pgconn_connect(struct event_base *base, const char *dsn, int replication, int timeout_ms,
                                      pgf_pgconn_cb cb, void *arg)
{
    struct pgf_pgconn *pc = calloc(1, sizeof *pc);
    if (pc == NULL)
        return NULL;
    pc->base = base;
    pc->cb = cb;
    pc->arg = arg;
    pc->fd = -1;
    pc->io = event_new(base, -1, 0, on_io, pc);
    pc->timeout = evtimer_new(base, on_timeout, pc);
    pc->conn = open_params(dsn, replication, 0);
    if (pc->io == NULL || pc->timeout == NULL || pc->conn == NULL) {
        pgf_pgconn_free(pc);
        return NULL;
    }
    pc->state = PC_CONNECTING;
    arm_timeout(pc, timeout_ms);
    if (PQstatus(pc->conn) == CONNECTION_BAD) {
        /* No socket to watch: report from the loop, as every other outcome is, so the caller
         * is never re-entered. */
        event_assign(pc->io, base, -1, 0, on_io, pc);
        event_active(pc->io, EV_WRITE, 0);
        return pc;
    }
    watch(pc, EV_WRITE); /* libpq's first step after PQconnectStart is to wait for writability */
    return pc;
}

/* Sends sql by the simple protocol (several statements) or, when one is set, by the extended
 * protocol, which the server refuses unless sql is a single statement. */
static int send_query(struct pgf_pgconn *pc, const char *sql, int one, int timeout_ms, pgf_pgconn_cb cb, void *arg)
{
    if (pc->state != PC_IDLE || PQsetnonblocking(pc->conn, 1) != 0 ||
        (one ? PQsendQueryParams(pc->conn, sql, 0, NULL, NULL, NULL, NULL, 0) : PQsendQuery(pc->conn, sql)) == 0)
        return -1;
    pc->cb = cb;
    pc->arg = arg;
    pc->state = PC_SENDING;
    arm_timeout(pc, timeout_ms);
    watch(pc, EV_WRITE);
    return 0;
}

/* Sends a query; see pgconn.h. */
int pgf_pgconn_query(struct pgf_pgconn *pc, const char *sql, int timeout_ms, pgf_pgconn_cb cb, void *arg)
{
    return send_query(pc, sql, 0, timeout_ms, cb, arg);
}

/* Sends one statement; see pgconn.h. */
int pgf_pgconn_query_one(struct pgf_pgconn *pc, const char *sql, int timeout_ms, pgf_pgconn_cb cb, void *arg)
{
    return send_query(pc, sql, 1, timeout_ms, cb, arg);
}

/* True while something is under way; see pgconn.h. */
int pgf_pgconn_busy(const struct pgf_pgconn *pc)
{
    return pc->state != PC_IDLE;
}

/* The libpq connection; see pgconn.h. */
PGconn *pgf_pgconn_pq(struct pgf_pgconn *pc)
{
    return pc->conn;
}

/* Hands over the libpq connection; see pgconn.h. */
PGconn *pgf_pgconn_release(struct pgf_pgconn *pc)
{
    PGconn *conn = pc->conn;
    PQsetnonblocking(conn, 0);
    pc->conn = NULL;
    pgf_pgconn_free(pc);
    return conn;
}

/* Closes and frees; see pgconn.h. */
void pgf_pgconn_free(struct pgf_pgconn *pc)
{
    if (pc == NULL)
        return;
    if (pc->io)
        event_free(pc->io);
    if (pc->timeout)
        event_free(pc->timeout);
    PQclear(pc->last);
    PQfinish(pc->conn);
    free(pc);
}
