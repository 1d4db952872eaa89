#!/usr/bin/python3
"""pgfanout → Kafka throughput benchmark, against pg_recvlogical as the baseline.

For each workload and repetition: load the workload into a throwaway PostgreSQL 15 cluster
behind two fresh pgoutput slots (same publication, FOR ALL TABLES), note pg_current_wal_lsn(),
then time, one after the other (the order alternates between repetitions):

  pg_recvlogical --start --endpos LSN -o proto_version=1 -o publication_names=P -f /dev/null
  pgfanout --sink kafka --endpos LSN --status-interval 1   (exits once Kafka acked everything)

Each child is reaped with os.wait4, which gives its own peak RSS and CPU time.  pgfanout must
exit 0, and the Kafka topics of the run must hold at least as many records as there were row
changes (sum of high watermarks); otherwise the benchmark stops with an error.

Workloads:
  a  inserts: --rows rows (default 1,000,000) in --txn-rows-row transactions (default 1,000)
     into a table with int8 pk, text, numeric, timestamptz and bool columns
  b  pgbench's TPC-B-like mix (pgbench -i -s --scale, then pgbench -n -c 4 -j 2 -t
     --pgbench-txns): per transaction 3 updates + 1 insert = 4 row changes

Run with Debian's python3 (psycopg 3 and confluent_kafka come from apt):

  /usr/bin/python3 bench/bench_kafka.py                    # full size, 2 repetitions
  /usr/bin/python3 bench/bench_kafka.py --rows 100000 --pgbench-txns 2500 --repeat 1
  /usr/bin/python3 bench/bench_kafka.py --pgfanout-args '--kafka-conf linger.ms=50'

Not part of ctest.  Every process it starts (PostgreSQL, the Kafka broker, pgbench,
pg_recvlogical, pgfanout) is stopped by its own handle.
"""
import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "harness"))

from kafkabroker import KafkaBroker  # noqa: E402
from pgcluster import PgCluster  # noqa: E402
from benchlib import (  # noqa: E402  (servers, measuring and reporting, shared with bench_redis)
    bench_main,
    BenchError,
    CLK_TCK,
    LAUNCHER,
    Measurement,
    PGBIN,
    PG_CONF,
    Sampler,
    connect,
    create_slots,
    drop_slots,
    git_describe,
    insert_rows,
    insert_table_ddl,
    kafka_record_count,
    kafka_versions,
    log,
    machine_busy_s,
    pg_args,
    proc_cpu_s,
    run_child,
    run_tool,
    scalar,
    tail,
    pause_before_run,
    walsender_pids,
)

DEFAULT_PGFANOUT = os.path.join(REPO, "build", "pgfanout")
PUBLICATION = "bench_pub"
TARGET_RATIO = 0.9
TARGET_RSS_MB = 64.0

INSERT_TABLE = "bench_insert"
INSERT_DDL = insert_table_ddl(INSERT_TABLE)
PGBENCH_TABLES = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]


class InsertWorkload:
    key = "a"
    title = "inserts, 1k-row txns"

    def __init__(self, args):
        self.rows = args.rows
        self.txn_rows = args.txn_rows
        self.title = f"inserts, {self.txn_rows:,}-row txns"

    def tables(self):
        return [INSERT_TABLE]

    def prepare(self, conn, cluster, args):
        """Before the slots: a fresh, empty table."""
        conn.execute(f"DROP TABLE IF EXISTS {INSERT_TABLE}")
        conn.execute(INSERT_DDL)

    def load(self, conn, cluster, args):
        """After the slots: the inserts, one transaction per statement; returns row changes."""
        return insert_rows(conn, INSERT_TABLE, self.rows, self.txn_rows)

    def finish(self, conn):
        conn.execute(f"DROP TABLE IF EXISTS {INSERT_TABLE}")


