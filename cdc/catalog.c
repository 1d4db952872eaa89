/* catalog.c - see catalog.h. */
#include "cdc/catalog.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "cdc/pgconn.h"

/* One query answers everything for a table: identity, old-key columns, all columns, and
 * whether the publication carries it.  \x01 separates names, which cannot contain it. */
static const char check_sql[] =
    "SELECT c.relreplident,"
    " coalesce((SELECT string_agg(a.attname, chr(1)) FROM pg_index i"
    "   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
    "   WHERE i.indrelid = c.oid AND CASE WHEN c.relreplident = 'i' THEN i.indisreplident"
    "                                     ELSE i.indisprimary END), ''),"
    " coalesce((SELECT string_agg(attname, chr(1)) FROM pg_attribute"
    "   WHERE attrelid = c.oid AND attnum > 0 AND NOT attisdropped), ''),"
    " EXISTS (SELECT 1 FROM pg_publication_tables p WHERE p.pubname = %s"
    "   AND p.schemaname = n.nspname AND p.tablename = c.relname),"
    " c.relkind = 'p'"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname = %s AND c.relname = %s";

/* The cacheops preset needs every published table's old rows: the tables that do not send
 * them.  Partitions publish under their own names unless published via the root. */
static const char cacheops_sql[] =
    "SELECT p.schemaname, p.tablename, c.relreplident FROM pg_publication_tables p"
    " JOIN pg_namespace n ON n.nspname = p.schemaname"
    " JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename"
    " WHERE p.pubname = %s AND c.relreplident <> 'f' ORDER BY 1, 2";

/* Splits a chr(1)-separated list in place into names; returns how many. */
static size_t split_names(char *s, const char **names, size_t max)
{
    size_t n = 0;
    if (*s == '\0')
        return 0;
    for (char *p = s; n < max;) {
        names[n++] = p;
        char *sep = strchr(p, '\x01');
        if (sep == NULL)
            break;
        *sep = '\0';
        p = sep + 1;
    }
    return n;
}

/* One run of the checks, one query per rule on a connection of its own, on the loop. */
struct pgf_catalog_check {
    const char *publication;
    const struct pgf_redis_rules *rules;
    struct pgf_pgconn *pc;
    size_t next;     /* the rule whose query is under way */
    int cacheops;    /* check the published tables for the cacheops preset after the rules */
    int *done;
};

/* Ends the run: closes the connection and says so. */
static void check_end(struct pgf_catalog_check *c)
{
    pgf_pgconn_free(c->pc);
    *c->done = 1;
    free(c);
}

/* Warns about what one rule's catalog row shows. */
static void check_rule(const struct pgf_catalog_check *c, size_t i, const PGresult *res)
{
    const char *schema, *table, *publication = c->publication;
    pgf_redis_rule_table(c->rules, i, &schema, &table);
    if (PQntuples(res) == 0) {
        pgf_warn("redis: a rule names table %s.%s, which does not exist; check redis.rules", schema, table);
        return;
    }
    char keybuf[4096], allbuf[16384], msg[1024];
    const char *keycols[256], *allcols[1024];
    snprintf(keybuf, sizeof keybuf, "%s", PQgetvalue(res, 0, 1));
    snprintf(allbuf, sizeof allbuf, "%s", PQgetvalue(res, 0, 2));
    size_t nkey = split_names(keybuf, keycols, 256), nall = split_names(allbuf, allcols, 1024);
    if (strcmp(PQgetvalue(res, 0, 3), "t") != 0 && strcmp(PQgetvalue(res, 0, 4), "t") == 0)
        pgf_warn("redis: a rule names partitioned table %s.%s, but publication \"%s\" sends its "
                 "changes under each partition's name, so the rule never matches. Fix: ALTER "
                 "PUBLICATION %s SET (publish_via_partition_root = true)",
                 schema, table, publication, publication);
    else if (strcmp(PQgetvalue(res, 0, 3), "t") != 0)
        pgf_warn("redis: a rule names table %s.%s, but publication \"%s\" does not include it, so its "
                 "changes never arrive. Fix: ALTER PUBLICATION %s ADD TABLE %s.%s",
                 schema, table, publication, publication, schema, table);
    if (pgf_redis_rule_unknown_column(c->rules, i, allcols, nall, msg, sizeof msg))
        pgf_warn("%s", msg);
    if (pgf_redis_rule_identity_warning(c->rules, i, PQgetvalue(res, 0, 0)[0], keycols, nkey, allcols, nall, msg,
                                        sizeof msg))
        pgf_warn("%s", msg);
}

static void on_rule(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err);

