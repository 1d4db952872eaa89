/* replconn.c - replication connection setup and server checks. */
#include "cdc/replconn.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/lsn.h"
#include "cdc/pgconn.h"

/* True when keyword (len bytes) is one of libpq's connection parameters. */
static int known_keyword(const char *keyword, size_t len)
{
    PQconninfoOption *defs = PQconndefaults();
    int known = 0;
    for (PQconninfoOption *o = defs; o && o->keyword && !known; o++)
        known = strlen(o->keyword) == len && strncmp(o->keyword, keyword, len) == 0;
    PQconninfoFree(defs);
    return known;
}

/* Finds the first keyword of dsn that libpq does not know: a key of a key=value string, or a
 * query parameter of a postgresql:// URI.  Copies it into out and returns 1, else 0.  Values
 * are skipped as libpq reads them (single quotes, backslash escapes), so none is ever copied. */
static int unknown_keyword(const char *dsn, char *out, size_t outlen)
{
    int uri = strncmp(dsn, "postgresql://", 13) == 0 || strncmp(dsn, "postgres://", 11) == 0;
    const char *p = uri ? strchr(dsn, '?') : dsn;
    if (p == NULL)
        return 0;
    if (uri)
        p++;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || (uri && *p == '&'))
            p++;
        const char *key = p;
        while (*p && *p != '=' && *p != ' ' && *p != '\t' && *p != '\n' && *p != '&')
            p++;
        if (*p != '=')
            return 0; /* a word without '=': perhaps part of a value, so never named */
        size_t len = (size_t)(p - key);
        if (len > 0 && !known_keyword(key, len)) {
            snprintf(out, outlen, "%.*s", (int)len, key);
            return 1;
        }
        p++; /* the value */
        if (!uri && *p == '\'') {
            for (p++; *p && *p != '\''; p++)
                if (*p == '\\' && p[1])
                    p++;
            if (*p)
                p++;
        } else {
            while (*p && *p != ' ' && *p != '\t' && *p != '\n' && (!uri || *p != '&'))
                p += !uri && *p == '\\' && p[1] ? 2 : 1;
        }
    }
    return 0;
}

/* Checks that dsn parses; see replconn.h. */
int pgf_dsn_check(const char *dsn, char *err, size_t errlen)
{
    char *why = NULL;
    PQconninfoOption *o = PQconninfoParse(dsn, &why);
    if (o) {
        /* libpq only judges these when it connects; a typo should fail before that. */
        const char *bad = NULL;
        for (PQconninfoOption *p = o; p->keyword && !bad; p++) {
            if (p->val == NULL || p->val[0] == '\0')
                continue;
            if (strcmp(p->keyword, "port") == 0) {
                for (const char *q = p->val; *q && !bad; q++)
                    if (!((*q >= '0' && *q <= '9') || *q == ','))
                        bad = "port: expected a number (or a comma-separated list for several hosts)";
            } else if (strcmp(p->keyword, "sslmode") == 0) {
                static const char *const modes[] = {"disable", "allow", "prefer", "require", "verify-ca",
                                                    "verify-full"};
                int ok = 0;
                for (size_t i = 0; i < sizeof modes / sizeof *modes; i++)
                    ok |= strcmp(p->val, modes[i]) == 0;
                if (!ok)
                    bad = "sslmode: expected disable, allow, prefer, require, verify-ca or verify-full";
            } else if (strcmp(p->keyword, "connect_timeout") == 0) {
                for (const char *q = p->val; *q && !bad; q++)
                    if (!(*q >= '0' && *q <= '9'))
                        bad = "connect_timeout: expected whole seconds";
            }
        }
        PQconninfoFree(o);
        if (bad == NULL)
            return 0;
        snprintf(err, errlen, "the PostgreSQL connection string (source.dsn) has a bad %s", bad);
        return -1;
    }
    /* libpq's reason quotes the string, which may hold a password: name only a keyword it
     * does not know, which is never a value, and otherwise say what to check. */
    PQfreemem(why);
    char keyword[64];
    if (unknown_keyword(dsn, keyword, sizeof keyword))
        snprintf(err, errlen, "the PostgreSQL connection string (source.dsn) has an unknown keyword '%s'; see "
                              "libpq's connection parameters (host, port, dbname, user, sslmode, ...)", keyword);
    else
        snprintf(err, errlen, "the PostgreSQL connection string (source.dsn) is not valid: write key=value pairs "
                              "such as \"host=127.0.0.1 dbname=app user=cdc\" (quote a value with spaces in single "
                              "quotes), or a postgresql:// URI (its text is not shown here because it may hold a "
                              "password)");
    return -1;
}

/* Appends s to buf (bounded) as a SQL literal; returns 0, or -1 if it does not fit. */
static int quote_into(PGconn *conn, char *buf, size_t len, const char *s, int ident)
{
    char *q = ident ? PQescapeIdentifier(conn, s, strlen(s)) : PQescapeLiteral(conn, s, strlen(s));
    if (q == NULL)
        return -1;
    size_t used = strlen(buf);
    int n = snprintf(buf + used, len - used, "%s", q);
    PQfreemem(q);
    return n < 0 || (size_t)n >= len - used ? -1 : 0;
}

