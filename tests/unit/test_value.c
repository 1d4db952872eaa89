/* test_value.c - value rendering, LSN and timestamp formats, the checkpoint rule, record keys
 * rendered for people. */
#define _GNU_SOURCE /* memmem */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "decoders/value.h"
#include "sinks/json_event.h"
#include "sinks/proto_event.h"
#include "pgfanout/v1/event.pb-c.h"

/* Renders a text value of a type and returns the compact JSON, malloc'd. */
static char *render(const char *text, uint32_t oid)
{
    struct pgf_value v = {.kind = PGF_VALUE_TEXT, .len = (uint32_t)strlen(text), .data = text};
    json_t *j = pgf_json_value(&v, oid);
    assert_non_null(j);
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    return s;
}

/* Asserts that text of type oid renders exactly as want. */
static void expect(const char *text, uint32_t oid, const char *want)
{
    char *got = render(text, oid);
    assert_string_equal(got, want);
    free(got);
}

/* Each rendering rule of the JSON format. */
static void test_render_rules(void **state)
{
    (void)state;
    expect("t", PGF_OID_BOOL, "true");
    expect("f", PGF_OID_BOOL, "false");
    expect("-32768", PGF_OID_INT2, "-32768");
    expect("9223372036854775807", PGF_OID_INT8, "9223372036854775807");
    expect("4294967295", PGF_OID_OID, "4294967295");
    expect("NaN", PGF_OID_FLOAT8, "\"NaN\"");
    expect("Infinity", PGF_OID_FLOAT4, "\"Infinity\"");
    expect("-Infinity", PGF_OID_FLOAT8, "\"-Infinity\"");
    expect("1.5", PGF_OID_FLOAT8, "1.5");
    expect("123456789012345678901234567890.000000001", 1700, "\"123456789012345678901234567890.000000001\"");
    expect("\\x00ff", PGF_OID_BYTEA, "\"\\\\x00ff\"");
    expect("h\xc3\xa9llo \"q\"", 25, "\"h\xc3\xa9llo \\\"q\\\"\"");
    expect("{1,2}", 1007, "\"{1,2}\"");
}

/* A float's JSON number parses back to exactly the double of PostgreSQL's text. */
static void test_float_roundtrip(void **state)
{
    (void)state;
    const char *texts[] = {"0.1", "1e+308", "-2.2250738585072014e-308", "3.4028235e+38", "-0",
                           "5e-324", "1e-310"};
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        char *got = render(texts[i], PGF_OID_FLOAT8);
        assert_true(got[0] != '"'); /* a number, also for subnormals */
        assert_true(strtod(got, NULL) == strtod(texts[i], NULL));
        free(got);
    }
}

/* NULL is null, unchanged TOAST has no value, invalid UTF-8 is refused rather than mangled. */
static void test_special_kinds(void **state)
{
    (void)state;
    struct pgf_value null = {.kind = PGF_VALUE_NULL};
    json_t *j = pgf_json_value(&null, 23);
    assert_true(json_is_null(j));
    json_decref(j);
    struct pgf_value toast = {.kind = PGF_VALUE_UNCHANGED_TOAST};
    assert_null(pgf_json_value(&toast, 25));
    struct pgf_value bad = {.kind = PGF_VALUE_TEXT, .len = 2, .data = "\xff\xfe"};
    assert_null(pgf_json_value(&bad, 25));
    struct pgf_value bin = {.kind = PGF_VALUE_BINARY, .len = 2, .data = "\x01\xab"};
    j = pgf_json_value(&bin, 17);
    assert_string_equal(json_string_value(j), "\\x01ab");
    json_decref(j);
}

/* Converts text of a type and returns the typed value. */
static struct pgf_typed conv(const char *text, uint32_t oid, uint8_t *scratch)
{
    struct pgf_typed t;
    struct pgf_value v = pgf_value_text(text, (uint32_t)strlen(text));
    pgf_value_convert(&v, oid, scratch, &t);
    return t;
}

