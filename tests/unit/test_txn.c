/* test_txn.c - transaction assembly (decoders/txn.c) against the pgoutput fixtures captured
 * from PostgreSQL 15, with a recording fake consumer: Begin/Commit grouping and positions,
 * the events' key/before/after by pgoutput's rules, --endpos, heartbeat filtering,
 * non-transactional messages, and a transaction cut off by a reconnect.
 *
 * Usage: test_txn FIXTURES_DIR   (text.bin, see tests/fixtures/capture.py)
 *
 * The fixtures hold the pgoutput payloads only, not XLogData's start positions, so each
 * record is fed at a made-up position (FAKE_LSN); commit, end and message positions come from
 * the messages themselves and are compared with each other, never with constants. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "decoders/txn.h"

/* The position a fixture record is fed at. */
#define FAKE_LSN(i) (UINT64_C(0x1000000) + 16 * (uint64_t)(i))

/* One pgoutput message of the fixture. */
struct record {
    const uint8_t *p;
    size_t len;
};

static const char *fixtures_dir;
static uint8_t *text_data;
static struct record *text_recs;
static size_t text_n;

/* Reads dir/text.bin and frames its 4-byte length-prefixed records; returns 0 or -1. */
static int load_text(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/text.bin", dir);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "test_txn: cannot open %s\n", path);
        return -1;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    text_data = malloc(size > 0 ? (size_t)size : 1);
    if (text_data == NULL || size <= 0 || fread(text_data, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        return -1;
    }
    fclose(f);
    text_recs = malloc((size_t)size / 4 * sizeof *text_recs);
    for (size_t off = 0; text_recs && off + 4 <= (size_t)size;) {
        const uint8_t *h = text_data + off;
        size_t len = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
        if (len > (size_t)size - off - 4)
            return -1;
        text_recs[text_n++] = (struct record){.p = h + 4, .len = len};
        off += 4 + len;
    }
    return text_recs ? 0 : -1;
}

/* ---------------------------------------------------------------- the recording consumer */

/* What the consumer was handed: an event ('E') or a commit ('C'), with images as text. */
struct rec {
    char what;
    enum pgf_op op;
    uint64_t lsn;
    int has_txn;
    struct pgf_txn txn; /* a copy; origin points at origin below */
    char origin[64];
    char table[64];
    char key[256], before[256], after[256];
    char prefix[64];
    uint32_t ntruncated;
    int options;
};

struct recorder {
    struct rec recs[64];
    size_t n;
    int fail_events; /* the event callback returns -1 */
};

/* Writes an image as "name=value,..." (ABSENT columns left out, NULL as NULL, unchanged TOAST
 * as <toast>, a long value as <N bytes>), or "-" when the event has no such image. */
static void image_text(const struct pgf_relation *rel, const struct pgf_value *row, char *out, size_t room)
{
    size_t n = 0;
    out[0] = '\0';
    if (row == NULL) {
        snprintf(out, room, "-");
        return;
    }
    for (uint16_t i = 0; i < rel->natts; i++) {
        const struct pgf_value *v = &row[i];
        const char *sep = n ? "," : "";
        if (v->kind == PGF_VALUE_ABSENT)
            continue;
        if (v->kind == PGF_VALUE_NULL)
            n += (size_t)snprintf(out + n, room - n, "%s%s=NULL", sep, rel->attrs[i].name);
        else if (v->kind == PGF_VALUE_UNCHANGED_TOAST)
            n += (size_t)snprintf(out + n, room - n, "%s%s=<toast>", sep, rel->attrs[i].name);
        else if (v->len > 40)
            n += (size_t)snprintf(out + n, room - n, "%s%s=<%u bytes>", sep, rel->attrs[i].name, v->len);
        else
            n += (size_t)snprintf(out + n, room - n, "%s%s=%.*s", sep, rel->attrs[i].name, (int)v->len, v->data);
        assert_true(n < room);
    }
}

/* Records one event. */
static int rec_event(void *ctx, const struct pgf_event *ev)
{
    struct recorder *r = ctx;
    assert_true(r->n < sizeof r->recs / sizeof *r->recs);
    struct rec *x = &r->recs[r->n++];
    memset(x, 0, sizeof *x);
    x->what = 'E';
    x->op = ev->op;
    x->lsn = ev->lsn;
    x->has_txn = ev->txn != NULL;
    if (ev->txn) {
        x->txn = *ev->txn;
        snprintf(x->origin, sizeof x->origin, "%s", ev->txn->origin ? ev->txn->origin : "");
    }
    if (ev->rel) {
        snprintf(x->table, sizeof x->table, "%s.%s", ev->rel->nspname, ev->rel->relname);
        image_text(ev->rel, ev->key, x->key, sizeof x->key);
        image_text(ev->rel, ev->before, x->before, sizeof x->before);
        image_text(ev->rel, ev->after, x->after, sizeof x->after);
    }
    if (ev->op == PGF_OP_MESSAGE)
        snprintf(x->prefix, sizeof x->prefix, "%s", ev->message.prefix);
    if (ev->op == PGF_OP_TRUNCATE) {
        x->ntruncated = ev->truncate.nrels;
        x->options = ev->truncate.options;
        snprintf(x->table, sizeof x->table, "%s.%s", ev->truncate.rels[0]->nspname, ev->truncate.rels[0]->relname);
    }
    return r->fail_events ? -1 : 0;
}

/* Records one commit. */
static int rec_commit(void *ctx, const struct pgf_txn *txn)
{
    struct recorder *r = ctx;
    assert_true(r->n < sizeof r->recs / sizeof *r->recs);
    struct rec *x = &r->recs[r->n++];
    memset(x, 0, sizeof *x);
    x->what = 'C';
    x->has_txn = 1;
    x->txn = *txn;
    snprintf(x->origin, sizeof x->origin, "%s", txn->origin ? txn->origin : "");
    return 0;
}

/* Decodes fixture records [from, to) and feeds each to a at its FAKE_LSN; stops at the first
 * result other than PGF_TXN_OK and returns it, with the record's index in *at. */
static enum pgf_txn_result feed_range(struct pgo_decoder *dec, struct pgf_txn_asm *a, size_t from, size_t to,
                                      struct recorder *r, size_t *at)
{
    struct pgf_txn_consumer c = {.event = rec_event, .commit = rec_commit, .ctx = r};
    for (size_t i = from; i < to; i++) {
        struct pgo_msg msg;
        assert_int_equal(pgo_decode(dec, text_recs[i].p, text_recs[i].len, &msg), PGO_OK);
        enum pgf_txn_result rc = pgf_txn_asm_feed(a, FAKE_LSN(i), &msg, &c);
        if (rc != PGF_TXN_OK) {
            if (at)
                *at = i;
            return rc;
        }
    }
    return PGF_TXN_OK;
}

/* Runs the whole text fixture through a fresh assembler without --endpos into r. */
static void record_all(struct recorder *r)
{
    memset(r, 0, sizeof *r);
    struct pgo_decoder *dec = pgo_decoder_new();
    struct pgf_txn_asm *a = pgf_txn_asm_new(0, 0);
    assert_non_null(dec);
    assert_non_null(a);
    assert_int_equal(feed_range(dec, a, 0, text_n, r, NULL), PGF_TXN_OK);
    assert_false(pgf_txn_asm_in_txn(a));
    pgf_txn_asm_free(a);
    pgo_decoder_free(dec);
}

/* Returns the index of the n-th (0-based) commit in r. */
static size_t nth_commit(const struct recorder *r, int n)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->recs[i].what == 'C' && n-- == 0)
            return i;
    fail_msg("no commit %d", n);
    return 0;
}