/* Builds "CREATE PUBLICATION ... FOR ALL TABLES | FOR TABLE a, b" into sql. */
static int publication_sql(PGconn *conn, const struct pgf_options *opts, char *sql, size_t len)
{
    snprintf(sql, len, "CREATE PUBLICATION ");
    if (quote_into(conn, sql, len, opts->publication, 1))
        return -1;
    if (opts->tables == NULL) {
        strncat(sql, " FOR ALL TABLES", len - strlen(sql) - 1);
        return 0;
    }
    strncat(sql, " FOR TABLE ", len - strlen(sql) - 1);
    char *list = strdup(opts->tables);
    if (list == NULL)
        return -1;
    int rc = 0, first = 1;
    char *save = NULL;
    for (char *t = strtok_r(list, ",", &save); t && rc == 0; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        if (!first)
            strncat(sql, ", ", len - strlen(sql) - 1);
        first = 0;
        char *dot = strchr(t, '.');
        if (dot) {
            *dot = '\0';
            rc = quote_into(conn, sql, len, t, 1);
            strncat(sql, ".", len - strlen(sql) - 1);
            t = dot + 1;
        }
        rc = rc ? rc : quote_into(conn, sql, len, t, 1);
    }
    free(list);
    return first ? -1 : rc;
}


/* The query that lists the tables publication pub carries, leaf partitions included, whose
 * UPDATE and DELETE PostgreSQL refuses for want of a replica identity: no primary key under
 * REPLICA IDENTITY DEFAULT, NOTHING, or a dropped USING INDEX.  Writes it into sql; returns 0,
 * or -1 when it does not fit. */
static int identity_sql(PGconn *conn, const char *pub, char *sql, size_t len)
{
    /* The leaves are what an UPDATE runs its replica identity check on, also under a
     * partitioned table published through its root. */
    snprintf(sql, len, "%s",
             "SELECT DISTINCT format('%I.%I', n.nspname, c.relname) "
             "FROM pg_catalog.pg_publication p "
             "CROSS JOIN LATERAL pg_catalog.pg_get_publication_tables(p.pubname::text) g "
             "CROSS JOIN LATERAL (SELECT g.relid UNION SELECT t.relid FROM pg_catalog.pg_partition_tree(g.relid) t "
             "WHERE t.isleaf) l "
             "JOIN pg_catalog.pg_class c ON c.oid = l.relid "
             "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
             "WHERE c.relkind = 'r' AND (p.pubupdate OR p.pubdelete) AND c.relreplident <> 'f' "
             "AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND "
             "((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident))) "
             "AND p.pubname = ");
    if (quote_into(conn, sql, len, pub, 0))
        return -1;
    strncat(sql, " ORDER BY 1", len - strlen(sql) - 1);
    return 0;
}

/* Lists identity_sql's rows into names (", "-separated, bounded); returns how many. */
static int identity_names(const PGresult *res, char *names, size_t len)
{
    int n = PQntuples(res);
    size_t used = 0;
    names[0] = '\0';
    for (int i = 0; i < n && used < len; i++) {
        if (i == 20) { /* enough to act on; the count says the rest */
            snprintf(names + used, len - used, ", and %d more", n - i);
            break;
        }
        used += (size_t)snprintf(names + used, len - used, "%s%s", i ? ", " : "", PQgetvalue(res, i, 0));
    }
    return n;
}

/* The fixes for a table without a replica identity, for every message that names one. */
#define IDENTITY_FIXES                                                                                      \
    "Give each a primary key (ALTER TABLE ... ADD PRIMARY KEY (...)), or run ALTER TABLE ... REPLICA "     \
    "IDENTITY FULL, or ALTER TABLE ... REPLICA IDENTITY USING INDEX on a unique index of NOT NULL columns"

/* Writes "HOST:PORT" or "socket directory D port P" of conn into where. */
static void server_where(PGconn *conn, char *where, size_t len)
{
    const char *host = PQhost(conn), *port = PQport(conn);
    if (host && host[0] == '/')
        snprintf(where, len, "socket directory %s port %s", host, port ? port : "?");
    else
        snprintf(where, len, "%s:%s", host && *host ? host : "localhost", port && *port ? port : "5432");
}

/* Opens a connection and waits; see replconn.h. */
PGconn *pgf_replconn_open(const char *dsn, int replication, char *err, size_t errlen)
{
    if (pgf_dsn_check(dsn, err, errlen) != 0)
        return NULL;
    PGconn *conn = pgf_pgconn_open_blocking(dsn, replication);
    if (conn == NULL) {
        snprintf(err, errlen, "cannot allocate a PostgreSQL connection");
        return NULL;
    }
    if (PQstatus(conn) == CONNECTION_OK)
        return conn;
    char msg[1024], where[300];
    pgf_pgconn_trim(msg, sizeof msg, PQerrorMessage(conn));
    server_where(conn, where, sizeof where);
    snprintf(err, errlen, "cannot connect to PostgreSQL at %s: %s", where, msg);
    PQfinish(conn);
    return NULL;
}

