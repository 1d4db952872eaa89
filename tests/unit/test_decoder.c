/* test_decoder.c - the pgoutput decoder against byte fixtures captured from PostgreSQL 15.
 *
 * Usage: test_decoder FIXTURES_DIR   (text.bin and binary.bin, see tests/fixtures/capture.py)
 *
 * The expected contents below are written by hand from the workload in capture.py, never
 * from the decoder's output.  OIDs, xids, LSNs and commit times change when the fixtures
 * are recaptured, so they are compared with each other, never with constants.  Every
 * decode goes through a guard page: the input is copied so that it ends (or starts) exactly
 * at a PROT_NONE page, so a read past either end faults instead of passing silently.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS under -std=c11 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "decoders/pgoutput.h"

/* Built-in type OIDs the workload uses (pg_type.dat). */
#define OID_BOOL 16
#define OID_BYTEA 17
#define OID_INT8 20
#define OID_INT2 21
#define OID_INT4 23
#define OID_TEXT 25
#define OID_FLOAT8 701
#define OID_VARCHAR 1043
#define OID_NUMERIC 1700
#define FIRST_NORMAL_OID 16384 /* user-created objects start here */

/* numeric(10,2) and varchar(20) typmods: ((precision << 16) | scale) + VARHDRSZ, length + VARHDRSZ. */
#define TYPMOD_NUMERIC_10_2 (((10 << 16) | 2) + 4)
#define TYPMOD_VARCHAR_20 (20 + 4)

/* 2023-01-01 00:00:00 UTC in microseconds since 2000-01-01; real commits are later. */
#define PG_TIME_2023 INT64_C(725846400000000)
/* 2020-01-01 00:00:00 UTC, the origin timestamp capture.py passes to
 * pg_replication_origin_xact_setup(); decoding reports it as that transaction's commit time. */
#define PG_TIME_2020 INT64_C(631152000000000)

/* The docs.body value: string_agg(md5(i::text), '' ORDER BY i) for i in 1..400.  Its
 * length, ends and CRC-32 come from Python's hashlib/zlib over the same definition. */
#define BODY_LEN 12800
#define BODY_HEAD "c4ca4238a0b923820dcc509a6f75849bc81e728d9d4c2f636f067f89cc14862c"
#define BODY_TAIL "18d8042386b79e2c279fd162df0205c8"
#define BODY_CRC32 UINT32_C(1781712275)

#define KNOWN_TYPES "BCORYIUDTM"

/* One pgoutput message inside a loaded fixture. */
struct record {
    const uint8_t *p;
    size_t len;
};

/* A fixture file and the records framed in it. */
struct fixture {
    const char *name;
    uint8_t *data;
    size_t size;
    struct record *recs;
    size_t n;
    size_t max_len;
};

/* Readable bytes [lo, hi) with a PROT_NONE page on each side. */
struct guard {
    uint8_t *map;
    size_t map_len;
    uint8_t *lo;
    uint8_t *hi;
};

static const char *fixtures_dir;
static struct fixture text_fx = {.name = "text.bin"};
static struct fixture bin_fx = {.name = "binary.bin"};
static struct guard guard;

/* Room for the largest fixture record plus the extra bytes the trailing-byte tests append
 * and the largest random buffer. */
#define GUARD_SLACK 4096

/* ---------------------------------------------------------------- loading and guards */

/* Reads dir/fx->name and frames its length-prefixed records; returns 0 or -1 with a message. */
static int fixture_load(struct fixture *fx, const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, fx->name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "test_decoder: cannot open %s\n", path);
        return -1;
    }
    size_t cap = 1 << 16;
    fx->data = malloc(cap);
    fx->size = 0;
    size_t got;
    while (fx->data && (got = fread(fx->data + fx->size, 1, cap - fx->size, f)) > 0) {
        fx->size += got;
        if (fx->size == cap) {
            uint8_t *d = realloc(fx->data, cap * 2);
            if (d == NULL) {
                free(fx->data);
                fx->data = NULL;
                break;
            }
            fx->data = d;
            cap *= 2;
        }
    }
    fclose(f);
    if (fx->data == NULL)
        return -1;

    /* Two passes: count, then fill, so the record array is allocated once. */
    for (int pass = 0; pass < 2; pass++) {
        size_t off = 0, n = 0;
        while (off < fx->size) {
            if (fx->size - off < 4) {
                fprintf(stderr, "test_decoder: %s: torn length at byte %zu\n", path, off);
                return -1;
            }
            const uint8_t *h = fx->data + off;
            size_t len = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
            off += 4;
            if (len > fx->size - off) {
                fprintf(stderr, "test_decoder: %s: record %zu overruns the file\n", path, n);
                return -1;
            }
            if (pass == 1) {
                fx->recs[n].p = fx->data + off;
                fx->recs[n].len = len;
                if (len > fx->max_len)
                    fx->max_len = len;
            }
            off += len;
            n++;
        }
        if (pass == 0) {
            fx->recs = calloc(n ? n : 1, sizeof *fx->recs);
            if (fx->recs == NULL)
                return -1;
        }
        fx->n = n;
    }
    return 0;
}

/* Frees what fixture_load allocated. */
static void fixture_free(struct fixture *fx)
{
    free(fx->recs);
    free(fx->data);
    fx->recs = NULL;
    fx->data = NULL;
}

