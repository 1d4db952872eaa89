/* options.c - command-line parsing with getopt_long. */
#include "cdc/options.h"

#include <errno.h>
#include <stddef.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/lsn.h"
#include "cdc/config.h"
#include "cdc/http.h"

#include <libpq-fe.h>

enum { OPT_SLOT = 256, OPT_PUBLICATION, OPT_CREATE_SLOT, OPT_CREATE_PUBLICATION, OPT_TABLES,
       OPT_SINK, OPT_ENDPOS, OPT_STATUS_INTERVAL, OPT_LOG_LEVEL, OPT_VERSION, OPT_KAFKA_BROKERS,
       OPT_KAFKA_CONF, OPT_TOPIC_TEMPLATE, OPT_TOPIC_PREFIX, OPT_MESSAGE_TOPIC, OPT_NO_TOMBSTONES,
       OPT_MAX_INFLIGHT, OPT_SHUTDOWN_TIMEOUT, OPT_CONFIG, OPT_REDIS, OPT_HTTP_LISTEN, OPT_PROBE,
       OPT_LOG_FORMAT, OPT_HEARTBEAT, OPT_DROP_SLOT, OPT_TEMP_SLOT, OPT_CHECK_CONFIG, OPT_ALLOW_NO_IDENTITY,
       OPT_ON_OVERSIZE, OPT_DEAD_LETTER_TOPIC };

