/* test_window.c - the watermark window (decoders/window.c): which chunk rows survive the
 * high watermark.  Each case builds events as the stream would hand them on and checks the
 * rule of window.h: the DBLog window, the seam case (a transaction committed before the low
 * watermark but invisible to the chunk's snapshot), forgetting what a snapshot sees, and
 * chunks that must be read again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "decoders/window.h"

/* public.t (id int primary key, v text), as the pgoutput decoder describes it. */
static char id_name[] = "id", v_name[] = "v", public_name[] = "public", t_name[] = "t", other_name[] = "other";
static struct pgf_column cols[] = {{id_name, 23, -1, 1}, {v_name, 25, -1, 0}};
static struct pgf_relation rel_t = {.oid = 1, .nspname = public_name, .relname = t_name, .replident = 'd',
                                    .natts = 2, .attrs = cols};
static struct pgf_relation rel_other = {.oid = 2, .nspname = public_name, .relname = other_name, .replident = 'd',
                                        .natts = 2, .attrs = cols};

/* Records a change of rel by xid: op with the new row's id (after) and the old key id (old, or NULL). */
static void change(struct pgf_window *w, const struct pgf_relation *rel, uint32_t xid, enum pgf_op op,
                   const char *id, const char *old)
{
    struct pgf_txn txn = {.xid = xid};
    struct pgf_value after[2] = {pgf_value_text(id ? id : "", id ? (uint32_t)strlen(id) : 0), pgf_value_text("x", 1)};
    struct pgf_value key[2] = {pgf_value_text(old ? old : "", old ? (uint32_t)strlen(old) : 0),
                               {.kind = PGF_VALUE_ABSENT}};
    struct pgf_event ev = {.op = op, .txn = &txn, .rel = rel};
    if (op != PGF_OP_DELETE)
        ev.after = after;
    if (op == PGF_OP_DELETE)
        ev.key = key;
    else if (old)
        ev.before = key;
    assert_int_equal(pgf_window_note(w, &ev), 0);
}

/* Decides chunk rows with ids ids[0..n) under snapshot text snap; returns the rc, keep filled. */
static int high(struct pgf_window *w, int table, const char *snap, const char *const *ids, size_t n,
                unsigned char *keep)
{
    struct pgf_snap s;
    assert_int_equal(pgf_snap_parse(snap, &s), 0);
    char bufs[16][64];
    const char *keys[16];
    size_t lens[16];
    for (size_t i = 0; i < n; i++) {
        int len = (int)strlen(ids[i]);
        const char *v = ids[i];
        lens[i] = pgf_window_key(bufs[i], sizeof bufs[i], &v, &len, 1);
        keys[i] = bufs[i];
    }
    int rc = pgf_window_high(w, table, &s, keys, lens, n, keep);
    pgf_snap_free(&s);
    return rc;
}

/* A new window watching public.t by id. */
static struct pgf_window *watch_t(int *table)
{
    struct pgf_window *w = pgf_window_new();
    assert_non_null(w);
    const char *key[] = {"id"};
    *table = pgf_window_watch(w, "public", "t", 1, key);
    assert_true(*table >= 0);
    return w;
}

/* Visibility follows pg_current_snapshot's xmin:xmax:xip. */
static void test_snapshot_visibility(void **state)
{
    (void)state;
    struct pgf_snap s;
    assert_int_equal(pgf_snap_parse("100:110:103,107", &s), 0);
    assert_int_equal(s.nxip, 2);
    assert_true(pgf_snap_sees(&s, 99));
    assert_true(pgf_snap_sees(&s, 100));
    assert_false(pgf_snap_sees(&s, 103));
    assert_true(pgf_snap_sees(&s, 104));
    assert_false(pgf_snap_sees(&s, 107));
    assert_false(pgf_snap_sees(&s, 110));
    assert_false(pgf_snap_sees(&s, 200));
    pgf_snap_free(&s);
    assert_int_equal(pgf_snap_parse("5:5:", &s), 0);
    assert_true(pgf_snap_sees(&s, 4));
    assert_false(pgf_snap_sees(&s, 5));
    pgf_snap_free(&s);
    /* xid8 values past the first epoch: the low 32 bits compare modulo 2^32. */
    assert_int_equal(pgf_snap_parse("4294967396:4294967400:", &s), 0);
    assert_true(pgf_snap_sees(&s, 99));
    assert_false(pgf_snap_sees(&s, 104));
    pgf_snap_free(&s);
    assert_int_equal(pgf_snap_parse("garbage", &s), -1);
    assert_int_equal(pgf_snap_parse("1:2:x", &s), -1);
}

/* DBLog's window: a change between the watermarks drops the row, one before it does not. */
static void test_window_drops_changed_rows(void **state)
{
    (void)state;
    int t;
    struct pgf_window *w = watch_t(&t);
    change(w, &rel_t, 50, PGF_OP_UPDATE, "1", NULL); /* before the low watermark, seen by the chunk */
    pgf_window_low(w);
    change(w, &rel_t, 60, PGF_OP_UPDATE, "2", NULL);   /* in the window */
    change(w, &rel_other, 61, PGF_OP_UPDATE, "3", NULL); /* another table's id 3 */
    const char *ids[] = {"1", "2", "3"};
    unsigned char keep[3];
    assert_int_equal(high(w, t, "55:62:60,61", ids, 3, keep), 0);
    assert_int_equal(keep[0], 1);
    assert_int_equal(keep[1], 0);
    assert_int_equal(keep[2], 1);
    pgf_window_free(w);
}

/* The seam: committed (and handed on) before the low watermark, but invisible to the chunk's
 * snapshot; its row must be dropped, or the chunk's older version would land after it. */
