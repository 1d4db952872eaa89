/* replconn.c - replication connection setup and server checks. */
#include "cdc/replconn.h"

#include <errno.h>
#include <poll.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/log.h"
#include "cdc/lsn.h"

/* Session settings that pin PostgreSQL's text output, so events do not depend on the
 * server's or the role's defaults; PostgreSQL's own apply worker pins the same ones. */
static const char pinned_options[] =
    "-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3 "
    "-c bytea_output=hex -c TimeZone=UTC";

/* Copies libpq's message into buf without its trailing newline. */
static void trim_copy(char *buf, size_t len, const char *msg)
{
    snprintf(buf, len, "%s", msg ? msg : "");
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
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

static void (*idle_hook)(void *);
static void *idle_arg;
static int connect_timed_out; /* the last connect_raw gave up after 10 s without an answer */
static int idle_held;         /* a connect from inside an event callback: no re-entering the loop */

/* Server notices (client_min_messages) go through our logger, in its format. */
static void notice_to_log(void *arg, const char *message)
{
    (void)arg;
    char msg[1024];
    trim_copy(msg, sizeof msg, message);
    pgf_info("PostgreSQL: %s", msg);
}

/* Connects without further diagnosis; the caller checks PQstatus. */
static PGconn *connect_raw(const char *dsn, int replication)
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
    const char *vals[] = {"10", "pgfanout", dsn, "UTF8", options ? options : pinned_options,
                          "database", NULL};
    PGconn *conn = PQconnectStartParams(keys, vals, 1);
    free(options);
    free(uopts);
    if (conn == NULL)
        return NULL;
    PQsetNoticeProcessor(conn, notice_to_log, NULL);
    /* Drive the connection ourselves, so the idle hook (the HTTP listener) keeps running while
     * a slow server makes us wait; libpq does not apply connect_timeout in this mode, so we do. */
    int64_t deadline = pgf_pgtime_now() + 10 * 1000000LL;
    connect_timed_out = 0;
    PostgresPollingStatusType st = PQstatus(conn) == CONNECTION_BAD ? PGRES_POLLING_FAILED : PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        struct pollfd pfd = {.fd = PQsocket(conn), .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
        int ready = 0;
        while (!ready && pgf_pgtime_now() < deadline) {
            if (idle_hook && !idle_held)
                idle_hook(idle_arg);
            ready = poll(&pfd, 1, 100);
            if (ready < 0 && errno == EINTR)
                ready = 0; /* a signal: main looks at it once the attempt ends */
            else if (ready < 0)
                break;
        }
        if (ready <= 0) {
            connect_timed_out = 1; /* the caller reports it; the half-open conn is not OK */
            return conn;
        }
        st = PQconnectPoll(conn);
    }
    return conn;
}

/* Holds or releases the idle hook; see replconn.h. */
void pgf_replconn_hold_idle_hook(int hold)
{
    idle_held = hold;
}

/* Sets what runs while a connection attempt waits; see replconn.h. */
void pgf_replconn_set_idle_hook(void (*fn)(void *), void *arg)
{
    idle_hook = fn;
    idle_arg = arg;
}

/* Returns 1 if the role of dsn can log in but lacks REPLICATION, 0 if not or unknown. */
static int role_lacks_replication(const char *dsn, char *role, size_t rolelen)
{
    PGconn *conn = connect_raw(dsn, 0);
    int lacks = 0;
    if (PQstatus(conn) == CONNECTION_OK) {
        PGresult *res = PQexec(conn, "SELECT rolreplication OR rolsuper, current_user FROM pg_catalog.pg_roles "
                                     "WHERE rolname = current_user");
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            lacks = strcmp(PQgetvalue(res, 0, 0), "f") == 0;
            snprintf(role, rolelen, "%s", PQgetvalue(res, 0, 1));
        }
        PQclear(res);
    }
    PQfinish(conn);
    return lacks;
}