static const struct option long_options[] = {
    {"dsn", required_argument, NULL, 'd'},
    {"slot", required_argument, NULL, OPT_SLOT},
    {"publication", required_argument, NULL, OPT_PUBLICATION},
    {"create-slot", no_argument, NULL, OPT_CREATE_SLOT},
    {"create-publication", no_argument, NULL, OPT_CREATE_PUBLICATION},
    {"tables", required_argument, NULL, OPT_TABLES},
    {"sink", required_argument, NULL, OPT_SINK},
    {"output", required_argument, NULL, 'o'},
    {"endpos", required_argument, NULL, OPT_ENDPOS},
    {"status-interval", required_argument, NULL, OPT_STATUS_INTERVAL},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"kafka-brokers", required_argument, NULL, OPT_KAFKA_BROKERS},
    {"kafka-conf", required_argument, NULL, OPT_KAFKA_CONF},
    {"topic-template", required_argument, NULL, OPT_TOPIC_TEMPLATE},
    {"topic-prefix", required_argument, NULL, OPT_TOPIC_PREFIX},
    {"message-topic", required_argument, NULL, OPT_MESSAGE_TOPIC},
    {"no-tombstones", no_argument, NULL, OPT_NO_TOMBSTONES},
    {"max-inflight-bytes", required_argument, NULL, OPT_MAX_INFLIGHT},
    {"shutdown-timeout", required_argument, NULL, OPT_SHUTDOWN_TIMEOUT},
    {"config", required_argument, NULL, OPT_CONFIG},
    {"redis", required_argument, NULL, OPT_REDIS},
    {"http-listen", required_argument, NULL, OPT_HTTP_LISTEN},
    {"probe", required_argument, NULL, OPT_PROBE},
    {"check-config", no_argument, NULL, OPT_CHECK_CONFIG},
    {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
    {"heartbeat-interval", required_argument, NULL, OPT_HEARTBEAT},
    {"drop-slot-on-exit", no_argument, NULL, OPT_DROP_SLOT},
    {"temporary-slot", no_argument, NULL, OPT_TEMP_SLOT},
    {"allow-missing-replica-identity", no_argument, NULL, OPT_ALLOW_NO_IDENTITY},
    {"kafka-on-oversize", required_argument, NULL, OPT_ON_OVERSIZE},
    {"dead-letter-topic", required_argument, NULL, OPT_DEAD_LETTER_TOPIC},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

/* Prints the help text. */
void pgf_options_usage(FILE *out)
{
    fputs(
        "pgfanout streams committed changes from a PostgreSQL logical replication slot (pgoutput).\n"
        "\n"
        "Usage: pgfanout [--dsn DSN] [--slot NAME] [--publication NAME] [options]\n"
        "\n"
        "Source:\n"
        "  -d, --dsn DSN            libpq connection string, e.g. \"host=127.0.0.1 dbname=app user=cdc\";\n"
        "                           unset parts come from PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD...\n"
        "                           (replication=database is added for you)\n"
        "      --slot NAME          logical replication slot to read (default: pgfanout)\n"
        "      --publication NAME   publication whose tables are streamed (default: pgfanout)\n"
        "      --create-slot        create the slot with the pgoutput plugin if it is missing\n"
        "      --create-publication create the publication if it is missing: FOR ALL TABLES,\n"
        "                           or FOR TABLE the --tables list\n"
        "      --tables LIST        comma-separated tables (schema.table or table) for --create-publication\n"
        "      --allow-missing-replica-identity  create the publication even though some of its tables\n"
        "                           have no replica identity (their UPDATEs and DELETEs will then fail)\n"
        "      --temporary-slot     create a temporary slot for this session only (ad-hoc runs; gone on exit,\n"
        "                           and recreated at the current position after a reconnect)\n"
        "      --drop-slot-on-exit  drop the slot after a clean stop\n"
        "      --heartbeat-interval S  write a transactional logical message every S seconds so the slot\n"
        "                           advances while the published tables are idle (needs EXECUTE on\n"
        "                           pg_logical_emit_message)\n"
        "      --endpos LSN         stop cleanly once the stream reaches LSN (e.g. 0/16B3748)\n"
        "      --status-interval S  seconds between standby status updates (default: 10)\n"
        "\n"
        "Output:\n"
        "      --sink LIST          where events go, comma-separated: stdout (default; one JSON object\n"
        "                           per line), kafka (protobuf pgfanout.v1.Event records) and/or\n"
        "                           redis (cache invalidation by the rules in --config)\n"
        "      --config FILE        YAML configuration: the redis section's rules (see pgfanout.example.yaml)\n"
        "      --redis HOST:PORT    Redis server for --sink redis (overrides redis.host and redis.port);\n"
        "                           a path starting with / is a unix socket. Password: PGFANOUT_REDIS_PASSWORD\n"
        "  -o, --output FILE        append JSON lines to FILE instead of standard output\n"
        "      --kafka-brokers LIST bootstrap servers, e.g. 127.0.0.1:9092\n"
        "      --kafka-conf K=V     any librdkafka setting, applied after pgfanout's defaults\n"
        "                           (repeatable; e.g. security.protocol=SASL_SSL)\n"
        "      --topic-template T   topic of a table's events (default: {prefix}.{schema}.{table});\n"
        "                           placeholders {prefix} {database} {schema} {table}\n"
        "      --topic-prefix P     value of {prefix} (default: pgfanout)\n"
        "      --message-topic T    topic of logical decoding messages (default: {prefix}.messages)\n"
        "      --no-tombstones      do not follow a delete with a null-value record\n"
        "      --kafka-on-oversize A  a record larger than the broker accepts: fail (default; exit 1,\n"
        "                           the slot holds it), dead_letter (a small record to the dead-letter\n"
        "                           topic instead) or skip (logged and counted)\n"
        "      --dead-letter-topic T  topic for dead_letter records (default: {prefix}.dead_letter;\n"
        "                           placeholders {prefix} {database})\n"
        "      --max-inflight-bytes N  stop reading the slot while this many bytes are unacknowledged\n"
        "                           (default: 16M; suffixes k, M, G)\n"
        "      --shutdown-timeout S seconds to wait for acknowledgements when stopping (default: 30)\n"
        "\n"
        "Configuration:\n"
        "      --config FILE        YAML file with every setting (see pgfanout.example.yaml); also\n"
        "                           PGFANOUT_CONFIG. Each setting can come from PGFANOUT_<SECTION>_<KEY>\n"
        "                           too (PGFANOUT_SOURCE_DSN, PGFANOUT_KAFKA_BROKERS, PGFANOUT_REDIS_HOST...);\n"
        "                           flags override the environment, which overrides the file\n"
        "      --check-config       validate everything, print the effective settings (secrets\n"
        "                           redacted) and exit: 0 when valid, 2 when not\n"
        "\n"
        "Other:\n"
        "      --log-level LEVEL    debug, info (default), warn or error; logs go to stderr\n"
        "      --log-format F       text (default), logfmt or json\n"
        "      --http-listen ADDR   serve /metrics, /healthz and /readyz on HOST:PORT (a bare PORT binds\n"
        "                           127.0.0.1); off unless set\n"
        "      --probe URL          GET HOST:PORT/path (e.g. 127.0.0.1:9187/healthz), exit 0 on 200, else 1\n"
        "  -h, --help               show this help and exit\n"
        "      --version            show the version and exit\n"
        "\n"
        "Exit status: 0 after a clean stop (--endpos reached, SIGINT or SIGTERM), 1 on error,\n"
        "2 on a bad command line.\n",
        out);
}

/* Parses a positive number of seconds (fractions allowed) into milliseconds. */
static int parse_interval(const char *s, int *ms)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !(v > 0) || v > 86400)
        return -1;
    *ms = (int)(v * 1000);
    return *ms > 0 ? 0 : -1;
}

/* Parses a byte count with an optional k/M/G suffix; returns 0 or -1. */
static int parse_bytes(const char *s, size_t *out)
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
    *out = (size_t)(v * mult);
    return 0;
}

/* How a setting's text becomes a value. */
enum stype { S_STR, S_BOOL, S_SECONDS, S_BYTES, S_LSN, S_SINKS, S_LOGLEVEL, S_LOGFORMAT, S_ADDR, S_CHOICE };

