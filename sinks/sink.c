/* sink.c - helpers shared by every sink. */
#include "sinks/sink.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* Doubles until need fits; see sink.h. */
int sink_grow(void **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 256;
    while (n < need)
        n *= 2;
    void *b = realloc(*buf, n);
    if (b == NULL)
        return -1;
    *buf = b;
    *cap = n;
    return 0;
}

/* Formats the sink's error text and returns -1. */
int sink_fail(struct sink *sink, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sink->errstr, sizeof sink->errstr, fmt, ap);
    va_end(ap);
    return -1;
}