/* Asserts event i of r: op, table and images. */
static void assert_row(const struct recorder *r, size_t i, enum pgf_op op, const char *table, const char *key,
                       const char *before, const char *after)
{
    const struct rec *x = &r->recs[i];
    assert_int_equal(x->what, 'E');
    assert_int_equal(x->op, op);
    assert_string_equal(x->table, table);
    assert_string_equal(x->key, key);
    assert_string_equal(x->before, before);
    assert_string_equal(x->after, after);
}

/* ---------------------------------------------------------------- tests */

/* Every transaction of the workload, grouped Begin..Commit, with its events' positions and
 * images; the non-transactional message as a transaction of its own; the origin. */
static void test_grouping_and_events(void **state)
{
    (void)state;
    static struct recorder r;
    record_all(&r);
    /* 28 events and 16 commits (see capture.py: 8 + 1 + 2 transactions in workload A, the
     * lone message's own, the origin's, and 5 in workload B). */
    size_t events = 0, commits = 0;
    for (size_t i = 0; i < r.n; i++)
        r.recs[i].what == 'E' ? events++ : commits++;
    assert_int_equal(events, 28);
    assert_int_equal(commits, 16);

    /* Each event belongs to the transaction its next commit closes, and positions order. */
    uint64_t last_end = 0;
    for (size_t i = 0; i < r.n; i++) {
        const struct rec *x = &r.recs[i];
        if (x->what == 'C') {
            assert_true(x->txn.end_lsn > last_end);
            last_end = x->txn.end_lsn;
            continue;
        }
        size_t c = i;
        while (r.recs[c].what != 'C')
            c++;
        if (!x->has_txn) { /* the non-transactional message: its own commit, at its record's end
                            * (not past it: a commit record may start right there) */
            assert_int_equal(x->op, PGF_OP_MESSAGE);
            assert_int_equal(c, i + 1);
            assert_int_equal(r.recs[c].txn.end_lsn, x->lsn);
            assert_int_equal(r.recs[c].txn.xid, 0);
            continue;
        }
        assert_int_equal(x->txn.xid, r.recs[c].txn.xid);
        assert_int_equal(x->txn.commit_lsn, r.recs[c].txn.commit_lsn);
        assert_int_equal(x->txn.end_lsn, 0); /* not known until the Commit */
        assert_true(r.recs[c].txn.end_lsn > r.recs[c].txn.commit_lsn);
        if (x->op != PGF_OP_MESSAGE)
            assert_true(x->lsn >= FAKE_LSN(0) && x->lsn < FAKE_LSN(text_n)); /* where it was fed */
        else
            assert_true(x->lsn < r.recs[c].txn.commit_lsn); /* its own record's position */
    }

    /* Workload A, transaction by transaction. */
    size_t i = 0;
    assert_row(&r, i++, PGF_OP_INSERT, "public.users", "id=1", "-", "id=1,name=héllo,mood=happy,score=12.50");
    assert_row(&r, i++, PGF_OP_INSERT, "public.users", "id=2", "-", "id=2,name=NULL,mood=NULL,score=NULL");
    assert_row(&r, i++, PGF_OP_INSERT, "public.users", "id=3", "-", "id=3,name=日本語 😀,mood=sad,score=-0.01");
    assert_int_equal(r.recs[i++].what, 'C');
    assert_row(&r, i++, PGF_OP_UPDATE, "public.users", "id=1", "-", "id=1,name=world,mood=happy,score=12.50");
    assert_int_equal(r.recs[i++].what, 'C');
    /* The key changed: the old key ('K') is a keys-only before image, the key the new one. */
    assert_row(&r, i++, PGF_OP_UPDATE, "public.users", "id=10", "id=2", "id=10,name=NULL,mood=NULL,score=NULL");
    assert_int_equal(r.recs[i++].what, 'C');
    /* A delete's old key is the key; no before, no after. */
    assert_row(&r, i++, PGF_OP_DELETE, "public.users", "id=3", "-", "-");
    assert_int_equal(r.recs[i++].what, 'C');
    assert_row(&r, i++, PGF_OP_INSERT, "app.pairs", "a=1,b=x", "-", "a=1,b=x,v=v1");
    assert_row(&r, i++, PGF_OP_INSERT, "app.pairs", "a=1,b=y", "-", "a=1,b=y,v=v2");
    assert_row(&r, i++, PGF_OP_UPDATE, "app.pairs", "a=1,b=x", "-", "a=1,b=x,v=v1b");
    assert_row(&r, i++, PGF_OP_DELETE, "app.pairs", "a=1,b=y", "-", "-");
    assert_int_equal(r.recs[i++].what, 'C');
    /* REPLICA IDENTITY FULL: every column is key, the whole old row is before. */
    assert_row(&r, i++, PGF_OP_INSERT, "public.audit", "id=1,note=first", "-", "id=1,note=first");
    assert_row(&r, i++, PGF_OP_INSERT, "public.audit", "id=2,note=NULL", "-", "id=2,note=NULL");
    assert_row(&r, i++, PGF_OP_UPDATE, "public.audit", "id=1,note=second", "id=1,note=first", "id=1,note=second");
    assert_row(&r, i++, PGF_OP_DELETE, "public.audit", "id=2,note=NULL", "id=2,note=NULL", "-");
    assert_int_equal(r.recs[i++].what, 'C');
    assert_row(&r, i++, PGF_OP_INSERT, "public.docs", "id=1", "-", "id=1,title=title,body=<12800 bytes>");
    assert_int_equal(r.recs[i++].what, 'C');
    assert_row(&r, i++, PGF_OP_UPDATE, "public.docs", "id=1", "-", "id=1,title=title2,body=<toast>");
    assert_int_equal(r.recs[i++].what, 'C');
    assert_int_equal(r.recs[i].op, PGF_OP_MESSAGE);
    assert_string_equal(r.recs[i++].prefix, "nontx");
    assert_int_equal(r.recs[i++].what, 'C');
    assert_int_equal(r.recs[i].op, PGF_OP_MESSAGE);
    assert_true(r.recs[i].has_txn);
    assert_string_equal(r.recs[i++].prefix, "tx");
    assert_row(&r, i++, PGF_OP_INSERT, "public.plain1", "id=1", "-", "id=1");
    assert_int_equal(r.recs[i++].what, 'C');
    /* The origin's transaction names it, in its events and its commit; others do not. */
    assert_row(&r, i, PGF_OP_INSERT, "public.plain2", "id=1", "-", "id=1");
    assert_string_equal(r.recs[i++].origin, "fixture_origin");
    assert_int_equal(r.recs[i].what, 'C');
    assert_string_equal(r.recs[i++].origin, "fixture_origin");
    assert_string_equal(r.recs[0].origin, "");
    /* Workload B: a fifth column, then truncates with their options. */
    assert_row(&r, i++, PGF_OP_INSERT, "public.users", "id=4", "-", "id=4,name=new,mood=ok,score=1.00,email=a@b.c");
    assert_row(&r, i++, PGF_OP_UPDATE, "public.users", "id=1", "-",
               "id=1,name=world,mood=happy,score=12.50,email=h@x.y");
    assert_string_equal(r.recs[i++].origin, ""); /* the origin does not carry over */
    i += 4; /* parent, child, seq_t inserts and their commit */
    assert_int_equal(r.recs[i].op, PGF_OP_TRUNCATE);
    assert_int_equal(r.recs[i].ntruncated, 3);
    assert_int_equal(r.recs[i++].options, PGF_TRUNCATE_CASCADE | PGF_TRUNCATE_RESTART_IDENTITY);
    i++;
    assert_int_equal(r.recs[i].ntruncated, 2);
    assert_int_equal(r.recs[i++].options, 0);
    i++;
    assert_int_equal(r.recs[i].ntruncated, 1);
    assert_string_equal(r.recs[i++].table, "public.audit");
    assert_int_equal(r.recs[i++].what, 'C');
    assert_int_equal(i, r.n);
}

