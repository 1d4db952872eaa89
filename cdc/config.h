/* config.h - the YAML configuration file, loaded with libcyaml.  Unknown keys and bad values
 * are errors that name the key, its line and what is allowed. */
#ifndef PGFANOUT_CONFIG_H
#define PGFANOUT_CONFIG_H

#include <stddef.h>

#include "sinks/redis_config.h"

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