/* Drops the slot; see replconn.h. */
int pgf_replconn_drop_slot(const char *dsn, const char *slot, char *err, size_t errlen)
{
    PGconn *conn = pgf_replconn_open(dsn, 1, err, errlen);
    if (conn == NULL)
        return -1;
    char sql[1024] = "DROP_REPLICATION_SLOT ";
    int rc = -1;
    if (quote_into(conn, sql, sizeof sql, slot, 1) == 0) {
        /* WAIT: our own walsender may still be letting go of it. */
        strncat(sql, " WAIT", sizeof sql - strlen(sql) - 1);
        PGresult *res = PQexec(conn, sql);
        if (PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK) {
            rc = 0;
        } else {
            char msg[1024];
            pgf_pgconn_trim(msg, sizeof msg, PQresultErrorMessage(res));
            snprintf(err, errlen, "DROP_REPLICATION_SLOT failed: %s", msg);
        }
        PQclear(res);
    } else {
        snprintf(err, errlen, "slot name is too long");
    }
    PQfinish(conn);
    return rc;
}

/* A start attempt: the steps from connecting to START_REPLICATION, each one query on the
 * event loop, chained by their callbacks. */
struct pgf_replstart;
typedef void (*step_fn)(struct pgf_replstart *st, PGresult *res);
/* What to do instead of failing the attempt when a step's query fails. */
typedef void (*fail_fn)(struct pgf_replstart *st, PGresult *res, const char *err);

struct pgf_replstart {
    const struct pgf_options *opts;
    struct event_base *base;
    int resuming;
    struct pgf_resume resume;
    struct pgf_server_info info;
    struct pgf_pgconn *repl;  /* the replication connection, handed over on success */
    struct pgf_pgconn *plain; /* a plain connection for the publication's own work */
    int slot_exists;
    int missing;              /* tables without a replica identity in the new publication */
    char names[1024];
    char create[4096];
    char what[320];           /* the step under way, for its error message */
    char where[300];          /* the server, for messages about a refused connection */
    char conn_msg[1024];      /* libpq's reason for a refused connection */
    const char *denied_hint;  /* appended to a permission error of the step under way */
    step_fn next;
    fail_fn on_fail;
    pgf_replstart_cb done;
    void *arg;
    pgf_before_create_cb before_create; /* asked before the slot is created, or NULL */
    void *before_arg;
    int before_asked;
    char err[8192];
};

/* Ends the attempt: hands the replication connection over on success, frees the rest, then
 * reports (last: the callback may start the next attempt). */
static void finish(struct pgf_replstart *st, int result)
{
    PGconn *conn = NULL;
    if (result == 0) {
        conn = pgf_pgconn_release(st->repl);
        st->repl = NULL;
    }
    pgf_pgconn_free(st->repl);
    pgf_pgconn_free(st->plain);
    struct pgf_server_info info = st->info;
    char err[sizeof st->err];
    snprintf(err, sizeof err, "%s", st->err);
    pgf_replstart_cb done = st->done;
    void *arg = st->arg;
    free(st);
    done(arg, conn, result, err, &info);
}

/* A step's query ended: a server error fails the attempt (unless the step says otherwise), a
 * lost connection makes it worth retrying; success runs the next step. */
static void on_step(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    struct pgf_replstart *st = arg;
    if (err == NULL) {
        st->next(st, res);
        return;
    }
    if (st->on_fail) {
        st->on_fail(st, res, err);
        return;
    }
    snprintf(st->err, sizeof st->err, "%s failed: %s", st->what, err);
    const char *code = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (code && strcmp(code, "42501") == 0 && st->denied_hint) /* insufficient_privilege */
        snprintf(st->err + strlen(st->err), sizeof st->err - strlen(st->err), ". %s", st->denied_hint);
    if (code && strcmp(code, "55006") == 0) /* object_in_use: another walsender holds the slot */
        finish(st, PGF_REPLCONN_BUSY);
    else
        finish(st, res == NULL || PQstatus(pgf_pgconn_pq(pc)) != CONNECTION_OK ? PGF_REPLCONN_RETRY
                                                                                : PGF_REPLCONN_FATAL);
}

/* Sends sql on pc as the step named what; next runs with its result. */
static void run(struct pgf_replstart *st, struct pgf_pgconn *pc, const char *sql, const char *what, int timeout_ms,
                step_fn next)
{
    snprintf(st->what, sizeof st->what, "%s", what);
    st->next = next;
    if (pgf_pgconn_query(pc, sql, timeout_ms, on_step, st) != 0) {
        char msg[1024];
        pgf_pgconn_trim(msg, sizeof msg, PQerrorMessage(pgf_pgconn_pq(pc)));
        snprintf(st->err, sizeof st->err, "%s failed: cannot send it: %s", what, msg);
        finish(st, PGF_REPLCONN_RETRY);
    }
}

