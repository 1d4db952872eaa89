"""Race (b), the lagging replica (issue 13, item 6), shortened from bench/bench_staleness.py:
a real streaming standby 200 ms behind (`recovery_min_apply_delay`), readers that fill the
cache from it, writers on the primary, pgfanout deleting the keys; the scenario is
tests/harness/staleness.py, shared with the bench.

- plain cache-aside with pgfanout as today must leave stale keys once everything is quiet:
  the race is real here, so the last check can fail;
- with the lease protocol AND pgfanout's second pass, no key may be stale: with the standby
  listed by DSN (`redis.replicas`), and by application_name (`redis.replica_names`).

The `leases` mode alone is not asserted on (it cannot close race (b), and is in the bench).
PGFANOUT_STALENESS_SECONDS sets the seconds per mode (default 10)."""
import os

import pytest

import staleness

SECONDS = float(os.environ.get("PGFANOUT_STALENESS_SECONDS", "10"))
# Fewer threads than the bench, and fewer rows so that each key is read often: a reader then
# misses soon after pgfanout's delete, while the standby still has the old row.
SIZE = dict(readers=3, writers=1)
ROWS = 200
VISIBLE_P99_MS = 2500


@pytest.fixture(scope="module")
def scenario(pgfanout, tmp_path_factory):
    sc = staleness.Scenario(pgfanout, str(tmp_path_factory.mktemp("staleness")), rows=ROWS,
                            log=print)
    sc.start()
    yield sc
    sc.stop()


def test_plain_cache_aside_leaves_stale_keys(scenario):
    r = scenario.run_mode("plain", SECONDS, **SIZE)
    assert r.writes > 100 and r.reads > 1000, r.summary()
    lag = staleness.percentile(r.replay_lag, 0.5)
    assert lag is not None and lag > 0.15, f"the standby is not lagging: replay lag p50 {lag} s"
    assert r.stale_keys > 0, "the race did not show: the other test proves nothing\n" + r.summary()


@pytest.mark.parametrize("replica_mode", ["dsn", "names"])
def test_leases_and_second_pass_leave_no_stale_key(scenario, replica_mode):
    """dsn: redis.replicas (pgfanout polls the standby); names: redis.replica_names (its
    application_name in pg_stat_replication on the primary)."""
    scenario.replica_mode = replica_mode
    r = scenario.run_mode("leases+replica", SECONDS, **SIZE)
    missing = "" if scenario.supports_replicas else " (this pgfanout has no redis.replicas: no second pass)"
    assert r.writes > 100 and r.reads > 1000, r.summary()
    assert r.counts.get("filled", 0) > 100, r.summary()
    assert r.stale_keys == 0, (f"stale keys{missing}, e.g. (key, cached, row) {r.stale_examples}\n"
                              f"{r.summary()}\npgfanout's log: {r.log_path}")
    # While it ran, a stale value lasted until the second pass: the standby's 200 ms, the
    # 100 ms delay and a poll, ~0.35 s here.  A second pass that falls behind the stream (as
    # when only the oldest held transaction was stamped: p99 4.2 s in 10 s, and growing) fails.
    p99 = r.visibility()[1]
    assert p99 is not None and p99 < VISIBLE_P99_MS, \
        f"stale values visible for {p99} ms (p99): the second pass lags\n{r.summary()}"