/* Dates, times and timestamps become the documented integer forms; odd ones stay text. */
static void test_typed_time(void **state)
{
    (void)state;
    struct pgf_typed t = conv("1970-01-01", PGF_OID_DATE, NULL);
    assert_int_equal(t.kind, PGF_VK_DATE);
    assert_true(t.i == 0);
    t = conv("2024-02-29", PGF_OID_DATE, NULL);
    assert_true(t.kind == PGF_VK_DATE && t.i == 19782);
    t = conv("1969-12-31", PGF_OID_DATE, NULL);
    assert_true(t.kind == PGF_VK_DATE && t.i == -1);
    assert_int_equal(conv("infinity", PGF_OID_DATE, NULL).kind, PGF_VK_PGTEXT);
    assert_int_equal(conv("0044-03-15 BC", PGF_OID_DATE, NULL).kind, PGF_VK_PGTEXT);
    t = conv("23:59:59.5", PGF_OID_TIME, NULL);
    assert_true(t.kind == PGF_VK_TIME && t.i == INT64_C(86399500000));
    t = conv("24:00:00", PGF_OID_TIME, NULL);
    assert_true(t.kind == PGF_VK_TIME && t.i == INT64_C(86400000000));
    t = conv("2024-01-01 10:00:00.000001", PGF_OID_TIMESTAMP, NULL);
    assert_true(t.kind == PGF_VK_TIMESTAMP && t.i == INT64_C(1704103200000001));
    t = conv("2024-01-01 10:00:00+00", PGF_OID_TIMESTAMPTZ, NULL);
    assert_true(t.kind == PGF_VK_TIMESTAMPTZ && t.i == INT64_C(1704103200000000));
    t = conv("2024-01-01 15:30:00+05:30", PGF_OID_TIMESTAMPTZ, NULL);
    assert_true(t.kind == PGF_VK_TIMESTAMPTZ && t.i == INT64_C(1704103200000000));
    t = conv("1969-12-31 23:59:59.999999-00", PGF_OID_TIMESTAMPTZ, NULL);
    assert_true(t.kind == PGF_VK_TIMESTAMPTZ && t.i == -1);
    assert_int_equal(conv("-infinity", PGF_OID_TIMESTAMPTZ, NULL).kind, PGF_VK_PGTEXT);
    /* Past int64 microseconds: text, never a wrapped number. */
    assert_int_equal(conv("294276-12-31 23:59:59.999999", PGF_OID_TIMESTAMP, NULL).kind, PGF_VK_PGTEXT);
    assert_int_equal(conv("294276-12-31 23:59:59.999999+00", PGF_OID_TIMESTAMPTZ, NULL).kind, PGF_VK_PGTEXT);
    t = conv("294247-01-10 04:00:54.775807", PGF_OID_TIMESTAMP, NULL);
    assert_true(t.kind == PGF_VK_TIMESTAMP && t.i == INT64_MAX);
    assert_int_equal(conv("2024-01-01 10:00:00", PGF_OID_TIMESTAMPTZ, NULL).kind, PGF_VK_PGTEXT);
}

/* Numbers, uuid, bytea and text types take their typed forms; malformed text is kept. */
static void test_typed_other(void **state)
{
    (void)state;
    uint8_t scratch[64];
    struct pgf_typed t = conv("-9223372036854775808", PGF_OID_INT8, NULL);
    assert_true(t.kind == PGF_VK_INT && t.i == INT64_MIN);
    assert_int_equal(conv("9223372036854775808", PGF_OID_INT8, NULL).kind, PGF_VK_PGTEXT);
    t = conv("NaN", PGF_OID_FLOAT8, NULL);
    assert_true(t.kind == PGF_VK_DOUBLE && t.d != t.d);
    t = conv("-Infinity", PGF_OID_FLOAT4, NULL);
    assert_true(t.kind == PGF_VK_DOUBLE && t.d < -1e308);
    t = conv("t", PGF_OID_BOOL, NULL);
    assert_true(t.kind == PGF_VK_BOOL && t.i == 1);
    t = conv("12.50", PGF_OID_NUMERIC, NULL);
    assert_true(t.kind == PGF_VK_NUMERIC && t.len == 5);
    t = conv("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", PGF_OID_UUID, NULL);
    assert_int_equal(t.kind, PGF_VK_UUID);
    assert_memory_equal(t.uuid, "\xa0\xee\xbc\x99\x9c\x0b\x4e\xf8\xbb\x6d\x6b\xb9\xbd\x38\x0a\x11", 16);
    assert_int_equal(conv("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1", PGF_OID_UUID, NULL).kind, PGF_VK_PGTEXT);
    t = conv("\\x00ff10", PGF_OID_BYTEA, scratch);
    assert_true(t.kind == PGF_VK_BYTES && t.len == 3);
    assert_memory_equal(t.str, "\x00\xff\x10", 3);
    assert_int_equal(conv("\\x0", PGF_OID_BYTEA, scratch).kind, PGF_VK_PGTEXT);
    assert_int_equal(conv("{1,2}", 1007, NULL).kind, PGF_VK_PGTEXT);
    assert_int_equal(conv("x", PGF_OID_JSONB, NULL).kind, PGF_VK_TEXT);
    struct pgf_typed n;
    pgf_value_convert(&(struct pgf_value){.kind = PGF_VALUE_NULL}, PGF_OID_INT4, NULL, &n);
    assert_int_equal(n.kind, PGF_VK_NULL);
    pgf_value_convert(&(struct pgf_value){.kind = PGF_VALUE_UNCHANGED_TOAST}, PGF_OID_TEXT, NULL, &n);
    assert_int_equal(n.kind, PGF_VK_UNCHANGED_TOAST);
}