/* Queries that wait on the server alone get this long; slot creation waits for running
 * transactions, so it has no limit. */
#define STEP_TIMEOUT_MS 30000
#define CONNECT_TIMEOUT_MS 10000

static void step_start(struct pgf_replstart *st);

/* START_REPLICATION answered with COPY BOTH: streaming. */
static void on_started(struct pgf_replstart *st, PGresult *res)
{
    (void)res;
    finish(st, 0);
}

/* Sends START_REPLICATION from the slot's confirmed position. */
static void step_start(struct pgf_replstart *st)
{
    PGconn *conn = pgf_pgconn_pq(st->repl);
    /* publication_names is a string literal holding a list of identifiers. */
    char ident[1024] = "", sql[4096] = "START_REPLICATION SLOT ", what[300];
    if (quote_into(conn, sql, sizeof sql, st->opts->slot, 1) ||
        quote_into(conn, ident, sizeof ident, st->opts->publication, 1)) {
        snprintf(st->err, sizeof st->err, "slot or publication name is too long");
        finish(st, PGF_REPLCONN_FATAL);
        return;
    }
    strncat(sql, " LOGICAL 0/0 (proto_version '1', publication_names ", sizeof sql - strlen(sql) - 1);
    quote_into(conn, sql, sizeof sql, ident, 0);
    strncat(sql, ", messages 'true')", sizeof sql - strlen(sql) - 1);
    snprintf(what, sizeof what, "START_REPLICATION on slot \"%s\"", st->opts->slot);
    run(st, st->repl, sql, what, STEP_TIMEOUT_MS, on_started);
}

/* The slot exists now. */
static void on_slot_created(struct pgf_replstart *st, PGresult *res)
{
    pgf_info("created %sreplication slot \"%s\" at %s", st->opts->temporary_slot ? "temporary " : "", st->opts->slot,
             PQntuples(res) == 1 ? PQgetvalue(res, 0, 1) : "?");
    st->info.slot_created = 1;
    if (PQntuples(res) == 1)
        pgf_lsn_parse(PQgetvalue(res, 0, 1), &st->info.confirmed_flush);
    step_start(st);
}

/* Creates the slot when it is missing (only at startup: see on_slot), then starts. */
static void step_slot(struct pgf_replstart *st)
{
    pgf_pgconn_free(st->plain);
    st->plain = NULL;
    st->on_fail = NULL;
    st->denied_hint = NULL;
    if (st->slot_exists) {
        step_start(st);
        return;
    }
    if (st->before_create && !st->before_asked && !st->opts->temporary_slot) {
        /* What the new slot is for must be durable first: a crash right after creating it
         * would otherwise leave a slot that looks like any other, and the reason lost. */
        st->before_asked = 1;
        st->before_create(st->before_arg, st->info.system_id, st->info.slot_lost, st);
        return;
    }
    char sql[1024] = "CREATE_REPLICATION_SLOT ";
    quote_into(pgf_pgconn_pq(st->repl), sql, sizeof sql, st->opts->slot, 1);
    /* A temporary slot lives as long as this connection: an ad-hoc run leaves nothing behind. */
    strncat(sql, st->opts->temporary_slot ? " TEMPORARY LOGICAL pgoutput NOEXPORT_SNAPSHOT"
                                          : " LOGICAL pgoutput NOEXPORT_SNAPSHOT",
            sizeof sql - strlen(sql) - 1);
    run(st, st->repl, sql, "CREATE_REPLICATION_SLOT", 0, on_slot_created);
}

/* The existing publication's tables were checked: warn about those without an identity. */
static void on_existing_checked(struct pgf_replstart *st, PGresult *res)
{
    int n = identity_names(res, st->names, sizeof st->names);
    if (n > 0)
        pgf_warn("publication \"%s\" carries %d table%s without a replica identity: %s. The application's "
                 "UPDATE and DELETE on %s fail while it does. " IDENTITY_FIXES,
                 st->opts->publication, n, n == 1 ? "" : "s", st->names, n == 1 ? "it" : "them");
    step_slot(st);
}

/* The start-up check is advice: when it cannot run, say so and go on. */
static void on_check_failed(struct pgf_replstart *st, PGresult *res, const char *err)
{
    (void)res;
    pgf_warn("could not check the publication's tables for a replica identity: %s", err);
    step_slot(st);
}

/* A plain connection for a step that must not run on the walsender: looking the publication
 * up there would leave it in the walsender's catalog cache, where pgoutput would find it for
 * WAL older than it. */
static void open_plain(struct pgf_replstart *st, pgf_pgconn_cb connected)
{
    st->plain = pgf_pgconn_connect(st->base, st->opts->dsn, 0, CONNECT_TIMEOUT_MS, connected, st);
    if (st->plain == NULL) {
        snprintf(st->err, sizeof st->err, "out of memory");
        finish(st, PGF_REPLCONN_FATAL);
    }
}