/* Maps at least min_len readable bytes between two PROT_NONE pages; returns 0 or -1. */
static int guard_init(struct guard *g, size_t min_len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t body = (min_len + page - 1) / page * page;
    if (body == 0)
        body = page;
    g->map_len = body + 2 * page;
    void *m = mmap(NULL, g->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return -1;
    g->map = m;
    g->lo = g->map + page;
    g->hi = g->lo + body;
    if (mprotect(g->map, page, PROT_NONE) != 0 || mprotect(g->hi, page, PROT_NONE) != 0)
        return -1;
    return 0;
}

/* Unmaps the guard region. */
static void guard_free(struct guard *g)
{
    if (g->map)
        munmap(g->map, g->map_len);
    g->map = NULL;
}

/* Copies len bytes so they end exactly at the trailing PROT_NONE page; returns the copy. */
static const uint8_t *place_end(const void *src, size_t len)
{
    assert_true(len <= (size_t)(guard.hi - guard.lo));
    uint8_t *dst = guard.hi - len;
    if (len)
        memcpy(dst, src, len);
    return dst;
}

/* Copies len bytes so they start exactly after the leading PROT_NONE page; returns the copy. */
static const uint8_t *place_start(const void *src, size_t len)
{
    assert_true(len <= (size_t)(guard.hi - guard.lo));
    if (len)
        memcpy(guard.lo, src, len);
    return guard.lo;
}

/* Decodes src[0..len) placed flush against the trailing guard page. */
static int decode_end(struct pgo_decoder *dec, const void *src, size_t len, struct pgo_msg *out)
{
    return pgo_decode(dec, place_end(src, len), len, out);
}

/* Decodes a record, failing the test with the decoder's error unless it decodes cleanly. */
static void decode_ok(struct pgo_decoder *dec, const struct fixture *fx, size_t i, struct pgo_msg *out)
{
    int rc = decode_end(dec, fx->recs[i].p, fx->recs[i].len, out);
    if (rc != PGO_OK)
        fail_msg("%s record %zu: rc %d: %s", fx->name, i, rc, pgo_decoder_errstr(dec));
    assert_string_equal(pgo_decoder_errstr(dec), "");
}

/* Returns a fresh decoder that has decoded records [0, upto) of fx, as the stream would. */
static struct pgo_decoder *replayed(const struct fixture *fx, size_t upto)
{
    struct pgo_decoder *dec = pgo_decoder_new();
    assert_non_null(dec);
    struct pgo_msg m;
    for (size_t i = 0; i < upto; i++)
        decode_ok(dec, fx, i, &m);
    return dec;
}

/* Asserts the last error names the message's type and an offset no larger than len. */
static void assert_errstr(const struct pgo_decoder *dec, const uint8_t *msg, size_t len)
{
    const char *e = pgo_decoder_errstr(dec);
    if (e[0] == '\0')
        fail_msg("empty errstr for a failed decode of %zu bytes", len);
    if (len > 0 && strstr(e, pgo_msg_type_name(msg[0])) == NULL)
        fail_msg("errstr \"%s\" does not name the %s message", e, pgo_msg_type_name(msg[0]));
    const char *o = strstr(e, "offset");
    if (o == NULL)
        fail_msg("errstr \"%s\" gives no offset", e);
    while (*o && !isdigit((unsigned char)*o))
        o++;
    if (!isdigit((unsigned char)*o))
        fail_msg("errstr \"%s\" gives no offset number", e);
    unsigned long off = strtoul(o, NULL, 10);
    if (off > len)
        fail_msg("errstr \"%s\": offset past the %zu-byte message", e, len);
}

/* ---------------------------------------------------------------- value assertions */

/* Sentinels for assert_tuple: a NULL column and an unchanged TOAST column. */
static const char COL_NULL[] = "<null>";
static const char COL_TOAST[] = "<unchanged toast>";

/* Asserts column i is kind 't' with exactly the bytes of want. */
static void assert_text(const struct pgo_tuple *t, unsigned i, const char *want)
{
    assert_true(i < t->natts);
    const struct pgf_value *v = &t->values[i];
    if (v->kind != PGF_VALUE_TEXT)
        fail_msg("column %u: kind '%c', want 't' \"%s\"", i, (char)v->kind, want);
    size_t n = strlen(want);
    if (v->len != n || memcmp(v->data, want, n) != 0)
        fail_msg("column %u: \"%.*s\" (%u bytes), want \"%s\"", i, (int)v->len, v->data, v->len, want);
}

/* Asserts column i has the given kind and no data (NULL or unchanged TOAST). */
static void assert_empty_kind(const struct pgo_tuple *t, unsigned i, enum pgf_value_kind kind)
{
    assert_true(i < t->natts);
    if (t->values[i].kind != kind)
        fail_msg("column %u: kind '%c', want '%c'", i, (char)t->values[i].kind, (char)kind);
    assert_int_equal(t->values[i].len, 0);
}

/* Asserts a whole text-mode tuple: natts columns, each a string, COL_NULL or COL_TOAST. */
static void assert_tuple(const struct pgo_tuple *t, unsigned natts, ...)
{
    assert_int_equal(t->natts, natts);
    assert_non_null(t->values);
    va_list ap;
    va_start(ap, natts);
    for (unsigned i = 0; i < natts; i++) {
        const char *want = va_arg(ap, const char *);
        if (want == COL_NULL)
            assert_empty_kind(t, i, PGF_VALUE_NULL);
        else if (want == COL_TOAST)
            assert_empty_kind(t, i, PGF_VALUE_UNCHANGED_TOAST);
        else
            assert_text(t, i, want);
    }
    va_end(ap);
}

/* Asserts column i is kind 'b' with exactly len bytes of want. */
static void assert_bin(const struct pgo_tuple *t, unsigned i, const void *want, size_t len)
{
    assert_true(i < t->natts);
    const struct pgf_value *v = &t->values[i];
    if (v->kind != PGF_VALUE_BINARY)
        fail_msg("column %u: kind '%c', want 'b'", i, (char)v->kind);
    assert_int_equal(v->len, len);
    if (len)
        assert_memory_equal(v->data, want, len);
}

/* Returns the big-endian unsigned integer in the n bytes at p. */
static uint64_t be(const char *p, size_t n)
{
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++)
        x = x << 8 | (uint8_t)p[i];
    return x;
}

/* Returns the CRC-32 (zlib's polynomial) of n bytes, to check a large value exactly. */
static uint32_t crc32_of(const char *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= (uint8_t)p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
}

/* Asserts a relation's identity and shape, and that it is what the cache now holds. */
static const struct pgf_relation *assert_relation(const struct pgo_decoder *dec,
                                                  const struct pgf_relation *rel, const char *nsp,
                                                  const char *name, char replident, unsigned natts)
{
    assert_non_null(rel);
    assert_string_equal(rel->nspname, nsp);
    assert_string_equal(rel->relname, name);
    assert_int_equal(rel->replident, replident);
    assert_int_equal(rel->natts, natts);
    assert_true(rel->names_utf8); /* checked once here, so renderers skip it per event */
    assert_true(rel->oid >= FIRST_NORMAL_OID);
    assert_ptr_equal(pgo_decoder_relation(dec, rel->oid), rel);
    return rel;
}

/* Asserts column i of a relation. */
static void assert_attr(const struct pgf_relation *rel, unsigned i, const char *name, uint32_t type_oid,
                        int32_t typmod, int is_key)
{
    assert_true(i < rel->natts);
    const struct pgf_column *a = &rel->attrs[i];
    assert_string_equal(a->name, name);
    assert_int_equal(a->type_oid, type_oid);
    assert_int_equal(a->type_mod, typmod);
    assert_int_equal(a->is_key != 0, is_key != 0);
}

/* ---------------------------------------------------------------- walking a fixture */

/* A fixture decoded in order, with the transaction bookkeeping that checks LSNs and xids. */
struct walk {
    const struct fixture *fx;
    struct pgo_decoder *dec;
    size_t next;
    struct pgo_msg msg;
    int in_txn;
    struct pgo_begin begin; /* of the open transaction */
    uint64_t last_lsn;      /* highest LSN seen so far: commit end or non-transactional message */
    uint32_t last_xid;
};

/* Starts a walk over fx with a fresh decoder. */
static void walk_start(struct walk *w, const struct fixture *fx)
{
    memset(w, 0, sizeof *w);
    w->fx = fx;
    w->dec = pgo_decoder_new();
    assert_non_null(w->dec);
}

/* Decodes the next record, which must decode cleanly as type want; returns it. */
static const struct pgo_msg *next_msg(struct walk *w, int want)
{
    if (w->next >= w->fx->n)
        fail_msg("%s: ran out of records, wanted '%c'", w->fx->name, want);
    decode_ok(w->dec, w->fx, w->next, &w->msg);
    if ((int)w->msg.type != want)
        fail_msg("%s record %zu: type '%c', want '%c'", w->fx->name, w->next, (char)w->msg.type, want);
    w->next++;
    return &w->msg;
}

/* Decodes a Begin and checks it follows everything before it. */
static void expect_begin(struct walk *w)
{
    const struct pgo_begin *b = &next_msg(w, PGO_MSG_BEGIN)->u.begin;
    assert_false(w->in_txn);
    assert_true(b->final_lsn > w->last_lsn);
    /* The workload runs its transactions one after another, so xids only grow. */
    assert_true(b->xid > w->last_xid);
    w->begin = *b;
    w->in_txn = 1;
}

/* Decodes a Commit and checks it matches its Begin; commit_time 0 means "a real clock time". */
static void expect_commit(struct walk *w, int64_t commit_time)
{
    const struct pgo_commit *c = &next_msg(w, PGO_MSG_COMMIT)->u.commit;
    assert_true(w->in_txn);
    assert_int_equal(c->flags, 0);
    assert_int_equal(c->commit_lsn, w->begin.final_lsn);
    assert_true(c->end_lsn > c->commit_lsn);
    assert_int_equal(c->commit_time, w->begin.commit_time);
    if (commit_time)
        assert_int_equal(c->commit_time, commit_time);
    else
        assert_true(c->commit_time > PG_TIME_2023);
    w->last_lsn = c->end_lsn;
    w->last_xid = w->begin.xid;
    w->in_txn = 0;
}

/* Decodes a Relation message and returns the relation it installed. */
static const struct pgf_relation *expect_relation(struct walk *w, const char *nsp, const char *name,
                                                  char replident, unsigned natts)
{
    const struct pgo_msg *m = next_msg(w, PGO_MSG_RELATION);
    return assert_relation(w->dec, m->u.relation, nsp, name, replident, natts);
}

/* Decodes an Insert/Update/Delete on the relation named name; returns the change. */
static const struct pgo_change *expect_change(struct walk *w, int type, const char *name,
                                              char old_kind)
{
    assert_true(w->in_txn);
    const struct pgo_change *c = &next_msg(w, type)->u.change;
    assert_non_null(c->rel);
    assert_string_equal(c->rel->relname, name);
    assert_ptr_equal(pgo_decoder_relation(w->dec, c->rel->oid), c->rel);
    assert_int_equal(c->old_kind, old_kind);
    if (old_kind)
        assert_int_equal(c->old_tuple.natts, c->rel->natts);
    if (type != PGO_MSG_DELETE)
        assert_int_equal(c->new_tuple.natts, c->rel->natts);
    return c;
}

