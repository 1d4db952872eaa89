/* config.c - the YAML configuration file: libcyaml loads it against a schema built from the
 * settings table; libyaml finds the line of each key; each value is parsed by the table's
 * rules as it is loaded, so a bad file is an error whatever overrides it. */
#include "cdc/config.h"

#include <cyaml/cyaml.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "cdc/options.h"
#include "cdc/settings.h"

static const cyaml_strval_t action_strings[] = {{"del", PGF_REDIS_DEL}, {"unlink", PGF_REDIS_UNLINK}};
static const cyaml_strval_t generation_strings[] = {
    {"none", PGF_GEN_NONE}, {"lsn", PGF_GEN_LSN}, {"incr", PGF_GEN_INCR}};

static const cyaml_schema_value_t string_entry = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 0, CYAML_UNLIMITED),
};

#define OPT_PTR (CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL)

static const cyaml_schema_field_t rule_fields[] = {
    CYAML_FIELD_STRING_PTR("table", CYAML_FLAG_POINTER, struct pgf_redis_rule_cfg, table, 1, CYAML_UNLIMITED),
    CYAML_FIELD_SEQUENCE("keys", OPT_PTR, struct pgf_redis_rule_cfg, keys, &string_entry, 0, CYAML_UNLIMITED),
    CYAML_FIELD_SEQUENCE("table_keys", OPT_PTR, struct pgf_redis_rule_cfg, table_keys, &string_entry, 0,
                         CYAML_UNLIMITED),
    CYAML_FIELD_ENUM("action", CYAML_FLAG_OPTIONAL | CYAML_FLAG_STRICT, struct pgf_redis_rule_cfg, action,
                     action_strings, CYAML_ARRAY_LEN(action_strings)),
    CYAML_FIELD_STRING_PTR("publish", OPT_PTR, struct pgf_redis_rule_cfg, publish, 1, CYAML_UNLIMITED),
    CYAML_FIELD_ENUM("generation", CYAML_FLAG_OPTIONAL | CYAML_FLAG_STRICT, struct pgf_redis_rule_cfg,
                     generation, generation_strings, CYAML_ARRAY_LEN(generation_strings)),
    CYAML_FIELD_STRING_PTR("generation_key", OPT_PTR, struct pgf_redis_rule_cfg, generation_key, 1,
                           CYAML_UNLIMITED),
    CYAML_FIELD_END,
};

static const cyaml_schema_value_t rule_entry = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, struct pgf_redis_rule_cfg, rule_fields),
};

