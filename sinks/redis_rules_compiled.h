/* redis_rules_compiled.h - the compiled form of redis rules, shared by the two halves that use
 * it: redis_rules_compile.c builds it from the config, redis_rules_expand.c reads it per change.
 * Nothing else includes this; everyone else sees struct pgf_redis_rules as opaque. */
#ifndef PGFANOUT_REDIS_RULES_COMPILED_H
#define PGFANOUT_REDIS_RULES_COMPILED_H

#include <stddef.h>

#include "sinks/redis_rules.h"

enum filter { F_LOWER, F_UPPER, F_SHA1, F_MD5 };
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
    int noticed; /* a key could not be built once already; reported once */
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
    int noticed_truncate;
};

struct pgf_redis_rules {
    struct rule *rules;
    size_t nrules;
    int django;
    char *django_prefix; /* "KEY_PREFIX:VERSION:" */
    char *cachalot_alias;
    char *message_prefix;
    int on_read_invalidate; /* rows read by a snapshot delete their keys (redis.on_read) */
    /* What expanding changes: a count and scratch for building one key, reused across calls. */
    unsigned long unexpanded;
    char *buf, *tmp;
    size_t cap, tmpcap;
};

#endif
