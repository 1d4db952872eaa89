/* replconn.h - the replication connection: connect, check the server, set up the slot and
 * publication, and start streaming.  Every failure leaves a message that says what failed
 * and what to do; nothing on the server is changed before every check has passed. */
#ifndef PGFANOUT_REPLCONN_H
#define PGFANOUT_REPLCONN_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "cdc/options.h"

/* Sets a function run every 100 ms while a connection attempt waits for the server (main
 * serves HTTP from it, so /healthz answers during a slow connect); NULL for none. */
void pgf_replconn_set_idle_hook(void (*fn)(void *), void *arg);

/* With hold set, connection attempts skip the idle hook: for connects made from inside an
 * event callback, which must not run the event loop again. */
void pgf_replconn_hold_idle_hook(int hold);

/* Checks that dsn is a valid libpq connection string without connecting.  Returns 0, or -1
 * with a message in err that never quotes the DSN. */
int pgf_dsn_check(const char *dsn, char *err, size_t errlen);

/* Opens a connection for dsn (PG* variables fill the gaps), with replication=database when
 * replication is set.  Returns the connection, or NULL with the reason in err: host, port and
 * libpq's message, and a hint when the role lacks the REPLICATION attribute.  The message
 * never contains the DSN, so no password can leak into logs. */
PGconn *pgf_replconn_open(const char *dsn, int replication, char *err, size_t errlen);

/* What the server told us while preparing. */
struct pgf_server_info {
    char database[256];
    uint64_t confirmed_flush; /* the slot's confirmed position; streaming resumes after it */
};

/* What a reconnect knows of the stream it resumes. */
struct pgf_resume {
    uint64_t confirmed; /* the highest position confirmed to the server so far */
};

/* Returned by pgf_replconn_start when another walsender holds the slot: retry later. */
#define PGF_REPLCONN_BUSY (-2)

/* Runs IDENTIFY_SYSTEM and checks wal_level, the publication and the slot, then creates the
 * publication (refusing one whose tables lack a replica identity, unless allowed) and the
 * slot if asked to and missing.  resume is NULL at startup; on a reconnect a missing slot, or
 * one ahead of resume->confirmed, is an error that says changes were lost, and no slot is
 * created.  Returns 0 with *info filled, or -1 with the reason in err. */
int pgf_replconn_prepare(PGconn *conn, const struct pgf_options *opts, const struct pgf_resume *resume,
                         struct pgf_server_info *info, char *err, size_t errlen);

/* Sends START_REPLICATION for the options' slot and publication from the slot's confirmed
 * position.  Returns 0 once the server is in COPY BOTH mode, PGF_REPLCONN_BUSY when another
 * walsender holds the slot, or -1; err says why. */
int pgf_replconn_start(PGconn *conn, const struct pgf_options *opts, char *err, size_t errlen);

/* Drops the replication slot over a new replication connection, waiting while it is still
 * in use by a walsender that is going away.  Returns 0, or -1 with the reason in err. */
int pgf_replconn_drop_slot(const char *dsn, const char *slot, char *err, size_t errlen);

#endif
