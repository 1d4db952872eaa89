/* options.c - command-line parsing with getopt_long. */
#include "cdc/options.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/log.h"
#include "cdc/lsn.h"

enum { OPT_SLOT = 256, OPT_PUBLICATION, OPT_CREATE_SLOT, OPT_CREATE_PUBLICATION, OPT_TABLES,
       OPT_SINK, OPT_ENDPOS, OPT_STATUS_INTERVAL, OPT_LOG_LEVEL, OPT_VERSION, OPT_KAFKA_BROKERS,
       OPT_KAFKA_CONF, OPT_TOPIC_TEMPLATE, OPT_TOPIC_PREFIX, OPT_MESSAGE_TOPIC, OPT_NO_TOMBSTONES,
       OPT_MAX_INFLIGHT, OPT_SHUTDOWN_TIMEOUT, OPT_CONFIG, OPT_REDIS, OPT_HTTP_LISTEN, OPT_PROBE,
       OPT_LOG_FORMAT, OPT_HEARTBEAT, OPT_DROP_SLOT, OPT_TEMP_SLOT };

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
    {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
    {"heartbeat-interval", required_argument, NULL, OPT_HEARTBEAT},
    {"drop-slot-on-exit", no_argument, NULL, OPT_DROP_SLOT},
    {"temporary-slot", no_argument, NULL, OPT_TEMP_SLOT},
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
        "      --max-inflight-bytes N  stop reading the slot while this many bytes are unacknowledged\n"
        "                           (default: 16M; suffixes k, M, G)\n"
        "      --shutdown-timeout S seconds to wait for acknowledgements when stopping (default: 30)\n"
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
    else if (*end == 'M') mult = 1ULL << 20, end++;
    else if (*end == 'G') mult = 1ULL << 30, end++;
    if (*end != '\0' || v == 0 || v > (1ULL << 40) / mult)
        return -1;
    *out = (size_t)(v * mult);
    return 0;
}