static const cyaml_schema_field_t django_fields[] = {
    CYAML_FIELD_STRING_PTR("key_prefix", OPT_PTR, struct pgf_django_cfg, key_prefix, 0, CYAML_UNLIMITED),
    CYAML_FIELD_INT_PTR("version", OPT_PTR, struct pgf_django_cfg, version),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t cachalot_fields[] = {
    CYAML_FIELD_STRING_PTR("db_alias", OPT_PTR, struct pgf_cachalot_cfg, db_alias, 1, CYAML_UNLIMITED),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t cacheops_fields[] = {
    CYAML_FIELD_STRING_PTR("prefix", OPT_PTR, struct pgf_cacheops_cfg, prefix, 0, CYAML_UNLIMITED),
    CYAML_FIELD_BOOL("insideout", CYAML_FLAG_OPTIONAL, struct pgf_cacheops_cfg, insideout),
    CYAML_FIELD_BOOL_PTR("decimal_variants", OPT_PTR, struct pgf_cacheops_cfg, decimal_variants),
    CYAML_FIELD_END,
};

#define MAX_SECTIONS 16

/* What libcyaml loads for the file's root and for each of its sections: each setting's text
 * (or list) by its row in the settings table, and the redis section's structured parts. */
struct pgf_file_node {
    char *text[PGF_MAX_SETTINGS];
    struct {
        char **item;
        unsigned item_count;
    } list[PGF_MAX_SETTINGS];
    struct pgf_file_node *section[MAX_SECTIONS];
    struct pgf_django_cfg *django;
    struct pgf_cachalot_cfg *cachalot;
    struct pgf_cacheops_cfg *cacheops;
    struct pgf_redis_rule_cfg *rules;
    unsigned rules_count;
};

/* The schemas of the settings whose values are structures (PGF_T_PRESET, PGF_T_RULES), by key. */
static const cyaml_schema_field_t structured_fields[] = {
    CYAML_FIELD_MAPPING_PTR("django", OPT_PTR, struct pgf_file_node, django, django_fields),
    CYAML_FIELD_MAPPING_PTR("cachalot", OPT_PTR, struct pgf_file_node, cachalot, cachalot_fields),
    CYAML_FIELD_MAPPING_PTR("cacheops", OPT_PTR, struct pgf_file_node, cacheops, cacheops_fields),
    CYAML_FIELD_SEQUENCE("rules", OPT_PTR, struct pgf_file_node, rules, &rule_entry, 0, CYAML_UNLIMITED),
};

/* Templates of the generated fields: a setting's text, a list of texts, a section. */
static const cyaml_schema_field_t text_field =
    CYAML_FIELD_STRING_PTR("", OPT_PTR, struct pgf_file_node, text[0], 0, CYAML_UNLIMITED);
static const cyaml_schema_field_t list_field =
    CYAML_FIELD_SEQUENCE("", OPT_PTR, struct pgf_file_node, list[0].item, &string_entry, 0, CYAML_UNLIMITED);
static const cyaml_schema_field_t section_field =
    CYAML_FIELD_MAPPING_PTR("", OPT_PTR, struct pgf_file_node, section[0], NULL);

/* The schema generated from the settings table by build_schema(). */
static struct {
    int built;
    size_t nsections;
    char name[MAX_SECTIONS][32];
    cyaml_schema_field_t fields[MAX_SECTIONS][PGF_MAX_SETTINGS + 1];
    size_t nfields[MAX_SECTIONS];
    cyaml_schema_field_t root[PGF_MAX_SETTINGS + MAX_SECTIONS + 1];
    size_t nroot;
    int section_of[PGF_MAX_SETTINGS]; /* a row's section, or -1 at the top level */
} gen;

static const cyaml_schema_value_t top_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, struct pgf_file_node, gen.root),
};

/* Returns the field that loads setting row s, under its last key part. */
static cyaml_schema_field_t field_for(size_t row, const char *key)
{
    const struct pgf_setting *s = &pgf_settings[row];
    cyaml_schema_field_t f = text_field;
    if (s->type == PGF_T_SINKS || s->type == PGF_T_CONF) {
        size_t step = sizeof((struct pgf_file_node *)NULL)->list[0];
        f = list_field;
        f.data_offset += (uint32_t)(row * step);
        f.count_offset += (uint32_t)(row * step);
    } else if (s->type == PGF_T_PRESET || s->type == PGF_T_RULES) {
        for (size_t i = 0; i < CYAML_ARRAY_LEN(structured_fields); i++)
            if (strcmp(structured_fields[i].key, key) == 0)
                f = structured_fields[i];
    } else {
        f.data_offset += (uint32_t)(row * sizeof(char *));
    }
    f.key = key;
    return f;
}

/* Builds the schema from the settings table, once: a section for each first key part, in the
 * table's order, holding its settings' fields. */
static void build_schema(void)
{
    if (gen.built)
        return;
    gen.built = 1;
    for (size_t row = 0; row < pgf_nsettings; row++) {
        const struct pgf_setting *s = &pgf_settings[row];
        gen.section_of[row] = -1;
        if (s->flags & PGF_S_NOFILE)
            continue;
        const char *dot = strchr(s->key, '.');
        if (dot == NULL) {
            gen.root[gen.nroot++] = field_for(row, s->key);
            continue;
        }
        size_t sec = 0, len = (size_t)(dot - s->key);
        while (sec < gen.nsections && !(strlen(gen.name[sec]) == len && strncmp(gen.name[sec], s->key, len) == 0))
            sec++;
        if (sec == MAX_SECTIONS) /* raise MAX_SECTIONS: unit.settings fails, the key being unknown */
            continue;
        if (sec == gen.nsections) {
            snprintf(gen.name[sec], sizeof gen.name[sec], "%.*s", (int)(dot - s->key), s->key);
            cyaml_schema_field_t f = section_field;
            f.key = gen.name[sec];
            f.data_offset += (uint32_t)(sec * sizeof(struct pgf_file_node *));
            f.value.mapping.fields = gen.fields[sec];
            gen.root[gen.nroot++] = f;
            gen.nsections++;
        }
        gen.section_of[row] = (int)sec;
        gen.fields[sec][gen.nfields[sec]++] = field_for(row, dot + 1);
    }
}

