/* snapshot.c - watermarked chunks (DBLog) on the event loop; see snapshot.h and
 * decoders/window.h.  A chunk is read between a low and a high watermark and handed on when
 * the high watermark comes back; the table's progress is saved once the sinks acknowledged
 * the watermark's transaction.  The next chunk is read meanwhile, but handed on only after
 * that save (else it is read again), so a crash costs at most one chunk handed on twice. */
#include "cdc/snapshot.h"

#include <event2/event.h>
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cdc/metrics.h"
#include "cdc/keys.h"
#include "cdc/pgconn.h"
#include "common/log.h"
#include "common/lsn.h"
#include "decoders/window.h"

#define QUERY_TIMEOUT_MS 600000 /* a chunk's SELECT on a large, cold table may take a while */
#define RETRY_MS 2000
#define XIP_POLL_MS 100
#define PROGRESS_MS 10000
#define SAVE_EVERY_MS 10000 /* the confirmed position is saved this often, and at exit */
/* A request's where filter goes on lines of its own: a "--" in it then ends at its line, so it
 * cannot comment out the ")" and the ORDER BY ... LIMIT after it (and an unclosed comment
 * swallows them and is a syntax error), and the filter can only be one condition. */
#define FILTER_EOL "\n"

/* Where the current chunk is. */
enum phase {
    P_IDLE,       /* no job, or waiting for the table list */
    P_BUSY,       /* a query of the chunk cycle is under way */
    P_XIP_WAIT,   /* waiting for transactions older than the recording to end */
    P_WAIT_HIGH,  /* the chunk is read; its high watermark has not come back yet */
    P_NEXT,       /* the chunk was handed on; the next one starts once the connection is free */
    P_REREAD,     /* the next chunk came back before the one before it was saved: it is read
                   * again once that save is done */
    P_BACKOFF,    /* a query failed: retrying shortly */
};

/* The chunk handed on whose progress is not saved yet, beside the next chunk being read. */
struct pending {
    int stage;        /* 0 none, 1 its transaction not committed yet, 2 not acknowledged yet, 3 saving */
    uint64_t end_lsn; /* the watermark transaction's end */
    char **last_key;  /* the chunk's last key (nkey values), or NULL for an empty chunk */
    int nkey;
    uint64_t rows;
    int done;         /* the table's last chunk */
    uint64_t version; /* the state version that holds it */
};

/* The table being read now, as the catalog describes it. */
struct table_run {
    int idx; /* in state.tables; -1 when none */
    struct pgf_relation rel;
    int nkey;
    int *keyidx;      /* key columns' positions in rel */
    char *qname;      /* "schema"."table" */
    char *cols;       /* the quoted column list */
    char *order;      /* the quoted key columns */
    char *rowfilter;  /* the publication's row filter, or NULL */
    uint64_t estimate;
    int wtable;       /* in the window */
    char label[256];  /* schema.table, for logs and metrics */
    struct timespec started;
    uint64_t rows_at_start;
    unsigned reread; /* chunks read again (they came back before the one before was saved) */
};

struct pgf_snapshot {
    struct event_base *base;
    const struct pgf_options *opts;
    struct pgf_state_store *store;
    struct pgf_state state;
    struct pgf_pgconn *pc;
    enum phase phase;
    int restart; /* the stream restarted while a query was under way: read the chunk again */
    struct table_run cur;
    struct pgf_window *win;
    struct pgf_snap snap;
    PGresult *chunk;
    struct pending pend;
    char run[24];       /* this process's watermark prefix: an old run's watermarks never match */
    uint64_t seq;
    char xip_target[32]; /* xmax when recording began: every older transaction must end first */
    struct sink *const *sinks;
    size_t nsinks;
    void (*wake)(void *ctx); /* tells the stream that initial_only is done */
    void *wake_ctx;
    size_t refused;          /* tables of the job that could not be read */
    struct event *ev_retry, *ev_progress, *ev_save;
    int saving, dirty;
    uint64_t want, inflight, saved; /* state versions: asked for, being saved, durable */
    uint64_t chunk_version;          /* the version that holds the last chunk's progress */
    uint64_t last_saved_confirmed;
    int listing; /* the job's table list is being read */
    int finished, begun, closing;
    int low_pending; /* the next chunk must start once the query under way ends */
    int paused;      /* the role may not write watermarks: no chunk can be read this run */
    int prepared;    /* pgf_snapshot_prepare set the job before the slot was created */
    uint64_t start_seq; /* the table start marker under way (a slot_loss job's truncate) */
    int start_pending;
    void (*prepare_done)(void *arg); /* waits for the prepared job to be saved */
    void *prepare_arg;
    uint64_t prepare_version;
    unsigned xip_polls;
    struct pgf_snapshot_count *metrics;
};

static void advance(struct pgf_snapshot *s);

/* snapshot: initial_only has read and saved everything: the stream stops. */
static void set_finished(struct pgf_snapshot *s)
{
    if (s->finished || strcmp(s->opts->snapshot ? s->opts->snapshot : "", "initial_only") != 0)
        return;
    s->finished = 1;
    if (s->wake)
        s->wake(s->wake_ctx);
}
static void request_save(struct pgf_snapshot *s);
static void on_xip_polled(struct pgf_snapshot *s, PGresult *res);
static void on_start_marker(struct pgf_snapshot *s, PGresult *res);
static void on_low(struct pgf_snapshot *s, PGresult *res);

/* Seconds since t. */
static double since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

/* Frees what the table run holds and marks it empty. */
static void run_clear(struct table_run *r)
{
    for (uint16_t i = 0; i < r->rel.natts; i++)
        free(r->rel.attrs[i].name);
    free(r->rel.attrs);
    free(r->rel.key_atts);
    free(r->rel.nspname);
    free(r->rel.relname);
    free(r->keyidx);
    free(r->qname);
    free(r->cols);
    free(r->order);
    free(r->rowfilter);
    memset(r, 0, sizeof *r);
    r->idx = -1;
}

/* Forgets the chunk under way (its rows and snapshot); its watermarks, should they still
 * come back, no longer match. */
static void drop_chunk(struct pgf_snapshot *s)
{
    PQclear(s->chunk);
    s->chunk = NULL;
    pgf_snap_free(&s->snap);
    s->seq++;
}

/* Forgets the chunk handed on but not saved: it is read again from the saved progress. */
static void pend_clear(struct pgf_snapshot *s)
{
    for (int k = 0; s->pend.last_key && k < s->pend.nkey; k++)
        free(s->pend.last_key[k]);
    free(s->pend.last_key);
    memset(&s->pend, 0, sizeof s->pend);
}

/* Gives up the table under way: its connection (a BEGIN without its COMMIT would hold a
 * snapshot open), its chunk and its window; it is read again from its saved progress. */
static void forget_table(struct pgf_snapshot *s)
{
    pend_clear(s);
    pgf_pgconn_free(s->pc);
    s->pc = NULL;
    drop_chunk(s);
    run_clear(&s->cur);
    pgf_window_reset(s->win);
    s->start_pending = 0;
}

/* Runs on_retry after ms. */
static void later(struct pgf_snapshot *s, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(s->ev_retry, &tv);
}

/* A query of the chunk cycle failed for a reason that may pass (the server restarted): drop
 * the connection and read the table again from its saved progress shortly. */
static void transient(struct pgf_snapshot *s, const char *what, const char *err)
{
    pgf_warn("snapshot%s%s: %s failed: %s; retrying in %d s from the last acknowledged chunk",
             s->cur.idx >= 0 ? " of " : "", s->cur.idx >= 0 ? s->cur.label : "", what, err, RETRY_MS / 1000);
    forget_table(s);
    s->phase = P_BACKOFF;
    later(s, RETRY_MS);
}

/* Refuses the current table with err (logged): the other tables go on. */
static void refuse(struct pgf_snapshot *s, const char *err)
{
    struct pgf_state_table *t = &s->state.tables[s->cur.idx];
    pgf_error("snapshot: table %s.%s is skipped: %s; the other tables go on", t->schema, t->table, err);
    t->done = 1;
    s->refused++;
    pend_clear(s);
    drop_chunk(s);
    run_clear(&s->cur);
    pgf_window_reset(s->win);
    s->phase = P_IDLE;
    request_save(s);
    advance(s);
}

/* True for an error that a retry cannot fix: the request's filter or bounds are wrong, or
 * the role may not read the table. */
static int permanent(PGresult *res)
{
    const char *code = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return code && (strncmp(code, "42", 2) == 0 || strncmp(code, "22", 2) == 0);
}

typedef void (*step_fn)(struct pgf_snapshot *s, PGresult *res);

/* What a query of the cycle runs next. */
struct step {
    struct pgf_snapshot *s;
    step_fn next;
    const char *what;
};

static struct step the_step; /* one query at a time on the snapshot's connection */