/* The plain connection for the start-up check is up (or not). */
static void on_check_connected(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    (void)res;
    struct pgf_replstart *st = arg;
    char sql[2048];
    if (err) {
        on_check_failed(st, NULL, err);
    } else if (identity_sql(pgf_pgconn_pq(pc), st->opts->publication, sql, sizeof sql) != 0) {
        on_check_failed(st, NULL, "publication name is too long");
    } else {
        st->on_fail = on_check_failed;
        run(st, pc, sql, "looking up tables without a replica identity", STEP_TIMEOUT_MS, on_existing_checked);
    }
}

/* The new publication is committed. */
static void on_committed(struct pgf_replstart *st, PGresult *res)
{
    (void)res;
    pgf_info("created publication \"%s\"", st->opts->publication);
    if (st->missing > 0)
        pgf_warn("publication \"%s\" was created with --allow-missing-replica-identity although %d table%s "
                 "%s no replica identity: the application's UPDATE and DELETE on %s now fail: %s. " IDENTITY_FIXES,
                 st->opts->publication, st->missing, st->missing == 1 ? "" : "s",
                 st->missing == 1 ? "has" : "have", st->missing == 1 ? "it" : "them", st->names);
    step_slot(st);
}

/* The new, uncommitted publication's tables were checked: commit it, or refuse and let the
 * closing connection roll it back, so a publication that breaks the application's writes is
 * never left behind. */
static void on_created_checked(struct pgf_replstart *st, PGresult *res)
{
    int n = st->missing = identity_names(res, st->names, sizeof st->names);
    if (n > 0 && !st->opts->allow_missing_identity) {
        snprintf(st->err, sizeof st->err,
                 "refusing to create publication \"%s\": %d table%s it would publish %s no replica identity, so "
                 "PostgreSQL would then reject the application's UPDATE and DELETE on %s (\"cannot update table "
                 "... because it does not have a replica identity\"): %s. " IDENTITY_FIXES ". Or publish other "
                 "tables with --tables, or pass --allow-missing-replica-identity to create it anyway",
                 st->opts->publication, n, n == 1 ? "" : "s", n == 1 ? "has" : "have", n == 1 ? "it" : "them",
                 st->names);
        finish(st, PGF_REPLCONN_FATAL);
        return;
    }
    run(st, st->plain, "COMMIT", "COMMIT", STEP_TIMEOUT_MS, on_committed);
}

/* CREATE PUBLICATION ran inside the transaction: check what it carries. */
static void on_created(struct pgf_replstart *st, PGresult *res)
{
    (void)res;
    char sql[2048];
    if (identity_sql(pgf_pgconn_pq(st->plain), st->opts->publication, sql, sizeof sql) != 0) {
        snprintf(st->err, sizeof st->err, "publication name is too long");
        finish(st, PGF_REPLCONN_FATAL);
        return;
    }
    st->denied_hint = NULL;
    run(st, st->plain, sql, "looking up tables without a replica identity", STEP_TIMEOUT_MS, on_created_checked);
}

/* The plain connection for creating the publication is up (or not). */
static void on_create_connected(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    (void)res;
    struct pgf_replstart *st = arg;
    if (err) {
        snprintf(st->err, sizeof st->err, "creating the publication failed: cannot connect: %s", err);
        finish(st, PGF_REPLCONN_RETRY);
        return;
    }
    char sql[sizeof st->create + 16];
    snprintf(sql, sizeof sql, "BEGIN; %s", st->create);
    st->denied_hint = st->opts->tables
                          ? "CREATE PUBLICATION ... FOR TABLE needs a role that owns every table in --tables; or "
                            "have the tables' owner or a superuser create the publication"
                          : "FOR ALL TABLES needs a superuser: name the tables this role owns with --tables, or "
                            "have a superuser create the publication";
    run(st, pc, sql, "CREATE PUBLICATION", STEP_TIMEOUT_MS, on_created);
}

/* The publication looked up: create it (checked) if missing, or check the existing one. */
static void on_publication(struct pgf_replstart *st, PGresult *res)
{
    if (PQntuples(res) == 1) {
        /* Tables may have lost their key since the publication was made: say so at each start. */
        if (st->resuming)
            step_slot(st);
        else
            open_plain(st, on_check_connected);
        return;
    }
    if (publication_sql(pgf_pgconn_pq(st->repl), st->opts, st->create, sizeof st->create)) {
        snprintf(st->err, sizeof st->err, "invalid --tables list or names too long");
        finish(st, PGF_REPLCONN_FATAL);
        return;
    }
    if (!st->opts->create_publication) {
        snprintf(st->err, sizeof st->err,
                 "publication \"%s\" does not exist in database \"%s\". Create it (FOR ALL TABLES needs a "
                 "superuser) or run pgfanout with --create-publication:\n    %s;",
                 st->opts->publication, st->info.database, st->create);
        finish(st, PGF_REPLCONN_FATAL);
        return;
    }
    open_plain(st, on_create_connected);
}

