/* replicas.c - see replicas.h. */
#include "cdc/replicas.h"

#include <event2/event.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/pgconn.h"
#include "common/log.h"
#include "common/lsn.h"

/* A poll that takes longer than this fails, and the standby counts as not seen. */
#define QUERY_TIMEOUT_MS 2000
#define CONNECT_TIMEOUT_MS 5000
#define WARN_EVERY_US (60 * 1000000LL)
/* Reconnect backoff bounds: a standby that is down is not dialled on every poll. */
#define BACKOFF_MIN_US (100 * 1000LL)
#define BACKOFF_MAX_US (5 * 1000000LL)

/* The standby's replay position and its own replay delay; 0 s while it has replayed all it got. */
static const char standby_sql[] =
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,"
    " CASE WHEN pg_last_wal_receive_lsn() IS NULL OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn()"
    " THEN 0 ELSE COALESCE(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END";

struct standby {
    struct pgf_replica_stat st;
    struct pgf_replicas *rp;
    char *dsn;             /* polled itself; NULL for a standby known by application_name */
    struct pgf_pgconn *pc; /* this standby's connection (DSN standbys only) */
    int ready;
    int64_t seen_at;       /* when replay_lsn was last read */
    int64_t last_warn_us;
    int64_t retry_at, backoff_us; /* next connect attempt, after a failure */
};

struct pgf_replicas {
    struct event_base *base;
    const char *primary_dsn;
    struct standby *sb;
    size_t n;
    struct pgf_pgconn *primary; /* for pg_stat_replication, when any standby is known by name */
    int primary_ready;
    int64_t primary_warn_us;
    int64_t primary_retry_at, primary_backoff_us;
    int dup_warned;          /* two pg_stat_replication rows with one listed name were seen */
    const char *names;       /* redis.replica_names (the config outlives the poller) */
    char *names_sql;         /* built with PQescapeLiteral once the primary is connected */
    struct event *timer;
    pgf_replicas_cb cb;
    void *arg;
};

/* Calls fn(item, len, ctx) for each item of list separated by sep, spaces trimmed, empty
 * items skipped; stops and returns -1 when fn does. */
static int each_item(const char *list, char sep, int (*fn)(const char *, size_t, void *), void *ctx)
{
    const char *p = list;
    while (p && *p) {
        const char *end = strchr(p, sep);
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *a = p, *b = p + len;
        while (a < b && (*a == ' ' || *a == '\t' || *a == '\n'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\n'))
            b--;
        if (b > a && fn(a, (size_t)(b - a), ctx) != 0)
            return -1;
        p = end ? end + 1 : NULL;
    }
    return 0;
}

static int count_one(const char *s, size_t len, void *ctx)
{
    (void)s;
    (void)len;
    ++*(int *)ctx;
    return 0;
}

/* Counts the listed standbys; see replicas.h. */
int pgf_replicas_count(const struct pgf_redis_cfg *cfg, char *err, size_t errlen)
{
    int n = 0;
    each_item(cfg->replicas, ';', count_one, &n);
    each_item(cfg->replica_names, ',', count_one, &n);
    if (n > 64) {
        snprintf(err, errlen, "redis.replicas and redis.replica_names list %d standbys; at most 64 are supported", n);
        return -1;
    }
    return n;
}

/* Names a DSN standby host:port for logs and metrics, never with its password. */
static void dsn_name(const char *dsn, char *out, size_t outlen)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(dsn, &errmsg);
    const char *host = NULL, *port = NULL;
    for (PQconninfoOption *o = opts; o && o->keyword; o++) {
        if (strcmp(o->keyword, "host") == 0 && o->val && o->val[0])
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0 && o->val && o->val[0] && host == NULL)
            host = o->val;
        else if (strcmp(o->keyword, "port") == 0 && o->val && o->val[0])
            port = o->val;
    }
    snprintf(out, outlen, "%s:%s", host ? host : "localhost", port ? port : "5432");
    PQconninfoFree(opts);
    PQfreemem(errmsg);
}

/* ---- startup checks ---- */

struct check_ctx {
    char *err;
    size_t errlen;
};

