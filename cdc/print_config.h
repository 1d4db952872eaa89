/* print_config.h - --check-config's output: the effective settings as YAML, in the settings
 * table's order, each with a '# source' comment, secrets redacted. */
#ifndef PGFANOUT_PRINT_CONFIG_H
#define PGFANOUT_PRINT_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "cdc/options.h"

/* Prints the effective settings to out: the DSN's passwords, Kafka settings whose names hold
 * a secret and Redis's password as *****; nrules is the number of compiled Redis rules. */
void pgf_options_print(FILE *out, const struct pgf_options *opts, size_t nrules);

#endif
