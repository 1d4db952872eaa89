/* stream.h - the replication loop: reads the slot, decodes, hands changes to the sinks,
 * and confirms to the server only what every sink acked. */
#ifndef PGFANOUT_STREAM_H
#define PGFANOUT_STREAM_H

#include <libpq-fe.h>
#include <stddef.h>

#include "cdc/options.h"
#include "sinks/sink.h"

/* Streams from conn, already in COPY BOTH mode, until --endpos, SIGINT/SIGTERM or an error.
 * Takes ownership of nothing: the caller closes conn and the sinks.  Returns 0 after a clean
 * stop, 1 after an error (already logged). */
int pgf_stream_run(PGconn *conn, const struct pgf_options *opts, struct sink *const *sinks, size_t nsinks);

#endif