/* A query ended: hand it to its step, unless it failed or the stream restarted meanwhile. */
static void on_step(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    (void)pc;
    struct step *st = arg;
    struct pgf_snapshot *s = st->s;
    if (s->restart) {
        s->restart = 0;
        if (err == NULL && st->next != NULL)
            pgf_debug("snapshot: the stream restarted; reading the chunk again");
        forget_table(s);
        s->phase = P_IDLE;
        advance(s);
        return;
    }
    if (err) {
        const char *code = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        if (code && strcmp(code, "42501") == 0 && strstr(st->what, "watermark")) {
            /* Not this table's fault: no table can be read until the role may write watermarks. */
            pgf_error("snapshot job \"%s\" is paused: %s failed: %s. Grant it: GRANT EXECUTE ON FUNCTION "
                      "pg_logical_emit_message(boolean, text, text) TO <pgfanout's role>; the job resumes at the "
                      "next start (its progress is kept). Streaming goes on", s->state.job, st->what, err);
            forget_table(s);
            s->phase = P_IDLE;
            s->paused = 1;
            pgf_metrics.snapshot_running = 0;
            return;
        }
        if (s->cur.idx >= 0 && permanent(res)) {
            char why[1200];
            snprintf(why, sizeof why, "%s failed: %s%s", st->what, err,
                     strcmp(code, "42501") == 0 ? " (grant the role SELECT on the table)" : "");
            pgf_pgconn_free(s->pc);
            s->pc = NULL;
            refuse(s, why);
        } else {
            transient(s, st->what, err);
        }
        return;
    }
    st->next(s, res);
}

/* Sends sql on the snapshot's connection, as exactly one statement when one is set; next runs
 * with its result. */
static void query_as(struct pgf_snapshot *s, const char *sql, int one, const char *what, step_fn next)
{
    the_step = (struct step){s, next, what};
    s->phase = P_BUSY;
    if ((one ? pgf_pgconn_query_one : pgf_pgconn_query)(s->pc, sql, QUERY_TIMEOUT_MS, on_step, &the_step) != 0)
        transient(s, what, "the query could not be sent");
}

/* Sends sql (one or more statements) on the snapshot's connection; next runs with its result. */
static void query(struct pgf_snapshot *s, const char *sql, const char *what, step_fn next)
{
    query_as(s, sql, 0, what, next);
}

/* The connection is up (or failed): carry on with the table. */
static void on_connected(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    (void)pc;
    (void)res;
    struct pgf_snapshot *s = arg;
    s->restart = 0; /* nothing was under way on the new connection */
    if (err) {
        transient(s, "connecting", err);
        return;
    }
    s->phase = P_IDLE;
    advance(s);
}

/* Returns a malloc'd copy of name quoted as an identifier for conn, or NULL. */
static char *ident(PGconn *conn, const char *name)
{
    char *q = PQescapeIdentifier(conn, name, strlen(name));
    char *out = q ? strdup(q) : NULL;
    PQfreemem(q);
    return out;
}

/* Appends to a growing string; returns 0, or -1 when out of memory. */
static int cat(char **buf, size_t *len, size_t *cap, const char *text)
{
    size_t n = strlen(text);
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 256;
        while (*len + n + 1 > c)
            c *= 2;
        char *nb = realloc(*buf, c);
        if (nb == NULL)
            return -1;
        *buf = nb;
        *cap = c;
    }
    memcpy(*buf + *len, text, n + 1);
    *len += n;
    return 0;
}

/* Appends the literal of text; returns 0 or -1. */
static int cat_literal(struct pgf_snapshot *s, char **buf, size_t *len, size_t *cap, const char *text)
{
    char *q = PQescapeLiteral(pgf_pgconn_pq(s->pc), text, strlen(text));
    int rc = q ? cat(buf, len, cap, q) : -1;
    PQfreemem(q);
    return rc;
}

/* The catalog query that describes tables: for each name (a literal array), whether it
 * exists and is published, its columns as pgoutput sends them (name, type, typmod, part of
 * the replica identity), the key to read it by (primary key, else the narrowest unique index
 * over NOT NULL columns), its row filter and its size estimate. */
static const char describe_sql[] =
    "SELECT r.ord, r.name, c.oid, n.nspname, c.relname, c.relreplident, greatest(c.reltuples, 0)::bigint, "
    "p.pubname IS NOT NULL, "
    "(SELECT json_agg(json_build_array(a.attname, a.atttypid::int8, a.atttypmod, "
    "   CASE c.relreplident WHEN 'f' THEN true WHEN 'n' THEN false "
    "   ELSE EXISTS (SELECT 1 FROM pg_catalog.pg_index x WHERE x.indrelid = c.oid "
    "     AND a.attnum = ANY (x.indkey::int2[]) "
    "     AND CASE c.relreplident WHEN 'd' THEN x.indisprimary ELSE x.indisreplident END) END) ORDER BY a.attnum) "
    "  FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
    "  AND a.attgenerated = '' AND (p.attnames IS NULL OR a.attname = ANY (p.attnames))), "
    "(SELECT json_agg(a.attname ORDER BY k.ord) FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord) "
    "  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum), "
    "p.rowfilter, " PGF_RECORD_KEY_SQL("c.oid") " "
    "FROM unnest(%s::text[]) WITH ORDINALITY r(name, ord) "
    "LEFT JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(r.name) "
    "LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "LEFT JOIN pg_catalog.pg_publication_tables p ON p.pubname = %s AND p.schemaname = n.nspname "
    "  AND p.tablename = c.relname "
    "LEFT JOIN LATERAL (SELECT x.indkey FROM pg_catalog.pg_index x WHERE x.indrelid = c.oid AND x.indisunique "
    "  AND x.indisvalid AND x.indimmediate AND x.indpred IS NULL AND NOT (0 = ANY (x.indkey::int2[])) "
    "  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid "
    "    AND a.attnum = ANY (x.indkey::int2[]) AND NOT a.attnotnull) "
    "  ORDER BY x.indisprimary DESC, cardinality(x.indkey::int2[]), x.indexrelid LIMIT 1) i ON true "
    "ORDER BY r.ord";

/* Columns of describe_sql's result. */
enum { D_ORD, D_NAME, D_OID, D_NSP, D_REL, D_IDENT, D_EST, D_PUB, D_COLS, D_KEY, D_FILTER, D_RECORD_KEY };

/* Builds describe_sql for the names (already SQL literals, comma-separated) on conn; returns
 * it malloc'd, or NULL. */
static char *describe_query(PGconn *conn, const char *publication, const char *literals)
{
    char *pub = PQescapeLiteral(conn, publication, strlen(publication));
    if (pub == NULL)
        return NULL;
    size_t n = sizeof describe_sql + strlen(literals) + strlen(pub) + 16;
    char *sql = malloc(n);
    if (sql) {
        size_t alen = strlen(literals) + 8;
        char *a = malloc(alen);
        if (a == NULL) {
            free(sql);
            PQfreemem(pub);
            return NULL;
        }
        snprintf(a, alen, "ARRAY[%s]", literals);
        snprintf(sql, n, describe_sql, a, pub);
        free(a);
    }
    PQfreemem(pub);
    return sql;
}

/* Checks row `row` of a describe result; returns NULL when the table can be read, else why
 * not (static text in buf). */
static const char *describe_problem(const PGresult *res, int row, const char *publication, char *buf, size_t len)
{
    const char *name = PQgetvalue(res, row, D_NAME);
    if (PQgetisnull(res, row, D_OID))
        snprintf(buf, len, "table %s does not exist (name it as schema.table)", name);
    else if (strcmp(PQgetvalue(res, row, D_PUB), "t") != 0)
        snprintf(buf, len, "table %s.%s is not in publication \"%s\", so its changes are not streamed and a "
                 "snapshot of it could not be kept consistent. Add it: ALTER PUBLICATION %s ADD TABLE %s.%s",
                 PQgetvalue(res, row, D_NSP), PQgetvalue(res, row, D_REL), publication, publication,
                 PQgetvalue(res, row, D_NSP), PQgetvalue(res, row, D_REL));
    else if (PQgetisnull(res, row, D_KEY))
        snprintf(buf, len, "table %s.%s has no primary key and no unique index over NOT NULL columns, so it "
                 "cannot be read in key order. Fix: ALTER TABLE %s.%s ADD PRIMARY KEY (...), or create a unique "
                 "index over NOT NULL columns",
                 PQgetvalue(res, row, D_NSP), PQgetvalue(res, row, D_REL), PQgetvalue(res, row, D_NSP),
                 PQgetvalue(res, row, D_REL));
    else
        return NULL;
    return buf;
}

