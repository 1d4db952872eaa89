/* redis_rules.c - key templates compiled once, expanded per row image.  See redis_rules.h. */
#include "sinks/redis_rules.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/log.h"
#include "cdc/lsn.h"
#include "decoders/event.h"
#include "sinks/json_event.h"

enum filter { F_LOWER, F_UPPER, F_SHA1, F_MD5 };
static const char *const filter_names[] = {"lower", "upper", "sha1", "md5"};
#define MAX_FILTERS 4

/* A piece of a template: literal text, or a column placeholder with its filters. */
struct part {
    char *text; /* literal text, or the column name */
    size_t len;
    int is_col;
    int nfilters;
    enum filter filters[MAX_FILTERS];
};

struct tmpl {
    struct part *parts;
    size_t nparts;
    const char *source;
    int warned; /* a key could not be built once already; logged once */
};

struct rule {
    char *schema, *table;
    struct tmpl *keys;
    size_t nkeys;
    char **table_keys;
    size_t ntable_keys;
    enum pgf_redis_action action;
    char *publish;
    enum pgf_redis_generation generation;
    char *generation_key;
    int warned_truncate;
};

struct pgf_redis_rules {
    struct rule *rules;
    size_t nrules;
    int django;
    char *django_prefix; /* "KEY_PREFIX:VERSION:" */
    char *cachalot_alias;
    char *message_prefix;
    unsigned long unexpanded;
    /* Scratch for building one key; reused across calls. */
    char *buf, *tmp;
    size_t cap, tmpcap;
};

/* Writes an error for setting keypath, with its line in the config file when found. */
static void setting_error(char *err, size_t errlen, const char *cfgpath, const char *keypath, const char *fmt,
                          const char *a, const char *b)
{
    char what[512];
    snprintf(what, sizeof what, fmt, a, b);
    int line = cfgpath ? pgf_config_line_of(cfgpath, keypath) : 0;
    if (line > 0)
        snprintf(err, errlen, "config file %s, line %d (%s): %s", cfgpath, line, keypath, what);
    else
        snprintf(err, errlen, "config setting %s: %s", keypath, what);
}

/* Compiles "user:{id}" or "{email|lower|sha1}" into parts; returns 0, or -1 with err set. */
static int compile_tmpl(struct tmpl *t, const char *src, const char *cfgpath, const char *keypath, char *err,
                        size_t errlen)
{
    t->source = src;
    size_t cap = 4;
    t->parts = calloc(cap, sizeof *t->parts);
    if (t->parts == NULL)
        return -1;
    for (const char *p = src; *p;) {
        if (t->nparts == cap) {
            struct part *n = realloc(t->parts, cap * 2 * sizeof *n);
            if (n == NULL)
                return -1;
            t->parts = n;
            memset(t->parts + cap, 0, cap * sizeof *n);
            cap *= 2;
        }
        struct part *pt = &t->parts[t->nparts];
        if (p[0] == '{' && p[1] == '{') { /* "{{" is a literal brace */
            pt->text = strdup("{");
            pt->len = 1;
            p += 2;
        } else if (p[0] == '}' && p[1] == '}') {
            pt->text = strdup("}");
            pt->len = 1;
            p += 2;
        } else if (*p == '{') {
            const char *close = strchr(p, '}');
            if (close == NULL) {
                setting_error(err, errlen, cfgpath, keypath, "template '%s' has a '{' without a '}'%s", src, "");
                return -1;
            }
            char inner[256];
            snprintf(inner, sizeof inner, "%.*s", (int)(close - p - 1), p + 1);
            /* Every '|'-separated part must be non-empty: "{|lower}" and "{a||lower}" are typos. */
            size_t ilen = strlen(inner);
            if (ilen == 0 || inner[0] == '|' || inner[ilen - 1] == '|' || strstr(inner, "||")) {
                setting_error(err, errlen, cfgpath, keypath,
                              "template '%s' has an empty placeholder, column or filter; write {column} or "
                              "{column|filter}%s", src, "");
                return -1;
            }
            char *save = NULL, *name = strtok_r(inner, "|", &save);
            pt->is_col = 1;
            pt->text = strdup(name);
            pt->len = strlen(name);
            if (pt->text == NULL)
                return -1;
            t->nparts++; /* counted now, so free_tmpl releases it if a filter is bad */
            for (char *f = strtok_r(NULL, "|", &save); f; f = strtok_r(NULL, "|", &save)) {
                int found = -1;
                for (int i = 0; i < (int)(sizeof filter_names / sizeof *filter_names); i++)
                    if (strcmp(f, filter_names[i]) == 0)
                        found = i;
                if (found < 0 || pt->nfilters == MAX_FILTERS) {
                    setting_error(err, errlen, cfgpath, keypath,
                                  found < 0 ? "unknown filter '%s' in template '%s'; allowed: lower, upper, sha1, md5"
                                            : "too many filters at '%s' in template '%s' (at most 4)",
                                  f, src);
                    return -1;
                }
                pt->filters[pt->nfilters++] = (enum filter)found;
            }
            p = close + 1;
            continue;
        } else {
            size_t n = strcspn(p, "{}");
            if (n == 0) { /* a lone '}' */
                setting_error(err, errlen, cfgpath, keypath, "template '%s' has a '}' without a '{'%s", src, "");
                return -1;
            }
            pt->text = strndup(p, n);
            pt->len = n;
            p += n;
        }
        if (pt->text == NULL)
            return -1;
        t->nparts++;
    }
    return 0;
}

