/* pgconn.h - one libpq connection driven by the process's event loop.  Connecting and each
 * query are started here and finish in a callback, so no PostgreSQL round trip ever blocks
 * the loop: HTTP, the sinks and the stream keep running while a server is slow or frozen. */
#ifndef PGFANOUT_PGCONN_H
#define PGFANOUT_PGCONN_H

#include <libpq-fe.h>

struct event_base;
struct pgf_pgconn;

/* Called once when a connect or a query ends.  err is NULL on success, else what failed
 * (libpq's message, or a timeout).  res is the query's last result (NULL for a connect); it
 * is cleared after the callback returns, so copy what you need.  The callback may free pc. */
typedef void (*pgf_pgconn_cb)(void *arg, struct pgf_pgconn *pc, PGresult *res, const char *err);

/* Starts connecting to dsn, with replication=database when replication is set, with the
 * session settings pgfanout pins.  cb runs once connected, or with err after a failure or
 * timeout_ms without an answer.  Returns the connection (free it with pgf_pgconn_free, also
 * after a failure), or NULL when out of memory. */
struct pgf_pgconn *pgf_pgconn_connect(struct event_base *base, const char *dsn, int replication, int timeout_ms,
                                      pgf_pgconn_cb cb, void *arg);

/* Sends sql (one or more statements) on a connected pc; cb runs with the last result once
 * the server has answered them all (a COPY BOTH result ends the query at once), or with err
 * when the server reported an error (res then holds that error result), the connection broke
 * or timeout_ms passed (0: no limit).  Returns 0, or -1 when it could not be sent (cb is not
 * called).  One query at a time. */
int pgf_pgconn_query(struct pgf_pgconn *pc, const char *sql, int timeout_ms, pgf_pgconn_cb cb, void *arg);

/* As pgf_pgconn_query, for sql that must be exactly one statement: it goes by the extended
 * protocol, where the server refuses a second statement, so text spliced into sql (a
 * request's filter) cannot end the statement and run another. */
int pgf_pgconn_query_one(struct pgf_pgconn *pc, const char *sql, int timeout_ms, pgf_pgconn_cb cb, void *arg);

/* Called from a callback: the callback keeps res (a large chunk of rows, say) and PQclear()s
 * it itself later, instead of it being cleared when the callback returns. */
void pgf_pgconn_take(PGresult *res);

/* True while a connect or query is under way. */
int pgf_pgconn_busy(const struct pgf_pgconn *pc);

/* The libpq connection, for escaping and result inspection; pc still owns it. */
PGconn *pgf_pgconn_pq(struct pgf_pgconn *pc);

/* Hands the libpq connection over to the caller (in blocking mode, as the stream uses it) and
 * frees the rest of pc. */
PGconn *pgf_pgconn_release(struct pgf_pgconn *pc);

/* Closes the connection and frees pc, abandoning what is under way without calling its
 * callback; NULL is fine. */
void pgf_pgconn_free(struct pgf_pgconn *pc);

/* Connects to dsn with the same settings as pgf_pgconn_connect, waiting for the answer (at
 * most connect_timeout, 10 s by default).  Only for work outside the event loop's life: the
 * startup catalog checks and dropping the slot at exit.  Returns the connection (check
 * PQstatus), or NULL when out of memory. */
PGconn *pgf_pgconn_open_blocking(const char *dsn, int replication);

/* Copies libpq's message into buf without its trailing newline and spaces. */
void pgf_pgconn_trim(char *buf, size_t len, const char *msg);

#endif