/* Packs a pgfanout.v1.Key of the given columns and returns its rendering by
 * pgf_proto_key_text in a buffer of room bytes (malloc'd). */
static char *key_text(Pgfanout__V1__Column **cols, size_t n, size_t room)
{
    Pgfanout__V1__Key k = PGFANOUT__V1__KEY__INIT;
    k.schema = (char *)"public";
    k.table = (char *)"t";
    k.columns = cols;
    k.n_columns = n;
    uint8_t buf[512];
    size_t len = pgfanout__v1__key__pack(&k, buf);
    char *out = malloc(room);
    pgf_proto_key_text(buf, len, 1, out, room);
    return out;
}

/* Record keys for error messages and dead-letter records: each value kind readable, quotes
 * and non-ASCII escaped, long values and long keys cut, bytes that are no Key as hex. */
static void test_key_text(void **state)
{
    (void)state;
    Pgfanout__V1__Value v[8];
    Pgfanout__V1__Column c[8], *cp[8];
    static const char *const names[] = {"id", "name", "u", "ts", "d", "b", "n", "big"};
    for (int i = 0; i < 8; i++) {
        pgfanout__v1__value__init(&v[i]);
        pgfanout__v1__column__init(&c[i]);
        c[i].name = (char *)names[i];
        c[i].value = &v[i];
        cp[i] = &c[i];
    }
    v[0].kind_case = PGFANOUT__V1__VALUE__KIND_INT_VALUE;
    v[0].int_value = 100;
    v[1].kind_case = PGFANOUT__V1__VALUE__KIND_TEXT;
    v[1].text = (char *)"it's \xc3\xa9";
    v[2].kind_case = PGFANOUT__V1__VALUE__KIND_UUID;
    v[2].uuid.data = (uint8_t *)"\xa0\xee\xbc\x99\x9c\x0b\x4e\xf8\xbb\x6d\x6b\xb9\xbd\x38\x0a\x11";
    v[2].uuid.len = 16;
    v[3].kind_case = PGFANOUT__V1__VALUE__KIND_TIMESTAMPTZ_US;
    v[3].timestamptz_us = -1; /* 1969-12-31 23:59:59.999999 */
    v[4].kind_case = PGFANOUT__V1__VALUE__KIND_DATE_DAYS;
    v[4].date_days = 20454; /* 2026-01-01 */
    v[5].kind_case = PGFANOUT__V1__VALUE__KIND_BYTES_VALUE;
    v[5].bytes_value.data = (uint8_t *)"\x00\xff";
    v[5].bytes_value.len = 2;
    v[6].kind_case = PGFANOUT__V1__VALUE__KIND_IS_NULL;
    v[6].is_null = 1;
    char *s = key_text(cp, 7, 400);
    assert_string_equal(s, "id=100, name='it\\x27s \\xc3\\xa9', u=a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11, "
                           "ts=1969-12-31 23:59:59.999999Z, d=2026-01-01, b=\\x00ff, n=NULL");
    free(s);

    char big[200];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    v[7].kind_case = PGFANOUT__V1__VALUE__KIND_TEXT;
    v[7].text = big;
    s = key_text(cp + 7, 1, 400);
    assert_true(strncmp(s, "big='aaaa", 9) == 0);
    assert_non_null(strstr(s, "'...(199 bytes)"));
    assert_true(strlen(s) < 100);
    free(s);
    s = key_text(cp, 7, 24); /* cut to the room, and says so */
    assert_int_equal(strlen(s), 23);
    assert_string_equal(s + 20, "...");
    free(s);

    char out[64];
    pgf_proto_key_text((const uint8_t *)"\xff\xff\xff", 3, 1, out, sizeof out);
    assert_string_equal(out, "\\xffffff");
    pgf_proto_key_text((const uint8_t *)"my.prefix", 9, 0, out, sizeof out);
    assert_string_equal(out, "'my.prefix'");
    pgf_proto_key_text(NULL, 0, 1, out, sizeof out);
    assert_string_equal(out, "(none)");
}


