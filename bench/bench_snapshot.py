#!/usr/bin/python3
"""pgfanout snapshot → Kafka benchmark: reading a table against streaming the same rows.

One table, bench_snap (int8 pk, text, numeric, timestamptz, bool: bench_kafka's workload a),
is filled with --rows rows (default 1,000,000) in --txn-rows-row transactions (default 1,000)
behind fresh pgoutput slots, then VACUUM ANALYZEd.  For each repetition it times, one after the
other (stream and snapshot alternate in order between repetitions):

  psql -c "COPY bench_snap TO STDOUT" > /dev/null           PostgreSQL's own pace, for scale
  pgfanout --sink kafka --snapshot never --endpos LSN         the inserts streamed (as bench_kafka)
  pgfanout --sink kafka --create-slot --snapshot initial_only the table read (exits 0 at the end)

The goal: the snapshot is at least as fast as streaming the same rows (ratio >= 1.0), i.e.
reading is never what limits an initial load.  Then, unless --skip-large, a second table of
--rows-large rows (default 5,000,000) is COPYed and snapshotted once for pgfanout's peak RSS
(goal: at most 48 MB).

Each child is reaped with os.wait4 through benchlib's launcher (its own peak RSS and CPU).
pgfanout must exit 0; each run's Kafka topic must hold at least one record per row (sum of high
watermarks); a snapshot must say it read exactly the table's rows; the streaming slot must have
confirmed the end LSN.  Otherwise the benchmark stops with an error (exit 1).

Run with Debian's python3 (psycopg 3 and confluent_kafka come from apt):

  /usr/bin/python3 bench/bench_snapshot.py                  # full size (~5 min)
  /usr/bin/python3 bench/bench_snapshot.py --rows 100000 --skip-large --repeat 1
  /usr/bin/python3 bench/bench_snapshot.py --snapshot-args '--snapshot-chunk-size 50000'
  /usr/bin/python3 bench/bench_snapshot.py \
      --pgfanout-env GLIBC_TUNABLES=glibc.malloc.trim_threshold=268435456

Not part of ctest.  Every process it starts (PostgreSQL, the Kafka broker, psql, pgfanout) is
stopped by its own handle.
"""
import argparse
import datetime
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "harness"))

from kafkabroker import KafkaBroker  # noqa: E402
from pgcluster import PgCluster  # noqa: E402
from benchlib import (  # noqa: E402  (launcher, quiet-wait, samplers, SQL and Kafka helpers)
    bench_main,
    BenchError,
    PGBIN,
    PG_CONF,
    connect,
    create_slots,
    drop_slots,
    git_describe,
    insert_rows,
    insert_table_ddl,
    kafka_record_count,
    kafka_versions,
    log,
    pg_args,
    run_child,
    scalar,
    tail,
    wait_for_quiet,
)

DEFAULT_PGFANOUT = os.path.join(REPO, "build", "pgfanout")
TABLE, PUBLICATION = "bench_snap", "bench_snap_pub"
LARGE, PUBLICATION_LARGE = "bench_snap_large", "bench_snap_large_pub"
TARGET_RATIO = 1.0
TARGET_RSS_MB = 48.0
NOISY_CPUS = 0.3  # a timed run with more other load than this (CPUs on average) is flagged
DONE_RE = re.compile(r"snapshot of (\S+) done: (\d+) rows in (\d+) chunks, ([\d.]+) s")


