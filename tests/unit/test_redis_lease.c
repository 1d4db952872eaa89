/* test_redis_lease.c - lease key names: the suffix layout (and that with the Django preset it
 * is Django's make_key(key + suffix)), the cluster layout's three cases, and, for a spread of
 * keys, that a lease lands in its key's Redis Cluster hash slot (CRC16 computed here as the
 * Cluster spec defines it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sinks/redis_lease.h"

/* CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, as in the Redis Cluster spec. */
static uint16_t crc16(const char *p, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

/* The hash slot of a key: CRC16 of its hash tag, or of the whole key, mod 16384. */
static unsigned slot(const char *key, size_t len)
{
    size_t off, tl;
    if (pgf_redis_hash_tag(key, len, &off, &tl))
        return crc16(key + off, tl) & 16383;
    return crc16(key, len) & 16383;
}

/* Returns the lease of key as a fresh string, or "" for none; asserts the size bound. */
static char *lease(enum pgf_lease_layout layout, const char *suffix, const char *key)
{
    static char out[512];
    size_t cap = pgf_redis_lease_key_max(strlen(suffix), strlen(key));
    assert_true(cap <= sizeof out - 1);
    long n = pgf_redis_lease_key(layout, suffix, strlen(suffix), key, strlen(key), out, cap);
    assert_true(n >= 0);
    out[n] = '\0';
    return out;
}

/* The spec's own examples of hash tags, and what is not one. */
static void test_hash_tag(void **state)
{
    (void)state;
    size_t off = 0, len = 0;
    assert_true(pgf_redis_hash_tag("{user1000}.following", 21, &off, &len));
    assert_int_equal(off, 1);
    assert_int_equal(len, 8);
    assert_true(pgf_redis_hash_tag("foo{{bar}}zap", 13, &off, &len)); /* tag "{bar" */
    assert_int_equal(off, 4);
    assert_int_equal(len, 4);
    assert_true(pgf_redis_hash_tag("foo{bar}{zap}", 13, &off, &len)); /* the first one only */
    assert_int_equal(len, 3);
    assert_false(pgf_redis_hash_tag("foo{}{bar}", 10, NULL, NULL)); /* empty: the whole key hashes */
    assert_false(pgf_redis_hash_tag("a{b", 3, NULL, NULL));
    assert_false(pgf_redis_hash_tag("x}y{", 4, NULL, NULL));
    assert_false(pgf_redis_hash_tag("plain", 5, NULL, NULL));
    /* The Redis Cluster spec's reference value: CRC16("123456789") = 0x31C3. */
    assert_int_equal(crc16("123456789", 9), 0x31C3);
}

/* suffix: always key + suffix, whatever the braces; with the Django preset's prefix already in
 * the key, that is make_key(key + suffix) = KEY_PREFIX:VERSION:key + suffix. */
static void test_suffix_layout(void **state)
{
    (void)state;
    assert_string_equal(lease(PGF_LEASE_SUFFIX, ":lease", "user:5"), "user:5:lease");
    assert_string_equal(lease(PGF_LEASE_SUFFIX, ":lease", "a}b"), "a}b:lease");
    assert_string_equal(lease(PGF_LEASE_SUFFIX, "#L", "{user:5}:profile"), "{user:5}:profile#L");
    /* Django: make_key("user:5") = ":1:user:5" (empty KEY_PREFIX, VERSION 1); pgfanout deletes
     * that, and make_key("user:5" + ":lease") = ":1:user:5:lease" is its lease. */
    assert_string_equal(lease(PGF_LEASE_SUFFIX, ":lease", ":1:user:5"), ":1:user:5:lease");
    assert_string_equal(lease(PGF_LEASE_SUFFIX, ":lease", "app:2:user:5"), "app:2:user:5:lease");
}

/* cluster: a tagged key keeps its tag; an untagged key without '}' is wrapped; a key with a '}'
 * but no valid tag gets no lease (0). */
static void test_cluster_layout(void **state)
{
    (void)state;
    assert_string_equal(lease(PGF_LEASE_CLUSTER, ":lease", ":1:{user:5}:profile"), ":1:{user:5}:profile:lease");
    assert_string_equal(lease(PGF_LEASE_CLUSTER, ":lease", "user:5"), "{user:5}:lease");
    assert_string_equal(lease(PGF_LEASE_CLUSTER, ":lease", "a{b"), "{a{b}:lease");
    assert_string_equal(lease(PGF_LEASE_CLUSTER, ":lease", "foo{}bar"), ""); /* has '}', no valid tag */
    assert_string_equal(lease(PGF_LEASE_CLUSTER, ":lease", "a{}b}"), "");
    assert_string_equal(lease(PGF_LEASE_CLUSTER, ":lease", "x}y"), "");
    assert_string_equal(lease(PGF_LEASE_CLUSTER, ":lease", ""), "");
    /* A suffix with braces of its own cannot move the tag: the first '}' after the first '{'
     * is already in the key, or in the wrapper. */
    assert_string_equal(lease(PGF_LEASE_CLUSTER, "{x}", "k"), "{k}{x}");
}

/* Too small an output buffer is an error, not a truncated name. */
static void test_small_buffer(void **state)
{
    (void)state;
    char out[8];
    assert_int_equal(pgf_redis_lease_key(PGF_LEASE_SUFFIX, ":lease", 6, "user:5", 6, out, sizeof out), -1);
    assert_int_equal(pgf_redis_lease_key(PGF_LEASE_CLUSTER, ":l", 2, "abcde", 5, out, 8), -1);
    assert_int_equal(pgf_redis_lease_key(PGF_LEASE_CLUSTER, ":l", 2, "abcd", 4, out, 8), 8);
    assert_memory_equal(out, "{abcd}:l", 8);
}

/* For many keys made of letters, ':', '{' and '}', the cluster layout's lease (when there is
 * one) hashes to its key's slot, and the suffix layout's does whenever the key has a tag. */
static void test_same_slot(void **state)
{
    (void)state;
    static const char alphabet[] = "ab:{}";
    char key[16], out[64];
    unsigned long checked = 0, none = 0;
    srand(13);
    for (int n = 0; n < 200000; n++) {
        size_t len = 1 + (size_t)rand() % 10;
        for (size_t i = 0; i < len; i++)
            key[i] = alphabet[rand() % 5];
        long l = pgf_redis_lease_key(PGF_LEASE_CLUSTER, ":lease", 6, key, len, out, sizeof out);
        assert_true(l >= 0);
        if (l == 0) {
            /* No lease only when no name could work: a '}' and no valid tag. */
            assert_false(pgf_redis_hash_tag(key, len, NULL, NULL));
            assert_non_null(memchr(key, '}', len));
            none++;
            continue;
        }
        if (slot(key, len) != slot(out, (size_t)l))
            fail_msg("'%.*s' slot %u, its lease '%.*s' slot %u", (int)len, key, slot(key, len), (int)l, out,
                     slot(out, (size_t)l));
        if (pgf_redis_hash_tag(key, len, NULL, NULL)) {
            l = pgf_redis_lease_key(PGF_LEASE_SUFFIX, ":lease", 6, key, len, out, sizeof out);
            assert_int_equal(slot(key, len), slot(out, (size_t)l));
        }
        checked++;
    }
    assert_true(checked > 10000 && none > 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_tag),
        cmocka_unit_test(test_suffix_layout),
        cmocka_unit_test(test_cluster_layout),
        cmocka_unit_test(test_small_buffer),
        cmocka_unit_test(test_same_slot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