/* Fills the table run from row 0 of a describe result; returns NULL, or why it cannot. */
static const char *run_from(struct pgf_snapshot *s, const PGresult *res, char *buf, size_t len)
{
    struct table_run *r = &s->cur;
    const char *problem = describe_problem(res, 0, s->opts->publication, buf, len);
    if (problem)
        return problem;
    json_t *cols = json_loads(PQgetvalue(res, 0, D_COLS), 0, NULL);
    json_t *key = json_loads(PQgetvalue(res, 0, D_KEY), 0, NULL);
    if (!json_is_array(cols) || !json_is_array(key) || json_array_size(cols) == 0 ||
        json_array_size(cols) > UINT16_MAX) {
        json_decref(cols);
        json_decref(key);
        return snprintf(buf, len, "its columns could not be read from the catalog"), buf;
    }
    r->rel.oid = (uint32_t)strtoul(PQgetvalue(res, 0, D_OID), NULL, 10);
    r->rel.nspname = strdup(PQgetvalue(res, 0, D_NSP));
    r->rel.relname = strdup(PQgetvalue(res, 0, D_REL));
    r->rel.replident = PQgetvalue(res, 0, D_IDENT)[0];
    r->rel.natts = (uint16_t)json_array_size(cols);
    r->rel.attrs = calloc(r->rel.natts, sizeof *r->rel.attrs);
    r->estimate = strtoull(PQgetvalue(res, 0, D_EST), NULL, 10);
    r->rowfilter = PQgetisnull(res, 0, D_FILTER) ? NULL : strdup(PQgetvalue(res, 0, D_FILTER));
    r->nkey = (int)json_array_size(key);
    r->keyidx = calloc((size_t)r->nkey + 1, sizeof *r->keyidx);
    const char *problem2 = NULL;
    size_t clen = 0, ccap = 0, olen = 0, ocap = 0;
    for (uint16_t i = 0; r->rel.attrs && i < r->rel.natts; i++) {
        json_t *c = json_array_get(cols, i);
        struct pgf_column *col = &r->rel.attrs[i];
        col->name = strdup(json_string_value(json_array_get(c, 0)) ? json_string_value(json_array_get(c, 0)) : "");
        col->type_oid = (uint32_t)json_integer_value(json_array_get(c, 1));
        col->type_mod = (int32_t)json_integer_value(json_array_get(c, 2));
        col->is_key = json_is_true(json_array_get(c, 3));
        char *q = col->name ? ident(pgf_pgconn_pq(s->pc), col->name) : NULL;
        if (q == NULL || (i && cat(&r->cols, &clen, &ccap, ", ")) || cat(&r->cols, &clen, &ccap, q))
            problem2 = "out of memory";
        free(q);
    }
    for (int k = 0; r->keyidx && k < r->nkey && !problem2; k++) {
        const char *kname = json_string_value(json_array_get(key, (size_t)k));
        r->keyidx[k] = -1;
        for (uint16_t i = 0; kname && i < r->rel.natts; i++)
            if (strcmp(r->rel.attrs[i].name, kname) == 0)
                r->keyidx[k] = i;
        if (r->keyidx[k] < 0) {
            snprintf(buf, len, "its key column \"%s\" is not among the columns the publication sends (a column "
                     "list leaves it out), so its changes cannot be matched to chunk rows", kname ? kname : "?");
            problem2 = buf;
            break;
        }
        char *q = ident(pgf_pgconn_pq(s->pc), kname);
        if (q == NULL || (k && cat(&r->order, &olen, &ocap, ", ")) || cat(&r->order, &olen, &ocap, q))
            problem2 = "out of memory";
        free(q);
    }
    json_decref(cols);
    json_decref(key);
    if (!problem2 && (r->rel.nspname == NULL || r->rel.relname == NULL || r->rel.attrs == NULL || r->keyidx == NULL))
        problem2 = "out of memory";
    if (problem2)
        return problem2;
    /* Read rows are keyed as the stream keys the table's changes (cdc/keys.h). */
    r->rel.key_atts = calloc(r->rel.natts, sizeof *r->rel.key_atts);
    if (r->rel.key_atts == NULL)
        return "out of memory";
    char msg[1024];
    if (pgf_keys_choose(&r->rel, PQgetvalue(res, 0, D_RECORD_KEY), s->opts->key_columns, r->rel.key_atts,
                        &r->rel.nkey, msg, sizeof msg) < 0)
        return snprintf(buf, len, "%s", msg), buf;
    char *qs = ident(pgf_pgconn_pq(s->pc), r->rel.nspname), *qt = ident(pgf_pgconn_pq(s->pc), r->rel.relname);
    size_t qlen = (qs ? strlen(qs) : 0) + (qt ? strlen(qt) : 0) + 2;
    if (qs && qt && (r->qname = malloc(qlen)) != NULL)
        snprintf(r->qname, qlen, "%s.%s", qs, qt);
    free(qs);
    free(qt);
    if (r->qname == NULL)
        return "out of memory";
    snprintf(r->label, sizeof r->label, "%s.%s", r->rel.nspname, r->rel.relname);
    return NULL;
}

static void step_low(struct pgf_snapshot *s);

/* Polls until every transaction that was running when recording began has ended. */
static void step_xip_poll(struct pgf_snapshot *s)
{
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot()) >= '%s'::xid8",
             s->xip_target);
    query(s, sql, "waiting for older transactions", on_xip_polled);
}

/* One poll answered: start reading, or poll again shortly. */
static void on_xip_polled(struct pgf_snapshot *s, PGresult *res)
{
    if (PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0) {
        s->xip_polls = 0;
        step_low(s);
        return;
    }
    if (++s->xip_polls % (30000 / XIP_POLL_MS) == 0)
        pgf_info("snapshot of %s waits for transactions that were running when it started to end (one idle in "
                 "transaction, or a prepared transaction, holds it up: see pg_stat_activity and "
                 "pg_prepared_xacts)", s->cur.label);
    s->phase = P_XIP_WAIT;
    later(s, XIP_POLL_MS);
}

/* Recording began: note the newest transaction that might be running. */
static void on_xip_target(struct pgf_snapshot *s, PGresult *res)
{
    snprintf(s->xip_target, sizeof s->xip_target, "%s", PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "0");
    step_xip_poll(s);
}

/* The table is described: watch it in the window, then wait for older transactions. */
static void on_described(struct pgf_snapshot *s, PGresult *res)
{
    char why[1024];
    const char *problem = PQntuples(res) == 1 ? run_from(s, res, why, sizeof why) : "it could not be looked up";
    if (problem) {
        refuse(s, problem);
        return;
    }
    struct table_run *r = &s->cur;
    const char *keys[64];
    for (int k = 0; k < r->nkey && k < 64; k++)
        keys[k] = r->rel.attrs[r->keyidx[k]].name;
    pgf_window_reset(s->win);
    if (r->nkey > 64 || (r->wtable = pgf_window_watch(s->win, r->rel.nspname, r->rel.relname, r->nkey, keys)) < 0) {
        transient(s, "watching the table", "out of memory");
        return;
    }
    const struct pgf_state_table *t = &s->state.tables[r->idx];
    s->metrics = pgf_metrics_snapshot(r->label);
    if (s->metrics)
        s->metrics->left = r->estimate > t->rows ? r->estimate - t->rows : 0;
    clock_gettime(CLOCK_MONOTONIC, &r->started);
    r->rows_at_start = t->rows;
    if (t->last_key)
        pgf_info("snapshot of %s resumes after the last acknowledged chunk (%" PRIu64 " rows done, key %s)", r->label,
                 t->rows, t->last_key[0]);
    else if (r->estimate > 0)
        pgf_info("snapshot of %s starts: about %" PRIu64 " rows, by key (%s), %u rows a chunk", r->label,
                 r->estimate, r->order, s->opts->snapshot_chunk_size);
    else
        pgf_info("snapshot of %s starts: size unknown (never analyzed), by key (%s), %u rows a chunk", r->label,
                 r->order, s->opts->snapshot_chunk_size);
    if (strcmp(s->state.job, "slot_loss") == 0 && t->last_key == NULL) {
        /* After a gap the consumers' copy of the table may hold rows deleted meanwhile, which
         * no read can name: a truncate at the table's start makes them rebuild it from the
         * rows read and the changes after it. */
        char sql[256];
        s->start_seq++;
        s->start_pending = 1;
        snprintf(sql, sizeof sql,
                 "SELECT pg_catalog.pg_logical_emit_message(true, '" PGF_WATERMARK_PREFIX "', 'start %s.%" PRIu64 "')",
                 s->run, s->start_seq);
        query(s, sql, "writing the table's start marker", on_start_marker);
        return;
    }
    on_start_marker(s, NULL);
}

/* The window records from now on (and a slot_loss job's start marker is written); a
 * transaction running before now could commit unseen before a chunk's snapshot sees it, so
 * wait for all of them to end first. */