class Bench:
    """The servers, the connection and the options one run shares."""

    def __init__(self, args, cluster, broker, conn, workdir):
        self.args = args
        self.cluster = cluster
        self.broker = broker
        self.conn = conn
        self.workdir = workdir
        self.tag = os.getpid()

    def timed(self, name, argv, rows, log_name, kafka=False, env=None):
        """Runs argv under the launcher after a settle pause and a quiet-machine wait; it must
        exit 0.  Returns its Measurement (client backends' CPU sampled too)."""
        a = self.args
        if a.settle > 0:
            time.sleep(a.settle)
        if a.wait_quiet > 0:
            wait_for_quiet(a.wait_quiet)
        log_path = os.path.join(self.workdir, log_name + ".log")
        m = run_child(name, argv, rows, log_path, a.timeout, self.cluster.proc.pid,
                      self.broker.pid if kafka else None, backends=True, env=env)
        if m.exitcode != 0:
            raise BenchError(f"{name} exited with {m.exitcode} (wanted 0) after {m.wall:.1f} s\n"
                             f"argv: {shlex.join(argv)}\nits stderr (tail):\n{tail(log_path)}")
        return m

    def fanout_argv(self, slot, publication, prefix, *extra):
        return [self.args.pgfanout_bin, "--dsn", self.cluster.dsn(), "--slot", slot,
                "--publication", publication, "--sink", "kafka",
                "--kafka-brokers", self.broker.bootstrap, "--topic-prefix", prefix,
                "--state-topic", f"{prefix}.state", "--status-interval", "1", *extra,
                *shlex.split(self.args.pgfanout_args)]

    def check_records(self, m, topic, rows):
        got = kafka_record_count(self.broker.bootstrap, [topic])
        if got < rows:
            raise BenchError(f"Kafka topic {topic} holds {got:,} records, expected at least "
                             f"{rows:,}: not every row was acknowledged\n"
                             f"{m.name} stderr (tail):\n{tail(m.log_path)}")
        m.kafka_records = got

    def copy(self, table, rows, label):
        """psql COPY table TO STDOUT into /dev/null (the launcher's stdout)."""
        argv = [f"{PGBIN}/psql", "-X", "-q", *pg_args(self.cluster), "-d", "postgres",
                "-c", f"COPY {table} TO STDOUT"]
        m = self.timed("COPY", argv, rows, f"copy-{label}")
        log("  " + m.line() + f", {m.minflt:,} minor faults")
        return m

    def stream(self, slot, endpos, rows, label):
        """pgfanout streaming the slot's backlog up to endpos into Kafka."""
        prefix = f"bench-stream-{label}-{self.tag}"
        topic = f"{prefix}.public.{TABLE}"
        self.broker.create_topics(topic, partitions=self.args.partitions)
        argv = self.fanout_argv(slot, PUBLICATION, prefix, "--snapshot", "never",
                                "--endpos", endpos)
        m = self.timed("pgfanout stream", argv, rows, f"stream-{label}", kafka=True,
                       env=self.args.pgfanout_env)
        self.check_records(m, topic, rows)
        if not scalar(self.conn, "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM "
                                 "pg_replication_slots WHERE slot_name = %s", (endpos, slot)):
            raise BenchError(f"slot {slot} confirmed less than endpos {endpos} after a clean exit")
        drop_slots(self.conn, slot)
        log("  " + m.line() + f", {m.minflt:,} minor faults, Kafka records {m.kafka_records:,}")
        return m

    def snapshot(self, table, publication, rows, label):
        """pgfanout --create-slot --snapshot initial_only of the publication (one table)."""
        slot = f"bench_snap_{label}_{self.tag}"
        prefix = f"bench-snap-{label}-{self.tag}"
        topic = f"{prefix}.public.{table}"
        self.broker.create_topics(topic, partitions=self.args.partitions)
        argv = self.fanout_argv(slot, publication, prefix, "--create-slot",
                                "--snapshot", "initial_only",
                                *shlex.split(self.args.snapshot_args))
        m = self.timed("pgfanout snapshot", argv, rows, f"snapshot-{label}", kafka=True,
                       env=self.args.pgfanout_env)
        self.check_records(m, topic, rows)
        with open(m.log_path, errors="replace") as f:
            done = [d for d in DONE_RE.findall(f.read()) if d[0] == f"public.{table}"]
        if not done or int(done[-1][1]) != rows:
            raise BenchError(f"the snapshot of {table} did not say it read {rows:,} rows "
                             f"({done[-1][1] if done else 'no done line'})\n"
                             f"its stderr (tail):\n{tail(m.log_path)}")
        m.chunks, m.snap_secs = int(done[-1][2]), float(done[-1][3])
        drop_slots(self.conn, slot)
        log("  " + m.line() + f", {m.minflt:,} minor faults, Kafka records {m.kafka_records:,}; "
            f"snapshot phase {m.snap_secs:.2f} s, {m.chunks} chunks")
        return m


