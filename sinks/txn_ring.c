/* txn_ring.c - see txn_ring.h. */
#include "sinks/txn_ring.h"

#include <stdlib.h>
#include <string.h>

/* Allocates 64 entries to start with. */
int txn_ring_init(struct txn_ring *r, size_t elem)
{
    r->elem = elem;
    r->cap = 64;
    r->head = r->tail = 0;
    r->slots = calloc(r->cap, elem);
    return r->slots ? 0 : -1;
}

/* Frees the slots. */
void txn_ring_free(struct txn_ring *r)
{
    free(r->slots);
    r->slots = NULL;
}

/* Appends an entry; doubling keeps every live sequence at its masked slot. */
void *txn_ring_push(struct txn_ring *r)
{
    if (r->tail - r->head == r->cap) {
        size_t ncap = r->cap * 2;
        unsigned char *n = malloc(ncap * r->elem);
        if (n == NULL)
            return NULL;
        for (uint64_t s = r->head; s < r->tail; s++)
            memcpy(n + (s & (ncap - 1)) * r->elem, txn_ring_at(r, s), r->elem);
        free(r->slots);
        r->slots = n;
        r->cap = ncap;
    }
    void *e = txn_ring_at(r, r->tail++);
    memset(e, 0, r->elem);
    return e;
}

/* The head entry when done; see txn_ring.h. */
void *txn_ring_done_head(const struct txn_ring *r)
{
    if (r->head == r->tail)
        return NULL;
    struct txn_head *h = txn_ring_at(r, r->head);
    return h->committed && h->pending == 0 ? h : NULL;
}

/* The oldest owed commit time; see txn_ring.h.  Entries are in commit order, so the first
 * committed, confirming one is the oldest. */
int64_t txn_ring_pending_since(const struct txn_ring *r)
{
    for (uint64_t s = r->head; s < r->tail; s++) {
        const struct txn_head *h = txn_ring_at(r, s);
        if (h->committed && h->end_lsn != 0)
            return h->commit_time;
        if (!h->committed)
            return 0; /* still being emitted: nothing after it is committed either */
    }
    return 0;
}

/* Pops the head; see txn_ring.h. */
void txn_ring_pop(struct txn_ring *r, uint64_t *acked_lsn)
{
    struct txn_head *h = txn_ring_at(r, r->head);
    if (h->end_lsn > *acked_lsn)
        *acked_lsn = h->end_lsn;
    r->head++;
}
