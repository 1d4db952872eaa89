/* pgoutput.h - a pure decoder for PostgreSQL's pgoutput logical replication protocol.
 *
 * Bytes in, typed messages out; no I/O.  The decoder keeps a relation cache keyed by
 * OID, because row messages name their relation only by OID.  Decoded strings and
 * column values point into the caller's buffer (zero-copy) and stay valid until that
 * buffer is released or the next pgo_decode() call on the same decoder; a sink that
 * needs them longer copies them.  Relation entries stay valid until a later Relation
 * message for the same OID replaces them, or the decoder is freed.
 */
#ifndef PGFANOUT_PGOUTPUT_H
#define PGFANOUT_PGOUTPUT_H

#include <stddef.h>
#include <stdint.h>

#include "decoders/event.h"

/* The wire byte is the enum value, as in PostgreSQL's proto.c. */
enum pgo_msg_type {
    PGO_MSG_BEGIN = 'B',
    PGO_MSG_COMMIT = 'C',
    PGO_MSG_ORIGIN = 'O',
    PGO_MSG_RELATION = 'R',
    PGO_MSG_TYPE = 'Y',
    PGO_MSG_INSERT = 'I',
    PGO_MSG_UPDATE = 'U',
    PGO_MSG_DELETE = 'D',
    PGO_MSG_TRUNCATE = 'T',
    PGO_MSG_MESSAGE = 'M',
};

/* Result codes; the kind of failure, with the detail in pgo_decoder_errstr(). */
enum pgo_err {
    PGO_OK = 0,
    PGO_ERR_TRUNCATED = 1, /* a field, or a string's NUL, runs past the end of the message */
    PGO_ERR_UNKNOWN = 2,   /* unknown message type or tuple/column marker */
    PGO_ERR_BAD = 3,       /* structurally invalid: trailing bytes, unknown replica identity */
    PGO_ERR_RELATION = 4,  /* a row names an OID with no Relation message, or wrong column count */
    PGO_ERR_OOM = 5,
};

/* A TupleData: natts values (struct pgf_value, kind never ABSENT; data points into the
 * message buffer), in the relation's column order. */
struct pgo_tuple {
    uint16_t natts;
    const struct pgf_value *values;
};

/* Begin: final_lsn is the commit record's LSN. */
struct pgo_begin {
    uint64_t final_lsn;
    int64_t commit_time; /* microseconds since 2000-01-01 00:00:00 UTC, as on the wire */
    uint32_t xid;
};

/* Commit: end_lsn is the position just past the commit record, the one to confirm. */
struct pgo_commit {
    uint8_t flags;
    uint64_t commit_lsn;
    uint64_t end_lsn;
    int64_t commit_time;
};

struct pgo_origin {
    uint64_t lsn;
    const char *name; /* NUL-terminated, in the buffer */
};

/* Type: sent before a relation that uses a non-builtin type. */
struct pgo_type {
    uint32_t oid;
    const char *nspname;
    const char *typname;
};

/* Insert, Update and Delete share one shape.
 * old_kind is 'K' (old key columns), 'O' (whole old row, REPLICA IDENTITY FULL) or 0 (none). */
struct pgo_change {
    const struct pgf_relation *rel;
    char old_kind;
    struct pgo_tuple old_tuple; /* valid when old_kind != 0 */
    struct pgo_tuple new_tuple; /* valid for insert and update */
};

#define PGO_TRUNCATE_CASCADE PGF_TRUNCATE_CASCADE
#define PGO_TRUNCATE_RESTART_IDENTITY PGF_TRUNCATE_RESTART_IDENTITY

struct pgo_truncate {
    uint8_t options;
    uint32_t nrelids;
    const struct pgf_relation *const *rels; /* nrelids entries, owned by the decoder */
};

/* A logical decoding message (pg_logical_emit_message). */
struct pgo_message {
    int transactional;
    uint64_t lsn;
    const char *prefix; /* NUL-terminated, in the buffer */
    uint32_t content_len;
    const char *content;
};

/* One decoded message; which member is valid follows from type. */
struct pgo_msg {
    enum pgo_msg_type type;
    union {
        struct pgo_begin begin;
        struct pgo_commit commit;
        struct pgo_origin origin;
        const struct pgf_relation *relation; /* the cache entry it created or replaced */
        struct pgo_type typ;
        struct pgo_change change;  /* insert, update, delete */
        struct pgo_truncate truncate;
        struct pgo_message message;
    } u;
};

struct pgo_decoder;

/* Returns a new decoder with an empty relation cache, or NULL when out of memory. */
struct pgo_decoder *pgo_decoder_new(void);

/* Frees the decoder, its relation cache and every pointer it handed out. NULL is fine. */
void pgo_decoder_free(struct pgo_decoder *dec);

/* Decodes one pgoutput message (the payload of one XLogData) of len bytes into *out.
 * Returns PGO_OK, or an error code with the message type and byte offset in
 * pgo_decoder_errstr().  Never reads outside buf[0..len).  Pointers in *out stay valid
 * until the next call or until buf is released, whichever is first.  An error does not
 * poison the decoder: the caller decides whether to go on. */
int pgo_decode(struct pgo_decoder *dec, const uint8_t *buf, size_t len, struct pgo_msg *out);

/* Returns the last error's description ("" after success); owned by the decoder. */
const char *pgo_decoder_errstr(const struct pgo_decoder *dec);

/* Returns the cached relation for oid, or NULL. */
const struct pgf_relation *pgo_decoder_relation(const struct pgo_decoder *dec, uint32_t oid);

/* Sets the record key of the cached relation oid to the n columns at atts (indexes into its
 * columns; see struct pgf_relation).  A relation no longer cached is left alone.  Returns 0,
 * or -1 when out of memory or an index is out of range. */
int pgo_decoder_set_key(struct pgo_decoder *dec, uint32_t oid, const uint16_t *atts, uint16_t n);

/* Returns a static name for a message type ("begin", "insert", ...) or "unknown". */
const char *pgo_msg_type_name(int type);

#endif
