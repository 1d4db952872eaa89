/* lsn.h - PostgreSQL LSNs and timestamps in their text and wire forms. */
#ifndef PGFANOUT_LSN_H
#define PGFANOUT_LSN_H

#include <stddef.h>
#include <stdint.h>

/* Buffer size that fits any "XXXXXXXX/XXXXXXXX" plus NUL. */
#define PGF_LSN_BUFSZ 18
/* Buffer size for "YYYY-MM-DDTHH:MM:SS.ffffffZ" plus NUL, with room for odd years. */
#define PGF_TS_BUFSZ 40
/* Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 UTC). */
#define PGF_PG_EPOCH_OFFSET_US INT64_C(946684800000000)

/* Formats lsn as PostgreSQL does ("16/B374D848") into buf; returns buf. */
char *pgf_lsn_format(uint64_t lsn, char buf[PGF_LSN_BUFSZ]);

/* Parses "X/X" hex into *lsn; returns 0, or -1 if s is not exactly that form. */
int pgf_lsn_parse(const char *s, uint64_t *lsn);

/* PostgreSQL's 'infinity' and '-infinity' timestamps (DT_NOEND, DT_NOBEGIN).  A server sends
 * them as commit times: a replication origin's timestamp is passed on as is, and
 * pg_replication_origin_xact_setup(lsn, 'infinity') is legal. */
#define PGF_PGTIME_INFINITY INT64_MAX
#define PGF_PGTIME_NEG_INFINITY INT64_MIN

/* Formats a PostgreSQL timestamp (microseconds since 2000-01-01 UTC) as ISO-8601 UTC
 * with microseconds and a Z, or "infinity" / "-infinity" as PostgreSQL prints those; returns
 * buf. */
char *pgf_pgtime_format(int64_t pg_us, char buf[PGF_TS_BUFSZ]);

/* Returns a PostgreSQL timestamp as microseconds since 1970-01-01 UTC.  The infinities stay
 * INT64_MAX and INT64_MIN; a finite time the shift would carry past int64 (only years beyond
 * 292,000) is clamped to INT64_MAX - 1, so it never reads as infinity. */
int64_t pgf_pgtime_to_unix_us(int64_t pg_us);

/* Sets *age_us to now_us - pg_us (both PostgreSQL timestamps) and returns 0; returns -1,
 * leaving *age_us alone, when pg_us is an infinity or the difference does not fit int64:
 * such a time is no latency, and callers skip it. */
int pgf_pgtime_age(int64_t now_us, int64_t pg_us, int64_t *age_us);

/* Returns the current time as microseconds since PostgreSQL's epoch. */
int64_t pgf_pgtime_now(void);

/* Returns microseconds on a clock that never steps (CLOCK_MONOTONIC), for intervals and
 * deadlines: a wall clock set back or forward must not hold or rush what waits on it. */
int64_t pgf_mono_us(void);

#endif
