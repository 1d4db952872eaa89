#!/usr/bin/env python3
"""Staleness with a lagging replica (issue 13, item 6): how many cached keys stay stale, and
how long stale values are visible, for three ways of filling a cache from a streaming standby
that replays 200 ms behind the primary, one after the other in one run:

  plain           GET; on a miss SELECT on the standby, then SET; pgfanout deletes the keys
  leases          contrib/redis's fill protocol (lease_get / lease_fill / lease_release.lua)
  leases+replica  the same, and pgfanout's second pass (redis.replicas = the standby's DSN;
                  --replica-mode names: redis.replica_names = its application_name)

The scenario (servers, readers, writers, quiescence, the end count) is
tests/harness/staleness.py, shared with tests/integration/test_staleness.py (its shortened
ctest).  Each mode runs --seconds (60) with --readers (6) reader threads, each doing
cache-aside reads from the standby, and --writers (2) writer threads updating rows of a
--rows (1,000) row table on the primary.  Then the writers stop, pgfanout finishes (slot
confirmed past a marker transaction, read-your-writes key past it when pgfanout sets one),
the standby replays, a margin passes, the readers stop, and every cached key is compared
with its row on the primary.

Figures per mode: stale keys at the end; stale hits (every value served from the cache is
checked against the writers' record of the row's last committed version) and how long each
had been stale (since the superseding version committed: p50, p99, max); reads/s, and its
ratio to plain in the same run; pgfanout's keys/s, peak RSS (VmHWM) and CPU; the standby's
own replay lag (sampled), and pgfanout's second-pass latency and replica lag from /metrics
when it publishes them.  A PNG chart of the three modes goes to --png.

  scripts/fetch-pyenv.sh                                          # build/venv
  build/venv/bin/python bench/bench_staleness.py                  # 3 x 60 s, ~4 min
  build/venv/bin/python bench/bench_staleness.py --seconds 10 --png /tmp/s.png

Needs psycopg and redis-py, and matplotlib for the chart: build/venv (scripts/fetch-pyenv.sh,
made from Debian's python3) has all three.  Not part of ctest.  Every process it starts is stopped
by its own handle.  Exit status: 0, 1 when a check failed, 3 with --strict when a goal was
missed (plain shows no stale key, leases+replica shows some, RSS above 32 MB).
"""
import argparse
import datetime
import os
import platform
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "harness"))
sys.path.insert(0, HERE)

import benchlib as bk  # noqa: E402
from benchlib import log  # noqa: E402
import staleness  # noqa: E402

TARGET_RSS_MB = 32.0


def fmt_ms(x):
    return "–" if x is None else f"{x:,.0f}"


def fmt_s_as_ms(x):
    return "–" if x is None else f"{x * 1000:,.0f}"


