/* test_txn_ring.c - the ordered ring every sink acks through: acked_lsn moves only across a
 * prefix of committed entries that owe nothing, entries keep their contents across growth,
 * and an abandoned entry (end_lsn 0) confirms nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "sinks/txn_ring.h"

/* A sink's entry: the ring's head first, then the sink's own fields. */
struct entry {
    struct txn_head h;
    uint64_t tag;
};

/* Pops every done entry from the head; returns how many. */
static int advance(struct txn_ring *r, uint64_t *acked)
{
    int n = 0;
    while (txn_ring_done_head(r) != NULL) {
        txn_ring_pop(r, acked);
        n++;
    }
    return n;
}

/* An out-of-order finish does not move acked_lsn past the unfinished head. */
static void test_acks_only_a_done_prefix(void **state)
{
    (void)state;
    struct txn_ring r;
    assert_int_equal(txn_ring_init(&r, sizeof(struct entry)), 0);
    uint64_t acked = 0;
    for (int i = 1; i <= 3; i++) {
        struct entry *e = txn_ring_push(&r);
        e->h.end_lsn = (uint64_t)i * 100;
        e->h.pending = 1;
        e->h.committed = 1;
    }
    ((struct txn_head *)txn_ring_at(&r, 2))->pending = 0; /* the newest finishes first */
    ((struct txn_head *)txn_ring_at(&r, 1))->pending = 0;
    assert_int_equal(advance(&r, &acked), 0);
    assert_int_equal(acked, 0);
    ((struct txn_head *)txn_ring_at(&r, 0))->pending = 0;
    assert_int_equal(advance(&r, &acked), 3);
    assert_int_equal(acked, 300);
    assert_int_equal(r.head, r.tail);
    txn_ring_free(&r);
}

/* An entry still being emitted (not committed) holds back the ones after it. */
static void test_uncommitted_head_holds(void **state)
{
    (void)state;
    struct txn_ring r;
    assert_int_equal(txn_ring_init(&r, sizeof(struct entry)), 0);
    uint64_t acked = 7;
    struct entry *open = txn_ring_push(&r);
    open->h.end_lsn = 0;
    struct entry *next = txn_ring_push(&r);
    next->h.end_lsn = 50;
    next->h.committed = 1;
    assert_null(txn_ring_done_head(&r));
    ((struct txn_head *)txn_ring_at(&r, 0))->committed = 1; /* abandoned: committed, end_lsn 0 */
    assert_int_equal(advance(&r, &acked), 2);
    assert_int_equal(acked, 50); /* the abandoned entry confirmed nothing, nor lowered it */
    txn_ring_free(&r);
}

/* Growth past the first 64 entries, with the head moved on, keeps each entry's contents at its
 * sequence; pushed entries start zeroed. */
static void test_growth_keeps_entries(void **state)
{
    (void)state;
    struct txn_ring r;
    assert_int_equal(txn_ring_init(&r, sizeof(struct entry)), 0);
    uint64_t acked = 0;
    for (uint64_t s = 0; s < 40; s++) { /* move head and tail off slot 0 first */
        struct entry *e = txn_ring_push(&r);
        e->h.committed = 1;
        e->h.end_lsn = s + 1;
    }
    assert_int_equal(advance(&r, &acked), 40);
    for (uint64_t s = 40; s < 40 + 1000; s++) {
        struct entry *e = txn_ring_push(&r);
        assert_non_null(e);
        assert_int_equal(e->h.pending, 0);
        assert_int_equal(e->tag, 0);
        e->tag = s * 3;
        e->h.end_lsn = s + 1;
        e->h.pending = 1;
        e->h.committed = 1;
    }
    assert_true(r.cap >= 1000);
    for (uint64_t s = 40; s < 1040; s++)
        assert_int_equal(((struct entry *)txn_ring_at(&r, s))->tag, s * 3);
    for (uint64_t s = 40; s < 1040; s++)
        ((struct txn_head *)txn_ring_at(&r, s))->pending = 0;
    assert_int_equal(advance(&r, &acked), 1000);
    assert_int_equal(acked, 1040);
    txn_ring_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_acks_only_a_done_prefix),
        cmocka_unit_test(test_uncommitted_head_holds),
        cmocka_unit_test(test_growth_keeps_entries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