/* --endpos: a commit that reaches it is delivered and stops; a transaction that commits past
 * it is not begun; a non-transactional message past it is not delivered. */
static void test_endpos(void **state)
{
    (void)state;
    static struct recorder all, r;
    record_all(&all);
    const struct rec *third = &all.recs[nth_commit(&all, 2)], *fourth = &all.recs[nth_commit(&all, 3)];

    /* endpos at the third commit's end: delivered, then stop. */
    struct pgo_decoder *dec = pgo_decoder_new();
    struct pgf_txn_asm *a = pgf_txn_asm_new(1, third->txn.end_lsn);
    size_t at = 0;
    memset(&r, 0, sizeof r);
    assert_int_equal(feed_range(dec, a, 0, text_n, &r, &at), PGF_TXN_ENDPOS);
    assert_int_equal(r.n, nth_commit(&all, 2) + 1);
    assert_int_equal(r.recs[r.n - 1].txn.end_lsn, third->txn.end_lsn);
    pgf_txn_asm_free(a);
    pgo_decoder_free(dec);

    /* endpos just before the fourth commit: its Begin stops, nothing of it is delivered. */
    dec = pgo_decoder_new();
    a = pgf_txn_asm_new(1, fourth->txn.commit_lsn - 1);
    memset(&r, 0, sizeof r);
    assert_int_equal(feed_range(dec, a, 0, text_n, &r, &at), PGF_TXN_ENDPOS);
    assert_int_equal(r.n, nth_commit(&all, 2) + 1);
    assert_false(pgf_txn_asm_in_txn(a));
    pgf_txn_asm_free(a);
    pgo_decoder_free(dec);

    /* The non-transactional message: past endpos it stops undelivered; at endpos it goes. */
    size_t m = 0;
    while (all.recs[m].what != 'E' || all.recs[m].has_txn)
        m++;
    uint64_t mlsn = all.recs[m].lsn;
    const struct pgf_txn_consumer c = {.event = rec_event, .commit = rec_commit, .ctx = &r};
    for (int past = 1; past >= 0; past--) {
        dec = pgo_decoder_new();
        a = pgf_txn_asm_new(1, past ? mlsn - 1 : mlsn);
        memset(&r, 0, sizeof r);
        for (size_t i = 0; i < text_n; i++) {
            struct pgo_msg msg;
            assert_int_equal(pgo_decode(dec, text_recs[i].p, text_recs[i].len, &msg), PGO_OK);
            if (msg.type != PGO_MSG_MESSAGE || msg.u.message.transactional)
                continue;
            assert_int_equal(pgf_txn_asm_feed(a, FAKE_LSN(i), &msg, &c), past ? PGF_TXN_ENDPOS : PGF_TXN_OK);
        }
        assert_int_equal(r.n, past ? 0 : 2);
        pgf_txn_asm_free(a);
        pgo_decoder_free(dec);
    }
}