# -- report ----------------------------------------------------------------------------------

def med(ms, attr):
    return statistics.median(getattr(m, attr) for m in ms)


def mark(ok):
    return "ok" if ok else "MISS"


def chunk_size(args):
    """The snapshot runs' chunk size, as the binary under test reads their arguments (its
    --check-config prints every effective setting; nothing is connected to)."""
    words = shlex.split(args.pgfanout_args) + shlex.split(args.snapshot_args)
    r = subprocess.run([args.pgfanout_bin, "--check-config", "--dsn", "host=127.0.0.1", "--slot", "x",
                        "--publication", "x", *words], capture_output=True, text=True, timeout=60)
    m = re.search(r"^snapshot_chunk_size: (\d+)", r.stdout + r.stderr, re.M)
    if m is None:
        sys.exit(f"bench_snapshot: {args.pgfanout_bin} --check-config printed no snapshot_chunk_size:\n"
                 f"{r.stdout}{r.stderr}")
    return int(m.group(1))


def row(rows, what, ms, walsender=True, broker=True):
    """One line of the summary table: medians over the runs ms."""
    rss = f"{med(ms, 'rss_mb'):.1f}"
    if len(ms) > 1:
        rss += f" (max {max(m.rss_mb for m in ms):.1f})"
    ws = f"{med(ms, 'walsender_cpu'):.1f}" if walsender else "–"
    bk = f"{statistics.median(m.broker_cpu or 0.0 for m in ms):.1f}" if broker else "–"
    return (f"| {rows:,} | {what} | {med(ms, 'wall'):.2f} | {med(ms, 'rate'):,.0f} "
            f"| {med(ms, 'cpu'):.2f} ({med(ms, 'sys'):.2f}) | {med(ms, 'minflt') / 1000:,.0f}k "
            f"| {rss} | {ws} | {med(ms, 'backend_cpu'):.1f} | {bk} |")