/* Frees a template's parts. */
static void free_tmpl(struct tmpl *t)
{
    for (size_t i = 0; i < t->nparts; i++)
        free(t->parts[i].text);
    free(t->parts);
}

/* Frees everything; see redis_rules.h. */
void pgf_redis_rules_free(struct pgf_redis_rules *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->nrules; i++) {
        struct rule *ru = &r->rules[i];
        for (size_t k = 0; k < ru->nkeys; k++)
            free_tmpl(&ru->keys[k]);
        free(ru->keys);
        for (size_t k = 0; k < ru->ntable_keys; k++)
            free(ru->table_keys[k]);
        free(ru->table_keys);
        free(ru->schema);
        free(ru->table);
        free(ru->publish);
        free(ru->generation_key);
    }
    free(r->rules);
    free(r->django_prefix);
    free(r->cachalot_alias);
    free(r->message_prefix);
    free(r->buf);
    free(r->tmp);
    free(r);
}

/* Splits "schema.table" (or "table", meaning public) into freshly allocated parts. */
static int split_table(const char *name, char **schema, char **table)
{
    const char *dot = strchr(name, '.');
    *schema = dot ? strndup(name, (size_t)(dot - name)) : strdup("public");
    *table = strdup(dot ? dot + 1 : name);
    return *schema && *table ? 0 : -1;
}

/* Compiles one rule; returns 0, or -1 with err set. */
static int compile_rule(struct rule *ru, const struct pgf_redis_rule_cfg *c, size_t index, const char *cfgpath,
                        char *err, size_t errlen)
{
    char keypath[128];
    if (split_table(c->table, &ru->schema, &ru->table) != 0)
        goto oom;
    if (ru->table[0] == '\0' || ru->schema[0] == '\0' || strchr(ru->table, '.')) {
        snprintf(keypath, sizeof keypath, "redis.rules[%zu].table", index);
        setting_error(err, errlen, cfgpath, keypath, "'%s' is not a table name; write schema.table or table%s",
                      c->table, "");
        return -1;
    }
    ru->action = (enum pgf_redis_action)c->action;
    ru->generation = (enum pgf_redis_generation)c->generation;
    ru->keys = calloc(c->keys_count + 1, sizeof *ru->keys);
    ru->table_keys = calloc(c->table_keys_count + 1, sizeof *ru->table_keys);
    if (ru->keys == NULL || ru->table_keys == NULL)
        goto oom;
    for (unsigned k = 0; k < c->keys_count; k++) {
        snprintf(keypath, sizeof keypath, "redis.rules[%zu].keys[%u]", index, k);
        ru->nkeys++;
        if (compile_tmpl(&ru->keys[k], c->keys[k], cfgpath, keypath, err, errlen) != 0)
            return -1;
        if (ru->keys[k].nparts == 0) {
            setting_error(err, errlen, cfgpath, keypath, "an empty key template%s%s", "", "");
            return -1;
        }
    }
    for (unsigned k = 0; k < c->table_keys_count; k++) {
        snprintf(keypath, sizeof keypath, "redis.rules[%zu].table_keys[%u]", index, k);
        if (c->table_keys[k][0] == '\0' || strchr(c->table_keys[k], '{')) {
            setting_error(err, errlen, cfgpath, keypath,
                          "table key '%s' must be a non-empty literal key (no {placeholders})%s", c->table_keys[k],
                          "");
            return -1;
        }
        if ((ru->table_keys[ru->ntable_keys++] = strdup(c->table_keys[k])) == NULL)
            goto oom;
    }
    if (c->publish && (ru->publish = strdup(c->publish)) == NULL)
        goto oom;
    char gen[512];
    snprintf(gen, sizeof gen, "pgfanout:gen:%s.%s", ru->schema, ru->table);
    if ((ru->generation_key = strdup(c->generation_key ? c->generation_key : gen)) == NULL)
        goto oom;
    if (ru->nkeys == 0 && ru->ntable_keys == 0 && !ru->publish && ru->generation == PGF_GEN_NONE) {
        snprintf(keypath, sizeof keypath, "redis.rules[%zu]", index);
        setting_error(err, errlen, cfgpath, keypath,
                      "the rule for %s does nothing; give it keys, table_keys, publish or generation%s", c->table,
                      "");
        return -1;
    }
    return 0;
oom:
    snprintf(err, errlen, "out of memory compiling redis rules");
    return -1;
}

