/* test_redis_cmdbuf.c - the Redis sink's per-transaction command buffer: deduplication, DEL and
 * UNLINK batches of at most 256 keys, spilling to a temporary file past the threshold with a
 * replay identical to the in-memory one, rewinding for a resend, and reset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sinks/redis_cmdbuf.h"

/* Large enough that nothing spills. */
#define NO_SPILL ((size_t)1 << 40)

/* Every command of a buffer as text, one "ARGC arg arg ..." line each; the caller frees it. */
struct script {
    char *text;
    size_t len, cap;
    int ncmds;
};

/* Appends len bytes to the script. */
static void put(struct script *s, const char *p, size_t len)
{
    if (s->len + len + 1 > s->cap) {
        s->cap = (s->len + len + 1) * 2;
        s->text = realloc(s->text, s->cap);
        assert_non_null(s->text);
    }
    memcpy(s->text + s->len, p, len);
    s->len += len;
    s->text[s->len] = '\0';
}

/* Reads every command left in b (commit LSN 42) into a fresh script. */
static struct script drain(struct redis_cmdbuf *b)
{
    struct script s = {0};
    struct redis_cmd cmd;
    char err[256];
    int rc;
    put(&s, "", 0);
    while ((rc = redis_cmdbuf_next(b, 42, &cmd, err, sizeof err)) == 1) {
        char n[16];
        snprintf(n, sizeof n, "%d", cmd.argc);
        put(&s, n, strlen(n));
        for (int i = 0; i < cmd.argc; i++) {
            put(&s, " ", 1);
            put(&s, cmd.argv[i], cmd.argl[i]);
        }
        put(&s, "\n", 1);
        s.ncmds++;
    }
    if (rc != 0)
        fail_msg("redis_cmdbuf_next: %s", err);
    assert_false(redis_cmdbuf_unsent(b));
    return s;
}

/* Adds a key, asserting success. */
static void add(struct redis_cmdbuf *b, enum redis_cmd_kind kind, const char *key)
{
    assert_int_equal(redis_cmdbuf_add_key(b, kind, key, strlen(key)), 0);
}

/* The same kind and key is stored once; another kind of the same key, and every PUBLISH, is not
 * a duplicate.  Consecutive DELs become one command. */
static void test_dedup(void **state)
{
    (void)state;
    struct redis_cmdbuf *b = redis_cmdbuf_new(NO_SPILL);
    assert_non_null(b);
    assert_int_equal(redis_cmdbuf_size(b), 0);
    add(b, REDIS_CMD_DEL, "a");
    add(b, REDIS_CMD_DEL, "b");
    add(b, REDIS_CMD_DEL, "a");
    add(b, REDIS_CMD_UNLINK, "a");
    add(b, REDIS_CMD_GEN_LSN, "g");
    add(b, REDIS_CMD_GEN_LSN, "g");
    add(b, REDIS_CMD_GEN_INCR, "g");
    add(b, REDIS_CMD_DEL, "b");
    for (int i = 0; i < 2; i++)
        assert_int_equal(redis_cmdbuf_add_publish(b, "ch", 2, "{\"k\":1}", 7), 0);
    assert_int_equal(redis_cmdbuf_add_key(b, REDIS_CMD_PUBLISH, "x", 1), -1); /* PUBLISH needs a payload */
    char err[256];
    assert_int_equal(redis_cmdbuf_end_change(b, err, sizeof err), 0);
    redis_cmdbuf_seal(b);
    struct script s = drain(b);
    assert_string_equal(s.text, "3 DEL a b\n"
                                "2 UNLINK a\n"
                                "3 SET g 42\n"
                                "2 INCR g\n"
                                "3 PUBLISH ch {\"k\":1}\n"
                                "3 PUBLISH ch {\"k\":1}\n");
    free(s.text);
    redis_cmdbuf_free(b);
}

/* A run of keys of one kind goes out 256 to a DEL; a change of kind ends the run early. */
static void test_batches_of_256(void **state)
{
    (void)state;
    struct redis_cmdbuf *b = redis_cmdbuf_new(NO_SPILL);
    char key[32];
    for (int i = 0; i < 600; i++) {
        snprintf(key, sizeof key, "k%d", i);
        add(b, REDIS_CMD_DEL, key);
    }
    add(b, REDIS_CMD_UNLINK, "u1");
    add(b, REDIS_CMD_UNLINK, "u2");
    add(b, REDIS_CMD_DEL, "k0"); /* a duplicate: dropped, so it does not split the UNLINKs */
    add(b, REDIS_CMD_DEL, "last");
    redis_cmdbuf_seal(b);
    struct redis_cmd cmd;
    char err[256];
    size_t want[] = {256, 256, 88};
    for (int c = 0; c < 3; c++) {
        assert_int_equal(redis_cmdbuf_next(b, 42, &cmd, err, sizeof err), 1);
        assert_int_equal(cmd.argc, (int)want[c] + 1);
        assert_int_equal(cmd.nkeys, want[c]);
        assert_memory_equal(cmd.argv[0], "DEL", 3);
        assert_int_equal(cmd.argl[0], 3);
        snprintf(key, sizeof key, "k%d", c * 256);
        assert_int_equal(cmd.argl[1], strlen(key));
        assert_memory_equal(cmd.argv[1], key, strlen(key));
        snprintf(key, sizeof key, "k%zu", c * 256 + want[c] - 1);
        assert_int_equal(cmd.argl[want[c]], strlen(key));
        assert_memory_equal(cmd.argv[want[c]], key, strlen(key));
    }
    struct script s = drain(b);
    assert_string_equal(s.text, "3 UNLINK u1 u2\n2 DEL last\n");
    free(s.text);
    redis_cmdbuf_free(b);
}