/* Connects to one standby DSN and checks it is in recovery. */
static int check_standby(const char *s, size_t len, void *arg)
{
    struct check_ctx *cx = arg;
    char *dsn = strndup(s, len), name[160], msg[600];
    if (dsn == NULL) {
        snprintf(cx->err, cx->errlen, "out of memory");
        return -1;
    }
    dsn_name(dsn, name, sizeof name);
    if (strchr(name, ',') != NULL) {
        /* Several hosts: each connection may land on another one, and their positions would
         * mix into one; the horizon must be each standby's own. */
        free(dsn);
        snprintf(cx->err, cx->errlen, "redis.replicas: the DSN of %s names several hosts; list each standby "
                 "with a DSN of its own, separated by ';'", name);
        return -1;
    }
    PGconn *conn = pgf_pgconn_open_blocking(dsn, 0);
    free(dsn);
    int rc = -1;
    if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
        pgf_pgconn_trim(msg, sizeof msg, conn ? PQerrorMessage(conn) : "out of memory");
        snprintf(cx->err, cx->errlen, "redis.replicas: cannot connect to the standby %s: %s; check that DSN, or "
                 "remove the standby from redis.replicas", name, msg);
    } else {
        PGresult *res = PQexec(conn, "SELECT pg_is_in_recovery()");
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            pgf_pgconn_trim(msg, sizeof msg, PQerrorMessage(conn));
            snprintf(cx->err, cx->errlen, "redis.replicas: cannot ask %s whether it is a standby: %s", name, msg);
        } else if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
            snprintf(cx->err, cx->errlen, "redis.replicas: %s is not a standby (pg_is_in_recovery() is false); list "
                     "only the hot standbys that serve reads, never the primary", name);
        } else {
            rc = 0;
        }
        PQclear(res);
    }
    PQfinish(conn);
    return rc;
}

/* Checks the standbys; see replicas.h. */
int pgf_replicas_check(const struct pgf_redis_cfg *cfg, const char *primary_dsn, char *err, size_t errlen)
{
    struct check_ctx cx = {err, errlen};
    if (each_item(cfg->replicas, ';', check_standby, &cx) != 0)
        return -1;
    if (cfg->replica_names == NULL || pgf_replicas_count(&(struct pgf_redis_cfg){.replica_names = cfg->replica_names},
                                                         err, errlen) <= 0)
        return 0;
    PGconn *conn = pgf_pgconn_open_blocking(primary_dsn, 0);
    char msg[600];
    int rc = -1;
    if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
        pgf_pgconn_trim(msg, sizeof msg, conn ? PQerrorMessage(conn) : "out of memory");
        snprintf(err, errlen, "redis.replica_names: cannot connect to the primary: %s", msg);
    } else {
        /* USAGE, not MEMBER: a NOINHERIT grant does not show the positions. */
        PGresult *res = PQexec(conn, "SELECT pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'), current_user");
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            pgf_pgconn_trim(msg, sizeof msg, PQerrorMessage(conn));
            snprintf(err, errlen, "redis.replica_names: cannot check the role's rights: %s", msg);
        } else if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
            snprintf(err, errlen, "redis.replica_names: role %s cannot see the standbys' positions in "
                     "pg_stat_replication; run GRANT pg_monitor TO %s, or list the standbys' DSNs in "
                     "redis.replicas instead", PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 1));
        } else {
            rc = 0;
        }
        PQclear(res);
    }
    PQfinish(conn);
    return rc;
}

/* ---- polling ---- */

static int build_names_sql(struct pgf_replicas *rp, PGconn *conn);

/* Logs a standby's trouble at most once a minute; the horizon keeps its last position. */
static void warn_standby(struct standby *s, const char *what)
{
    int64_t now = pgf_mono_us();
    s->st.poll_errors++;
    s->st.up = 0;
    if (now - s->last_warn_us >= WARN_EVERY_US) {
        char at[PGF_LSN_BUFSZ];
        s->last_warn_us = now;
        pgf_warn("standby %s: %s; streaming goes on, and its last replay position %s holds second passes for "
                 "at most redis.replica_max_wait", s->st.name, what, pgf_lsn_format(s->st.replay_lsn, at));
    }
}

