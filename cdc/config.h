/* config.h - the YAML configuration file, loaded with libcyaml against a schema built from the
 * settings table (cdc/settings.c) plus the redis section's structured parts below.  Unknown
 * keys and bad values are errors that name the key, its line and what is allowed. */
#ifndef PGFANOUT_CONFIG_H
#define PGFANOUT_CONFIG_H

#include <stddef.h>

#include "sinks/redis_config.h"

struct pgf_options;
struct pgf_file_node;

/* A loaded config file: every setting it sets, parsed by the settings table's rules, with the
 * line it came from. */
struct pgf_config {
    const char *path;
    struct pgf_options *values;  /* the file's values: a setting is set when values->origin[row] is
                                    PGF_FROM_FILE, which also holds its line; kafka.conf's items
                                    are values->kafka_conf */
    struct pgf_redis_cfg *redis; /* &values->redis: the redis section's scalars and structured parts */
    struct pgf_file_node *tree;  /* what libcyaml loaded; values' strings point into it */
};

/* Loads path into *out (free with pgf_config_free), checking every key against the settings
 * table and every value by its type.  Returns 0, or -1 with a message in err that names the
 * file, the line, the key and what is allowed. */
int pgf_config_load(const char *path, struct pgf_config **out, char *err, size_t errlen);

/* Frees a loaded configuration; NULL is fine. */
void pgf_config_free(struct pgf_config *cfg);

/* Finds the line of a dotted key path such as "redis.rules[2].keys[0]" in the YAML file, for
 * errors found after loading.  Returns the 1-based line, or 0 when it cannot be found. */
int pgf_config_line_of(const char *path, const char *keypath);

#endif