/* libcyaml's messages for one load, kept to build one error of our own. */
struct cy_log {
    char text[2048];
    size_t len;
};

/* Collects libcyaml's log lines instead of printing them. */
static void cy_log_fn(cyaml_log_t level, void *ctx, const char *fmt, va_list ap)
{
    (void)level;
    struct cy_log *log = ctx;
    if (log->len < sizeof log->text) {
        int n = vsnprintf(log->text + log->len, sizeof log->text - log->len, fmt, ap);
        if (n > 0)
            log->len += (size_t)n;
        if (log->len >= sizeof log->text)
            log->len = sizeof log->text - 1;
    }
}

/* Builds a dotted key path ("redis.rules[0].actoin") from libcyaml's backtrace, innermost
 * frame first in the log, plus the key named in the message for an unknown key. */
static void path_from_backtrace(const char *log, const char *unknown_key, char *out, size_t room)
{
    const char *frames[16];
    size_t nframes = 0;
    for (const char *p = log; (p = strstr(p, "  in ")) != NULL && nframes < 16; p += 5)
        frames[nframes++] = p + 5;
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = nframes; i-- > 0;) {
        const char *q1 = strchr(frames[i], '\''), *q2 = q1 ? strchr(q1 + 1, '\'') : NULL;
        const char *eol = strchr(frames[i], '\n');
        if (!q1 || !q2 || (eol && q1 > eol))
            continue;
        int len = (int)(q2 - q1 - 1);
        if (strncmp(frames[i], "sequence entry", 14) == 0)
            n += (size_t)snprintf(out + n, room > n ? room - n : 0, "[%d]", atoi(q1 + 1) - 1); /* 1-based */
        else
            n += (size_t)snprintf(out + n, room > n ? room - n : 0, "%s%.*s", n ? "." : "", len, q1 + 1);
    }
    if (unknown_key)
        snprintf(out + n, room > n ? room - n : 0, "%s%s", n ? "." : "", unknown_key);
}

/* Finds the schema value at a dotted path, or NULL; *field gets the last field's entry. */
static const cyaml_schema_value_t *schema_at(const char *path, const cyaml_schema_field_t **field)
{
    const cyaml_schema_value_t *v = &top_schema;
    *field = NULL;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *tok = strtok(buf, "."); tok; tok = strtok(NULL, ".")) {
        char *bracket = strchr(tok, '[');
        if (bracket)
            *bracket = '\0';
        if (v->type != CYAML_MAPPING)
            return NULL;
        const cyaml_schema_field_t *f = v->mapping.fields;
        while (f->key && strcmp(f->key, tok) != 0)
            f++;
        if (!f->key)
            return NULL;
        *field = f;
        v = &f->value;
        if (bracket && v->type == CYAML_SEQUENCE)
            v = v->sequence.entry;
    }
    return v;
}

/* Appends "allowed: ..." for the value at path: a mapping's keys or an enum's words. */
static void describe_allowed(const char *path, int want_keys, char *out, size_t room)
{
    char parent[256];
    snprintf(parent, sizeof parent, "%s", path);
    if (want_keys) {
        char *dot = strrchr(parent, '.');
        if (dot)
            *dot = '\0';
        else
            parent[0] = '\0';
    }
    const cyaml_schema_field_t *f;
    const cyaml_schema_value_t *v = parent[0] ? schema_at(parent, &f) : &top_schema;
    size_t n = 0;
    out[0] = '\0';
    if (v && want_keys && v->type == CYAML_MAPPING) {
        n += (size_t)snprintf(out, room, "; allowed keys here: ");
        for (f = v->mapping.fields; f->key && n < room; f++)
            n += (size_t)snprintf(out + n, room - n, "%s%s", f == v->mapping.fields ? "" : ", ", f->key);
    } else if (v && v->type == CYAML_ENUM) {
        n += (size_t)snprintf(out, room, "; allowed values: ");
        for (uint32_t i = 0; i < v->enumeration.count && n < room; i++)
            n += (size_t)snprintf(out + n, room - n, "%s%s", i ? ", " : "", v->enumeration.strings[i].str);
    } else if (v && (v->type == CYAML_UINT || v->type == CYAML_INT)) {
        snprintf(out, room, "; allowed values: %s integers", v->type == CYAML_UINT ? "non-negative" : "whole");
    }
}

