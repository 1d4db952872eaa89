/* fuzz_settings.c - libFuzzer target: the settings loader (config file, environment, flags)
 * and what main checks next (the Redis settings and rules), then --print-config's rendering.
 *
 * Input: YAML text, then optionally a NUL and NUL-separated items: an item "PGFANOUT_NAME=v"
 * is set in the environment for this run, any other item is one argv word.  A config file with
 * no NUL (pgfanout.example.yaml) is a seed as it is.  The loader reads a path (cyaml_load_file
 * and libyaml both open it), so the YAML goes through one file in /dev/shm, rewritten per run. */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cdc/config.h"
#include "cdc/layers.h"
#include "cdc/options.h"
#include "cdc/print_config.h"
#include "sinks/redis_rules.h"
#include "sinks/redis_sink.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ITEMS 16

static char path[64];
static FILE *devnull;

/* Writes len bytes to the per-process config file; returns 0 or -1. */
static int write_config(const uint8_t *yaml, size_t len)
{
    if (path[0] == '\0')
        snprintf(path, sizeof path, "/dev/shm/pgfanout-fuzz-%ld.yaml", (long)getpid());
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    size_t n = fwrite(yaml, 1, len, f);
    return fclose(f) == 0 && n == len ? 0 : -1;
}

/* Loads data as config, environment and flags; never fails: only a sanitizer report is a finding. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (devnull == NULL && (devnull = fopen("/dev/null", "w")) == NULL)
        return 0;
    const uint8_t *nul = memchr(data, '\0', size);
    size_t yaml_len = nul ? (size_t)(nul - data) : size;
    if (write_config(data, yaml_len) != 0)
        return 0;
    /* The items, NUL-terminated copies; argv[0..2] are the program and --config. */
    char *copy = malloc(size - yaml_len + 1);
    if (copy == NULL)
        return 0;
    static char prog[] = "pgfanout", flag[] = "--config";
    char *argv[MAX_ITEMS + 4] = {prog, flag, path};
    char *envs[MAX_ITEMS];
    int argc = 3, nenv = 0;
    if (nul) {
        memcpy(copy, nul + 1, size - yaml_len - 1);
        copy[size - yaml_len - 1] = '\0';
        char *end = copy + (size - yaml_len - 1);
        for (char *item = copy, *next; item <= end && argc + nenv < MAX_ITEMS + 3; item = next) {
            next = item + strlen(item) + 1; /* before the '=' below is cut */
            char *eq = strchr(item, '=');
            if (strncmp(item, "PGFANOUT_", 9) == 0 && eq != NULL) {
                *eq = '\0';
                if (setenv(item, eq + 1, 1) == 0)
                    envs[nenv++] = item;
            } else {
                argv[argc++] = item;
            }
        }
    }
    argv[argc] = NULL;
    optind = 0; /* GNU getopt: 0 starts a fresh scan, as a new process would */
    struct pgf_options opts;
    struct pgf_config *cfg = NULL;
    if (pgf_options_parse(argc, argv, &opts, &cfg) == 0 && !opts.show_help && !opts.show_version) {
        char err[8192];
        struct pgf_setting_locator locator = {opts.config_path, pgf_config_line_of};
        struct pgf_redis_rules *rules = NULL;
        if (redis_sink_validate(&opts.redis, err, sizeof err) == 0)
            rules = pgf_redis_rules_new(&opts.redis, opts.config_path ? &locator : NULL, err, sizeof err);
        pgf_options_print(devnull, &opts, rules ? pgf_redis_rules_count(rules) : 0);
        pgf_redis_rules_free(rules);
    }
    pgf_config_free(cfg);
    for (int i = 0; i < nenv; i++)
        unsetenv(envs[i]);
    free(copy);
    return 0;
}