/* One setting: its key in the config file (its environment variable is PGFANOUT_ and the key
 * in capitals with '.' as '_'), its flag, and where its value goes. */
struct setting {
    const char *key;
    const char *flag;
    enum stype type;
    size_t off; /* in struct pgf_options */
    size_t file_off; /* in the config section named by the key's first part */
    int secret;
    const char *choices; /* S_CHOICE: the allowed words, separated by ", " */
};

#define OPT(m) offsetof(struct pgf_options, m)
static const struct setting settings[] = {
    {"source.dsn", "dsn", S_STR, OPT(dsn), offsetof(struct pgf_source_cfg, dsn), 1, NULL},
    {"source.slot", "slot", S_STR, OPT(slot), offsetof(struct pgf_source_cfg, slot), 0, NULL},
    {"source.publication", "publication", S_STR, OPT(publication), offsetof(struct pgf_source_cfg, publication), 0, NULL},
    {"source.tables", "tables", S_STR, OPT(tables), offsetof(struct pgf_source_cfg, tables), 0, NULL},
    {"source.create_slot", "create-slot", S_BOOL, OPT(create_slot), offsetof(struct pgf_source_cfg, create_slot), 0, NULL},
    {"source.create_publication", "create-publication", S_BOOL, OPT(create_publication),
     offsetof(struct pgf_source_cfg, create_publication), 0, NULL},
    {"source.temporary_slot", "temporary-slot", S_BOOL, OPT(temporary_slot),
     offsetof(struct pgf_source_cfg, temporary_slot), 0, NULL},
    {"source.allow_missing_replica_identity", "allow-missing-replica-identity", S_BOOL,
     OPT(allow_missing_identity), offsetof(struct pgf_source_cfg, allow_missing_replica_identity), 0, NULL},
    {"source.drop_slot_on_exit", "drop-slot-on-exit", S_BOOL, OPT(drop_slot_on_exit),
     offsetof(struct pgf_source_cfg, drop_slot_on_exit), 0, NULL},
    {"source.status_interval", "status-interval", S_SECONDS, OPT(status_interval_ms),
     offsetof(struct pgf_source_cfg, status_interval), 0, NULL},
    {"source.heartbeat_interval", "heartbeat-interval", S_SECONDS, OPT(heartbeat_interval_ms),
     offsetof(struct pgf_source_cfg, heartbeat_interval), 0, NULL},
    {"source.endpos", "endpos", S_LSN, OPT(endpos), offsetof(struct pgf_source_cfg, endpos), 0, NULL},
    {"sinks", "sink", S_SINKS, 0, 0, 0, NULL},
    {"stdout.output", "output", S_STR, OPT(output), offsetof(struct pgf_stdout_cfg, output), 0, NULL},
    {"kafka.brokers", "kafka-brokers", S_STR, OPT(kafka_brokers), offsetof(struct pgf_kafka_cfg, brokers), 0, NULL},
    {"kafka.topic_template", "topic-template", S_STR, OPT(topic_template),
     offsetof(struct pgf_kafka_cfg, topic_template), 0, NULL},
    {"kafka.topic_prefix", "topic-prefix", S_STR, OPT(topic_prefix), offsetof(struct pgf_kafka_cfg, topic_prefix), 0, NULL},
    {"kafka.message_topic", "message-topic", S_STR, OPT(message_topic),
     offsetof(struct pgf_kafka_cfg, message_topic), 0, NULL},
    {"kafka.on_oversize", "kafka-on-oversize", S_CHOICE, OPT(on_oversize), offsetof(struct pgf_kafka_cfg, on_oversize),
     0, "fail, dead_letter, skip"},
    {"kafka.dead_letter_topic", "dead-letter-topic", S_STR, OPT(dead_letter_topic),
     offsetof(struct pgf_kafka_cfg, dead_letter_topic), 0, NULL},
    {"kafka.tombstones", "no-tombstones", S_BOOL, OPT(tombstones), offsetof(struct pgf_kafka_cfg, tombstones), 0, NULL},
    {"http.listen", "http-listen", S_ADDR, OPT(http_listen), offsetof(struct pgf_http_cfg, listen), 0, NULL},
    {"log.level", "log-level", S_LOGLEVEL, 0, offsetof(struct pgf_log_cfg, level), 0, NULL},
    {"log.format", "log-format", S_LOGFORMAT, 0, offsetof(struct pgf_log_cfg, format), 0, NULL},
    {"max_inflight_bytes", "max-inflight-bytes", S_BYTES, OPT(max_inflight_bytes),
     offsetof(struct pgf_config, max_inflight_bytes), 0, NULL},
    {"shutdown_timeout", "shutdown-timeout", S_SECONDS, OPT(shutdown_timeout_ms),
     offsetof(struct pgf_config, shutdown_timeout), 0, NULL},
};
#define NSETTINGS (sizeof settings / sizeof *settings)