/* Turns libcyaml's log of a failed load into one error naming file, line, key and what is
 * allowed. */
static void load_error(const char *file, cyaml_err_t rc, const char *log, char *err, size_t errlen)
{
    const char *msg = strstr(log, "Load: ");
    char what[256] = "";
    if (msg) {
        const char *eol = strchr(msg, '\n');
        snprintf(what, sizeof what, "%.*s", (int)(eol ? eol - msg - 6 : (long)strlen(msg + 6)), msg + 6);
    } else {
        snprintf(what, sizeof what, "%s", cyaml_strerror(rc));
    }
    char unknown[128] = "";
    if (sscanf(what, "Unexpected key: %127s", unknown) != 1)
        unknown[0] = '\0';
    char path[256];
    path_from_backtrace(log, unknown[0] ? unknown : NULL, path, sizeof path);
    if (strstr(what, "Expecting MAPPING")) {
        /* "stdout:" with every key commented out is YAML null, not an empty mapping. */
        char allowed[512], probe[300];
        snprintf(probe, sizeof probe, "%s.x", path);
        describe_allowed(probe, 1, allowed, sizeof allowed);
        int line = path[0] ? pgf_config_line_of(file, path) : 0;
        snprintf(err, errlen, "config file %s, line %d (%s): a section with no keys; remove it, or give it "
                              "keys%s", file, line, path, allowed);
        return;
    }
    int line = path[0] ? pgf_config_line_of(file, path) : 0;
    if (line == 0) {
        const char *l = strstr(log, "(line: ");
        line = l ? atoi(l + 7) : 0;
    }
    char allowed[512];
    describe_allowed(path, unknown[0] != '\0', allowed, sizeof allowed);
    if (unknown[0])
        snprintf(what, sizeof what, "unknown key '%s'", unknown);
    snprintf(err, errlen, "config file %s, line %d%s%s%s: %s%s", file, line, path[0] ? " (" : "", path,
             path[0] ? ")" : "", what, allowed);
}

static const cyaml_config_t base_config = {
    .log_fn = cy_log_fn,
    .mem_fn = cyaml_mem,
    .log_level = CYAML_LOG_WARNING,
    .flags = CYAML_CFG_NO_ALIAS,
};

/* One open mapping or sequence in walk_keys. */
struct yframe {
    int is_seq;
    int index;      /* next sequence entry */
    int want_key;   /* mapping: the next scalar is a key */
    size_t base;    /* path length of the collection itself */
};

/* Calls visit with the dotted path ("redis.rules[2].keys[0]") and 1-based line of every key
 * and sequence item in file, in order, until visit returns non-zero; uses libyaml's event
 * parser.  Returns what visit last returned, or 0. */
