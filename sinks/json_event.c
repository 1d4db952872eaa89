/* json_event.c - render events as JSON objects with jansson. */
#include "sinks/json_event.h"

#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/lsn.h"
#include "decoders/event.h"
#include "decoders/value.h"

/* Returns a JSON string of len bytes as "\x" followed by lower-case hex, for binary values. */
static json_t *hex_string(const char *data, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    size_t n = 2 + (size_t)len * 2;
    char *buf = malloc(n);
    if (buf == NULL)
        return NULL;
    buf[0] = '\\';
    buf[1] = 'x';
    for (size_t i = 0; i < len; i++) {
        buf[2 + 2 * i] = digits[(unsigned char)data[i] >> 4];
        buf[3 + 2 * i] = digits[(unsigned char)data[i] & 15];
    }
    json_t *s = json_stringn_nocheck(buf, n);
    free(buf);
    return s;
}

/* Returns a JSON value for a typed value: null, true/false, an integer, a real,
 * "NaN"/"Infinity"/"-Infinity" (a float's text), "\x" hex for bytes, or the value's text as
 * a string; NULL for unchanged TOAST, invalid UTF-8 or out of memory. */
static json_t *typed_value(const struct pgf_typed *t)
{
    switch (t->kind) {
    case PGF_VK_NULL:
        return json_null();
    case PGF_VK_UNCHANGED_TOAST:
        return NULL; /* no value; callers leave it out */
    case PGF_VK_BOOL:
        return json_boolean(t->i);
    case PGF_VK_INT:
        return json_integer(t->i);
    case PGF_VK_DOUBLE:
        /* JSON has no NaN or Infinity: those keep PostgreSQL's spelling, as strings. */
        return isfinite(t->d) ? json_real(t->d) : json_stringn(t->str, t->len);
    case PGF_VK_BYTES:
        return hex_string(t->str, t->len);
    default:
        return json_stringn(t->str, t->len); /* the value's own text */
    }
}

/* Returns a JSON value for one column; see json_event.h. */
json_t *pgf_json_value(const struct pgf_value *v, uint32_t type_oid)
{
    uint8_t small[256], *scratch = small;
    size_t need = pgf_value_scratch_size(type_oid, v->len);
    if (need > sizeof small && (scratch = malloc(need)) == NULL)
        return NULL;
    struct pgf_typed t;
    pgf_value_convert(v, type_oid, scratch, &t);
    json_t *j = typed_value(&t);
    if (scratch != small)
        free(scratch);
    return j;
}

/* Adds key value pairs; jansson steals the reference, a NULL value is an error. */
static int put(json_t *obj, const char *key, json_t *val)
{
    return val == NULL || json_object_set_new(obj, key, val) != 0 ? -1 : 0;
}

/* Adds the fields every event carries: op, position, transaction. */
static int put_header(json_t *obj, const struct pgf_event *ev, enum pgf_op op)
{
    char lsn[PGF_LSN_BUFSZ], ts[PGF_TS_BUFSZ];
    int rc = put(obj, "op", json_string(pgf_op_name(op)));
    if (ev->rel) {
        rc |= put(obj, "schema", json_string(ev->rel->nspname));
        rc |= put(obj, "table", json_string(ev->rel->relname));
    }
    rc |= put(obj, "lsn", json_string(pgf_lsn_format(ev->lsn, lsn)));
    if (ev->txn) {
        rc |= put(obj, "commit_lsn", json_string(pgf_lsn_format(ev->txn->commit_lsn, lsn)));
        rc |= put(obj, "xid", json_integer(ev->txn->xid));
        rc |= put(obj, "commit_time", json_string(pgf_pgtime_format(ev->txn->commit_time, ts)));
    } else {
        rc |= put(obj, "commit_lsn", json_null());
        rc |= put(obj, "xid", json_null());
        rc |= put(obj, "commit_time", json_null());
    }
    return rc;
}

/* Returns an object of an image's columns, leaving out those it does not carry and
 * unchanged TOAST. */
static json_t *row_object(const struct pgf_relation *rel, const struct pgf_value *row)
{
    json_t *obj = json_object();
    if (obj == NULL)
        return NULL;
    for (uint16_t i = 0; i < rel->natts; i++) {
        const struct pgf_value *v = &row[i];
        if (v->kind == PGF_VALUE_ABSENT || v->kind == PGF_VALUE_UNCHANGED_TOAST)
            continue;
        if (put(obj, rel->attrs[i].name, pgf_json_value(v, rel->attrs[i].type_oid))) {
            json_decref(obj);
            return NULL;
        }
    }
    return obj;
}

