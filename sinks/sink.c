/* sink.c - helpers shared by every sink. */
#include "sinks/sink.h"

#include <stdarg.h>
#include <stdio.h>

/* Formats the sink's error text and returns -1. */
int sink_fail(struct sink *sink, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sink->errstr, sizeof sink->errstr, fmt, ap);
    va_end(ap);
    return -1;
}
