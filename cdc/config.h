/* config.h - the YAML configuration file, loaded with libcyaml.  Unknown keys and bad values
 * are errors that name the key, its line and what is allowed. */
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

/* The other sections hold scalars as the file's text; cdc/options.c parses them with the
 * same rules as the flags and the environment, so one value means one thing everywhere. */
struct pgf_source_cfg {
    char *dsn, *slot, *publication, *tables, *create_slot, *create_publication, *temporary_slot,
        *drop_slot_on_exit, *status_interval, *heartbeat_interval, *endpos, *allow_missing_replica_identity;
};

struct pgf_stdout_cfg {
    char *output;
};

struct pgf_kafka_cfg {
    char *brokers, *topic_template, *topic_prefix, *message_topic, *tombstones, *on_oversize, *dead_letter_topic;
    char **conf; /* "key=value" librdkafka settings */
    unsigned conf_count;
};

struct pgf_http_cfg {
    char *listen;
};

struct pgf_log_cfg {
    char *level, *format;
};

struct pgf_config {
    struct pgf_source_cfg *source;
    char **sinks;
    unsigned sinks_count;
    struct pgf_stdout_cfg *stdout_sink;
    struct pgf_kafka_cfg *kafka;
    struct pgf_redis_cfg *redis;
    struct pgf_http_cfg *http;
    struct pgf_log_cfg *log;
    char *max_inflight_bytes, *shutdown_timeout;
};

/* Loads path into *out (free with pgf_config_free).  Returns 0, or -1 with a message in err
 * that names the file, the line, the key and what is allowed. */
int pgf_config_load(const char *path, struct pgf_config **out, char *err, size_t errlen);

/* Applies PGFANOUT_REDIS_<KEY> environment variables (HOST, PORT, DB, USERNAME,
 * PASSWORD_FILE, TLS, WINDOW, LINGER_MS, COMMAND_TIMEOUT_MS, MESSAGE_PREFIX) over *redis.
 * Returns 0, or -1 with err naming the variable and what is allowed. */
int pgf_config_redis_env(struct pgf_redis_cfg *redis, char *err, size_t errlen);

/* Frees a loaded configuration; NULL is fine. */
void pgf_config_free(struct pgf_config *cfg);

/* Finds the line of a dotted key path such as "redis.rules[2].keys[0]" in the YAML file, for
 * errors found after loading.  Returns the 1-based line, or 0 when it cannot be found. */
int pgf_config_line_of(const char *path, const char *keypath);

#endif
