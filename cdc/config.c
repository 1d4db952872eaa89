/* config.c - the YAML configuration file: libcyaml loads it against a schema; libyaml finds
 * the line of a key for errors found after loading. */
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

static const cyaml_strval_t action_strings[] = {{"del", PGF_REDIS_DEL}, {"unlink", PGF_REDIS_UNLINK}};
static const cyaml_strval_t generation_strings[] = {
    {"none", PGF_GEN_NONE}, {"lsn", PGF_GEN_LSN}, {"incr", PGF_GEN_INCR}};

/* libcyaml reads any word but a few as true; a typo must be an error instead. */
static const cyaml_strval_t bool_strings[] = {{"false", 0}, {"true", 1}, {"no", 0}, {"yes", 1}};

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

static const cyaml_schema_field_t redis_fields[] = {
    CYAML_FIELD_STRING_PTR("host", OPT_PTR, struct pgf_redis_cfg, host, 1, CYAML_UNLIMITED),
    CYAML_FIELD_UINT("port", CYAML_FLAG_OPTIONAL, struct pgf_redis_cfg, port),
    CYAML_FIELD_UINT("db", CYAML_FLAG_OPTIONAL, struct pgf_redis_cfg, db),
    CYAML_FIELD_ENUM("tls", CYAML_FLAG_OPTIONAL | CYAML_FLAG_STRICT, struct pgf_redis_cfg, tls, bool_strings,
                     CYAML_ARRAY_LEN(bool_strings)),
    CYAML_FIELD_STRING_PTR("username", OPT_PTR, struct pgf_redis_cfg, username, 1, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("password_file", OPT_PTR, struct pgf_redis_cfg, password_file, 1, CYAML_UNLIMITED),
    CYAML_FIELD_UINT("window", CYAML_FLAG_OPTIONAL, struct pgf_redis_cfg, window),
    CYAML_FIELD_UINT("linger_ms", CYAML_FLAG_OPTIONAL, struct pgf_redis_cfg, linger_ms),
    CYAML_FIELD_UINT("command_timeout_ms", CYAML_FLAG_OPTIONAL, struct pgf_redis_cfg, command_timeout_ms),
    CYAML_FIELD_STRING_PTR("message_prefix", OPT_PTR, struct pgf_redis_cfg, message_prefix, 1, CYAML_UNLIMITED),
    CYAML_FIELD_MAPPING_PTR("django", OPT_PTR, struct pgf_redis_cfg, django, django_fields),
    CYAML_FIELD_MAPPING_PTR("cachalot", OPT_PTR, struct pgf_redis_cfg, cachalot, cachalot_fields),
    CYAML_FIELD_SEQUENCE("rules", OPT_PTR, struct pgf_redis_cfg, rules, &rule_entry, 0, CYAML_UNLIMITED),
    CYAML_FIELD_END,
};

#define STR_FIELD(key, type, member) CYAML_FIELD_STRING_PTR(key, OPT_PTR, type, member, 0, CYAML_UNLIMITED)

static const cyaml_schema_field_t source_fields[] = {
    STR_FIELD("dsn", struct pgf_source_cfg, dsn),
    STR_FIELD("slot", struct pgf_source_cfg, slot),
    STR_FIELD("publication", struct pgf_source_cfg, publication),
    STR_FIELD("tables", struct pgf_source_cfg, tables),
    STR_FIELD("create_slot", struct pgf_source_cfg, create_slot),
    STR_FIELD("create_publication", struct pgf_source_cfg, create_publication),
    STR_FIELD("temporary_slot", struct pgf_source_cfg, temporary_slot),
    STR_FIELD("allow_missing_replica_identity", struct pgf_source_cfg, allow_missing_replica_identity),
    STR_FIELD("drop_slot_on_exit", struct pgf_source_cfg, drop_slot_on_exit),
    STR_FIELD("status_interval", struct pgf_source_cfg, status_interval),
    STR_FIELD("heartbeat_interval", struct pgf_source_cfg, heartbeat_interval),
    STR_FIELD("endpos", struct pgf_source_cfg, endpos),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t stdout_fields[] = {
    STR_FIELD("output", struct pgf_stdout_cfg, output),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t kafka_fields[] = {
    STR_FIELD("brokers", struct pgf_kafka_cfg, brokers),
    STR_FIELD("topic_template", struct pgf_kafka_cfg, topic_template),
    STR_FIELD("topic_prefix", struct pgf_kafka_cfg, topic_prefix),
    STR_FIELD("message_topic", struct pgf_kafka_cfg, message_topic),
    STR_FIELD("on_oversize", struct pgf_kafka_cfg, on_oversize),
    STR_FIELD("dead_letter_topic", struct pgf_kafka_cfg, dead_letter_topic),
    STR_FIELD("tombstones", struct pgf_kafka_cfg, tombstones),
    CYAML_FIELD_SEQUENCE("conf", OPT_PTR, struct pgf_kafka_cfg, conf, &string_entry, 0, CYAML_UNLIMITED),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t http_fields[] = {
    STR_FIELD("listen", struct pgf_http_cfg, listen),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t log_fields[] = {
    STR_FIELD("level", struct pgf_log_cfg, level),
    STR_FIELD("format", struct pgf_log_cfg, format),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t top_fields[] = {
    CYAML_FIELD_MAPPING_PTR("source", OPT_PTR, struct pgf_config, source, source_fields),
    CYAML_FIELD_SEQUENCE("sinks", OPT_PTR, struct pgf_config, sinks, &string_entry, 0, CYAML_UNLIMITED),
    CYAML_FIELD_MAPPING_PTR("stdout", OPT_PTR, struct pgf_config, stdout_sink, stdout_fields),
    CYAML_FIELD_MAPPING_PTR("kafka", OPT_PTR, struct pgf_config, kafka, kafka_fields),
    CYAML_FIELD_MAPPING_PTR("redis", OPT_PTR, struct pgf_config, redis, redis_fields),
    CYAML_FIELD_MAPPING_PTR("http", OPT_PTR, struct pgf_config, http, http_fields),
    CYAML_FIELD_MAPPING_PTR("log", OPT_PTR, struct pgf_config, log, log_fields),
    STR_FIELD("max_inflight_bytes", struct pgf_config, max_inflight_bytes),
    STR_FIELD("shutdown_timeout", struct pgf_config, shutdown_timeout),
    CYAML_FIELD_END,
};

static const cyaml_schema_value_t top_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, struct pgf_config, top_fields),
};

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
    struct cy_log log = {.len = 0};
    cyaml_config_t cfg = base_config;
    cfg.log_ctx = &log;
    struct pgf_config *c = NULL;
    cyaml_err_t rc = cyaml_load_file(path, &cfg, &top_schema, (cyaml_data_t **)&c, NULL);
    if (rc != CYAML_OK) {
        log.text[log.len] = '\0';
        load_error(path, rc, log.text, err, errlen);
        return -1;
    }
    if (c == NULL) /* an empty file is an empty configuration */
        c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(err, errlen, "out of memory reading %s", path);
        return -1;
    }
    *out = c;
    return 0;
}

/* Parses a whole non-negative number for an environment variable; returns 0 or -1. */
static int env_uint(const char *name, const char *v, unsigned *out, char *err, size_t errlen)
{
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    if (*v == '\0' || *v == '-' || *end != '\0' || errno || n > UINT32_MAX) {
        snprintf(err, errlen, "invalid value '%s' in environment variable %s: expected a non-negative integer", v,
                 name);
        return -1;
    }
    *out = (unsigned)n;
    return 0;
}

/* Applies the PGFANOUT_REDIS_* variables; see config.h. */
int pgf_config_redis_env(struct pgf_redis_cfg *redis, char *err, size_t errlen)
{
    static const struct {
        const char *name;
        size_t off;
        int is_uint;
    } vars[] = {
        {"PGFANOUT_REDIS_HOST", offsetof(struct pgf_redis_cfg, host), 0},
        {"PGFANOUT_REDIS_USERNAME", offsetof(struct pgf_redis_cfg, username), 0},
        {"PGFANOUT_REDIS_PASSWORD_FILE", offsetof(struct pgf_redis_cfg, password_file), 0},
        {"PGFANOUT_REDIS_MESSAGE_PREFIX", offsetof(struct pgf_redis_cfg, message_prefix), 0},
        {"PGFANOUT_REDIS_PORT", offsetof(struct pgf_redis_cfg, port), 1},
        {"PGFANOUT_REDIS_DB", offsetof(struct pgf_redis_cfg, db), 1},
        {"PGFANOUT_REDIS_WINDOW", offsetof(struct pgf_redis_cfg, window), 1},
        {"PGFANOUT_REDIS_LINGER_MS", offsetof(struct pgf_redis_cfg, linger_ms), 1},
        {"PGFANOUT_REDIS_COMMAND_TIMEOUT_MS", offsetof(struct pgf_redis_cfg, command_timeout_ms), 1},
    };
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        char *v = getenv(vars[i].name);
        if (v == NULL)
            continue;
        char *field = (char *)redis + vars[i].off;
        if (vars[i].is_uint && env_uint(vars[i].name, v, (unsigned *)(void *)field, err, errlen) != 0)
            return -1;
        if (!vars[i].is_uint)
            memcpy(field, &v, sizeof v); /* the environment outlives the configuration */
    }
    const char *tls = getenv("PGFANOUT_REDIS_TLS");
    if (tls) {
        int yes = strcmp(tls, "true") == 0 || strcmp(tls, "yes") == 0;
        if (!yes && strcmp(tls, "false") != 0 && strcmp(tls, "no") != 0) {
            snprintf(err, errlen, "invalid value '%s' in environment variable PGFANOUT_REDIS_TLS: expected true, "
                                  "false, yes or no", tls);
            return -1;
        }
        redis->tls = yes;
    }
    return 0;
}

/* Frees what pgf_config_load returned. */
void pgf_config_free(struct pgf_config *cfg)
{
    if (cfg)
        cyaml_free(&base_config, &top_schema, cfg, 0);
}

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
