/* replicas.h - the replay positions of the standbys that serve reads (redis.replicas,
 * redis.replica_names), learned on the event loop, and their minimum: the horizon past which
 * every listed standby has replayed.  The Redis sink's second pass waits for it.
 *
 * Two ways to learn a standby's position, which combine:
 *   - a DSN of the standby itself, polled for pg_last_wal_replay_lsn() (any login role; sees
 *     cascading standbys too);
 *   - its application_name, looked up in pg_stat_replication on the primary (needs pg_monitor;
 *     the value is what the standby last reported).
 * Standbys are listed, never discovered: a lagging standby that drops out of view must keep
 * holding the second pass, not vanish from it.  A standby that cannot be read keeps its last
 * known position, so the horizon never claims more than was seen. */
#ifndef PGFANOUT_REPLICAS_H
#define PGFANOUT_REPLICAS_H

#include <stddef.h>
#include <stdint.h>

#include "sinks/redis_config.h"

struct event_base;
struct pgf_replicas;

/* What /metrics shows of one standby. */
struct pgf_replica_stat {
    char name[160];       /* host:port of a DSN, or the application_name */
    uint64_t replay_lsn;  /* last known; 0 before the first answer */
    double lag_seconds;   /* the standby's own replay delay as last read */
    int up;               /* the last poll answered and showed it */
    uint64_t poll_errors;
};

/* Called on the loop after a poll round: horizon is the lowest replay position over every
 * listed standby (0 while one has never been seen), observed_at_us (pgf_mono_us) when it
 * was read. */
typedef void (*pgf_replicas_cb)(void *arg, uint64_t horizon, int64_t observed_at_us);

/* Returns the number of listed standbys (0: no second pass), or -1 with a reason in err when a
 * list is malformed. */
int pgf_replicas_count(const struct pgf_redis_cfg *cfg, char *err, size_t errlen);

/* At startup, before the loop runs: connects to each standby DSN (blocking, as the catalog
 * checks do) and checks that it is a standby; with replica_names, checks that the primary
 * (primary_dsn, without replication) lets this role read pg_stat_replication's positions.
 * Returns 0, or -1 with what failed and what to do in err. */
int pgf_replicas_check(const struct pgf_redis_cfg *cfg, const char *primary_dsn, char *err, size_t errlen);

/* Starts polling every redis.replica_poll_ms on base; cb gets each round's horizon.  Returns
 * the poller (stop it with pgf_replicas_stop), or NULL when out of memory. */
struct pgf_replicas *pgf_replicas_start(struct event_base *base, const struct pgf_redis_cfg *cfg,
                                        const char *primary_dsn, pgf_replicas_cb cb, void *arg);

/* Returns the figures of the i-th listed standby, or NULL past the last one (or for NULL). */
const struct pgf_replica_stat *pgf_replicas_stat(const struct pgf_replicas *rp, size_t i);

/* Stops polling and frees everything; NULL is fine. */
void pgf_replicas_stop(struct pgf_replicas *rp);

#endif