/* The slot looked up: check it is ours to read, and on a reconnect that it is the slot we
 * read before; then look up the publication. */
static void on_slot(struct pgf_replstart *st, PGresult *res)
{
    const struct pgf_options *opts = st->opts;
    const char *dbname = st->info.database;
    st->slot_exists = PQntuples(res) == 1;
    if (st->slot_exists) {
        const char *plugin = PQgetvalue(res, 0, 0), *type = PQgetvalue(res, 0, 1), *db = PQgetvalue(res, 0, 2);
        if (strcmp(type, "logical") != 0 || strcmp(plugin, "pgoutput") != 0 || strcmp(db, dbname) != 0) {
            snprintf(st->err, sizeof st->err,
                     "replication slot \"%s\" exists but is a %s slot with plugin \"%s\" for database \"%s\"; "
                     "pgfanout needs a logical slot with plugin \"pgoutput\" for database \"%s\". "
                     "Pick another --slot name, or drop it with SELECT pg_drop_replication_slot('%s') "
                     "if nothing else uses it",
                     opts->slot, type, PQgetisnull(res, 0, 0) ? "" : plugin, db, dbname, opts->slot);
            finish(st, PGF_REPLCONN_FATAL);
            return;
        }
        if (!PQgetisnull(res, 0, 3))
            pgf_lsn_parse(PQgetvalue(res, 0, 3), &st->info.confirmed_flush);
    }
    char pos[PGF_LSN_BUFSZ], mine[PGF_LSN_BUFSZ];
    if (st->slot_exists && opts->temporary_slot)
        snprintf(st->err, sizeof st->err,
                 "replication slot \"%s\" already exists; --temporary-slot creates a slot of its own for this "
                 "session. Pick another --slot name", opts->slot);
    else if (st->resuming && !opts->temporary_slot && !st->slot_exists)
        /* Creating a slot now would start after the changes committed since it vanished and
         * skip them without a word: --create-slot only ever applies at startup. */
        snprintf(st->err, sizeof st->err,
                 "replication slot \"%s\" was lost while pgfanout was streaming: it no longer exists on the "
                 "server. The sinks hold every change up to %s, the last position confirmed to PostgreSQL; "
                 "changes committed after it were never delivered and are gone downstream, since no slot "
                 "holds them any more. pgfanout does not create a new slot on a reconnect, which would skip them "
                 "silently: recreate the slot (restart with --create-slot), then backfill the published tables "
                 "or rebuild what consumes them",
                 opts->slot, pgf_lsn_format(st->resume.confirmed, pos));
    else if (st->resuming && !opts->temporary_slot && st->info.confirmed_flush > st->resume.confirmed)
        /* Only our feedback moves a slot forward: one that is ahead of it is not the slot we read. */
        snprintf(st->err, sizeof st->err,
                 "replication slot \"%s\" was dropped and recreated, or advanced, while pgfanout was away: its "
                 "confirmed position %s is past %s, the last position pgfanout confirmed. Changes committed "
                 "between the two were never delivered and are gone downstream. Backfill the published tables or "
                 "rebuild what consumes them, then restart pgfanout",
                 opts->slot, pgf_lsn_format(st->info.confirmed_flush, pos), pgf_lsn_format(st->resume.confirmed, mine));
    else if (st->resume.from_state && !st->slot_exists && !opts->temporary_slot &&
             strcmp(opts->on_slot_loss, "backfill") != 0)
        /* After a failover PostgreSQL 15 has no logical slot on the promoted standby: creating
         * one would start after everything committed since, and skip it without a word. */
        snprintf(st->err, sizeof st->err,
                 "replication slot \"%s\" does not exist, but pgfanout's state (%s) shows it streamed from it up to "
                 "%s. Changes committed after that position were never delivered and are gone downstream: the "
                 "slot was dropped, or this is a standby promoted after a failover (PostgreSQL 15 does not copy "
                 "logical slots to standbys). pgfanout does not create a new slot over that gap, even with "
                 "--create-slot. Either set on_slot_loss: backfill (--on-slot-loss backfill): the slot is recreated "
                 "and every published table is read again (with redis.on_read: invalidate, their Redis keys are "
                 "invalidated too); or rebuild what consumes the topics, move the state away, and start with "
                 "--create-slot",
                 opts->slot, st->resume.state_where, pgf_lsn_format(st->resume.confirmed, pos));
    else if (st->resume.from_state && !st->slot_exists && !opts->temporary_slot) {
        pgf_warn("replication slot \"%s\" does not exist, but pgfanout's state (%s) shows it streamed from it up to "
                 "%s: changes after that are gone from PostgreSQL. on_slot_loss: backfill recreates the slot and "
                 "reads every published table again", opts->slot, st->resume.state_where,
                 pgf_lsn_format(st->resume.confirmed, pos));
        st->info.slot_lost = 1; /* created below, then every table is read */
    }
    else if (!st->slot_exists && !opts->create_slot && !opts->temporary_slot)
        snprintf(st->err, sizeof st->err,
                 "replication slot \"%s\" does not exist. Run pgfanout with --create-slot, or create it: "
                 "SELECT pg_create_logical_replication_slot('%s', 'pgoutput');",
                 opts->slot, opts->slot);
    if (st->err[0]) {
        finish(st, PGF_REPLCONN_FATAL);
        return;
    }
    char sql[1024] = "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = ";
    if (quote_into(pgf_pgconn_pq(st->repl), sql, sizeof sql, opts->publication, 0)) {
        snprintf(st->err, sizeof st->err, "publication name is too long");
        finish(st, PGF_REPLCONN_FATAL);
        return;
    }
    run(st, st->repl, sql, "looking up the publication", STEP_TIMEOUT_MS, on_publication);
}

