#!/usr/bin/python3
"""Scale-out: two pgfanout workers on disjoint publications and slots against one worker
draining the same WAL through one publication.

Two tables, scale_a and scale_b (benchlib's insert-workload table), three publications:
pub_both (both tables), pub_a, pub_b.  Each repetition (--repeat, default 2):

1. empty tables, then three fresh pgoutput slots: one for the single worker, one for each of
   the pair;
2. --rows (default 1,000,000) inserts in total, --txn-rows-row (1,000) transactions
   alternating between the two tables (half each), then note pg_current_wal_lsn() as endpos;
3. time, one after the other (order alternating between repetitions), each to --endpos:
   - one:  pgfanout --publication pub_both --slot ..._one --topic-prefix P1
   - two:  pgfanout --publication pub_a ... --topic-prefix P2a and pgfanout --publication
           pub_b ... --topic-prefix P2b started together; their time is the later exit;
4. check: every worker exits 0, its topics hold at least one record per row it owns, its
   slot confirmed endpos.

Aggregate rows/s = all rows ÷ wall time (for the pair: until the second one exits).  Each
slot has its own walsender, and each walsender decodes the whole WAL (pgoutput filters after
decoding), so the pair costs the primary about twice the decoding of one.

  /usr/bin/python3 bench/scaleout.py                        # full size, 2 repetitions
  /usr/bin/python3 bench/scaleout.py --rows 100000 --repeat 1   # quick look

Not part of ctest.  Every process it starts is stopped by its own handle.
"""
import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "harness"))

from kafkabroker import KafkaBroker  # noqa: E402
from pgcluster import PgCluster  # noqa: E402
from benchlib import (  # noqa: E402
    BenchError,
    PG_CONF,
    bench_main,
    connect,
    create_slots,
    drop_slots,
    git_describe,
    insert_rows_sql,
    insert_table_ddl,
    kafka_record_count,
    kafka_versions,
    log,
    machine_busy_s,
    run_child,
    scalar,
    tail,
    pause_before_run,
)

DEFAULT_PGFANOUT = os.path.join(REPO, "build", "pgfanout")
TABLES = ["scale_a", "scale_b"]


