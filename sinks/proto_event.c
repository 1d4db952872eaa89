/* proto_event.c - build and pack pgfanout.v1.Event and Key with protobuf-c. */
#include "sinks/proto_event.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/lsn.h"
#include "decoders/event.h"
#include "decoders/value.h"
#include "pgfanout/v1/event.pb-c.h"

struct pgf_proto {
    char *database;
    /* Per-event scratch, grown to the widest relation seen; reused for every event. */
    Pgfanout__V1__Value *vals;   /* key, before, after: 3*natts */
    Pgfanout__V1__Column *cols;  /* key, before, after: 3*natts */
    Pgfanout__V1__Column **ptrs; /* 3*natts */
    size_t cap;                  /* natts the arrays hold */
    Pgfanout__V1__Truncate__Table *ttables;
    Pgfanout__V1__Truncate__Table **tptrs;
    size_t tcap;
    uint8_t *arena; /* NUL-terminated copies of strings and decoded bytea */
    size_t arena_cap, arena_used;
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
    return p;
}

/* Frees the encoder. */
void pgf_proto_free(struct pgf_proto *p)
{
    if (p == NULL)
        return;
    free(p->database);
    free(p->vals);
    free(p->cols);
    free(p->ptrs);
    free(p->ttables);
    free(p->tptrs);
    free(p->arena);
    free(p->value_buf);
    free(p->key_buf);
    free(p);
}

/* Grows the column scratch to natts columns; returns 0 or -1. */
static int reserve_cols(struct pgf_proto *p, size_t natts)
{
    /* Allocated even for a relation with no columns (CREATE TABLE t ()): fill_row then takes
     * p->vals + 0, and arithmetic on a NULL pointer is undefined, even adding 0. */
    if (p->cap > 0 && natts <= p->cap)
        return 0;
    size_t n = natts < 16 ? 16 : natts;
    free(p->vals);
    free(p->cols);
    free(p->ptrs);
    p->vals = calloc(3 * n, sizeof *p->vals);
    p->cols = calloc(3 * n, sizeof *p->cols);
    p->ptrs = calloc(3 * n, sizeof *p->ptrs);
    p->cap = p->vals && p->cols && p->ptrs ? n : 0;
    return p->cap ? 0 : -1;
}

/* Copies len bytes plus a NUL into the arena (sized beforehand); returns the copy. */
static char *arena_str(struct pgf_proto *p, const char *s, size_t len)
{
    char *d = (char *)p->arena + p->arena_used;
    memcpy(d, s, len);
    d[len] = '\0';
    p->arena_used += len + 1;
    return d;
}

/* Fills one protobuf Value from a column value of type_oid. */
static void fill_value(struct pgf_proto *p, const struct pgf_value *v, uint32_t type_oid, Pgfanout__V1__Value *out)
{
    pgfanout__v1__value__init(out);
    struct pgf_typed t;
    uint8_t *scratch = p->arena + p->arena_used;
    pgf_value_convert(v, type_oid, scratch, &t);
    switch (t.kind) {
    case PGF_VK_NULL:
        out->kind_case = PGFANOUT__V1__VALUE__KIND_IS_NULL;
        out->is_null = 1;
        break;
    case PGF_VK_UNCHANGED_TOAST:
        out->kind_case = PGFANOUT__V1__VALUE__KIND_UNCHANGED_TOAST;
        out->unchanged_toast = 1;
        break;
    case PGF_VK_BOOL:
        out->kind_case = PGFANOUT__V1__VALUE__KIND_BOOL_VALUE;
        out->bool_value = t.i != 0;
        break;
    case PGF_VK_INT:
        out->kind_case = PGFANOUT__V1__VALUE__KIND_INT_VALUE;
        out->int_value = t.i;
        break;
    case PGF_VK_DOUBLE:
        out->kind_case = PGFANOUT__V1__VALUE__KIND_DOUBLE_VALUE;
        out->double_value = t.d;
        break;
    case PGF_VK_NUMERIC:
        out->kind_case = PGFANOUT__V1__VALUE__KIND_NUMERIC;
        out->numeric = arena_str(p, t.str, t.len);
        break;
    case PGF_VK_TEXT:
        out->kind_case = PGFANOUT__V1__VALUE__KIND_TEXT;
        out->text = arena_str(p, t.str, t.len);
        break;
    case PGF_VK_BYTES:
        out->kind_case = PGFANOUT__V1__VALUE__KIND_BYTES_VALUE;
        if (t.str != (const char *)scratch) /* binary-mode bytes still point at the message */
            memcpy(scratch, t.str, t.len);
        out->bytes_value.data = scratch;
        out->bytes_value.len = t.len;
        p->arena_used += t.len;
        break;
    case PGF_VK_UUID:
        out->kind_case = PGFANOUT__V1__VALUE__KIND_UUID;
        memcpy(scratch, t.uuid, 16);
        out->uuid.data = scratch;
        out->uuid.len = 16;
        p->arena_used += 16;
        break;
    case PGF_VK_DATE:
        out->kind_case = PGFANOUT__V1__VALUE__KIND_DATE_DAYS;
        out->date_days = (int32_t)t.i;
        break;
    case PGF_VK_TIME:
        out->kind_case = PGFANOUT__V1__VALUE__KIND_TIME_US;
        out->time_us = t.i;
        break;
    case PGF_VK_TIMESTAMP:
        out->kind_case = PGFANOUT__V1__VALUE__KIND_TIMESTAMP_US;
        out->timestamp_us = t.i;
        break;
    case PGF_VK_TIMESTAMPTZ:
        out->kind_case = PGFANOUT__V1__VALUE__KIND_TIMESTAMPTZ_US;
        out->timestamptz_us = t.i;
        break;
    case PGF_VK_PGTEXT:
        out->kind_case = PGFANOUT__V1__VALUE__KIND_PG_TEXT;
        out->pg_text = arena_str(p, t.str, t.len);
        break;
    }
}

