/* heartbeat.h - an optional transactional heartbeat: every interval, a logical message in a
 * transaction of its own, so the slot advances even while the published tables are idle and
 * other databases on the server keep writing WAL. */
#ifndef PGFANOUT_HEARTBEAT_H
#define PGFANOUT_HEARTBEAT_H

struct event_base;
struct pgf_heartbeat;

/* Starts writing a heartbeat every interval_ms over its own plain connection to dsn (opened
 * lazily, reopened after an error).  Needs EXECUTE on pg_logical_emit_message; failures are
 * logged (once a minute at most) and counted, never fatal.  Returns NULL when out of memory. */
struct pgf_heartbeat *pgf_heartbeat_start(struct event_base *base, const char *dsn, int interval_ms);

/* Stops and closes the connection; NULL is fine. */
void pgf_heartbeat_stop(struct pgf_heartbeat *hb);

#endif
