/* json_event.c - render events as JSON objects with jansson. */
#include "sinks/json_event.h"

#include <errno.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/lsn.h"
#include "decoders/event.h"
#include "decoders/value.h"

/* Returns a JSON string of len bytes as "\x" followed by lower-case hex, for binary values. */
static json_t *hex_string(const char *data, uint32_t len)
{
    static const char digits[] = "0123456789abcdef";
    size_t n = 2 + (size_t)len * 2;
    char *buf = malloc(n);
    if (buf == NULL)
        return NULL;
    buf[0] = '\\';
    buf[1] = 'x';
    for (uint32_t i = 0; i < len; i++) {
        buf[2 + 2 * i] = digits[(unsigned char)data[i] >> 4];
        buf[3 + 2 * i] = digits[(unsigned char)data[i] & 15];
    }
    json_t *s = json_stringn_nocheck(buf, n);
    free(buf);
    return s;
}

/* Renders a text-format number; falls back to a string if PostgreSQL sent something that
 * strtoll/strtod does not fully consume, so no value is ever silently changed. */
static json_t *number_value(const char *text, enum pgf_vclass cls)
{
    char *end;
    errno = 0;
    if (cls == PGF_VCLASS_INT) {
        long long i = strtoll(text, &end, 10);
        if (*end == '\0' && errno == 0)
            return json_integer(i);
    } else {
        if (strcmp(text, "NaN") == 0 || strcmp(text, "Infinity") == 0 || strcmp(text, "-Infinity") == 0)
            return json_string(text);
        /* No errno check: glibc sets ERANGE for subnormals, which still convert exactly,
         * and text PostgreSQL printed for a finite float always parses to a finite double. */
        double d = strtod(text, &end);
        if (*end == '\0' && isfinite(d))
            return json_real(d);
    }
    return json_string(text);
}

/* Returns a JSON value for one column; see json_event.h. */
json_t *pgf_json_value(const struct pgf_value *v, uint32_t type_oid)
{
    switch (v->kind) {
    case PGF_VALUE_NULL:
        return json_null();
    case PGF_VALUE_BINARY:
        return hex_string(v->data, v->len);
    case PGF_VALUE_TEXT:
        break;
    default:
        return NULL; /* unchanged TOAST has no value; callers leave it out */
    }
    enum pgf_vclass cls = pgf_value_class(type_oid);
    if (cls == PGF_VCLASS_BOOL && v->len == 1)
        return json_boolean(v->data[0] == 't');
    if ((cls == PGF_VCLASS_INT || cls == PGF_VCLASS_FLOAT) && v->len < 64) {
        char text[64];
        memcpy(text, v->data, v->len);
        text[v->len] = '\0';
        return number_value(text, cls);
    }
    return json_stringn(v->data, v->len);
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
    if (op != PGF_OP_MESSAGE && op != PGF_OP_TRUNCATE) {
        const struct pgf_relation *rel = ev->msg->u.change.rel;
        rc |= put(obj, "schema", json_string(rel->nspname));
        rc |= put(obj, "table", json_string(rel->relname));
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

/* Returns an object of the tuple's columns, skipping unchanged TOAST, and key-only when asked. */
static json_t *tuple_object(const struct pgf_relation *rel, const struct pgo_tuple *tup, int only_keys)
{
    json_t *obj = json_object();
    if (obj == NULL)
        return NULL;
    for (uint16_t i = 0; i < tup->natts; i++) {
        const struct pgf_value *v = &tup->values[i];
        if (v->kind == PGF_VALUE_UNCHANGED_TOAST || (only_keys && !rel->attrs[i].is_key))
            continue;
        if (put(obj, rel->attrs[i].name, pgf_json_value(v, rel->attrs[i].type_oid))) {
            json_decref(obj);
            return NULL;
        }
    }
    return obj;
}

/* Adds key, before, after and unchanged_toast for an insert, update or delete. */
static int put_row(json_t *obj, const struct pgo_msg *msg)
{
    const struct pgf_relation *rel = msg->u.change.rel;
    json_t *key = json_object();
    if (key == NULL)
        return -1;
    int rc = put(obj, "key", key);
    for (uint16_t i = 0; rc == 0 && i < rel->natts; i++) {
        const struct pgf_value *v = pgf_change_key_value(msg, i);
        if (v && v->kind != PGF_VALUE_UNCHANGED_TOAST)
            rc = put(key, rel->attrs[i].name, pgf_json_value(v, rel->attrs[i].type_oid));
    }
    int only_keys;
    const struct pgo_tuple *before = pgf_change_before(msg, &only_keys);
    rc |= put(obj, "before", before ? tuple_object(rel, before, only_keys) : json_null());
    const struct pgo_tuple *after = pgf_change_after(msg);
    rc |= put(obj, "after", after ? tuple_object(rel, after, 0) : json_null());
    json_t *toast = json_array();
    rc |= put(obj, "unchanged_toast", toast);
    for (uint16_t i = 0; rc == 0 && after && i < after->natts; i++)
        if (after->values[i].kind == PGF_VALUE_UNCHANGED_TOAST)
            rc = json_array_append_new(toast, json_string(rel->attrs[i].name));
    return rc;
}

/* Adds the relations and flags of a truncate. */
static int put_truncate(json_t *obj, const struct pgo_truncate *t)
{
    json_t *tables = json_array();
    int rc = put(obj, "tables", tables);
    for (uint32_t i = 0; rc == 0 && i < t->nrelids; i++) {
        json_t *one = json_object();
        rc = put(one, "schema", json_string(t->rels[i]->nspname)) |
             put(one, "table", json_string(t->rels[i]->relname));
        if (one)
            rc |= json_array_append_new(tables, one);
    }
    rc |= put(obj, "cascade", json_boolean(t->options & PGO_TRUNCATE_CASCADE));
    rc |= put(obj, "restart_identity", json_boolean(t->options & PGO_TRUNCATE_RESTART_IDENTITY));
    return rc;
}

/* Adds prefix, transactional and content of a logical decoding message. */
static int put_message(json_t *obj, const struct pgo_message *m)
{
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
    enum pgf_op op = pgf_op_of(ev->msg);
    json_t *obj = json_object();
    if (obj == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    int rc = put_header(obj, ev, op);
    if (rc == 0) {
        if (op == PGF_OP_TRUNCATE)
            rc = put_truncate(obj, &ev->msg->u.truncate);
        else if (op == PGF_OP_MESSAGE)
            rc = put_message(obj, &ev->msg->u.message);
        else
            rc = put_row(obj, ev->msg);
    }
    if (rc != 0) {
        json_decref(obj);
        snprintf(errbuf, errlen, "cannot render %s event at LSN %s as JSON (invalid UTF-8 or out of memory)",
                 pgf_op_name(op), pgf_lsn_format(ev->lsn, (char[PGF_LSN_BUFSZ]){0}));
        return NULL;
    }
    return obj;
}
