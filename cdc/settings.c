/* settings.c - the settings table and how each type of value is parsed. */
#include "cdc/settings.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/http.h"
#include "common/lsn.h"

/* One row: file key, flag, type, default, the pgf_options field it lands in, the value's name
 * in --help, then the help line and any of .short_flag, .flags, .choices, .sets. */
#define SETTING(key_, flag_, type_, def_, field_, arg_, ...)                                                   \
    {.key = key_, .flag = flag_, .type = type_, .def = def_, .off = offsetof(struct pgf_options, field_),     \
     .arg = arg_, .help = __VA_ARGS__}
#define CLI (PGF_S_NOFILE | PGF_S_NOENV | PGF_S_CLI)

/* Adding a setting: one row here, in the order --check-config prints it; a field for it in
 * struct pgf_options; and its key in pgfanout.example.yaml (tests/unit/test_settings.c checks
 * the example and --help against this table). */
const struct pgf_setting pgf_settings[] = {
    SETTING("source.dsn", "dsn", PGF_T_DSN, "", dsn, "DSN",
            "libpq connection string, e.g. \"host=127.0.0.1 dbname=app user=cdc\";\nunset parts come from "
            "PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD...\n(replication=database is added for you)",
            .short_flag = 'd', .flags = PGF_S_SECRET),
    SETTING("source.slot", "slot", PGF_T_STR, "pgfanout", slot, "NAME", "logical replication slot to read"),
    SETTING("source.publication", "publication", PGF_T_STR, "pgfanout", publication, "NAME",
            "publication whose tables are streamed"),
    SETTING("source.tables", "tables", PGF_T_STR, NULL, tables, "LIST",
            "comma-separated tables (schema.table or table) for --create-publication"),
    SETTING("source.create_slot", "create-slot", PGF_T_BOOL, "false", create_slot, NULL,
            "create the slot with the pgoutput plugin if it is missing"),
    SETTING("source.create_publication", "create-publication", PGF_T_BOOL, "false", create_publication, NULL,
            "create the publication if it is missing: FOR ALL TABLES,\nor FOR TABLE the --tables list"),
    SETTING("source.temporary_slot", "temporary-slot", PGF_T_BOOL, "false", temporary_slot, NULL,
            "create a temporary slot for this session only (ad-hoc runs; gone on exit,\nand recreated at the "
            "current position after a reconnect)"),
    SETTING("source.allow_missing_replica_identity", "allow-missing-replica-identity", PGF_T_BOOL, "false",
            allow_missing_identity, NULL, "create the publication even though some of its tables\nhave no "
            "replica identity (their UPDATEs and DELETEs will then fail)"),
    SETTING("source.drop_slot_on_exit", "drop-slot-on-exit", PGF_T_BOOL, "false", drop_slot_on_exit, NULL,
            "drop the slot after a clean stop"),
    SETTING("source.status_interval", "status-interval", PGF_T_SECONDS, "10", status_interval_ms, "S",
            "seconds between standby status updates"),
    SETTING("source.heartbeat_interval", "heartbeat-interval", PGF_T_SECONDS, NULL, heartbeat_interval_ms, "S",
            "write a transactional logical message every S seconds so the slot\nadvances while the published "
            "tables are idle (needs EXECUTE on\npg_logical_emit_message)"),
    SETTING("source.endpos", "endpos", PGF_T_LSN, NULL, endpos, "LSN",
            "stop cleanly once the stream reaches LSN (e.g. 0/16B3748)"),
    SETTING("sinks", "sink", PGF_T_SINKS, "stdout", sinks, "LIST",
            "where events go, comma-separated: stdout (one JSON object per line),\nkafka (protobuf "
            "pgfanout.v1.Event records, or Debezium's JSON: kafka.format),\nredis (cache "
            "invalidation by the redis section's rules) and/or\nnull (encode as the Kafka records, "
            "ack, discard; a dry run that\nlogs events, bytes and rate at exit)"),
    SETTING("stdout.output", "output", PGF_T_STR, NULL, output, "FILE",
            "append JSON lines to FILE instead of standard output", .short_flag = 'o'),
    SETTING("kafka.brokers", "kafka-brokers", PGF_T_STR, NULL, kafka_brokers, "LIST",
            "bootstrap servers, e.g. 127.0.0.1:9092"),
    SETTING("kafka.topic_template", "topic-template", PGF_T_STR, "{prefix}.{schema}.{table}", topic_template, "T",
            "topic of a table's events;\nplaceholders {prefix} {database} {schema} {table}"),
    SETTING("kafka.topic_prefix", "topic-prefix", PGF_T_STR, "pgfanout", topic_prefix, "P", "value of {prefix}"),
    SETTING("kafka.message_topic", "message-topic", PGF_T_STR, "{prefix}.messages", message_topic, "T",
            "topic of logical decoding messages"),
    SETTING("kafka.on_oversize", "kafka-on-oversize", PGF_T_CHOICE, "fail", on_oversize, "A",
            "a record larger than the broker accepts: fail (exit 1, the slot holds\nit), dead_letter (a small "
            "record to the dead-letter topic instead)\nor skip (logged and counted)",
            .choices = "fail, dead_letter, skip"),
    SETTING("kafka.dead_letter_topic", "dead-letter-topic", PGF_T_STR, "{prefix}.dead_letter", dead_letter_topic,
            "T", "topic for dead_letter records"),
    SETTING("kafka.state_topic", "state-topic", PGF_T_STR, "pgfanout.state", state_topic, "T",
            "compacted topic holding pgfanout's state (snapshot progress, slot identity),\nkeyed by the slot"),
    SETTING("kafka.key_columns", "key-columns", PGF_T_STR, NULL, key_columns, "SPEC",
            "record-key columns of tables without a suitable key, as Debezium's\nmessage.key.columns: "
            "\"schema.table:col,col;schema.table:col\" (default:\nthe primary key, else the replica-identity index)"),
    SETTING("kafka.exactly_once", "exactly-once", PGF_T_BOOL, "false", exactly_once, NULL,
            "write through Kafka transactions, each with its checkpoint in the state\ntopic, so a restart "
            "skips what Kafka holds: read_committed consumers\nsee every change once (transactional.id "
            "pgfanout-<slot>)"),
    SETTING("kafka.transaction_max_records", "transaction-max-records", PGF_T_UINT, "100000", txn_max_records,
            "N", "with exactly_once: a Kafka transaction closes at the first commit past\nN records, and a "
            "larger PostgreSQL transaction is split at N"),
    SETTING("kafka.transaction_max_bytes", "transaction-max-bytes", PGF_T_BYTES, "64M", txn_max_bytes, "N",
            "with exactly_once: the same bound in bytes"),
    SETTING("kafka.transaction_max_ms", "transaction-max-ms", PGF_T_UINT, "100", txn_max_ms, "MS",
            "with exactly_once: a Kafka transaction closes at the first commit after\nMS milliseconds (or "
            "once everything in it is delivered)"),
    SETTING("kafka.tombstones", "no-tombstones", PGF_T_BOOL, "true", tombstones, NULL,
            "do not follow a delete with a null-value record", .flags = PGF_S_NEGATE),
    SETTING("kafka.format", "kafka-format", PGF_T_CHOICE, "protobuf", kafka_format, "F",
            "record format: protobuf (pgfanout.v1.Event) or debezium-json (the change\nevents of Debezium's "
            "PostgreSQL connector, as its JsonConverter writes them\nwith schemas.enable=false)",
            .choices = "protobuf, debezium-json"),
    SETTING("kafka.debezium_name", "debezium-name", PGF_T_STR, NULL, dbz_name, "NAME",
            "debezium-json: source.name and the connectorLogicalName header\n(Debezium's topic.prefix); "
            "default: kafka.topic_prefix"),
    SETTING("kafka.debezium_decimal_handling_mode", "debezium-decimal-handling-mode", PGF_T_CHOICE, "precise",
            dbz_decimal, "MODE", "debezium-json: numeric as Debezium's decimal.handling.mode:\nprecise "
            "(base64 of the unscaled value), string or double", .choices = "precise, string, double"),
    SETTING("kafka.debezium_time_precision_mode", "debezium-time-precision-mode", PGF_T_CHOICE, "adaptive",
            dbz_time, "MODE", "debezium-json: times as Debezium's time.precision.mode: adaptive,\n"
            "adaptive_time_microseconds or connect", .choices = "adaptive, adaptive_time_microseconds, connect"),
    SETTING("kafka.debezium_binary_handling_mode", "debezium-binary-handling-mode", PGF_T_CHOICE, "bytes",
            dbz_binary, "MODE", "debezium-json: bytea as Debezium's binary.handling.mode: bytes,\nbase64 "
            "(both base64 in JSON) or hex", .choices = "bytes, base64, hex"),
    SETTING("kafka.debezium_truncates", "debezium-truncates", PGF_T_CHOICE, "skip", dbz_truncates, "A",
            "debezium-json: TRUNCATE as Debezium's skipped.operations: skip (its\ndefault, t skipped) or emit "
            "(op \"t\" records with a null key)", .choices = "skip, emit"),
    SETTING("kafka.conf", "kafka-conf", PGF_T_CONF, NULL, kafka_conf, "K=V",
            "any librdkafka setting, applied after pgfanout's defaults (repeatable;\ne.g. "
            "security.protocol=SASL_SSL); its variables are PGFANOUT_KAFKA_CONF_<KEY>\nwith '_' for '.' "
            "(..._SASL_PASSWORD sets sasl.password)"),
    SETTING("http.listen", "http-listen", PGF_T_ADDR, NULL, http_listen, "ADDR",
            "serve /metrics, /healthz and /readyz on HOST:PORT (a bare PORT binds\n127.0.0.1); off unless set"),
    SETTING("log.level", "log-level", PGF_T_CHOICE, "info", log_level, "LEVEL",
            "debug, info, warn or error; logs go to stderr", .choices = "debug, info, warn, error"),
    SETTING("log.format", "log-format", PGF_T_CHOICE, "text", log_format, "F", "text, logfmt or json",
            .choices = "text, logfmt, json"),
    SETTING("log.progress_interval", "progress-interval", PGF_T_SECONDS_OFF, "60", progress_interval_ms, "S",
            "seconds between progress lines at info level (changes, transactions,\nconfirmed LSN, lag, "
            "in-flight per sink); 0 turns them off"),
    SETTING("max_inflight_bytes", "max-inflight-bytes", PGF_T_BYTES, "8M", max_inflight_bytes, "N",
            "stop reading the slot while this many bytes are unacknowledged\n(suffixes k, M, G)"),
    SETTING("shutdown_timeout", "shutdown-timeout", PGF_T_SECONDS, "20", shutdown_timeout_ms, "S",
            "seconds to wait for acknowledgements when stopping; below Kubernetes' default\n"
            "30 s grace period, so the pod is not killed mid-drain"),
    SETTING("snapshot", "snapshot", PGF_T_CHOICE, NULL, snapshot, "MODE",
            "read every existing row of the published tables before streaming on:\ninitial, never or initial_only "
            "(exit 0 when done); unset: initial when pgfanout\ncreates the slot, else never",
            .choices = "initial, never, initial_only"),
    SETTING("snapshot_chunk_size", "snapshot-chunk-size", PGF_T_UINT, "10000", snapshot_chunk_size, "N",
            "rows a snapshot reads at a time (held in memory until handed on)", .flags = PGF_S_NONZERO),
    SETTING("state_dir", "state-dir", PGF_T_STR, NULL, state_dir, "DIR",
            "directory for pgfanout's state file (snapshot progress, slot identity) when\nKafka is not a sink; "
            "put it on the container's volume"),
    SETTING("on_slot_loss", "on-slot-loss", PGF_T_CHOICE, "stop", on_slot_loss, "A",
            "when the state shows the slot was lost (failover, drop): stop, or backfill\n(recreate the slot and "
            "read every published table again)", .choices = "stop, backfill"),
    SETTING("redis.host", NULL, PGF_T_STR, "127.0.0.1", redis.host, "HOST",
            "Redis server for --sink redis; a path starting with / is a unix socket"),
    SETTING("redis.port", NULL, PGF_T_PORT, "6379", redis.port, "PORT", "the Redis server's port"),
    SETTING("redis.db", NULL, PGF_T_UINT, "0", redis.db, "N", "database number (SELECT)"),
    SETTING("redis.username", NULL, PGF_T_STR, NULL, redis.username, "USER",
            "Redis 6 ACL user; with a username, a password is required"),
    SETTING("redis.password_file", NULL, PGF_T_STR, NULL, redis.password_file, "FILE",
            "a file whose first line is the password"),
    SETTING("redis.tls", NULL, PGF_T_BOOL, "false", redis.tls, "BOOL",
            "TLS: needs hiredis >= 1.0 with hiredis_ssl, so refused with Debian 12's"),
    SETTING("redis.window", NULL, PGF_T_UINT, "64", redis.window, "N",
            "most transactions sent in one pipelined round trip; 0 is the default",
            .flags = PGF_S_ZERO_IS_DEFAULT),
    SETTING("redis.linger_ms", NULL, PGF_T_UINT, "0", redis.linger_ms, "MS",
            "how long a batch waits for more transactions"),
    SETTING("redis.command_timeout_ms", NULL, PGF_T_UINT, "10000", redis.command_timeout_ms, "MS",
            "a command with no reply for this long: reconnect and send again;\n0 is the default",
            .flags = PGF_S_ZERO_IS_DEFAULT),
    SETTING("redis.message_prefix", NULL, PGF_T_STR, "pgfanout.invalidate", redis.message_prefix, "P",
            "prefix of the logical messages whose content names keys to delete"),
    SETTING("redis.on_read", NULL, PGF_T_CHOICE, "ignore", redis.on_read, "A",
            "what rows read by a snapshot do to Redis: ignore (caches are filled by\nthe application), or "
            "invalidate (delete their keys: makes caches safe after a gap)", .choices = "ignore, invalidate"),
    SETTING("redis.leases", NULL, PGF_T_BOOL, "true", redis.leases, "BOOL",
            "delete each key's lease key (key + redis.lease_suffix) in the same command,\nso a "
            "cache fill that holds a lease and races the invalidation is refused"),
    SETTING("redis.lease_suffix", NULL, PGF_T_STR, ":lease", redis.lease_suffix, "S",
            "what a lease key appends to its cache key"),
    SETTING("redis.lease_layout", NULL, PGF_T_CHOICE, "suffix", redis.lease_layout, "L",
            "suffix (lease = key + suffix; with the Django preset, Django's\nmake_key(key + suffix)) or "
            "cluster (the lease in its key's Redis Cluster hash slot)", .choices = "suffix, cluster"),
    SETTING("redis.ryw_key", NULL, PGF_T_STR, NULL, redis.ryw_key, "KEY",
            "key set to the LSN through which every invalidation is done (both passes),\nfor "
            "read-your-writes waits; unset: pgfanout:ryw:<source.slot>; \"\" turns it off"),
    SETTING("redis.replicas", NULL, PGF_T_STR, NULL, redis.replicas, "DSNS",
            "standbys that serve reads, as libpq DSNs separated by ';': each is\npolled for "
            "pg_last_wal_replay_lsn(), and every transaction's keys are\ninvalidated again once all have "
            "replayed it (the second pass)", .flags = PGF_S_SECRET),
    SETTING("redis.replica_names", NULL, PGF_T_STR, NULL, redis.replica_names, "LIST",
            "standbys that serve reads, by their application_name in\npg_stat_replication on the primary "
            "(the role needs pg_monitor);\ncomma-separated; combines with redis.replicas"),
    SETTING("redis.replica_poll_ms", NULL, PGF_T_UINT, "50", redis.replica_poll_ms, "MS",
            "how often each standby's replay position is read", .flags = PGF_S_ZERO_IS_DEFAULT),
    SETTING("redis.second_pass", NULL, PGF_T_BOOL, "false", redis.second_pass, "BOOL",
            "invalidate each transaction's keys a second time second_pass_delay_ms\nafter the first even "
            "without standbys (always on with them): narrows\nthe stale-fill race for fills without leases"),
    SETTING("redis.second_pass_delay_ms", NULL, PGF_T_UINT, "100", redis.second_pass_delay_ms, "MS",
            "how long after every standby replayed a transaction its second pass\nwaits, for reads "
            "already in flight"),
    SETTING("redis.replica_max_wait", NULL, PGF_T_SECONDS, "30", redis.replica_max_wait_ms, "S",
            "a standby down or this far behind no longer holds the second pass\n(nor the slot): the pass "
            "goes anyway, counted and logged"),
    SETTING("redis.password", NULL, PGF_T_PASSWORD, NULL, redis_password, "PW",
            "Redis password (or redis.password_file); never logged", .flags = PGF_S_SECRET | PGF_S_NOFILE),
    SETTING("redis.django", NULL, PGF_T_PRESET, NULL, redis.django, NULL,
            "Django's cache key format KEY_PREFIX:VERSION:key (key_prefix, version)", .flags = PGF_S_NOENV),
    SETTING("redis.cachalot", NULL, PGF_T_PRESET, NULL, redis.cachalot, NULL,
            "django-cachalot's table keys (db_alias)", .flags = PGF_S_NOENV),
    SETTING("redis.cacheops", NULL, PGF_T_PRESET, NULL, redis.cacheops, NULL,
            "django-cacheops' conj keys from every row change (prefix, insideout,\ndecimal_variants); needs "
            "REPLICA IDENTITY FULL", .flags = PGF_S_NOENV),
    SETTING("redis.rules", NULL, PGF_T_RULES, NULL, redis.rules, NULL,
            "the keys each table's changes invalidate (see pgfanout.example.yaml)", .flags = PGF_S_NOENV),
    SETTING("redis_addr", "redis", PGF_T_HOSTPORT, NULL, redis_addr, "HOST:PORT",
            "Redis server (overrides redis.host and redis.port); a path starting\nwith / is a unix socket",
            .flags = CLI, .sets = {"redis.host", "redis.port"}),
    SETTING("config", "config", PGF_T_STR, NULL, config_path, "FILE",
            "YAML file with every setting (see pgfanout.example.yaml)", .flags = PGF_S_NOFILE | PGF_S_CLI),
    SETTING("check_config", "check-config", PGF_T_BOOL, "false", check_config, NULL,
            "validate everything, print the effective settings (secrets\nredacted) and exit: 0 when valid, 2 "
            "when not", .flags = CLI),
    SETTING("probe", "probe", PGF_T_STR, NULL, probe_url, "URL",
            "GET HOST:PORT/path (e.g. 127.0.0.1:9187/healthz), exit 0 on 200, else 1", .flags = CLI),
    SETTING("help", "help", PGF_T_BOOL, "false", show_help, NULL, "show this help and exit", .short_flag = 'h',
            .flags = CLI),
    SETTING("version", "version", PGF_T_BOOL, "false", show_version, NULL, "show the version and exit",
            .flags = CLI),
};
const size_t pgf_nsettings = sizeof pgf_settings / sizeof *pgf_settings;
_Static_assert(sizeof pgf_settings / sizeof *pgf_settings <= PGF_MAX_SETTINGS, "raise PGF_MAX_SETTINGS");

