/* txn_ring.h - the ordered ring of transactions a sink has in flight.  Every sink acks by
 * commit position, so each keeps one entry per transaction in commit order and moves its
 * acked_lsn only across a prefix of entries that are committed and owe nothing. */
#ifndef PGFANOUT_TXN_RING_H
#define PGFANOUT_TXN_RING_H

#include <stddef.h>
#include <stdint.h>

/* The part of a ring entry the ring itself reads; a sink's entry embeds it first. */
struct txn_head {
    uint64_t end_lsn;  /* what acking this entry confirms; 0 = abandoned, confirms nothing */
    uint32_t pending;  /* replies (or other work) still owed before the entry is done */
    int committed;
    int64_t commit_time; /* for latency and lag; 0 for a non-transactional message */
};

struct txn_ring {
    unsigned char *slots; /* entry of sequence s at slots + (s & (cap - 1)) * elem */
    size_t elem, cap;
    uint64_t head, tail;  /* live sequences are [head, tail) */
};

/* Sets up an empty ring of entries of elem bytes; returns 0, or -1 when out of memory. */
int txn_ring_init(struct txn_ring *r, size_t elem);

/* Frees the ring's memory (not what entries point to). */
void txn_ring_free(struct txn_ring *r);

/* Returns the entry of sequence seq, which must be live. */
static inline void *txn_ring_at(const struct txn_ring *r, uint64_t seq)
{
    return r->slots + (seq & (r->cap - 1)) * r->elem;
}

/* Appends a zeroed entry, growing the ring when full; returns it, or NULL when out of memory. */
void *txn_ring_push(struct txn_ring *r);

/* Returns the oldest entry when it is committed and owes nothing, else NULL. */
void *txn_ring_done_head(const struct txn_ring *r);

/* Returns the commit time of the oldest committed entry still owed an ack, or 0 when there is
 * none: the age of what the sink has not delivered yet. */
int64_t txn_ring_pending_since(const struct txn_ring *r);

/* Drops the oldest entry and raises *acked_lsn to its end_lsn. */
void txn_ring_pop(struct txn_ring *r, uint64_t *acked_lsn);

#endif