/* Returns the arena bytes an image's values can need: each value's text plus a NUL, or 16
 * for a uuid; decoded bytea is always shorter than its text. */
static size_t row_arena_need(const struct pgf_relation *rel, const struct pgf_value *row)
{
    size_t n = 0;
    for (uint16_t i = 0; row && i < rel->natts; i++)
        n += row[i].len + 17;
    return n;
}

/* Points column c at attribute att of rel with value v, and appends it to the row. */
static void add_column(Pgfanout__V1__Row *row, Pgfanout__V1__Column *c, const struct pgf_relation *rel,
                       uint16_t att, Pgfanout__V1__Value *v)
{
    pgfanout__v1__column__init(c);
    c->name = rel->attrs[att].name;
    c->type_oid = rel->attrs[att].type_oid;
    c->value = v;
    row->columns[row->n_columns++] = c;
}

/* Packs message m into *buf; returns the length, or 0 with *ok cleared when out of memory. */
static size_t pack(const ProtobufCMessage *m, uint8_t **buf, size_t *cap, int *ok)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    if (sink_grow((void **)buf, cap, n ? n : 1)) {
        *ok = 0;
        return 0;
    }
    return protobuf_c_message_pack(m, *buf);
}

/* Converts the columns an image carries into vals and lists them in row; an image the
 * event does not have (NULL) stays empty. */
static void fill_row(struct pgf_proto *p, const struct pgf_relation *rel, const struct pgf_value *image,
                     Pgfanout__V1__Value *vals, Pgfanout__V1__Column *cols, Pgfanout__V1__Column **ptrs,
                     Pgfanout__V1__Row *row)
{
    row->columns = ptrs;
    for (uint16_t i = 0; image && i < rel->natts; i++) {
        if (image[i].kind == PGF_VALUE_ABSENT)
            continue;
        fill_value(p, &image[i], rel->attrs[i].type_oid, &vals[i]);
        add_column(row, &cols[i], rel, i, &vals[i]);
    }
}

/* Converts ev's record-key columns (see pgf_event_key_value) into vals and lists them in row,
 * in key order. */
static void fill_key(struct pgf_proto *p, const struct pgf_event *ev, Pgfanout__V1__Value *vals,
                     Pgfanout__V1__Column *cols, Pgfanout__V1__Column **ptrs, Pgfanout__V1__Row *row)
{
    const struct pgf_relation *rel = ev->rel;
    row->columns = ptrs;
    for (uint16_t k = 0; k < rel->nkey; k++) {
        uint16_t att = rel->key_atts[k];
        const struct pgf_value *v = pgf_event_key_value(ev, att);
        if (v == NULL)
            continue;
        fill_value(p, v, rel->attrs[att].type_oid, &vals[k]);
        add_column(row, &cols[k], rel, att, &vals[k]);
    }
}