/* pgfanout's own heartbeat messages are never handed on, but their transaction is (so the
 * slot moves); a prefix that only starts with it is an ordinary message. */
static void test_heartbeat_filtered(void **state)
{
    (void)state;
    static struct recorder r;
    memset(&r, 0, sizeof r);
    const struct pgf_txn_consumer c = {.event = rec_event, .commit = rec_commit, .ctx = &r};
    struct pgf_txn_asm *a = pgf_txn_asm_new(0, 0);
    struct pgo_msg begin = {.type = PGO_MSG_BEGIN, .u.begin = {.final_lsn = 500, .xid = 9}};
    struct pgo_msg hb = {.type = PGO_MSG_MESSAGE,
                         .u.message = {.transactional = 1, .lsn = 400, .prefix = PGF_HEARTBEAT_PREFIX,
                                       .content = "2024", .content_len = 4}};
    struct pgo_msg commit = {.type = PGO_MSG_COMMIT, .u.commit = {.commit_lsn = 500, .end_lsn = 520}};
    assert_int_equal(pgf_txn_asm_feed(a, 300, &begin, &c), PGF_TXN_OK);
    assert_int_equal(pgf_txn_asm_feed(a, 400, &hb, &c), PGF_TXN_OK);
    assert_int_equal(pgf_txn_asm_feed(a, 500, &commit, &c), PGF_TXN_OK);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.recs[0].what, 'C');
    assert_int_equal(r.recs[0].txn.end_lsn, 520);
    assert_int_equal(r.recs[0].txn.xid, 9);
    /* Non-transactional: no event, still its own commit, at its record's end. */
    hb.u.message.transactional = 0;
    hb.u.message.lsn = 600;
    assert_int_equal(pgf_txn_asm_feed(a, 600, &hb, &c), PGF_TXN_OK);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.recs[1].what, 'C');
    assert_int_equal(r.recs[1].txn.end_lsn, 600);
    /* Only the exact prefix is ours. */
    hb.u.message.prefix = PGF_HEARTBEAT_PREFIX "x";
    assert_int_equal(pgf_txn_asm_feed(a, 700, &hb, &c), PGF_TXN_OK);
    assert_int_equal(r.n, 4);
    assert_int_equal(r.recs[2].what, 'E');
    assert_false(r.recs[2].has_txn);
    assert_int_equal(r.recs[2].lsn, 600);
    pgf_txn_asm_free(a);
}

