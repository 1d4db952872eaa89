/* redis_rules_compile.c - the half of the rules that faces the config: turns the redis section
 * into compiled templates, with errors that point at the setting (and its line, which is why it
 * may read the config file), and checks them against the catalog at startup.  See redis_rules.h. */
#include "sinks/redis_rules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sinks/redis_rules_compiled.h"

static const char *const filter_names[] = {"lower", "upper", "sha1", "md5"};

/* Writes an error for setting keypath, with its line in the config file when found. */
static void setting_error(char *err, size_t errlen, const struct pgf_setting_locator *cfgpath, const char *keypath,
                          const char *fmt, const char *a, const char *b)
{
    char what[512];
    snprintf(what, sizeof what, fmt, a, b);
    int line = cfgpath && cfgpath->line_of ? cfgpath->line_of(cfgpath->path, keypath) : 0;
    if (line > 0)
        snprintf(err, errlen, "config file %s, line %d (%s): %s", cfgpath->path, line, keypath, what);
    else
        snprintf(err, errlen, "config setting %s: %s", keypath, what);
}

/* Compiles "user:{id}" or "{email|lower|sha1}" into parts; returns 0, or -1 with err set. */
static int compile_tmpl(struct tmpl *t, const char *src, const struct pgf_setting_locator *cfgpath, const char *keypath, char *err,
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
static int compile_rule(struct rule *ru, const struct pgf_redis_rule_cfg *c, size_t index, const struct pgf_setting_locator *cfgpath,
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
struct pgf_redis_rules *pgf_redis_rules_new(const struct pgf_redis_cfg *cfg, const struct pgf_setting_locator *cfgpath, char *err,
                                            size_t errlen)
{
    struct pgf_redis_rules *r = calloc(1, sizeof *r);
    if (r == NULL || (r->rules = calloc(cfg->rules_count + 1, sizeof *r->rules)) == NULL) {
        free(r);
        snprintf(err, errlen, "out of memory compiling redis rules");
        return NULL;
    }
    r->on_read_invalidate = cfg->on_read && strcmp(cfg->on_read, "invalidate") == 0;
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