def print_summary(res, args, versions):
    """Prints the summary as a Markdown block (fixed layout, for pasting into docs); returns
    True when every goal is met."""
    copies, streams, snaps = res["copy"], res["stream"], res["snapshot"]
    large = res.get("large")
    ratios = [sn.rate / st.rate for sn, st in zip(snaps, streams)]
    ratio = statistics.median(ratios)
    rss_runs = snaps + ([large["snapshot"]] if large else [])
    rss_max = max(m.rss_mb for m in rss_runs)
    ratio_ok, rss_ok = ratio >= TARGET_RATIO, rss_max <= TARGET_RSS_MB
    noise = ", ".join(f"{sn.others_cpu or 0:.1f} / {st.others_cpu or 0:.1f}"
                      for sn, st in zip(snaps, streams))
    extra = " ".join([f"{k}={v}" for k, v in args.pgfanout_env.items()]
                     + [x for x in (args.pgfanout_args, args.snapshot_args) if x])
    out = [
        f"pgfanout snapshot → Kafka benchmark, {versions['date']}, median of {args.repeat} "
        f"run(s) per {args.rows:,}-row figure (`bench/bench_snapshot.py`)",
        "",
        f"- machine: {versions['cpus']} CPUs, {versions['kernel']}; PostgreSQL {versions['pg']}; "
        f"Kafka {versions['kafka']} (1 local broker, {args.partitions} partitions/topic); "
        f"librdkafka {versions['rdkafka']}",
        f"- pgfanout {versions['pgfanout']}; snapshot chunk size {chunk_size(args):,}; "
        f"extra args and environment: {('`' + extra + '`') if extra else '(none)'}",
        "",
        "| table rows | what | s | rows/s | CPU s (sys) | minor faults | peak RSS MB "
        "| walsender CPU s | backends CPU s | broker CPU s |",
        "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        row(args.rows, "`COPY TO STDOUT` (psql → /dev/null)", copies, walsender=False,
            broker=False),
        row(args.rows, f"pgfanout streaming the inserts ({args.txn_rows:,}-row txns, "
                       "`--snapshot never --endpos`)", streams),
        row(args.rows, "pgfanout snapshot (`--create-slot --snapshot initial_only`)", snaps),
    ]
    if large:
        out += [row(args.rows_large, "`COPY TO STDOUT` (psql → /dev/null)", [large["copy"]],
                    walsender=False, broker=False),
                row(args.rows_large, "pgfanout snapshot (`--create-slot --snapshot "
                                     "initial_only`)", [large["snapshot"]])]
    out += [
        "",
        f"- **snapshot ÷ stream = {ratio:.2f}** (goal ≥ {TARGET_RATIO:.1f}: {mark(ratio_ok)}; "
        f"per run {', '.join(f'{r:.2f}' for r in ratios)}; other load during the snapshot / "
        f"stream runs {noise} CPU-s); snapshot ÷ COPY = "
        f"{statistics.median(sn.rate / c.rate for sn, c in zip(snaps, copies)):.3f}",
        f"- **pgfanout peak RSS, snapshot: {med(snaps, 'rss_mb'):.1f} MB at {args.rows:,} rows"
        + (f", {large['snapshot'].rss_mb:.1f} MB at {args.rows_large:,} rows" if large else
           " (the large table was skipped)")
        + f"** (goal ≤ {TARGET_RSS_MB:.0f} MB over every snapshot run, max {rss_max:.1f}: "
        f"{mark(rss_ok)}); streaming: {med(streams, 'rss_mb'):.1f} MB",
    ]
    for what, ms, n in [(f"{args.rows:,}", snaps, args.rows)] + (
            [(f"{args.rows_large:,}", [large["snapshot"]], args.rows_large)] if large else []):
        secs = statistics.median(m.snap_secs for m in ms)
        chunks = ms[0].chunks
        out.append(f"- snapshot of {what} rows by pgfanout's own account (its `done` line): "
                   f"{secs:.2f} s, {n / secs:,.0f} rows/s, {chunks} chunks, "
                   f"{1000 * secs / chunks:.1f} ms a chunk; the rest of the wall time "
                   f"({med(ms, 'wall') - secs:.2f} s) is start-up (slot, Kafka, state) and exit")
    timed = copies + streams + snaps + ([large["copy"], large["snapshot"]] if large else [])
    others = [m.others_cpu or 0.0 for m in timed]
    # pgfanout's runs only: a COPY is too short for the 0.2 s backend sampling to be exact
    fanout = streams + snaps + ([large["snapshot"]] if large else [])
    noisy = sum((m.others_cpu or 0.0) > NOISY_CPUS * m.wall for m in fanout)
    out += [
        f"- other load (machine busy minus the measured process, walsenders, backends and "
        f"broker) ~{statistics.median(others):.1f} CPU-s per run (median)"
        + (f"; **{noisy} of {len(fanout)} pgfanout runs had more than {NOISY_CPUS} CPUs of it "
           f"on average**: someone else used the machine, so their times are unreliable (rerun at "
           f"a quieter moment)" if noisy else ""),
        "",
        "Wall time runs from spawn to exit (pgfanout exits once Kafka acknowledged every record "
        "and, for the snapshot, once its progress is saved). rows/s = table rows ÷ wall time. "
        "ratio = snapshot rows/s ÷ stream rows/s, median of the per-run ratios. RSS = "
        "ru_maxrss; CPU = user+sys, all threads; minor faults = ru_minflt (pages touched "
        "anew). Backends = the client backends (the snapshot's or COPY's reading connection), "
        "sampled every 0.2 s.",
    ]
    print("\n==== SUMMARY (Markdown, paste into docs) ====", flush=True)
    print("\n".join(out), flush=True)
    print("==== END SUMMARY ====", flush=True)
    return ratio_ok and rss_ok