def load(conn, rows, txn_rows):
    """rows inserts in all, txn_rows per transaction, alternating between the tables so both
    workers' changes are spread over the whole WAL (as two busy tables would be); returns the
    rows per table."""
    per = {TABLES[0]: rows - rows // 2, TABLES[1]: rows // 2}
    sqls = {t: insert_rows_sql(t) for t in TABLES}
    nxt = {t: 1 for t in TABLES}
    with conn.cursor() as cur:
        while any(nxt[t] <= per[t] for t in TABLES):
            for t in TABLES:
                if nxt[t] <= per[t]:
                    last = min(nxt[t] + txn_rows - 1, per[t])
                    cur.execute(sqls[t], (nxt[t], last))
                    nxt[t] = last + 1
    for t in TABLES:
        n = scalar(conn, f"SELECT count(*) FROM {t}")
        if n != per[t]:
            raise BenchError(f"loaded {n} rows into {t}, wanted {per[t]}")
    return per


class Worker:
    """One pgfanout of a run: its slot, publication, topics and rows."""

    def __init__(self, name, slot, publication, prefix, tables, rows):
        self.name, self.slot, self.publication, self.prefix = name, slot, publication, prefix
        self.topics = [f"{prefix}.public.{t}" for t in tables]
        self.rows = rows

    def argv(self, args, cluster, broker, endpos):
        return [args.pgfanout_bin, "--dsn", cluster.dsn(), "--slot", self.slot,
                "--publication", self.publication, "--sink", "kafka",
                "--kafka-brokers", broker.bootstrap, "--endpos", endpos,
                "--status-interval", "1", "--topic-prefix", self.prefix,
                *shlex.split(args.pgfanout_args)]


def run_workers(workers, args, cluster, broker, conn, workdir, endpos, tag):
    """Starts the workers together (one thread each, benchlib.run_child), waits for all;
    returns their Measurements after the checks."""
    results, errors = {}, []

    def one(w):
        try:
            results[w.name] = run_child(w.name, w.argv(args, cluster, broker, endpos), w.rows,
                                        os.path.join(workdir, f"{tag}-{w.name}.log"),
                                        args.timeout, cluster.proc.pid, broker.pid)
        except BaseException as e:
            errors.append(e)

    busy0 = machine_busy_s()
    threads = [threading.Thread(target=one, args=(w,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    busy = machine_busy_s() - busy0
    if errors:
        raise errors[0]
    for w in workers:
        m = results[w.name]
        log_path = os.path.join(workdir, f"{tag}-{w.name}.log")
        if m.exitcode != 0:
            raise BenchError(f"{w.name} exited with {m.exitcode} after {m.wall:.1f} s\n"
                             f"its stderr (tail):\n{tail(log_path)}")
        got = kafka_record_count(broker.bootstrap, w.topics)
        if got < w.rows:
            raise BenchError(f"Kafka holds {got:,} records in {w.topics}, expected at least "
                             f"{w.rows:,}\n{w.name} stderr (tail):\n{tail(log_path)}")
        m.kafka_records = got
        if not scalar(conn, "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots"
                            " WHERE slot_name = %s", (endpos, w.slot)):
            raise BenchError(f"slot {w.slot} confirmed less than endpos {endpos}")
    ms = [results[w.name] for w in workers]
    # Every sampler saw every walsender of the cluster (both of the pair's): the highest total
    # is the one that sampled longest.
    walsender = max(m.walsender_cpu for m in ms)
    broker_cpu = max(m.broker_cpu or 0.0 for m in ms)
    others = max(0.0, busy - sum(m.cpu for m in ms) - walsender - broker_cpu)
    return ms, walsender, broker_cpu, others


def run_repetition(rep, args, cluster, broker, conn, workdir):
    tag = f"r{rep}"
    pid = os.getpid()
    one = [Worker("one", f"scale_one_{rep}", "pub_both", f"scale-one-{tag}-{pid}", TABLES,
                  args.rows)]
    two = [Worker("two_a", f"scale_two_a_{rep}", "pub_a", f"scale-two-a-{tag}-{pid}",
                  [TABLES[0]], 0),
           Worker("two_b", f"scale_two_b_{rep}", "pub_b", f"scale-two-b-{tag}-{pid}",
                  [TABLES[1]], 0)]
    log(f"rep {rep + 1}/{args.repeat}: preparing")
    for t in TABLES:
        conn.execute(f"TRUNCATE {t}")
    conn.execute("CHECKPOINT")
    create_slots(conn, *(w.slot for w in one + two))
    t0 = time.monotonic()
    per = load(conn, args.rows, args.txn_rows)
    two[0].rows, two[1].rows = per[TABLES[0]], per[TABLES[1]]
    endpos = scalar(conn, "SELECT pg_current_wal_lsn()::text")
    wal = scalar(conn, "SELECT pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots"
                       " WHERE slot_name = %s", (one[0].slot,))
    log(f"  loaded {args.rows:,} rows in {time.monotonic() - t0:.1f} s; endpos {endpos}, "
        f"{int(wal) / 2**20:,.0f} MB of WAL to decode (per slot)")
    broker.create_topics(*(t for w in one + two for t in w.topics))
    out = {}
    for name in (["one", "two"] if rep % 2 == 0 else ["two", "one"]):
        pause_before_run(args)
        workers = one if name == "one" else two
        ms, ws, bk, others = run_workers(workers, args, cluster, broker, conn, workdir, endpos,
                                         f"{tag}-{name}")
        wall = max(m.wall for m in ms)
        r = {"wall": wall, "rate": args.rows / wall, "rss": [m.rss_mb for m in ms],
             "cpu": sum(m.cpu for m in ms), "walsender_cpu": ws, "broker_cpu": bk,
             "others": others, "walls": [m.wall for m in ms]}
        out[name] = r
        log(f"  {name}: {wall:.2f} s, {r['rate']:,.0f} rows/s aggregate; "
            + "; ".join(f"{m.name} {m.wall:.2f} s, CPU {m.cpu:.2f} s, peak RSS {m.rss_mb:.1f} MB, "
                        f"{m.kafka_records:,} Kafka records" for m in ms)
            + f"; walsender CPU ~{ws:.2f} s (all), broker CPU {bk:.2f} s, other load "
              f"~{others:.2f} CPU-s")
    drop_slots(conn, *(w.slot for w in one + two))
    return out


def med(xs):
    return statistics.median(xs)


def print_summary(reps, args, versions):
    one = [r["one"] for r in reps]
    two = [r["two"] for r in reps]
    ratio = med([t["rate"] / o["rate"] for o, t in zip(one, two)])
    out = [
        f"Scale-out: two pgfanout workers (disjoint publications and slots) against one, "
        f"{versions['date']}, median of {len(reps)} run(s) (`bench/scaleout.py`)",
        "",
        f"- machine: {versions['cpus']} CPUs, {versions['kernel']}; PostgreSQL {versions['pg']}; "
        f"Kafka {versions['kafka']} (1 local broker, 3 partitions/topic); librdkafka "
        f"{versions['rdkafka']}",
        f"- pgfanout {versions['pgfanout']}, extra args: "
        f"{('`' + args.pgfanout_args + '`') if args.pgfanout_args else '(none)'}",
        f"- load: {args.rows:,} inserts, {args.txn_rows:,}-row transactions alternating between "
        f"scale_a and scale_b (half each); every worker runs to --endpos",
        "",
        "| setup | rows | wall s | aggregate rows/s | peak RSS MB | pgfanout CPU s (sum) "
        "| walsender CPU s (sum) |",
        "|---|--:|--:|--:|--:|--:|--:|",
        f"| one worker, pub_both | {args.rows:,} | {med([o['wall'] for o in one]):.2f} "
        f"| {med([o['rate'] for o in one]):,.0f} | {med([o['rss'][0] for o in one]):.1f} "
        f"| {med([o['cpu'] for o in one]):.2f} | {med([o['walsender_cpu'] for o in one]):.2f} |",
        f"| two workers, pub_a + pub_b | {args.rows:,} | {med([t['wall'] for t in two]):.2f} "
        f"| {med([t['rate'] for t in two]):,.0f} "
        f"| {med([t['rss'][0] for t in two]):.1f} + {med([t['rss'][1] for t in two]):.1f} "
        f"| {med([t['cpu'] for t in two]):.2f} | {med([t['walsender_cpu'] for t in two]):.2f} |",
        "",
        f"two ÷ one (aggregate rows/s, median of per-run ratios): **{ratio:.2f}**; walsender CPU "
        f"two ÷ one: {med([t['walsender_cpu'] for t in two]) / max(1e-9, med([o['walsender_cpu'] for o in one])):.2f} "
        f"(each slot's walsender decodes the whole WAL). Broker CPU {med([o['broker_cpu'] for o in one]):.1f} s "
        f"(one) / {med([t['broker_cpu'] for t in two]):.1f} s (two); other load "
        f"~{med([x['others'] for x in one + two]):.1f} CPU-s per run. PostgreSQL, the broker "
        f"and the workers share the machine's {versions['cpus']} CPUs.",
    ]
    print("\n==== SUMMARY (Markdown, paste into docs) ====", flush=True)
    print("\n".join(out), flush=True)
    print("==== END SUMMARY ====", flush=True)
    return True


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000,
                   help="inserts in all, half per table (default 1,000,000)")
    p.add_argument("--txn-rows", type=int, default=1000, help="rows per transaction (1,000)")
    p.add_argument("--repeat", type=int, default=2, help="repetitions (default 2)")
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--pgfanout-args", default="", help="extra pgfanout flags, shell-quoted")
    p.add_argument("--pgfanout-bin", default=os.environ.get("PGFANOUT_BIN", DEFAULT_PGFANOUT))
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--wait-quiet", type=float, default=60,
                   help="wait up to this long for a quiet machine before each timed run (0: no)")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--strict", action="store_true", help="(no target: accepted for symmetry)")
    p.add_argument("--keep-logs", action="store_true")
    args = p.parse_args(argv)
    if args.rows < 2 or args.repeat < 1 or args.txn_rows < 1:
        p.error("--rows must be ≥ 2, --repeat and --txn-rows positive")
    return args


def main(argv=None):
    args = parse_args(argv)

    def body(workdir, cluster, broker):
        conn = connect(cluster.dsn())
        for t in TABLES:
            conn.execute(insert_table_ddl(t))
        conn.execute(f"CREATE PUBLICATION pub_both FOR TABLE {TABLES[0]}, {TABLES[1]}")
        conn.execute(f"CREATE PUBLICATION pub_a FOR TABLE {TABLES[0]}")
        conn.execute(f"CREATE PUBLICATION pub_b FOR TABLE {TABLES[1]}")
        kafka, rdkafka = kafka_versions()
        versions = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
                    "cpus": os.cpu_count(), "kernel": f"Linux {platform.release()}",
                    "pg": scalar(conn, "SHOW server_version"), "kafka": kafka,
                    "rdkafka": rdkafka, "pgfanout": f"git {git_describe(REPO)}"}
        log(f"PostgreSQL {versions['pg']} on port {cluster.port}, Kafka at {broker.bootstrap}")
        reps = [run_repetition(rep, args, cluster, broker, conn, workdir)
                for rep in range(args.repeat)]
        conn.close()
        return print_summary(reps, args, versions)

    return bench_main(args, "pgfanout-scaleout-", [],
                      [("PostgreSQL", lambda: PgCluster(extra_conf=PG_CONF).start(),
                        lambda c: c.stop()),
                       ("the Kafka broker",
                        lambda: KafkaBroker(num_partitions=args.partitions).start(),
                        lambda b: b.cleanup())], body)


if __name__ == "__main__":
    sys.exit(main())