/* Decodes a Truncate of the named relations, in order, with the given options. */
static void expect_truncate(struct walk *w, uint8_t options, unsigned n, const char *const *names)
{
    const struct pgo_truncate *t = &next_msg(w, PGO_MSG_TRUNCATE)->u.truncate;
    assert_int_equal(t->options, options);
    assert_int_equal(t->nrelids, n);
    assert_non_null(t->rels);
    for (unsigned i = 0; i < n; i++) {
        assert_non_null(t->rels[i]);
        assert_string_equal(t->rels[i]->relname, names[i]);
        assert_ptr_equal(pgo_decoder_relation(w->dec, t->rels[i]->oid), t->rels[i]);
    }
}

/* Returns the record types of a fixture as a string, decoding each with one decoder. */
static char *type_sequence(const struct fixture *fx)
{
    char *s = calloc(fx->n + 1, 1);
    assert_non_null(s);
    struct pgo_decoder *dec = pgo_decoder_new();
    assert_non_null(dec);
    struct pgo_msg m;
    for (size_t i = 0; i < fx->n; i++) {
        decode_ok(dec, fx, i, &m);
        s[i] = (char)m.type;
    }
    pgo_decoder_free(dec);
    return s;
}

/* ---------------------------------------------------------------- fixture contents */

/* text.bin: every protocol-1 message type, decoded in order and checked field by field. */
static void test_text_fixture(void **state)
{
    (void)state;
    /* One group per transaction of capture.py's workload, in commit order. */
    static const char want_types[] =
        "BYRIIIC" /* insert 3 users */
        "BUC"     /* update without old tuple */
        "BUC"     /* update of the primary key: old key 'K' */
        "BDC"     /* delete: old key 'K' */
        "BRIIUDC" /* app.pairs, composite key */
        "BRIIUDC" /* audit, REPLICA IDENTITY FULL: 'O' */
        "BRIC"    /* docs: TOASTed body */
        "BUC"     /* docs: body unchanged, 'u' */
        "M"       /* non-transactional message, outside any transaction */
        "BMRIC"   /* transactional message, then an insert */
        "BORIC"   /* from a replication origin */
        "BYRIUC"  /* users after ALTER TABLE ADD COLUMN (the ALTER itself sends nothing) */
        "BRIRIRIC"
        "BRRRTC"  /* TRUNCATE parent, seq_t RESTART IDENTITY CASCADE (child by cascade) */
        "BRRTC"   /* TRUNCATE plain1, plain2 */
        "BRTC";   /* TRUNCATE audit */
    char *types = type_sequence(&text_fx);
    assert_string_equal(types, want_types);
    free(types);

    struct walk w;
    walk_start(&w, &text_fx);
    const struct pgo_msg *m;
    const struct pgo_change *c;
    const struct pgf_relation *rel;

    /* INSERT INTO users VALUES (1,'héllo','happy',12.50), (2,NULL,NULL,NULL), (3,'日本語 😀','sad',-0.01) */
    expect_begin(&w);
    m = next_msg(&w, PGO_MSG_TYPE);
    const uint32_t mood_oid = m->u.typ.oid;
    assert_true(mood_oid >= FIRST_NORMAL_OID);
    assert_string_equal(m->u.typ.nspname, "public");
    assert_string_equal(m->u.typ.typname, "mood");
    rel = expect_relation(&w, "public", "users", 'd', 4);
    const uint32_t users_oid = rel->oid;
    assert_attr(rel, 0, "id", OID_INT4, -1, 1);
    assert_attr(rel, 1, "name", OID_TEXT, -1, 0);
    assert_attr(rel, 2, "mood", mood_oid, -1, 0);
    assert_attr(rel, 3, "score", OID_NUMERIC, TYPMOD_NUMERIC_10_2, 0);
    c = expect_change(&w, PGO_MSG_INSERT, "users", 0);
    assert_tuple(&c->new_tuple, 4, "1", "h\xc3\xa9llo", "happy", "12.50"); /* héllo */
    c = expect_change(&w, PGO_MSG_INSERT, "users", 0);
    assert_tuple(&c->new_tuple, 4, "2", COL_NULL, COL_NULL, COL_NULL);
    c = expect_change(&w, PGO_MSG_INSERT, "users", 0);
    /* 日本語 😀: three 3-byte CJK characters, a space, one 4-byte emoji */
    assert_tuple(&c->new_tuple, 4, "3", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80", "sad",
                 "-0.01");
    expect_commit(&w, 0);

    /* UPDATE users SET name = 'world' WHERE id = 1: key unchanged, so no old tuple */
    expect_begin(&w);
    c = expect_change(&w, PGO_MSG_UPDATE, "users", 0);
    assert_int_equal(c->rel->oid, users_oid);
    assert_tuple(&c->new_tuple, 4, "1", "world", "happy", "12.50");
    expect_commit(&w, 0);

    /* UPDATE users SET id = 10 WHERE id = 2: old key, non-key columns sent as NULL */
    expect_begin(&w);
    c = expect_change(&w, PGO_MSG_UPDATE, "users", 'K');
    assert_tuple(&c->old_tuple, 4, "2", COL_NULL, COL_NULL, COL_NULL);
    assert_tuple(&c->new_tuple, 4, "10", COL_NULL, COL_NULL, COL_NULL);
    expect_commit(&w, 0);

    /* DELETE FROM users WHERE id = 3 */
    expect_begin(&w);
    c = expect_change(&w, PGO_MSG_DELETE, "users", 'K');
    assert_tuple(&c->old_tuple, 4, "3", COL_NULL, COL_NULL, COL_NULL);
    expect_commit(&w, 0);

    /* app.pairs (a int4, b text, v varchar(20), PRIMARY KEY (a, b)) */
    expect_begin(&w);
    rel = expect_relation(&w, "app", "pairs", 'd', 3);
    assert_attr(rel, 0, "a", OID_INT4, -1, 1);
    assert_attr(rel, 1, "b", OID_TEXT, -1, 1);
    assert_attr(rel, 2, "v", OID_VARCHAR, TYPMOD_VARCHAR_20, 0);
    c = expect_change(&w, PGO_MSG_INSERT, "pairs", 0);
    assert_string_equal(c->rel->nspname, "app");
    assert_tuple(&c->new_tuple, 3, "1", "x", "v1");
    c = expect_change(&w, PGO_MSG_INSERT, "pairs", 0);
    assert_tuple(&c->new_tuple, 3, "1", "y", "v2");
    c = expect_change(&w, PGO_MSG_UPDATE, "pairs", 0);
    assert_tuple(&c->new_tuple, 3, "1", "x", "v1b");
    c = expect_change(&w, PGO_MSG_DELETE, "pairs", 'K');
    assert_tuple(&c->old_tuple, 3, "1", "y", COL_NULL);
    expect_commit(&w, 0);

    /* audit (id int4, note text) REPLICA IDENTITY FULL: every column is key, old rows are 'O' */
    expect_begin(&w);
    rel = expect_relation(&w, "public", "audit", 'f', 2);
    assert_attr(rel, 0, "id", OID_INT4, -1, 1);
    assert_attr(rel, 1, "note", OID_TEXT, -1, 1);
    c = expect_change(&w, PGO_MSG_INSERT, "audit", 0);
    assert_tuple(&c->new_tuple, 2, "1", "first");
    c = expect_change(&w, PGO_MSG_INSERT, "audit", 0);
    assert_tuple(&c->new_tuple, 2, "2", COL_NULL);
    c = expect_change(&w, PGO_MSG_UPDATE, "audit", 'O');
    assert_tuple(&c->old_tuple, 2, "1", "first");
    assert_tuple(&c->new_tuple, 2, "1", "second");
    c = expect_change(&w, PGO_MSG_DELETE, "audit", 'O');
    assert_tuple(&c->old_tuple, 2, "2", COL_NULL);
    expect_commit(&w, 0);

    /* docs: the 12800-byte body arrives whole on insert */
    expect_begin(&w);
    rel = expect_relation(&w, "public", "docs", 'd', 3);
    assert_attr(rel, 0, "id", OID_INT4, -1, 1);
    assert_attr(rel, 1, "title", OID_TEXT, -1, 0);
    assert_attr(rel, 2, "body", OID_TEXT, -1, 0);
    c = expect_change(&w, PGO_MSG_INSERT, "docs", 0);
    assert_int_equal(c->new_tuple.natts, 3);
    assert_text(&c->new_tuple, 0, "1");
    assert_text(&c->new_tuple, 1, "title");
    const struct pgf_value *body = &c->new_tuple.values[2];
    assert_int_equal(body->kind, PGF_VALUE_TEXT);
    assert_int_equal(body->len, BODY_LEN);
    assert_memory_equal(body->data, BODY_HEAD, strlen(BODY_HEAD));
    assert_memory_equal(body->data + BODY_LEN - strlen(BODY_TAIL), BODY_TAIL, strlen(BODY_TAIL));
    assert_int_equal(crc32_of(body->data, body->len), BODY_CRC32);
    expect_commit(&w, 0);

    /* UPDATE docs SET title = 'title2': body untouched, so it is not resent */
    expect_begin(&w);
    c = expect_change(&w, PGO_MSG_UPDATE, "docs", 0);
    assert_tuple(&c->new_tuple, 3, "1", "title2", COL_TOAST);
    expect_commit(&w, 0);

    /* pg_logical_emit_message(false, 'nontx', 'hello'): decoded where it was written */
    m = next_msg(&w, PGO_MSG_MESSAGE);
    assert_false(w.in_txn);
    assert_false(m->u.message.transactional);
    assert_true(m->u.message.lsn > w.last_lsn);
    w.last_lsn = m->u.message.lsn;
    assert_string_equal(m->u.message.prefix, "nontx");
    assert_int_equal(m->u.message.content_len, 5);
    assert_memory_equal(m->u.message.content, "hello", 5);

    /* pg_logical_emit_message(true, 'tx', '\x0001ff'::bytea); INSERT INTO plain1 VALUES (1) */
    expect_begin(&w);
    m = next_msg(&w, PGO_MSG_MESSAGE);
    assert_true(m->u.message.transactional);
    assert_true(m->u.message.lsn > w.last_lsn);
    assert_true(m->u.message.lsn < w.begin.final_lsn);
    assert_string_equal(m->u.message.prefix, "tx");
    assert_int_equal(m->u.message.content_len, 3);
    assert_memory_equal(m->u.message.content, "\x00\x01\xff", 3);
    rel = expect_relation(&w, "public", "plain1", 'd', 1);
    assert_attr(rel, 0, "id", OID_INT4, -1, 1);
    c = expect_change(&w, PGO_MSG_INSERT, "plain1", 0);
    assert_tuple(&c->new_tuple, 1, "1");
    expect_commit(&w, 0);

    /* INSERT INTO plain2 VALUES (1) from a session replaying origin 'fixture_origin' */
    expect_begin(&w);
    assert_int_equal(w.begin.commit_time, PG_TIME_2020);
    m = next_msg(&w, PGO_MSG_ORIGIN);
    assert_int_equal(m->u.origin.lsn, UINT64_C(0x12345678)); /* '0/12345678' */
    assert_string_equal(m->u.origin.name, "fixture_origin");
    rel = expect_relation(&w, "public", "plain2", 'd', 1);
    assert_attr(rel, 0, "id", OID_INT4, -1, 1);
    c = expect_change(&w, PGO_MSG_INSERT, "plain2", 0);
    assert_tuple(&c->new_tuple, 1, "1");
    expect_commit(&w, PG_TIME_2020);

    /* After ALTER TABLE users ADD COLUMN email text: users is described again, same OID,
     * five columns, and the cache entry is replaced so the rows decode with five values. */
    expect_begin(&w);
    m = next_msg(&w, PGO_MSG_TYPE);
    assert_int_equal(m->u.typ.oid, mood_oid);
    assert_string_equal(m->u.typ.typname, "mood");
    assert_int_equal(pgo_decoder_relation(w.dec, users_oid)->natts, 4);
    rel = expect_relation(&w, "public", "users", 'd', 5);
    assert_int_equal(rel->oid, users_oid);
    assert_int_equal(pgo_decoder_relation(w.dec, users_oid)->natts, 5);
    assert_attr(rel, 0, "id", OID_INT4, -1, 1);
    assert_attr(rel, 1, "name", OID_TEXT, -1, 0);
    assert_attr(rel, 2, "mood", mood_oid, -1, 0);
    assert_attr(rel, 3, "score", OID_NUMERIC, TYPMOD_NUMERIC_10_2, 0);
    assert_attr(rel, 4, "email", OID_TEXT, -1, 0);
    c = expect_change(&w, PGO_MSG_INSERT, "users", 0);
    assert_tuple(&c->new_tuple, 5, "4", "new", "ok", "1.00", "a@b.c");
    c = expect_change(&w, PGO_MSG_UPDATE, "users", 0);
    assert_tuple(&c->new_tuple, 5, "1", "world", "happy", "12.50", "h@x.y");
    expect_commit(&w, 0);

    /* parent, child (FK to parent), seq_t (identity column) get a row each */
    expect_begin(&w);
    rel = expect_relation(&w, "public", "parent", 'd', 1);
    assert_attr(rel, 0, "id", OID_INT4, -1, 1);
    c = expect_change(&w, PGO_MSG_INSERT, "parent", 0);
    assert_tuple(&c->new_tuple, 1, "1");
    rel = expect_relation(&w, "public", "child", 'd', 2);
    assert_attr(rel, 0, "id", OID_INT4, -1, 1);
    assert_attr(rel, 1, "parent_id", OID_INT4, -1, 0);
    c = expect_change(&w, PGO_MSG_INSERT, "child", 0);
    assert_tuple(&c->new_tuple, 2, "1", "1");
    rel = expect_relation(&w, "public", "seq_t", 'd', 2);
    assert_attr(rel, 0, "id", OID_INT4, -1, 1);
    assert_attr(rel, 1, "v", OID_TEXT, -1, 0);
    c = expect_change(&w, PGO_MSG_INSERT, "seq_t", 0);
    assert_tuple(&c->new_tuple, 2, "1", "a");
    expect_commit(&w, 0);

    /* TRUNCATE parent, seq_t RESTART IDENTITY CASCADE: pgoutput re-describes each relation
     * (the truncate invalidated them), then one message names all three. */
    expect_begin(&w);
    expect_relation(&w, "public", "parent", 'd', 1);
    expect_relation(&w, "public", "seq_t", 'd', 2);
    expect_relation(&w, "public", "child", 'd', 2);
    static const char *const trunc1[] = {"parent", "seq_t", "child"};
    expect_truncate(&w, PGO_TRUNCATE_CASCADE | PGO_TRUNCATE_RESTART_IDENTITY, 3, trunc1);
    expect_commit(&w, 0);

    /* TRUNCATE plain1, plain2 */
    expect_begin(&w);
    expect_relation(&w, "public", "plain1", 'd', 1);
    expect_relation(&w, "public", "plain2", 'd', 1);
    static const char *const trunc2[] = {"plain1", "plain2"};
    expect_truncate(&w, 0, 2, trunc2);
    expect_commit(&w, 0);

    /* TRUNCATE audit */
    expect_begin(&w);
    expect_relation(&w, "public", "audit", 'f', 2);
    static const char *const trunc3[] = {"audit"};
    expect_truncate(&w, 0, 1, trunc3);
    expect_commit(&w, 0);

    assert_int_equal(w.next, text_fx.n);
    pgo_decoder_free(w.dec);
}

