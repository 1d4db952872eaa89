/* redis_config.h - the Redis sink's settings, as the redis section of the config file holds
 * them (cdc/config.c loads them with libcyaml; PGFANOUT_REDIS_* and --redis apply on top). */
#ifndef PGFANOUT_REDIS_CONFIG_H
#define PGFANOUT_REDIS_CONFIG_H

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

/* The django-cacheops preset: invalidate cacheops' conj keys from every row change. */
struct pgf_cacheops_cfg {
    char *prefix;        /* CACHEOPS_PREFIX as a constant; NULL = "" */
    int insideout;       /* CACHEOPS_INSIDEOUT: conj keys are stamps, values str()'d */
    int *decimal_variants; /* NULL = on: decimals also without their trailing zeros */
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
    const char *on_read;         /* "invalidate": rows read by a snapshot delete their keys; else ignored */
    int leases;                  /* each deleted key's lease key is deleted in the same command */
    char *lease_suffix;          /* NULL = ":lease" */
    const char *lease_layout;    /* "suffix" (NULL) or "cluster"; see sinks/redis_lease.h */
    char *ryw_key;               /* NULL = "pgfanout:ryw:<slot>"; "" = none */
    char *replicas;              /* standby DSNs separated by ';' (polled for their replay LSN) */
    char *replica_names;         /* standbys' application_names in pg_stat_replication, comma-separated */
    unsigned replica_poll_ms;    /* 0 = 50 */
    int second_pass;             /* a second pass even without standbys (always with them) */
    unsigned second_pass_delay_ms;
    int replica_max_wait_ms;
    struct pgf_django_cfg *django;
    struct pgf_cachalot_cfg *cachalot;
    struct pgf_cacheops_cfg *cacheops;
    struct pgf_redis_rule_cfg *rules;
    unsigned rules_count;
};

/* Where a setting stands in the config file, so that an error found after loading can name
 * its line; the sinks do not read files themselves. */
struct pgf_setting_locator {
    const char *path;                                     /* the config file */
    int (*line_of)(const char *path, const char *keypath); /* 1-based, or 0 when not found */
};

#endif