/* Unpacks the n bytes at b as desc with protobuf-c and checks it packs them back the same:
 * pgf_proto_encode writes the wire format by hand.  Returns the message (free it). */
static ProtobufCMessage *canonical(const ProtobufCMessageDescriptor *desc, const uint8_t *b, size_t n)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, n, b);
    assert_non_null(m);
    uint8_t again[4096];
    assert_true(protobuf_c_message_get_packed_size(m) == n && n <= sizeof again);
    assert_int_equal(protobuf_c_message_pack(m, again), n);
    assert_memory_equal(again, b, n);
    return m;
}

/* The hand-written protobuf: every value kind, proto3 zeros, negative varints, an origin past
 * 127 bytes, and text that is not UTF-8 (a SQL_ASCII database): values go as bytes_value
 * unchanged, names get U+FFFD for each malformed byte. */
static void test_proto_wire(void **state)
{
    (void)state;
    static char c0[] = "id", c1[] = "t", c2[] = "d", c3[] = "f", c4[] = "n", c5[] = "z", c6[] = "u",
                c7[] = "caf\xe9", c8[] = "e", c9[] = "b", nsp[] = "public", tbl[] = "w\xffx";
    struct pgf_column cols[] = {{.name = c0, .type_oid = PGF_OID_INT8, .is_key = 1},
                                {.name = c1, .type_oid = PGF_OID_TEXT},
                                {.name = c2, .type_oid = PGF_OID_DATE},
                                {.name = c3, .type_oid = PGF_OID_FLOAT8},
                                {.name = c4, .type_oid = PGF_OID_NUMERIC},
                                {.name = c5, .type_oid = PGF_OID_TEXT},
                                {.name = c6, .type_oid = PGF_OID_UUID},
                                {.name = c7, .type_oid = PGF_OID_TEXT},
                                {.name = c8, .type_oid = PGF_OID_TEXT},
                                {.name = c9, .type_oid = PGF_OID_BOOL}};
    uint16_t key_atts[] = {0};
    struct pgf_relation rel = {.oid = 16401, .nspname = nsp, .relname = tbl, .replident = 'd', .natts = 10,
                               .attrs = cols, .nkey = 1, .key_atts = key_atts};
    struct pgf_value after[] = {pgf_value_text("-5", 2),
                                pgf_value_text("ok\xff", 3), /* not UTF-8 */
                                pgf_value_text("1900-01-01", 10),
                                pgf_value_text("-0.5", 4),
                                pgf_value_text("NaN", 3),
                                {.kind = PGF_VALUE_NULL},
                                pgf_value_text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", 36),
                                {.kind = PGF_VALUE_UNCHANGED_TOAST},
                                pgf_value_text("", 0),
                                pgf_value_text("f", 1)};
    char origin[301];
    memset(origin, 'o', 300);
    memcpy(origin + 290, "\xc3\xa9", 2);
    origin[300] = '\0';
    struct pgf_txn txn = {.xid = 0, .commit_lsn = 0x16B3748, .commit_time = -1, .origin = origin};
    struct pgf_event ev = {.op = PGF_OP_INSERT, .lsn = 0, .txn = &txn, .rel = &rel, .after = after};
    struct pgf_proto *p = pgf_proto_new("");
    const uint8_t *value, *k;
    size_t value_len, key_len;
    assert_int_equal(pgf_proto_encode(p, &ev, 0, &value, &value_len, &k, &key_len), 0);
    Pgfanout__V1__Event *e = (Pgfanout__V1__Event *)canonical(&pgfanout__v1__event__descriptor, value, value_len);
    assert_string_equal(e->source->database, "");
    assert_string_equal(e->source->table, "w\xef\xbf\xbdx");
    assert_int_equal(strlen(e->source->origin), 300);
    assert_string_equal(e->source->origin, origin);
    assert_int_equal(e->source->lsn, 0);
    assert_int_equal(e->source->commit_time_us, 946684800000000 - 1);
    Pgfanout__V1__Column **c = e->after->columns;
    assert_int_equal(e->after->n_columns, 10);
    assert_int_equal(c[0]->value->int_value, -5);
    assert_int_equal(c[1]->value->kind_case, PGFANOUT__V1__VALUE__KIND_BYTES_VALUE);
    assert_int_equal(c[1]->value->bytes_value.len, 3);
    assert_memory_equal(c[1]->value->bytes_value.data, "ok\xff", 3);
    assert_int_equal(c[2]->value->date_days, -25567);
    assert_true(c[3]->value->double_value == -0.5);
    assert_string_equal(c[4]->value->numeric, "NaN");
    assert_true(c[5]->value->is_null);
    assert_int_equal(c[6]->value->uuid.len, 16);
    assert_int_equal(c[6]->value->uuid.data[0], 0xa0);
    assert_string_equal(c[7]->name, "caf\xef\xbf\xbd");
    assert_true(c[7]->value->unchanged_toast);
    assert_int_equal(c[8]->value->kind_case, PGFANOUT__V1__VALUE__KIND_TEXT);
    assert_string_equal(c[8]->value->text, "");
    assert_int_equal(c[9]->value->kind_case, PGFANOUT__V1__VALUE__KIND_BOOL_VALUE);
    assert_false(c[9]->value->bool_value);
    pgfanout__v1__event__free_unpacked(e, NULL);
    Pgfanout__V1__Key *key = (Pgfanout__V1__Key *)canonical(&pgfanout__v1__key__descriptor, k, key_len);
    assert_string_equal(key->table, "w\xef\xbf\xbdx");
    assert_int_equal(key->n_columns, 1);
    pgfanout__v1__key__free_unpacked(key, NULL);

    /* Text holding a NUL (no PostgreSQL text type can, but a type's output could) is kept
     * whole: a protobuf string may hold U+0000, and cutting would lose data. */
    struct pgf_value nul_after[10];
    memcpy(nul_after, after, sizeof after);
    nul_after[1] = pgf_value_text("a\0b", 3);
    ev.after = nul_after;
    assert_int_equal(pgf_proto_encode(p, &ev, 0, &value, &value_len, &k, &key_len), 0);
    assert_non_null(memmem(value, value_len, "\x3a\x03" "a\0b", 5));
    ev.after = after;

    /* A truncate and a message: their own sub-messages, flags and an empty prefix. */
    const struct pgf_relation *rels[] = {&rel, &rel};
    struct pgf_event tr = {.op = PGF_OP_TRUNCATE, .lsn = 1, .txn = &txn,
                           .truncate = {.nrels = 2, .rels = rels, .options = PGF_TRUNCATE_CASCADE}};
    assert_int_equal(pgf_proto_encode(p, &tr, 7, &value, &value_len, &k, &key_len), 0);
    assert_int_equal(key_len, 0);
    e = (Pgfanout__V1__Event *)canonical(&pgfanout__v1__event__descriptor, value, value_len);
    assert_int_equal(e->truncate->n_tables, 2);
    assert_string_equal(e->truncate->tables[1]->table, "w\xef\xbf\xbdx");
    assert_true(e->truncate->cascade);
    assert_false(e->truncate->restart_identity);
    assert_int_equal(e->source->txn_index, 7);
    pgfanout__v1__event__free_unpacked(e, NULL);
    struct pgf_event msg = {.op = PGF_OP_MESSAGE, .lsn = UINT64_MAX, .message = {.prefix = "", .content_len = 0}};
    assert_int_equal(pgf_proto_encode(p, &msg, 0, &value, &value_len, &k, &key_len), 0);
    e = (Pgfanout__V1__Event *)canonical(&pgfanout__v1__event__descriptor, value, value_len);
    assert_int_equal(e->op, PGFANOUT__V1__OP__OP_MESSAGE);
    assert_non_null(e->message);
    assert_int_equal(e->source->lsn, UINT64_MAX);
    pgfanout__v1__event__free_unpacked(e, NULL);
    pgf_proto_free(p);
}