/* binary.bin: the same protocol with 'binary' on, so values arrive in typsend format. */
static void test_binary_fixture(void **state)
{
    (void)state;
    char *types = type_sequence(&bin_fx);
    assert_string_equal(types, "BYRIIC" "BUC" "BDC");
    free(types);

    struct walk w;
    walk_start(&w, &bin_fx);
    const struct pgo_msg *m;
    const struct pgo_change *c;
    const struct pgo_tuple *t;

    expect_begin(&w);
    m = next_msg(&w, PGO_MSG_TYPE);
    const uint32_t color_oid = m->u.typ.oid;
    assert_true(color_oid >= FIRST_NORMAL_OID);
    assert_string_equal(m->u.typ.nspname, "public");
    assert_string_equal(m->u.typ.typname, "color");
    const struct pgf_relation *rel = expect_relation(&w, "public", "bin", 'd', 9);
    assert_attr(rel, 0, "id", OID_INT4, -1, 1);
    assert_attr(rel, 1, "big", OID_INT8, -1, 0);
    assert_attr(rel, 2, "small", OID_INT2, -1, 0);
    assert_attr(rel, 3, "flag", OID_BOOL, -1, 0);
    assert_attr(rel, 4, "label", OID_TEXT, -1, 0);
    assert_attr(rel, 5, "ratio", OID_FLOAT8, -1, 0);
    assert_attr(rel, 6, "raw", OID_BYTEA, -1, 0);
    assert_attr(rel, 7, "missing", OID_INT4, -1, 0);
    assert_attr(rel, 8, "col", color_oid, -1, 0);

    /* (1, 1234567890123, -2, true, 'héllo', 1.5, '\xdeadbeef', NULL, 'green') */
    c = expect_change(&w, PGO_MSG_INSERT, "bin", 0);
    t = &c->new_tuple;
    assert_bin(t, 0, "\x00\x00\x00\x01", 4);
    assert_bin(t, 1, "\x00\x00\x01\x1f\x71\xfb\x04\xcb", 8);
    assert_int_equal(be(t->values[1].data, 8), UINT64_C(1234567890123));
    assert_bin(t, 2, "\xff\xfe", 2);
    assert_int_equal((int16_t)be(t->values[2].data, 2), -2);
    assert_bin(t, 3, "\x01", 1);
    assert_bin(t, 4, "h\xc3\xa9llo", 6); /* text's binary form is its UTF-8 bytes */
    uint64_t bits = be(t->values[5].data, 8);
    double d;
    memcpy(&d, &bits, sizeof d);
    assert_bin(t, 5, "\x3f\xf8\x00\x00\x00\x00\x00\x00", 8);
    assert_true(d == 1.5);
    assert_bin(t, 6, "\xde\xad\xbe\xef", 4);
    assert_empty_kind(t, 7, PGF_VALUE_NULL);
    assert_bin(t, 8, "green", 5); /* an enum's binary form is its label */

    /* (2, -1, 0, false, '', -0.25, '\x', 7, 'red'): empty values are 'b' of length 0, not NULL */
    c = expect_change(&w, PGO_MSG_INSERT, "bin", 0);
    t = &c->new_tuple;
    assert_bin(t, 0, "\x00\x00\x00\x02", 4);
    assert_bin(t, 1, "\xff\xff\xff\xff\xff\xff\xff\xff", 8);
    assert_bin(t, 2, "\x00\x00", 2);
    assert_bin(t, 3, "\x00", 1);
    assert_bin(t, 4, "", 0);
    assert_bin(t, 5, "\xbf\xd0\x00\x00\x00\x00\x00\x00", 8); /* -0.25 */
    assert_bin(t, 6, "", 0);
    assert_bin(t, 7, "\x00\x00\x00\x07", 4);
    assert_bin(t, 8, "red", 3);
    expect_commit(&w, 0);

    /* UPDATE bin SET label = 'x' WHERE id = 1 */
    expect_begin(&w);
    c = expect_change(&w, PGO_MSG_UPDATE, "bin", 0);
    t = &c->new_tuple;
    assert_bin(t, 0, "\x00\x00\x00\x01", 4);
    assert_bin(t, 1, "\x00\x00\x01\x1f\x71\xfb\x04\xcb", 8);
    assert_bin(t, 2, "\xff\xfe", 2);
    assert_bin(t, 3, "\x01", 1);
    assert_bin(t, 4, "x", 1);
    assert_bin(t, 5, "\x3f\xf8\x00\x00\x00\x00\x00\x00", 8);
    assert_bin(t, 6, "\xde\xad\xbe\xef", 4);
    assert_empty_kind(t, 7, PGF_VALUE_NULL);
    assert_bin(t, 8, "green", 5);
    expect_commit(&w, 0);

    /* DELETE FROM bin WHERE id = 2: the key in binary, everything else NULL */
    expect_begin(&w);
    c = expect_change(&w, PGO_MSG_DELETE, "bin", 'K');
    t = &c->old_tuple;
    assert_int_equal(t->natts, 9);
    assert_bin(t, 0, "\x00\x00\x00\x02", 4);
    for (unsigned i = 1; i < 9; i++)
        assert_empty_kind(t, i, PGF_VALUE_NULL);
    expect_commit(&w, 0);

    assert_int_equal(w.next, bin_fx.n);
    pgo_decoder_free(w.dec);
}

