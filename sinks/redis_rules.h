/* redis_rules.h - which cache keys a change invalidates: per-table key templates with
 * column placeholders and filters, table keys, generation keys, publish channels, the Django
 * and django-cachalot presets, and keys the application names in a logical message.
 * Two halves: compile (redis_rules_compile.c) faces the config, and may read the config file
 * to point an error at its line; expand (redis_rules_expand.c) is pure, no I/O and no
 * logging, and reports what it finds through pgf_inval_out.  The Redis sink turns what it
 * reports into commands, and logs the notices. */
#ifndef PGFANOUT_REDIS_RULES_H
#define PGFANOUT_REDIS_RULES_H

#include <stddef.h>

#include "sinks/redis_config.h"
#include "sinks/sink.h"

struct pgf_redis_rules;

/* Where the keys of one change go; each callback returns 0, or -1 to stop (out of memory).
 * Strings are valid only during the call. */
struct pgf_inval_out {
    int (*key)(void *ctx, enum pgf_redis_action action, const char *key, size_t len);
    int (*generation)(void *ctx, enum pgf_redis_generation mode, const char *key, size_t len);
    int (*publish)(void *ctx, const char *channel, const char *payload, size_t len);
    /* Takes a message for the operator (a key that could not be built, a truncate a rule
     * cannot cover), at most once per template or rule; NULL drops them. */
    void (*notice)(void *ctx, const char *msg);
    void *ctx;
};

/* ---- compile: redis_rules_compile.c ---- */

/* Compiles the redis section's rules.  cfgpath (NULL for none) only points errors at a line.
 * Returns the rules, or NULL with a message in err that names the setting and the problem. */
struct pgf_redis_rules *pgf_redis_rules_new(const struct pgf_redis_cfg *cfg, const struct pgf_setting_locator *cfgpath,
                                            char *err, size_t errlen);

/* Frees compiled rules; NULL is fine. */
void pgf_redis_rules_free(struct pgf_redis_rules *r);

/* Returns the number of rules, for the startup replica-identity check. */
size_t pgf_redis_rules_count(const struct pgf_redis_rules *r);

/* Returns rule i's schema and table. */
void pgf_redis_rule_table(const struct pgf_redis_rules *r, size_t i, const char **schema, const char **table);

/* Checks rule i against the table's replica identity ('d', 'n', 'f' or 'i') and the columns
 * it sends as the old key; columns the table lacks (allcols, when given) are left to
 * pgf_redis_rule_unknown_column.  Returns 1 with a warning in msg that says which templates
 * need which columns and how to fix it, or 0 when updates and deletes can expand them all. */
int pgf_redis_rule_identity_warning(const struct pgf_redis_rules *r, size_t i, char replident,
                                    const char *const *keycols, size_t nkeycols, const char *const *allcols,
                                    size_t nallcols, char *msg, size_t msglen);

/* Checks rule i's template columns against the table's columns.  Returns 1 with a warning
 * in msg naming the ones the table does not have, else 0. */
int pgf_redis_rule_unknown_column(const struct pgf_redis_rules *r, size_t i, const char *const *cols, size_t ncols,
                                  char *msg, size_t msglen);

/* ---- expand: redis_rules_expand.c ---- */

/* Reports every key, generation and publish one change asks for.  Keys of the old and the
 * new row are both reported (the caller drops duplicates).  Returns 0, or -1 when a callback
 * failed. */
int pgf_redis_rules_apply(struct pgf_redis_rules *r, const struct pgf_event *ev, const struct pgf_inval_out *out);

/* Counts the row keys that could not be built because a column they need was not sent
 * (see the replica identity warning); for logs and metrics. */
unsigned long pgf_redis_rules_unexpanded(const struct pgf_redis_rules *r);

#endif
