/* layers.c - defaults < config file < environment < flags, with origins, and the checks
 * across settings. */
#include "cdc/layers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/cli.h"
#include "common/log.h"
#include "cdc/settings.h"

/* Prints a bad value's error, naming the setting and where the value came from. */
static void report(const struct pgf_setting *s, int index, const char *text, const struct pgf_origin *o,
                   const char *why)
{
    char msg[1024];
    fprintf(stderr, "pgfanout: %s\n", pgf_setting_error(s, index, text, o, why, msg, sizeof msg));
}

/* The flag text that a PGF_T_HOSTPORT flag (--redis HOST:PORT) gives setting row, or NULL;
 * *flag gets that flag.  Only valid once the HOSTPORT row has been parsed into opts. */
static const char *overriding_flag(size_t row, const struct pgf_options *opts, const char **flag)
{
    for (size_t i = 0; i < pgf_nsettings; i++) {
        const struct pgf_setting *s = &pgf_settings[i];
        if (s->type != PGF_T_HOSTPORT || opts->origin[i].layer != PGF_FROM_FLAG)
            continue;
        *flag = s->flag;
        if (s->sets[0] && strcmp(s->sets[0], pgf_settings[row].key) == 0)
            return opts->redis_host;
        if (s->sets[1] && strcmp(s->sets[1], pgf_settings[row].key) == 0 && opts->redis_port[0])
            return opts->redis_port;
    }
    return NULL;
}

/* Gives setting row the value of its highest layer: its flag, a flag that overrides it, its
 * environment variable, then the config file; otherwise it keeps its default.  Returns 0, or
 * -1 after printing the error. */
static int apply_layers(size_t row, const struct pgf_cli *cli, const struct pgf_config *cfg,
                        struct pgf_options *opts)
{
    const struct pgf_setting *s = &pgf_settings[row];
    struct pgf_origin o = {.layer = PGF_FROM_FLAG};
    const char *text = cli->text[row], *flag = s->flag;
    if (text == NULL)
        text = overriding_flag(row, opts, &flag);
    if (text) {
        snprintf(o.name, sizeof o.name, "--%s", flag);
    } else if (!(s->flags & PGF_S_NOENV) && (text = getenv(pgf_setting_env(s, o.name, sizeof o.name))) != NULL) {
        o.layer = PGF_FROM_ENV;
    } else if (cfg && cfg->values->origin[row].layer == PGF_FROM_FILE) {
        pgf_setting_copy(s, opts, cfg->values);
        opts->origin[row] = cfg->values->origin[row];
        return 0;
    } else {
        return 0;
    }
    char why[256];
    if (pgf_setting_parse(s, text, opts, why, sizeof why) != 0) {
        report(s, -1, text, &o, why);
        return -1;
    }
    opts->origin[row] = o;
    return 0;
}

/* Appends one item to list setting row, with its origin.  Returns 0, or -1 after printing. */
static int append_item(size_t row, const char *text, const struct pgf_origin *o, int index, struct pgf_options *opts)
{
    char why[256];
    if (pgf_setting_parse(&pgf_settings[row], text, opts, why, sizeof why) != 0) {
        report(&pgf_settings[row], index, text, o, why);
        return -1;
    }
    opts->kafka_conf.origin[opts->kafka_conf.n - 1] = *o;
    return 0;
}

/* Gathers list setting row (kafka.conf) from every layer, lowest first so that for one key
 * the highest layer's item is applied last: the file's items, then each PGFANOUT_KAFKA_CONF_<KEY>
 * (KEY in capitals, '_' for '.'), then the flags.  Returns 0, or -1 after printing. */
static int gather_items(size_t row, const struct pgf_cli *cli, const struct pgf_config *cfg,
                        struct pgf_options *opts)
{
    struct pgf_conf_list *list = &opts->kafka_conf;
    for (size_t k = 0; cfg && k < cfg->values->kafka_conf.n; k++)
        if (append_item(row, cfg->values->kafka_conf.item[k], &cfg->values->kafka_conf.origin[k], (int)k, opts) != 0)
            return -1;
    char prefix[96];
    size_t plen = strlen(pgf_setting_env(&pgf_settings[row], prefix, sizeof prefix));
    extern char **environ;
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (strncmp(*e, prefix, plen) != 0 || eq == NULL)
            continue;
        struct pgf_origin o = {.layer = PGF_FROM_ENV};
        snprintf(o.name, sizeof o.name, "%.*s", (int)(eq - *e), *e);
        char kv[sizeof list->env_item[0]];
        size_t n = 0;
        for (const char *p = *e + plen; p < eq && n + 1 < sizeof kv; p++)
            kv[n++] = *p == '_' ? '.' : (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
        snprintf(kv + n, sizeof kv - n, "%s", eq);
        /* Kept in opts, which outlives this; a 65th item is refused by append_item. */
        const char *item = list->n < PGF_MAX_CONF ? memcpy(list->env_item[list->n], kv, sizeof kv) : kv;
        if (append_item(row, item, &o, -1, opts) != 0)
            return -1;
    }
    for (size_t k = 0; k < cli->nitems; k++) {
        struct pgf_origin o = {.layer = PGF_FROM_FLAG};
        snprintf(o.name, sizeof o.name, "--%s", pgf_settings[row].flag);
        if (cli->item_row[k] == row && append_item(row, cli->item[k], &o, -1, opts) != 0)
            return -1;
    }
    return 0;
}