/* Every record placed flush after a PROT_NONE page too, so a read before the start faults. */
static void test_leading_guard(void **state)
{
    (void)state;
    const struct fixture *fxs[] = {&text_fx, &bin_fx};
    for (size_t f = 0; f < 2; f++) {
        struct pgo_decoder *dec = pgo_decoder_new();
        assert_non_null(dec);
        struct pgo_msg m;
        for (size_t i = 0; i < fxs[f]->n; i++) {
            const struct record *r = &fxs[f]->recs[i];
            int rc = pgo_decode(dec, place_start(r->p, r->len), r->len, &m);
            if (rc != PGO_OK)
                fail_msg("%s record %zu: %s", fxs[f]->name, i, pgo_decoder_errstr(dec));
        }
        pgo_decoder_free(dec);
    }
}

/* ---------------------------------------------------------------- truncation */

/* For every record: with the records before it decoded, each strict prefix must fail cleanly,
 * and the decoder must still decode the whole record afterwards. */
static void check_prefixes(const struct fixture *fx)
{
    struct pgo_msg m;
    for (size_t i = 0; i < fx->n; i++) {
        struct pgo_decoder *dec = replayed(fx, i);
        const struct record *r = &fx->recs[i];
        const struct pgf_relation *cached = NULL;
        uint32_t oid = 0;
        if (r->len >= 5 && r->p[0] == PGO_MSG_RELATION) {
            oid = (uint32_t)be((const char *)r->p + 1, 4);
            cached = pgo_decoder_relation(dec, oid);
        }
        for (size_t l = 0; l < r->len; l++) {
            const uint8_t *p = place_end(r->p, l);
            int rc = pgo_decode(dec, p, l, &m);
            if (rc != PGO_ERR_TRUNCATED && rc != PGO_ERR_BAD)
                fail_msg("%s record %zu ('%c'): %zu of %zu bytes gave rc %d (%s)", fx->name, i,
                         (char)r->p[0], l, r->len, rc, pgo_decoder_errstr(dec));
            assert_errstr(dec, p, l);
            /* A torn Relation must not replace the cached description. */
            if (oid)
                assert_ptr_equal(pgo_decoder_relation(dec, oid), cached);
        }
        decode_ok(dec, fx, i, &m);
        pgo_decoder_free(dec);
    }
}

/* Truncating any record of text.bin anywhere is an error, never a crash or overread. */
static void test_truncation_text(void **state)
{
    (void)state;
    check_prefixes(&text_fx);
}

/* The same over binary.bin. */
static void test_truncation_binary(void **state)
{
    (void)state;
    check_prefixes(&bin_fx);
}

/* ---------------------------------------------------------------- malformed input */

/* Returns the index of the first record with type byte type and, if byte5 is non-zero,
 * that byte at offset 5 (the tuple marker of a row message). */
static size_t find_record(const struct fixture *fx, uint8_t type, uint8_t byte5)
{
    for (size_t i = 0; i < fx->n; i++)
        if (fx->recs[i].p[0] == type && (!byte5 || (fx->recs[i].len > 5 && fx->recs[i].p[5] == byte5)))
            return i;
    fail_msg("%s has no '%c' record", fx->name, type);
    return 0;
}

/* Decodes record i of fx (after replaying 0..i-1) with byte at off replaced by val;
 * asserts the error code want. */
static void expect_patched(const struct fixture *fx, size_t i, size_t off, uint8_t val, int want)
{
    struct pgo_decoder *dec = replayed(fx, i);
    const struct record *r = &fx->recs[i];
    uint8_t *copy = malloc(r->len);
    assert_non_null(copy);
    memcpy(copy, r->p, r->len);
    assert_true(off < r->len);
    copy[off] = val;
    struct pgo_msg m;
    const uint8_t *p = place_end(copy, r->len);
    int rc = pgo_decode(dec, p, r->len, &m);
    if (rc != want)
        fail_msg("%s record %zu with byte %zu = 0x%02x: rc %d (%s), want %d", fx->name, i, off, val, rc,
                 pgo_decoder_errstr(dec), want);
    assert_errstr(dec, p, r->len);
    free(copy);
    pgo_decoder_free(dec);
}