static void on_start_marker(struct pgf_snapshot *s, PGresult *res)
{
    (void)res;
    query(s, "SELECT pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())", "reading the transaction horizon",
          on_xip_target);
}

/* Starts a chunk: the low watermark first, committed on its own.  When the cycle's last
 * query is still under way (the stream outran its answer), it starts once that ends. */
static void step_low(struct pgf_snapshot *s)
{
    if (s->pc && pgf_pgconn_busy(s->pc)) {
        s->low_pending = 1;
        return;
    }
    s->seq++;
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT pg_catalog.pg_logical_emit_message(true, '" PGF_WATERMARK_PREFIX "', 'low %s.%" PRIu64 "')",
             s->run, s->seq);
    query(s, sql, "writing the low watermark", on_low);
}

static void on_snap(struct pgf_snapshot *s, PGresult *res);

/* The low watermark is in the WAL: take the chunk's snapshot. */
static void on_low(struct pgf_snapshot *s, PGresult *res)
{
    (void)res;
    query(s, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT pg_catalog.pg_current_snapshot()::text",
          "taking the chunk's snapshot", on_snap);
}

static void on_chunk(struct pgf_snapshot *s, PGresult *res);

/* Appends "(k1, k2) op (v1, v2)" for the key values vals; returns 0 or -1. */
static int cat_bound(struct pgf_snapshot *s, char **sql, size_t *len, size_t *cap, const char *op, char **vals)
{
    int rc = cat(sql, len, cap, " AND (") || cat(sql, len, cap, s->cur.order) || cat(sql, len, cap, ") ") ||
             cat(sql, len, cap, op) || cat(sql, len, cap, " (");
    for (int k = 0; rc == 0 && k < s->cur.nkey; k++)
        rc = (k && cat(sql, len, cap, ", ")) || cat_literal(s, sql, len, cap, vals[k]);
    return rc || cat(sql, len, cap, ")");
}

/* The snapshot is taken: read the chunk under it. */
static void on_snap(struct pgf_snapshot *s, PGresult *res)
{
    pgf_snap_free(&s->snap);
    if (PQntuples(res) != 1 || pgf_snap_parse(PQgetvalue(res, 0, 0), &s->snap) != 0) {
        transient(s, "taking the chunk's snapshot", "pg_current_snapshot() answered something unexpected");
        return;
    }
    const struct pgf_state_table *t = &s->state.tables[s->cur.idx];
    char *sql = NULL;
    size_t len = 0, cap = 0;
    char lim[64];
    snprintf(lim, sizeof lim, " LIMIT %u", s->opts->snapshot_chunk_size);
    int rc = cat(&sql, &len, &cap, "SELECT ") || cat(&sql, &len, &cap, s->cur.cols) ||
             cat(&sql, &len, &cap, " FROM ") || cat(&sql, &len, &cap, s->cur.qname) ||
             cat(&sql, &len, &cap, " WHERE true");
    /* After the chunk handed on last, whether or not its progress is saved yet. */
    char **after = s->pend.stage && s->pend.last_key ? s->pend.last_key : t->last_key;
    if (rc == 0 && after)
        rc = cat_bound(s, &sql, &len, &cap, ">", after);
    else if (rc == 0 && t->from)
        rc = cat_bound(s, &sql, &len, &cap, ">=", t->from);
    if (rc == 0 && t->to)
        rc = cat_bound(s, &sql, &len, &cap, "<=", t->to);
    if (rc == 0 && s->cur.rowfilter)
        rc = cat(&sql, &len, &cap, " AND (") || cat(&sql, &len, &cap, s->cur.rowfilter) || cat(&sql, &len, &cap, ")");
    if (rc == 0 && t->where)
        rc = cat(&sql, &len, &cap, " AND (" FILTER_EOL) || cat(&sql, &len, &cap, t->where) ||
             cat(&sql, &len, &cap, FILTER_EOL ")");
    if (rc == 0)
        rc = cat(&sql, &len, &cap, " ORDER BY ") || cat(&sql, &len, &cap, s->cur.order) || cat(&sql, &len, &cap, lim);
    if (rc != 0) {
        free(sql);
        transient(s, "building the chunk's query", "out of memory");
        return;
    }
    /* One statement: a request's where filter is spliced in, and must not run anything else. */
    query_as(s, sql, 1, "reading a chunk", on_chunk);
    free(sql);
}

static void on_high(struct pgf_snapshot *s, PGresult *res);

/* The chunk is read: keep its rows, end the transaction and write the high watermark. */
static void on_chunk(struct pgf_snapshot *s, PGresult *res)
{
    pgf_pgconn_take(res);
    PQclear(s->chunk);
    s->chunk = res;
    char sql[256];
    snprintf(sql, sizeof sql,
             "COMMIT; SELECT pg_catalog.pg_logical_emit_message(true, '" PGF_WATERMARK_PREFIX "', 'high %s.%" PRIu64
             "')",
             s->run, s->seq);
    query(s, sql, "writing the high watermark", on_high);
}

/* The high watermark is in the WAL: the stream takes it from here (it may have already). */
static void on_high(struct pgf_snapshot *s, PGresult *res)
{
    (void)res;
    if (s->phase == P_BUSY) /* not handed on yet (P_NEXT or P_REREAD when it was) */
        s->phase = P_WAIT_HIGH;
    if (s->low_pending) {
        s->low_pending = 0;
        step_low(s);
    }
}

/* Sets vals/lens to row r's key; returns the encoded key's length written into buf, or the
 * length needed. */
static size_t row_key(const struct pgf_snapshot *s, int r, char *buf, size_t cap)
{
    const char *vals[64];
    int lens[64];
    for (int k = 0; k < s->cur.nkey; k++) {
        int c = s->cur.keyidx[k];
        vals[k] = PQgetisnull(s->chunk, r, c) ? NULL : PQgetvalue(s->chunk, r, c);
        lens[k] = PQgetlength(s->chunk, r, c);
    }
    return pgf_window_key(buf, cap, vals, lens, s->cur.nkey);
}

/* The high watermark came back: hand on the rows the window keeps, in its transaction. */
static int on_high_watermark(struct pgf_snapshot *s, const struct pgf_event *ev,
                             int (*emit)(void *ctx, const struct pgf_event *ev), void *ctx)
{
    int n = PQntuples(s->chunk);
    /* Handing it on now, before the chunk before it is saved, could leave two chunks unsaved
     * at a crash: it is read again once that save is done.  The window moves on either way. */
    int early = s->pend.stage != 0;
    /* Keys are computed only when some change might drop a row: usually none does. */
    size_t pending = early ? 0 : pgf_window_pending(s->win, s->cur.wtable, &s->snap);
    size_t nk = pending ? (size_t)n : 0, total = 0;
    const char **keys = calloc(nk + 1, sizeof *keys);
    size_t *klens = calloc(nk + 1, sizeof *klens);
    unsigned char *keep = calloc((size_t)n + 1, 1);
    struct pgf_value *row = calloc(s->cur.rel.natts, sizeof *row), *key = calloc(s->cur.rel.natts, sizeof *key);
    for (size_t r = 0; r < nk; r++)
        total += klens[r] = row_key(s, (int)r, NULL, 0);
    char *arena = malloc(total + 1);
    int rc = keys && klens && keep && row && key && arena ? 0 : -1;
    for (size_t r = 0, off = 0; rc == 0 && r < nk; off += klens[r++]) {
        row_key(s, (int)r, arena + off, klens[r]);
        keys[r] = arena + off;
    }
    int usable = rc == 0 ? pgf_window_high(s->win, s->cur.wtable, &s->snap, keys, klens, nk, keep) : -1;
    for (int r = 0; usable == 0 && !pending && r < n; r++)
        keep[r] = 1;
    size_t dropped = 0;
    for (int r = 0; usable == 0 && !early && r < n; r++) {
        if (!keep[r]) {
            dropped++;
            continue;
        }
        for (uint16_t c = 0; c < s->cur.rel.natts; c++)
            row[c] = PQgetisnull(s->chunk, r, c)
                         ? (struct pgf_value){.kind = PGF_VALUE_NULL}
                         : pgf_value_text(PQgetvalue(s->chunk, r, c), (uint32_t)PQgetlength(s->chunk, r, c));
        struct pgf_event rev;
        pgf_event_read(&rev, &s->cur.rel, row, key, ev->txn, ev->lsn);
        if (emit(ctx, &rev) != 0) {
            usable = -2;
            break;
        }
    }
    free(arena);
    free(keys);
    free(klens);
    free(keep);
    free(row);
    free(key);
    if (usable == -2)
        return -1;
    if (early) {
        pgf_debug("snapshot of %s: a chunk came back before the one before it was saved; reading it again",
                  s->cur.label);
        drop_chunk(s);
        s->cur.reread++;
        s->phase = P_REREAD;
        return 0;
    }
    if (usable != 0) {
        /* A truncate or a change whose key cannot be told (or no memory): read it again. */
        pgf_info("snapshot of %s: a chunk overlapped a change that cannot be matched to its rows; reading it again",
                 s->cur.label);
        drop_chunk(s);
        step_low(s);
        return 0;
    }
    if (dropped)
        pgf_debug("snapshot of %s: %zu rows of the chunk were changed meanwhile; the stream carries them", s->cur.label,
                  dropped);
    /* Its progress waits for the acknowledgement; the next chunk is read meanwhile. */
    s->pend = (struct pending){.stage = 1, .rows = (uint64_t)n, .done = n < (int)s->opts->snapshot_chunk_size,
                               .nkey = s->cur.nkey};
    if (n > 0 && (s->pend.last_key = calloc((size_t)s->cur.nkey + 1, sizeof *s->pend.last_key)) != NULL)
        for (int k = 0; k < s->cur.nkey; k++)
            s->pend.last_key[k] = strdup(PQgetvalue(s->chunk, n - 1, s->cur.keyidx[k]));
    if (s->metrics) {
        s->metrics->rows += (uint64_t)n;
        s->metrics->chunks++;
    }
    drop_chunk(s);
    s->phase = P_NEXT;
    if (!s->pend.done)
        step_low(s);
    return 0;
}

