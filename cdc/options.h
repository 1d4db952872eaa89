/* options.h - settings from the command line, the environment and the config file, in that
 * order of precedence. */
#ifndef PGFANOUT_OPTIONS_H
#define PGFANOUT_OPTIONS_H

#include <stdint.h>
#include <stdio.h>

struct pgf_options {
    const char *dsn;         /* may be "" : libpq then uses the PG* environment variables */
    const char *slot;
    const char *publication;
    const char *tables;      /* comma-separated, for --create-publication; NULL = all tables */
    const char *output;      /* NULL or "-" = stdout */
    int create_slot;
    int create_publication;
    int has_endpos;
    uint64_t endpos;
    int status_interval_ms;
    int sink_stdout;
    int sink_kafka;
    int sink_redis;
    const char *config_path; /* --config: YAML file, or NULL */
    const char *redis_addr;  /* --redis HOST:PORT or /socket, or NULL for the config's */
    const char *kafka_brokers;
    const char *topic_template;
    const char *topic_prefix;
    const char *message_topic;
    int tombstones;
    const char *on_oversize;       /* "fail", "dead_letter" or "skip" */
    const char *dead_letter_topic; /* template, as topic_template */
    const char *kafka_conf[64]; /* "key=value", applied in order after our defaults */
    size_t nkafka_conf;
    size_t max_inflight_bytes;
    int shutdown_timeout_ms;
    const char *http_listen;  /* --http-listen HOST:PORT, or NULL: no HTTP listener */
    const char *probe_url;    /* --probe HOST:PORT/path: GET it and exit */
    int heartbeat_interval_ms;/* 0 = no heartbeat */
    int drop_slot_on_exit;
    int temporary_slot;
    int allow_missing_identity; /* create a publication although some tables lack a replica identity */
    const char *log_level;    /* as given, for --check-config */
    const char *log_format;
    int check_config;         /* --check-config: print the effective settings and exit */
    const char *origin[32];   /* where each setting came from, by its index in options.c's table */
    char env_conf[64][256];   /* librdkafka settings built from PGFANOUT_KAFKA_CONF_* */
    char conf_origin[64][300];/* where each kafka_conf entry came from, for errors */
    int show_help;
    int show_version;
};

struct pgf_config;
struct pgf_redis_cfg;

/* Fills *opts from the config file (--config or PGFANOUT_CONFIG), then PGFANOUT_* environment
 * variables, then flags; *cfg gets the loaded file (free it with pgf_config_free once opts is
 * no longer used: strings point into it, argv and the environment).  Returns 0, or -1 after
 * printing an error that names the setting, where its value came from and what is allowed. */
int pgf_options_parse(int argc, char **argv, struct pgf_options *opts, struct pgf_config **cfg);

/* Prints the effective settings as YAML, each with its source, secrets redacted (the DSN's
 * password, Kafka settings whose names contain "password" or "secret", Redis's password). */
void pgf_options_print(FILE *out, const struct pgf_options *opts, const struct pgf_config *cfg,
                       const struct pgf_redis_cfg *redis, size_t nrules);

/* Prints the --help text to out. */
void pgf_options_usage(FILE *out);

#endif