def table(results, args):
    base = results.get("plain")
    lines = ["| mode | stale keys at the end | stale hits | stale visible p50 / p99 / max ms | "
             "reads/s | ratio to plain | keys pgfanout deleted/s (each pass counts) | pgfanout peak RSS MB | pgfanout CPU s |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for mode in args.modes:
        r = results[mode]
        p50, p99, mx = r.visibility()
        ratio = f"{r.reads_per_s / base.reads_per_s:.2f}" if base and base.reads_per_s else "–"
        name = mode if (mode != "leases+replica" or r.replica_pass) else mode + " (no second pass in this build)"
        lines.append(
            f"| {name} | **{r.stale_keys}** of {r.cached_keys} | {r.stale_hit_pct:.1f} % of "
            f"{r.cache_reads:,} | {fmt_ms(p50)} / {fmt_ms(p99)} / {fmt_ms(mx)} | "
            f"{r.reads_per_s:,.0f} | {ratio} | {r.keys_per_s:,.0f} | {r.rss_mb:.1f} | "
            f"{r.pgfanout_cpu_s:.2f} |")
    return lines


def second_pass_lines(results):
    out = []
    for mode, r in results.items():
        lag = r.replay_lag
        own = (f"standby's own replay lag (now() − pg_last_xact_replay_timestamp(), sampled every "
               f"0.1 s while writes ran) p50 {fmt_s_as_ms(staleness.percentile(lag, 0.5))} ms, "
               f"p99 {fmt_s_as_ms(staleness.percentile(lag, 0.99))} ms")
        m = r.metrics
        if "second_pass_count" in m:
            sp = (f"pgfanout_redis_second_pass_seconds (commit → second pass answered): "
                  f"{m['second_pass_count']:,.0f} transactions, mean "
                  f"{fmt_s_as_ms(m['second_pass_mean_s'])} ms, p50 ≤ "
                  f"{fmt_s_as_ms(m['second_pass_p50_s'])} ms, p99 ≤ "
                  f"{fmt_s_as_ms(m['second_pass_p99_s'])} ms (histogram bucket bounds)")
            if m.get("second_pass_forced"):
                sp += f"; forced by replica_max_wait: {m['second_pass_forced']:.0f}"
        elif r.replica_pass:
            sp = "pgfanout published no pgfanout_redis_second_pass_seconds"
        else:
            sp = None
        if "replica_lag_samples" in m:
            s = m["replica_lag_samples"]
            sp = (sp + "; " if sp else "") + (
                f"pgfanout_replica_lag_seconds sampled: p50 {fmt_s_as_ms(staleness.percentile(s, 0.5))} ms,"
                f" max {fmt_s_as_ms(max(s))} ms")
        out.append(f"- {mode}: {own}" + (f"; {sp}" if sp else ""))
        out.append(f"  - readers' outcomes: {dict(sorted(r.counts.items()))}; {r.writes:,} writes; "
                   f"quiescence {r.quiesce_s:.1f} s; read-your-writes key seen: {r.ryw_seen}"
                   + (f"; stale e.g. (key, cached, row) {r.stale_examples[:3]}" if r.stale_keys else ""))
    return out


def chart(results, args, path, subtitle):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    modes = [m for m in args.modes]
    labels = [m if (m != "leases+replica" or results[m].replica_pass) else m + "\n(no 2nd pass)"
              for m in modes]
    colors = {"plain": "#c0392b", "leases": "#e67e22", "leases+replica": "#27ae60"}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    stale = [results[m].stale_keys for m in modes]
    cached = [results[m].cached_keys for m in modes]
    bars = ax1.bar(labels, stale, color=[colors[m] for m in modes])
    for b, s, c in zip(bars, stale, cached):
        ax1.annotate(f"{s} of {c}", (b.get_x() + b.get_width() / 2, b.get_height()),
                     ha="center", va="bottom", fontsize=9)
    ax1.set_title("stale keys after quiescence")
    ax1.set_ylabel("keys whose cached value ≠ primary's row")
    ax1.set_ylim(0, max(stale + [1]) * 1.18)
    width = 0.26
    for k, (name, shade) in enumerate((("p50", 0.45), ("p99", 0.7), ("max", 1.0))):
        xs, ys = [], []
        for j, m in enumerate(modes):
            v = results[m].visibility()[k]
            xs.append(j + (k - 1) * width)
            ys.append(v if v is not None else 0)
        ax2.bar(xs, ys, width, label=name, color=[colors[m] for m in modes], alpha=shade,
                edgecolor="black", linewidth=0.4)
        for x, y in zip(xs, ys):
            ax2.annotate(f"{y:,.0f}" if y else "none", (x, max(y, 1)), ha="center", va="bottom",
                         fontsize=7)
    ax2.set_xticks(range(len(modes)))
    ax2.set_xticklabels(labels)
    ax2.set_yscale("log")
    ax2.set_ylim(bottom=1)
    ax2.set_title("how long stale values were visible (p50 / p99 / max)")
    ax2.set_ylabel("ms since the newer row committed (log)")
    ax2.legend(title="left to right", fontsize=8)
    fig.suptitle(subtitle, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60, help="per mode (default 60)")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--readers", type=int, default=6)
    ap.add_argument("--writers", type=int, default=2)
    ap.add_argument("--lag-ms", type=int, default=200, help="the standby's recovery_min_apply_delay")
    ap.add_argument("--write-pause-ms", type=float, default=5.0,
                    help="mean pause between a writer's updates (default 5)")
    ap.add_argument("--read-pause-ms", type=float, default=1.0,
                    help="mean pause between a reader's reads (default 1)")
    ap.add_argument("--modes", default=",".join(staleness.MODES),
                    help="comma-separated, in order (default: plain,leases,leases+replica)")
    ap.add_argument("--replica-mode", choices=("dsn", "names"), default="dsn",
                    help="dsn: redis.replicas (poll the standby); names: redis.replica_names "
                         "(pg_stat_replication on the primary)")
    ap.add_argument("--second-pass-delay-ms", type=int, default=None,
                    help="redis.second_pass_delay_ms (default: pgfanout's own)")
    ap.add_argument("--png", default=os.path.join(REPO, "docs", "staleness.png"),
                    help="the chart (default docs/staleness.png); '' for none")
    ap.add_argument("--pgfanout-bin", default=os.path.join(REPO, "build", "pgfanout"))
    ap.add_argument("--wait-quiet", type=float, default=30,
                    help="before each mode, wait up to this many s for a quiet machine")
    ap.add_argument("--keep-logs", action="store_true")
    ap.add_argument("--strict", action="store_true")
    args = ap.parse_args()
    args.modes = [m for m in args.modes.split(",") if m]
    for m in args.modes:
        if m not in staleness.MODES:
            ap.error(f"unknown mode {m}")

    def start():
        sc = staleness.Scenario(args.pgfanout_bin, None, rows=args.rows, lag_ms=args.lag_ms,
                                log=log, replica_mode=args.replica_mode,
                                second_pass_delay_ms=args.second_pass_delay_ms)
        return sc.start()

    def body(workdir, sc):
        sc.workdir = workdir
        if not sc.supports_replicas:
            log("this pgfanout has no redis.replicas: leases+replica runs without a second pass")
        results = {}
        started = datetime.datetime.now()
        for mode in args.modes:
            bk.wait_for_quiet(args.wait_quiet)
            log(f"mode {mode}: {args.seconds:.0f} s, {args.readers} readers on the standby, "
                f"{args.writers} writers on the primary, {args.rows} rows")
            busy0 = bk.machine_busy_s()
            results[mode] = sc.run_mode(mode, args.seconds, readers=args.readers,
                                        writers=args.writers, write_pause_ms=args.write_pause_ms,
                                        read_pause_ms=args.read_pause_ms)
            results[mode].machine_busy = bk.machine_busy_s() - busy0
        git = bk.git_describe(REPO)
        kernel = platform.release()
        with sc.primary_conn() as c:
            pgver = c.execute("SHOW server_version").fetchone()[0]
        redis_ver = sc.redis.client().info("server")["redis_version"]
        head = (f"pgfanout staleness benchmark, {started:%Y-%m-%d %H:%M}, `bench/bench_staleness.py`"
                f"{'' if args.seconds == 60 else f' --seconds {args.seconds:g}'}")
        print("\n==== SUMMARY")
        print(head + "\n")
        print(f"- machine: {os.cpu_count()} CPUs, Linux {kernel}; PostgreSQL {pgver} primary and "
              f"`pg_basebackup -R` streaming standby with recovery_min_apply_delay {args.lag_ms} ms; "
              f"Redis {redis_ver}; pgfanout git {git}")
        print(f"- per mode: {args.seconds:g} s, {args.readers} reader threads (cache-aside, reads "
              f"from the standby), {args.writers} writer threads (updates on the primary), "
              f"{args.rows:,} rows; second pass: "
              + (f"redis.{'replicas' if args.replica_mode == 'dsn' else 'replica_names'}"
                 if sc.supports_replicas else "not in this build") + "\n")
        for line in table(results, args):
            print(line)
        print()
        print("stale keys: cached value ≠ the primary's row once writes stopped and pgfanout, "
              "the standby and a 0.5 s margin had caught up. stale hits: values served from the "
              "cache older than the row's last committed version; visible = time since the "
              "superseding version committed. ratio = reads/s ÷ plain's, same run. "
              "RSS = pgfanout's VmHWM.\n")
        for line in second_pass_lines(results):
            print(line)
        goals = []
        if "plain" in results:
            goals.append(("plain shows stale keys (the race is real here)",
                          results["plain"].stale_keys > 0))
        if "leases+replica" in results:
            goals.append(("leases+replica: 0 stale keys", results["leases+replica"].stale_keys == 0))
        rss = max(r.rss_mb for r in results.values())
        goals.append((f"pgfanout peak RSS ≤ {TARGET_RSS_MB:.0f} MB (max {rss:.1f})", rss <= TARGET_RSS_MB))
        print()
        for what, ok in goals:
            print(f"- {what}: {'ok' if ok else 'MISS'}")
        print("==== END SUMMARY\n")
        if args.png:
            chart(results, args, args.png,
                  f"{head.replace('`', '')} — {os.cpu_count()} CPUs, standby {args.lag_ms} ms behind, "
                  f"{args.seconds:g} s per mode, {args.readers} readers, {args.writers} writers, "
                  f"{args.rows:,} rows")
            log(f"chart written to {args.png}")
        return all(ok for _, ok in goals)

    return bk.bench_main(args, "pgfanout-bench-staleness-", [],
                         [("PostgreSQL primary, streaming standby and Redis", start,
                           lambda sc: sc.stop())], body)


if __name__ == "__main__":
    sys.exit(main())
