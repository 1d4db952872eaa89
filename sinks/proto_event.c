/* proto_event.c - pgfanout.v1.Event and Key written straight in protobuf's wire format. */
#include "sinks/proto_event.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/lsn.h"
#include "common/utf8.h"
#include "decoders/event.h"
#include "decoders/value.h"
#include "pgfanout/v1/event.pb-c.h"

/* Why not protobuf-c's pack: it walks the descriptors generically and sizes every nested
 * message once for its length prefix and again while packing; callgrind put packing at two
 * thirds of the main thread's instructions.  The schema is fixed, so the writer below knows
 * it.  Its bytes are exactly those protobuf_c_message_pack writes for the same message
 * (fields in number order, proto3 zero values left out, oneof members always written): the
 * unit test and the pgoutput fuzz target unpack every encoding with protobuf-c and pack it
 * again to check that.  protobuf-c still decodes keys for error messages (off the hot path).
 *
 * Strings: the replication connection asks for client_encoding UTF8, so PostgreSQL converts
 * everything to UTF-8, except from a SQL_ASCII database, which passes bytes through unchecked.
 * A text value that is not UTF-8 is then sent as bytes_value (its bytes, unchanged: nothing is
 * lost, and strict decoders accept the record); a name (schema, table, column, origin, message
 * prefix) that is not UTF-8 has its malformed bytes replaced by U+FFFD. */

/* One column as written: its name, type, typed value and the sizes of its messages. */
struct wcol {
    const char *name;
    size_t name_len;
    uint32_t type_oid;
    size_t vsize; /* Value payload bytes */
    size_t csize; /* Column payload bytes */
    struct pgf_typed t;
};

/* The columns of one Row and its payload size. */
struct wrow {
    struct wcol *cols;
    size_t n, size;
};

/* A repaired name (see name_of); they are rare, so each has its own allocation. */
struct fixed_name {
    struct fixed_name *next;
    char text[];
};

struct pgf_proto {
    char *database;
    size_t database_len;
    struct wcol *cols;  /* key, before, after: 3*cap */
    int32_t *after_at;  /* cap: a column's index among the after image's columns, or -1 */
    size_t cap;         /* natts the arrays hold */
    uint8_t *arena;     /* decoded bytea, sized before each event */
    size_t arena_cap, arena_used;
    struct fixed_name *fixed; /* the names repaired for the current event */
    int oom;                  /* a repair found no memory */
    uint8_t *value_buf, *key_buf;
    size_t value_cap, key_cap;
};

/* Returns a new encoder; see proto_event.h. */
struct pgf_proto *pgf_proto_new(const char *database)
{
    struct pgf_proto *p = calloc(1, sizeof *p);
    if (p == NULL || (p->database = strdup(database)) == NULL) {
        free(p);
        return NULL;
    }
    p->database_len = strlen(database);
    return p;
}

/* Frees the names repaired for the last event. */
static void free_fixed(struct pgf_proto *p)
{
    while (p->fixed) {
        struct fixed_name *f = p->fixed;
        p->fixed = f->next;
        free(f);
    }
}

/* Frees the encoder. */
void pgf_proto_free(struct pgf_proto *p)
{
    if (p == NULL)
        return;
    free(p->database);
    free(p->cols);
    free(p->after_at);
    free_fixed(p);
    free(p->arena);
    free(p->value_buf);
    free(p->key_buf);
    free(p);
}

/* Grows the column scratch to natts columns; returns 0 or -1. */
static int reserve_cols(struct pgf_proto *p, size_t natts)
{
    /* Allocated even for a relation with no columns (CREATE TABLE t ()): the rows then take
     * p->cols + 0, and arithmetic on a NULL pointer is undefined, even adding 0. */
    if (p->cap > 0 && natts <= p->cap)
        return 0;
    size_t n = natts < 16 ? 16 : natts;
    free(p->cols);
    free(p->after_at);
    p->cols = calloc(3 * n, sizeof *p->cols);
    p->after_at = calloc(n, sizeof *p->after_at);
    p->cap = p->cols && p->after_at ? n : 0;
    return p->cap ? 0 : -1;
}