/* Opens the connection; see replconn.h. */
PGconn *pgf_replconn_open(const char *dsn, int replication, char *err, size_t errlen)
{
    if (pgf_dsn_check(dsn, err, errlen) != 0)
        return NULL;
    PGconn *conn = connect_raw(dsn, replication);
    if (conn == NULL) {
        snprintf(err, errlen, "cannot allocate a PostgreSQL connection");
        return NULL;
    }
    if (PQstatus(conn) == CONNECTION_OK)
        return conn;
    char msg[1024], role[128] = "";
    trim_copy(msg, sizeof msg, PQerrorMessage(conn));
    if (connect_timed_out || msg[0] == '\0')
        snprintf(msg, sizeof msg, "no answer within 10 s (the server accepts connections but does not respond)");
    const char *host = PQhost(conn), *port = PQport(conn);
    char where[300];
    if (host && host[0] == '/')
        snprintf(where, sizeof where, "socket directory %s port %s", host, port ? port : "?");
    else
        snprintf(where, sizeof where, "%s:%s", host && *host ? host : "localhost", port && *port ? port : "5432");
    if (replication && strstr(msg, "replication") && role_lacks_replication(dsn, role, sizeof role))
        snprintf(err, errlen,
                 "role \"%s\" lacks the REPLICATION attribute, which logical replication needs "
                 "(PostgreSQL at %s said: %s). Grant it as a superuser: ALTER ROLE \"%s\" REPLICATION;",
                 role, where, msg, role);
    else
        snprintf(err, errlen, "cannot connect to PostgreSQL at %s: %s", where, msg);
    PQfinish(conn);
    return NULL;
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
    /* libpq's reason quotes the string, which may hold a password: say what to check instead. */
    PQfreemem(why);
    snprintf(err, errlen, "the PostgreSQL connection string (source.dsn) is not valid: write key=value pairs "
                          "such as \"host=127.0.0.1 dbname=app user=cdc\", or a postgresql:// URI (its text is "
                          "not shown here because it may hold a password)");
    return -1;
}

/* Runs a query expecting rows; returns the result, or NULL with err set naming what and,
 * when sqlstate is not NULL, the server's SQLSTATE copied into it ("" when there is none). */
static PGresult *query_state(PGconn *conn, const char *sql, const char *what, char *err, size_t errlen,
                             char sqlstate[6])
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return res;
    char msg[1024];
    trim_copy(msg, sizeof msg, PQresultErrorMessage(res));
    if (!*msg)
        trim_copy(msg, sizeof msg, PQerrorMessage(conn));
    snprintf(err, errlen, "%s failed: %s", what, msg);
    if (sqlstate) {
        const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        snprintf(sqlstate, 6, "%s", code ? code : "");
    }
    PQclear(res);
    return NULL;
}

