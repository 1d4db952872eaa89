/* catalog.h - startup checks of the Redis rules against PostgreSQL's catalog. */
#ifndef PGFANOUT_CATALOG_H
#define PGFANOUT_CATALOG_H

#include "sinks/redis_rules.h"

struct event_base;
struct pgf_catalog_check;

/* Starts warning, once at startup, about each rule whose table is missing, is not in the
 * publication, lacks a column a template names, or whose replica identity does not send the
 * columns its templates need for updates and deletes (with the ALTER TABLE that fixes it).
 * Runs on base's loop over a short plain connection of its own and sets *done when finished;
 * rules must stay valid until then.  A failure to check is itself only a warning.  Returns
 * the run, or NULL when there is nothing to check (then *done is already set).  With
 * cacheops set, it also warns about each published table that is not REPLICA IDENTITY FULL,
 * which the cacheops preset needs. */
struct pgf_catalog_check *pgf_catalog_check_rules(struct event_base *base, const char *dsn, const char *publication,
                                      const struct pgf_redis_rules *rules, int cacheops, int *done);

/* Abandons a run whose *done is not set yet (a stop signal came first); NULL is fine. */
void pgf_catalog_check_cancel(struct pgf_catalog_check *c);

#endif