/* Unknown type bytes, empty input, and every tuple/column marker error. */
static void test_unknown_and_markers(void **state)
{
    (void)state;
    struct pgo_decoder *dec = pgo_decoder_new();
    assert_non_null(dec);
    struct pgo_msg m;

    int rc = pgo_decode(dec, place_end("", 0), 0, &m);
    assert_int_equal(rc, PGO_ERR_TRUNCATED);
    assert_errstr(dec, NULL, 0);

    /* Every byte that is not a protocol-1 type, alone and in front of a valid Begin body;
     * this includes the protocol-2+ stream and two-phase types, which are not ours. */
    const struct record *begin = &text_fx.recs[0];
    assert_int_equal(begin->p[0], PGO_MSG_BEGIN);
    uint8_t buf[64];
    assert_true(begin->len <= sizeof buf);
    for (int b = 0; b < 256; b++) {
        if (b != 0 && strchr(KNOWN_TYPES, b))
            continue;
        buf[0] = (uint8_t)b;
        const uint8_t *p = place_end(buf, 1);
        assert_int_equal(pgo_decode(dec, p, 1, &m), PGO_ERR_UNKNOWN);
        assert_errstr(dec, p, 1);
        memcpy(buf + 1, begin->p + 1, begin->len - 1);
        p = place_end(buf, begin->len);
        assert_int_equal(pgo_decode(dec, p, begin->len, &m), PGO_ERR_UNKNOWN);
        assert_errstr(dec, p, begin->len);
    }
    /* Success clears the error string. */
    decode_ok(dec, &text_fx, 0, &m);

    /* Row messages for a relation never described. */
    size_t ins = find_record(&text_fx, PGO_MSG_INSERT, 'N');
    size_t upd_k = find_record(&text_fx, PGO_MSG_UPDATE, 'K');
    size_t del = find_record(&text_fx, PGO_MSG_DELETE, 'K');
    size_t upd_o = find_record(&text_fx, PGO_MSG_UPDATE, 'O');
    size_t trunc = find_record(&text_fx, PGO_MSG_TRUNCATE, 0);
    const size_t rows[] = {ins, upd_k, del, trunc};
    for (size_t k = 0; k < 4; k++) {
        const struct record *r = &text_fx.recs[rows[k]];
        const uint8_t *p = place_end(r->p, r->len);
        rc = pgo_decode(dec, p, r->len, &m);
        if (rc != PGO_ERR_RELATION)
            fail_msg("'%c' for an undescribed relation: rc %d (%s)", (char)r->p[0], rc,
                     pgo_decoder_errstr(dec));
        assert_errstr(dec, p, r->len);
    }
    pgo_decoder_free(dec);

    /* Insert: [0] 'I', [1..4] OID, [5] 'N', [6..7] natts, [8] first column kind. */
    expect_patched(&text_fx, ins, 5, 'X', PGO_ERR_UNKNOWN);
    expect_patched(&text_fx, ins, 5, 'K', PGO_ERR_UNKNOWN); /* an insert has no old tuple */
    expect_patched(&text_fx, ins, 5, 'O', PGO_ERR_UNKNOWN);
    expect_patched(&text_fx, ins, 5, 0, PGO_ERR_UNKNOWN);
    expect_patched(&text_fx, ins, 8, 'z', PGO_ERR_UNKNOWN);
    expect_patched(&text_fx, ins, 8, 0, PGO_ERR_UNKNOWN);
    expect_patched(&text_fx, ins, 7, (uint8_t)(text_fx.recs[ins].p[7] + 1), PGO_ERR_RELATION);
    expect_patched(&text_fx, ins, 7, (uint8_t)(text_fx.recs[ins].p[7] - 1), PGO_ERR_RELATION);
    /* Update with an old key: the old-tuple marker, and the 'N' that must follow it. */
    expect_patched(&text_fx, upd_k, 5, 'Q', PGO_ERR_UNKNOWN);
    const struct record *uk = &text_fx.recs[upd_k];
    size_t n_at = 0;
    for (size_t off = uk->len; off-- > 8;)
        if (uk->p[off] == 'N' && off + 2 < uk->len && uk->p[off + 1] == uk->p[6] && uk->p[off + 2] == uk->p[7])
            n_at = off;
    assert_true(n_at > 8);
    expect_patched(&text_fx, upd_k, n_at, 'K', PGO_ERR_UNKNOWN);
    expect_patched(&text_fx, upd_o, 5, 'D', PGO_ERR_UNKNOWN);
    /* Delete needs 'K' or 'O', never 'N'. */
    expect_patched(&text_fx, del, 5, 'N', PGO_ERR_UNKNOWN);
    expect_patched(&text_fx, del, 8, 'x', PGO_ERR_UNKNOWN);
    /* Truncate: [1..4] count, [5] options, [6..] OIDs; a count too large is a truncation,
     * an OID nobody described is a relation error. */
    expect_patched(&text_fx, trunc, 4, (uint8_t)(text_fx.recs[trunc].p[4] + 1), PGO_ERR_TRUNCATED);
    expect_patched(&text_fx, trunc, 1, 0x7f, PGO_ERR_TRUNCATED);
    expect_patched(&text_fx, trunc, 6, 0x7f, PGO_ERR_RELATION); /* OID >= 0x7f000000: never described */
}

/* A valid record with bytes after it is an error, the decoder is not poisoned by it, and a
 * Relation with trailing bytes does not replace the cached description. */
static void check_trailing(const struct fixture *fx)
{
    struct pgo_decoder *dec = pgo_decoder_new();
    assert_non_null(dec);
    uint8_t *buf = malloc(fx->max_len + 3);
    assert_non_null(buf);
    struct pgo_msg m;
    static const uint8_t tails[][3] = {{0, 0, 0}, {'x', 'y', 'z'}, {'N', 0, 0}};
    for (size_t i = 0; i < fx->n; i++) {
        const struct record *r = &fx->recs[i];
        uint32_t oid = r->p[0] == PGO_MSG_RELATION ? (uint32_t)be((const char *)r->p + 1, 4) : 0;
        const struct pgf_relation *cached = oid ? pgo_decoder_relation(dec, oid) : NULL;
        memcpy(buf, r->p, r->len);
        for (size_t k = 0; k < sizeof tails / sizeof tails[0]; k++) {
            for (size_t extra = 1; extra <= 3; extra++) {
                memcpy(buf + r->len, tails[k], extra);
                const uint8_t *p = place_end(buf, r->len + extra);
                int rc = pgo_decode(dec, p, r->len + extra, &m);
                if (rc != PGO_ERR_BAD)
                    fail_msg("%s record %zu ('%c') + %zu bytes: rc %d (%s), want PGO_ERR_BAD", fx->name,
                             i, (char)r->p[0], extra, rc, pgo_decoder_errstr(dec));
                assert_errstr(dec, p, r->len + extra);
                if (oid)
                    assert_ptr_equal(pgo_decoder_relation(dec, oid), cached);
            }
        }
        decode_ok(dec, fx, i, &m);
    }
    free(buf);
    pgo_decoder_free(dec);
}

/* Trailing bytes after every record of both fixtures. */
static void test_trailing_bytes(void **state)
{
    (void)state;
    check_trailing(&text_fx);
    check_trailing(&bin_fx);
}

/* ---------------------------------------------------------------- random input */

/* splitmix64: a fixed-seed generator, so failures reproduce. */
static uint64_t rng_state;

/* Returns the next pseudo-random 64-bit value. */
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Returns a pseudo-random value in [0, n). */
static size_t rnd_below(size_t n)
{
    return (size_t)(rnd() % n);
}

/* Returns 1 if [p, p+n) lies inside [buf, buf+len). */
static int inside(const void *p, size_t n, const uint8_t *buf, size_t len)
{
    const uint8_t *q = p;
    return q >= buf && q <= buf + len && n <= (size_t)(buf + len - q);
}

/* Returns a checksum of a value's bytes, reading each so a stray pointer is caught by ASan. */
static unsigned touch(const char *p, size_t n)
{
    unsigned s = 0;
    for (size_t i = 0; i < n; i++)
        s += (uint8_t)p[i];
    return s;
}

/* Asserts a tuple is well formed for rel and points only into the input. */
static unsigned check_tuple(const struct pgo_tuple *t, const struct pgf_relation *rel, const uint8_t *buf,
                            size_t len)
{
    unsigned s = 0;
    assert_int_equal(t->natts, rel->natts);
    for (unsigned i = 0; i < t->natts; i++) {
        const struct pgf_value *v = &t->values[i];
        switch (v->kind) {
        case PGF_VALUE_NULL:
        case PGF_VALUE_UNCHANGED_TOAST:
            assert_int_equal(v->len, 0);
            break;
        case PGF_VALUE_TEXT:
        case PGF_VALUE_BINARY:
            assert_true(inside(v->data, v->len, buf, len));
            s += touch(v->data, v->len);
            break;
        default:
            fail_msg("column %u has kind 0x%02x", i, (unsigned)v->kind);
        }
    }
    return s;
}