/* The published tables that do not send old rows arrived: one warning each, with the fix. */
static void on_cacheops(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    (void)pc;
    struct pgf_catalog_check *c = arg;
    if (err) {
        pgf_warn("redis.cacheops: cannot check the published tables' replica identity: %s", err);
    } else {
        for (int i = 0; i < PQntuples(res); i++) {
            const char *schema = PQgetvalue(res, i, 0), *table = PQgetvalue(res, i, 1);
            pgf_warn("redis.cacheops: table %s.%s has REPLICA IDENTITY %s, so its UPDATEs and DELETEs do not carry "
                     "the old row that names the cached queries the row leaves; each such UPDATE invalidates every "
                     "cached query on %s, and a DELETE those filtered on other columns than the key. Fix: ALTER "
                     "TABLE %s.%s REPLICA IDENTITY FULL",
                     schema, table,
                     PQgetvalue(res, i, 2)[0] == 'n' ? "NOTHING" : PQgetvalue(res, i, 2)[0] == 'i' ? "USING INDEX"
                                                                                                 : "DEFAULT",
                     table, schema, table);
        }
    }
    check_end(c);
}

/* Sends the cacheops preset's query, or ends the run. */
static void check_cacheops(struct pgf_catalog_check *c)
{
    PGconn *conn = pgf_pgconn_pq(c->pc);
    char *lit = PQescapeLiteral(conn, c->publication, strlen(c->publication));
    char sql[sizeof cacheops_sql + 512];
    int ok = lit && (size_t)snprintf(sql, sizeof sql, cacheops_sql, lit) < sizeof sql;
    PQfreemem(lit);
    if (!c->cacheops || !ok || pgf_pgconn_query(c->pc, sql, 30000, on_cacheops, c) != 0) {
        if (c->cacheops)
            pgf_warn("redis.cacheops: cannot check the published tables' replica identity: the query could not "
                     "be sent");
        check_end(c);
    }
}

/* Sends the query of rule c->next, or goes on after the last. */
static void check_next(struct pgf_catalog_check *c)
{
    if (c->next == pgf_redis_rules_count(c->rules)) {
        check_cacheops(c);
        return;
    }
    const char *schema, *table;
    pgf_redis_rule_table(c->rules, c->next, &schema, &table);
    PGconn *conn = pgf_pgconn_pq(c->pc);
    char *lits[3] = {PQescapeLiteral(conn, schema, strlen(schema)), PQescapeLiteral(conn, table, strlen(table)),
                     PQescapeLiteral(conn, c->publication, strlen(c->publication))};
    char sql[sizeof check_sql + 1024];
    int ok = lits[0] && lits[1] && lits[2] &&
             (size_t)snprintf(sql, sizeof sql, check_sql, lits[2], lits[0], lits[1]) < sizeof sql;
    for (int i = 0; i < 3; i++)
        PQfreemem(lits[i]);
    if (!ok || pgf_pgconn_query(c->pc, sql, 30000, on_rule, c) != 0) {
        pgf_warn("redis: cannot check table %s.%s: the query could not be sent", schema, table);
        check_end(c);
    }
}

/* One rule's row arrived (or the query failed): warn, then go on with the next rule. */
static void on_rule(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    (void)pc;
    struct pgf_catalog_check *c = arg;
    const char *schema, *table;
    pgf_redis_rule_table(c->rules, c->next, &schema, &table);
    if (err)
        pgf_warn("redis: cannot check table %s.%s: %s", schema, table, err);
    else
        check_rule(c, c->next, res);
    c->next++;
    check_next(c);
}

/* The connection is up, or not. */
static void on_connected(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err)
{
    (void)pc;
    (void)res;
    struct pgf_catalog_check *c = arg;
    if (err) {
        pgf_warn("redis: cannot check the rules' tables against the catalog: %s", err);
        check_end(c);
        return;
    }
    check_next(c);
}

/* Starts the checks; see catalog.h. */
struct pgf_catalog_check *pgf_catalog_check_rules(struct event_base *base, const char *dsn, const char *publication,
                                      const struct pgf_redis_rules *rules, int cacheops, int *done)
{
    *done = 0;
    struct pgf_catalog_check *c = pgf_redis_rules_count(rules) || cacheops ? calloc(1, sizeof *c) : NULL;
    if (c == NULL) {
        *done = 1;
        return NULL;
    }
    c->publication = publication;
    c->rules = rules;
    c->cacheops = cacheops;
    c->done = done;
    if ((c->pc = pgf_pgconn_connect(base, dsn, 0, 10000, on_connected, c)) == NULL) {
        free(c);
        *done = 1;
        return NULL;
    }
    return c;
}

/* Abandons unfinished checks; see catalog.h. */
void pgf_catalog_check_cancel(struct pgf_catalog_check *c)
{
    if (c && !*c->done) {
        pgf_pgconn_free(c->pc);
        free(c);
    }
}