/* wal_level known: it must be logical; then look up the slot (read-only checks first, so a
 * failure changes nothing on the server). */
static void on_wal_level(struct pgf_replstart *st, PGresult *res)
{
    if (PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 0), "logical") != 0) {
        snprintf(st->err, sizeof st->err,
                 "the server runs with wal_level = %s, but logical decoding needs wal_level = logical. "
                 "Set wal_level = logical in postgresql.conf (or run ALTER SYSTEM SET wal_level = logical) "
                 "and restart PostgreSQL; a reload is not enough",
                 PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "unknown");
        finish(st, PGF_REPLCONN_FATAL);
        return;
    }
    char sql[1024] = "SELECT plugin, slot_type, database, confirmed_flush_lsn FROM pg_catalog.pg_replication_slots "
                     "WHERE slot_name = ";
    if (quote_into(pgf_pgconn_pq(st->repl), sql, sizeof sql, st->opts->slot, 0)) {
        snprintf(st->err, sizeof st->err, "slot name is too long");
        finish(st, PGF_REPLCONN_FATAL);
        return;
    }
    run(st, st->repl, sql, "looking up the replication slot", STEP_TIMEOUT_MS, on_slot);
}

/* The system identified: note the database, then check wal_level. */
static void on_identify(struct pgf_replstart *st, PGresult *res)
{
    if (PQntuples(res) != 1 || PQnfields(res) < 4 || PQgetisnull(res, 0, 3)) {
        snprintf(st->err, sizeof st->err, "IDENTIFY_SYSTEM returned no database: the connection is not a "
                                          "replication=database connection");
        finish(st, PGF_REPLCONN_FATAL);
        return;
    }
    snprintf(st->info.database, sizeof st->info.database, "%s", PQgetvalue(res, 0, 3));
    snprintf(st->info.system_id, sizeof st->info.system_id, "%s", PQgetvalue(res, 0, 0));
    const char *was = st->resume.system_id;
    if (st->resume.from_state && was && was[0] && strcmp(was, st->info.system_id) != 0) {
        if (strcmp(st->opts->on_slot_loss, "backfill") != 0) {
            snprintf(st->err, sizeof st->err,
                     "pgfanout's state (%s) says slot \"%s\" was read from system %s, but this server is system %s: "
                     "another database cluster (restored, or rebuilt), not the one pgfanout streamed from. What "
                     "consumers hold may not match it, and changes may be missing. pgfanout does not go on over "
                     "such a gap. Either set on_slot_loss: backfill (--on-slot-loss backfill), which reads every "
                     "published table again from this server (with redis.on_read: invalidate, their Redis keys are "
                     "invalidated too), or rebuild the consumers, move the state away and start afresh",
                     st->resume.state_where, st->opts->slot, was, st->info.system_id);
            finish(st, PGF_REPLCONN_FATAL);
            return;
        }
        pgf_warn("pgfanout's state says slot \"%s\" was read from system %s, but this server is system %s: "
                 "on_slot_loss: backfill reads every published table again", st->opts->slot, was,
                 st->info.system_id);
        st->info.slot_lost = 1;
    }
    pgf_info("connected: system %s, timeline %s, WAL at %s, database %s", PQgetvalue(res, 0, 0),
             PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2), st->info.database);
    run(st, st->repl, "SHOW wal_level", "SHOW wal_level", STEP_TIMEOUT_MS, on_wal_level);
}

/* The role lookup after a refused replication connection: name the missing attribute. */
static void on_role(struct pgf_replstart *st, PGresult *res)
{
    if (PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "f") == 0) {
        const char *role = PQgetvalue(res, 0, 1);
        snprintf(st->err, sizeof st->err,
                 "role \"%s\" lacks the REPLICATION attribute, which logical replication needs "
                 "(PostgreSQL at %s said: %s). Grant it as a superuser: ALTER ROLE \"%s\" REPLICATION;",
                 role, st->where, st->conn_msg, role);
    }
    finish(st, PGF_REPLCONN_RETRY);
}

/* The role lookup cannot run: the plain connection error stands. */
static void on_role_failed(struct pgf_replstart *st, PGresult *res, const char *err)
{
    (void)res;
    (void)err;
    finish(st, PGF_REPLCONN_RETRY);
}