/* Runs a query expecting rows; returns the result, or NULL with err set naming what. */
static PGresult *query(PGconn *conn, const char *sql, const char *what, char *err, size_t errlen)
{
    return query_state(conn, sql, what, err, errlen, NULL);
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

/* Lists into names (", "-separated, bounded) the tables that publication pub carries, leaf
 * partitions included, whose UPDATE and DELETE PostgreSQL refuses for want of a replica
 * identity: no primary key under REPLICA IDENTITY DEFAULT, NOTHING, or a dropped USING INDEX.
 * Returns how many, or -1 with err set when the catalog query fails. */
static int tables_without_identity(PGconn *conn, const char *pub, char *names, size_t nameslen, char *err,
                                   size_t errlen)
{
    /* The leaves are what an UPDATE runs its replica identity check on, also under a
     * partitioned table published through its root. */
    char sql[2048] =
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
        "AND p.pubname = ";
    if (quote_into(conn, sql, sizeof sql, pub, 0)) {
        snprintf(err, errlen, "publication name is too long");
        return -1;
    }
    strncat(sql, " ORDER BY 1", sizeof sql - strlen(sql) - 1);
    PGresult *res = query(conn, sql, "looking up tables without a replica identity", err, errlen);
    if (res == NULL)
        return -1;
    int n = PQntuples(res);
    size_t used = 0;
    names[0] = '\0';
    for (int i = 0; i < n && used < nameslen; i++) {
        if (i == 20) { /* enough to act on; the count says the rest */
            snprintf(names + used, nameslen - used, ", and %d more", n - i);
            break;
        }
        used += (size_t)snprintf(names + used, nameslen - used, "%s%s", i ? ", " : "", PQgetvalue(res, i, 0));
    }
    PQclear(res);
    return n;
}

/* The fixes for a table without a replica identity, for every message that names one. */
#define IDENTITY_FIXES                                                                                      \
    "Give each a primary key (ALTER TABLE ... ADD PRIMARY KEY (...)), or run ALTER TABLE ... REPLICA "     \
    "IDENTITY FULL, or ALTER TABLE ... REPLICA IDENTITY USING INDEX on a unique index of NOT NULL columns"

/* create_publication's work on conn; see there. */
static int create_publication_on(PGconn *conn, const struct pgf_options *opts, const char *create, char *err,
                                 size_t errlen)
{
    PGresult *res = query(conn, "BEGIN", "BEGIN", err, errlen);
    if (res == NULL)
        return -1;
    PQclear(res);
    char sqlstate[6] = "", names[2048];
    int n = -1;
    if ((res = query_state(conn, create, "CREATE PUBLICATION", err, errlen, sqlstate)) != NULL) {
        PQclear(res);
        n = tables_without_identity(conn, opts->publication, names, sizeof names, err, errlen);
    }
    if (n > 0 && !opts->allow_missing_identity)
        snprintf(err, errlen,
                 "refusing to create publication \"%s\": %d table%s it would publish %s no replica identity, so "
                 "PostgreSQL would then reject the application's UPDATE and DELETE on %s (\"cannot update table "
                 "... because it does not have a replica identity\"): %s. " IDENTITY_FIXES ". Or publish other "
                 "tables with --tables, or pass --allow-missing-replica-identity to create it anyway",
                 opts->publication, n, n == 1 ? "" : "s", n == 1 ? "has" : "have", n == 1 ? "it" : "them", names);
    else if (n < 0 && strcmp(sqlstate, "42501") == 0) /* insufficient_privilege */
        snprintf(err + strlen(err), errlen - strlen(err),
                 opts->tables ? ". CREATE PUBLICATION ... FOR TABLE needs a role that owns every table in --tables; "
                                "or have the tables' owner or a superuser create the publication"
                              : ". FOR ALL TABLES needs a superuser: name the tables this role owns with --tables, "
                                "or have a superuser create the publication");
    int commit = n == 0 || (n > 0 && opts->allow_missing_identity);
    char ignored[256];
    res = query(conn, commit ? "COMMIT" : "ROLLBACK", commit ? "COMMIT" : "ROLLBACK",
                commit ? err : ignored, commit ? errlen : sizeof ignored);
    if (res == NULL)
        return -1;
    PQclear(res);
    if (!commit)
        return -1;
    pgf_info("created publication \"%s\"", opts->publication);
    if (n > 0)
        pgf_warn("publication \"%s\" was created with --allow-missing-replica-identity although %d table%s "
                 "%s no replica identity: the application's UPDATE and DELETE on %s now fail: %s. " IDENTITY_FIXES,
                 opts->publication, n, n == 1 ? "" : "s", n == 1 ? "has" : "have", n == 1 ? "it" : "them", names);
    return 0;
}

/* Creates the publication in a transaction that is only committed when every table it
 * carries has a replica identity, or opts allow otherwise: a publication that makes the
 * application's writes fail is never left behind.  Runs on a plain connection of its own, so
 * the walsender's catalog cache never holds the publication from before the slot's WAL.
 * Returns 0, or -1 with the reason in err. */
static int create_publication(const struct pgf_options *opts, const char *create, char *err, size_t errlen)
{
    PGconn *conn = pgf_replconn_open(opts->dsn, 0, err, errlen);
    if (conn == NULL)
        return -1;
    int rc = create_publication_on(conn, opts, create, err, errlen);
    PQfinish(conn);
    return rc;
}

/* Checks wal_level; returns 0 if logical, else -1 with what to change. */
static int check_wal_level(PGconn *conn, char *err, size_t errlen)
{
    PGresult *res = query(conn, "SHOW wal_level", "SHOW wal_level", err, errlen);
    if (res == NULL)
        return -1;
    int ok = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "logical") == 0;
    if (!ok)
        snprintf(err, errlen,
                 "the server runs with wal_level = %s, but logical decoding needs wal_level = logical. "
                 "Set wal_level = logical in postgresql.conf (or run ALTER SYSTEM SET wal_level = logical) "
                 "and restart PostgreSQL; a reload is not enough",
                 PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "unknown");
    PQclear(res);
    return ok ? 0 : -1;
}