/* Handles pgfanout's own message; see pgf_snapshot_event. */
int pgf_snapshot_event(struct pgf_snapshot *s, const struct pgf_event *ev,
                       int (*emit)(void *ctx, const struct pgf_event *ev), void *ctx)
{
    if (ev->op != PGF_OP_MESSAGE) {
        if (s->cur.idx >= 0 && pgf_window_note(s->win, ev) != 0) {
            pgf_error("snapshot: out of memory recording a change");
            return -1;
        }
        return 0;
    }
    const char *prefix = ev->message.prefix;
    if (strcmp(prefix, PGF_BACKFILL_PREFIX) == 0) {
        char where[96];
        snprintf(where, sizeof where, "a message at %X/%X", (unsigned)(ev->lsn >> 32), (unsigned)ev->lsn);
        pgf_snapshot_request(s, ev->message.content, ev->message.content_len, where, 0, NULL, NULL);
        return 1;
    }
    if (strcmp(prefix, PGF_WATERMARK_PREFIX) != 0)
        return 0;
    char mine[64];
    const char *c = ev->message.content;
    uint32_t n = ev->message.content_len;
    int m = snprintf(mine, sizeof mine, "start %s.%" PRIu64, s->run, s->start_seq);
    if (s->start_pending && n == (uint32_t)m && memcmp(c, mine, (size_t)m) == 0) {
        s->start_pending = 0;
        const struct pgf_relation *rels[1] = {&s->cur.rel};
        struct pgf_event tr = {.op = PGF_OP_TRUNCATE, .lsn = ev->lsn, .txn = ev->txn,
                               .truncate = {.nrels = 1, .rels = rels, .options = 0}};
        pgf_info("snapshot of %s after a slot loss: a truncate first, so consumers drop rows deleted in the gap",
                 s->cur.label);
        return emit(ctx, &tr) == 0 ? 1 : -1;
    }
    m = snprintf(mine, sizeof mine, "%s.%" PRIu64, s->run, s->seq);
    int low = n > 4 && memcmp(c, "low ", 4) == 0, high = n > 5 && memcmp(c, "high ", 5) == 0;
    size_t off = low ? 4 : 5;
    if (!(low || high) || n - off != (uint32_t)m || memcmp(c + off, mine, (size_t)m) != 0)
        return 1; /* another run's, or a chunk given up: nothing to do */
    if (low)
        pgf_window_low(s->win);
    else if (s->chunk && (s->phase == P_WAIT_HIGH || s->phase == P_BUSY))
        return on_high_watermark(s, ev, emit, ctx) == 0 ? 1 : -1;
    return 1;
}

/* Writes the progress line of the current table. */
static void log_progress(struct pgf_snapshot *s)
{
    if (s->cur.idx < 0)
        return;
    const struct pgf_state_table *t = &s->state.tables[s->cur.idx];
    double secs = since(&s->cur.started);
    double rate = secs > 0 ? (double)(t->rows - s->cur.rows_at_start) / secs : 0;
    uint64_t total = s->cur.estimate > t->rows ? s->cur.estimate : t->rows;
    uint64_t left = total - t->rows;
    char eta[64] = "unknown";
    if (rate > 0)
        snprintf(eta, sizeof eta, "about %.0f s", (double)left / rate);
    pgf_info("snapshot of %s: %" PRIu64 " of about %" PRIu64 " rows (%.1f%%), %.0f rows/s, %s left, %" PRIu64
             " chunk%s",
             s->cur.label, t->rows, total, total ? 100.0 * (double)t->rows / (double)total : 100.0, rate, eta,
             t->chunks, t->chunks == 1 ? "" : "s");
}

/* The pending chunk's progress is durable: the table is done, or the next chunk (read
 * meanwhile) may be handed on; one that came back too early is read again. */
static void pend_saved(struct pgf_snapshot *s)
{
    int done = s->pend.done;
    pend_clear(s);
    struct pgf_state_table *t = &s->state.tables[s->cur.idx];
    if (done) {
        double secs = since(&s->cur.started);
        pgf_info("snapshot of %s done: %" PRIu64 " rows in %" PRIu64 " chunks, %.1f s%s", s->cur.label, t->rows,
                 t->chunks, secs, s->cur.reread ? " (some chunks came back before the one before them was saved "
                                                  "and were read again)" : "");
        if (s->metrics)
            s->metrics->left = 0;
        run_clear(&s->cur);
        pgf_window_reset(s->win);
        s->phase = P_IDLE;
        advance(s);
        return;
    }
    if (s->phase == P_REREAD)
        step_low(s);
}

/* The watermark's transaction is acknowledged: the pending chunk counts; save its progress. */
static void pend_acked(struct pgf_snapshot *s)
{
    struct pgf_state_table *t = &s->state.tables[s->cur.idx];
    if (s->pend.last_key) {
        for (int k = 0; t->last_key && k < t->nkey; k++)
            free(t->last_key[k]);
        free(t->last_key);
        t->last_key = s->pend.last_key;
        t->nkey = s->pend.nkey;
        s->pend.last_key = NULL;
    }
    t->rows += s->pend.rows;
    t->chunks++;
    t->done = s->pend.done;
    if (s->metrics)
        s->metrics->left = s->cur.estimate > t->rows ? s->cur.estimate - t->rows : 0;
    s->pend.stage = 3;
    request_save(s);
    s->pend.version = s->want;
    if (s->saved >= s->pend.version)
        pend_saved(s);
}

/* Records the watermark transaction's end. */
void pgf_snapshot_committed(struct pgf_snapshot *s, const struct pgf_txn *txn)
{
    if (s->pend.stage != 1 || txn->end_lsn == 0)
        return;
    s->pend.end_lsn = txn->end_lsn;
    s->pend.stage = 2;
}

/* Notes what the sinks acknowledged; see snapshot.h. */
void pgf_snapshot_acked(struct pgf_snapshot *s, uint64_t acked, uint64_t confirmed)
{
    if (confirmed > s->state.confirmed_lsn)
        s->state.confirmed_lsn = confirmed;
    if (s->pend.stage == 2 && acked >= s->pend.end_lsn)
        pend_acked(s);
}

/* Empties the job's table list. */
static void clear_tables(struct pgf_snapshot *s)
{
    pgf_state_clear(&(struct pgf_state){.tables = s->state.tables, .ntables = s->state.ntables});
    s->state.tables = NULL;
    s->state.ntables = 0;
}

/* Ends the job: every table is done. */
static void job_done(struct pgf_snapshot *s)
{
    size_t rows = 0;
    for (size_t i = 0; i < s->state.ntables; i++)
        rows += s->state.tables[i].rows;
    pgf_info("snapshot job \"%s\" done: %zu table%s read, %zu rows%s", s->state.job, s->state.ntables - s->refused,
             s->state.ntables - s->refused == 1 ? "" : "s", rows, s->refused ? " (see the errors above for the tables "
             "that could not be read)" : "");
    s->refused = 0;
    if (strcmp(s->state.job, "initial") == 0)
        s->state.initial_done = 1;
    clear_tables(s);
    s->state.job[0] = '\0';
    pgf_metrics.snapshot_running = 0;
    request_save(s);
    s->chunk_version = s->want;
    s->phase = P_IDLE;
    if (s->saved >= s->chunk_version)
        set_finished(s);
}

static void on_tables_listed(struct pgf_snapshot *s, PGresult *res);

