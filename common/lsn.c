/* lsn.c - LSN and timestamp conversions. */
#include "common/lsn.h"

#include <inttypes.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

/* Formats lsn as "hi/lo" in upper-case hex, as pg_lsn_out does. */
char *pgf_lsn_format(uint64_t lsn, char buf[PGF_LSN_BUFSZ])
{
    /* By hand, not snprintf: the Kafka sink formats one for every record's header. */
    static const char hex[] = "0123456789ABCDEF";
    char *o = buf;
    for (int half = 1; half >= 0; half--) {
        uint32_t v = (uint32_t)(lsn >> (32 * half));
        int shift = 28;
        while (shift > 0 && (v >> shift) == 0)
            shift -= 4;
        for (; shift >= 0; shift -= 4)
            *o++ = hex[(v >> shift) & 0xf];
        if (half)
            *o++ = '/';
    }
    *o = '\0';
    return buf;
}

/* Parses one hex half of an LSN; returns the position after it, or NULL if none. */
static const char *parse_hex32(const char *s, uint32_t *out)
{
    uint64_t v = 0;
    const char *p = s;
    for (; *p; p++) {
        int d;
        if (*p >= '0' && *p <= '9') d = *p - '0';
        else if (*p >= 'a' && *p <= 'f') d = *p - 'a' + 10;
        else if (*p >= 'A' && *p <= 'F') d = *p - 'A' + 10;
        else break;
        v = v << 4 | (uint64_t)d;
        if (v > UINT32_MAX)
            return NULL;
    }
    if (p == s)
        return NULL;
    *out = (uint32_t)v;
    return p;
}

/* Parses "X/X"; rejects anything else, including trailing text. */
int pgf_lsn_parse(const char *s, uint64_t *lsn)
{
    uint32_t hi, lo;
    const char *p = parse_hex32(s, &hi);
    if (p == NULL || *p != '/')
        return -1;
    p = parse_hex32(p + 1, &lo);
    if (p == NULL || *p != '\0')
        return -1;
    *lsn = (uint64_t)hi << 32 | lo;
    return 0;
}

/* Reads CLOCK_MONOTONIC; see lsn.h. */
int64_t pgf_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Shifts to the Unix epoch without overflow; see lsn.h. */
int64_t pgf_pgtime_to_unix_us(int64_t pg_us)
{
    if (pg_us == PGF_PGTIME_INFINITY || pg_us == PGF_PGTIME_NEG_INFINITY)
        return pg_us;
    /* The offset is positive, so only the top can overflow. */
    if (pg_us > INT64_MAX - 1 - PGF_PG_EPOCH_OFFSET_US)
        return INT64_MAX - 1;
    return pg_us + PGF_PG_EPOCH_OFFSET_US;
}

/* Checked now - then; see lsn.h. */
int pgf_pgtime_age(int64_t now_us, int64_t pg_us, int64_t *age_us)
{
    if (pg_us == PGF_PGTIME_INFINITY || pg_us == PGF_PGTIME_NEG_INFINITY)
        return -1;
    if ((pg_us < 0 && now_us > INT64_MAX + pg_us) || (pg_us > 0 && now_us < INT64_MIN + pg_us))
        return -1;
    *age_us = now_us - pg_us;
    return 0;
}

/* Formats a PostgreSQL timestamp as ISO-8601 UTC with microseconds, or an infinity by name. */
char *pgf_pgtime_format(int64_t pg_us, char buf[PGF_TS_BUFSZ])
{
    /* PostgreSQL's own spelling, so a consumer can tell them from a date. */
    if (pg_us == PGF_PGTIME_INFINITY || pg_us == PGF_PGTIME_NEG_INFINITY) {
        snprintf(buf, PGF_TS_BUFSZ, "%s", pg_us > 0 ? "infinity" : "-infinity");
        return buf;
    }
    int64_t unix_us = pgf_pgtime_to_unix_us(pg_us);
    /* Floor division, so instants before 1970 keep a non-negative fraction. */
    int64_t secs = unix_us / 1000000, frac = unix_us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        secs -= 1;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL) {
        snprintf(buf, PGF_TS_BUFSZ, "invalid");
        return buf;
    }
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, PGF_TS_BUFSZ, "%s.%06" PRId64 "Z", date, frac);
    return buf;
}

/* Returns now in microseconds since 2000-01-01 UTC. */
int64_t pgf_pgtime_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec - PGF_PG_EPOCH_OFFSET_US;
}