class PgbenchWorkload:
    key = "b"
    title = "pgbench TPC-B-like"

    def __init__(self, args):
        self.scale = args.scale
        self.txns = args.pgbench_txns
        self.clients = args.pgbench_clients

    def tables(self):
        return list(PGBENCH_TABLES)

    def prepare(self, conn, cluster, args):
        """Before the slots: pgbench -i (its initial load is not part of the measurement)."""
        run_tool([f"{PGBIN}/pgbench", "-i", "-q", "-s", str(self.scale), *pg_args(cluster),
                  "postgres"], "pgbench -i", timeout=1800)

    def load(self, conn, cluster, args):
        """After the slots: the TPC-B-like mix; returns row changes (4 per transaction: the
        accounts, tellers and branches updates and the history insert)."""
        out = run_tool([f"{PGBIN}/pgbench", "-n", "-c", str(self.clients), "-j", "2",
                        "-t", str(self.txns), *pg_args(cluster), "postgres"], "pgbench",
                       timeout=7200)
        tps = [ln for ln in out.splitlines() if ln.startswith("tps")]
        if tps:
            log(f"  pgbench: {tps[0]}")
        history = scalar(conn, "SELECT count(*) FROM pgbench_history")
        want = self.clients * self.txns
        if history != want:
            raise BenchError(f"pgbench left {history} history rows, wanted {want}:\n{out}")
        return 4 * history

    def finish(self, conn):
        for t in PGBENCH_TABLES:
            conn.execute(f"DROP TABLE IF EXISTS {t}")


# -- one repetition --------------------------------------------------------------------------

def run_repetition(wl, rep, args, cluster, broker, conn, workdir):
    """Fresh slots, the workload, then both consumers one after the other; returns
    {"pg_recvlogical": Measurement, "pgfanout": Measurement}."""
    s_fanout, s_recv = f"bench_{wl.key}{rep}_pgfanout", f"bench_{wl.key}{rep}_recvlogical"
    prefix = f"bench-{wl.key}-r{rep}-{os.getpid()}"
    topics = [f"{prefix}.public.{t}" for t in wl.tables()]

    log(f"workload {wl.key} rep {rep + 1}/{args.repeat}: preparing")
    wl.prepare(conn, cluster, args)
    create_slots(conn, s_fanout, s_recv)
    t0 = time.monotonic()
    rows = wl.load(conn, cluster, args)
    endpos = scalar(conn, "SELECT pg_current_wal_lsn()::text")
    wal_bytes = scalar(conn, "SELECT pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots"
                             " WHERE slot_name = %s", (s_fanout,))
    log(f"  loaded {rows:,} row changes in {time.monotonic() - t0:.1f} s; endpos {endpos}, "
        f"{int(wal_bytes) / 2**20:,.0f} MB of WAL to decode")
    if not args.no_precreate:
        broker.create_topics(*topics, partitions=args.partitions)

    dsn = cluster.dsn()
    recv_argv = [f"{PGBIN}/pg_recvlogical", "-d", dsn, "--slot", s_recv, "--start",
                 "--endpos", endpos, "-o", "proto_version=1",
                 "-o", f"publication_names={PUBLICATION}", "-f", "/dev/null"]
    fanout_argv = [args.pgfanout_bin, "--dsn", dsn, "--slot", s_fanout,
                   "--publication", PUBLICATION, "--sink", "kafka",
                   "--kafka-brokers", broker.bootstrap, "--endpos", endpos,
                   "--status-interval", "1", "--topic-prefix", prefix,
                   *shlex.split(args.pgfanout_args)]
    order = ["pg_recvlogical", "pgfanout"] if rep % 2 == 0 else ["pgfanout", "pg_recvlogical"]
    results = {}
    for name in order:
        pause_before_run(args)
        argv = recv_argv if name == "pg_recvlogical" else fanout_argv
        log_path = os.path.join(workdir, f"{wl.key}{rep}-{name}.log")
        m = run_child(name, argv, rows, log_path, args.timeout, cluster.proc.pid,
                      broker.pid if name == "pgfanout" else None)
        if m.exitcode != 0:
            raise BenchError(f"{name} exited with {m.exitcode} (wanted 0) after {m.wall:.1f} s\n"
                             f"argv: {shlex.join(argv)}\nits stderr (tail):\n{tail(log_path)}")
        if name == "pgfanout":
            got = kafka_record_count(broker.bootstrap, topics)
            if got < rows:
                raise BenchError(f"Kafka holds {got:,} records in {topics}, expected at least "
                                 f"{rows:,}: not every change was acknowledged\n"
                                 f"pgfanout stderr (tail):\n{tail(log_path)}")
            m.kafka_records = got
        results[name] = m
        log("  " + m.line() + (f", Kafka records {m.kafka_records:,}"
                               if name == "pgfanout" else ""))
    # pgfanout confirms exactly what Kafka acked: its slot must now be at or past endpos.
    if not scalar(conn, "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots"
                        " WHERE slot_name = %s", (endpos, s_fanout)):
        raise BenchError(f"slot {s_fanout} confirmed less than endpos {endpos} after a clean exit")
    drop_slots(conn, s_fanout, s_recv)
    wl.finish(conn)
    conn.execute("CHECKPOINT")
    return results