/* Feeds change i of a transaction that mixes every kind: runs of DELs that continue across
 * changes (so batches straddle the spill file and memory), in-change duplicates, and a
 * PUBLISH whose payload is larger than the spill read window in change 7. */
static void feed_change(struct redis_cmdbuf *b, int i, const char *big, size_t biglen)
{
    char key[64];
    for (int j = 0; j < 97; j++) {
        snprintf(key, sizeof key, "user:%d:%d", i, j);
        add(b, i % 5 == 4 ? REDIS_CMD_UNLINK : REDIS_CMD_DEL, key);
        add(b, i % 5 == 4 ? REDIS_CMD_UNLINK : REDIS_CMD_DEL, key);
    }
    if (i % 3 == 0) {
        snprintf(key, sizeof key, "gen:%d", i);
        add(b, REDIS_CMD_GEN_LSN, key);
        add(b, REDIS_CMD_GEN_INCR, key);
    }
    if (i % 4 == 1) {
        snprintf(key, sizeof key, "{\"change\":%d}", i);
        assert_int_equal(redis_cmdbuf_add_publish(b, "inval", 5, key, strlen(key)), 0);
    }
    if (i == 7)
        assert_int_equal(redis_cmdbuf_add_publish(b, "big", 3, big, biglen), 0);
}

/* Past the threshold the commands move to the temporary file; reading them back gives the
 * very commands the in-memory buffer gives, and so does a second pass after a rewind. */
static void test_spill_replays_identically(void **state)
{
    (void)state;
    size_t biglen = 700u << 10;
    char *big = malloc(biglen);
    assert_non_null(big);
    for (size_t i = 0; i < biglen; i++)
        big[i] = (char)('a' + i % 26);
    size_t threshold = 4u << 10;
    struct redis_cmdbuf *mem = redis_cmdbuf_new(NO_SPILL), *disk = redis_cmdbuf_new(threshold);
    char err[256];
    int spills = 0;
    for (int i = 0; i < 40; i++) {
        feed_change(mem, i, big, biglen);
        feed_change(disk, i, big, biglen);
        assert_int_equal(redis_cmdbuf_end_change(mem, err, sizeof err), 0);
        size_t before = redis_cmdbuf_memory(disk);
        assert_int_equal(redis_cmdbuf_end_change(disk, err, sizeof err), 0);
        if (before > threshold) {
            assert_int_equal(redis_cmdbuf_memory(disk), 0);
            spills++;
        } else {
            assert_int_equal(redis_cmdbuf_memory(disk), before); /* at or under: stays in memory */
        }
        assert_true(redis_cmdbuf_size(disk) == redis_cmdbuf_size(mem));
    }
    assert_true(spills >= 10);
    assert_int_equal(redis_cmdbuf_memory(mem), redis_cmdbuf_size(mem));
    assert_true(redis_cmdbuf_memory(disk) < redis_cmdbuf_size(disk));
    redis_cmdbuf_seal(mem);
    redis_cmdbuf_seal(disk);
    struct script want = drain(mem), got = drain(disk);
    assert_true(want.ncmds > 40);
    assert_int_equal(got.ncmds, want.ncmds);
    assert_int_equal(got.len, want.len);
    assert_true(memcmp(got.text, want.text, want.len) == 0);
    const char *pub = strstr(got.text, "3 PUBLISH big ");
    assert_non_null(pub);
    assert_true(memcmp(pub + 14, big, biglen) == 0 && pub[14 + biglen] == '\n');
    /* A resend after a lost connection: part of the way through, then from the start. */
    redis_cmdbuf_rewind(disk);
    struct redis_cmd cmd;
    for (int c = 0; c < 5; c++)
        assert_int_equal(redis_cmdbuf_next(disk, 42, &cmd, err, sizeof err), 1);
    redis_cmdbuf_rewind(disk);
    struct script again = drain(disk);
    assert_int_equal(again.len, want.len);
    assert_true(memcmp(again.text, want.text, want.len) == 0);
    free(want.text);
    free(got.text);
    free(again.text);
    free(big);
    redis_cmdbuf_free(mem);
    redis_cmdbuf_free(disk);
}