/* Moves the job on: the next table, or the end. */
static void advance(struct pgf_snapshot *s)
{
    if (s->phase != P_IDLE || !s->begun || s->sinks == NULL || s->paused)
        return;
    if (s->state.job[0] == '\0') {
        if (s->saved >= s->chunk_version)
            set_finished(s);
        return;
    }
    if (s->pc == NULL) {
        s->phase = P_BUSY;
        if ((s->pc = pgf_pgconn_connect(s->base, s->opts->dsn, 0, 30000, on_connected, s)) == NULL)
            transient(s, "connecting", "out of memory");
        return;
    }
    pgf_metrics.snapshot_running = 1;
    if (s->listing) {
        char *pub = PQescapeLiteral(pgf_pgconn_pq(s->pc), s->opts->publication, strlen(s->opts->publication));
        char sql[1024];
        snprintf(sql, sizeof sql, "SELECT schemaname, tablename FROM pg_catalog.pg_publication_tables "
                 "WHERE pubname = %s ORDER BY 1, 2", pub ? pub : "''");
        PQfreemem(pub);
        query(s, sql, "listing the publication's tables", on_tables_listed);
        return;
    }
    size_t i = 0;
    while (i < s->state.ntables && s->state.tables[i].done)
        i++;
    if (i == s->state.ntables) {
        job_done(s);
        return;
    }
    run_clear(&s->cur);
    s->cur.idx = (int)i;
    const struct pgf_state_table *t = &s->state.tables[i];
    char *qs = ident(pgf_pgconn_pq(s->pc), t->schema), *qt = ident(pgf_pgconn_pq(s->pc), t->table);
    char *name = NULL, *sql = NULL;
    if (qs && qt && (name = malloc(strlen(qs) + strlen(qt) + 2)) != NULL)
        sprintf(name, "%s.%s", qs, qt);
    char *lit = name ? PQescapeLiteral(pgf_pgconn_pq(s->pc), name, strlen(name)) : NULL;
    if (lit)
        sql = describe_query(pgf_pgconn_pq(s->pc), s->opts->publication, lit);
    free(qs);
    free(qt);
    free(name);
    PQfreemem(lit);
    if (sql == NULL) {
        transient(s, "describing the table", "out of memory");
        return;
    }
    query(s, sql, "describing the table", on_described);
    free(sql);
}

/* The job's tables are every published table. */
static void on_tables_listed(struct pgf_snapshot *s, PGresult *res)
{
    s->listing = 0;
    int n = PQntuples(res);
    clear_tables(s);
    s->state.tables = calloc((size_t)n + 1, sizeof *s->state.tables);
    for (int i = 0; s->state.tables && i < n; i++) {
        s->state.tables[i].schema = strdup(PQgetvalue(res, i, 0));
        s->state.tables[i].table = strdup(PQgetvalue(res, i, 1));
        s->state.ntables++;
    }
    pgf_info("snapshot job \"%s\": %d table%s of publication \"%s\"", s->state.job, n, n == 1 ? "" : "s",
             s->opts->publication);
    request_save(s);
    s->phase = P_IDLE;
    advance(s);
}

/* The retry timer: after a failure, or the next poll of older transactions. */
static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pgf_snapshot *s = arg;
    if (s->phase == P_XIP_WAIT) {
        step_xip_poll(s);
    } else if (s->phase == P_BACKOFF) {
        s->phase = P_IDLE;
        advance(s);
    }
}

static void start_save(struct pgf_snapshot *s);

/* A save ended. */
static void on_saved(void *arg, const char *err)
{
    struct pgf_snapshot *s = arg;
    s->saving = 0;
    if (s->closing)
        return;
    if (err) {
        pgf_error("cannot save pgfanout's state to %s: %s; retrying in %d s (a restart now would read the last "
                  "chunks again)%s", s->store->where, err, RETRY_MS / 1000,
                  s->prepare_done ? "; the slot is created once the state is saved" : "");
        s->dirty = 1;
        struct timeval tv = {RETRY_MS / 1000, 0};
        evtimer_add(s->ev_save, &tv);
        return;
    }
    s->saved = s->inflight;
    if (s->dirty)
        start_save(s);
    if (s->prepare_done && s->saved >= s->prepare_version) {
        void (*done)(void *) = s->prepare_done;
        s->prepare_done = NULL;
        done(s->prepare_arg);
    }
    if (s->pend.stage == 3 && s->saved >= s->pend.version)
        pend_saved(s);
    else if (s->phase == P_IDLE && s->state.job[0] == '\0' && s->saved >= s->chunk_version && s->begun)
        set_finished(s);
}

/* Starts saving the current document. */
static void start_save(struct pgf_snapshot *s)
{
    s->dirty = 0;
    char *json = pgf_state_to_json(&s->state);
    char err[512];
    if (json == NULL) {
        on_saved(s, "out of memory");
        return;
    }
    s->saving = 1;
    s->inflight = s->want;
    s->last_saved_confirmed = s->state.confirmed_lsn;
    if (s->store->ops->save(s->store, json, strlen(json), on_saved, s, err, sizeof err) != 0) {
        s->saving = 0;
        free(json);
        on_saved(s, err);
        return;
    }
    free(json);
}

/* Asks for the document to be saved (coalesced: one save at a time, the newest wins). */
static void request_save(struct pgf_snapshot *s)
{
    s->want++;
    if (s->store == NULL) {
        s->saved = s->want;
        return;
    }
    if (s->saving)
        s->dirty = 1;
    else
        start_save(s);
}

/* The periodic save of the confirmed position, and the save retry. */
static void on_save_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pgf_snapshot *s = arg;
    if (s->begun && (s->dirty || s->state.confirmed_lsn != s->last_saved_confirmed) && !s->saving)
        request_save(s);
}

/* The periodic progress line. */
static void on_progress(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    log_progress(arg);
}