/* A plain connection after a refused replication one: is it the role's missing attribute? */
static void on_role_connected(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    (void)res;
    struct pgf_replstart *st = arg;
    if (err) {
        finish(st, PGF_REPLCONN_RETRY);
        return;
    }
    st->on_fail = on_role_failed;
    run(st, pc, "SELECT rolreplication OR rolsuper, current_user FROM pg_catalog.pg_roles WHERE rolname = current_user",
        "looking up the role", STEP_TIMEOUT_MS, on_role);
}

/* The replication connection is up, or failed: identify the system, or say where and why. */
static void on_connected(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    (void)res;
    struct pgf_replstart *st = arg;
    if (err == NULL) {
        run(st, pc, "IDENTIFY_SYSTEM", "IDENTIFY_SYSTEM", STEP_TIMEOUT_MS, on_identify);
        return;
    }
    server_where(pgf_pgconn_pq(pc), st->where, sizeof st->where);
    snprintf(st->conn_msg, sizeof st->conn_msg, "%s", err);
    snprintf(st->err, sizeof st->err, "cannot connect to PostgreSQL at %s: %s", st->where, st->conn_msg);
    if (strstr(err, "replication"))
        open_plain(st, on_role_connected);
    else
        finish(st, PGF_REPLCONN_RETRY);
}

/* Starts an attempt; see replconn.h. */
struct pgf_replstart *pgf_replconn_start(struct event_base *base, const struct pgf_options *opts,
                                         const struct pgf_resume *resume, pgf_replstart_cb done, void *arg)
{
    struct pgf_replstart *st = calloc(1, sizeof *st);
    if (st == NULL)
        return NULL;
    st->opts = opts;
    st->base = base;
    st->resuming = resume != NULL && !resume->from_state;
    if (resume)
        st->resume = *resume;
    st->done = done;
    st->arg = arg;
    st->repl = pgf_pgconn_connect(base, opts->dsn, 1, CONNECT_TIMEOUT_MS, on_connected, st);
    if (st->repl == NULL) {
        free(st);
        return NULL;
    }
    return st;
}

/* Sets the hook; see replconn.h. */
void pgf_replconn_before_create(struct pgf_replstart *st, pgf_before_create_cb cb, void *arg)
{
    st->before_create = cb;
    st->before_arg = arg;
}

/* Creates the slot after the hook; see replconn.h. */
void pgf_replconn_proceed(struct pgf_replstart *st)
{
    step_slot(st);
}

/* Abandons an attempt; see replconn.h. */
void pgf_replconn_cancel(struct pgf_replstart *st)
{
    if (st == NULL)
        return;
    pgf_pgconn_free(st->repl);
    pgf_pgconn_free(st->plain);
    free(st);
}

/* A lookup of the slot's confirmed position, on the loop. */
struct pgf_slot_lookup {
    struct pgf_pgconn *pc;
    char sql[512];
    pgf_slot_position_cb done;
    void *arg;
};

/* Ends the lookup and reports: found is 1 with lsn set, else 0. */
static void slot_lookup_end(struct pgf_slot_lookup *l, int found, uint64_t lsn)
{
    pgf_slot_position_cb done = l->done;
    void *arg = l->arg;
    pgf_pgconn_free(l->pc);
    free(l);
    done(arg, found, lsn);
}

/* The slot's row arrived, or not. */
static void on_slot_position(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    (void)pc;
    struct pgf_slot_lookup *l = arg;
    uint64_t lsn = 0;
    int found = err == NULL && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) &&
                pgf_lsn_parse(PQgetvalue(res, 0, 0), &lsn) == 0;
    slot_lookup_end(l, found, lsn);
}

/* Connected, or not: ask for the slot's row. */
static void on_slot_lookup_connected(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    (void)res;
    struct pgf_slot_lookup *l = arg;
    if (err || pgf_pgconn_query(pc, l->sql, 10000, on_slot_position, l) != 0)
        slot_lookup_end(l, 0, 0);
}

/* Starts looking the slot's position up; see replconn.h. */
int pgf_replconn_slot_position(struct event_base *base, const char *dsn, const char *slot,
                               pgf_slot_position_cb done, void *arg)
{
    struct pgf_slot_lookup *l = calloc(1, sizeof *l);
    if (l == NULL)
        return -1;
    l->done = done;
    l->arg = arg;
    PGconn *conn = NULL;
    l->pc = pgf_pgconn_connect(base, dsn, 0, 10000, on_slot_lookup_connected, l);
    if (l->pc)
        conn = pgf_pgconn_pq(l->pc);
    snprintf(l->sql, sizeof l->sql, "SELECT confirmed_flush_lsn::text FROM pg_catalog.pg_replication_slots "
                                    "WHERE slot_name = ");
    if (conn == NULL || quote_into(conn, l->sql, sizeof l->sql, slot, 0) != 0) {
        pgf_pgconn_free(l->pc);
        free(l);
        return -1;
    }
    return 0;
}
