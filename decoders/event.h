/* event.h - the event: one change, or one row read by a snapshot, as every sink sees it.
 * It carries the relation, the key, before and after images, the positions and the
 * transaction; nothing in it is pgoutput's own message, so a snapshot row is an event too.
 * The rules for key, before and after are applied once, where the event is built
 * (decoders/txn.c for the stream, pgf_event_read for a snapshot row).  Pure, no I/O. */
#ifndef PGFANOUT_EVENT_H
#define PGFANOUT_EVENT_H

#include <stddef.h>
#include <stdint.h>

/* What an event is.  The order up to READ is pgfanout.v1.Op's, from 1. */
enum pgf_op {
    PGF_OP_INSERT,
    PGF_OP_UPDATE,
    PGF_OP_DELETE,
    PGF_OP_TRUNCATE,
    PGF_OP_MESSAGE,
    PGF_OP_READ, /* a row read by a snapshot's SELECT */
    PGF_OP_NONE,
};

/* The state of one column in a row image.  The pgoutput wire byte is the enum value where
 * there is one; ABSENT marks a column the image does not carry (a key's non-key columns). */
enum pgf_value_kind {
    PGF_VALUE_ABSENT = 0,
    PGF_VALUE_NULL = 'n',
    PGF_VALUE_UNCHANGED_TOAST = 'u', /* a large out-of-line value the change did not touch: not sent */
    PGF_VALUE_TEXT = 't',            /* PostgreSQL's text output */
    PGF_VALUE_BINARY = 'b',          /* the type's binary send format */
};

/* One column value; data/len are borrowed (not NUL-terminated) and stay the producer's. */
struct pgf_value {
    enum pgf_value_kind kind;
    uint32_t len;
    const char *data;
};

/* One column of a relation. */
struct pgf_column {
    char *name;
    uint32_t type_oid;
    int32_t type_mod;
    int is_key; /* part of the replica identity (all columns under REPLICA IDENTITY FULL) */
};

/* A table as a change describes it; the pgoutput decoder's relation cache holds these. */
struct pgf_relation {
    uint32_t oid;
    char *nspname; /* schema; "" means pg_catalog on the pgoutput wire, kept as sent */
    char *relname;
    char replident; /* 'd' default, 'n' nothing, 'f' full, 'i' index */
    uint16_t natts;
    struct pgf_column *attrs;
    /* The record key: the columns that name a row to consumers (Kafka's record key and
     * Event.key), as indexes into attrs in key order.  cdc/keys.c chooses them: the table's
     * kafka.key_columns, else its primary key, else its replica-identity index, else none.
     * Until chosen they are the replica-identity columns.  Owned with the relation. */
    uint16_t nkey;
    uint16_t *key_atts;
    /* 1 when whoever built it checked that the schema, table and column names are UTF-8, so
     * renderers need not check them per event; 0 when unknown. */
    int names_utf8;
};

/* The transaction an event belongs to. */
struct pgf_txn {
    uint32_t xid;
    uint64_t commit_lsn;  /* the commit record's LSN (Begin's final LSN) */
    uint64_t end_lsn;     /* just past the commit record; 0 until the Commit arrives, and 0 in
                           * a commit that abandons a transaction cut off by a reconnect */
    int64_t commit_time;  /* microseconds since 2000-01-01 UTC */
    const char *origin;   /* replication origin name, or NULL */
};

#define PGF_TRUNCATE_CASCADE 1
#define PGF_TRUNCATE_RESTART_IDENTITY 2

/* One event.  Everything it points to is borrowed from whoever built it and is valid only
 * during the call it is handed to (a sink's emit): a sink copies what it keeps.  Row images
 * are arrays of rel->natts values in the relation's column order. */
struct pgf_event {
    enum pgf_op op;
    uint64_t lsn;              /* the change's own WAL position (a message: its record's) */
    const struct pgf_txn *txn; /* xid, commit LSN, end LSN, commit time, origin; NULL for a
                                * non-transactional message */
    /* insert, update, delete, read: */
    const struct pgf_relation *rel;
    const struct pgf_value *key;    /* replica-identity columns, ABSENT elsewhere (all ABSENT
                                     * under REPLICA IDENTITY NOTHING); a key column sent as
                                     * unchanged TOAST has the old image's value when there is one */
    const struct pgf_value *before; /* the old row, or NULL when none adds anything (a
                                     * delete's old key is the key); only the key columns
                                     * (others ABSENT) when an update changed the key */
    const struct pgf_value *after;  /* the new row (unchanged TOAST columns as such); NULL for delete */
    /* truncate: */
    struct pgf_event_truncate {
        uint32_t nrels;
        const struct pgf_relation *const *rels;
        int options; /* PGF_TRUNCATE_CASCADE | PGF_TRUNCATE_RESTART_IDENTITY */
    } truncate;
    /* message (pg_logical_emit_message): */
    struct pgf_event_message {
        int transactional;
        const char *prefix; /* NUL-terminated */
        uint32_t content_len;
        const char *content;
    } message;
};

/* Returns "insert", "update", "delete", "truncate", "message", "read" or "none". */
const char *pgf_op_name(enum pgf_op op);

/* Returns the value of column att that names ev's row: a delete's from its old image (before,
 * else key), other row events' from after (an unchanged-TOAST value from the old image when it
 * carries one).  NULL when no image carries it (ABSENT, or unchanged TOAST with no old value). */
const struct pgf_value *pgf_event_key_value(const struct pgf_event *ev, uint16_t att);

/* True when ev is an update that moved its row to another record key: its old image carries
 * every record-key column and one of them differs from the new row's.  (Without an old image,
 * as under REPLICA IDENTITY DEFAULT when the key did not change, it is false.) */
int pgf_event_key_changed(const struct pgf_event *ev);

/* Sets rel's record key to the n columns at atts (copied); returns 0, or -1 out of memory. */
int pgf_relation_set_key(struct pgf_relation *rel, const uint16_t *atts, uint16_t n);

/* Returns a text value of len bytes at data (borrowed), as a SELECT returns it. */
static inline struct pgf_value pgf_value_text(const char *data, uint32_t len)
{
    return (struct pgf_value){.kind = PGF_VALUE_TEXT, .len = len, .data = data};
}

/* Fills *ev as a row read by a snapshot: op read, after = row (rel->natts values, text or
 * NULL, as a SELECT of the table's columns in order returns them), key = the replica-identity
 * columns of row, written into key_out (rel->natts values, the caller's).  The record key is
 * rel's own (see struct pgf_relation).  txn may be NULL
 * (then the event has no transaction fields) and lsn 0.  ev borrows rel, row, key_out and
 * txn: they must outlive its use. */
void pgf_event_read(struct pgf_event *ev, const struct pgf_relation *rel, const struct pgf_value *row,
                    struct pgf_value *key_out, const struct pgf_txn *txn, uint64_t lsn);

#endif
