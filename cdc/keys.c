/* keys.c - see keys.h. */
#include "cdc/keys.h"

#include <event2/event.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/pgconn.h"
#include "common/log.h"

/* How long a catalog connect or lookup may take before it is retried. */
#define KEYS_TIMEOUT_MS 10000

/* Finds table schema.table's entry in spec; returns its column list (up to ';' or the end)
 * with its length in *len, or NULL when spec does not name the table. */
static const char *spec_entry(const char *spec, const char *schema, const char *table, size_t *len)
{
    for (const char *p = spec; p && *p;) {
        const char *end = strchr(p, ';'), *colon = strchr(p, ':');
        if (end == NULL)
            end = p + strlen(p);
        if (colon && colon < end) {
            const char *dot = memchr(p, '.', (size_t)(colon - p));
            const char *s = dot ? p : "public", *t = dot ? dot + 1 : p;
            size_t slen = dot ? (size_t)(dot - p) : 6, tlen = (size_t)(colon - t);
            if (slen == strlen(schema) && strncmp(s, schema, slen) == 0 && tlen == strlen(table) &&
                strncmp(t, table, tlen) == 0) {
                *len = (size_t)(end - colon - 1);
                return colon + 1;
            }
        }
        p = *end ? end + 1 : end;
    }
    return NULL;
}

/* Checks the spec's shape; see keys.h. */
int pgf_keys_check(const char *spec, char *err, size_t errlen)
{
    for (const char *p = spec; p && *p;) {
        const char *end = strchr(p, ';'), *colon = strchr(p, ':');
        if (end == NULL)
            end = p + strlen(p);
        const char *why = NULL;
        if (colon == NULL || colon > end)
            why = "lacks the ':' between the table and its columns";
        else if (colon == p || colon[-1] == '.' || *p == '.')
            why = "names no table";
        else if (colon + 1 == end)
            why = "names no columns";
        for (const char *c = colon ? colon + 1 : end; !why && c < end; c++)
            if (*c == ',' && (c == colon + 1 || c + 1 == end || c[1] == ','))
                why = "has an empty column name";
        if (why) {
            snprintf(err, errlen, "kafka.key_columns: the entry \"%.*s\" %s; write it as "
                     "\"schema.table:column,column\", entries separated by ';'", (int)(end - p), p, why);
            return -1;
        }
        p = *end ? end + 1 : end;
    }
    return 0;
}

/* Returns the index of column name (len bytes) in rel, or -1. */
static int column_of(const struct pgf_relation *rel, const char *name, size_t len)
{
    for (uint16_t i = 0; i < rel->natts; i++)
        if (strlen(rel->attrs[i].name) == len && strncmp(rel->attrs[i].name, name, len) == 0)
            return i;
    return -1;
}

/* Maps a JSON array of column names onto rel; returns how many, or -1 when one is missing
 * (its name in *missing). */
static int map_names(const struct pgf_relation *rel, const json_t *names, uint16_t *atts, const char **missing)
{
    size_t i;
    json_t *v;
    json_array_foreach(names, i, v) {
        const char *name = json_string_value(v);
        int att = name ? column_of(rel, name, strlen(name)) : -1;
        if (att < 0 || i >= rel->natts) {
            *missing = name ? name : "?";
            return -1;
        }
        atts[i] = (uint16_t)att;
    }
    return (int)i;
}