/* Returns the setting whose flag is name, or NULL. */
static const struct setting *setting_by_flag(const char *name)
{
    for (size_t i = 0; i < NSETTINGS; i++)
        if (strcmp(settings[i].flag, name) == 0)
            return &settings[i];
    return NULL;
}

/* Writes the environment variable of a setting: PGFANOUT_SOURCE_DSN for source.dsn. */
static void env_name(const struct setting *s, char *out, size_t len)
{
    size_t n = (size_t)snprintf(out, len, "PGFANOUT_");
    for (const char *k = s->key; *k && n + 1 < len; k++)
        out[n++] = *k == '.' ? '_' : (char)(*k >= 'a' && *k <= 'z' ? *k - 'a' + 'A' : *k);
    out[n] = '\0';
}

/* Returns the config file's text for a setting, or NULL when the file does not set it. */
static const char *file_value(const struct pgf_config *cfg, const struct setting *s)
{
    if (cfg == NULL)
        return NULL;
    const void *sec = cfg;
    if (strncmp(s->key, "source.", 7) == 0) sec = cfg->source;
    else if (strncmp(s->key, "stdout.", 7) == 0) sec = cfg->stdout_sink;
    else if (strncmp(s->key, "kafka.", 6) == 0) sec = cfg->kafka;
    else if (strncmp(s->key, "http.", 5) == 0) sec = cfg->http;
    else if (strncmp(s->key, "log.", 4) == 0) sec = cfg->log;
    if (sec == NULL || s->type == S_SINKS)
        return NULL;
    const char *v;
    memcpy(&v, (const char *)sec + s->file_off, sizeof v);
    /* libcyaml hands YAML's null to a string field as its text; null means "not set". */
    if (v && (strcmp(v, "null") == 0 || strcmp(v, "~") == 0 || strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0))
        return NULL;
    return v;
}

/* Parses a strict boolean; returns 0 or -1. */
static int parse_bool(const char *s, int *out)
{
    if (strcmp(s, "true") == 0 || strcmp(s, "yes") == 0 || strcmp(s, "on") == 0)
        *out = 1;
    else if (strcmp(s, "false") == 0 || strcmp(s, "no") == 0 || strcmp(s, "off") == 0)
        *out = 0;
    else
        return -1;
    return 0;
}

/* Parses a comma-separated sink list into opts; returns 0, or -1 naming the bad word in err. */
static int parse_sinks(const char *list, struct pgf_options *opts, char *err, size_t errlen)
{
    char copy[256];
    snprintf(copy, sizeof copy, "%s", list);
    opts->sink_stdout = opts->sink_kafka = opts->sink_redis = 0;
    char *save = NULL;
    for (char *name = strtok_r(copy, ", ", &save); name; name = strtok_r(NULL, ", ", &save)) {
        if (strcmp(name, "stdout") == 0)
            opts->sink_stdout = 1;
        else if (strcmp(name, "kafka") == 0)
            opts->sink_kafka = 1;
        else if (strcmp(name, "redis") == 0)
            opts->sink_redis = 1;
        else {
            snprintf(err, errlen, "unknown sink '%s'; allowed are stdout, kafka, redis", name);
            return -1;
        }
    }
    if (!opts->sink_stdout && !opts->sink_kafka && !opts->sink_redis) {
        snprintf(err, errlen, "no sink named; allowed are stdout, kafka, redis");
        return -1;
    }
    return 0;
}

