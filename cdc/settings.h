/* settings.h - the settings table: each setting once, with its config file key, flag,
 * environment variable (PGFANOUT_ + the key in capitals, '.' as '_'), type, default, help line
 * and where its value lands in struct pgf_options.  The command line (cli.c), the file's schema
 * (config.c), the layering (layers.c), --check-config (print_config.c) and --help read it. */
#ifndef PGFANOUT_SETTINGS_H
#define PGFANOUT_SETTINGS_H

#include <stddef.h>

#include "cdc/options.h"

/* How a setting's text becomes a value, and the C type it lands in. */
enum pgf_stype {
    PGF_T_STR,      /* const char * */
    PGF_T_DSN,      /* const char *, a libpq connection string: printed with its passwords hidden */
    PGF_T_BOOL,     /* int: true/false, yes/no, on/off; a flag without a value sets true */
    PGF_T_SECONDS,  /* int milliseconds, from seconds (fractions allowed), 0 < s <= 86400 */
    PGF_T_SECONDS_OFF, /* the same, and 0 turns it off */
    PGF_T_BYTES,    /* size_t, from a count with an optional k, M or G suffix */
    PGF_T_LSN,      /* uint64_t, from "X/X" */
    PGF_T_SINKS,    /* unsigned PGF_SINK_* bits, from a list of stdout, kafka, redis, null */
    PGF_T_CHOICE,   /* const char *, one word of choices */
    PGF_T_ADDR,     /* const char *, HOST:PORT, [IPv6]:PORT or PORT */
    PGF_T_UINT,     /* unsigned */
    PGF_T_PORT,     /* unsigned, 1 to 65535 */
    PGF_T_CONF,     /* struct pgf_conf_list: "key=value" items gathered from every layer */
    PGF_T_PASSWORD, /* const char *, a secret from the environment only */
    PGF_T_PRESET,   /* a mapping the file's schema loads (redis.django, redis.cachalot); on when present */
    PGF_T_RULES,    /* a list of mappings the file's schema loads (redis.rules) */
    PGF_T_HOSTPORT, /* const char *, HOST:PORT or /socket, giving the flag layer of sets[0] and sets[1] */
};

/* Bits of pgf_setting.flags. */
enum {
    PGF_S_SECRET = 1,  /* its value is never printed in an error */
    PGF_S_NEGATE = 2,  /* a boolean whose flag sets it false (--no-tombstones) */
    PGF_S_NOFILE = 4,  /* not a config file key */
    PGF_S_NOENV = 8,   /* no environment variable */
    PGF_S_CLI = 16,    /* a command-line action or input, not an effective setting: never printed */
    PGF_S_ZERO_IS_DEFAULT = 32, /* a number whose 0 means its default (redis.window) */
    PGF_S_NONZERO = 64, /* a number that must be at least 1 (snapshot_chunk_size) */
};

struct pgf_setting {
    const char *key;     /* config file path, "source.dsn"; names the environment variable too */
    const char *flag;    /* long flag without "--", or NULL */
    char short_flag;     /* 'd' for -d, or 0 */
    enum pgf_stype type;
    const char *def;     /* the default, as text parsed like any layer's; NULL = unset */
    size_t off;          /* where the value lands in struct pgf_options */
    const char *arg;     /* the flag's or variable's value in --help: "DSN", "S" */
    const char *help;    /* one line for --help; '\n' continues it on an indented line */
    unsigned flags;      /* PGF_S_* */
    const char *choices; /* PGF_T_CHOICE: the allowed words, separated by ", " */
    const char *sets[2]; /* PGF_T_HOSTPORT: the keys of the host and port settings it overrides */
};

extern const struct pgf_setting pgf_settings[];
extern const size_t pgf_nsettings;

/* Returns the row of the setting whose file key is key, or -1. */
int pgf_setting_find(const char *key);

/* Returns the row whose long flag is flag (without "--"), or -1. */
int pgf_setting_by_flag(const char *flag);

/* Writes a setting's environment variable, PGFANOUT_SOURCE_DSN for source.dsn, into out; for
 * PGF_T_CONF it is the variables' prefix, PGFANOUT_KAFKA_CONF_.  Returns out. */
char *pgf_setting_env(const struct pgf_setting *s, char *out, size_t len);

/* Parses text as setting s and stores the value in opts.  Returns 0, or -1 with what is
 * allowed in err (which never holds the text itself). */
int pgf_setting_parse(const struct pgf_setting *s, const char *text, struct pgf_options *opts, char *err,
                      size_t errlen);

/* Copies setting s's value from one options struct to another (pointers stay borrowed). */
void pgf_setting_copy(const struct pgf_setting *s, struct pgf_options *to, const struct pgf_options *from);

/* Writes where a value came from, for errors: "config file F, line N", "environment variable
 * V", "flag --F" or "the default".  Returns out. */
char *pgf_origin_describe(const struct pgf_origin *o, char *out, size_t len);

/* Writes "invalid value 'TEXT' for KEY (ORIGIN): WHY" into out, or for a value from the file
 * "config file F, line N (KEY): invalid value 'TEXT': WHY" like its other errors; a secret's
 * text is shown as (hidden).  For a list item it is "invalid entry for KEY[index] (ORIGIN):
 * WHY", without the text (index -1: no index).  Returns out. */
char *pgf_setting_error(const struct pgf_setting *s, int index, const char *text, const struct pgf_origin *o,
                        const char *why, char *out, size_t len);

#endif