/* Levenshtein distance of a and b, stopping at 3: only near misses matter here. */
static int distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return 3;
    int d[64][64];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            int sub = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            int del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
            d[i][j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
    return d[la][lb] < 3 ? d[la][lb] : 3;
}

/* Warns about PGFANOUT_* variables that name no setting: a typo there is otherwise silently
 * ignored.  Suggests the nearest variable when one is close. */
static void warn_unknown_variables(void)
{
    extern char **environ;
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (strncmp(*e, "PGFANOUT_", 9) != 0 || eq == NULL || strncmp(*e, "PGFANOUT_KAFKA_CONF_", 20) == 0)
            continue;
        char name[96], env[96], best[96] = "";
        snprintf(name, sizeof name, "%.*s", (int)(eq - *e), *e);
        int known = strcmp(name, "PGFANOUT_CONFIG") == 0, nearest = 3;
        for (size_t row = 0; row < pgf_nsettings && !known; row++) {
            if (pgf_settings[row].flags & PGF_S_NOENV)
                continue;
            pgf_setting_env(&pgf_settings[row], env, sizeof env);
            known = strcmp(env, name) == 0;
            int d = distance(env, name);
            if (d < nearest) {
                nearest = d;
                snprintf(best, sizeof best, "%s", env);
            }
        }
        if (!known)
            pgf_warn("unknown environment variable %s ignored%s%s%s; pgfanout's variables are PGFANOUT_ and a "
                     "setting's config key in capitals (see pgfanout --help)",
                     name, best[0] ? " (did you mean " : "", best, best[0] ? "?)" : "");
    }
}

/* Checks settings against each other; returns 0, or -1 after printing what to do. */
static int check_together(const struct pgf_options *opts)
{
    if ((opts->sinks & PGF_SINK_KAFKA) && opts->kafka_brokers == NULL) {
        int has_bootstrap = 0;
        for (size_t i = 0; i < opts->kafka_conf.n; i++)
            has_bootstrap |= strncmp(opts->kafka_conf.item[i], "bootstrap.servers=", 18) == 0;
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

/* Fills opts; see layers.h. */
int pgf_options_parse(int argc, char **argv, struct pgf_options *opts, struct pgf_config **cfgp)
{
    memset(opts, 0, sizeof *opts);
    *cfgp = NULL;
    struct pgf_cli cli;
    if (pgf_cli_parse(argc, argv, &cli) != 0)
        return -1;
    char err[1024];
    for (size_t row = 0; row < pgf_nsettings; row++) {
        const struct pgf_setting *s = &pgf_settings[row];
        if (s->def && pgf_setting_parse(s, s->def, opts, err, sizeof err) != 0) {
            fprintf(stderr, "pgfanout: bad default for %s: %s\n", s->key, err); /* tests/unit/test_settings.c */
            return -1;
        }
    }
    /* The command line's own inputs first: --help, --version and --probe need nothing else. */
    for (size_t row = 0; row < pgf_nsettings; row++)
        if ((pgf_settings[row].flags & PGF_S_CLI) && apply_layers(row, &cli, NULL, opts) != 0)
            return -1;
    if (opts->show_help || opts->show_version || opts->probe_url)
        return 0;
    if (opts->config_path && pgf_config_load(opts->config_path, cfgp, err, sizeof err) != 0) {
        fprintf(stderr, "pgfanout: %s\n", err);
        return -1;
    }
    for (size_t row = 0; row < pgf_nsettings; row++) {
        if (pgf_settings[row].flags & PGF_S_CLI)
            continue;
        int rc = pgf_settings[row].type == PGF_T_CONF ? gather_items(row, &cli, *cfgp, opts)
                                                       : apply_layers(row, &cli, *cfgp, opts);
        if (rc != 0)
            return -1;
    }
    opts->has_endpos = pgf_options_origin(opts, "source.endpos")->layer != PGF_FROM_DEFAULT;
    enum pgf_log_level level = PGF_LOG_INFO;
    pgf_log_parse_level(opts->log_level, &level);
    pgf_log_set_level(level);
    pgf_log_set_format(opts->log_format);
    warn_unknown_variables();
    return check_together(opts);
}

/* Returns a setting's origin; see layers.h. */
const struct pgf_origin *pgf_options_origin(const struct pgf_options *opts, const char *key)
{
    int row = pgf_setting_find(key);
    return &opts->origin[row < 0 ? 0 : row];
}