/* Finds a row by file key; see settings.h. */
int pgf_setting_find(const char *key)
{
    for (size_t i = 0; i < pgf_nsettings; i++)
        if (strcmp(pgf_settings[i].key, key) == 0)
            return (int)i;
    return -1;
}

/* Finds a row by long flag; see settings.h. */
int pgf_setting_by_flag(const char *flag)
{
    for (size_t i = 0; i < pgf_nsettings; i++)
        if (pgf_settings[i].flag && strcmp(pgf_settings[i].flag, flag) == 0)
            return (int)i;
    return -1;
}

/* Derives the environment variable; see settings.h. */
char *pgf_setting_env(const struct pgf_setting *s, char *out, size_t len)
{
    size_t n = (size_t)snprintf(out, len, "PGFANOUT_");
    for (const char *k = s->key; *k && n + 1 < len; k++)
        out[n++] = *k == '.' ? '_' : (char)(*k >= 'a' && *k <= 'z' ? *k - 'a' + 'A' : *k);
    if (s->type == PGF_T_CONF && n + 1 < len)
        out[n++] = '_';
    out[n < len ? n : len - 1] = '\0';
    return out;
}

/* Parses a positive number of seconds (fractions allowed) into int milliseconds. */
static int parse_interval(const char *s, void *out)
{
    int *ms = out;
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !(v > 0) || v > 86400)
        return -1;
    *ms = (int)(v * 1000);
    return *ms > 0 ? 0 : -1;
}