/* Prepares the server side; see replconn.h. */
int pgf_replconn_prepare(PGconn *conn, const struct pgf_options *opts, const struct pgf_resume *resume,
                         struct pgf_server_info *info, char *err, size_t errlen)
{
    memset(info, 0, sizeof *info);
    PGresult *res = query(conn, "IDENTIFY_SYSTEM", "IDENTIFY_SYSTEM", err, errlen);
    if (res == NULL)
        return -1;
    if (PQntuples(res) != 1 || PQnfields(res) < 4 || PQgetisnull(res, 0, 3)) {
        snprintf(err, errlen, "IDENTIFY_SYSTEM returned no database: the connection is not a "
                              "replication=database connection");
        PQclear(res);
        return -1;
    }
    char *dbname = info->database;
    snprintf(dbname, sizeof info->database, "%s", PQgetvalue(res, 0, 3));
    pgf_info("connected: system %s, timeline %s, WAL at %s, database %s", PQgetvalue(res, 0, 0),
             PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2), dbname);
    PQclear(res);

    if (check_wal_level(conn, err, errlen))
        return -1;

    /* Read-only checks first, so a failure changes nothing on the server. */
    char sql[4096] = "SELECT plugin, slot_type, database, confirmed_flush_lsn FROM pg_catalog.pg_replication_slots "
                     "WHERE slot_name = ";
    if (quote_into(conn, sql, sizeof sql, opts->slot, 0)) {
        snprintf(err, errlen, "slot name is too long");
        return -1;
    }
    if ((res = query(conn, sql, "looking up the replication slot", err, errlen)) == NULL)
        return -1;
    int slot_exists = PQntuples(res) == 1;
    if (slot_exists) {
        const char *plugin = PQgetvalue(res, 0, 0), *type = PQgetvalue(res, 0, 1), *db = PQgetvalue(res, 0, 2);
        if (strcmp(type, "logical") != 0 || strcmp(plugin, "pgoutput") != 0 || strcmp(db, dbname) != 0) {
            snprintf(err, errlen,
                     "replication slot \"%s\" exists but is a %s slot with plugin \"%s\" for database \"%s\"; "
                     "pgfanout needs a logical slot with plugin \"pgoutput\" for database \"%s\". "
                     "Pick another --slot name, or drop it with SELECT pg_drop_replication_slot('%s') "
                     "if nothing else uses it",
                     opts->slot, type, PQgetisnull(res, 0, 0) ? "" : plugin, db, dbname, opts->slot);
            PQclear(res);
            return -1;
        }
    }
    if (slot_exists && !PQgetisnull(res, 0, 3))
        pgf_lsn_parse(PQgetvalue(res, 0, 3), &info->confirmed_flush);
    PQclear(res);
    if (slot_exists && opts->temporary_slot) {
        snprintf(err, errlen,
                 "replication slot \"%s\" already exists; --temporary-slot creates a slot of its own for this "
                 "session. Pick another --slot name", opts->slot);
        return -1;
    }
    char pos[PGF_LSN_BUFSZ], mine[PGF_LSN_BUFSZ];
    if (resume && !opts->temporary_slot && !slot_exists) {
        /* Creating a slot now would start after the changes committed since it vanished and
         * skip them without a word: --create-slot only ever applies at startup. */
        snprintf(err, errlen,
                 "replication slot \"%s\" was lost while pgfanout was streaming: it no longer exists on the "
                 "server. The sinks hold every change up to %s, the last position confirmed to PostgreSQL; "
                 "changes committed after it were never delivered and are gone downstream, since no slot "
                 "holds them any more. pgfanout does not create a new slot on a reconnect, which would skip them "
                 "silently: recreate the slot (restart with --create-slot), then backfill the published tables "
                 "or rebuild what consumes them",
                 opts->slot, pgf_lsn_format(resume->confirmed, pos));
        return -1;
    }
    if (resume && !opts->temporary_slot && info->confirmed_flush > resume->confirmed) {
        /* Only our feedback moves a slot forward: one that is ahead of it is not the slot we read. */
        snprintf(err, errlen,
                 "replication slot \"%s\" was dropped and recreated, or advanced, while pgfanout was away: its "
                 "confirmed position %s is past %s, the last position pgfanout confirmed. Changes committed "
                 "between the two were never delivered and are gone downstream. Backfill the published tables or "
                 "rebuild what consumes them, then restart pgfanout",
                 opts->slot, pgf_lsn_format(info->confirmed_flush, pos), pgf_lsn_format(resume->confirmed, mine));
        return -1;
    }
    if (!slot_exists && !opts->create_slot && !opts->temporary_slot) {
        snprintf(err, errlen,
                 "replication slot \"%s\" does not exist. Run pgfanout with --create-slot, or create it: "
                 "SELECT pg_create_logical_replication_slot('%s', 'pgoutput');",
                 opts->slot, opts->slot);
        return -1;
    }

    snprintf(sql, sizeof sql, "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = ");
    if (quote_into(conn, sql, sizeof sql, opts->publication, 0)) {
        snprintf(err, errlen, "publication name is too long");
        return -1;
    }
    if ((res = query(conn, sql, "looking up the publication", err, errlen)) == NULL)
        return -1;
    int pub_exists = PQntuples(res) == 1;
    PQclear(res);
    if (!pub_exists) {
        char create[4096];
        if (publication_sql(conn, opts, create, sizeof create)) {
            snprintf(err, errlen, "invalid --tables list or names too long");
            return -1;
        }
        if (!opts->create_publication) {
            snprintf(err, errlen,
                     "publication \"%s\" does not exist in database \"%s\". Create it (FOR ALL TABLES needs a "
                     "superuser) or run pgfanout with --create-publication:\n    %s;",
                     opts->publication, dbname, create);
            return -1;
        }
        if (create_publication(opts, create, err, errlen) != 0)
            return -1;
    } else if (resume == NULL) {
        /* Tables may have lost their key since the publication was made: say so at each start.
         * On a connection of its own: looking the publication up here would leave it in this
         * walsender's catalog cache, where pgoutput would find it for WAL older than it. */
        char names[2048], why[1024];
        PGconn *plain = pgf_replconn_open(opts->dsn, 0, why, sizeof why);
        int n = plain ? tables_without_identity(plain, opts->publication, names, sizeof names, why, sizeof why) : -1;
        PQfinish(plain);
        if (n > 0)
            pgf_warn("publication \"%s\" carries %d table%s without a replica identity: %s. The application's "
                     "UPDATE and DELETE on %s fail while it does. " IDENTITY_FIXES,
                     opts->publication, n, n == 1 ? "" : "s", names, n == 1 ? "it" : "them");
        else if (n < 0)
            pgf_warn("could not check the publication's tables for a replica identity: %s", why);
    }

    if (!slot_exists) {
        snprintf(sql, sizeof sql, "CREATE_REPLICATION_SLOT ");
        quote_into(conn, sql, sizeof sql, opts->slot, 1);
        /* A temporary slot lives as long as this connection: an ad-hoc run leaves nothing behind. */
        strncat(sql, opts->temporary_slot ? " TEMPORARY LOGICAL pgoutput NOEXPORT_SNAPSHOT"
                                          : " LOGICAL pgoutput NOEXPORT_SNAPSHOT",
                sizeof sql - strlen(sql) - 1);
        if ((res = query(conn, sql, "CREATE_REPLICATION_SLOT", err, errlen)) == NULL)
            return -1;
        pgf_info("created %sreplication slot \"%s\" at %s", opts->temporary_slot ? "temporary " : "", opts->slot,
                 PQntuples(res) == 1 ? PQgetvalue(res, 0, 1) : "?");
        if (PQntuples(res) == 1)
            pgf_lsn_parse(PQgetvalue(res, 0, 1), &info->confirmed_flush);
        PQclear(res);
    }
    return 0;
}