/* Applies one setting's text to opts; returns 0, or -1 with what is allowed in err. */
static int apply(const struct setting *s, const char *v, struct pgf_options *opts, char *err, size_t errlen)
{
    char *field = (char *)opts + s->off;
    int b;
    switch (s->type) {
    case S_ADDR:
        if (!pgf_http_addr_valid(v)) {
            snprintf(err, errlen, "expected HOST:PORT, [IPv6]:PORT or PORT, with a port from 1 to 65535");
            return -1;
        }
        memcpy(field, &v, sizeof v);
        return 0;
    case S_CHOICE: {
        /* A whole word of the list: "fail" matches, "fai" does not. */
        size_t n = strlen(v);
        for (const char *c = s->choices; n && (c = strstr(c, v)) != NULL; c += n)
            if ((c == s->choices || c[-1] == ' ') && (c[n] == '\0' || c[n] == ','))
                return memcpy(field, &v, sizeof v), 0;
        snprintf(err, errlen, "expected one of %s", s->choices);
        return -1;
    }
    case S_STR:
        memcpy(field, &v, sizeof v);
        return 0;
    case S_BOOL:
        if (parse_bool(v, &b) != 0) {
            snprintf(err, errlen, "expected true or false");
            return -1;
        }
        memcpy(field, &b, sizeof b);
        return 0;
    case S_SECONDS:
        if (parse_interval(v, (int *)(void *)field) != 0) {
            snprintf(err, errlen, "expected seconds, greater than 0 and at most 86400");
            return -1;
        }
        return 0;
    case S_BYTES:
        if (parse_bytes(v, &opts->max_inflight_bytes) != 0) {
            snprintf(err, errlen, "expected a positive size like 16M (suffixes k, M, G, either case)");
            return -1;
        }
        return 0;
    case S_LSN:
        if (pgf_lsn_parse(v, &opts->endpos) != 0) {
            snprintf(err, errlen, "expected an LSN like 0/16B3748");
            return -1;
        }
        opts->has_endpos = 1;
        return 0;
    case S_SINKS:
        return parse_sinks(v, opts, err, errlen);
    case S_LOGLEVEL: {
        enum pgf_log_level level;
        if (pgf_log_parse_level(v, &level) != 0) {
            snprintf(err, errlen, "expected debug, info, warn or error");
            return -1;
        }
        pgf_log_set_level(level);
        opts->log_level = v;
        return 0;
    }
    case S_LOGFORMAT:
        if (pgf_log_set_format(v) != 0) {
            snprintf(err, errlen, "expected text, logfmt or json");
            return -1;
        }
        opts->log_format = v;
        return 0;
    }
    return -1;
}

/* Prints the error for a bad value, naming where it came from; never echoes a secret. */
static void bad_value(const struct setting *s, const char *v, const char *from, const char *why)
{
    fprintf(stderr, "pgfanout: invalid value %s%s%s for %s (%s): %s\n", s->secret ? "" : "'",
            s->secret ? "(hidden)" : v, s->secret ? "" : "'", s->key, from, why);
}