# -- report ----------------------------------------------------------------------------------

def median(values):
    return statistics.median(values)


def summarize(wl, reps):
    """Median figures over the repetitions of one workload."""
    r = [x["pg_recvlogical"] for x in reps]
    f = [x["pgfanout"] for x in reps]
    s = {
        "workload": f"({wl.key}) {wl.title}",
        "rows": reps[0]["pgfanout"].rows,
        "recv_wall": median([m.wall for m in r]),
        "recv_rate": median([m.rate for m in r]),
        "recv_rss": median([m.rss_mb for m in r]),
        "recv_cpu": median([m.cpu for m in r]),
        "fan_wall": median([m.wall for m in f]),
        "fan_rate": median([m.rate for m in f]),
        "fan_rss": median([m.rss_mb for m in f]),
        "fan_rss_max": max(m.rss_mb for m in f),
        "fan_cpu": median([m.cpu for m in f]),
        "fan_ws_cpu": median([m.walsender_cpu for m in f]),
        "recv_ws_cpu": median([m.walsender_cpu for m in r]),
        "broker_cpu": median([m.broker_cpu or 0.0 for m in f]),
        "others": median([m.others_cpu or 0.0 for m in r + f]),
        "ratio": median([fm.rate / rm.rate for fm, rm in zip(f, r)]),
        "n": len(reps),
    }
    return s


def mark(ok):
    return "ok" if ok else "MISS"


def print_summary(summaries, args, versions):
    """Prints the summary as a Markdown block (fixed layout, for pasting into docs); returns
    True when every target is met."""
    n = args.repeat
    out = [
        f"pgfanout → Kafka benchmark, {versions['date']}, median of {n} run(s) per figure "
        f"(`bench/bench_kafka.py`)",
        "",
        f"- machine: {versions['cpus']} CPUs, {versions['kernel']}; PostgreSQL "
        f"{versions['pg']}; Kafka {versions['kafka']} (1 local broker, "
        f"{args.partitions} partitions/topic); librdkafka {versions['rdkafka']}",
        f"- pgfanout {versions['pgfanout']}, extra args: "
        f"{('`' + args.pgfanout_args + '`') if args.pgfanout_args else '(none)'}",
        "",
        "| workload | row changes | pg_recvlogical s | pg_recvlogical rows/s | pgfanout s "
        "| pgfanout rows/s | ratio (≥ 0.90) | pgfanout peak RSS MB (≤ 64) | pgfanout CPU s "
        "| pg_recvlogical peak RSS MB |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    met = True
    for s in summaries:
        ratio_ok = s["ratio"] >= TARGET_RATIO
        rss_ok = s["fan_rss_max"] <= TARGET_RSS_MB
        met = met and ratio_ok and rss_ok
        out.append(
            f"| {s['workload']} | {s['rows']:,} | {s['recv_wall']:.2f} | {s['recv_rate']:,.0f} "
            f"| {s['fan_wall']:.2f} | {s['fan_rate']:,.0f} | {s['ratio']:.3f} {mark(ratio_ok)} "
            f"| {s['fan_rss']:.1f} (max {s['fan_rss_max']:.1f}) {mark(rss_ok)} "
            f"| {s['fan_cpu']:.2f} | {s['recv_rss']:.1f} |")
    out += [
        "",
        "ratio = pgfanout rows/s ÷ pg_recvlogical rows/s (median of the per-run ratios). "
        "Wall time runs from spawn to exit (pgfanout exits once Kafka acknowledged every record). "
        "RSS = ru_maxrss; the RSS target is checked against the max over the runs. "
        "CPU = user+sys of the process, all threads. PostgreSQL, the broker and the consumer "
        "share the machine.",
        "",
    ]
    for s in summaries:
        out.append(
            f"- ({s['workload'][1]}) walsender CPU ~{s['recv_ws_cpu']:.1f} s under pg_recvlogical, "
            f"~{s['fan_ws_cpu']:.1f} s under pgfanout; broker CPU during pgfanout "
            f"{s['broker_cpu']:.1f} s; pg_recvlogical CPU {s['recv_cpu']:.2f} s; other load "
            f"~{s['others']:.1f} CPU-s per run")
    print("\n==== SUMMARY (Markdown, paste into docs) ====", flush=True)
    print("\n".join(out), flush=True)
    print("==== END SUMMARY ====", flush=True)
    return met


def versions_of(conn, args):
    kafka, rdkafka = kafka_versions()
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "kernel": f"Linux {platform.release()}",
        "pg": scalar(conn, "SHOW server_version"),
        "kafka": kafka,
        "rdkafka": rdkafka,
        "pgfanout": f"git {git_describe(REPO)}",
    }