/* Parses seconds as parse_interval does, or 0 for off; returns 0 or -1. */
static int parse_interval_off(const char *s, void *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end != s && *end == '\0' && v == 0) {
        *(int *)out = 0;
        return 0;
    }
    return parse_interval(s, out);
}

/* Parses a byte count with an optional k/M/G suffix into a size_t; returns 0 or -1. */
static int parse_bytes(const char *s, void *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno || *s == '-')
        return -1;
    unsigned long long mult = 1;
    if (*end == 'k' || *end == 'K') mult = 1ULL << 10, end++;
    else if (*end == 'M' || *end == 'm') mult = 1ULL << 20, end++;
    else if (*end == 'G' || *end == 'g') mult = 1ULL << 30, end++;
    if (*end != '\0' || v == 0 || v > (1ULL << 40) / mult)
        return -1;
    *(size_t *)out = (size_t)(v * mult);
    return 0;
}

/* Parses a whole non-negative number up to max; returns 0 or -1. */
static int parse_uint(const char *s, unsigned long max, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (*s < '0' || *s > '9' || *end != '\0' || errno || v > max)
        return -1;
    *out = (unsigned)v;
    return 0;
}

/* Parses a strict boolean into an int; returns 0 or -1. */
static int parse_bool(const char *s, void *out)
{
    if (strcmp(s, "true") == 0 || strcmp(s, "yes") == 0 || strcmp(s, "on") == 0)
        *(int *)out = 1;
    else if (strcmp(s, "false") == 0 || strcmp(s, "no") == 0 || strcmp(s, "off") == 0)
        *(int *)out = 0;
    else
        return -1;
    return 0;
}

