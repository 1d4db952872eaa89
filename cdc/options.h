/* options.h - the command line. */
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
    const char *kafka_conf[64]; /* "key=value", applied in order after our defaults */
    size_t nkafka_conf;
    size_t max_inflight_bytes;
    int shutdown_timeout_ms;
    const char *http_listen;  /* --http-listen HOST:PORT, or NULL: no HTTP listener */
    const char *probe_url;    /* --probe HOST:PORT/path: GET it and exit */
    int heartbeat_interval_ms;/* 0 = no heartbeat */
    int drop_slot_on_exit;
    int temporary_slot;
    int show_help;
    int show_version;
};

/* Parses argv into *opts (strings point into argv).  Returns 0, or -1 after printing an
 * error to stderr that names the bad flag or value. */
int pgf_options_parse(int argc, char **argv, struct pgf_options *opts);

/* Prints the --help text to out. */
void pgf_options_usage(FILE *out);

#endif
