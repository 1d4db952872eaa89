/* test_checkpoint.c - the confirmed position: the lowest ack of all sinks, the keepalive
 * position only when idle, never backwards. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "cdc/checkpoint.h"
#include "sinks/sink.h"

/* The confirmed position is the lowest ack; the keepalive position counts only when idle. */
static void test_checkpoint(void **state)
{
    (void)state;
    struct sink a = {0}, b = {0};
    struct sink *sinks[] = {&a, &b};
    struct pgf_checkpoint cp = {0};
    pgf_checkpoint_written(&cp, 100);
    a.acked_lsn = 100;
    assert_true(pgf_checkpoint_update(&cp, sinks, 2) == 0);
    pgf_checkpoint_idle(&cp, 150);
    assert_true(pgf_checkpoint_update(&cp, sinks, 2) == 0); /* b still owes 100 */
    b.acked_lsn = 100;
    assert_true(pgf_checkpoint_update(&cp, sinks, 2) == 150);
    pgf_checkpoint_written(&cp, 200);
    a.acked_lsn = 200;
    assert_true(pgf_checkpoint_update(&cp, sinks, 2) == 150); /* never backwards, never past b */
    b.acked_lsn = 200;
    assert_true(pgf_checkpoint_update(&cp, sinks, 2) == 200);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checkpoint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