/* Creates the controller; see snapshot.h. */
struct pgf_snapshot *pgf_snapshot_new(struct event_base *base, const struct pgf_options *opts,
                                      struct pgf_state_store *store, struct pgf_state *state)
{
    struct pgf_snapshot *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->base = base;
    s->opts = opts;
    s->store = store;
    s->state = *state;
    memset(state, 0, sizeof *state);
    s->cur.idx = -1;
    s->win = pgf_window_new();
    s->ev_retry = evtimer_new(base, on_retry, s);
    s->ev_progress = event_new(base, -1, EV_PERSIST, on_progress, s);
    s->ev_save = event_new(base, -1, EV_PERSIST, on_save_timer, s);
    if (s->win == NULL || s->ev_retry == NULL || s->ev_progress == NULL || s->ev_save == NULL) {
        pgf_snapshot_free(s);
        return NULL;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    snprintf(s->run, sizeof s->run, "%lx%lx", (unsigned long)now.tv_sec, (unsigned long)now.tv_nsec);
    /* Progress every 10 s, or as often as log.progress_interval asks when that is shorter. */
    int pms = opts->progress_interval_ms > 0 && opts->progress_interval_ms < PROGRESS_MS ? opts->progress_interval_ms
                                                                                        : PROGRESS_MS;
    struct timeval tp = {pms / 1000, (pms % 1000) * 1000}, ts = {SAVE_EVERY_MS / 1000, 0};
    event_add(s->ev_progress, &tp);
    if (store)
        event_add(s->ev_save, &ts);
    return s;
}

/* Frees the controller after a last save. */
void pgf_snapshot_free(struct pgf_snapshot *s)
{
    if (s == NULL)
        return;
    s->closing = 1;
    if (s->store && s->begun) {
        if (s->saving)
            s->store->ops->flush(s->store, s->opts->shutdown_timeout_ms);
        if (!s->saving) {
            start_save(s);
            s->store->ops->flush(s->store, s->opts->shutdown_timeout_ms);
        }
    }
    pgf_pgconn_free(s->pc);
    drop_chunk(s);
    run_clear(&s->cur);
    pgf_window_free(s->win);
    if (s->ev_retry)
        event_free(s->ev_retry);
    if (s->ev_progress)
        event_free(s->ev_progress);
    if (s->ev_save)
        event_free(s->ev_save);
    pgf_state_clear(&s->state);
    free(s);
}

/* True when this start should run the initial snapshot (before the state's say). */
static int wants_initial(const struct pgf_snapshot *s, int slot_created)
{
    const char *mode = s->opts->snapshot ? s->opts->snapshot : "";
    /* A temporary slot is an ad-hoc look at the stream: no snapshot unless asked for. */
    return strcmp(mode, "initial") == 0 || strcmp(mode, "initial_only") == 0 ||
           (mode[0] == '\0' && slot_created && !s->opts->temporary_slot);
}

/* Starts a job of every published table. */
static void job_all_tables(struct pgf_snapshot *s, const char *job)
{
    clear_tables(s);
    snprintf(s->state.job, sizeof s->state.job, "%s", job);
    s->listing = 1;
}

/* Sets the job a slot about to be created is for, and saves it; see snapshot.h. */
void pgf_snapshot_prepare(struct pgf_snapshot *s, const char *system_id, int slot_lost, void (*done)(void *arg),
                          void *arg)
{
    int job = slot_lost || (wants_initial(s, 1) && !s->state.initial_done && s->state.job[0] == '\0');
    if (s->store == NULL || !job) {
        done(arg);
        return;
    }
    snprintf(s->state.system_id, sizeof s->state.system_id, "%s", system_id ? system_id : "");
    snprintf(s->state.slot, sizeof s->state.slot, "%s", s->opts->slot);
    job_all_tables(s, slot_lost ? "slot_loss" : "initial");
    s->prepared = 1;
    s->prepare_done = done;
    s->prepare_arg = arg;
    request_save(s);
    s->prepare_version = s->want;
}

/* Forgets the waiting caller of pgf_snapshot_prepare. */
void pgf_snapshot_prepare_cancel(struct pgf_snapshot *s)
{
    s->prepare_done = NULL;
}

/* Decides the job at the first start; see snapshot.h. */
void pgf_snapshot_begin(struct pgf_snapshot *s, const struct pgf_snapshot_start *start)
{
    if (s->begun)
        return;
    s->begun = 1;
    snprintf(s->state.system_id, sizeof s->state.system_id, "%s", start->system_id ? start->system_id : "");
    snprintf(s->state.slot, sizeof s->state.slot, "%s", s->opts->slot);
    if (start->confirmed > s->state.confirmed_lsn)
        s->state.confirmed_lsn = start->confirmed;
    const char *mode = s->opts->snapshot ? s->opts->snapshot : "";
    int want_initial = wants_initial(s, start->slot_created);
    if (s->prepared) {
        pgf_info("snapshot job \"%s\": listing the publication's tables", s->state.job);
    } else if (start->slot_lost) {
        pgf_warn("the slot was lost: every published table is read again (on_slot_loss: backfill)");
        job_all_tables(s, "slot_loss");
    } else if (s->state.job[0] && s->state.ntables == 0 &&
               (strcmp(s->state.job, "initial") == 0 || strcmp(s->state.job, "slot_loss") == 0)) {
        /* A job of every table is saved before its table list is (job_all_tables, then the
         * listing query): a stop in between leaves it without tables, and resuming that as is
         * would end it at once, having read nothing. */
        pgf_info("snapshot job \"%s\" resumes: its table list was not saved yet; listing the publication's tables "
                 "again", s->state.job);
        s->listing = 1;
    } else if (s->state.job[0]) {
        size_t left = 0;
        for (size_t i = 0; i < s->state.ntables; i++)
            left += !s->state.tables[i].done;
        pgf_info("snapshot job \"%s\" resumes: %zu of %zu table%s left", s->state.job, left, s->state.ntables,
                 s->state.ntables == 1 ? "" : "s");
    } else if (want_initial && !s->state.initial_done) {
        job_all_tables(s, "initial");
    } else if (want_initial && mode[0]) {
        pgf_info("the initial snapshot was done before (the state says so); not repeating it");
    }
    request_save(s);
    s->chunk_version = s->want;
    advance(s);
}

/* The stream (re)started; see snapshot.h. */
void pgf_snapshot_stream_started(struct pgf_snapshot *s, struct sink *const *sinks, size_t nsinks,
                                 void (*wake)(void *ctx), void *ctx)
{
    s->sinks = sinks;
    s->nsinks = nsinks;
    s->wake = wake;
    s->wake_ctx = ctx;
    if (s->phase == P_BUSY) {
        s->restart = 1; /* the query's callback starts over */
        return;
    }
    if (s->pend.stage != 0 || s->phase == P_WAIT_HIGH || s->phase == P_NEXT || s->phase == P_REREAD) {
        /* Watermarks may never come back, or come back to a stream that lost the chunk, and a
         * chunk handed on may never be acknowledged: read again from the saved progress. */
        forget_table(s);
        s->phase = P_IDLE;
    }
    advance(s);
}

/* True once initial_only is done. */
int pgf_snapshot_finished(const struct pgf_snapshot *s)
{
    return s->finished;
}

/* ---- backfill requests ---- */

/* One table of a request. */
struct req_table {
    char *name, *where;
    char **from, **to;
    int nfrom, nto;
    int nkey;      /* its key's columns, once described */
    char *problem; /* why it is refused, once described */
};

/* A request being checked against the catalog. */
struct request {
    struct pgf_snapshot *s;
    struct pgf_pgconn *pc;
    char source[128];
    struct req_table *t;
    size_t n;
    PGresult *described; /* the catalog's answer, a row per table */
    size_t checked;      /* tables whose where filter has been tried */
    pgf_backfill_cb done;
    void *arg;
};

/* Frees a request. */
static void request_free(struct request *q)
{
    for (size_t i = 0; i < q->n; i++) {
        free(q->t[i].name);
        free(q->t[i].where);
        for (int k = 0; k < q->t[i].nfrom; k++)
            free(q->t[i].from[k]);
        for (int k = 0; k < q->t[i].nto; k++)
            free(q->t[i].to[k]);
        free(q->t[i].from);
        free(q->t[i].to);
        free(q->t[i].problem);
    }
    free(q->t);
    PQclear(q->described);
    pgf_pgconn_free(q->pc);
    free(q);
}

/* Reports a request's outcome to the log and its caller. */
static void request_end(struct request *q, int status, const char *body)
{
    if (status == 202)
        pgf_info("backfill request from %s: %s", q->source, body);
    else
        pgf_error("backfill request from %s refused: %s", q->source, body);
    if (q->done)
        q->done(q->arg, status, body);
}

/* Refuses a request with a message; frees it. */
static void request_refuse(struct request *q, int status, const char *why)
{
    json_t *o = json_pack("{s:s}", "error", why);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    request_end(q, status, body ? body : why);
    free(body);
    json_decref(o);
    request_free(q);
}

/* Reads a key bound (a scalar or an array of scalars) as text values; returns the count, or
 * -1 when it is malformed. */
static int bound_values(json_t *v, char ***out)
{
    *out = NULL;
    if (v == NULL || json_is_null(v))
        return 0;
    size_t n = json_is_array(v) ? json_array_size(v) : 1;
    if (n == 0 || n > 64)
        return -1;
    char **vals = calloc(n, sizeof *vals);
    if (vals == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_is_array(v) ? json_array_get(v, i) : v;
        char num[64];
        const char *text = NULL;
        if (json_is_string(e))
            text = json_string_value(e);
        else if (json_is_integer(e))
            snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(e)), text = num;
        else if (json_is_real(e))
            snprintf(num, sizeof num, "%.17g", json_real_value(e)), text = num;
        if (text == NULL || (vals[i] = strdup(text)) == NULL) {
            for (size_t k = 0; k < i; k++)
                free(vals[k]);
            free(vals);
            return -1;
        }
    }
    *out = vals;
    return (int)n;
}

static void on_request_described(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err);

/* The request's connection is up: describe its tables. */
static void on_request_connected(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    (void)res;
    struct request *q = arg;
    if (err) {
        char why[1200];
        snprintf(why, sizeof why, "cannot connect to PostgreSQL to look up its tables: %s", err);
        request_refuse(q, 503, why);
        return;
    }
    char *lits = NULL;
    size_t len = 0, cap = 0;
    for (size_t i = 0; i < q->n; i++) {
        char *lit = PQescapeLiteral(pgf_pgconn_pq(pc), q->t[i].name, strlen(q->t[i].name));
        if (lit == NULL || (i && cat(&lits, &len, &cap, ", ")) || cat(&lits, &len, &cap, lit)) {
            PQfreemem(lit);
            free(lits);
            request_refuse(q, 503, "out of memory");
            return;
        }
        PQfreemem(lit);
    }
    char *sql = describe_query(pgf_pgconn_pq(pc), q->s->opts->publication, lits);
    free(lits);
    if (sql == NULL || pgf_pgconn_query(pc, sql, 30000, on_request_described, q) != 0) {
        free(sql);
        request_refuse(q, 503, "cannot send the catalog query");
        return;
    }
    free(sql);
}

static void request_check(struct request *q);

/* The tables are described: note why each that cannot be read is refused, then try the
 * filters of the others. */