/* Asserts a successfully decoded message is internally consistent and points only into buf. */
static unsigned check_ok(const struct pgo_decoder *dec, const struct pgo_msg *m, const uint8_t *buf,
                         size_t len)
{
    unsigned s = 0;
    assert_string_equal(pgo_decoder_errstr(dec), "");
    assert_int_equal(m->type, buf[0]);
    switch (m->type) {
    case PGO_MSG_BEGIN:
    case PGO_MSG_COMMIT:
        break;
    case PGO_MSG_ORIGIN:
        assert_true(inside(m->u.origin.name, strlen(m->u.origin.name) + 1, buf, len));
        break;
    case PGO_MSG_TYPE:
        assert_true(inside(m->u.typ.nspname, strlen(m->u.typ.nspname) + 1, buf, len));
        assert_true(inside(m->u.typ.typname, strlen(m->u.typ.typname) + 1, buf, len));
        break;
    case PGO_MSG_RELATION: {
        const struct pgf_relation *rel = m->u.relation;
        assert_ptr_equal(pgo_decoder_relation(dec, rel->oid), rel);
        s += (unsigned)strlen(rel->nspname) + (unsigned)strlen(rel->relname);
        for (unsigned i = 0; i < rel->natts; i++)
            s += (unsigned)strlen(rel->attrs[i].name);
        break;
    }
    case PGO_MSG_INSERT:
    case PGO_MSG_UPDATE:
    case PGO_MSG_DELETE: {
        const struct pgo_change *c = &m->u.change;
        assert_non_null(c->rel);
        assert_ptr_equal(pgo_decoder_relation(dec, c->rel->oid), c->rel);
        if (m->type == PGO_MSG_INSERT)
            assert_int_equal(c->old_kind, 0);
        else if (m->type == PGO_MSG_DELETE)
            assert_true(c->old_kind == 'K' || c->old_kind == 'O');
        else
            assert_true(c->old_kind == 0 || c->old_kind == 'K' || c->old_kind == 'O');
        if (c->old_kind)
            s += check_tuple(&c->old_tuple, c->rel, buf, len);
        if (m->type != PGO_MSG_DELETE)
            s += check_tuple(&c->new_tuple, c->rel, buf, len);
        break;
    }
    case PGO_MSG_TRUNCATE:
        for (uint32_t i = 0; i < m->u.truncate.nrelids; i++) {
            const struct pgf_relation *rel = m->u.truncate.rels[i];
            assert_non_null(rel);
            assert_ptr_equal(pgo_decoder_relation(dec, rel->oid), rel);
        }
        break;
    case PGO_MSG_MESSAGE:
        assert_true(inside(m->u.message.prefix, strlen(m->u.message.prefix) + 1, buf, len));
        assert_true(inside(m->u.message.content, m->u.message.content_len, buf, len));
        s += touch(m->u.message.content, m->u.message.content_len);
        break;
    default:
        fail_msg("decoded OK with type 0x%02x", (unsigned)m->type);
    }
    return s;
}

/* Decodes buf placed against the guard; on success checks the result, on failure the errstr.
 * Returns 1 on success. */
static int decode_any(struct pgo_decoder *dec, const uint8_t *src, size_t len, unsigned *sum)
{
    struct pgo_msg m;
    const uint8_t *p = place_end(src, len);
    int rc = pgo_decode(dec, p, len, &m);
    if (rc == PGO_OK) {
        *sum += check_ok(dec, &m, p, len);
        return 1;
    }
    assert_in_range(rc, PGO_ERR_TRUNCATED, PGO_ERR_RELATION);
    assert_errstr(dec, p, len);
    return 0;
}

/* A little builder for structured random messages. */
struct rbuf {
    uint8_t b[1024];
    size_t n;
};

/* Appends one byte, dropping it when full (the message just ends up truncated). */
static void put8(struct rbuf *r, unsigned v)
{
    if (r->n < sizeof r->b)
        r->b[r->n++] = (uint8_t)v;
}

/* Appends a big-endian integer of n bytes. */
static void put_be(struct rbuf *r, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--)
        put8(r, (unsigned)(v >> (8 * i)) & 0xffu);
}

/* Appends a short random string, NUL-terminated unless the dice say otherwise. */
static void put_str(struct rbuf *r)
{
    size_t n = rnd_below(6);
    for (size_t i = 0; i < n; i++)
        put8(r, 'a' + (unsigned)rnd_below(26));
    if (rnd_below(16))
        put8(r, 0);
}

/* Appends a random TupleData for natts columns, mostly well formed. */
static void put_tuple(struct rbuf *r, unsigned natts)
{
    put_be(r, rnd_below(8) ? natts : rnd_below(8), 2);
    for (unsigned i = 0; i < natts; i++) {
        static const char kinds[] = "nutb";
        unsigned kind = rnd_below(16) ? (unsigned)kinds[rnd_below(4)] : (unsigned)rnd_below(256);
        put8(r, kind);
        if (kind == 't' || kind == 'b') {
            size_t len = rnd_below(16) ? rnd_below(9) : (size_t)(rnd() & 0xffffffffu);
            put_be(r, len, 4);
            for (size_t k = 0; k < len && k < 16; k++)
                put8(r, (unsigned)rnd_below(256));
        }
    }
}

/* OIDs the random messages name: the fixture's relations, and a few the random Relation
 * messages create themselves. */
static uint32_t pick_oid(const uint32_t *oids, size_t n)
{
    size_t k = rnd_below(n + 5);
    return k < n ? oids[k] : (uint32_t)(k - n + 1);
}

/* Builds a mostly well-formed random message of the given type into r. */
static void build_structured(struct rbuf *r, struct pgo_decoder *dec, uint8_t type, const uint32_t *oids,
                             size_t noids)
{
    r->n = 0;
    put8(r, type);
    uint32_t oid = pick_oid(oids, noids);
    const struct pgf_relation *rel = pgo_decoder_relation(dec, oid);
    unsigned natts = rel ? rel->natts : (unsigned)rnd_below(4);
    switch (type) {
    case PGO_MSG_BEGIN:
        put_be(r, rnd(), 8), put_be(r, rnd(), 8), put_be(r, rnd(), 4);
        break;
    case PGO_MSG_COMMIT:
        put8(r, 0), put_be(r, rnd(), 8), put_be(r, rnd(), 8), put_be(r, rnd(), 8);
        break;
    case PGO_MSG_ORIGIN:
        put_be(r, rnd(), 8), put_str(r);
        break;
    case PGO_MSG_TYPE:
        put_be(r, rnd(), 4), put_str(r), put_str(r);
        break;
    case PGO_MSG_RELATION: {
        /* Only the made-up OIDs, so the fixture relations keep their shape. */
        put_be(r, 1 + rnd_below(5), 4), put_str(r), put_str(r);
        put8(r, rnd_below(8) ? (unsigned)"dnfi"[rnd_below(4)] : (unsigned)rnd_below(256));
        unsigned n = (unsigned)rnd_below(6);
        put_be(r, rnd_below(8) ? n : rnd_below(65536), 2);
        for (unsigned i = 0; i < n; i++)
            put8(r, (unsigned)rnd_below(2)), put_str(r), put_be(r, rnd(), 4), put_be(r, rnd(), 4);
        break;
    }
    case PGO_MSG_INSERT:
        put_be(r, oid, 4), put8(r, rnd_below(8) ? 'N' : (unsigned)rnd_below(256)), put_tuple(r, natts);
        break;
    case PGO_MSG_UPDATE:
        put_be(r, oid, 4);
        if (rnd_below(2))
            put8(r, rnd_below(2) ? 'K' : 'O'), put_tuple(r, natts);
        put8(r, rnd_below(8) ? 'N' : (unsigned)rnd_below(256)), put_tuple(r, natts);
        break;
    case PGO_MSG_DELETE:
        put_be(r, oid, 4), put8(r, rnd_below(8) ? (unsigned)"KO"[rnd_below(2)] : (unsigned)rnd_below(256));
        put_tuple(r, natts);
        break;
    case PGO_MSG_TRUNCATE: {
        unsigned n = (unsigned)rnd_below(5);
        put_be(r, rnd_below(8) ? n : (uint32_t)rnd(), 4), put8(r, (unsigned)rnd_below(4));
        for (unsigned i = 0; i < n; i++)
            put_be(r, pick_oid(oids, noids), 4);
        break;
    }
    case PGO_MSG_MESSAGE: {
        size_t n = rnd_below(10);
        put8(r, (unsigned)rnd_below(2)), put_be(r, rnd(), 8), put_str(r);
        put_be(r, rnd_below(8) ? n : (uint32_t)rnd(), 4);
        for (size_t i = 0; i < n; i++)
            put8(r, (unsigned)rnd_below(256));
        break;
    }
    default:
        break;
    }
    /* Now and then tear the end off or add junk, to land near every boundary. */
    size_t d = rnd_below(8);
    if (d == 0 && r->n > 1)
        r->n -= 1 + rnd_below(r->n - 1);
    else if (d == 1)
        put8(r, (unsigned)rnd_below(256));
}