/* Parses argv, the environment and the config file; see options.h. */
int pgf_options_parse(int argc, char **argv, struct pgf_options *opts, struct pgf_config **cfgp)
{
    memset(opts, 0, sizeof *opts);
    *cfgp = NULL;
    opts->dsn = "";
    opts->slot = "pgfanout";
    opts->publication = "pgfanout";
    opts->sink_stdout = 1;
    opts->status_interval_ms = 10000;
    opts->topic_template = "{prefix}.{schema}.{table}";
    opts->topic_prefix = "pgfanout";
    opts->message_topic = "{prefix}.messages";
    opts->tombstones = 1;
    opts->on_oversize = "fail";
    opts->dead_letter_topic = "{prefix}.dead_letter";
    opts->max_inflight_bytes = 16u << 20;
    opts->shutdown_timeout_ms = 30000;
    opts->log_level = "info";
    opts->log_format = "text";
    const char *flagval[NSETTINGS] = {0};
    const char *flag_conf[64];
    size_t nflag_conf = 0;
    opterr = 0; /* we print our own messages, naming the flag */
    int c, index;
    while ((c = getopt_long(argc, argv, ":d:o:h", long_options, &index)) != -1) {
        const char *name = c == 'd' ? "dsn" : c == 'o' ? "output" : c >= OPT_SLOT ? long_options[index].name : NULL;
        const struct setting *s = name ? setting_by_flag(name) : NULL;
        if (s) {
            /* Flags without a value set booleans; --no-tombstones sets one to false. */
            flagval[s - settings] = long_options[index].has_arg == no_argument && c >= OPT_SLOT
                                        ? (strcmp(name, "no-tombstones") == 0 ? "false" : "true")
                                        : optarg;
            continue;
        }
        switch (c) {
        case OPT_CONFIG: opts->config_path = optarg; break;
        case OPT_REDIS: opts->redis_addr = optarg; break;
        case OPT_PROBE: opts->probe_url = optarg; break;
        case OPT_CHECK_CONFIG: opts->check_config = 1; break;
        case 'h': opts->show_help = 1; break;
        case OPT_VERSION: opts->show_version = 1; break;
        case OPT_KAFKA_CONF:
            if (nflag_conf == sizeof flag_conf / sizeof *flag_conf) {
                fprintf(stderr, "pgfanout: too many --kafka-conf flags (at most 64)\n");
                return -1;
            }
            if (strchr(optarg, '=') == NULL || optarg[0] == '=') {
                fprintf(stderr, "pgfanout: invalid --kafka-conf: expected key=value\n");
                return -1;
            }
            flag_conf[nflag_conf++] = optarg;
            break;
        case ':':
            fprintf(stderr, "pgfanout: flag %s needs a value; see pgfanout --help\n", argv[optind - 1]);
            return -1;
        default:
            if (optopt)
                fprintf(stderr, "pgfanout: unknown flag -%c; see pgfanout --help\n", optopt);
            else
                fprintf(stderr, "pgfanout: unknown flag %s; see pgfanout --help\n", argv[optind - 1]);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "pgfanout: unexpected argument '%s'; see pgfanout --help\n", argv[optind]);
        return -1;
    }
    if (opts->show_help || opts->show_version || opts->probe_url)
        return 0;
    if (opts->config_path == NULL)
        opts->config_path = getenv("PGFANOUT_CONFIG");
    char err[1024];
    if (opts->config_path && pgf_config_load(opts->config_path, cfgp, err, sizeof err) != 0) {
        fprintf(stderr, "pgfanout: %s\n", err);
        return -1;
    }
    const struct pgf_config *cfg = *cfgp;
    /* Lowest precedence first: the file, then the environment, then flags. */
    for (size_t i = 0; i < NSETTINGS; i++) {
        const struct setting *s = &settings[i];
        char env[96], from[512], sinks[256];
        env_name(s, env, sizeof env);
        const char *v = flagval[i];
        if (v) {
            snprintf(from, sizeof from, "flag --%s", s->flag);
        } else if ((v = getenv(env)) != NULL) {
            snprintf(from, sizeof from, "environment variable %s", env);
        } else if (s->type == S_SINKS && cfg && cfg->sinks_count == 0 && opts->config_path &&
                   pgf_config_line_of(opts->config_path, "sinks") > 0) { /* "sinks: []" loads as NULL */
            fprintf(stderr, "pgfanout: invalid value [] for sinks (config file %s, line %d): name at least one of "
                            "stdout, kafka, redis\n", opts->config_path, pgf_config_line_of(opts->config_path, "sinks"));
            return -1;
        } else if (s->type == S_SINKS && cfg && cfg->sinks_count > 0) {
            size_t n = 0;
            sinks[0] = '\0';
            for (unsigned k = 0; k < cfg->sinks_count && n < sizeof sinks; k++)
                n += (size_t)snprintf(sinks + n, sizeof sinks - n, "%s%s", k ? "," : "", cfg->sinks[k]);
            v = sinks;
            snprintf(from, sizeof from, "config file %s, line %d", opts->config_path,
                     pgf_config_line_of(opts->config_path, "sinks"));
        } else if ((v = file_value(cfg, s)) != NULL) {
            snprintf(from, sizeof from, "config file %s, line %d", opts->config_path,
                     pgf_config_line_of(opts->config_path, s->key));
        } else {
            continue;
        }
        opts->origin[i] = flagval[i] ? "flag" : getenv(env) ? "environment" : "config file";
        if (apply(s, v, opts, err, sizeof err) != 0) {
            bad_value(s, v, from, err);
            return -1;
        }
    }
    /* librdkafka settings: the file's, then PGFANOUT_KAFKA_CONF_<KEY> (sasl.password from
     * PGFANOUT_KAFKA_CONF_SASL_PASSWORD, so secrets need not sit in the file), then flags. */
    for (unsigned k = 0; cfg && cfg->kafka && k < cfg->kafka->conf_count; k++) {
        const char *kv = cfg->kafka->conf[k], *eq = strchr(kv, '=');
        if (eq == NULL || eq == kv) {
            char path[64];
            snprintf(path, sizeof path, "kafka.conf[%u]", k);
            fprintf(stderr, "pgfanout: invalid entry for %s (config file %s, line %d): expected \"key=value\", "
                            "a librdkafka setting\n", path, opts->config_path,
                    pgf_config_line_of(opts->config_path, path));
            return -1;
        }
        if (opts->nkafka_conf < 64) {
            char path[64];
            snprintf(path, sizeof path, "kafka.conf[%u]", k);
            snprintf(opts->conf_origin[opts->nkafka_conf], sizeof opts->conf_origin[0], "config file %s, line %d",
                     opts->config_path, pgf_config_line_of(opts->config_path, path));
            opts->kafka_conf[opts->nkafka_conf++] = kv;
        }
    }
    extern char **environ;
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "PGFANOUT_KAFKA_CONF_", 20) != 0 || strchr(*e, '=') == NULL || opts->nkafka_conf >= 64)
            continue;
        size_t n = 0;
        char *key = opts->env_conf[opts->nkafka_conf];
        for (const char *p = *e + 20; *p != '=' && n + 1 < sizeof opts->env_conf[0]; p++)
            key[n++] = *p == '_' ? '.' : (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
        snprintf(key + n, sizeof opts->env_conf[0] - n, "%s", strchr(*e, '='));
        opts->kafka_conf[opts->nkafka_conf] = key;
        snprintf(opts->conf_origin[opts->nkafka_conf], sizeof opts->conf_origin[0], "environment variable %.*s",
                 (int)(strchr(*e, '=') - *e), *e);
        opts->nkafka_conf++;
    }
    for (size_t k = 0; k < nflag_conf && opts->nkafka_conf < 64; k++) {
        snprintf(opts->conf_origin[opts->nkafka_conf], sizeof opts->conf_origin[0], "flag --kafka-conf");
        opts->kafka_conf[opts->nkafka_conf++] = flag_conf[k];
    }
    if (opts->sink_kafka && opts->kafka_brokers == NULL) {
        int has_bootstrap = 0;
        for (size_t i = 0; i < opts->nkafka_conf; i++)
            has_bootstrap |= strncmp(opts->kafka_conf[i], "bootstrap.servers=", 18) == 0;
        if (!has_bootstrap) {
            fprintf(stderr, "pgfanout: the kafka sink needs brokers: --kafka-brokers HOST:PORT, "
                            "PGFANOUT_KAFKA_BROKERS or kafka.brokers\n");
            return -1;
        }
    }
    if (opts->tables && !opts->create_publication) {
        fprintf(stderr, "pgfanout: --tables only applies with --create-publication\n");
        return -1;
    }
    if (!*opts->slot || !*opts->publication) {
        fprintf(stderr, "pgfanout: --slot and --publication must not be empty\n");
        return -1;
    }
    return 0;
}

