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
    const char *slot;                /* names the read-your-writes key by default */
    int second_pass;                 /* hold each transaction for a second pass: 2 after the standbys
                                      * replayed it (they are listed), 1 after the delay alone */
};

/* The second pass and read-your-writes, for /metrics. */
struct redis_sink_pass_stats {
    const struct pgf_hist *second_pass; /* commit to the second pass's last reply */
    uint64_t second_passes;             /* transactions invalidated twice */
    uint64_t forced;                    /* second passes that went after redis.replica_max_wait */
    size_t held;                        /* transactions waiting for the standbys now */
    uint64_t horizon;                   /* the standbys' lowest replay position, as last reported */
    uint64_t ryw_lsn;                   /* the read-your-writes key's value, as last written */
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

/* Fills *st; returns 0, or -1 when sink is not a Redis sink. */
int redis_sink_pass_stats(const struct sink *sink, struct redis_sink_pass_stats *st);

/* The standbys have all replayed up to horizon, as read at observed_at_us (pgf_mono_us):
 * held transactions that end at or before it get their second pass once
 * redis.second_pass_delay_ms more has passed.  Does nothing for a sink that is not Redis. */
void redis_sink_replay_horizon(struct sink *sink, uint64_t horizon, int64_t observed_at_us);

#endif