/* Reset empties a buffer, spilled or not: nothing to send, and every key is new again. */
static void test_reset(void **state)
{
    (void)state;
    struct redis_cmdbuf *b = redis_cmdbuf_new(64);
    char err[256], key[32];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof key, "key:%d", i);
        add(b, REDIS_CMD_DEL, key);
    }
    assert_int_equal(redis_cmdbuf_end_change(b, err, sizeof err), 0);
    add(b, REDIS_CMD_DEL, "tail");
    assert_true(redis_cmdbuf_size(b) > redis_cmdbuf_memory(b)); /* spilled, and more in memory */
    assert_true(redis_cmdbuf_unsent(b));
    redis_cmdbuf_seal(b);
    redis_cmdbuf_reset(b);
    assert_int_equal(redis_cmdbuf_size(b), 0);
    assert_int_equal(redis_cmdbuf_memory(b), 0);
    assert_false(redis_cmdbuf_unsent(b));
    struct redis_cmd cmd;
    assert_int_equal(redis_cmdbuf_next(b, 42, &cmd, err, sizeof err), 0);
    /* Usable again: "tail" was there before the reset and is not a duplicate now. */
    add(b, REDIS_CMD_DEL, "tail");
    add(b, REDIS_CMD_DEL, "tail");
    struct script s = drain(b);
    assert_string_equal(s.text, "2 DEL tail\n");
    free(s.text);
    redis_cmdbuf_free(b);
    redis_cmdbuf_free(NULL);
}

/* Adds a key with its lease ("<key>:lease"), asserting success. */
static void add_leased(struct redis_cmdbuf *b, enum redis_cmd_kind kind, const char *key)
{
    char lease[64];
    int n = snprintf(lease, sizeof lease, "%s:lease", key);
    assert_int_equal(redis_cmdbuf_add_key_lease(b, kind, key, strlen(key), lease, (size_t)n), 0);
}

/* A key's lease follows it in the same command, is counted as a lease, is never split from it
 * at the 256-key limit, and survives a spill; a key without a lease (length 0) goes alone. */
static void test_leases_go_with_their_keys(void **state)
{
    (void)state;
    for (int spill = 0; spill < 2; spill++) {
        struct redis_cmdbuf *b = redis_cmdbuf_new(spill ? 64 : NO_SPILL);
        char key[32], err[256];
        add_leased(b, REDIS_CMD_DEL, "a");
        add_leased(b, REDIS_CMD_DEL, "a"); /* a duplicate: dropped with its lease */
        assert_int_equal(redis_cmdbuf_add_key_lease(b, REDIS_CMD_DEL, "b}", 2, "", 0), 0);
        assert_int_equal(redis_cmdbuf_end_change(b, err, sizeof err), 0);
        add_leased(b, REDIS_CMD_UNLINK, "u");
        assert_int_equal(redis_cmdbuf_add_key_lease(b, REDIS_CMD_GEN_LSN, "g", 1, "g:lease", 7), -1);
        assert_int_equal(redis_cmdbuf_end_change(b, err, sizeof err), 0);
        redis_cmdbuf_seal(b);
        struct script s = drain(b);
        assert_string_equal(s.text, "4 DEL a a:lease b}\n"
                                    "3 UNLINK u u:lease\n");
        free(s.text);
        redis_cmdbuf_free(b);

        /* 200 leased keys: 128 pairs fill the first DEL exactly, then 72 pairs. */
        b = redis_cmdbuf_new(spill ? 1024 : NO_SPILL);
        assert_int_equal(redis_cmdbuf_add_key_lease(b, REDIS_CMD_DEL, "odd", 3, "", 0), 0);
        for (int i = 0; i < 200; i++) {
            snprintf(key, sizeof key, "k%d", i);
            add_leased(b, REDIS_CMD_DEL, key);
            assert_int_equal(redis_cmdbuf_end_change(b, err, sizeof err), 0);
        }
        redis_cmdbuf_seal(b);
        struct redis_cmd cmd;
        /* One lone key first, so a pair would straddle the limit at 255 + 2: it moves whole. */
        size_t want[][2] = {{255, 127}, {146, 73}};
        for (int c = 0; c < 2; c++) {
            assert_int_equal(redis_cmdbuf_next(b, 42, &cmd, err, sizeof err), 1);
            assert_int_equal(cmd.nkeys, want[c][0]);
            assert_int_equal(cmd.nleases, want[c][1]);
            assert_int_equal(cmd.argc, (int)want[c][0] + 1);
            for (int i = c == 0 ? 2 : 1; i + 1 < cmd.argc; i += 2) { /* each key, then its lease */
                assert_int_equal(cmd.argl[i + 1], cmd.argl[i] + 6);
                assert_memory_equal(cmd.argv[i + 1], cmd.argv[i], cmd.argl[i]);
                assert_memory_equal(cmd.argv[i + 1] + cmd.argl[i], ":lease", 6);
            }
        }
        assert_int_equal(redis_cmdbuf_next(b, 42, &cmd, err, sizeof err), 0);
        redis_cmdbuf_free(b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dedup),
        cmocka_unit_test(test_batches_of_256),
        cmocka_unit_test(test_spill_replays_identically),
        cmocka_unit_test(test_reset),
        cmocka_unit_test(test_leases_go_with_their_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