/* Prints a YAML scalar in double quotes with escapes. */
static void print_quoted(FILE *out, const char *v)
{
    fputc('"', out);
    for (; *v; v++) {
        if (*v == '"' || *v == '\\')
            fputc('\\', out);
        fputc(*v, out);
    }
    fputc('"', out);
}

/* Prints a DSN with its password replaced; libpq parses both key=value and URI forms. */
static void print_dsn(FILE *out, const char *dsn)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(dsn, &err);
    if (opts == NULL) {
        fputs("\"(not a valid connection string)\"", out);
        PQfreemem(err);
        return;
    }
    char buf[2048];
    size_t n = 0;
    buf[0] = '\0';
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (o->val && o->val[0] && n < sizeof buf)
            n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%s=%s", n ? " " : "", o->keyword,
                                  strstr(o->keyword, "password") ? "*****" : o->val); /* also sslpassword */
    PQconninfoFree(opts);
    print_quoted(out, buf);
}

/* True for librdkafka settings that hold secrets. */
static int secret_kafka_key(const char *kv)
{
    const char *eq = strchr(kv, '=');
    size_t len = eq ? (size_t)(eq - kv) : strlen(kv);
    char key[128];
    snprintf(key, sizeof key, "%.*s", (int)len, kv);
    return strstr(key, "password") || strstr(key, "secret") || strstr(key, "sasl.oauthbearer.config") ||
           strstr(key, "ssl.key.pem");
}

