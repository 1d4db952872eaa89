/* null_sink.h - encodes every event as the Kafka sink would, then discards it. */
#ifndef PGFANOUT_NULL_SINK_H
#define PGFANOUT_NULL_SINK_H

#include <stddef.h>

#include "sinks/sink.h"

/* Opens the null sink, encoding for database (copied; NULL is ""); returns the sink, or NULL
 * with a reason in errbuf.  Its close logs the totals: events, bytes encoded, rate. */
struct sink *null_sink_open(const char *database, char *errbuf, size_t errlen);

#endif
