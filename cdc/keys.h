/* keys.h - record keys: which columns name a table's row to consumers (the Kafka record key
 * and Event.key), so that every change to one row lands in one partition, in order, and log
 * compaction keeps one record per row.
 *
 * The rule, in order: the table's entry in kafka.key_columns; its primary key; its
 * replica-identity index; else none (its records have no key).  The primary key is taken only
 * when a delete carries it: under REPLICA IDENTITY USING INDEX of other columns, a delete sends
 * only that index's columns, so the index keys the table instead.
 *
 * The catalog is read when pgoutput describes a relation (first use in a session, and after
 * each ALTER TABLE), over a plain connection of its own on the loop; the stream stops reading
 * the slot until the answer is in, so no change of that table is keyed before it. */
#ifndef PGFANOUT_KEYS_H
#define PGFANOUT_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include "decoders/event.h"

struct event_base;
struct pgf_keys;

/* SQL for one relation's key candidates: json_build_array(primary-key column names, replica-
 * identity index column names), each in index order or NULL; relid is an SQL expression of
 * the relation's oid.  The snapshot's catalog query and the lookup here share it. */
#define PGF_RECORD_KEY_SQL(relid)                                                                                  \
    "json_build_array("                                                                                            \
    "(SELECT json_agg(a.attname ORDER BY k.ord) FROM pg_catalog.pg_index x, "                                      \
    "   unnest(x.indkey::int2[]) WITH ORDINALITY k(attnum, ord) "                                                  \
    "   JOIN pg_catalog.pg_attribute a ON a.attrelid = " relid " AND a.attnum = k.attnum "                         \
    "   WHERE x.indrelid = " relid " AND x.indisprimary), "                                                        \
    "(SELECT json_agg(a.attname ORDER BY k.ord) FROM pg_catalog.pg_index x, "                                      \
    "   unnest(x.indkey::int2[]) WITH ORDINALITY k(attnum, ord) "                                                  \
    "   JOIN pg_catalog.pg_attribute a ON a.attrelid = " relid " AND a.attnum = k.attnum "                         \
    "   WHERE x.indrelid = " relid " AND x.indisreplident))"

/* Checks a kafka.key_columns value: "schema.table:col,col;schema.table:col" (Debezium's
 * message.key.columns without regular expressions; a table without a schema is in public).
 * NULL or "" is fine.  Returns 0, or -1 with what is wrong in err. */
int pgf_keys_check(const char *spec, char *err, size_t errlen);

/* Chooses rel's record key by the rule above from candidates (PGF_RECORD_KEY_SQL's JSON, or
 * NULL when the table is gone from the catalog) and spec (kafka.key_columns).  Writes the
 * column indexes to atts (room for rel->natts) and their count to *n.  Returns 0; 1 when the
 * choice is worth a warning (no key at all, or a primary key the publication's column list
 * leaves out), with why in msg; -1 when spec names a column rel does not have, with why. */
int pgf_keys_choose(const struct pgf_relation *rel, const char *candidates, const char *spec, uint16_t *atts,
                    uint16_t *n, char *msg, size_t msglen);

/* Called with the record key chosen for the relation oid (indexes into its columns), or with
 * n = UINT16_MAX when kafka.key_columns does not fit the table (already logged). */
typedef void (*pgf_keys_cb)(void *arg, uint32_t oid, const uint16_t *atts, uint16_t n);

/* Starts a record-key chooser for one stream: dsn for its catalog connection, spec from
 * kafka.key_columns (borrowed, it must outlive the chooser).  Returns it, or NULL out of
 * memory. */
struct pgf_keys *pgf_keys_new(struct event_base *base, const char *dsn, const char *spec);

/* Chooses rel's record key.  Returns 0 when cb already ran (kafka.key_columns names the
 * table), 1 when it runs later from the loop (rel must stay valid and unchanged until then;
 * a failed lookup is retried every second, with a warning), -1 out of memory.  One at a time. */
int pgf_keys_resolve(struct pgf_keys *k, const struct pgf_relation *rel, pgf_keys_cb cb, void *arg);

/* Abandons any lookup under way (its cb does not run), closes the connection and frees k;
 * NULL is fine. */
void pgf_keys_free(struct pgf_keys *k);

#endif
