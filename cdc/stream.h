/* stream.h - the replication loop: reads the slot, decodes, hands changes to the sinks,
 * and confirms to the server only what every sink acked. */
#ifndef PGFANOUT_STREAM_H
#define PGFANOUT_STREAM_H

#include <libpq-fe.h>
#include <stddef.h>

#include "cdc/options.h"
#include "sinks/sink.h"

#include <signal.h>
#include <stdint.h>

enum pgf_stream_result {
    PGF_STREAM_DONE = 0,   /* clean stop: --endpos or a signal; sinks flushed, final feedback sent */
    PGF_STREAM_FAILED = 1, /* an error that a reconnect cannot fix (already logged) */
    PGF_STREAM_LOST = 2,   /* the connection to PostgreSQL broke: reconnect and resume */
};

struct event_base;
struct pgf_snapshot;

/* Streams from conn, already in COPY BOTH mode, until --endpos, a signal or an error.
 * confirmed is the slot's confirmed position: feedback never goes below it.  A SIGINT or
 * SIGTERM caught while streaming is also stored in *stop_signal.  base is the process's one
 * event loop, which sinks share; the stream adds its events and removes them on return.
 * snap (or NULL) is the snapshot controller, whose chunks enter the stream here.
 * Takes ownership of nothing: the caller closes conn and the sinks. */
enum pgf_stream_result pgf_stream_run(PGconn *conn, const struct pgf_options *opts, struct sink *const *sinks,
                                      size_t nsinks, uint64_t confirmed, volatile sig_atomic_t *stop_signal,
                                      struct event_base *base, struct pgf_snapshot *snap);

#endif
