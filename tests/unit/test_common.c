/* test_common.c - the common room: LSN and time formats, and the latency histogram. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "common/histogram.h"
#include "common/lsn.h"

/* LSNs format and parse as PostgreSQL writes them; junk is refused. */
static void test_lsn(void **state)
{
    (void)state;
    char buf[PGF_LSN_BUFSZ];
    assert_string_equal(pgf_lsn_format(UINT64_C(0x16B3748), buf), "0/16B3748");
    assert_string_equal(pgf_lsn_format(UINT64_MAX, buf), "FFFFFFFF/FFFFFFFF");
    uint64_t lsn;
    assert_int_equal(pgf_lsn_parse("16/B374D848", &lsn), 0);
    assert_true(lsn == UINT64_C(0x16B374D848));
    assert_int_equal(pgf_lsn_parse("0/0", &lsn), 0);
    assert_true(lsn == 0);
    const char *bad[] = {"", "/", "1/", "/1", "1/2/3", "x/1", "1/2 ", "100000000/0", "12"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(pgf_lsn_parse(bad[i], &lsn), -1);
}

/* Commit times render as ISO-8601 UTC with microseconds, including before 2000 and 1970. */
static void test_time(void **state)
{
    (void)state;
    char buf[PGF_TS_BUFSZ];
    assert_string_equal(pgf_pgtime_format(0, buf), "2000-01-01T00:00:00.000000Z");
    assert_string_equal(pgf_pgtime_format(INT64_C(848895676123456), buf), "2026-11-25T04:21:16.123456Z");
    assert_string_equal(pgf_pgtime_format(-1, buf), "1999-12-31T23:59:59.999999Z");
    assert_string_equal(pgf_pgtime_format(-PGF_PG_EPOCH_OFFSET_US - 1, buf), "1969-12-31T23:59:59.999999Z");
}

/* The infinities a server can send as commit times (a replication origin's 'infinity') print
 * as PostgreSQL prints them, and shifting or subtracting any time never overflows (UBSan
 * aborted here, on INT64_MAX + the epoch shift). */
static void test_time_limits(void **state)
{
    (void)state;
    char buf[PGF_TS_BUFSZ];
    assert_string_equal(pgf_pgtime_format(PGF_PGTIME_INFINITY, buf), "infinity");
    assert_string_equal(pgf_pgtime_format(PGF_PGTIME_NEG_INFINITY, buf), "-infinity");
    /* Finite but past int64 once shifted: clamped, still a date, not "infinity". */
    pgf_pgtime_format(INT64_MAX - 1, buf);
    assert_true(buf[0] >= '0' && buf[0] <= '9');
    pgf_pgtime_format(INT64_MIN + 1, buf);
    assert_true(buf[0] == '-' || (buf[0] >= '0' && buf[0] <= '9') || strcmp(buf, "invalid") == 0);
    assert_true(pgf_pgtime_to_unix_us(INT64_MAX) == INT64_MAX);
    assert_true(pgf_pgtime_to_unix_us(INT64_MIN) == INT64_MIN);
    assert_true(pgf_pgtime_to_unix_us(INT64_MAX - 1) == INT64_MAX - 1);
    assert_true(pgf_pgtime_to_unix_us(0) == PGF_PG_EPOCH_OFFSET_US);
    assert_true(pgf_pgtime_to_unix_us(INT64_MIN + 1) == INT64_MIN + 1 + PGF_PG_EPOCH_OFFSET_US);
    int64_t age = 42;
    assert_int_equal(pgf_pgtime_age(1000, PGF_PGTIME_INFINITY, &age), -1);
    assert_int_equal(pgf_pgtime_age(1000, PGF_PGTIME_NEG_INFINITY, &age), -1);
    assert_int_equal(pgf_pgtime_age(INT64_MAX - 1, INT64_MIN + 1, &age), -1);
    assert_int_equal(pgf_pgtime_age(INT64_MIN + 1, INT64_MAX - 1, &age), -1);
    assert_true(age == 42);
    assert_int_equal(pgf_pgtime_age(1000, 400, &age), 0);
    assert_true(age == 600);
    assert_int_equal(pgf_pgtime_age(400, 1000, &age), 0); /* a clock behind: negative, kept */
    assert_true(age == -600);
}

/* Quantiles land within the histogram's resolution; count_le is cumulative. */
static void test_histogram(void **state)
{
    (void)state;
    static struct pgf_hist h;
    memset(&h, 0, sizeof h);
    for (int64_t v = 1; v <= 10000; v++)
        pgf_hist_record(&h, v * 10); /* 10 us .. 100 ms, uniform */
    uint64_t p50 = pgf_hist_quantile(&h, 0.5), p99 = pgf_hist_quantile(&h, 0.99);
    assert_true(p50 >= 50000 && p50 <= 50000 * 107 / 100);
    assert_true(p99 >= 99000 && p99 <= 100000);
    assert_int_equal(pgf_hist_quantile(&h, 1.0), 100000);
    assert_int_equal(h.total, 10000);
    uint64_t le = pgf_hist_count_le(&h, 1000); /* values 10..1000: 100 of them, bucket-rounded */
    assert_true(le >= 94 && le <= 100);
    pgf_hist_record(&h, -5);
    assert_int_equal(pgf_hist_count_le(&h, 0), 1);
}

/* The /metrics latency edges from 0.5 ms to 100 ms (cdc/metrics.c) are each resolved: a value
 * 6% under an edge counts at it, one just over does not, and one just over an edge already
 * counts at the next, so no two edges read the same histogram bucket. */
static void test_histogram_resolves_metrics_edges(void **state)
{
    (void)state;
    static const uint64_t edges[] = {500, 1000, 2000, 3000, 5000, 7500, 10000, 15000, 20000, 25000, 50000, 100000};
    static struct pgf_hist h;
    for (size_t i = 0; i < sizeof edges / sizeof *edges; i++) {
        memset(&h, 0, sizeof h);
        pgf_hist_record(&h, (int64_t)(edges[i] * 94 / 100));
        pgf_hist_record(&h, (int64_t)edges[i] + 1);
        assert_int_equal(pgf_hist_count_le(&h, edges[i]), 1);
        assert_int_equal(pgf_hist_count_le(&h, edges[i] * 2), 2);
        if (i + 1 < sizeof edges / sizeof *edges) {
            memset(&h, 0, sizeof h);
            pgf_hist_record(&h, (int64_t)edges[i] + 1);
            assert_int_equal(pgf_hist_count_le(&h, edges[i]), 0);
            assert_int_equal(pgf_hist_count_le(&h, edges[i + 1]), 1);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lsn),
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_time_limits),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_histogram_resolves_metrics_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
