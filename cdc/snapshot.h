/* snapshot.h - snapshots and backfills: every existing row of the published tables, read in
 * key order in chunks on an ordinary connection while the slot keeps streaming, and handed
 * on as `read` events at the point in the stream where each chunk's high watermark comes
 * back (decoders/window.h has the rule that keeps them consistent with the stream).  Progress
 * is kept in the state store, so a restart resumes after the last acknowledged chunk; the
 * same state remembers the system and slot, so a lost slot is never a silent gap. */
#ifndef PGFANOUT_SNAPSHOT_H
#define PGFANOUT_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "cdc/options.h"
#include "cdc/state.h"
#include "decoders/event.h"
#include "sinks/sink.h"

/* The prefixes of pgfanout's own logical messages that the snapshot reads from the stream. */
#define PGF_WATERMARK_PREFIX "pgfanout.watermark"
#define PGF_BACKFILL_PREFIX "pgfanout.backfill"

struct event_base;
struct pgf_snapshot;

/* Returns the snapshot controller, or NULL when out of memory.  store may be NULL (no state
 * is kept: snapshots are not resumable); state is the document the store held (taken over,
 * and cleared in *state), or an empty one. */
struct pgf_snapshot *pgf_snapshot_new(struct event_base *base, const struct pgf_options *opts,
                                      struct pgf_state_store *store, struct pgf_state *state);

/* Saves the state a last time (bounded by the shutdown timeout) and frees s; NULL is fine. */
void pgf_snapshot_free(struct pgf_snapshot *s);

/* Called before pgfanout creates its (persistent) slot: when the new slot is for a job (the
 * initial snapshot, or a backfill after the slot was lost), records the job in the state and
 * saves it, then calls done(arg); else calls done(arg) at once.  Saved first, so a crash just
 * after the slot is created cannot leave the slot without the reason it was created for. */
void pgf_snapshot_prepare(struct pgf_snapshot *s, const char *system_id, int slot_lost, void (*done)(void *arg),
                          void *arg);

/* The start attempt that waits in pgf_snapshot_prepare was abandoned: done is not called. */
void pgf_snapshot_prepare_cancel(struct pgf_snapshot *s);

/* What the stream's start found, for pgf_snapshot_begin. */
struct pgf_snapshot_start {
    const char *system_id;
    uint64_t confirmed;  /* the slot's confirmed position */
    int slot_created;    /* pgfanout created the slot just now */
    int slot_lost;       /* the slot was lost and recreated (on_slot_loss: backfill) */
};

/* Decides, once streaming starts for the first time, what to read: the unfinished job in
 * the state, the initial snapshot, or every published table after a slot loss; and records
 * the system and slot in the state. */
void pgf_snapshot_begin(struct pgf_snapshot *s, const struct pgf_snapshot_start *start);

/* The stream (re)started: a chunk in flight is read again, since its watermarks may not come
 * back.  sinks are what acknowledgements are read from; wake(ctx) runs when initial_only is
 * done, so the stream stops (it then asks pgf_snapshot_finished). */
void pgf_snapshot_stream_started(struct pgf_snapshot *s, struct sink *const *sinks, size_t nsinks,
                                 void (*wake)(void *ctx), void *ctx);

/* Hands one event of the stream to the snapshot before the sinks see it.  Returns 0 to hand
 * it on, 1 when it was pgfanout's own message (consumed), or -1 when emit failed.  At a high
 * watermark the chunk's rows go to emit(ctx, ev), in the watermark's transaction. */
int pgf_snapshot_event(struct pgf_snapshot *s, const struct pgf_event *ev,
                       int (*emit)(void *ctx, const struct pgf_event *ev), void *ctx);

/* A transaction was committed to the sinks (its end LSN is what acknowledges a chunk). */
void pgf_snapshot_committed(struct pgf_snapshot *s, const struct pgf_txn *txn);

/* The sinks acknowledged everything up to acked; confirmed is what PostgreSQL was told. */
void pgf_snapshot_acked(struct pgf_snapshot *s, uint64_t acked, uint64_t confirmed);

/* True once snapshot: initial_only has read everything and saved it: time to exit 0. */
int pgf_snapshot_finished(const struct pgf_snapshot *s);

/* Called once a backfill request is judged: status is an HTTP status (202 accepted, 400 bad,
 * 503 cannot be checked now), body a line of JSON saying what was accepted and what not. */
typedef void (*pgf_backfill_cb)(void *arg, int status, const char *body);

/* Takes a backfill request (JSON: {"tables": [...], "where": ..., "from": ..., "to": ...}),
 * from `source` (for the log).  Only a trusted source (the HTTP listener, which the operator
 * exposes) may send a "where" filter, which pgfanout runs as SQL.  The tables are looked up on
 * a connection of their own; done (may be NULL) runs later from the loop.  A bad request is
 * logged and refused, never fatal. */
void pgf_snapshot_request(struct pgf_snapshot *s, const char *json, size_t len, const char *source, int trusted,
                          pgf_backfill_cb done, void *arg);

#endif