/* Runs the value tests. */
/* A row read by a SELECT is an event of its own (op read, values from text, no pgoutput):
 * the JSON and protobuf renderers render it like an insert. */
static void test_read_event(void **state)
{
    (void)state;
    static char id[] = "id", name[] = "name", raw[] = "raw", nsp[] = "public", tbl[] = "items";
    struct pgf_column cols[] = {{.name = id, .type_oid = PGF_OID_INT8, .is_key = 1},
                                {.name = name, .type_oid = PGF_OID_TEXT},
                                {.name = raw, .type_oid = PGF_OID_BYTEA}};
    uint16_t key_atts[] = {0};
    struct pgf_relation rel = {.oid = 16400, .nspname = nsp, .relname = tbl, .replident = 'd', .natts = 3,
                               .attrs = cols, .nkey = 1, .key_atts = key_atts};
    /* What PQgetvalue gives for SELECT id, name, raw FROM public.items. */
    struct pgf_value row[] = {pgf_value_text("42", 2), pgf_value_text("caf\xc3\xa9", 5),
                              pgf_value_text("\\x00ff", 6)};
    struct pgf_value key[3];
    struct pgf_txn txn = {.xid = 0, .commit_lsn = 0x16B3748};
    struct pgf_event ev;
    pgf_event_read(&ev, &rel, row, key, &txn, 0x16B3748);
    assert_int_equal(ev.op, PGF_OP_READ);
    assert_int_equal(key[0].kind, PGF_VALUE_TEXT);
    assert_int_equal(key[1].kind, PGF_VALUE_ABSENT);

    char err[256];
    json_t *j = pgf_json_event(&ev, err, sizeof err);
    assert_non_null(j);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    assert_string_equal(s, "{\"op\":\"read\",\"schema\":\"public\",\"table\":\"items\",\"lsn\":\"0/16B3748\","
                           "\"commit_lsn\":\"0/16B3748\",\"xid\":0,\"commit_time\":\"2000-01-01T00:00:00.000000Z\","
                           "\"key\":{\"id\":42},\"before\":null,\"after\":{\"id\":42,\"name\":\"caf\xc3\xa9\","
                           "\"raw\":\"\\\\x00ff\"},\"unchanged_toast\":[]}");
    free(s);

    struct pgf_proto *p = pgf_proto_new("shop");
    const uint8_t *value, *k;
    size_t value_len, key_len;
    assert_int_equal(pgf_proto_encode(p, &ev, 0, &value, &value_len, &k, &key_len), 0);
    Pgfanout__V1__Event *e = pgfanout__v1__event__unpack(NULL, value_len, value);
    assert_non_null(e);
    assert_int_equal(e->op, PGFANOUT__V1__OP__OP_READ);
    assert_string_equal(e->source->table, "items");
    assert_int_equal(e->source->relation_oid, 16400);
    assert_int_equal(e->key->n_columns, 1);
    assert_int_equal(e->key->columns[0]->value->int_value, 42);
    assert_null(e->before);
    assert_int_equal(e->after->n_columns, 3);
    assert_string_equal(e->after->columns[1]->value->text, "caf\xc3\xa9");
    assert_int_equal(e->after->columns[2]->value->bytes_value.len, 2);
    assert_memory_equal(e->after->columns[2]->value->bytes_value.data, "\x00\xff", 2);
    pgfanout__v1__event__free_unpacked(e, NULL);
    char text[64];
    pgf_proto_key_text(k, key_len, 1, text, sizeof text);
    assert_string_equal(text, "id=42");
    pgf_proto_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_rules), cmocka_unit_test(test_float_roundtrip),
        cmocka_unit_test(test_special_kinds), cmocka_unit_test(test_typed_time),
        cmocka_unit_test(test_typed_other),   cmocka_unit_test(test_key_text),
        cmocka_unit_test(test_read_event), cmocka_unit_test(test_proto_wire),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