/* Prints the effective settings; see options.h. */
void pgf_options_print(FILE *out, const struct pgf_options *opts, const struct pgf_config *cfg,
                       const struct pgf_redis_cfg *redis, size_t nrules)
{
    fputs("# pgfanout effective configuration: flags > environment > config file > defaults.\n", out);
    char section[32] = "";
    for (size_t i = 0; i < NSETTINGS; i++) {
        const struct setting *s = &settings[i];
        const char *dot = strchr(s->key, '.');
        char sec[32] = "";
        if (dot)
            snprintf(sec, sizeof sec, "%.*s", (int)(dot - s->key), s->key);
        if (sec[0] && strcmp(sec, section) != 0)
            fprintf(out, "%s:\n", sec);
        snprintf(section, sizeof section, "%s", sec);
        fprintf(out, "%s%s: ", dot ? "  " : "", dot ? dot + 1 : s->key);
        const char *field = (const char *)opts + s->off;
        switch (s->type) {
        case S_ADDR:
        case S_CHOICE:
        case S_STR: {
            const char *v;
            memcpy(&v, field, sizeof v);
            if (s->secret)
                print_dsn(out, v ? v : "");
            else if (v)
                print_quoted(out, v);
            else
                fputs("null", out);
            break;
        }
        case S_BOOL:
            fputs(*(const int *)(const void *)field ? "true" : "false", out);
            break;
        case S_SECONDS: {
            int ms = *(const int *)(const void *)field;
            if (ms)
                fprintf(out, "%g", ms / 1000.0);
            else
                fputs("null", out);
            break;
        }
        case S_BYTES:
            fprintf(out, "%zu", opts->max_inflight_bytes);
            break;
        case S_LSN: {
            char lsn[PGF_LSN_BUFSZ];
            if (opts->has_endpos)
                fprintf(out, "\"%s\"", pgf_lsn_format(opts->endpos, lsn));
            else
                fputs("null", out);
            break;
        }
        case S_SINKS:
            fprintf(out, "[%s%s%s%s%s]", opts->sink_stdout ? "stdout" : "",
                    opts->sink_stdout && (opts->sink_kafka || opts->sink_redis) ? ", " : "",
                    opts->sink_kafka ? "kafka" : "", opts->sink_kafka && opts->sink_redis ? ", " : "",
                    opts->sink_redis ? "redis" : "");
            break;
        case S_LOGLEVEL:
            print_quoted(out, opts->log_level);
            break;
        case S_LOGFORMAT:
            print_quoted(out, opts->log_format);
            break;
        }
        fprintf(out, "  # %s\n", opts->origin[i] ? opts->origin[i] : "default");
        if (strcmp(s->key, "kafka.tombstones") == 0) {
            fputs("  conf:\n", out);
            for (size_t k = 0; k < opts->nkafka_conf; k++) {
                const char *eq = strchr(opts->kafka_conf[k], '=');
                fprintf(out, "    - \"%.*s=%s\"\n", (int)(eq - opts->kafka_conf[k]), opts->kafka_conf[k],
                        secret_kafka_key(opts->kafka_conf[k]) ? "*****" : eq + 1);
            }
        }
    }
    fputs("redis:\n", out);
    /* Where each Redis setting came from: --redis, PGFANOUT_REDIS_<KEY>, the file, or default. */
    static const struct {
        const char *key, *env;
        size_t off;
        int is_str;
    } rk[] = {
        {"host", "PGFANOUT_REDIS_HOST", offsetof(struct pgf_redis_cfg, host), 1},
        {"port", "PGFANOUT_REDIS_PORT", offsetof(struct pgf_redis_cfg, port), 0},
        {"db", "PGFANOUT_REDIS_DB", offsetof(struct pgf_redis_cfg, db), 0},
        {"username", "PGFANOUT_REDIS_USERNAME", offsetof(struct pgf_redis_cfg, username), 1},
        {"password_file", "PGFANOUT_REDIS_PASSWORD_FILE", offsetof(struct pgf_redis_cfg, password_file), 1},
        {"tls", "PGFANOUT_REDIS_TLS", offsetof(struct pgf_redis_cfg, tls), 0},
        {"window", "PGFANOUT_REDIS_WINDOW", offsetof(struct pgf_redis_cfg, window), 0},
        {"linger_ms", "PGFANOUT_REDIS_LINGER_MS", offsetof(struct pgf_redis_cfg, linger_ms), 0},
        {"command_timeout_ms", "PGFANOUT_REDIS_COMMAND_TIMEOUT_MS", offsetof(struct pgf_redis_cfg, command_timeout_ms), 0},
        {"message_prefix", "PGFANOUT_REDIS_MESSAGE_PREFIX", offsetof(struct pgf_redis_cfg, message_prefix), 1},
    };
    static const unsigned defaults[] = {0, 6379, 0, 0, 0, 0, 64, 0, 10000, 0};
    for (size_t i = 0; i < sizeof rk / sizeof *rk; i++) {
        const char *field = (const char *)redis + rk[i].off;
        const char *from = "default";
        if (opts->redis_addr && i < 2)
            from = "flag --redis";
        else if (getenv(rk[i].env))
            from = "environment";
        else if (cfg && cfg->redis && opts->config_path) {
            /* Present in the file, even when its value equals the default (db: 0). */
            char key[64];
            snprintf(key, sizeof key, "redis.%s", rk[i].key);
            if (pgf_config_line_of(opts->config_path, key) > 0)
                from = "config file";
        }
        fprintf(out, "  %s: ", rk[i].key);
        if (rk[i].is_str) {
            const char *v;
            memcpy(&v, field, sizeof v);
            if (v == NULL && i == 0)
                v = "127.0.0.1";
            if (v == NULL && i == 9)
                v = "pgfanout.invalidate";
            if (v)
                print_quoted(out, v);
            else
                fputs("null", out);
        } else if (i == 5) {
            fputs(*(const int *)(const void *)field ? "true" : "false", out);
        } else {
            unsigned v = *(const unsigned *)(const void *)field;
            fprintf(out, "%u", v ? v : defaults[i]);
        }
        fprintf(out, "  # %s\n", from);
    }
    fprintf(out, "  password: %s\n", getenv("PGFANOUT_REDIS_PASSWORD") ? "\"*****\"  # environment PGFANOUT_REDIS_PASSWORD"
                                     : redis->password_file ? "\"*****\"  # password_file" : "null  # none");
    const char *const parts[] = {"django", "cachalot", "rules"};
    for (int p = 0; p < 3; p++) {
        char key[32];
        snprintf(key, sizeof key, "redis.%s", parts[p]);
        int in_file = opts->config_path && pgf_config_line_of(opts->config_path, key) > 0;
        if (p < 2)
            fprintf(out, "  %s: %s", parts[p], (p == 0 ? redis->django != NULL : redis->cachalot != NULL) ? "on" : "off");
        else
            fprintf(out, "  rules: %zu", nrules);
        fprintf(out, "  # %s\n", in_file ? "config file" : "default");
    }
}
