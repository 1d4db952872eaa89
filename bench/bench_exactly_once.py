#!/usr/bin/python3
"""pgfanout exactly-once against at-least-once, into Kafka, in one run.

Throughput: one table (benchlib's insert workload) gets --rows rows (default 1,000,000) in
--txn-rows-row transactions (default 1,000) behind two pgoutput slots; pgfanout drains each
slot up to the end LSN, once at-least-once (the default) and once with --exactly-once, in
alternating order over --repeat repetitions.  Goal: exactly-once keeps at least 0.8 of the
at-least-once rate (median over the repetitions).

Latency: with pgfanout running live on a fresh slot, a writer commits --latency-txns
one-row transactions at --latency-rate per second; a read_committed consumer notes when each
row's record becomes visible.  Commit -> visible is measured from the moment COMMIT returned
to the writer, both clocks on this machine; p50 and p99 for each mode, and what exactly-once
adds.

Each timed pgfanout is reaped through benchlib's launcher (its own peak RSS and CPU); it must
exit 0, each topic must hold at least one record per row, and the slot must be confirmed to
the end LSN.  Otherwise the benchmark stops with an error (exit 1).

  /usr/bin/python3 bench/bench_exactly_once.py                 # ~3 min
  /usr/bin/python3 bench/bench_exactly_once.py --rows 200000 --repeat 1 --latency-txns 300

Not part of ctest.  Every process it starts is stopped by its own handle.
"""
import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "harness"))

from kafkabroker import KafkaBroker  # noqa: E402
from pgcluster import PgCluster  # noqa: E402
from benchlib import (  # noqa: E402
    bench_main,
    BenchError,
    PG_CONF,
    child_env,
    connect,
    create_slots,
    drop_slots,
    git_describe,
    insert_rows,
    insert_table_ddl,
    kafka_record_count,
    kafka_versions,
    log,
    run_child,
    scalar,
    tail,
    wait_for_quiet,
)

DEFAULT_PGFANOUT = os.path.join(REPO, "build", "pgfanout")
TABLE, PUBLICATION = "bench_eo", "bench_eo_pub"
LAT_TABLE, LAT_PUBLICATION = "bench_eo_lat", "bench_eo_lat_pub"
TARGET_RATIO = 0.8
MODES = {"at-least-once": [], "exactly-once": ["--exactly-once"]}


def fanout_argv(args, cluster, broker, slot, publication, prefix, *extra):
    return [args.pgfanout_bin, "--dsn", cluster.dsn(), "--slot", slot, "--publication", publication,
            "--sink", "kafka", "--kafka-brokers", broker.bootstrap, "--topic-prefix", prefix,
            "--state-topic", f"{prefix}.state", "--status-interval", "1", "--snapshot", "never",
            *extra, *shlex.split(args.pgfanout_args)]


def drain(args, cluster, broker, conn, workdir, mode, slot, endpos, rep):
    """pgfanout (mode) draining slot to endpos; returns its Measurement."""
    prefix = f"bench-eo-{rep}-{mode}-{os.getpid()}"
    topic = f"{prefix}.public.{TABLE}"
    broker.create_topics(topic, partitions=args.partitions)
    argv = fanout_argv(args, cluster, broker, slot, PUBLICATION, prefix, "--endpos", endpos, *MODES[mode])
    if args.wait_quiet > 0:
        wait_for_quiet(args.wait_quiet)
    log_path = os.path.join(workdir, f"drain-{rep}-{mode}.log")
    m = run_child(mode, argv, args.rows, log_path, args.timeout, cluster.proc.pid, broker.pid)
    if m.exitcode != 0:
        raise BenchError(f"{mode} exited {m.exitcode}\n{tail(log_path)}")
    got = kafka_record_count(broker.bootstrap, [topic])
    if got < args.rows:
        raise BenchError(f"{topic} holds {got:,} records, expected {args.rows:,}\n{tail(log_path)}")
    if not scalar(conn, "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
                  (endpos, slot)):
        raise BenchError(f"slot {slot} not confirmed to {endpos} after a clean exit")
    log("  " + m.line())
    return m


def latency(args, cluster, broker, conn, workdir, mode):
    """Commit -> visible latencies (ms) of one-row transactions with pgfanout live."""
    from confluent_kafka import Consumer, TopicPartition
    slot = f"bench_eo_lat_{mode.replace('-', '_')}"
    prefix = f"bench-eol-{mode}-{os.getpid()}"
    topic = f"{prefix}.public.{LAT_TABLE}"
    broker.create_topics(topic, partitions=1)
    create_slots(conn, slot)
    argv = fanout_argv(args, cluster, broker, slot, LAT_PUBLICATION, prefix, *MODES[mode])
    err = open(os.path.join(workdir, f"latency-{mode}.log"), "wb")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                            env=child_env())
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"lat-{uuid.uuid4()}",
                         "isolation.level": "read_committed", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 5})
    consumer.assign([TopicPartition(topic, 0, 0)])
    committed, seen = [], []  # one partition, one writer: the k-th record is the k-th commit
    stop = threading.Event()

    def read():
        while not stop.is_set():
            m = consumer.poll(0.05)
            if m is not None and m.error() is None and m.value() is not None:
                seen.append(time.monotonic())

    reader = threading.Thread(target=read, daemon=True)
    try:
        time.sleep(2.0)  # connected and streaming
        if proc.poll() is not None:
            raise BenchError(f"pgfanout ({mode}) exited {proc.returncode} before the latency run")
        reader.start()
        w = connect(cluster.dsn())
        base = scalar(conn, f"SELECT coalesce(max(id), 0) FROM {LAT_TABLE}")
        gap = 1.0 / args.latency_rate
        for i in range(1, args.latency_txns + 1):
            t = time.monotonic()
            w.execute(f"INSERT INTO {LAT_TABLE} VALUES (%s, 'x')", (base + i,))
            committed.append(time.monotonic())
            time.sleep(max(0.0, gap - (time.monotonic() - t)))
        w.close()
        deadline = time.monotonic() + 60
        while len(seen) < len(committed) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        if reader.is_alive():
            reader.join(5)
        consumer.close()
        proc.terminate()
        proc.wait(60)
        err.close()
        drop_slots(conn, slot)
    if len(seen) != len(committed):
        raise BenchError(f"{mode}: {len(seen)} records became visible for {len(committed)} commits")
    return sorted((v - c) * 1000 for c, v in zip(committed, seen))


