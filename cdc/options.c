/* options.c - command-line parsing with getopt_long. */
#include "cdc/options.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/log.h"
#include "cdc/lsn.h"

enum { OPT_SLOT = 256, OPT_PUBLICATION, OPT_CREATE_SLOT, OPT_CREATE_PUBLICATION, OPT_TABLES,
       OPT_SINK, OPT_ENDPOS, OPT_STATUS_INTERVAL, OPT_LOG_LEVEL, OPT_VERSION };

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
        "      --endpos LSN         stop cleanly once the stream reaches LSN (e.g. 0/16B3748)\n"
        "      --status-interval S  seconds between standby status updates (default: 10)\n"
        "\n"
        "Output:\n"
        "      --sink NAME          where events go: stdout (default), one JSON object per line\n"
        "  -o, --output FILE        append JSON lines to FILE instead of standard output\n"
        "\n"
        "Other:\n"
        "      --log-level LEVEL    debug, info (default), warn or error; logs go to stderr\n"
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

/* Parses argv; see options.h. */
int pgf_options_parse(int argc, char **argv, struct pgf_options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->dsn = "";
    opts->slot = "pgfanout";
    opts->publication = "pgfanout";
    opts->sink = "stdout";
    opts->status_interval_ms = 10000;
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
        case OPT_SINK: opts->sink = optarg; break;
        case 'o': opts->output = optarg; break;
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
    if (strcmp(opts->sink, "stdout") != 0) {
        fprintf(stderr, "pgfanout: unknown --sink '%s': this build supports: stdout\n", opts->sink);
        return -1;
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