/* Chooses by the rule; see keys.h. */
int pgf_keys_choose(const struct pgf_relation *rel, const char *candidates, const char *spec, uint16_t *atts,
                    uint16_t *n, char *msg, size_t msglen)
{
    size_t len = 0;
    const char *cols = spec_entry(spec, rel->nspname, rel->relname, &len);
    *n = 0;
    if (cols) {
        for (const char *c = cols; c <= cols + len && *n < rel->natts;) {
            const char *comma = memchr(c, ',', (size_t)(cols + len - c));
            size_t clen = comma ? (size_t)(comma - c) : (size_t)(cols + len - c);
            int att = column_of(rel, c, clen);
            if (att < 0) {
                snprintf(msg, msglen, "kafka.key_columns names column \"%.*s\" of table %s.%s, which the "
                         "publication does not send for it; name columns of the table (its publication's "
                         "column list, if any, must include them)", (int)clen, c, rel->nspname, rel->relname);
                return -1;
            }
            atts[(*n)++] = (uint16_t)att;
            c += clen + 1;
        }
        return 0;
    }
    json_t *cand = candidates ? json_loads(candidates, 0, NULL) : NULL;
    json_t *pk = json_array_get(cand, 0), *ident = json_array_get(cand, 1);
    const char *missing = NULL;
    int rc = 0, got = json_is_array(pk) ? map_names(rel, pk, atts, &missing) : -1;
    /* Under an index identity a delete carries only that index's columns: the primary key
     * keys the table only when it lies inside them. */
    for (int i = 0; got > 0 && rel->replident == 'i' && i < got; i++)
        if (!rel->attrs[atts[i]].is_key)
            got = -1;
    if (got <= 0 && json_is_array(ident))
        got = map_names(rel, ident, atts, &missing);
    if (got > 0) {
        *n = (uint16_t)got;
    } else if (missing) {
        /* A column list leaves a key column out: the replica identity is all there is. */
        for (uint16_t i = 0; i < rel->natts; i++)
            if (rel->attrs[i].is_key)
                atts[(*n)++] = i;
        snprintf(msg, msglen, "table %s.%s: its key column \"%s\" is not among the columns the publication "
                 "sends, so its Kafka records are keyed by %s; add the column to the publication, or set "
                 "kafka.key_columns", rel->nspname, rel->relname, missing,
                 *n ? "its replica-identity columns" : "nothing (no key)");
        rc = 1;
    } else if (cand == NULL && candidates) {
        snprintf(msg, msglen, "table %s.%s: the catalog's answer could not be read; keeping its replica-identity "
                 "columns as the key", rel->nspname, rel->relname);
        for (uint16_t i = 0; i < rel->natts; i++)
            if (rel->attrs[i].is_key)
                atts[(*n)++] = i;
        rc = 1;
    } else if (candidates == NULL) {
        /* Dropped since this WAL was written: the replica identity is the best left. */
        for (uint16_t i = 0; i < rel->natts; i++)
            if (rel->attrs[i].is_key)
                atts[(*n)++] = i;
    } else {
        snprintf(msg, msglen, "table %s.%s has no primary key and no replica-identity index: its Kafka records "
                 "have no key, so one row's changes can land in different partitions and compaction keeps "
                 "them all. Fix: ALTER TABLE %s.%s ADD PRIMARY KEY (...), or set kafka.key_columns",
                 rel->nspname, rel->relname, rel->nspname, rel->relname);
        rc = 1;
    }
    json_decref(cand);
    return rc;
}

struct pgf_keys {
    struct event_base *base;
    char *dsn;
    const char *spec;
    struct pgf_pgconn *pc;
    struct event *retry;
    int connected;
    /* the lookup under way: */
    const struct pgf_relation *rel;
    pgf_keys_cb cb;
    void *arg;
};

/* Chooses from the catalog's answer (NULL: the table is gone) and reports. */
static void deliver(struct pgf_keys *k, const char *candidates)
{
    const struct pgf_relation *rel = k->rel;
    uint16_t *atts = calloc(rel->natts ? rel->natts : 1, sizeof *atts), n = 0;
    char msg[1024];
    int rc = atts ? pgf_keys_choose(rel, candidates, k->spec, atts, &n, msg, sizeof msg) : -1;
    if (rc < 0 && atts)
        pgf_error("%s", msg);
    else if (rc < 0)
        pgf_error("out of memory choosing the record key of %s.%s", rel->nspname, rel->relname);
    else if (rc > 0)
        pgf_warn("%s", msg);
    else
        pgf_debug("table %s.%s: its records are keyed by %u column(s)", rel->nspname, rel->relname, n);
    k->rel = NULL;
    k->cb(k->arg, rel->oid, atts, rc < 0 ? UINT16_MAX : n);
    free(atts);
}