/* Compiles the configuration; see redis_rules.h. */
struct pgf_redis_rules *pgf_redis_rules_new(const struct pgf_redis_cfg *cfg, const char *cfgpath, char *err,
                                            size_t errlen)
{
    struct pgf_redis_rules *r = calloc(1, sizeof *r);
    if (r == NULL || (r->rules = calloc(cfg->rules_count + 1, sizeof *r->rules)) == NULL) {
        free(r);
        snprintf(err, errlen, "out of memory compiling redis rules");
        return NULL;
    }
    for (unsigned i = 0; i < cfg->rules_count; i++) {
        r->nrules++;
        if (compile_rule(&r->rules[i], &cfg->rules[i], i, cfgpath, err, errlen) != 0) {
            pgf_redis_rules_free(r);
            return NULL;
        }
    }
    if (cfg->django) {
        char pfx[512];
        /* Django's VERSION defaults to 1; any integer it accepts, 0 and negatives too, is kept. */
        snprintf(pfx, sizeof pfx, "%s:%d:", cfg->django->key_prefix ? cfg->django->key_prefix : "",
                 cfg->django->version ? *cfg->django->version : 1);
        r->django = 1;
        r->django_prefix = strdup(pfx);
    }
    if (cfg->cachalot)
        r->cachalot_alias = strdup(cfg->cachalot->db_alias ? cfg->cachalot->db_alias : "default");
    r->message_prefix = strdup(cfg->message_prefix ? cfg->message_prefix : "pgfanout.invalidate");
    if ((r->django && !r->django_prefix) || (cfg->cachalot && !r->cachalot_alias) || !r->message_prefix) {
        pgf_redis_rules_free(r);
        snprintf(err, errlen, "out of memory compiling redis rules");
        return NULL;
    }
    return r;
}

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

/* Expands a template for one image into r->buf.  Returns 1 with *len set, 0 when the key
 * does not exist (a NULL column) or cannot be built (a column not sent), -1 when out of
 * memory. */
