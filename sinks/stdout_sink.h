/* stdout_sink.h - JSON lines to standard output or a file. */
#ifndef PGFANOUT_STDOUT_SINK_H
#define PGFANOUT_STDOUT_SINK_H

#include <stddef.h>

#include "sinks/sink.h"

/* Opens the stdout sink writing JSON lines to path ("-" or NULL for stdout); returns the
 * sink, or NULL with a reason in errbuf. */
struct sink *stdout_sink_open(const char *path, char *errbuf, size_t errlen);

#endif