static void on_request_described(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    (void)pc;
    struct request *q = arg;
    struct pgf_snapshot *s = q->s;
    if (err) {
        char why[1200];
        snprintf(why, sizeof why, "cannot look up its tables: %s", err);
        request_refuse(q, permanent(res) ? 400 : 503, why);
        return;
    }
    pgf_pgconn_take(res);
    q->described = res;
    for (int r = 0; r < PQntuples(res) && (size_t)r < q->n; r++) {
        struct req_table *rt = &q->t[r];
        char why[1024];
        const char *problem = describe_problem(res, r, s->opts->publication, why, sizeof why);
        json_t *key = problem ? NULL : json_loads(PQgetvalue(res, r, D_KEY), 0, NULL);
        int nkey = rt->nkey = key ? (int)json_array_size(key) : 0;
        json_decref(key);
        if (!problem && ((rt->nfrom && rt->nfrom != nkey) || (rt->nto && rt->nto != nkey))) {
            snprintf(why, sizeof why, "the key of %s.%s has %d column%s, but the request's from/to bound has %d "
                     "value%s", PQgetvalue(res, r, D_NSP), PQgetvalue(res, r, D_REL), nkey, nkey == 1 ? "" : "s",
                     rt->nfrom ? rt->nfrom : rt->nto, (rt->nfrom ? rt->nfrom : rt->nto) == 1 ? "" : "s");
            problem = why;
        }
        if (problem && (rt->problem = strdup(problem)) == NULL) {
            request_refuse(q, 503, "out of memory");
            return;
        }
    }
    request_check(q);
}

/* A where filter was tried: a filter the server refuses refuses its table. */
static void on_request_checked(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    (void)pc;
    (void)res;
    struct request *q = arg;
    struct req_table *rt = &q->t[q->checked++];
    if (err && (res == NULL || PQresultErrorField(res, PG_DIAG_SQLSTATE) == NULL)) {
        /* Not the filter's fault: the connection broke or the server did not answer. */
        char why[1200];
        snprintf(why, sizeof why, "cannot check the \"where\" filter of %s: %s; send the request again", rt->name, err);
        request_refuse(q, 503, why);
        return;
    }
    if (err) {
        char why[1200];
        snprintf(why, sizeof why, "its \"where\" filter does not run as one condition on the table: %s", err);
        if ((rt->problem = strdup(why)) == NULL) {
            request_refuse(q, 503, "out of memory");
            return;
        }
    }
    request_check(q);
}

static void request_accept(struct request *q);

/* Tries the next table's where filter (planned, never executed: LIMIT 0, as one statement), so
 * a filter that cannot run is refused in the reply instead of after a 202; then accepts. */
static void request_check(struct request *q)
{
    PGresult *res = q->described;
    for (; q->checked < q->n && (int)q->checked < PQntuples(res); q->checked++) {
        struct req_table *rt = &q->t[q->checked];
        if (rt->problem || rt->where == NULL)
            continue;
        int r = (int)q->checked;
        char *nsp = ident(pgf_pgconn_pq(q->pc), PQgetvalue(res, r, D_NSP));
        char *rel = ident(pgf_pgconn_pq(q->pc), PQgetvalue(res, r, D_REL));
        char *sql = NULL;
        size_t len = 0, cap = 0;
        int rc = !nsp || !rel || cat(&sql, &len, &cap, "SELECT 1 FROM ") || cat(&sql, &len, &cap, nsp) ||
                 cat(&sql, &len, &cap, ".") || cat(&sql, &len, &cap, rel) ||
                 cat(&sql, &len, &cap, " WHERE (" FILTER_EOL) || cat(&sql, &len, &cap, rt->where) ||
                 cat(&sql, &len, &cap, FILTER_EOL ") LIMIT 0");
        free(nsp);
        free(rel);
        if (rc == 0)
            rc = pgf_pgconn_query_one(q->pc, sql, 30000, on_request_checked, q);
        free(sql);
        if (rc != 0)
            request_refuse(q, 503, "cannot send the check of a \"where\" filter");
        return;
    }
    request_accept(q);
}

/* Every table is described and its filter tried: accept those that can be read, refuse the
 * others by name. */
static void request_accept(struct request *q)
{
    struct pgf_snapshot *s = q->s;
    PGresult *res = q->described;
    json_t *accepted = json_array(), *refused = json_array();
    for (int r = 0; r < PQntuples(res) && (size_t)r < q->n; r++) {
        struct req_table *rt = &q->t[r];
        if (rt->problem) {
            json_array_append_new(refused, json_pack("{s:s, s:s}", "table", rt->name, "error", rt->problem));
            continue;
        }
        struct pgf_state_table *nt = realloc(s->state.tables, (s->state.ntables + 1) * sizeof *nt);
        if (nt == NULL) {
            json_array_append_new(refused, json_pack("{s:s, s:s}", "table", rt->name, "error", "out of memory"));
            continue;
        }
        s->state.tables = nt;
        struct pgf_state_table *t = &nt[s->state.ntables++];
        memset(t, 0, sizeof *t);
        t->schema = strdup(PQgetvalue(res, r, D_NSP));
        t->table = strdup(PQgetvalue(res, r, D_REL));
        t->where = rt->where;
        rt->where = NULL;
        t->nkey = rt->nkey;
        t->from = rt->from;
        t->to = rt->to;
        rt->from = rt->to = NULL;
        rt->nfrom = rt->nto = 0;
        char label[300];
        snprintf(label, sizeof label, "%s.%s", t->schema, t->table);
        json_array_append_new(accepted, json_string(label));
    }
    int n_ok = (int)json_array_size(accepted);
    if (n_ok > 0) {
        if (s->state.job[0] == '\0')
            snprintf(s->state.job, sizeof s->state.job, "backfill");
        request_save(s);
        if (s->phase == P_IDLE)
            advance(s);
    }
    json_t *o = json_pack("{s:o, s:o}", "accepted", accepted, "refused", refused);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    request_end(q, n_ok > 0 ? 202 : 400, body ? body : "{}");
    free(body);
    json_decref(o);
    request_free(q);
}

/* Takes a backfill request; see snapshot.h. */
void pgf_snapshot_request(struct pgf_snapshot *s, const char *json, size_t len, const char *source, int trusted,
                          pgf_backfill_cb done, void *arg)
{
    struct request *q = calloc(1, sizeof *q);
    if (q == NULL) {
        if (done)
            done(arg, 503, "{\"error\":\"out of memory\"}");
        return;
    }
    q->s = s;
    q->done = done;
    q->arg = arg;
    snprintf(q->source, sizeof q->source, "%s", source);
    json_error_t jerr;
    json_t *doc = json_loadb(json, len, 0, &jerr);
    json_t *tables = doc ? json_object_get(doc, "tables") : NULL;
    char why[512];
    if (doc == NULL) {
        snprintf(why, sizeof why, "the request is not JSON (%s, at character %d). Send "
                 "{\"tables\": [\"schema.table\", ...]}, optionally with \"where\", \"from\" and \"to\"",
                 jerr.text, jerr.position);
        request_refuse(q, 400, why);
        return;
    }
    if (!json_is_array(tables) || json_array_size(tables) == 0) {
        json_decref(doc);
        request_refuse(q, 400, "the request has no \"tables\" list. Send {\"tables\": [\"schema.table\", ...]}, "
                               "optionally with \"where\", \"from\" and \"to\"");
        return;
    }
    q->n = json_array_size(tables);
    q->t = calloc(q->n, sizeof *q->t);
    const char *bad = q->t ? NULL : "out of memory";
    for (size_t i = 0; !bad && i < q->n; i++) {
        json_t *e = json_array_get(tables, i), *src = json_is_object(e) ? e : doc;
        json_t *name = json_is_object(e) ? json_object_get(e, "table") : e, *where = json_object_get(src, "where");
        if (!json_is_string(name))
            bad = "each entry of \"tables\" is a name (\"schema.table\") or an object with a \"table\" name";
        else if (where && !json_is_null(where) && !json_is_string(where))
            bad = "\"where\" must be a string: an SQL condition on the table's columns";
        else if (where && !json_is_null(where) && !trusted)
            bad = "a \"where\" filter is taken only over HTTP (POST /backfill): any role that can call "
                  "pg_logical_emit_message could otherwise run SQL as pgfanout's role. A message may name tables "
                  "and key ranges (\"from\", \"to\")";
        else if ((q->t[i].nfrom = bound_values(json_object_get(src, "from"), &q->t[i].from)) < 0 ||
                 (q->t[i].nto = bound_values(json_object_get(src, "to"), &q->t[i].to)) < 0)
            bad = "\"from\" and \"to\" must be a key value or an array of them, one per key column";
        else if ((q->t[i].name = strdup(json_string_value(name))) == NULL ||
                 (json_is_string(where) && (q->t[i].where = strdup(json_string_value(where))) == NULL))
            bad = "out of memory";
        if (q->t[i].nfrom < 0)
            q->t[i].nfrom = 0;
        if (q->t[i].nto < 0)
            q->t[i].nto = 0;
    }
    json_decref(doc);
    if (bad) {
        request_refuse(q, 400, bad);
        return;
    }
    if ((q->pc = pgf_pgconn_connect(s->base, s->opts->dsn, 0, 30000, on_request_connected, q)) == NULL)
        request_refuse(q, 503, "out of memory");
}