static void start_lookup(struct pgf_keys *k);

/* Logs why the lookup failed and tries again in a second; the stream waits. */
static void lookup_failed(struct pgf_keys *k, const char *err)
{
    char why[512];
    pgf_pgconn_trim(why, sizeof why, err ? err : "no answer");
    pgf_warn("cannot read the primary key of %s.%s from the catalog: %s; its changes wait, retrying in 1 s",
             k->rel->nspname, k->rel->relname, why);
    pgf_pgconn_free(k->pc);
    k->pc = NULL;
    k->connected = 0;
    struct timeval second = {1, 0};
    event_add(k->retry, &second);
}

/* The lookup's answer. */
static void on_answer(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    (void)pc;
    struct pgf_keys *k = arg;
    if (err) {
        lookup_failed(k, err);
        return;
    }
    deliver(k, PQntuples(res) > 0 ? PQgetvalue(res, 0, 0) : NULL);
}

/* Sends the lookup on the connected connection. */
static void send_lookup(struct pgf_keys *k)
{
    char sql[2048];
    snprintf(sql, sizeof sql, "SELECT " PGF_RECORD_KEY_SQL("c.oid") " FROM pg_catalog.pg_class c WHERE c.oid = %u",
             k->rel->oid);
    if (pgf_pgconn_query(k->pc, sql, KEYS_TIMEOUT_MS, on_answer, k) != 0)
        lookup_failed(k, PQerrorMessage(pgf_pgconn_pq(k->pc)));
}

/* The catalog connection is up, or failed. */
static void on_connect(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    (void)pc;
    (void)res;
    struct pgf_keys *k = arg;
    if (err) {
        lookup_failed(k, err);
        return;
    }
    k->connected = 1;
    send_lookup(k);
}

/* Connects if needed, then looks up k->rel. */
static void start_lookup(struct pgf_keys *k)
{
    if (k->connected) {
        send_lookup(k);
        return;
    }
    k->pc = pgf_pgconn_connect(k->base, k->dsn, 0, KEYS_TIMEOUT_MS, on_connect, k);
    if (k->pc == NULL)
        lookup_failed(k, "out of memory");
}

/* The retry timer. */
static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    start_lookup(arg);
}

/* Makes a chooser; see keys.h. */
struct pgf_keys *pgf_keys_new(struct event_base *base, const char *dsn, const char *spec)
{
    struct pgf_keys *k = calloc(1, sizeof *k);
    if (k == NULL)
        return NULL;
    k->base = base;
    k->spec = spec;
    k->dsn = strdup(dsn ? dsn : "");
    k->retry = evtimer_new(base, on_retry, k);
    if (k->dsn == NULL || k->retry == NULL) {
        pgf_keys_free(k);
        return NULL;
    }
    return k;
}

/* Chooses rel's record key; see keys.h. */
int pgf_keys_resolve(struct pgf_keys *k, const struct pgf_relation *rel, pgf_keys_cb cb, void *arg)
{
    size_t len;
    k->rel = rel;
    k->cb = cb;
    k->arg = arg;
    if (spec_entry(k->spec, rel->nspname, rel->relname, &len)) {
        deliver(k, NULL);
        return 0;
    }
    start_lookup(k);
    return 1;
}

/* Frees the chooser; see keys.h. */
void pgf_keys_free(struct pgf_keys *k)
{
    if (k == NULL)
        return;
    pgf_pgconn_free(k->pc);
    if (k->retry)
        event_free(k->retry);
    free(k->dsn);
    free(k);
}