/* Parses an LSN into a uint64_t; returns 0 or -1. */
static int parse_lsn(const char *s, void *out)
{
    return pgf_lsn_parse(s, out);
}

/* The types that parse text into their field with one function, and what they allow. */
static const struct {
    int (*parse)(const char *text, void *out);
    const char *allowed;
} simple_types[] = {
    [PGF_T_BOOL] = {parse_bool, "expected true or false (also yes/no, on/off)"},
    [PGF_T_SECONDS] = {parse_interval, "expected seconds, greater than 0 and at most 86400"},
    [PGF_T_SECONDS_OFF] = {parse_interval_off, "expected seconds, at most 86400, or 0 for off"},
    [PGF_T_BYTES] = {parse_bytes, "expected a positive size like 16M (suffixes k, M, G, either case)"},
    [PGF_T_LSN] = {parse_lsn, "expected an LSN like 0/16B3748"},
};

/* Parses a comma-separated sink list into PGF_SINK_* bits; returns 0, or -1 naming the bad
 * word in err. */
static int parse_sinks(const char *list, unsigned *sinks, char *err, size_t errlen)
{
    static const char *const names[] = {"stdout", "kafka", "redis", "null"};
    const size_t count = sizeof names / sizeof *names;
    char copy[256];
    snprintf(copy, sizeof copy, "%s", list);
    *sinks = 0;
    char *save = NULL;
    for (char *name = strtok_r(copy, ", ", &save); name; name = strtok_r(NULL, ", ", &save)) {
        size_t i = 0;
        while (i < count && strcmp(name, names[i]) != 0)
            i++;
        if (i == count) {
            snprintf(err, errlen, "unknown sink '%s'; allowed are stdout, kafka, redis, null", name);
            return -1;
        }
        *sinks |= 1u << i;
    }
    if (*sinks == 0) {
        snprintf(err, errlen, "no sink named; allowed are stdout, kafka, redis, null");
        return -1;
    }
    return 0;
}

