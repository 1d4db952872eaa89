/* log.c - leveled logging to stderr. */
#include "cdc/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static enum pgf_log_level min_level = PGF_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* Sets the lowest level written. */
void pgf_log_set_level(enum pgf_log_level level)
{
    min_level = level;
}

/* Parses a level name; returns 0 on success, -1 if s names no level. */
int pgf_log_parse_level(const char *s, enum pgf_log_level *level)
{
    for (int i = 0; i <= PGF_LOG_ERROR; i++)
        if (strcmp(s, level_names[i]) == 0) {
            *level = (enum pgf_log_level)i;
            return 0;
        }
    return -1;
}

/* Writes one timestamped line to stderr; one fprintf per line so lines never interleave. */
void pgf_log(enum pgf_log_level level, const char *fmt, ...)
{
    if (level < min_level)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[32];
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ pgfanout %s: %s\n", ts, (long)(tv.tv_usec / 1000), level_names[level], msg);
}