/* Encodes one event and its key; see proto_event.h. */
int pgf_proto_encode(struct pgf_proto *p, const struct pgf_event *ev, uint32_t txn_index,
                     const uint8_t **value, size_t *value_len, const uint8_t **key, size_t *key_len)
{
    enum pgf_op op = ev->op;
    Pgfanout__V1__Event e = PGFANOUT__V1__EVENT__INIT;
    Pgfanout__V1__Source src = PGFANOUT__V1__SOURCE__INIT;
    Pgfanout__V1__Row rkey = PGFANOUT__V1__ROW__INIT, rbefore = PGFANOUT__V1__ROW__INIT,
                      rafter = PGFANOUT__V1__ROW__INIT;
    Pgfanout__V1__Truncate trunc = PGFANOUT__V1__TRUNCATE__INIT;
    Pgfanout__V1__LogicalMessage lm = PGFANOUT__V1__LOGICAL_MESSAGE__INIT;
    Pgfanout__V1__Key k = PGFANOUT__V1__KEY__INIT;
    static char empty[] = "";

    e.op = (Pgfanout__V1__Op)(op + 1); /* enum pgf_op order matches pgfanout.v1.Op from 1 */
    e.source = &src;
    src.database = p->database;
    src.schema = src.table = src.origin = empty;
    src.lsn = ev->lsn;
    src.txn_index = txn_index;
    if (ev->txn) {
        src.commit_lsn = ev->txn->commit_lsn;
        src.xid = ev->txn->xid;
        /* Checked shift: 'infinity' (a replication origin's timestamp) stays INT64_MAX. */
        src.commit_time_us = pgf_pgtime_to_unix_us(ev->txn->commit_time);
        if (ev->txn->origin)
            src.origin = (char *)ev->txn->origin;
    }
    *key_len = 0;
    int ok = 1;
    p->arena_used = 0;

    if (ev->rel) {
        const struct pgf_relation *rel = ev->rel;
        size_t n = rel->natts;
        if (reserve_cols(p, n) ||
            sink_grow((void **)&p->arena, &p->arena_cap,
                      /* the key's values come from the images too */
                      2 * (row_arena_need(rel, ev->key) + row_arena_need(rel, ev->before) +
                           row_arena_need(rel, ev->after))))
            return -1;
        src.schema = rel->nspname;
        src.table = rel->relname;
        src.relation_oid = rel->oid;
        fill_key(p, ev, p->vals, p->cols, p->ptrs, &rkey);
        fill_row(p, rel, ev->before, p->vals + n, p->cols + n, p->ptrs + n, &rbefore);
        fill_row(p, rel, ev->after, p->vals + 2 * n, p->cols + 2 * n, p->ptrs + 2 * n, &rafter);
        e.key = &rkey;
        e.before = ev->before ? &rbefore : NULL;
        e.after = ev->after ? &rafter : NULL;
        if (rkey.n_columns > 0) {
            k.schema = src.schema;
            k.table = src.table;
            k.n_columns = rkey.n_columns;
            k.columns = rkey.columns;
            *key_len = pack(&k.base, &p->key_buf, &p->key_cap, &ok);
        }
    } else if (op == PGF_OP_TRUNCATE) {
        const struct pgf_event_truncate *t = &ev->truncate;
        if (t->nrels > p->tcap) {
            free(p->ttables);
            free(p->tptrs);
            p->ttables = calloc(t->nrels, sizeof *p->ttables);
            p->tptrs = calloc(t->nrels, sizeof *p->tptrs);
            p->tcap = p->ttables && p->tptrs ? t->nrels : 0;
            if (p->tcap == 0)
                return -1;
        }
        for (uint32_t i = 0; i < t->nrels; i++) {
            pgfanout__v1__truncate__table__init(&p->ttables[i]);
            p->ttables[i].schema = t->rels[i]->nspname;
            p->ttables[i].table = t->rels[i]->relname;
            p->ttables[i].relation_oid = t->rels[i]->oid;
            p->tptrs[i] = &p->ttables[i];
        }
        trunc.n_tables = t->nrels;
        trunc.tables = p->tptrs;
        trunc.cascade = (t->options & PGF_TRUNCATE_CASCADE) != 0;
        trunc.restart_identity = (t->options & PGF_TRUNCATE_RESTART_IDENTITY) != 0;
        e.truncate = &trunc;
    } else if (op == PGF_OP_MESSAGE) {
        lm.transactional = ev->message.transactional;
        lm.prefix = (char *)ev->message.prefix;
        lm.content.data = (uint8_t *)ev->message.content;
        lm.content.len = ev->message.content_len;
        e.message = &lm;
    }
    *value_len = pack(&e.base, &p->value_buf, &p->value_cap, &ok);
    *value = p->value_buf;
    *key = p->key_buf;
    return ok ? 0 : -1;
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