/* Parses argv; see options.h. */
int pgf_options_parse(int argc, char **argv, struct pgf_options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->dsn = "";
    opts->slot = "pgfanout";
    opts->publication = "pgfanout";
    const char *sinks = "stdout";
    opts->status_interval_ms = 10000;
    opts->topic_template = "{prefix}.{schema}.{table}";
    opts->topic_prefix = "pgfanout";
    opts->message_topic = "{prefix}.messages";
    opts->tombstones = 1;
    opts->max_inflight_bytes = 16u << 20;
    opts->shutdown_timeout_ms = 30000;
    opterr = 0; /* we print our own messages, naming the flag */
    int c;
    while ((c = getopt_long(argc, argv, ":d:o:h", long_options, NULL)) != -1) {
        switch (c) {
        case 'd': opts->dsn = optarg; break;
        case OPT_SLOT: opts->slot = optarg; break;
        case OPT_PUBLICATION: opts->publication = optarg; break;
        case OPT_CREATE_SLOT: opts->create_slot = 1; break;
        case OPT_CREATE_PUBLICATION: opts->create_publication = 1; break;
        case OPT_TABLES: opts->tables = optarg; break;
        case OPT_SINK: sinks = optarg; break;
        case OPT_KAFKA_BROKERS: opts->kafka_brokers = optarg; break;
        case OPT_TOPIC_TEMPLATE: opts->topic_template = optarg; break;
        case OPT_TOPIC_PREFIX: opts->topic_prefix = optarg; break;
        case OPT_MESSAGE_TOPIC: opts->message_topic = optarg; break;
        case OPT_NO_TOMBSTONES: opts->tombstones = 0; break;
        case OPT_KAFKA_CONF:
            if (opts->nkafka_conf == sizeof opts->kafka_conf / sizeof *opts->kafka_conf) {
                fprintf(stderr, "pgfanout: too many --kafka-conf flags (at most 64)\n");
                return -1;
            }
            if (strchr(optarg, '=') == NULL || optarg[0] == '=') {
                fprintf(stderr, "pgfanout: invalid --kafka-conf: expected key=value\n");
                return -1;
            }
            opts->kafka_conf[opts->nkafka_conf++] = optarg;
            break;
        case OPT_MAX_INFLIGHT:
            if (parse_bytes(optarg, &opts->max_inflight_bytes) != 0) {
                fprintf(stderr, "pgfanout: invalid --max-inflight-bytes '%s': expected a positive size "
                                "like 16M\n", optarg);
                return -1;
            }
            break;
        case OPT_SHUTDOWN_TIMEOUT:
            if (parse_interval(optarg, &opts->shutdown_timeout_ms) != 0) {
                fprintf(stderr, "pgfanout: invalid --shutdown-timeout '%s': expected seconds, greater than 0 "
                                "and at most 86400\n", optarg);
                return -1;
            }
            break;
        case 'o': opts->output = optarg; break;
        case OPT_CONFIG: opts->config_path = optarg; break;
        case OPT_REDIS: opts->redis_addr = optarg; break;
        case OPT_HTTP_LISTEN: opts->http_listen = optarg; break;
        case OPT_PROBE: opts->probe_url = optarg; break;
        case OPT_DROP_SLOT: opts->drop_slot_on_exit = 1; break;
        case OPT_TEMP_SLOT: opts->temporary_slot = 1; break;
        case OPT_HEARTBEAT:
            if (parse_interval(optarg, &opts->heartbeat_interval_ms) != 0) {
                fprintf(stderr, "pgfanout: invalid --heartbeat-interval '%s': expected seconds, greater than 0 "
                                "and at most 86400\n", optarg);
                return -1;
            }
            break;
        case OPT_LOG_FORMAT:
            if (pgf_log_set_format(optarg) != 0) {
                fprintf(stderr, "pgfanout: invalid --log-format '%s': expected text, logfmt or json\n", optarg);
                return -1;
            }
            break;
        case 'h': opts->show_help = 1; break;
        case OPT_VERSION: opts->show_version = 1; break;
        case OPT_ENDPOS:
            if (pgf_lsn_parse(optarg, &opts->endpos) != 0) {
                fprintf(stderr, "pgfanout: invalid --endpos '%s': expected an LSN like 0/16B3748\n", optarg);
                return -1;
            }
            opts->has_endpos = 1;
            break;
        case OPT_STATUS_INTERVAL:
            if (parse_interval(optarg, &opts->status_interval_ms) != 0) {
                fprintf(stderr, "pgfanout: invalid --status-interval '%s': expected seconds, greater than 0 "
                                "and at most 86400\n", optarg);
                return -1;
            }
            break;
        case OPT_LOG_LEVEL: {
            enum pgf_log_level level;
            if (pgf_log_parse_level(optarg, &level) != 0) {
                fprintf(stderr, "pgfanout: invalid --log-level '%s': expected debug, info, warn or error\n",
                        optarg);
                return -1;
            }
            pgf_log_set_level(level);
            break;
        }
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
    char list[256];
    snprintf(list, sizeof list, "%s", sinks);
    char *save = NULL;
    for (char *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        if (strcmp(name, "stdout") == 0)
            opts->sink_stdout = 1;
        else if (strcmp(name, "kafka") == 0)
            opts->sink_kafka = 1;
        else if (strcmp(name, "redis") == 0)
            opts->sink_redis = 1;
        else {
            fprintf(stderr, "pgfanout: unknown sink '%s' in --sink: allowed are stdout, kafka, redis\n", name);
            return -1;
        }
    }
    if (!opts->sink_stdout && !opts->sink_kafka && !opts->sink_redis) {
        fprintf(stderr, "pgfanout: --sink names no sink: allowed are stdout, kafka, redis\n");
        return -1;
    }
    if (opts->sink_kafka && opts->kafka_brokers == NULL) {
        int has_bootstrap = 0;
        for (size_t i = 0; i < opts->nkafka_conf; i++)
            has_bootstrap |= strncmp(opts->kafka_conf[i], "bootstrap.servers=", 18) == 0;
        if (!has_bootstrap) {
            fprintf(stderr, "pgfanout: --sink kafka needs --kafka-brokers HOST:PORT\n");
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