def pct(values, p):
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def body(args, workdir, cluster, broker):
    conn = connect(cluster.dsn())
    conn.execute(insert_table_ddl(TABLE))
    conn.execute(f"CREATE PUBLICATION {PUBLICATION} FOR TABLE {TABLE}")
    conn.execute(f"CREATE TABLE {LAT_TABLE} (id int8 PRIMARY KEY, v text)")
    conn.execute(f"CREATE PUBLICATION {LAT_PUBLICATION} FOR TABLE {LAT_TABLE}")
    results = {mode: [] for mode in MODES}
    for rep in range(args.repeat):
        slots = {mode: f"bench_eo_{rep}_{mode.replace('-', '_')}" for mode in MODES}
        create_slots(conn, *slots.values())
        conn.execute(f"TRUNCATE {TABLE}")
        log(f"repetition {rep + 1}: inserting {args.rows:,} rows in {args.txn_rows:,}-row transactions")
        insert_rows(conn, TABLE, args.rows, args.txn_rows)
        endpos = scalar(conn, "SELECT pg_current_wal_lsn()::text")
        order = list(MODES) if rep % 2 == 0 else list(reversed(MODES))
        for mode in order:
            results[mode].append(drain(args, cluster, broker, conn, workdir, mode, slots[mode], endpos, rep))
            drop_slots(conn, slots[mode])
    lats = {mode: latency(args, cluster, broker, conn, workdir, mode) for mode in MODES}

    rate = {mode: statistics.median(m.rate for m in ms) for mode, ms in results.items()}
    rss = {mode: max(m.rss_mb for m in ms) for mode, ms in results.items()}
    cpu = {mode: statistics.median(m.cpu for m in ms) for mode, ms in results.items()}
    ratio = rate["exactly-once"] / rate["at-least-once"]
    kafka, rdkafka = kafka_versions()
    print()
    print(f"pgfanout {git_describe(REPO)}, Kafka {kafka}, librdkafka {rdkafka}, {platform.node()}, "
          f"{os.cpu_count()} CPUs; {args.rows:,} rows in {args.txn_rows:,}-row transactions, "
          f"{args.partitions} partitions, {args.repeat} repetition(s), medians")
    print()
    print("| mode | rows/s | CPU s | peak RSS MB | commit->visible p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    for mode in MODES:
        print(f"| {mode} | {rate[mode]:,.0f} | {cpu[mode]:.2f} | {rss[mode]:.1f} | "
              f"{pct(lats[mode], 50):.1f} | {pct(lats[mode], 99):.1f} |")
    print()
    print(f"throughput ratio exactly-once / at-least-once: {ratio:.2f} (goal >= {TARGET_RATIO}) "
          f"{'ok' if ratio >= TARGET_RATIO else 'MISS'}")
    print(f"latency added by exactly-once: p50 {pct(lats['exactly-once'], 50) - pct(lats['at-least-once'], 50):+.1f} "
          f"ms, p99 {pct(lats['exactly-once'], 99) - pct(lats['at-least-once'], 99):+.1f} ms "
          f"({args.latency_txns} one-row transactions at {args.latency_rate}/s each)")
    print(f"peak RSS: at-least-once {rss['at-least-once']:.1f} MB, exactly-once {rss['exactly-once']:.1f} MB")
    return ratio >= TARGET_RATIO


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--txn-rows", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--latency-txns", type=int, default=1000)
    p.add_argument("--latency-rate", type=float, default=100.0)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--wait-quiet", type=float, default=20)
    p.add_argument("--pgfanout-bin", default=DEFAULT_PGFANOUT)
    p.add_argument("--pgfanout-args", default="")
    p.add_argument("--strict", action="store_true", help="exit 3 when a goal is missed")
    p.add_argument("--keep-logs", action="store_true")
    args = p.parse_args()
    os.environ.setdefault("PGFANOUT_BIN", args.pgfanout_bin)
    servers = [("PostgreSQL", lambda: PgCluster(extra_conf=PG_CONF).start(), lambda c: c.stop()),
               ("Kafka", lambda: KafkaBroker(num_partitions=args.partitions).start(), lambda b: b.cleanup())]
    return bench_main(args, "pgfanout-bench-eo-", [], servers,
                      lambda workdir, cluster, broker: body(args, workdir, cluster, broker))


if __name__ == "__main__":
    sys.exit(main())
