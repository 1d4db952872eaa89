/* catalog.h - startup checks of the Redis rules against PostgreSQL's catalog. */
#ifndef PGFANOUT_CATALOG_H
#define PGFANOUT_CATALOG_H

#include "sinks/redis_rules.h"

/* Warns, once at startup, about each rule whose table is missing, is not in the publication,
 * lacks a column a template names, or whose replica identity does not send the columns its
 * templates need for updates and deletes (with the ALTER TABLE that fixes it).  Uses its own
 * short plain connection; a failure to check is itself only a warning. */
void pgf_catalog_check_rules(const char *dsn, const char *publication, const struct pgf_redis_rules *rules);

#endif