def versions_of(conn):
    kafka, rdkafka = kafka_versions()
    return {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
            "kernel": f"Linux {platform.release()}", "pg": scalar(conn, "SHOW server_version"),
            "kafka": kafka, "rdkafka": rdkafka, "pgfanout": f"git {git_describe(REPO)}"}


# -- main ------------------------------------------------------------------------------------

def make_table(conn, table, rows, txn_rows):
    """A fresh table of rows rows, loaded by txn_rows-row transactions, then VACUUM ANALYZEd
    (hint bits set, visibility map and statistics up to date, as on a table in service), so
    no reader pays for the load's aftermath.  Returns the load's seconds."""
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute(insert_table_ddl(table))
    t0 = time.monotonic()
    insert_rows(conn, table, rows, txn_rows)
    secs = time.monotonic() - t0
    conn.execute(f"VACUUM ANALYZE {table}")
    return secs


def run(args, cluster, broker, conn, workdir):
    b = Bench(args, cluster, broker, conn, workdir)
    res = {"copy": [], "stream": [], "snapshot": []}
    if not args.skip_large:
        # Loaded first, before any slot exists: its WAL is nobody's backlog.
        log(f"loading {LARGE}: {args.rows_large:,} rows")
        secs = make_table(conn, LARGE, args.rows_large, 500_000)
        size = scalar(conn, f"SELECT pg_total_relation_size('{LARGE}')")
        log(f"  loaded in {secs:.1f} s; {size / 2**20:,.0f} MB with its index")
        conn.execute(f"CREATE PUBLICATION {PUBLICATION_LARGE} FOR TABLE {LARGE}")
    conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    conn.execute(insert_table_ddl(TABLE))
    conn.execute(f"CREATE PUBLICATION {PUBLICATION} FOR TABLE {TABLE}")
    stream_slots = [f"bench_stream_r{r}_{b.tag}" for r in range(args.repeat)]
    create_slots(conn, *stream_slots)
    log(f"loading {TABLE}: {args.rows:,} rows in {args.txn_rows:,}-row transactions, "
        f"behind {len(stream_slots)} streaming slot(s)")
    t0 = time.monotonic()
    insert_rows(conn, TABLE, args.rows, args.txn_rows)
    endpos = scalar(conn, "SELECT pg_current_wal_lsn()::text")
    wal = scalar(conn, "SELECT pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots"
                       " WHERE slot_name = %s", (stream_slots[0],))
    conn.execute(f"VACUUM ANALYZE {TABLE}")
    conn.execute("CHECKPOINT")
    size = scalar(conn, f"SELECT pg_total_relation_size('{TABLE}')")
    log(f"  loaded in {time.monotonic() - t0:.1f} s; endpos {endpos}, {int(wal) / 2**20:,.0f} MB "
        f"of WAL to stream; the table is {size / 2**20:,.0f} MB with its index")
    for r in range(args.repeat):
        log(f"repetition {r + 1}/{args.repeat}")
        res["copy"].append(b.copy(TABLE, args.rows, f"r{r}"))
        for what in (["stream", "snapshot"] if r % 2 == 0 else ["snapshot", "stream"]):
            if what == "stream":
                res["stream"].append(b.stream(stream_slots[r], endpos, args.rows, f"r{r}"))
            else:
                res["snapshot"].append(b.snapshot(TABLE, PUBLICATION, args.rows, f"r{r}"))
        conn.execute("CHECKPOINT")
    if not args.skip_large:
        log(f"the large table: {args.rows_large:,} rows")
        res["large"] = {"copy": b.copy(LARGE, args.rows_large, "large"),
                        "snapshot": b.snapshot(LARGE, PUBLICATION_LARGE, args.rows_large,
                                               "large")}
    return res


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000,
                   help="rows of the table snapshotted and streamed (default 1,000,000)")
    p.add_argument("--txn-rows", type=int, default=1000,
                   help="rows per insert transaction, i.e. what streaming gets (default 1,000)")
    p.add_argument("--rows-large", type=int, default=5_000_000,
                   help="rows of the table snapshotted for peak RSS (default 5,000,000)")
    p.add_argument("--skip-large", action="store_true",
                   help="leave out the large table (quick looks; the RSS goal is then checked "
                        "on the --rows snapshots only)")
    p.add_argument("--repeat", type=int, default=2,
                   help="repetitions of COPY, stream and snapshot on the --rows table; the "
                        "report gives medians (default 2); the large table runs once")
    p.add_argument("--pgfanout-args", default="",
                   help="extra pgfanout flags for both the stream and the snapshot runs, "
                        "shell-quoted, e.g. \"--kafka-conf linger.ms=50\"; a single flag needs "
                        "the = form: --pgfanout-args=--no-tombstones")
    p.add_argument("--snapshot-args", default="",
                   help="extra pgfanout flags for the snapshot runs only, e.g. "
                        "\"--snapshot-chunk-size 50000\"")
    p.add_argument("--pgfanout-env", action="append", default=[], metavar="VAR=VALUE",
                   help="an environment variable for the stream and snapshot runs (repeatable), "
                        "e.g. GLIBC_TUNABLES=glibc.malloc.trim_threshold=268435456")
    p.add_argument("--pgfanout-bin", default=os.environ.get("PGFANOUT_BIN", DEFAULT_PGFANOUT))
    p.add_argument("--partitions", type=int, default=3,
                   help="partitions of each pre-created topic (default 3)")
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds to idle before each timed run (default 2)")
    p.add_argument("--wait-quiet", type=float, default=60,
                   help="before each timed run, wait up to this many seconds for the machine "
                        "to be under half a CPU busy (0: do not wait; default 60)")
    p.add_argument("--timeout", type=float, default=1800,
                   help="seconds before a timed process is killed and the benchmark fails")
    p.add_argument("--strict", action="store_true",
                   help="exit 3 when a goal (ratio >= 1.0, peak RSS <= 48 MB) is missed")
    p.add_argument("--keep-logs", action="store_true",
                   help="keep the timed processes' stderr logs (their directory is printed)")
    args = p.parse_args(argv)
    if args.repeat < 1 or args.rows < 1 or args.txn_rows < 1 or args.rows_large < 1:
        p.error("--repeat, --rows, --txn-rows and --rows-large must be positive")
    env = {}
    for kv in args.pgfanout_env:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            p.error(f"--pgfanout-env takes VAR=VALUE, not {kv!r}")
        env[k] = v
    args.pgfanout_env = env
    chunk_size(args)  # a setting pgfanout refuses stops the bench here, with pgfanout's message
    return args


def main(argv=None):
    args = parse_args(argv)

    def body(workdir, cluster, broker):
        conn = connect(cluster.dsn())
        versions = versions_of(conn)
        log(f"PostgreSQL {versions['pg']} on port {cluster.port}, Kafka {versions['kafka']} at "
            f"{broker.bootstrap}; pgfanout {args.pgfanout_bin} {args.pgfanout_args} "
            f"{args.snapshot_args}")
        res = run(args, cluster, broker, conn, workdir)
        conn.close()
        return print_summary(res, args, versions)

    return bench_main(args, "pgfanout-bench-snap-", [f"{PGBIN}/psql"],
                      [("PostgreSQL", lambda: PgCluster(extra_conf=PG_CONF).start(), lambda c: c.stop()),
                       ("the Kafka broker", lambda: KafkaBroker(num_partitions=args.partitions).start(),
                        lambda b: b.cleanup())], body)


if __name__ == "__main__":
    sys.exit(main())