static int walk_keys(const char *file, int (*visit)(const char *path, int line, void *ctx), void *ctx)
{
    FILE *f = fopen(file, "r");
    if (f == NULL)
        return 0;
    yaml_parser_t parser;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    struct yframe stack[32];
    int depth = 0, stop = 0, done = 0;
    char path[512] = "";
    while (!done && !stop) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev))
            break;
        struct yframe *top = depth > 0 ? &stack[depth - 1] : NULL;
        int starts = ev.type == YAML_MAPPING_START_EVENT || ev.type == YAML_SEQUENCE_START_EVENT;
        int is_node = starts || ev.type == YAML_SCALAR_EVENT || ev.type == YAML_ALIAS_EVENT;
        int line = (int)ev.start_mark.line + 1;
        if (is_node && top && !top->is_seq && top->want_key && ev.type == YAML_SCALAR_EVENT) {
            snprintf(path + top->base, sizeof path - top->base, "%s%s", top->base ? "." : "",
                     (const char *)ev.data.scalar.value);
            top->want_key = 0;
            stop = visit(path, line, ctx);
        } else if (is_node) {
            if (top && top->is_seq) {
                snprintf(path + top->base, sizeof path - top->base, "[%d]", top->index++);
                stop = visit(path, line, ctx);
            }
            if (starts && depth < 32) {
                stack[depth++] = (struct yframe){.is_seq = ev.type == YAML_SEQUENCE_START_EVENT, .want_key = 1,
                                                 .base = strlen(path)};
            } else if (top) { /* a scalar value ends its mapping entry or sequence item */
                top->want_key = 1;
                path[top->base] = '\0';
            }
        } else if (ev.type == YAML_MAPPING_END_EVENT || ev.type == YAML_SEQUENCE_END_EVENT) {
            if (depth > 0)
                depth--;
            if (depth > 0) {
                stack[depth - 1].want_key = 1;
                path[stack[depth - 1].base] = '\0';
            }
        } else if (ev.type == YAML_STREAM_END_EVENT) {
            done = 1;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    fclose(f);
    return stop;
}

/* The lines of the settings' keys and of their list items, by table row. */
struct lines {
    int key[PGF_MAX_SETTINGS];
    int item[PGF_MAX_SETTINGS][PGF_MAX_CONF];
};

/* walk_keys visitor: records the line of a setting's key ("kafka.conf") or list item
 * ("kafka.conf[1]"); deeper paths belong to the structured parts and are skipped. */
static int record_line(const char *path, int line, void *ctx)
{
    struct lines *l = ctx;
    const char *bracket = strchr(path, '[');
    char key[256];
    snprintf(key, sizeof key, "%.*s", bracket ? (int)(bracket - path) : (int)strlen(path), path);
    int row = pgf_setting_find(key);
    if (row < 0 || (bracket && strchr(bracket, '.')))
        return 0;
    long index = bracket ? strtol(bracket + 1, NULL, 10) : -1;
    if (index < 0)
        l->key[row] = line;
    else if (index < PGF_MAX_CONF)
        l->item[row][index] = line;
    return 0;
}

/* True for the texts YAML reads as null, which leave a setting unset. */
static int is_null(const char *text)
{
    return strcmp(text, "null") == 0 || strcmp(text, "~") == 0 || strcmp(text, "Null") == 0 ||
           strcmp(text, "NULL") == 0;
}

/* Parses the file's value of one setting into c->values and records its origin.  Returns 0,
 * or -1 with err naming the file, line, key and what is allowed. */
static int load_setting(struct pgf_config *c, const struct pgf_file_node *node, size_t row,
                        const struct lines *lines, char *err, size_t errlen)
{
    const struct pgf_setting *s = &pgf_settings[row];
    struct pgf_options *v = c->values;
    struct pgf_origin o = {.layer = PGF_FROM_FILE, .file = c->path, .line = lines->key[row]};
    char why[256];
    switch (s->type) {
    case PGF_T_CONF:
        for (unsigned k = 0; k < node->list[row].item_count; k++) {
            o.line = k < PGF_MAX_CONF ? lines->item[row][k] : 0;
            if (pgf_setting_parse(s, node->list[row].item[k], v, why, sizeof why) != 0) {
                pgf_setting_error(s, (int)k, node->list[row].item[k], &o, why, err, errlen);
                return -1;
            }
            v->kafka_conf.origin[v->kafka_conf.n - 1] = o;
        }
        return 0;
    case PGF_T_SINKS: {
        /* "sinks: []" loads as no list at all; only its line says it was written. */
        if (node->list[row].item_count == 0 && o.line == 0)
            return 0;
        char text[256] = "";
        size_t n = 0;
        for (unsigned k = 0; k < node->list[row].item_count && n < sizeof text; k++)
            n += (size_t)snprintf(text + n, sizeof text - n, "%s%s", k ? "," : "", node->list[row].item[k]);
        if (n == 0) {
            pgf_setting_error(s, -1, "[]", &o, "name at least one of stdout, kafka, redis, null", err, errlen);
            return -1;
        }
        if (pgf_setting_parse(s, text, v, why, sizeof why) != 0) {
            pgf_setting_error(s, -1, text, &o, why, err, errlen);
            return -1;
        }
        break;
    }
    case PGF_T_PRESET:
    case PGF_T_RULES: {
        /* libcyaml loaded and checked it; present even as "rules: []". */
        if (o.line == 0)
            return 0;
        const cyaml_schema_field_t f = field_for(row, strrchr(s->key, '.') ? strrchr(s->key, '.') + 1 : s->key);
        memcpy((char *)v + s->off, (const char *)node + f.data_offset, sizeof(void *));
        if (s->type == PGF_T_RULES)
            v->redis.rules_count = node->rules_count;
        break;
    }
    default: {
        const char *text = node->text[row];
        if (text == NULL || is_null(text))
            return 0;
        if (pgf_setting_parse(s, text, v, why, sizeof why) != 0) {
            pgf_setting_error(s, -1, text, &o, why, err, errlen);
            return -1;
        }
        break;
    }
    }
    v->origin[row] = o;
    return 0;
}