/* Starts streaming; see replconn.h. */
int pgf_replconn_start(PGconn *conn, const struct pgf_options *opts, char *err, size_t errlen)
{
    /* publication_names is a string literal holding a list of identifiers. */
    char ident[1024] = "", sql[4096] = "START_REPLICATION SLOT ";
    if (quote_into(conn, sql, sizeof sql, opts->slot, 1) || quote_into(conn, ident, sizeof ident, opts->publication, 1)) {
        snprintf(err, errlen, "slot or publication name is too long");
        return -1;
    }
    strncat(sql, " LOGICAL 0/0 (proto_version '1', publication_names ", sizeof sql - strlen(sql) - 1);
    quote_into(conn, sql, sizeof sql, ident, 0);
    strncat(sql, ", messages 'true')", sizeof sql - strlen(sql) - 1);
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_COPY_BOTH) {
        char msg[1024];
        trim_copy(msg, sizeof msg, PQresultErrorMessage(res));
        snprintf(err, errlen, "START_REPLICATION on slot \"%s\" failed: %s", opts->slot, msg);
        /* object_in_use: another walsender holds the slot, such as our own old one that has
         * not exited yet, or another instance; it is ours to take once it lets go. */
        const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        int busy = code && strcmp(code, "55006") == 0;
        PQclear(res);
        return busy ? PGF_REPLCONN_BUSY : -1;
    }
    PQclear(res);
    return 0;
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
        PGresult *res = query(conn, sql, "DROP_REPLICATION_SLOT", err, errlen);
        rc = res ? 0 : -1;
        PQclear(res);
    } else {
        snprintf(err, errlen, "slot name is too long");
    }
    PQfinish(conn);
    return rc;
}