/* Hands the new horizon to the owner: the lowest position over every standby, observed by the
 * latest of their reads (each had replayed its position by then). */
static void report(struct pgf_replicas *rp)
{
    uint64_t h = UINT64_MAX;
    int64_t at = 0;
    for (size_t i = 0; i < rp->n; i++) {
        if (rp->sb[i].st.replay_lsn < h)
            h = rp->sb[i].st.replay_lsn;
        if (rp->sb[i].seen_at > at)
            at = rp->sb[i].seen_at;
    }
    if (rp->n > 0)
        rp->cb(rp->arg, h, at);
}

/* Records a standby's position, which only moves forward (a reconnect may read an older one
 * from a lagging cascade, but what was seen replayed stays replayed). */
static void seen(struct standby *s, const char *lsn_text, const char *lag_text)
{
    uint64_t lsn = 0;
    if (lsn_text == NULL || pgf_lsn_parse(lsn_text, &lsn) != 0) {
        warn_standby(s, "has replayed nothing yet (pg_last_wal_replay_lsn() is NULL)");
        return;
    }
    if (lsn > s->st.replay_lsn)
        s->st.replay_lsn = lsn;
    s->st.lag_seconds = lag_text ? strtod(lag_text, NULL) : 0;
    s->st.up = 1;
    s->seen_at = pgf_mono_us();
}

/* Pushes *retry_at out by the doubling *backoff_us (100 ms up to 5 s). */
static void back_off(int64_t *retry_at, int64_t *backoff_us)
{
    *backoff_us = *backoff_us ? (*backoff_us * 2 > BACKOFF_MAX_US ? BACKOFF_MAX_US : *backoff_us * 2) : BACKOFF_MIN_US;
    *retry_at = pgf_mono_us() + *backoff_us;
}

static void drop_standby(struct standby *s)
{
    pgf_pgconn_free(s->pc);
    s->pc = NULL;
    s->ready = 0;
    back_off(&s->retry_at, &s->backoff_us);
}

/* A DSN standby's answer. */
static void on_standby_polled(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    (void)pc;
    struct standby *s = arg;
    if (err) {
        warn_standby(s, err);
        drop_standby(s);
        return;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0)
        warn_standby(s, "is no longer a standby (promoted?)");
    else
        seen(s, PQgetisnull(res, 0, 1) ? NULL : PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2));
    report(s->rp);
}

/* A DSN standby's session is set up. */
static void on_standby_session(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    (void)pc;
    (void)res;
    struct standby *s = arg;
    if (err) {
        warn_standby(s, err);
        drop_standby(s);
        return;
    }
    s->ready = 1;
    s->backoff_us = 0;
}

/* A DSN standby connected, or not. */
static void on_standby_connected(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    (void)res;
    struct standby *s = arg;
    if (err || pgf_pgconn_query(pc, "SET statement_timeout = '2s'", QUERY_TIMEOUT_MS, on_standby_session, s) != 0) {
        warn_standby(s, err ? err : "cannot send to it");
        drop_standby(s);
    }
}

static void drop_primary(struct pgf_replicas *rp)
{
    pgf_pgconn_free(rp->primary);
    rp->primary = NULL;
    rp->primary_ready = 0;
    back_off(&rp->primary_retry_at, &rp->primary_backoff_us);
}

/* Marks every standby known by name as not seen, after the primary could not be asked. */
static void names_unseen(struct pgf_replicas *rp, const char *why)
{
    char what[700];
    snprintf(what, sizeof what, "cannot read pg_stat_replication on the primary: %s", why);
    for (size_t i = 0; i < rp->n; i++)
        if (rp->sb[i].dsn == NULL)
            warn_standby(&rp->sb[i], what);
}