/* A transaction cut off by a reconnect is closed with end_lsn 0, once; the replay after the
 * reconnect is assembled afresh.  A change outside a transaction is out of step. */
static void test_cut_off_by_reconnect(void **state)
{
    (void)state;
    static struct recorder all, r;
    record_all(&all);
    /* Find the first transaction's second insert and its Commit in the fixture. */
    size_t second = 0, first_commit = 0;
    struct pgo_decoder *dec = pgo_decoder_new();
    for (size_t i = 0, inserts = 0; i < text_n && !first_commit; i++) {
        struct pgo_msg msg;
        assert_int_equal(pgo_decode(dec, text_recs[i].p, text_recs[i].len, &msg), PGO_OK);
        if (msg.type == PGO_MSG_INSERT && ++inserts == 2)
            second = i;
        if (msg.type == PGO_MSG_COMMIT)
            first_commit = i;
    }
    pgo_decoder_free(dec);
    assert_true(second > 0 && first_commit > second);

    dec = pgo_decoder_new();
    struct pgf_txn_asm *a = pgf_txn_asm_new(0, 0);
    memset(&r, 0, sizeof r);
    assert_int_equal(feed_range(dec, a, 0, second + 1, &r, NULL), PGF_TXN_OK);
    assert_true(pgf_txn_asm_in_txn(a));
    assert_int_equal(r.n, 2); /* two inserts, no commit */
    const struct pgf_txn_consumer c = {.event = rec_event, .commit = rec_commit, .ctx = &r};
    pgf_txn_asm_abandon(a, &c);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.recs[2].what, 'C');
    assert_int_equal(r.recs[2].txn.end_lsn, 0);
    assert_false(pgf_txn_asm_in_txn(a));
    pgf_txn_asm_abandon(a, &c); /* nothing open: nothing to close */
    assert_int_equal(r.n, 3);

    /* The reconnect replays from the Begin: the whole transaction arrives as before. */
    struct pgo_decoder *dec2 = pgo_decoder_new();
    struct pgf_txn_asm *a2 = pgf_txn_asm_new(0, 0);
    memset(&r, 0, sizeof r);
    assert_int_equal(feed_range(dec2, a2, 0, first_commit + 1, &r, NULL), PGF_TXN_OK);
    assert_int_equal(r.n, 4);
    assert_int_equal(r.recs[3].what, 'C');
    assert_int_equal(r.recs[3].txn.end_lsn, all.recs[3].txn.end_lsn);
    pgf_txn_asm_free(a2);
    pgo_decoder_free(dec2);

    /* The rest of the cut-off transaction, fed without its Begin, is out of step. */
    memset(&r, 0, sizeof r);
    size_t at = 0;
    assert_int_equal(feed_range(dec, a, second + 1, text_n, &r, &at), PGF_TXN_OUT_OF_STEP);
    assert_int_equal(at, second + 1);
    assert_int_equal(r.n, 0);
    pgf_txn_asm_free(a);
    pgo_decoder_free(dec);
}