/* Loads the file; see config.h. */
int pgf_config_load(const char *path, struct pgf_config **out, char *err, size_t errlen)
{
    *out = NULL;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "cannot read config file %s: %m", path);
        return -1;
    }
    fclose(f);
    build_schema();
    struct cy_log log = {.len = 0};
    cyaml_config_t cfg = base_config;
    cfg.log_ctx = &log;
    struct pgf_file_node *tree = NULL;
    cyaml_err_t rc = cyaml_load_file(path, &cfg, &top_schema, (cyaml_data_t **)&tree, NULL);
    if (rc != CYAML_OK) {
        log.text[log.len] = '\0';
        load_error(path, rc, log.text, err, errlen);
        return -1;
    }
    struct pgf_config *c = calloc(1, sizeof *c);
    struct lines *lines = calloc(1, sizeof *lines);
    if (c)
        c->values = calloc(1, sizeof *c->values);
    if (tree == NULL) /* an empty file is an empty configuration */
        tree = calloc(1, sizeof *tree);
    if (c == NULL || lines == NULL || c->values == NULL || tree == NULL) {
        snprintf(err, errlen, "out of memory reading %s", path);
        free(lines);
        if (c)
            free(c->values);
        free(c);
        cyaml_free(&base_config, &top_schema, tree, 0);
        return -1;
    }
    c->path = path;
    c->tree = tree;
    c->redis = &c->values->redis;
    walk_keys(path, record_line, lines);
    for (size_t row = 0; row < pgf_nsettings; row++) {
        if (pgf_settings[row].flags & PGF_S_NOFILE)
            continue;
        const struct pgf_file_node *node = gen.section_of[row] < 0 ? tree : tree->section[gen.section_of[row]];
        if (node && load_setting(c, node, row, lines, err, errlen) != 0) {
            free(lines);
            pgf_config_free(c);
            return -1;
        }
    }
    free(lines);
    *out = c;
    return 0;
}

/* Frees what pgf_config_load returned. */
void pgf_config_free(struct pgf_config *cfg)
{
    if (cfg == NULL)
        return;
    cyaml_free(&base_config, &top_schema, cfg->tree, 0);
    free(cfg->values);
    free(cfg);
}

/* What pgf_config_line_of looks for, and finds. */
struct line_query {
    const char *keypath;
    int line;
};

/* walk_keys visitor: stops at the wanted path. */
static int match_line(const char *path, int line, void *ctx)
{
    struct line_query *q = ctx;
    if (strcmp(path, q->keypath) != 0)
        return 0;
    q->line = line;
    return 1;
}

/* Finds a key path's line; see config.h. */
int pgf_config_line_of(const char *file, const char *keypath)
{
    struct line_query q = {.keypath = keypath, .line = 0};
    walk_keys(file, match_line, &q);
    return q.line;
}