/* Returns an object of ev's record-key columns, in key order. */
static json_t *key_object(const struct pgf_event *ev)
{
    json_t *obj = json_object();
    for (uint16_t k = 0; obj && k < ev->rel->nkey; k++) {
        uint16_t att = ev->rel->key_atts[k];
        const struct pgf_value *v = pgf_event_key_value(ev, att);
        if (v && put(obj, ev->rel->attrs[att].name, pgf_json_value(v, ev->rel->attrs[att].type_oid))) {
            json_decref(obj);
            return NULL;
        }
    }
    return obj;
}

/* Adds key, before, after and unchanged_toast of a row event. */
static int put_row(json_t *obj, const struct pgf_event *ev)
{
    const struct pgf_relation *rel = ev->rel;
    int rc = put(obj, "key", key_object(ev));
    rc |= put(obj, "before", ev->before ? row_object(rel, ev->before) : json_null());
    rc |= put(obj, "after", ev->after ? row_object(rel, ev->after) : json_null());
    json_t *toast = json_array();
    rc |= put(obj, "unchanged_toast", toast);
    for (uint16_t i = 0; rc == 0 && ev->after && i < rel->natts; i++)
        if (ev->after[i].kind == PGF_VALUE_UNCHANGED_TOAST)
            rc = json_array_append_new(toast, json_string(rel->attrs[i].name));
    return rc;
}

/* Adds the relations and flags of a truncate. */
static int put_truncate(json_t *obj, const struct pgf_event *ev)
{
    json_t *tables = json_array();
    int rc = put(obj, "tables", tables);
    for (uint32_t i = 0; rc == 0 && i < ev->truncate.nrels; i++) {
        const struct pgf_relation *rel = ev->truncate.rels[i];
        json_t *one = json_object();
        rc = put(one, "schema", json_string(rel->nspname)) | put(one, "table", json_string(rel->relname));
        if (one)
            rc |= json_array_append_new(tables, one);
    }
    rc |= put(obj, "cascade", json_boolean(ev->truncate.options & PGF_TRUNCATE_CASCADE));
    rc |= put(obj, "restart_identity", json_boolean(ev->truncate.options & PGF_TRUNCATE_RESTART_IDENTITY));
    return rc;
}

/* Adds prefix, transactional and content of a logical decoding message. */
static int put_message(json_t *obj, const struct pgf_event *ev)
{
    const struct pgf_event_message *m = &ev->message;
    /* EVP_EncodeBlock writes 4 bytes per 3 input bytes, plus a NUL. */
    size_t cap = ((size_t)m->content_len + 2) / 3 * 4 + 1;
    unsigned char *b64 = malloc(cap);
    if (b64 == NULL)
        return -1;
    int n = EVP_EncodeBlock(b64, (const unsigned char *)m->content, (int)m->content_len);
    int rc = put(obj, "prefix", json_string(m->prefix));
    rc |= put(obj, "transactional", json_boolean(m->transactional));
    rc |= put(obj, "content_base64", json_stringn_nocheck((const char *)b64, (size_t)n));
    free(b64);
    return rc;
}

/* Returns the JSON object of one event; see json_event.h. */
json_t *pgf_json_event(const struct pgf_event *ev, char *errbuf, size_t errlen)
{
    enum pgf_op op = ev->op;
    json_t *obj = json_object();
    if (obj == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    int rc = put_header(obj, ev, op);
    if (rc == 0) {
        if (op == PGF_OP_TRUNCATE)
            rc = put_truncate(obj, ev);
        else if (op == PGF_OP_MESSAGE)
            rc = put_message(obj, ev);
        else
            rc = put_row(obj, ev);
    }
    if (rc != 0) {
        json_decref(obj);
        snprintf(errbuf, errlen, "cannot render %s event at LSN %s as JSON (invalid UTF-8 or out of memory)",
                 pgf_op_name(op), pgf_lsn_format(ev->lsn, (char[PGF_LSN_BUFSZ]){0}));
        return NULL;
    }
    return obj;
}