/* True when text is one whole word of the ", "-separated list: "fail" matches, "fai" does not. */
static int is_choice(const char *choices, const char *text)
{
    size_t n = strlen(text);
    for (const char *c = choices; n && (c = strstr(c, text)) != NULL; c += n)
        if ((c == choices || c[-1] == ' ') && (c[n] == '\0' || c[n] == ','))
            return 1;
    return 0;
}

/* Splits --redis HOST:PORT (or a /socket path) into opts->redis_host and redis_port, which
 * layers.c gives redis.host and redis.port as the flag's values.  Returns NULL, or what is
 * allowed. */
static const char *split_hostport(const char *text, struct pgf_options *opts)
{
    const char *colon = strrchr(text, ':');
    unsigned port = 0;
    int tcp = text[0] != '/' && colon;
    if (tcp && (colon == text || parse_uint(colon + 1, 65535, &port) != 0 || port == 0))
        return "expected HOST:PORT (a port from 1 to 65535) or a unix socket path";
    snprintf(opts->redis_host, sizeof opts->redis_host, "%.*s", tcp ? (int)(colon - text) : (int)strlen(text), text);
    snprintf(opts->redis_port, sizeof opts->redis_port, "%s", tcp ? colon + 1 : "");
    return NULL;
}

/* Appends a "key=value" item to list.  Returns NULL, or what is allowed. */
static const char *add_item(struct pgf_conf_list *list, const char *text)
{
    if (strchr(text, '=') == NULL || text[0] == '=')
        return "expected \"key=value\", a librdkafka setting";
    if (list->n == PGF_MAX_CONF)
        return "too many entries (at most 64 from all layers together)";
    list->item[list->n++] = text;
    return NULL;
}

