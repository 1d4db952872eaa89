/* event.h - what a decoded row change means: its op, its key, its before and after images.
 * Every sink renders the same event, so these rules live here once. Pure, no I/O. */
#ifndef PGFANOUT_EVENT_H
#define PGFANOUT_EVENT_H

#include <stddef.h>
#include <stdint.h>

enum pgf_op { PGF_OP_INSERT, PGF_OP_UPDATE, PGF_OP_DELETE, PGF_OP_TRUNCATE, PGF_OP_MESSAGE, PGF_OP_NONE };

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
};

struct pgo_msg;
struct pgo_tuple;

/* Returns the op a message carries, or PGF_OP_NONE for begin/commit/relation/type/origin. */
enum pgf_op pgf_op_of(const struct pgo_msg *msg);

/* Returns "insert", "update", "delete", "truncate", "message" or "none". */
const char *pgf_op_name(enum pgf_op op);

/* Returns the key value of column att for a row change, or NULL when att is not a
 * replica-identity column.  Insert and update take it from the new row, falling back to the
 * old image for a column sent as unchanged TOAST; delete takes it from the old key or row. */
const struct pgf_value *pgf_change_key_value(const struct pgo_msg *msg, uint16_t att);

/* Returns the old image of an update or delete, or NULL when there is none worth sending:
 * pgoutput sent no old tuple, or it is a delete's old key, which is the key itself.
 * *only_keys is set for an update's old key ('K'): then only key columns carry meaning. */
const struct pgo_tuple *pgf_change_before(const struct pgo_msg *msg, int *only_keys);

/* Returns the new image of an insert or update, or NULL for delete. */
const struct pgo_tuple *pgf_change_after(const struct pgo_msg *msg);

#endif
