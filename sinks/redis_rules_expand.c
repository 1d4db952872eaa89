/* redis_rules_expand.c - the pure half of the rules: one change and the compiled rules in, the
 * keys, generations and messages it invalidates out.  No file, no socket, no logging: what is
 * worth telling the operator goes back to the caller through pgf_inval_out.notice.  A ctest
 * (unit.redis_expand_pure) checks this file's object calls nothing that does I/O.  See
 * redis_rules.h. */
#include "sinks/redis_rules.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/lsn.h"
#include "decoders/event.h"
#include "sinks/json_event.h"
#include "sinks/redis_rules_compiled.h"

/* Which row image a template is expanded for. */
enum image { OLD_ROW, NEW_ROW };

/* Looks up column name's value in one image of a row event.  Returns 1 with *v set, 0 for SQL
 * NULL, or -1 when the image does not carry the column (not sent by the replica identity). */
static int column_value(const struct pgf_event *ev, enum image img, const char *name, const struct pgf_value **v)
{
    const struct pgf_relation *rel = ev->rel;
    uint16_t att = 0;
    while (att < rel->natts && strcmp(rel->attrs[att].name, name) != 0)
        att++;
    if (att == rel->natts)
        return -1;
    const struct pgf_value *val = NULL;
    if (img == NEW_ROW) {
        val = ev->after ? &ev->after[att] : NULL;
        if (val && val->kind == PGF_VALUE_UNCHANGED_TOAST) /* unchanged TOAST: the old image has it */
            val = ev->before ? &ev->before[att] : NULL;
    } else if (ev->before) {
        val = &ev->before[att]; /* an old key image does not carry the other columns (ABSENT) */
    } else {
        /* No old image: an update's key did not change, or a delete's old key is the key. */
        val = &ev->key[att];
    }
    if (val == NULL || val->kind == PGF_VALUE_ABSENT || val->kind == PGF_VALUE_UNCHANGED_TOAST)
        return -1;
    if (val->kind == PGF_VALUE_NULL)
        return 0;
    *v = val;
    return 1;
}