/* Random buffers: unknown types are PGO_ERR_UNKNOWN, known types with random or
 * structured bodies either fail cleanly or decode into something consistent. */
static void test_random(void **state)
{
    (void)state;
    rng_state = UINT64_C(0x70676f7574707574); /* "pgoutput" */
    /* Prime the cache with every fixture relation so row messages can name real OIDs. */
    struct pgo_decoder *dec = replayed(&text_fx, text_fx.n);
    uint32_t oids[64];
    size_t noids = 0;
    struct pgo_msg m;
    for (size_t i = 0; i < text_fx.n; i++) {
        const struct record *r = &text_fx.recs[i];
        uint32_t oid = r->p[0] == PGO_MSG_RELATION ? (uint32_t)be((const char *)r->p + 1, 4) : 0;
        size_t k = 0;
        while (oid && k < noids && oids[k] != oid)
            k++;
        if (oid && k == noids && noids < 64)
            oids[noids++] = oid;
    }
    assert_int_equal(noids, 9);

    uint8_t buf[256];
    unsigned sum = 0;
    for (int iter = 0; iter < 5000; iter++) {
        size_t len = 1 + rnd_below(sizeof buf);
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)rnd();
        while (buf[0] != 0 && strchr(KNOWN_TYPES, buf[0]))
            buf[0] = (uint8_t)rnd();
        const uint8_t *p = place_end(buf, len);
        int rc = pgo_decode(dec, p, len, &m);
        if (rc != PGO_ERR_UNKNOWN)
            fail_msg("type 0x%02x, %zu bytes: rc %d, want PGO_ERR_UNKNOWN", buf[0], len, rc);
        assert_errstr(dec, p, len);
    }

    int ok_random = 0, ok_structured = 0;
    const int n_random = 20000, n_structured = 100000;
    for (int iter = 0; iter < n_random; iter++) {
        size_t len = 1 + rnd_below(iter % 4 ? 40 : sizeof buf);
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)rnd();
        buf[0] = (uint8_t)KNOWN_TYPES[rnd_below(strlen(KNOWN_TYPES))];
        ok_random += decode_any(dec, buf, len, &sum);
    }
    struct rbuf rb;
    for (int iter = 0; iter < n_structured; iter++) {
        build_structured(&rb, dec, (uint8_t)KNOWN_TYPES[rnd_below(strlen(KNOWN_TYPES))], oids, noids);
        ok_structured += decode_any(dec, rb.b, rb.n, &sum);
    }
    print_message("random bodies: %d of %d decoded OK; structured: %d of %d decoded OK (sum %u)\n",
                  ok_random, n_random, ok_structured, n_structured, sum);
    /* Fixed-length messages with random bodies (Begin, Commit) must sometimes succeed, and
     * the structured generator must reach the success path of most types. */
    assert_true(ok_random > 0);
    assert_true(ok_structured > n_structured / 10);
    pgo_decoder_free(dec);
}

/* Byte flips of every fixture record, decoded in stream context: no crash, no overread,
 * and every success is consistent. */
static void check_mutations(const struct fixture *fx, int per_record)
{
    struct pgo_decoder *dec = pgo_decoder_new();
    assert_non_null(dec);
    uint8_t *buf = malloc(fx->max_len + 8);
    assert_non_null(buf);
    unsigned sum = 0;
    int ok = 0, total = 0;
    struct pgo_msg m;
    for (size_t i = 0; i < fx->n; i++) {
        const struct record *r = &fx->recs[i];
        for (int k = 0; k < per_record; k++) {
            size_t len = r->len;
            memcpy(buf, r->p, len);
            size_t flips = 1 + rnd_below(3);
            for (size_t f = 0; f < flips; f++) {
                /* Aim at the header half the time: that is where the counts and lengths are. */
                size_t at = rnd_below(2) ? rnd_below(len < 24 ? len : 24) : rnd_below(len);
                if (rnd_below(2))
                    buf[at] ^= (uint8_t)(1u << rnd_below(8));
                else
                    buf[at] = (uint8_t)rnd();
            }
            if (rnd_below(8) == 0)
                len = rnd_below(len + 1);
            ok += decode_any(dec, buf, len, &sum);
            total++;
        }
        /* Keep the cache in step with the stream; a mutated Relation may have clobbered it. */
        (void)pgo_decode(dec, place_end(r->p, r->len), r->len, &m);
    }
    print_message("%s mutations: %d of %d decoded OK (sum %u)\n", fx->name, ok, total, sum);
    free(buf);
    pgo_decoder_free(dec);
}

/* Mutations of both fixtures. */
static void test_mutations(void **state)
{
    (void)state;
    rng_state = UINT64_C(0x6d75746174696f6e); /* "mutation" */
    check_mutations(&text_fx, 256);
    check_mutations(&bin_fx, 256);
}

/* Type names, and freeing NULL. */
static void test_type_names(void **state)
{
    (void)state;
    assert_string_equal(pgo_msg_type_name('B'), "begin");
    assert_string_equal(pgo_msg_type_name('C'), "commit");
    assert_string_equal(pgo_msg_type_name('O'), "origin");
    assert_string_equal(pgo_msg_type_name('R'), "relation");
    assert_string_equal(pgo_msg_type_name('Y'), "type");
    assert_string_equal(pgo_msg_type_name('I'), "insert");
    assert_string_equal(pgo_msg_type_name('U'), "update");
    assert_string_equal(pgo_msg_type_name('D'), "delete");
    assert_string_equal(pgo_msg_type_name('T'), "truncate");
    assert_string_equal(pgo_msg_type_name('M'), "message");
    assert_string_equal(pgo_msg_type_name('S'), "unknown");
    assert_string_equal(pgo_msg_type_name(-1), "unknown");
    struct pgo_decoder *dec = pgo_decoder_new();
    assert_non_null(dec);
    assert_string_equal(pgo_decoder_errstr(dec), "");
    assert_null(pgo_decoder_relation(dec, 16384));
    pgo_decoder_free(dec);
    pgo_decoder_free(NULL);
}

/* ---------------------------------------------------------------- main */

/* Loads both fixtures and maps the guard region. */
static int group_setup(void **state)
{
    (void)state;
    if (fixture_load(&text_fx, fixtures_dir) != 0 || fixture_load(&bin_fx, fixtures_dir) != 0)
        return -1;
    if (text_fx.n == 0 || bin_fx.n == 0) {
        fprintf(stderr, "test_decoder: empty fixture\n");
        return -1;
    }
    size_t max = text_fx.max_len > bin_fx.max_len ? text_fx.max_len : bin_fx.max_len;
    return guard_init(&guard, max + GUARD_SLACK);
}

/* Releases what group_setup acquired. */
static int group_teardown(void **state)
{
    (void)state;
    fixture_free(&text_fx);
    fixture_free(&bin_fx);
    guard_free(&guard);
    return 0;
}

/* Runs the decoder tests against the fixtures in argv[1]. */
int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s FIXTURES_DIR\n", argv[0]);
        return 2;
    }
    fixtures_dir = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_text_fixture),
        cmocka_unit_test(test_binary_fixture),
        cmocka_unit_test(test_leading_guard),
        cmocka_unit_test(test_truncation_text),
        cmocka_unit_test(test_truncation_binary),
        cmocka_unit_test(test_unknown_and_markers),
        cmocka_unit_test(test_trailing_bytes),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