/* -- wire format ------------------------------------------------------------------------- */

/* Returns the bytes of v as a varint. */
static size_t vsz(uint64_t v)
{
    return v < 0x80 ? 1 : (size_t)(70 - __builtin_clzll(v)) / 7;
}

/* Writes v as a varint at o; returns the end. */
static uint8_t *put_var(uint8_t *o, uint64_t v)
{
    while (v >= 0x80) {
        *o++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *o++ = (uint8_t)v;
    return o;
}

/* Returns the bytes of a length-delimited field of n payload bytes (every field number of the
 * schema is below 16, so a tag is one byte). */
static size_t ld(size_t n)
{
    return 1 + vsz(n) + n;
}

/* Returns the bytes of a varint field holding v, or 0 for a proto3 zero (left out). */
static size_t opt_var(uint64_t v)
{
    return v ? 1 + vsz(v) : 0;
}

/* Returns the bytes of a string field of n bytes, or 0 for an empty one (left out). */
static size_t opt_ld(size_t n)
{
    return n ? ld(n) : 0;
}

/* Writes tag, then v as a varint. */
static uint8_t *put_tvar(uint8_t *o, uint8_t tag, uint64_t v)
{
    *o++ = tag;
    return put_var(o, v);
}

/* Writes tag, the length n and n bytes of s. */
static uint8_t *put_ld(uint8_t *o, uint8_t tag, const void *s, size_t n)
{
    *o++ = tag;
    o = put_var(o, n);
    if (n)
        memcpy(o, s, n);
    return o + n;
}

/* Writes a varint field unless v is zero. */
static uint8_t *put_opt_var(uint8_t *o, uint8_t tag, uint64_t v)
{
    return v ? put_tvar(o, tag, v) : o;
}

/* Writes a string field unless it is empty. */
static uint8_t *put_opt_ld(uint8_t *o, uint8_t tag, const void *s, size_t n)
{
    return n ? put_ld(o, tag, s, n) : o;
}

/* The tag of a field: its number and wire type (0 varint, 1 fixed64, 2 length-delimited). */
#define TAG(num, wt) ((uint8_t)((num) << 3 | (wt)))

/* Returns the payload bytes of the Value t. */
static size_t value_size(const struct pgf_typed *t)
{
    switch (t->kind) {
    case PGF_VK_NULL:
    case PGF_VK_UNCHANGED_TOAST:
    case PGF_VK_BOOL: return 2;
    case PGF_VK_DOUBLE: return 9;
    case PGF_VK_UUID: return ld(16);
    case PGF_VK_DATE: return 1 + vsz((uint64_t)(int64_t)(int32_t)t->i); /* int32: sign-extended */
    case PGF_VK_INT:
    case PGF_VK_TIME:
    case PGF_VK_TIMESTAMP:
    case PGF_VK_TIMESTAMPTZ: return 1 + vsz((uint64_t)t->i);
    case PGF_VK_NUMERIC:
    case PGF_VK_TEXT:
    case PGF_VK_BYTES:
    case PGF_VK_PGTEXT: return ld(t->len);
    }
    return 0;
}

/* Writes the payload of the Value t. */
static uint8_t *put_value(uint8_t *o, const struct pgf_typed *t)
{
    switch (t->kind) {
    case PGF_VK_NULL: return put_tvar(o, TAG(1, 0), 1);
    case PGF_VK_UNCHANGED_TOAST: return put_tvar(o, TAG(2, 0), 1);
    case PGF_VK_BOOL: return put_tvar(o, TAG(3, 0), t->i != 0);
    case PGF_VK_INT: return put_tvar(o, TAG(4, 0), (uint64_t)t->i);
    case PGF_VK_DOUBLE: {
        uint64_t bits;
        memcpy(&bits, &t->d, 8);
        *o++ = TAG(5, 1);
        for (int i = 0; i < 8; i++) /* fixed64 is little-endian whatever the host */
            *o++ = (uint8_t)(bits >> (8 * i));
        return o;
    }
    case PGF_VK_NUMERIC: return put_ld(o, TAG(6, 2), t->str, t->len);
    case PGF_VK_TEXT: return put_ld(o, TAG(7, 2), t->str, t->len);
    case PGF_VK_BYTES: return put_ld(o, TAG(8, 2), t->str, t->len);
    case PGF_VK_UUID: return put_ld(o, TAG(9, 2), t->uuid, 16);
    case PGF_VK_DATE: return put_tvar(o, TAG(10, 0), (uint64_t)(int64_t)(int32_t)t->i);
    case PGF_VK_TIME: return put_tvar(o, TAG(11, 0), (uint64_t)t->i);
    case PGF_VK_TIMESTAMP: return put_tvar(o, TAG(12, 0), (uint64_t)t->i);
    case PGF_VK_TIMESTAMPTZ: return put_tvar(o, TAG(13, 0), (uint64_t)t->i);
    case PGF_VK_PGTEXT: return put_ld(o, TAG(14, 2), t->str, t->len);
    }
    return o;
}

/* Writes the payload of the Column c. */
static uint8_t *put_column(uint8_t *o, const struct wcol *c)
{
    o = put_opt_ld(o, TAG(1, 2), c->name, c->name_len);
    o = put_opt_var(o, TAG(2, 0), c->type_oid);
    *o++ = TAG(3, 2);
    o = put_var(o, c->vsize);
    return put_value(o, &c->t);
}

/* Writes the columns of r, each as field num of the enclosing message (Row or Key). */
static uint8_t *put_columns(uint8_t *o, uint8_t num, const struct wrow *r)
{
    for (size_t i = 0; i < r->n; i++) {
        *o++ = TAG(num, 2);
        o = put_var(o, r->cols[i].csize);
        o = put_column(o, &r->cols[i]);
    }
    return o;
}

/* -- from events ------------------------------------------------------------------------- */

static void repair(struct pgf_proto *p, const char *s, size_t n, const char **out, size_t *len);

/* Points *out at s (a C string) when it is UTF-8, else at a repaired copy that lives until the
 * next event; sets *len.  Out of memory, it keeps s and sets p->oom. */
static void name_of(struct pgf_proto *p, const char *s, const char **out, size_t *len)
{
    size_t n = strlen(s);
    *out = s;
    *len = n;
    if (pgf_utf8_valid(s, n))
        return;
    repair(p, s, n, out, len);
}

/* Like name_of, for a name of rel: the decoder may have checked them all once already. */
static void rel_name(struct pgf_proto *p, const struct pgf_relation *rel, const char *s, const char **out,
                     size_t *len)
{
    if (rel->names_utf8) {
        *out = s;
        *len = strlen(s);
        return;
    }
    name_of(p, s, out, len);
}

/* Points *out at a copy of s (n bytes) with its malformed bytes replaced, living until the
 * next event, and sets *len; out of memory, leaves them and sets p->oom. */
static void repair(struct pgf_proto *p, const char *s, size_t n, const char **out, size_t *len)
{
    size_t m = pgf_utf8_repaired_len(s, n);
    struct fixed_name *f = malloc(sizeof *f + m);
    if (f == NULL) {
        p->oom = 1;
        return;
    }
    f->next = p->fixed;
    p->fixed = f;
    *len = pgf_utf8_repair(s, n, f->text);
    *out = f->text;
}

/* Converts value v of column att of rel into c, and sizes its messages. */
static void convert(struct pgf_proto *p, const struct pgf_relation *rel, uint16_t att, const struct pgf_value *v,
                    struct wcol *c)
{
    uint8_t *scratch = p->arena + p->arena_used;
    c->type_oid = rel->attrs[att].type_oid;
    pgf_value_convert(v, c->type_oid, scratch, &c->t);
    if (c->t.kind == PGF_VK_BYTES && c->t.str == (const char *)scratch)
        p->arena_used += c->t.len;
    else if ((c->t.kind == PGF_VK_TEXT || c->t.kind == PGF_VK_PGTEXT || c->t.kind == PGF_VK_NUMERIC) &&
             !pgf_utf8_valid(c->t.str, c->t.len))
        c->t.kind = PGF_VK_BYTES; /* see the top of the file */
    rel_name(p, rel, rel->attrs[att].name, &c->name, &c->name_len);
    c->vsize = value_size(&c->t);
    c->csize = opt_ld(c->name_len) + opt_var(c->type_oid) + ld(c->vsize);
}

/* Counts the column just converted (r->cols[r->n]) into row r. */
static void row_add(struct wrow *r)
{
    r->size += ld(r->cols[r->n].csize);
    r->n++;
}

/* Converts the columns an image carries into r; an image the event lacks stays empty.  With
 * at (natts entries), notes where each column went, -1 for those absent. */
static void fill_row(struct pgf_proto *p, const struct pgf_relation *rel, const struct pgf_value *image,
                     struct wrow *r, int32_t *at)
{
    for (uint16_t i = 0; image && i < rel->natts; i++) {
        if (at)
            at[i] = -1;
        if (image[i].kind == PGF_VALUE_ABSENT)
            continue;
        if (at)
            at[i] = (int32_t)r->n;
        convert(p, rel, i, &image[i], &r->cols[r->n]);
        row_add(r);
    }
}

/* Converts ev's record-key columns (see pgf_event_key_value) into r, in key order; a value
 * the after image holds is copied from its conversion in after (filled first). */
static void fill_key(struct pgf_proto *p, const struct pgf_event *ev, const struct wrow *after, struct wrow *r)
{
    const struct pgf_relation *rel = ev->rel;
    for (uint16_t k = 0; k < rel->nkey; k++) {
        uint16_t att = rel->key_atts[k];
        const struct pgf_value *v = pgf_event_key_value(ev, att);
        if (v == NULL)
            continue;
        if (ev->after && v == &ev->after[att] && p->after_at[att] >= 0)
            r->cols[r->n] = after->cols[p->after_at[att]];
        else
            convert(p, rel, att, v, &r->cols[r->n]);
        row_add(r);
    }
}

/* Writes the payload of a Truncate at o, or only sizes it when o is NULL; returns its bytes. */
static size_t put_truncate(struct pgf_proto *p, uint8_t *o, const struct pgf_event_truncate *t)
{
    size_t size = 0;
    uint8_t *start = o;
    for (uint32_t i = 0; i < t->nrels; i++) {
        const struct pgf_relation *r = t->rels[i];
        const char *schema, *table;
        size_t schema_len, table_len;
        rel_name(p, r, r->nspname, &schema, &schema_len);
        rel_name(p, r, r->relname, &table, &table_len);
        size_t n = opt_ld(schema_len) + opt_ld(table_len) + opt_var(r->oid);
        size += ld(n);
        if (o) {
            *o++ = TAG(1, 2);
            o = put_var(o, n);
            o = put_opt_ld(o, TAG(1, 2), schema, schema_len);
            o = put_opt_ld(o, TAG(2, 2), table, table_len);
            o = put_opt_var(o, TAG(3, 0), r->oid);
        }
    }
    int cascade = (t->options & PGF_TRUNCATE_CASCADE) != 0;
    int restart = (t->options & PGF_TRUNCATE_RESTART_IDENTITY) != 0;
    size += opt_var(cascade) + opt_var(restart);
    if (o) {
        o = put_opt_var(o, TAG(2, 0), cascade);
        o = put_opt_var(o, TAG(3, 0), restart);
        return (size_t)(o - start);
    }
    return size;
}

/* Writes the payload of a LogicalMessage at o, or only sizes it when o is NULL; returns its
 * bytes. */
static size_t put_message(struct pgf_proto *p, uint8_t *o, const struct pgf_event_message *m)
{
    const char *prefix;
    size_t prefix_len;
    name_of(p, m->prefix, &prefix, &prefix_len);
    size_t size = opt_var(m->transactional != 0) + opt_ld(prefix_len) + opt_ld(m->content_len);
    if (o) {
        uint8_t *start = o;
        o = put_opt_var(o, TAG(1, 0), m->transactional != 0);
        o = put_opt_ld(o, TAG(2, 2), prefix, prefix_len);
        o = put_opt_ld(o, TAG(3, 2), m->content, m->content_len);
        return (size_t)(o - start);
    }
    return size;
}

/* Returns the arena bytes an image can need: its decoded bytea. */
static size_t image_arena_need(const struct pgf_relation *rel, const struct pgf_value *image)
{
    size_t n = 0;
    for (uint16_t i = 0; image && i < rel->natts; i++)
        if (rel->attrs[i].type_oid == PGF_OID_BYTEA && image[i].kind != PGF_VALUE_ABSENT)
            n += pgf_value_scratch_size(PGF_OID_BYTEA, image[i].len);
    return n;
}

/* Makes room for n bytes in *buf; returns 0 or -1. */
static int room(uint8_t **buf, size_t *cap, size_t n)
{
    return sink_grow((void **)buf, cap, n ? n : 1);
}

/* Encodes one event and its key; see proto_event.h. */
int pgf_proto_encode(struct pgf_proto *p, const struct pgf_event *ev, uint32_t txn_index,
                     const uint8_t **value, size_t *value_len, const uint8_t **key, size_t *key_len)
{
    enum pgf_op op = ev->op;
    const struct pgf_relation *rel = ev->rel;
    const struct pgf_txn *txn = ev->txn;
    *key_len = 0;
    *key = p->key_buf;

    /* Everything the arena may take, before any pointer into it is handed out. */
    const char *origin = txn && txn->origin ? txn->origin : "";
    free_fixed(p);
    p->oom = 0;
    p->arena_used = 0;
    if (rel) {
        /* a key value the after image lacks is converted from the key or old image again */
        size_t need = image_arena_need(rel, ev->key) + 2 * image_arena_need(rel, ev->before) +
                      image_arena_need(rel, ev->after);
        if (reserve_cols(p, rel->natts) || room(&p->arena, &p->arena_cap, need))
            return -1;
    }

    /* Source */
    const char *schema = "", *table = "", *org;
    size_t schema_len = 0, table_len = 0, org_len;
    name_of(p, origin, &org, &org_len);
    uint32_t oid = 0;
    if (rel) {
        rel_name(p, rel, rel->nspname, &schema, &schema_len);
        rel_name(p, rel, rel->relname, &table, &table_len);
        oid = rel->oid;
    }
    uint64_t commit_lsn = txn ? txn->commit_lsn : 0;
    uint32_t xid = txn ? txn->xid : 0;
    /* Checked shift: 'infinity' (a replication origin's timestamp) stays INT64_MAX. */
    int64_t commit_us = txn ? pgf_pgtime_to_unix_us(txn->commit_time) : 0;
    size_t src = opt_ld(p->database_len) + opt_ld(schema_len) + opt_ld(table_len) + opt_var(oid) +
                 opt_var(ev->lsn) + opt_var(commit_lsn) + opt_var(xid) + opt_var((uint64_t)commit_us) +
                 opt_var(txn_index) + opt_ld(org_len);
    size_t total = opt_var((uint64_t)op + 1) + ld(src); /* enum pgf_op order matches pgfanout.v1.Op from 1 */

    struct wrow rk = {0}, rb = {0}, ra = {0};
    size_t sub = 0; /* a truncate's or message's payload */
    if (rel) {
        size_t n = rel->natts;
        rk.cols = p->cols;
        rb.cols = p->cols + n;
        ra.cols = p->cols + 2 * n;
        fill_row(p, rel, ev->before, &rb, NULL);
        fill_row(p, rel, ev->after, &ra, p->after_at);
        fill_key(p, ev, &ra, &rk);
        total += ld(rk.size) + (ev->before ? ld(rb.size) : 0) + (ev->after ? ld(ra.size) : 0);
    } else if (op == PGF_OP_TRUNCATE) {
        sub = put_truncate(p, NULL, &ev->truncate);
        total += ld(sub);
    } else if (op == PGF_OP_MESSAGE) {
        sub = put_message(p, NULL, &ev->message);
        total += ld(sub);
    }
    if (p->oom || room(&p->value_buf, &p->value_cap, total))
        return -1;

    uint8_t *o = p->value_buf;
    o = put_opt_var(o, TAG(1, 0), (uint64_t)op + 1);
    *o++ = TAG(2, 2);
    o = put_var(o, src);
    o = put_opt_ld(o, TAG(1, 2), p->database, p->database_len);
    o = put_opt_ld(o, TAG(2, 2), schema, schema_len);
    o = put_opt_ld(o, TAG(3, 2), table, table_len);
    o = put_opt_var(o, TAG(4, 0), oid);
    o = put_opt_var(o, TAG(5, 0), ev->lsn);
    o = put_opt_var(o, TAG(6, 0), commit_lsn);
    o = put_opt_var(o, TAG(7, 0), xid);
    o = put_opt_var(o, TAG(8, 0), (uint64_t)commit_us);
    o = put_opt_var(o, TAG(9, 0), txn_index);
    o = put_opt_ld(o, TAG(10, 2), org, org_len);
    if (rel) {
        *o++ = TAG(3, 2);
        o = put_var(o, rk.size);
        o = put_columns(o, 1, &rk);
        if (ev->before) {
            *o++ = TAG(4, 2);
            o = put_var(o, rb.size);
            o = put_columns(o, 1, &rb);
        }
        if (ev->after) {
            *o++ = TAG(5, 2);
            o = put_var(o, ra.size);
            o = put_columns(o, 1, &ra);
        }
    } else if (op == PGF_OP_TRUNCATE) {
        *o++ = TAG(6, 2);
        o = put_var(o, sub);
        o += put_truncate(p, o, &ev->truncate);
    } else if (op == PGF_OP_MESSAGE) {
        *o++ = TAG(7, 2);
        o = put_var(o, sub);
        o += put_message(p, o, &ev->message);
    }
    *value_len = (size_t)(o - p->value_buf);
    *value = p->value_buf;

    if (rel && rk.n > 0) {
        size_t ksize = opt_ld(schema_len) + opt_ld(table_len);
        for (size_t i = 0; i < rk.n; i++)
            ksize += ld(rk.cols[i].csize);
        if (room(&p->key_buf, &p->key_cap, ksize))
            return -1;
        o = p->key_buf;
        o = put_opt_ld(o, TAG(1, 2), schema, schema_len);
        o = put_opt_ld(o, TAG(2, 2), table, table_len);
        o = put_columns(o, 3, &rk);
        *key = p->key_buf;
        *key_len = (size_t)(o - p->key_buf);
    }
    return 0;
}

/* A bounded text buffer: appends stop at the end, which then reads "...". */
struct ktext {
    char *p;
    size_t room, len;
    int full;
};

/* Appends formatted text, marking the buffer full when it does not fit. */
static void kt_put(struct ktext *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void kt_put(struct ktext *t, const char *fmt, ...)
{
    if (t->full)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->p + t->len, t->room - t->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= t->room - t->len) {
        t->full = 1;
        t->len = t->room - 1;
        return;
    }
    t->len += (size_t)n;
}

/* Appends s quoted, non-printable bytes as \xNN, at most max bytes of it. */
static void kt_quoted(struct ktext *t, const uint8_t *s, size_t len, size_t max)
{
    kt_put(t, "'");
    for (size_t i = 0; i < len && i < max; i++)
        kt_put(t, s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\'' && s[i] != '\\' ? "%c" : "\\x%02x", s[i]);
    kt_put(t, len > max ? "'...(%zu bytes)" : "'", len);
}

/* Appends bytes as \x hex, at most max of them. */
static void kt_hex(struct ktext *t, const uint8_t *s, size_t len, size_t max)
{
    kt_put(t, "\\x");
    for (size_t i = 0; i < len && i < max; i++)
        kt_put(t, "%02x", s[i]);
    if (len > max)
        kt_put(t, "...(%zu bytes)", len);
}

/* Appends a UTC calendar time of us microseconds since 1970 (date only when date_only). */
static void kt_time(struct ktext *t, int64_t us, int date_only, const char *suffix)
{
    time_t secs = (time_t)(us / 1000000 - (us % 1000000 < 0));
    int64_t frac = us % 1000000 < 0 ? us % 1000000 + 1000000 : us % 1000000;
    struct tm tm;
    char buf[64];
    if (gmtime_r(&secs, &tm) == NULL || strftime(buf, sizeof buf, date_only ? "%Y-%m-%d" : "%Y-%m-%d %H:%M:%S", &tm) == 0) {
        kt_put(t, "%" PRId64 "us", us);
        return;
    }
    if (date_only)
        kt_put(t, "%s", buf);
    else
        kt_put(t, "%s.%06" PRId64 "%s", buf, frac, suffix);
}

/* Appends one key value in a form a person can match against the row. */
static void kt_value(struct ktext *t, const Pgfanout__V1__Value *v)
{
    enum { MAXSTR = 64 };
    switch (v ? v->kind_case : PGFANOUT__V1__VALUE__KIND__NOT_SET) {
    case PGFANOUT__V1__VALUE__KIND_IS_NULL: kt_put(t, "NULL"); break;
    case PGFANOUT__V1__VALUE__KIND_UNCHANGED_TOAST: kt_put(t, "(unchanged toast)"); break;
    case PGFANOUT__V1__VALUE__KIND_BOOL_VALUE: kt_put(t, v->bool_value ? "true" : "false"); break;
    case PGFANOUT__V1__VALUE__KIND_INT_VALUE: kt_put(t, "%" PRId64, v->int_value); break;
    case PGFANOUT__V1__VALUE__KIND_DOUBLE_VALUE: kt_put(t, "%.17g", v->double_value); break;
    case PGFANOUT__V1__VALUE__KIND_NUMERIC: kt_put(t, "%.*s", MAXSTR, v->numeric); break;
    case PGFANOUT__V1__VALUE__KIND_TEXT:
        kt_quoted(t, (const uint8_t *)v->text, strlen(v->text), MAXSTR);
        break;
    case PGFANOUT__V1__VALUE__KIND_PG_TEXT:
        kt_quoted(t, (const uint8_t *)v->pg_text, strlen(v->pg_text), MAXSTR);
        break;
    case PGFANOUT__V1__VALUE__KIND_BYTES_VALUE: kt_hex(t, v->bytes_value.data, v->bytes_value.len, MAXSTR / 2); break;
    case PGFANOUT__V1__VALUE__KIND_UUID:
        if (v->uuid.len == 16) {
            const uint8_t *u = v->uuid.data;
            kt_put(t, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1], u[2],
                   u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
        } else {
            kt_hex(t, v->uuid.data, v->uuid.len, 16);
        }
        break;
    case PGFANOUT__V1__VALUE__KIND_DATE_DAYS: kt_time(t, (int64_t)v->date_days * 86400000000, 1, ""); break;
    case PGFANOUT__V1__VALUE__KIND_TIME_US:
        kt_put(t, "%02" PRId64 ":%02" PRId64 ":%02" PRId64 ".%06" PRId64, v->time_us / 3600000000,
               v->time_us / 60000000 % 60, v->time_us / 1000000 % 60, v->time_us % 1000000);
        break;
    case PGFANOUT__V1__VALUE__KIND_TIMESTAMP_US: kt_time(t, v->timestamp_us, 0, ""); break;
    case PGFANOUT__V1__VALUE__KIND_TIMESTAMPTZ_US: kt_time(t, v->timestamptz_us, 0, "Z"); break;
    default: kt_put(t, "?"); break;
    }
}

/* Renders a record key; see proto_event.h. */
void pgf_proto_key_text(const uint8_t *key, size_t len, int row_key, char *out, size_t room)
{
    struct ktext t = {.p = out, .room = room};
    if (room == 0)
        return;
    out[0] = '\0';
    if (key == NULL || len == 0) {
        kt_put(&t, "(none)");
    } else if (!row_key) {
        kt_quoted(&t, key, len, 64);
    } else {
        Pgfanout__V1__Key *k = pgfanout__v1__key__unpack(NULL, len, key);
        if (k == NULL || k->n_columns == 0) {
            kt_hex(&t, key, len, 32);
        } else {
            for (size_t i = 0; i < k->n_columns && !t.full; i++) {
                kt_put(&t, "%s%s=", i ? ", " : "", k->columns[i]->name);
                kt_value(&t, k->columns[i]->value);
            }
        }
        if (k)
            pgfanout__v1__key__free_unpacked(k, NULL);
    }
    if (t.full && room > 4)
        memcpy(out + room - 4, "...", 4);
}
