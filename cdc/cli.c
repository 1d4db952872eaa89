/* cli.c - the command line: getopt_long's table and --help, both generated from the settings
 * table. */
#include "cdc/cli.h"

#include <getopt.h>
#include <string.h>

#include "cdc/settings.h"

/* getopt_long's value for a row without a short flag. */
#define ROW_BASE 256

/* Fills getopt_long's long options and short option string from the settings table. */
static void build_getopt(struct option *longopts, char *shortopts, size_t room)
{
    size_t n = 0, ns = 0;
    shortopts[ns++] = ':'; /* report a missing value as ':' */
    for (size_t i = 0; i < pgf_nsettings; i++) {
        const struct pgf_setting *s = &pgf_settings[i];
        if (s->flag == NULL)
            continue;
        int has_arg = s->type == PGF_T_BOOL ? no_argument : required_argument;
        longopts[n++] = (struct option){s->flag, has_arg, NULL, s->short_flag ? s->short_flag : ROW_BASE + (int)i};
        if (s->short_flag && ns + 3 < room) {
            shortopts[ns++] = s->short_flag;
            if (has_arg == required_argument)
                shortopts[ns++] = ':';
        }
    }
    longopts[n] = (struct option){NULL, 0, NULL, 0};
    shortopts[ns] = '\0';
}

/* Returns the row getopt_long's return value c stands for, or -1. */
static int row_of(int c)
{
    if (c >= ROW_BASE)
        return c - ROW_BASE;
    for (size_t i = 0; i < pgf_nsettings; i++)
        if (pgf_settings[i].short_flag && pgf_settings[i].short_flag == c)
            return (int)i;
    return -1;
}

/* Parses argv; see cli.h. */
int pgf_cli_parse(int argc, char **argv, struct pgf_cli *cli)
{
    memset(cli, 0, sizeof *cli);
    struct option longopts[PGF_MAX_SETTINGS + 1];
    char shortopts[64];
    build_getopt(longopts, shortopts, sizeof shortopts);
    opterr = 0; /* we print our own messages, naming the flag */
    int c;
    while ((c = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
        int row = row_of(c);
        if (row >= 0) {
            const struct pgf_setting *s = &pgf_settings[row];
            const char *text = s->type != PGF_T_BOOL ? optarg : s->flags & PGF_S_NEGATE ? "false" : "true";
            if (s->type != PGF_T_CONF) {
                cli->text[row] = text;
            } else if (cli->nitems == PGF_MAX_CONF) {
                fprintf(stderr, "pgfanout: too many --%s flags (at most %d)\n", s->flag, PGF_MAX_CONF);
                return -1;
            } else {
                cli->item_row[cli->nitems] = (size_t)row;
                cli->item[cli->nitems++] = text;
            }
        } else if (c == ':') {
            fprintf(stderr, "pgfanout: flag %s needs a value; see pgfanout --help\n", argv[optind - 1]);
            return -1;
        } else {
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
    return 0;
}

/* The group a row is listed under in --help: its section, "" for top-level keys, or "-" for
 * the command line's own flags. */
static void group_of(const struct pgf_setting *s, char *out, size_t len)
{
    const char *dot = strchr(s->key, '.');
    if (s->flags & PGF_S_CLI)
        snprintf(out, len, "-");
    else
        snprintf(out, len, "%.*s", dot ? (int)(dot - s->key) : 0, s->key);
}

/* Prints one row: its flag (or variable, or file key), then its help and default. */
static void usage_row(FILE *out, const struct pgf_setting *s)
{
    char left[160], env[96];
    if (s->flag && s->short_flag)
        snprintf(left, sizeof left, "  -%c, --%s%s%s", s->short_flag, s->flag, s->arg ? " " : "", s->arg ? s->arg : "");
    else if (s->flag)
        snprintf(left, sizeof left, "      --%s%s%s", s->flag, s->arg ? " " : "", s->arg ? s->arg : "");
    else if (!(s->flags & PGF_S_NOENV))
        snprintf(left, sizeof left, "      %s=%s", pgf_setting_env(s, env, sizeof env), s->arg ? s->arg : "");
    else
        snprintf(left, sizeof left, "      %s (file only)", s->key);
    int width = 27; /* the help's column; a longer left part goes on a line of its own */
    if (strlen(left) + 2 > (size_t)width)
        fprintf(out, "%s\n%*s", left, width, "");
    else
        fprintf(out, "%-*s", width, left);
    for (const char *p = s->help; *p; p++) {
        fputc(*p, out);
        if (*p == '\n')
            fprintf(out, "%*s", width, "");
    }
    if (s->def && s->def[0] && s->type != PGF_T_BOOL)
        fprintf(out, " (default: %s)", s->def);
    fputc('\n', out);
}

/* Prints the help text; see cli.h. */
void pgf_cli_usage(FILE *out)
{
    fputs("pgfanout streams committed changes from a PostgreSQL logical replication slot (pgoutput).\n"
          "\n"
          "Usage: pgfanout [--dsn DSN] [--slot NAME] [--publication NAME] [options]\n"
          "\n"
          "Each setting comes from a flag, an environment variable or the config file (--config FILE\n"
          "or PGFANOUT_CONFIG; see pgfanout.example.yaml), in that order of precedence.  A setting's\n"
          "variable is PGFANOUT_ and its config file key in capitals, '.' as '_' (source.dsn is\n"
          "PGFANOUT_SOURCE_DSN).\n",
          out);
    char done[PGF_MAX_SETTINGS][32];
    size_t ndone = 0;
    for (size_t i = 0; i < pgf_nsettings; i++) {
        char group[32];
        group_of(&pgf_settings[i], group, sizeof group);
        size_t g = 0;
        while (g < ndone && strcmp(done[g], group) != 0)
            g++;
        if (g < ndone)
            continue;
        snprintf(done[ndone++], sizeof done[0], "%s", group);
        if (strcmp(group, "-") == 0)
            fputs("\nCommand line:\n", out);
        else if (group[0] == '\0')
            fputs("\nTop-level settings:\n", out);
        else
            fprintf(out, "\n%s.* settings:\n", group);
        for (size_t j = i; j < pgf_nsettings; j++) {
            char other[32];
            group_of(&pgf_settings[j], other, sizeof other);
            if (strcmp(other, group) == 0)
                usage_row(out, &pgf_settings[j]);
        }
    }
    fputs("\n"
          "Exit status: 0 after a clean stop (--endpos reached, SIGINT or SIGTERM), 1 on error,\n"
          "2 on a bad command line.\n",
          out);
}
