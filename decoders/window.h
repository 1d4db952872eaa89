/* window.h - the watermark window of a snapshot (DBLog, arXiv 2010.12597): which rows of a
 * chunk, read by a SELECT between a low and a high watermark, may be handed on when the high
 * watermark comes back through the slot, so that no chunk row ever lands after a newer
 * change of the same row.
 *
 * The rule.  A chunk row with key k is dropped when some transaction decoded before the high
 * watermark changed k (or truncated the table) and either
 *   (a) it was decoded after the low watermark (DBLog's window), or
 *   (b) the chunk's snapshot did not see it: its xid is in the snapshot's in-progress list,
 *       or at or past its xmax.
 * (b) is the seam case: PostgreSQL writes a commit record before the transaction becomes
 * visible (a synchronous-replication wait sits in between), so a transaction can commit in
 * the WAL before the low watermark and still be invisible to the chunk's SELECT.  Its change
 * was handed on before the watermark; the chunk's older row must not follow it.
 * To apply (b) the window remembers the keys of every decoded transaction on the job's
 * tables until a chunk's snapshot sees it (then every later snapshot does too), and the job
 * starts only once every transaction in progress when recording began has ended, so none
 * decoded before the recording can be invisible to a chunk.
 * A change whose key cannot be told (a delete without the key columns) or a truncate makes
 * the chunk unusable: it is read again.
 *
 * Pure: no I/O. */
#ifndef PGFANOUT_WINDOW_H
#define PGFANOUT_WINDOW_H

#include <stddef.h>
#include <stdint.h>

#include "decoders/event.h"

struct pgf_window;

/* A chunk's snapshot, as pg_current_snapshot() reports it. */
struct pgf_snap {
    uint32_t xmin, xmax; /* low 32 bits of the xid8 values: pgoutput's xids are 32-bit */
    uint32_t *xip;
    size_t nxip;
};

/* Parses pg_current_snapshot()::text ("xmin:xmax:xip,xip") into *s (xip malloc'd).  Returns 0,
 * or -1 when it is malformed or out of memory. */
int pgf_snap_parse(const char *text, struct pgf_snap *s);

/* Frees s->xip. */
void pgf_snap_free(struct pgf_snap *s);

/* Returns 1 when a transaction with this xid committed before snapshot s was taken (s sees
 * its changes), else 0. */
int pgf_snap_sees(const struct pgf_snap *s, uint32_t xid);

/* Returns a new, empty window, or NULL when out of memory. */
struct pgf_window *pgf_window_new(void);

/* Frees w; NULL is fine. */
void pgf_window_free(struct pgf_window *w);

/* Starts recording changes of table schema.table, keyed by the ncols columns named cols
 * (copied).  Returns the table's number for the calls below, or -1 when out of memory. */
int pgf_window_watch(struct pgf_window *w, const char *schema, const char *table, int ncols, const char *const *cols);

/* Stops recording everything and forgets what was recorded (the job ended). */
void pgf_window_reset(struct pgf_window *w);

/* Notes the low watermark of the chunk under way: changes recorded from now on are in the window. */
void pgf_window_low(struct pgf_window *w);

/* Records one event of the stream (xid from ev->txn): a change of a watched table notes its
 * keys (old and new).  Returns 0, or -1 when out of memory. */
int pgf_window_note(struct pgf_window *w, const struct pgf_event *ev);

/* Encodes a key of n text values (NULL data = SQL NULL) into buf (capacity cap); returns its
 * length, or the length needed when more than cap. */
size_t pgf_window_key(char *buf, size_t cap, const char *const *vals, const int *lens, int n);

/* The high watermark of the chunk of table `table` came back: sets keep[i] to 1 for each of
 * the n chunk rows (keys[i], klens[i], encoded by pgf_window_key) that may be handed on, and
 * to 0 for those a newer change covers.  Then forgets what snapshot s sees, and closes the
 * window.  Returns 0, 1 when the chunk cannot be used (read it again), or -1 when out of memory. */
int pgf_window_high(struct pgf_window *w, int table, const struct pgf_snap *s, const char *const *keys,
                    const size_t *klens, size_t n, unsigned char *keep);

/* Returns how many remembered changes would drop rows of a chunk of `table` read under
 * snapshot s (0: every row may be handed on, no key needs computing). */
size_t pgf_window_pending(const struct pgf_window *w, int table, const struct pgf_snap *s);

/* Returns how many changes the window remembers (for tests and the memory bound). */
size_t pgf_window_size(const struct pgf_window *w);

#endif
