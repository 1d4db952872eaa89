/* layers.h - the effective settings: each setting's default, then the config file, the
 * environment and the flags, the highest layer winning, with where each value came from. */
#ifndef PGFANOUT_LAYERS_H
#define PGFANOUT_LAYERS_H

#include "cdc/config.h"
#include "cdc/options.h"

/* Fills *opts from the settings table's defaults, the config file (--config or
 * PGFANOUT_CONFIG), PGFANOUT_* environment variables and flags, recording each value's origin
 * in opts->origin (kafka.conf's in opts->kafka_conf.origin), then checks the settings against
 * each other.  *cfg gets the loaded file (free it with pgf_config_free once opts is no longer
 * used: strings point into it, argv and the environment).  Returns 0, or -1 after printing an
 * error that names the setting, where its value came from and what is allowed. */
int pgf_options_parse(int argc, char **argv, struct pgf_options *opts, struct pgf_config **cfg);

/* Returns where the setting with file key key ("source.dsn") got its value; key must be in
 * the settings table. */
const struct pgf_origin *pgf_options_origin(const struct pgf_options *opts, const char *key);

#endif