/* Writes the lowercase hex digest of data into out (41 bytes for sha1, 33 for md5). */
static void hex_digest(const EVP_MD *md, const char *data, size_t len, char *out)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(data, len, d, &n, md, NULL);
    for (unsigned int i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* Appends len bytes to the key buffer at *at; returns 0 or -1. */
static int put(struct pgf_redis_rules *r, size_t *at, const char *s, size_t len)
{
    if (sink_grow((void **)&r->buf, &r->cap, *at + len + 1) != 0)
        return -1;
    memcpy(r->buf + *at, s, len);
    *at += len;
    r->buf[*at] = '\0';
    return 0;
}

/* Appends a column value with its filters applied. */
static int put_filtered(struct pgf_redis_rules *r, size_t *at, const struct part *pt, const char *s, size_t len)
{
    if (pt->nfilters == 0)
        return put(r, at, s, len);
    if (sink_grow((void **)&r->tmp, &r->tmpcap, len + 65) != 0)
        return -1;
    memmove(r->tmp, s, len);
    for (int f = 0; f < pt->nfilters; f++) {
        char hex[2 * EVP_MAX_MD_SIZE + 1];
        switch (pt->filters[f]) {
        case F_LOWER:
        case F_UPPER:
            /* ASCII only, like Python's str.lower() on ASCII; other bytes pass unchanged. */
            for (size_t i = 0; i < len; i++) {
                char c = r->tmp[i];
                if (pt->filters[f] == F_LOWER && c >= 'A' && c <= 'Z')
                    r->tmp[i] = (char)(c - 'A' + 'a');
                else if (pt->filters[f] == F_UPPER && c >= 'a' && c <= 'z')
                    r->tmp[i] = (char)(c - 'a' + 'A');
            }
            break;
        case F_SHA1:
        case F_MD5:
            hex_digest(pt->filters[f] == F_SHA1 ? EVP_sha1() : EVP_md5(), r->tmp, len, hex);
            len = strlen(hex);
            memcpy(r->tmp, hex, len);
            break;
        }
    }
    return put(r, at, r->tmp, len);
}

/* Starts a key with the Django prefix when that preset is on. */
static int start_key(struct pgf_redis_rules *r, size_t *at)
{
    *at = 0;
    return put(r, at, r->django ? r->django_prefix : "", r->django ? strlen(r->django_prefix) : 0);
}

/* Hands a message for the operator to out->notice (when set): the caller logs, never expand. */
static void notice(const struct pgf_inval_out *out, const char *msg)
{
    if (out->notice)
        out->notice(out->ctx, msg);
}

/* Expands a template for one image into r->buf.  Returns 1 with *len set, 0 when the key
 * does not exist (a NULL column) or cannot be built (a column not sent), -1 when out of
 * memory. */
static int expand(struct pgf_redis_rules *r, struct tmpl *t, const struct pgf_event *ev, enum image img,
                  const struct pgf_inval_out *out, size_t *len)
{
    size_t at;
    if (start_key(r, &at) != 0)
        return -1;
    for (size_t i = 0; i < t->nparts; i++) {
        const struct part *pt = &t->parts[i];
        if (!pt->is_col) {
            if (put(r, &at, pt->text, pt->len) != 0)
                return -1;
            continue;
        }
        const struct pgf_value *v = NULL;
        int rc = column_value(ev, img, pt->text, &v);
        if (rc < 0) {
            r->unexpanded++;
            if (!t->noticed) {
                char text[1024];
                t->noticed = 1;
                snprintf(text, sizeof text, "redis: cannot build key '%s' for the %s row of a %s on %s.%s: column "
                         "%s was not sent (see the replica identity warning at startup); counting such keys as "
                         "unexpanded", t->source, img == OLD_ROW ? "old" : "new", pgf_op_name(ev->op),
                         ev->rel->nspname, ev->rel->relname, pt->text);
                notice(out, text);
            }
        }
        if (rc <= 0)
            return 0;
        if (put_filtered(r, &at, pt, v->data, v->len) != 0)
            return -1;
    }
    *len = at;
    return 1;
}

/* Reports a literal key (a table key, a generation key, an app key) with the preset applied. */
static int literal_key(struct pgf_redis_rules *r, const char *key, size_t keylen, const char **out, size_t *len)
{
    size_t at;
    if (start_key(r, &at) != 0 || put(r, &at, key, keylen) != 0)
        return -1;
    *out = r->buf;
    *len = at;
    return 0;
}

/* django-cachalot's table key: sha1 of "alias:table" in hex, in Django's key format. */
static int cachalot_key(struct pgf_redis_rules *r, const char *table, const struct pgf_inval_out *out)
{
    char src[512], hex[41];
    int n = snprintf(src, sizeof src, "%s:%s", r->cachalot_alias, table);
    hex_digest(EVP_sha1(), src, (size_t)n < sizeof src ? (size_t)n : sizeof src - 1, hex);
    const char *key;
    size_t len;
    if (literal_key(r, hex, 40, &key, &len) != 0)
        return -1;
    return out->key(out->ctx, PGF_REDIS_DEL, key, len);
}

/* Builds and reports the publish payload of one change. */
static int publish_change(const struct rule *ru, const struct pgf_event *ev, json_t *keys,
                          const struct pgf_inval_out *out)
{
    char lsn[PGF_LSN_BUFSZ], table[512];
    snprintf(table, sizeof table, "%s.%s", ru->schema, ru->table);
    json_t *o = json_object();
    json_object_set_new(o, "table", json_string(table));
    json_object_set_new(o, "op", json_string(pgf_op_name(ev->op)));
    json_t *key = json_object();
    if (ev->rel) {
        const struct pgf_relation *rel = ev->rel;
        for (uint16_t a = 0; a < rel->natts; a++)
            if (ev->key[a].kind != PGF_VALUE_ABSENT)
                json_object_set_new(key, rel->attrs[a].name, pgf_json_value(&ev->key[a], rel->attrs[a].type_oid));
    }
    json_object_set_new(o, "key", key);
    json_object_set(o, "keys", keys);
    json_object_set_new(o, "lsn", json_string(pgf_lsn_format(ev->lsn, lsn)));
    if (ev->txn)
        json_object_set_new(o, "xid", json_integer(ev->txn->xid));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (s == NULL)
        return -1;
    int rc = out->publish(out->ctx, ru->publish, s, strlen(s));
    free(s);
    return rc;
}

/* Reports a key and, when the rule publishes, remembers it for the message. */
static int emit_key(const struct rule *ru, const char *key, size_t len, json_t *keys, const struct pgf_inval_out *out)
{
    int seen = 0; /* the old and the new row often give the same key; list it once */
    for (size_t i = 0; keys && i < json_array_size(keys) && !seen; i++) {
        const json_t *k = json_array_get(keys, i);
        seen = json_string_length(k) == len && memcmp(json_string_value(k), key, len) == 0;
    }
    if (keys && !seen)
        json_array_append_new(keys, json_stringn(key, len));
    return out->key(out->ctx, ru->action, key, len);
}

/* The keys, table keys, generation and message of one rule for one row change or truncate. */
static int apply_rule(struct pgf_redis_rules *r, struct rule *ru, const struct pgf_event *ev,
                      const struct pgf_inval_out *out)
{
    json_t *keys = ru->publish ? json_array() : NULL;
    int rc = 0;
    if (ev->op == PGF_OP_TRUNCATE && ru->nkeys > 0 && ru->generation == PGF_GEN_NONE && !ru->noticed_truncate) {
        char text[1024];
        ru->noticed_truncate = 1;
        snprintf(text, sizeof text, "redis: TRUNCATE of %s.%s cannot name its rows' keys; their cached values stay "
                 "until they expire. Add table_keys or generation: lsn to the rule to cover truncates",
                 ru->schema, ru->table);
        notice(out, text);
    }
    if (ev->op != PGF_OP_TRUNCATE) {
        for (size_t k = 0; k < ru->nkeys && rc == 0; k++) {
            size_t len;
            int e;
            /* Old and new row: a changed slug invalidates both product:slug:old and :new. */
            if (ev->op != PGF_OP_INSERT && ev->op != PGF_OP_READ) {
                if ((e = expand(r, &ru->keys[k], ev, OLD_ROW, out, &len)) < 0)
                    rc = -1;
                else if (e > 0)
                    rc = emit_key(ru, r->buf, len, keys, out);
            }
            if (rc == 0 && ev->op != PGF_OP_DELETE) {
                if ((e = expand(r, &ru->keys[k], ev, NEW_ROW, out, &len)) < 0)
                    rc = -1;
                else if (e > 0)
                    rc = emit_key(ru, r->buf, len, keys, out);
            }
        }
    }
    for (size_t k = 0; k < ru->ntable_keys && rc == 0; k++) {
        const char *key;
        size_t len;
        rc = literal_key(r, ru->table_keys[k], strlen(ru->table_keys[k]), &key, &len);
        if (rc == 0)
            rc = emit_key(ru, key, len, keys, out);
    }
    if (rc == 0 && ru->generation != PGF_GEN_NONE) {
        const char *key;
        size_t len;
        rc = literal_key(r, ru->generation_key, strlen(ru->generation_key), &key, &len);
        if (rc == 0)
            rc = out->generation(out->ctx, ru->generation, key, len);
    }
    if (rc == 0 && ru->publish)
        rc = publish_change(ru, ev, keys, out);
    json_decref(keys);
    return rc;
}

/* Applies every rule of one relation (and the cachalot key) to a change. */
static int apply_relation(struct pgf_redis_rules *r, const struct pgf_relation *rel, const struct pgf_event *ev,
                          const struct pgf_inval_out *out)
{
    for (size_t i = 0; i < r->nrules; i++) {
        struct rule *ru = &r->rules[i];
        /* pgoutput sends "" for pg_catalog; user tables always carry their schema. */
        if (strcmp(ru->table, rel->relname) == 0 && strcmp(ru->schema, rel->nspname) == 0 &&
            apply_rule(r, ru, ev, out) != 0)
            return -1;
    }
    if (r->cachalot_alias && cachalot_key(r, rel->relname, out) != 0)
        return -1;
    return 0;
}

/* Splits an application's message into keys on whitespace. */
static int apply_message(struct pgf_redis_rules *r, const struct pgf_event_message *m,
                         const struct pgf_inval_out *out)
{
    if (strcmp(m->prefix, r->message_prefix) != 0)
        return 0;
    const char *p = m->content, *end = m->content + m->content_len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
            p++;
        const char *s = p;
        while (p < end && !(*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
            p++;
        if (p > s) {
            const char *key;
            size_t len;
            if (literal_key(r, s, (size_t)(p - s), &key, &len) != 0 || out->key(out->ctx, PGF_REDIS_DEL, key, len))
                return -1;
        }
    }
    return 0;
}

/* Dispatches one change; see redis_rules.h. */
int pgf_redis_rules_apply(struct pgf_redis_rules *r, const struct pgf_event *ev, const struct pgf_inval_out *out)
{
    switch (ev->op) {
    case PGF_OP_INSERT:
    case PGF_OP_UPDATE:
    case PGF_OP_DELETE:
        return apply_relation(r, ev->rel, ev, out);
    case PGF_OP_TRUNCATE:
        for (uint32_t i = 0; i < ev->truncate.nrels; i++)
            if (apply_relation(r, ev->truncate.rels[i], ev, out) != 0)
                return -1;
        return 0;
    case PGF_OP_MESSAGE:
        return apply_message(r, &ev->message, out);
    case PGF_OP_READ:
        /* A row read by a snapshot changed nothing, unless the caches may have missed changes. */
        return r->on_read_invalidate ? apply_relation(r, ev->rel, ev, out) : 0;
    default:
        return 0;
    }
}

/* Returns the count of keys skipped for a missing column. */
unsigned long pgf_redis_rules_unexpanded(const struct pgf_redis_rules *r)
{
    return r->unexpanded;
}