static void test_seam_invisible_before_low(void **state)
{
    (void)state;
    int t;
    struct pgf_window *w = watch_t(&t);
    change(w, &rel_t, 70, PGF_OP_UPDATE, "7", NULL);
    change(w, &rel_t, 71, PGF_OP_DELETE, NULL, "8");
    change(w, &rel_t, 72, PGF_OP_UPDATE, "9", NULL);
    pgf_window_low(w);
    const char *ids[] = {"7", "8", "9"};
    unsigned char keep[3];
    struct pgf_snap snap;
    assert_int_equal(pgf_snap_parse("70:73:70,71", &snap), 0);
    assert_int_equal(pgf_window_pending(w, t, &snap), 2); /* 70 and 71: keys must be computed */
    assert_int_equal(pgf_window_pending(w, t + 1, &snap), 0);
    pgf_snap_free(&snap);
    /* 70 and 71 were still in progress for the snapshot; 72 was visible. */
    assert_int_equal(high(w, t, "70:73:70,71", ids, 3, keep), 0);
    assert_int_equal(keep[0], 0);
    assert_int_equal(keep[1], 0);
    assert_int_equal(keep[2], 1);
    pgf_window_free(w);
}

/* A key change notes the old key and the new one. */
static void test_key_change_drops_both(void **state)
{
    (void)state;
    int t;
    struct pgf_window *w = watch_t(&t);
    pgf_window_low(w);
    change(w, &rel_t, 80, PGF_OP_UPDATE, "11", "10");
    const char *ids[] = {"10", "11", "12"};
    unsigned char keep[3];
    assert_int_equal(high(w, t, "79:79:", ids, 3, keep), 0);
    assert_int_equal(keep[0], 0);
    assert_int_equal(keep[1], 0);
    assert_int_equal(keep[2], 1);
    pgf_window_free(w);
}

/* What a snapshot sees is forgotten at its high watermark; what it did not see is kept for
 * the next chunk, then as from before that chunk's low watermark. */
static void test_forgets_what_was_seen(void **state)
{
    (void)state;
    int t;
    struct pgf_window *w = watch_t(&t);
    change(w, &rel_t, 90, PGF_OP_UPDATE, "1", NULL);
    change(w, &rel_t, 91, PGF_OP_UPDATE, "2", NULL);
    const char *ids[] = {"1", "2"};
    unsigned char keep[2];
    assert_int_equal(high(w, t, "91:92:91", ids, 2, keep), 0);
    assert_int_equal(pgf_window_size(w), 1); /* 91 stays: this snapshot did not see it */
    /* The next chunk's snapshot sees 91: its row is current in that chunk. */
    assert_int_equal(high(w, t, "92:92:", ids, 2, keep), 0);
    assert_int_equal(keep[0], 1);
    assert_int_equal(keep[1], 1);
    assert_int_equal(pgf_window_size(w), 0);
    pgf_window_free(w);
}

/* A truncate, or a delete without the key columns, makes the chunk unusable. */
static void test_unusable_chunks(void **state)
{
    (void)state;
    int t;
    struct pgf_window *w = watch_t(&t);
    pgf_window_low(w);
    struct pgf_txn txn = {.xid = 100};
    const struct pgf_relation *rels[] = {&rel_t};
    struct pgf_event tr = {.op = PGF_OP_TRUNCATE, .txn = &txn, .truncate = {.nrels = 1, .rels = rels}};
    assert_int_equal(pgf_window_note(w, &tr), 0);
    const char *ids[] = {"1"};
    unsigned char keep[1] = {1};
    assert_int_equal(high(w, t, "100:101:100", ids, 1, keep), 1);
    assert_int_equal(keep[0], 0);
    /* Under REPLICA IDENTITY NOTHING a delete carries no key. */
    pgf_window_low(w);
    struct pgf_value none[2] = {{.kind = PGF_VALUE_ABSENT}, {.kind = PGF_VALUE_ABSENT}};
    struct pgf_txn txn2 = {.xid = 102};
    struct pgf_event del = {.op = PGF_OP_DELETE, .txn = &txn2, .rel = &rel_t, .key = none};
    assert_int_equal(pgf_window_note(w, &del), 0);
    assert_int_equal(high(w, t, "101:103:102", ids, 1, keep), 1);
    pgf_window_free(w);
}

/* Keys are length-prefixed: ("1", "23") and ("12", "3") differ, NULL differs from "". */
static void test_key_encoding(void **state)
{
    (void)state;
    char a[64], b[64];
    const char *va[] = {"1", "23"}, *vb[] = {"12", "3"};
    int la[] = {1, 2}, lb[] = {2, 1};
    size_t na = pgf_window_key(a, sizeof a, va, la, 2), nb = pgf_window_key(b, sizeof b, vb, lb, 2);
    assert_false(na == nb && memcmp(a, b, na) == 0);
    const char *vn[] = {NULL}, *ve[] = {""};
    int ln[] = {0}, le[] = {0};
    na = pgf_window_key(a, sizeof a, vn, ln, 1);
    nb = pgf_window_key(b, sizeof b, ve, le, 1);
    assert_false(na == nb && memcmp(a, b, na) == 0);
    /* A short buffer reports the length needed and writes nothing past it. */
    char tiny[2] = {'x', 'y'};
    assert_true(pgf_window_key(tiny, 1, va, la, 2) > 2);
    assert_int_equal(tiny[1], 'y');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_visibility),     cmocka_unit_test(test_window_drops_changed_rows),
        cmocka_unit_test(test_seam_invisible_before_low), cmocka_unit_test(test_key_change_drops_both),
        cmocka_unit_test(test_forgets_what_was_seen),   cmocka_unit_test(test_unusable_chunks),
        cmocka_unit_test(test_key_encoding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
