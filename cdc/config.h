/* config.h - the YAML configuration file, loaded with libcyaml against a schema built from the
 * settings table (cdc/settings.c) plus the redis section's structured parts below.  Unknown
 * keys and bad values are errors that name the key, its line and what is allowed. */
#ifndef PGFANOUT_CONFIG_H
#define PGFANOUT_CONFIG_H

#include <stddef.h>

enum pgf_redis_action { PGF_REDIS_DEL = 0, PGF_REDIS_UNLINK };
enum pgf_redis_generation { PGF_GEN_NONE = 0, PGF_GEN_LSN, PGF_GEN_INCR };

/* One rule of redis.rules: which keys a table's row changes invalidate, and how. */
struct pgf_redis_rule_cfg {
    char *table;                 /* "schema.table", or "table" meaning public.table */
    char **keys;                 /* templates with {column} or {column|filter|...} */
    unsigned keys_count;
    char **table_keys;           /* literal keys dropped on any change to the table */
    unsigned table_keys_count;
    int action;                  /* enum pgf_redis_action */
    char *publish;               /* channel for a JSON message per change, or NULL */
    int generation;              /* enum pgf_redis_generation */
    char *generation_key;        /* NULL = "pgfanout:gen:<schema>.<table>" */
};

/* Django's cache key format KEY_PREFIX:VERSION:key. */
struct pgf_django_cfg {
    char *key_prefix; /* NULL = "" */
    int *version;     /* NULL = Django's default, 1 */
};

/* django-cachalot table invalidation. */
struct pgf_cachalot_cfg {
    char *db_alias;  /* Django DATABASES alias; NULL = "default" */
};

struct pgf_redis_cfg {
    char *host;                  /* NULL = 127.0.0.1; a path starting with / is a unix socket */
    unsigned port;               /* 0 = 6379 */
    unsigned db;
    int tls;                     /* refused with hiredis 0.14, which has no TLS */
    char *username;              /* Redis 6 ACL user, or NULL for the default user */
    char *password_file;         /* or PGFANOUT_REDIS_PASSWORD in the environment */
    unsigned window;             /* most transactions sent in one pipelined round trip; 0 = 64 */
    unsigned linger_ms;          /* how long a batch waits for more transactions */
    unsigned command_timeout_ms; /* no reply for this long: reconnect and resend; 0 = 10000 */
    char *message_prefix;        /* NULL = "pgfanout.invalidate" */
    struct pgf_django_cfg *django;
    struct pgf_cachalot_cfg *cachalot;
    struct pgf_redis_rule_cfg *rules;
    unsigned rules_count;
};

struct pgf_options;
struct pgf_file_node;

/* A loaded config file: every setting it sets, parsed by the settings table's rules, with the
 * line it came from. */
struct pgf_config {
    const char *path;
    struct pgf_options *values;  /* the file's values: a setting is set when values->origin[row] is
                                    PGF_FROM_FILE, which also holds its line; kafka.conf's items
                                    are values->kafka_conf */
    struct pgf_redis_cfg *redis; /* &values->redis: the redis section's scalars and structured parts */
    struct pgf_file_node *tree;  /* what libcyaml loaded; values' strings point into it */
};

/* Loads path into *out (free with pgf_config_free), checking every key against the settings
 * table and every value by its type.  Returns 0, or -1 with a message in err that names the
 * file, the line, the key and what is allowed. */
int pgf_config_load(const char *path, struct pgf_config **out, char *err, size_t errlen);

/* Frees a loaded configuration; NULL is fine. */
void pgf_config_free(struct pgf_config *cfg);

/* Finds the line of a dotted key path such as "redis.rules[2].keys[0]" in the YAML file, for
 * errors found after loading.  Returns the 1-based line, or 0 when it cannot be found. */
int pgf_config_line_of(const char *path, const char *keypath);

#endif
