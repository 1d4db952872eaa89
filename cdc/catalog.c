/* catalog.c - see catalog.h. */
#include "cdc/catalog.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

#include "cdc/log.h"
#include "cdc/replconn.h"

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
    " EXISTS (SELECT 1 FROM pg_publication_tables p WHERE p.pubname = $3"
    "   AND p.schemaname = n.nspname AND p.tablename = c.relname),"
    " c.relkind = 'p'"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname = $1 AND c.relname = $2";

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

/* Checks every rule; see catalog.h. */
void pgf_catalog_check_rules(const char *dsn, const char *publication, const struct pgf_redis_rules *rules)
{
    if (pgf_redis_rules_count(rules) == 0)
        return;
    char err[1024];
    PGconn *conn = pgf_replconn_open(dsn, 0, err, sizeof err);
    if (conn == NULL) {
        pgf_warn("redis: cannot check the rules' tables against the catalog: %s", err);
        return;
    }
    for (size_t i = 0; i < pgf_redis_rules_count(rules); i++) {
        const char *schema, *table;
        pgf_redis_rule_table(rules, i, &schema, &table);
        const char *params[3] = {schema, table, publication};
        PGresult *res = PQexecParams(conn, check_sql, 3, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            pgf_warn("redis: cannot check table %s.%s: %s", schema, table, PQresultErrorMessage(res));
        } else if (PQntuples(res) == 0) {
            pgf_warn("redis: a rule names table %s.%s, which does not exist; check redis.rules", schema, table);
        } else {
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
            if (pgf_redis_rule_unknown_column(rules, i, allcols, nall, msg, sizeof msg))
                pgf_warn("%s", msg);
            if (pgf_redis_rule_identity_warning(rules, i, PQgetvalue(res, 0, 0)[0], keycols, nkey, allcols, nall, msg,
                                                sizeof msg))
                pgf_warn("%s", msg);
        }
        PQclear(res);
    }
    PQfinish(conn);
}
