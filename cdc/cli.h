/* cli.h - the command line: getopt_long over the settings table's flags, and --help. */
#ifndef PGFANOUT_CLI_H
#define PGFANOUT_CLI_H

#include <stddef.h>
#include <stdio.h>

#include "cdc/options.h"

/* What the flags gave, as text, by settings table row; strings point into argv. */
struct pgf_cli {
    const char *text[PGF_MAX_SETTINGS]; /* the last value given, or NULL; "true" (or "false" for
                                           --no-tombstones) for a flag without a value */
    const char *item[PGF_MAX_CONF];     /* values of repeatable flags (--kafka-conf), in order */
    size_t item_row[PGF_MAX_CONF];      /* and the row of each */
    size_t nitems;
};

/* Parses argv into *cli.  Returns 0, or -1 after printing what is wrong (an unknown flag, a
 * missing value, a stray argument) to stderr. */
int pgf_cli_parse(int argc, char **argv, struct pgf_cli *cli);

/* Prints the --help text, generated from the settings table, to out. */
void pgf_cli_usage(FILE *out);

#endif