/* pg_stat_replication's rows for the standbys listed by name. */
static void on_names_polled(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    (void)pc;
    struct pgf_replicas *rp = arg;
    if (err) {
        names_unseen(rp, err);
        drop_primary(rp);
        return;
    }
    for (size_t i = 0; i < rp->n; i++) {
        struct standby *s = &rp->sb[i];
        if (s->dsn != NULL)
            continue;
        /* Two standbys reporting one name (both left at "walreceiver", say) cannot be told
         * apart: the lower position is the one that holds the pass. */
        int row = -1, matches = 0;
        uint64_t lowest = UINT64_MAX, lsn;
        for (int r = 0; r < PQntuples(res); r++)
            if (strcmp(PQgetvalue(res, r, 0), s->st.name) == 0 && !PQgetisnull(res, r, 1) &&
                pgf_lsn_parse(PQgetvalue(res, r, 1), &lsn) == 0) {
                matches++;
                if (lsn < lowest)
                    lowest = lsn, row = r;
            }
        if (matches > 1 && !rp->dup_warned) {
            rp->dup_warned = 1;
            pgf_warn("standby %s: %d rows of pg_stat_replication carry this application_name; the lowest replay "
                     "position counts. Give each standby its own application_name (cluster_name)",
                     s->st.name, matches);
        }
        if (row < 0)
            warn_standby(s, "is not streaming from the primary (no row with its application_name in "
                            "pg_stat_replication)");
        else
            seen(s, PQgetvalue(res, row, 1), PQgetvalue(res, row, 2));
    }
    report(rp);
}

static void on_primary_session(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    (void)pc;
    (void)res;
    struct pgf_replicas *rp = arg;
    if (err) {
        names_unseen(rp, err);
        drop_primary(rp);
        return;
    }
    if (rp->names_sql[0] == '\0' && build_names_sql(rp, pgf_pgconn_pq(pc)) != 0) {
        names_unseen(rp, "out of memory");
        drop_primary(rp);
        return;
    }
    rp->primary_ready = 1;
    rp->primary_backoff_us = 0;
}

static void on_primary_connected(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    (void)res;
    struct pgf_replicas *rp = arg;
    if (err || pgf_pgconn_query(pc, "SET statement_timeout = '2s'", QUERY_TIMEOUT_MS, on_primary_session, rp) != 0) {
        names_unseen(rp, err ? err : "cannot send to it");
        drop_primary(rp);
    }
}

/* One poll: each connection that is up and idle gets its query; one still busy (a slow or
 * frozen server) skips this tick, so nothing piles up and nothing waits. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pgf_replicas *rp = arg;
    for (size_t i = 0; i < rp->n; i++) {
        struct standby *s = &rp->sb[i];
        if (s->dsn == NULL)
            continue;
        if (s->pc == NULL && pgf_mono_us() >= s->retry_at)
            s->pc = pgf_pgconn_connect(rp->base, s->dsn, 0, CONNECT_TIMEOUT_MS, on_standby_connected, s);
        else if (s->pc && s->ready && !pgf_pgconn_busy(s->pc) &&
                 pgf_pgconn_query(s->pc, standby_sql, QUERY_TIMEOUT_MS, on_standby_polled, s) != 0) {
            warn_standby(s, "cannot send to it");
            drop_standby(s);
        }
    }
    if (rp->names_sql == NULL)
        return;
    if (rp->primary == NULL && pgf_mono_us() >= rp->primary_retry_at)
        rp->primary = pgf_pgconn_connect(rp->base, rp->primary_dsn, 0, CONNECT_TIMEOUT_MS, on_primary_connected, rp);
    else if (rp->primary && rp->primary_ready && !pgf_pgconn_busy(rp->primary) &&
             pgf_pgconn_query(rp->primary, rp->names_sql, QUERY_TIMEOUT_MS, on_names_polled, rp) != 0) {
        names_unseen(rp, "cannot send to it");
        drop_primary(rp);
    }
}

struct add_ctx {
    struct pgf_replicas *rp;
    int by_name;
};

/* Adds one listed standby. */
static int add_standby(const char *item, size_t len, void *arg)
{
    struct add_ctx *cx = arg;
    struct standby *s = &cx->rp->sb[cx->rp->n];
    s->rp = cx->rp;
    if (cx->by_name) {
        snprintf(s->st.name, sizeof s->st.name, "%.*s", (int)len, item);
    } else {
        if ((s->dsn = strndup(item, len)) == NULL)
            return -1;
        dsn_name(s->dsn, s->st.name, sizeof s->st.name);
    }
    cx->rp->n++;
    return 0;
}

