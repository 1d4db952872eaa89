/* redis_cacheops.h - the django-cacheops preset (redis.cacheops): each row image becomes the
 * JSON object cacheops' own Python would send to its invalidation script for that row as
 * loaded from the database (json.dumps(get_obj_dict(...), default=str), or every value str()'d
 * in insideout mode), and one call of contrib/redis/cacheops_invalidate.lua per (transaction,
 * table) turns those objects into conj keys in Redis's own Lua, as cacheops does.  Pure: no
 * I/O and no logging; a column that has no exact conversion is reported to the caller. */
#ifndef PGFANOUT_REDIS_CACHEOPS_H
#define PGFANOUT_REDIS_CACHEOPS_H

#include <stddef.h>

#include "decoders/event.h"
#include "sinks/redis_cmdbuf.h"

/* The preset's constants, shared by every call; strings are borrowed from the config. */
struct pgf_cacheops_call {
    const char *prefix; /* CACHEOPS_PREFIX, a constant */
    int insideout;      /* CACHEOPS_INSIDEOUT */
    int variants;       /* also send decimals without their trailing zeros */
};

/* A growable output buffer; the caller frees p. */
struct pgf_cacheops_buf {
    char *p;
    size_t len, cap;
};

/* Called for a column whose value cannot be written exactly as cacheops would (an interval
 * with months, an infinite or BC date, a NaN in plain mode, a type with no known conversion);
 * the column is left out of the object.  why is a short phrase, valid during the call. */
typedef void (*pgf_cacheops_skip_fn)(void *ctx, uint16_t att, const char *why);

/* Appends to out the JSON object of one row image of rel: vals[att] is each column's value,
 * or NULL when the image does not carry it (then the column is left out, silently: the
 * script falls back to the whole table when a cached query needs it).  Columns of types
 * cacheops never filters on (text, json, bytea, arrays) are left out silently too.  Returns
 * 0, or -1 when out of memory. */
int pgf_cacheops_encode_row(const struct pgf_cacheops_call *call, const struct pgf_relation *rel,
                            const struct pgf_value *const *vals, struct pgf_cacheops_buf *out,
                            pgf_cacheops_skip_fn skip, void *ctx);

/* Fills cmd with the script call for db_table (tlen bytes): schemes_key is <P>schemes:<table>,
 * rows a JSON array of row objects, wide 1 to invalidate the whole table.  cmd borrows every
 * pointer.  This is the one place that names the script and how it is called. */
void pgf_cacheops_command(const struct pgf_cacheops_call *call, const char *schemes_key, size_t sklen,
                          const char *db_table, size_t tlen, const char *rows, size_t rlen, int wide,
                          struct redis_cmd *cmd);

#endif
