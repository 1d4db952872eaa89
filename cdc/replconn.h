/* replconn.h - the replication connection: connect, check the server, set up the slot and
 * publication, and start streaming.  Every failure leaves a message that says what failed
 * and what to do; nothing on the server is changed before every check has passed. */
#ifndef PGFANOUT_REPLCONN_H
#define PGFANOUT_REPLCONN_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "cdc/options.h"

/* Checks that dsn is a valid libpq connection string without connecting.  Returns 0, or -1
 * with a message in err that never quotes the DSN. */
int pgf_dsn_check(const char *dsn, char *err, size_t errlen);

/* Opens a connection for dsn (PG* variables fill the gaps), with replication=database when
 * replication is set, and waits for it: only for work outside the event loop's life (the
 * startup catalog checks, dropping the slot at exit).  Returns the connection, or NULL with
 * the reason in err: host, port and libpq's message, never the DSN, so no password can leak
 * into logs. */
PGconn *pgf_replconn_open(const char *dsn, int replication, char *err, size_t errlen);

/* What the server told us while preparing. */
struct pgf_server_info {
    char database[256];
    char system_id[32];       /* IDENTIFY_SYSTEM's systemid */
    uint64_t confirmed_flush; /* the slot's confirmed position; streaming resumes after it */
    int slot_created;         /* the slot was created by this attempt */
    int slot_lost;            /* the state's slot was gone (or the system another) and on_slot_loss:
                               * backfill recreated it: every published table must be read again */
};

/* What a reconnect knows of the stream it resumes, or, at startup, what pgfanout's state
 * remembers of an earlier run (from_state). */
struct pgf_resume {
    uint64_t confirmed; /* the highest position confirmed to the server so far */
    int from_state;     /* a start with state: a missing slot or another system is a gap */
    const char *system_id; /* the system the state was written against ("" unknown) */
    const char *state_where; /* where the state is, for messages */
};

/* How a start attempt ended, besides 0 (streaming). */
#define PGF_REPLCONN_FATAL (-1) /* a bad setting or a lost slot: retrying cannot help */
#define PGF_REPLCONN_BUSY (-2)  /* another walsender holds the slot: retry, it is ours once free */
#define PGF_REPLCONN_RETRY (-3) /* the server was unreachable or the connection broke */

/* Called once when a start attempt ends: conn is the replication connection in COPY BOTH
 * mode (the callee owns it) when result is 0, else NULL with err saying why. */
typedef void (*pgf_replstart_cb)(void *arg, PGconn *conn, int result, const char *err,
                                 const struct pgf_server_info *info);

struct event_base;
struct pgf_replstart;

/* Starts connecting, on base's loop: IDENTIFY_SYSTEM, wal_level, the slot and the publication
 * are checked, the publication (refusing one whose tables lack a replica identity, unless
 * allowed; on a plain connection of its own) and the slot are created if asked to and missing,
 * then START_REPLICATION from the slot's confirmed position.  Nothing on the server changes
 * before every read-only check has passed.  resume is NULL at startup without state; on a
 * reconnect a missing slot, or one ahead of resume->confirmed, is an error that says changes
 * were lost, and no slot is created.  At startup with state, a missing slot or another system
 * is the same error, unless on_slot_loss is backfill: then the slot is created and
 * info->slot_lost says every table must be read again.  done runs once, from the loop.  Returns the attempt, or NULL when out of memory. */
struct pgf_replstart *pgf_replconn_start(struct event_base *base, const struct pgf_options *opts,
                                         const struct pgf_resume *resume, pgf_replstart_cb done, void *arg);

/* Asked once, before the attempt creates a (persistent) slot, with the system identifier and
 * whether the state's slot was lost; the attempt waits until pgf_replconn_proceed(st). */
typedef void (*pgf_before_create_cb)(void *arg, const char *system_id, int slot_lost, struct pgf_replstart *st);

/* Sets the hook of an attempt just started (before the loop runs it). */
void pgf_replconn_before_create(struct pgf_replstart *st, pgf_before_create_cb cb, void *arg);

/* Lets an attempt waiting in its hook create the slot and go on. */
void pgf_replconn_proceed(struct pgf_replstart *st);

/* Abandons an attempt that has not reported yet (done is not called); NULL is fine. */
void pgf_replconn_cancel(struct pgf_replstart *st);

/* Drops the replication slot over a new replication connection, waiting while it is still
 * in use by a walsender that is going away.  Returns 0, or -1 with the reason in err. */
int pgf_replconn_drop_slot(const char *dsn, const char *slot, char *err, size_t errlen);

/* Called once with the slot's confirmed position: found is 0 when it could not be had. */
typedef void (*pgf_slot_position_cb)(void *arg, int found, uint64_t lsn);

/* Starts asking the server, on base's loop over a plain connection, for slot's confirmed
 * position (what it has acknowledged, as opposed to what was sent to it).  done runs once,
 * from the loop.  Returns 0, or -1 when it cannot start (done is not called). */
int pgf_replconn_slot_position(struct event_base *base, const char *dsn, const char *slot,
                               pgf_slot_position_cb done, void *arg);

#endif