/* A consumer that refuses an event stops the feed; the transaction stays open (to abandon). */
static void test_consumer_stops(void **state)
{
    (void)state;
    static struct recorder r;
    memset(&r, 0, sizeof r);
    r.fail_events = 1;
    struct pgo_decoder *dec = pgo_decoder_new();
    struct pgf_txn_asm *a = pgf_txn_asm_new(0, 0);
    size_t at = 0;
    assert_int_equal(feed_range(dec, a, 0, text_n, &r, &at), PGF_TXN_STOPPED);
    assert_int_equal(r.n, 1);
    assert_true(pgf_txn_asm_in_txn(a));
    pgf_txn_asm_free(a);
    pgo_decoder_free(dec);
}

/* A key column sent as unchanged TOAST takes the old image's value; without an old image it
 * stays unchanged TOAST. */
static void test_key_from_old_image(void **state)
{
    (void)state;
    static struct recorder r;
    memset(&r, 0, sizeof r);
    static char k[] = "k", v[] = "v", nsp[] = "s", name[] = "t";
    static struct pgf_column cols[] = {{.name = k, .type_oid = 25, .is_key = 1}, {.name = v, .type_oid = 25, .is_key = 1}};
    static struct pgf_relation rel = {.oid = 1, .nspname = nsp, .relname = name, .replident = 'f', .natts = 2,
                                      .attrs = cols};
    struct pgf_value oldv[] = {pgf_value_text("big", 3), pgf_value_text("a", 1)};
    struct pgf_value newv[] = {{.kind = PGF_VALUE_UNCHANGED_TOAST}, pgf_value_text("b", 1)};
    struct pgo_msg begin = {.type = PGO_MSG_BEGIN, .u.begin = {.final_lsn = 10}};
    struct pgo_msg up = {.type = PGO_MSG_UPDATE,
                         .u.change = {.rel = &rel, .old_kind = 'O', .old_tuple = {2, oldv}, .new_tuple = {2, newv}}};
    const struct pgf_txn_consumer c = {.event = rec_event, .commit = rec_commit, .ctx = &r};
    struct pgf_txn_asm *a = pgf_txn_asm_new(0, 0);
    assert_int_equal(pgf_txn_asm_feed(a, 1, &begin, &c), PGF_TXN_OK);
    assert_int_equal(pgf_txn_asm_feed(a, 2, &up, &c), PGF_TXN_OK);
    assert_row(&r, 0, PGF_OP_UPDATE, "s.t", "k=big,v=b", "k=big,v=a", "k=<toast>,v=b");
    up.u.change.old_kind = 0;
    assert_int_equal(pgf_txn_asm_feed(a, 3, &up, &c), PGF_TXN_OK);
    assert_row(&r, 1, PGF_OP_UPDATE, "s.t", "k=<toast>,v=b", "-", "k=<toast>,v=b");
    pgf_txn_asm_free(a);
}

/* Loads the fixture once. */
static int group_setup(void **state)
{
    (void)state;
    return load_text(fixtures_dir);
}

/* Frees the fixture. */
static int group_teardown(void **state)
{
    (void)state;
    free(text_recs);
    free(text_data);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s FIXTURES_DIR\n", argv[0]);
        return 2;
    }
    fixtures_dir = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grouping_and_events),
        cmocka_unit_test(test_endpos),
        cmocka_unit_test(test_heartbeat_filtered),
        cmocka_unit_test(test_cut_off_by_reconnect),
        cmocka_unit_test(test_consumer_stops),
        cmocka_unit_test(test_key_from_old_image),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