# -- main ------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=2,
                   help="repetitions per workload, each with a fresh load and fresh slots; "
                        "the report gives medians (default 2)")
    p.add_argument("--workloads", default="a,b", help="which workloads: a, b or a,b (default)")
    p.add_argument("--rows", type=int, default=1_000_000,
                   help="workload a: rows inserted (default 1,000,000)")
    p.add_argument("--txn-rows", type=int, default=1000,
                   help="workload a: rows per transaction (default 1,000)")
    p.add_argument("--scale", type=int, default=4,
                   help="workload b: pgbench -i scale factor (default 4: 4 branches, 400k "
                        "accounts)")
    p.add_argument("--pgbench-txns", type=int, default=15000,
                   help="workload b: pgbench -t, transactions per client (default 15,000: "
                        "4 clients x 15,000 x 4 = 240,000 row changes)")
    p.add_argument("--pgbench-clients", type=int, default=4, help="workload b: pgbench -c")
    p.add_argument("--pgfanout-args", default="",
                   help="extra pgfanout flags, shell-quoted, after the benchmark's own, e.g. "
                        "\"--kafka-conf linger.ms=50 --kafka-conf compression.codec=none\"; a "
                        "single flag needs the = form: --pgfanout-args=--no-tombstones")
    p.add_argument("--pgfanout-bin", default=os.environ.get("PGFANOUT_BIN", DEFAULT_PGFANOUT))
    p.add_argument("--partitions", type=int, default=3,
                   help="partitions of each pre-created topic (default 3)")
    p.add_argument("--no-precreate", action="store_true",
                   help="let the broker auto-create topics on first produce instead")
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds to idle before each timed run (default 2)")
    p.add_argument("--wait-quiet", type=float, default=60,
                   help="before each timed run, wait up to this many seconds for the machine "
                        "to be under half a CPU busy (0: do not wait; default 60)")
    p.add_argument("--timeout", type=float, default=1800,
                   help="seconds before a consumer is killed and the benchmark fails")
    p.add_argument("--strict", action="store_true",
                   help="exit 3 when a target (ratio, RSS) is missed")
    p.add_argument("--keep-logs", action="store_true",
                   help="keep the consumers' stderr logs (their directory is printed)")
    args = p.parse_args(argv)
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if not args.workloads or any(w not in ("a", "b") for w in args.workloads):
        p.error("--workloads takes a, b or a,b")
    if args.repeat < 1 or args.rows < 1 or args.txn_rows < 1 or args.pgbench_txns < 1:
        p.error("--repeat, --rows, --txn-rows and --pgbench-txns must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)

    def body(workdir, cluster, broker):
        conn = connect(cluster.dsn())
        conn.execute(f"CREATE PUBLICATION {PUBLICATION} FOR ALL TABLES")
        versions = versions_of(conn, args)
        log(f"PostgreSQL {versions['pg']} on port {cluster.port}, Kafka {versions['kafka']} at "
            f"{broker.bootstrap}; pgfanout {args.pgfanout_bin} {args.pgfanout_args}")
        workloads = {"a": InsertWorkload, "b": PgbenchWorkload}
        summaries = []
        for key in args.workloads:
            wl = workloads[key](args)
            reps = [run_repetition(wl, rep, args, cluster, broker, conn, workdir)
                    for rep in range(args.repeat)]
            summaries.append(summarize(wl, reps))
        conn.close()
        return print_summary(summaries, args, versions)

    return bench_main(args, "pgfanout-bench-", [f"{PGBIN}/pg_recvlogical", f"{PGBIN}/pgbench"],
                      [("PostgreSQL", lambda: PgCluster(extra_conf=PG_CONF).start(), lambda c: c.stop()),
                       ("the Kafka broker", lambda: KafkaBroker(num_partitions=args.partitions).start(),
                        lambda b: b.cleanup())], body)


if __name__ == "__main__":
    sys.exit(main())
