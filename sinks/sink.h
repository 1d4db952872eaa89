/* sink.h - the one interface every sink implements: emit changes, commit transactions,
 * poll for acknowledgements, flush, close.  Acks are reported by commit position:
 * sink->acked_lsn is the end LSN of the newest transaction that this sink, and every
 * transaction before it, has durably accepted.  The checkpoint never passes the lowest
 * acked_lsn of all sinks. */
#ifndef PGFANOUT_SINK_H
#define PGFANOUT_SINK_H

#include <stddef.h>
#include <stdint.h>

#include "decoders/event.h"

struct pgf_hist;

struct sink;

/* Room for a sink's error text: a record too large for Kafka is named in full (table, LSN,
 * key, size, topic and the settings to raise). */
#define SINK_ERRSTR_SIZE 2048

struct sink_ops {
    const char *name;
    /* Takes one change; returns 0, or -1 with sink->errstr set (a permanent failure). */
    int (*emit)(struct sink *sink, const struct pgf_event *ev);
    /* Ends the transaction whose changes were emitted; the ack comes later via acked_lsn.
     * end_lsn 0 abandons a transaction cut off by a lost connection: it acks nothing. */
    int (*commit)(struct sink *sink, const struct pgf_txn *txn);
    /* Serves delivery reports without blocking; returns 0, or -1 with errstr set. */
    int (*poll)(struct sink *sink);
    /* Waits up to timeout_ms for everything committed to be acked.  Returns 0 when all is, 1
     * with errstr set when time ran out (the rest stays unconfirmed in the slot: nothing is
     * lost), or -1 with errstr set on a permanent failure. */
    int (*flush)(struct sink *sink, int timeout_ms);
    /* Optional (NULL: ignored): the stream saw a keepalive at lsn between transactions, so
     * every transaction that ended before lsn has been handed to the sinks. */
    void (*idle)(struct sink *sink, uint64_t lsn);
    /* Releases the sink; the pointer is invalid afterwards. */
    void (*close)(struct sink *sink);
};

/* The part every sink shares; a sink embeds it first. */
struct sink {
    const struct sink_ops *ops;
    uint64_t acked_lsn;     /* see the top of this file */
    size_t inflight_bytes;  /* emitted but not yet acked; drives back-pressure */
    size_t inflight_msgs;
    int wake_fd;            /* readable when poll() has work (acks to serve), or -1 */
    const struct pgf_hist *latency; /* commit-to-ack latency, for sinks that measure it, or NULL */
    uint64_t errors;        /* failed connections, deliveries or commands (for /metrics) */
    uint64_t retries;       /* reconnections or resends after an error */
    int connected;          /* can deliver now (for /readyz) */
    int backlogged;         /* holds records it could not hand on yet: stop reading until it drains */
    int64_t pending_since;  /* commit time of the oldest transaction not acked yet, or 0 (for lag) */
    char errstr[SINK_ERRSTR_SIZE];
};

/* Calls through the sink's table; see sink_ops for each contract. */
static inline int sink_emit(struct sink *s, const struct pgf_event *ev) { return s->ops->emit(s, ev); }
static inline int sink_commit(struct sink *s, const struct pgf_txn *t) { return s->ops->commit(s, t); }
static inline int sink_poll(struct sink *s) { return s->ops->poll(s); }
static inline int sink_flush(struct sink *s, int ms) { return s->ops->flush(s, ms); }
static inline void sink_close(struct sink *s) { if (s) s->ops->close(s); }

/* Grows the buffer *buf (capacity *cap) to hold at least need bytes, doubling from 256 and
 * keeping its contents; returns 0, or -1 when out of memory (the buffer is unchanged). */
int sink_grow(void **buf, size_t *cap, size_t need);

/* Sets sink->errstr from a format and returns -1, for sinks' error paths. */
int sink_fail(struct sink *sink, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