/* Parses one value; see settings.h. */
int pgf_setting_parse(const struct pgf_setting *s, const char *text, struct pgf_options *opts, char *err,
                      size_t errlen)
{
    void *field = (char *)opts + s->off;
    const char *why = NULL;
    int keep_text = 0; /* the value is the text itself: store the pointer */
    switch (s->type) {
    case PGF_T_STR:
    case PGF_T_DSN:
    case PGF_T_PASSWORD: keep_text = 1; break;
    case PGF_T_ADDR:
        keep_text = pgf_http_addr_valid(text);
        if (!keep_text)
            why = "expected HOST:PORT, [IPv6]:PORT or PORT, with a port from 1 to 65535";
        break;
    case PGF_T_CHOICE:
        keep_text = is_choice(s->choices, text);
        if (!keep_text)
            return snprintf(err, errlen, "expected one of %s", s->choices), -1;
        break;
    case PGF_T_BOOL:
    case PGF_T_SECONDS:
    case PGF_T_SECONDS_OFF:
    case PGF_T_BYTES:
    case PGF_T_LSN:
        if (simple_types[s->type].parse(text, field) != 0)
            why = simple_types[s->type].allowed;
        break;
    case PGF_T_SINKS: return parse_sinks(text, field, err, errlen);
    case PGF_T_UINT:
        if (parse_uint(text, 0xFFFFFFFFul, field) != 0)
            why = "allowed values: non-negative integers";
        else if (*(unsigned *)field == 0 && (s->flags & PGF_S_NONZERO))
            why = "allowed values: integers from 1 up (0 would read nothing, forever)";
        else if (*(unsigned *)field == 0 && (s->flags & PGF_S_ZERO_IS_DEFAULT))
            parse_uint(s->def, 0xFFFFFFFFul, field);
        break;
    case PGF_T_PORT:
        if (parse_uint(text, 65535, field) != 0 || *(unsigned *)field == 0)
            why = "allowed values: non-negative integers from 1 to 65535";
        break;
    case PGF_T_HOSTPORT:
        why = split_hostport(text, opts);
        keep_text = why == NULL;
        break;
    case PGF_T_CONF: why = add_item(field, text); break;
    case PGF_T_PRESET:
    case PGF_T_RULES: why = "only the config file can set it"; break;
    }
    if (why)
        return snprintf(err, errlen, "%s", why), -1;
    if (keep_text)
        memcpy(field, &text, sizeof text);
    return 0;
}