static int expand(struct pgf_redis_rules *r, struct tmpl *t, const struct pgf_event *ev, enum image img,
                  size_t *len)
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
            if (!t->warned) {
                t->warned = 1;
                pgf_warn("redis: cannot build key '%s' for the %s row of a %s on %s.%s: column %s was not sent "
                         "(see the replica identity warning at startup); counting such keys as unexpanded",
                         t->source, img == OLD_ROW ? "old" : "new", pgf_op_name(ev->op),
                         ev->rel->nspname, ev->rel->relname, pt->text);
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
    if (ev->op == PGF_OP_TRUNCATE && ru->nkeys > 0 && ru->generation == PGF_GEN_NONE && !ru->warned_truncate) {
        ru->warned_truncate = 1;
        pgf_warn("redis: TRUNCATE of %s.%s cannot name its rows' keys; their cached values stay until they "
                 "expire. Add table_keys or generation: lsn to the rule to cover truncates",
                 ru->schema, ru->table);
    }
    if (ev->op != PGF_OP_TRUNCATE) {
        for (size_t k = 0; k < ru->nkeys && rc == 0; k++) {
            size_t len;
            int e;
            /* Old and new row: a changed slug invalidates both product:slug:old and :new. */
            if (ev->op != PGF_OP_INSERT) {
                if ((e = expand(r, &ru->keys[k], ev, OLD_ROW, &len)) < 0)
                    rc = -1;
                else if (e > 0)
                    rc = emit_key(ru, r->buf, len, keys, out);
            }
            if (rc == 0 && ev->op != PGF_OP_DELETE) {
                if ((e = expand(r, &ru->keys[k], ev, NEW_ROW, &len)) < 0)
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
    default:
        return 0; /* a snapshot's read changes nothing */
    }
}

/* Returns the rule count. */
size_t pgf_redis_rules_count(const struct pgf_redis_rules *r)
{
    return r->nrules;
}

/* Returns rule i's table. */
void pgf_redis_rule_table(const struct pgf_redis_rules *r, size_t i, const char **schema, const char **table)
{
    *schema = r->rules[i].schema;
    *table = r->rules[i].table;
}

/* Lists, once each, the template columns of rule ru that are not among cols (and, when
 * within is given, are among within); returns the length written to out. */
static size_t columns_not_in(const struct rule *ru, const char *const *cols, size_t ncols,
                             const char *const *within, size_t nwithin, char *out, size_t room)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t k = 0; k < ru->nkeys; k++)
        for (size_t p = 0; p < ru->keys[k].nparts; p++) {
            const struct part *pt = &ru->keys[k].parts[p];
            if (!pt->is_col)
                continue;
            int skip = 0;
            for (size_t c = 0; c < ncols && !skip; c++)
                skip = strcmp(cols[c], pt->text) == 0;
            if (within && !skip) {
                int in = 0;
                for (size_t c = 0; c < nwithin && !in; c++)
                    in = strcmp(within[c], pt->text) == 0;
                skip = !in;
            }
            for (size_t k2 = 0; k2 <= k && !skip; k2++) /* listed already */
                for (size_t p2 = 0; p2 < (k2 == k ? p : ru->keys[k2].nparts) && !skip; p2++)
                    skip = ru->keys[k2].parts[p2].is_col && strcmp(ru->keys[k2].parts[p2].text, pt->text) == 0;
            if (!skip && n < room)
                n += (size_t)snprintf(out + n, room - n, "%s%s", n ? ", " : "", pt->text);
        }
    return n;
}

/* Names template columns the table does not have; see redis_rules.h. */
int pgf_redis_rule_unknown_column(const struct pgf_redis_rules *r, size_t i, const char *const *cols, size_t ncols,
                                  char *msg, size_t msglen)
{
    const struct rule *ru = &r->rules[i];
    char missing[512];
    if (columns_not_in(ru, cols, ncols, NULL, 0, missing, sizeof missing) == 0)
        return 0;
    snprintf(msg, msglen, "redis: the key templates of %s.%s name %s, which the table does not have; those keys "
             "are never built. Check redis.rules", ru->schema, ru->table, missing);
    return 1;
}

/* Lists the template columns the old key does not carry; see redis_rules.h. */
int pgf_redis_rule_identity_warning(const struct pgf_redis_rules *r, size_t i, char replident,
                                    const char *const *keycols, size_t nkeycols, const char *const *allcols,
                                    size_t nallcols, char *msg, size_t msglen)
{
    const struct rule *ru = &r->rules[i];
    char missing[512];
    if (replident == 'f' ||
        columns_not_in(ru, keycols, nkeycols, allcols, nallcols, missing, sizeof missing) == 0)
        return 0;
    snprintf(msg, msglen,
             "redis: the key templates of %s.%s use %s, which its replica identity (%s) does not send for "
             "updates and deletes, so the old row's keys cannot be built and stay cached. Fix: ALTER TABLE "
             "%s.%s REPLICA IDENTITY FULL",
             ru->schema, ru->table, missing,
             replident == 'n' ? "NOTHING" : replident == 'i' ? "USING INDEX" : "DEFAULT, the primary key",
             ru->schema, ru->table);
    return 1;
}

/* Returns the count of keys skipped for a missing column. */
unsigned long pgf_redis_rules_unexpanded(const struct pgf_redis_rules *r)
{
    return r->unexpanded;
}