struct names_ctx {
    PGconn *conn;
    char **sql;
};

/* Appends one listed name, quoted by libpq for this server, to the IN list. */
static int add_name_sql(const char *item, size_t len, void *arg)
{
    struct names_ctx *cx = arg;
    char *quoted = PQescapeLiteral(cx->conn, item, len);
    if (quoted == NULL)
        return -1;
    size_t have = strlen(*cx->sql), add = strlen(quoted);
    char *grown = realloc(*cx->sql, have + add + 3);
    if (grown == NULL) {
        PQfreemem(quoted);
        return -1;
    }
    *cx->sql = grown;
    snprintf(grown + have, add + 3, "%s%s", grown[have - 1] == '(' ? "" : ",", quoted);
    PQfreemem(quoted);
    return 0;
}

/* Builds the pg_stat_replication query for the standbys listed by name; 0 or -1 (memory). */
static int build_names_sql(struct pgf_replicas *rp, PGconn *conn)
{
    char *sql = strdup("SELECT application_name, replay_lsn::text, COALESCE(extract(epoch FROM replay_lag), 0) "
                       "FROM pg_stat_replication WHERE application_name IN (");
    struct names_ctx cx = {conn, &sql};
    if (sql == NULL || each_item(rp->names, ',', add_name_sql, &cx) != 0) {
        free(sql);
        return -1;
    }
    size_t len = strlen(sql);
    char *grown = realloc(sql, len + 2);
    if (grown == NULL) {
        free(sql);
        return -1;
    }
    memcpy(grown + len, ")", 2);
    free(rp->names_sql);
    rp->names_sql = grown;
    return 0;
}

/* Starts polling; see replicas.h. */
struct pgf_replicas *pgf_replicas_start(struct event_base *base, const struct pgf_redis_cfg *cfg,
                                        const char *primary_dsn, pgf_replicas_cb cb, void *arg)
{
    char err[200];
    int n = pgf_replicas_count(cfg, err, sizeof err);
    struct pgf_replicas *rp = calloc(1, sizeof *rp);
    if (rp == NULL || n < 0 || (rp->sb = calloc((size_t)n + 1, sizeof *rp->sb)) == NULL) {
        free(rp);
        return NULL;
    }
    rp->base = base;
    rp->primary_dsn = primary_dsn;
    rp->cb = cb;
    rp->arg = arg;
    struct add_ctx a = {rp, 0}, b = {rp, 1};
    int ok = each_item(cfg->replicas, ';', add_standby, &a) == 0 &&
             each_item(cfg->replica_names, ',', add_standby, &b) == 0;
    if (ok && cfg->replica_names && pgf_replicas_count(&(struct pgf_redis_cfg){.replica_names = cfg->replica_names},
                                                       err, sizeof err) > 0) {
        rp->names = cfg->replica_names;
        rp->names_sql = strdup(""); /* "": built on the first connection to the primary */
        ok = rp->names_sql != NULL;
    }
    unsigned every = cfg->replica_poll_ms ? cfg->replica_poll_ms : 50;
    struct timeval tv = {every / 1000, (every % 1000) * 1000};
    if (!ok || (rp->timer = event_new(base, -1, EV_PERSIST, on_tick, rp)) == NULL || event_add(rp->timer, &tv) != 0) {
        pgf_replicas_stop(rp);
        return NULL;
    }
    on_tick(-1, 0, rp); /* connect now, not one interval later */
    return rp;
}

/* Exposes one standby's figures; see replicas.h. */
const struct pgf_replica_stat *pgf_replicas_stat(const struct pgf_replicas *rp, size_t i)
{
    return rp && i < rp->n ? &rp->sb[i].st : NULL;
}

/* Stops polling; see replicas.h. */
void pgf_replicas_stop(struct pgf_replicas *rp)
{
    if (rp == NULL)
        return;
    if (rp->timer)
        event_free(rp->timer);
    for (size_t i = 0; i < rp->n; i++) {
        pgf_pgconn_free(rp->sb[i].pc);
        free(rp->sb[i].dsn);
    }
    pgf_pgconn_free(rp->primary);
    free(rp->names_sql);
    free(rp->sb);
    free(rp);
}