/* Copies one value; see settings.h. */
void pgf_setting_copy(const struct pgf_setting *s, struct pgf_options *to, const struct pgf_options *from)
{
    size_t size = sizeof(const char *);
    switch (s->type) {
    case PGF_T_BOOL:
    case PGF_T_SECONDS:
    case PGF_T_SECONDS_OFF: size = sizeof(int); break;
    case PGF_T_BYTES: size = sizeof(size_t); break;
    case PGF_T_LSN: size = sizeof(uint64_t); break;
    case PGF_T_SINKS:
    case PGF_T_UINT:
    case PGF_T_PORT: size = sizeof(unsigned); break;
    case PGF_T_CONF: size = 0; break; /* lists gather items from every layer instead */
    case PGF_T_RULES:
        to->redis.rules_count = from->redis.rules_count;
        break;
    default: break;
    }
    memcpy((char *)to + s->off, (const char *)from + s->off, size);
}

/* Describes an origin; see settings.h. */
char *pgf_origin_describe(const struct pgf_origin *o, char *out, size_t len)
{
    switch (o->layer) {
    case PGF_FROM_FILE: snprintf(out, len, "config file %s, line %d", o->file, o->line); break;
    case PGF_FROM_ENV: snprintf(out, len, "environment variable %s", o->name); break;
    case PGF_FROM_FLAG: snprintf(out, len, "flag %s", o->name); break;
    default: snprintf(out, len, "the default"); break;
    }
    return out;
}

/* Writes a bad value's error; see settings.h. */
char *pgf_setting_error(const struct pgf_setting *s, int index, const char *text, const struct pgf_origin *o,
                        const char *why, char *out, size_t len)
{
    char from[512], idx[16] = "";
    const char *key = s->flags & PGF_S_CLI ? o->name : s->key;
    pgf_origin_describe(o, from, sizeof from);
    if (index >= 0)
        snprintf(idx, sizeof idx, "[%d]", index);
    char value[300];
    snprintf(value, sizeof value, s->flags & PGF_S_SECRET ? "(hidden)" : "'%s'", text);
    if (s->type == PGF_T_CONF) /* the entry may hold a secret: never shown */
        snprintf(out, len, "invalid entry for %s%s (%s): %s", key, idx, from, why);
    else if (o->layer == PGF_FROM_FILE) /* as the file's other errors: where, then what */
        snprintf(out, len, "%s (%s): invalid value %s: %s", from, key, value, why);
    else
        snprintf(out, len, "invalid value %s for %s (%s): %s", value, key, from, why);
    return out;
}
