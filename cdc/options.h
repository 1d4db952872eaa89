/* options.h - the effective settings, where cdc/settings.c's table lands them, and where each
 * value came from.  cdc/layers.c fills them (defaults < config file < environment < flags). */
#ifndef PGFANOUT_OPTIONS_H
#define PGFANOUT_OPTIONS_H

#include <stddef.h>
#include <stdint.h>

#include "cdc/config.h"

#define PGF_MAX_SETTINGS 80 /* rows of the settings table */
#define PGF_MAX_CONF 64     /* kafka.conf entries, all layers together */

/* The layers a value can come from, lowest precedence first. */
enum pgf_layer { PGF_FROM_DEFAULT = 0, PGF_FROM_FILE, PGF_FROM_ENV, PGF_FROM_FLAG };

/* Where one value came from, recorded when it was read. */
struct pgf_origin {
    enum pgf_layer layer;
    int line;         /* PGF_FROM_FILE: 1-based line of the key or list item */
    const char *file; /* PGF_FROM_FILE: the config file's path (borrowed: argv or environ) */
    char name[128];   /* PGF_FROM_ENV: the variable; PGF_FROM_FLAG: the flag, "--dsn" */
};

/* Bits of pgf_options.sinks. */
enum { PGF_SINK_STDOUT = 1, PGF_SINK_KAFKA = 2, PGF_SINK_REDIS = 4, PGF_SINK_NULL = 8 };

/* A list setting (kafka.conf): "key=value" items from every layer, applied in order, so that
 * for one key the flag's item comes last and wins. */
struct pgf_conf_list {
    const char *item[PGF_MAX_CONF];
    struct pgf_origin origin[PGF_MAX_CONF];
    size_t n;
    char env_item[PGF_MAX_CONF][256]; /* items built from PGFANOUT_KAFKA_CONF_<KEY> variables */
};

struct pgf_options {
    const char *dsn;         /* may be "" : libpq then uses the PG* environment variables */
    const char *slot;
    const char *publication;
    const char *tables;      /* comma-separated, for --create-publication; NULL = all tables */
    const char *output;      /* NULL or "-" = stdout */
    int create_slot;
    int create_publication;
    int has_endpos;          /* some layer set source.endpos */
    uint64_t endpos;
    int status_interval_ms;
    unsigned sinks;          /* PGF_SINK_* bits */
    const char *kafka_brokers;
    const char *topic_template;
    const char *topic_prefix;
    const char *message_topic;
    int tombstones;
    const char *key_columns;    /* kafka.key_columns: record-key overrides (cdc/keys.h) */
    int exactly_once;           /* kafka.exactly_once */
    unsigned txn_max_records;   /* kafka.transaction_max_records */
    size_t txn_max_bytes;       /* kafka.transaction_max_bytes */
    unsigned txn_max_ms;        /* kafka.transaction_max_ms */
    const char *on_oversize;       /* "fail", "dead_letter" or "skip" */
    const char *dead_letter_topic; /* template, as topic_template */
    struct pgf_conf_list kafka_conf;
    const char *kafka_format;   /* "protobuf" or "debezium-json" */
    const char *dbz_name;       /* kafka.debezium_name, or NULL: the topic prefix */
    const char *dbz_decimal;    /* "precise", "string" or "double" */
    const char *dbz_time;       /* "adaptive", "adaptive_time_microseconds" or "connect" */
    const char *dbz_binary;     /* "bytes", "base64" or "hex" */
    const char *dbz_truncates;  /* "skip" or "emit" */
    size_t max_inflight_bytes;
    int shutdown_timeout_ms;
    const char *http_listen;  /* --http-listen HOST:PORT, or NULL: no HTTP listener */
    int heartbeat_interval_ms;
    int progress_interval_ms;  /* 0 = no progress lines *//* 0 = no heartbeat */
    int drop_slot_on_exit;
    int temporary_slot;
    int allow_missing_identity; /* create a publication although some tables lack a replica identity */
    const char *snapshot;       /* "initial", "never", "initial_only", or NULL: initial for a slot we create */
    unsigned snapshot_chunk_size;
    const char *state_dir;      /* the state file's directory, or NULL */
    const char *on_slot_loss;   /* "stop" or "backfill" */
    const char *state_topic;    /* kafka.state_topic */
    const char *log_level;    /* "debug", "info", "warn" or "error" */
    const char *log_format;   /* "text", "logfmt" or "json" */
    struct pgf_redis_cfg redis;
    const char *redis_password; /* PGFANOUT_REDIS_PASSWORD, only to say --check-config that it is set */
    /* Command-line only. */
    const char *config_path;  /* --config or PGFANOUT_CONFIG: YAML file, or NULL */
    const char *redis_addr;   /* --redis HOST:PORT or /socket, or NULL */
    char redis_host[256];     /* the HOST of --redis HOST:PORT */
    char redis_port[8];       /* its PORT */
    const char *probe_url;    /* --probe HOST:PORT/path: GET it and exit */
    int check_config;         /* --check-config: print the effective settings and exit */
    int show_help;
    int show_version;
    struct pgf_origin origin[PGF_MAX_SETTINGS]; /* where each setting came from, by table row */
};

#endif
