/* redis_sink.h - cache invalidation in Redis (hiredis async on the stream's libevent loop). */
#ifndef PGFANOUT_REDIS_SINK_H
#define PGFANOUT_REDIS_SINK_H

#include <stddef.h>
#include <stdint.h>

#include "sinks/redis_config.h"
#include "sinks/redis_rules.h"
#include "sinks/sink.h"

struct event_base;

struct redis_sink_config {
    const struct pgf_redis_cfg *cfg; /* borrowed for the sink's lifetime */
    struct pgf_redis_rules *rules;   /* owned by the sink from now on, even on failure */
    struct event_base *base;         /* the loop the stream runs; the sink adds its events */
};

/* Checks the redis section before anything connects: TLS (refused with hiredis 0.14) and the
 * password's source.  Returns 0, or -1 with a reason in errbuf. */
int redis_sink_validate(const struct pgf_redis_cfg *cfg, char *errbuf, size_t errlen);

/* Opens the sink and starts connecting (retrying with backoff until Redis answers).  The
 * password comes from PGFANOUT_REDIS_PASSWORD or redis.password_file and is never logged.
 * Returns the sink, or NULL with a reason in errbuf. */
struct sink *redis_sink_open(const struct redis_sink_config *c, char *errbuf, size_t errlen);

/* Sets *leases to the lease keys sent (resends count again) and *unsupported to the keys that
 * got no lease (cluster layout); returns 0, or -1 when sink is not a Redis sink. */
int redis_sink_lease_counts(const struct sink *sink, uint64_t *leases, uint64_t *unsupported);

#endif
