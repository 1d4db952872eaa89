#!/usr/bin/python3
"""pgfanout against Debezium and pg_recvlogical: throughput, cost and latency, same WAL.

Throughput part: for each workload and repetition, four fresh pgoutput slots are created on
one publication (FOR ALL TABLES), the workload is loaded once, pg_current_wal_lsn() is noted,
then the four consumers drain the same WAL one after the other (the order rotates between
repetitions):

  pgfanout --sink kafka --endpos LSN       (exits once Kafka acked every record)
  pgfanout --sink null --endpos LSN        (decode + protobuf encode, no broker)
  Debezium PostgreSQL connector 3.6.1.Final in Kafka Connect 4.1.1 standalone, JsonConverter
      without schemas, snapshot.mode=no_data (streams only); done when its topics hold one
      record per row change
  pg_recvlogical --endpos LSN -o proto_version=1 -o publication_names=P -f /dev/null

Latency part: pgfanout → Kafka, then Debezium, each started live on a fresh slot and caught
up (a probe row reached its topic); then pgbench --rate R -T --latency-secs runs a one-row
INSERT script for each rate; a Kafka consumer in this process reads the records as they
arrive and keeps receipt time − commit time (pgfanout: the protobuf Event's
source.commit_time_us; Debezium: source.ts_us, microseconds).

Workloads:
  a  --rows (1,000,000) inserts in --txn-rows-row (1,000) transactions
  b  pgbench -i -s --scale (4), then pgbench -n -c 4 -j 2 -t --pgbench-txns (50,000):
     4 row changes per transaction (800,000)

  /usr/bin/python3 bench/compare.py                        # full size (about 20-45 min)
  /usr/bin/python3 bench/compare.py --rows 100000 --pgbench-txns 5000 --repeat 1 \\
      --latency-secs 10                                    # quick look

It writes the figures as JSON (--json) and, with a Python that has matplotlib
(--chart-python), draws docs/compare.png through bench/compare_chart.py.  Not part of ctest.
Every process it starts is stopped by its own handle.
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "harness"))
sys.path.insert(0, os.path.join(REPO, "tests", "debezium"))
sys.path.insert(0, HERE)

from kafkabroker import KafkaBroker  # noqa: E402
from pgcluster import PgCluster  # noqa: E402
from ports import free_port  # noqa: E402
from benchlib import (  # noqa: E402
    bench_main, BenchError, Measurement, PGBIN, PG_CONF, Sampler, connect, create_slots,
    drop_slots, git_describe, kafka_record_count, kafka_versions, log, machine_busy_s, pg_args,
    pause_before_run, pgbench_tps, proc_cpu_s, run_child, run_tool, scalar, tail, wait_for_quiet,
    walsender_pids)
from bench_kafka import InsertWorkload, PgbenchWorkload  # noqa: E402
import capture  # noqa: E402  (tests/debezium: the Kafka Connect worker running Debezium)

DEFAULT_PGFANOUT = os.path.join(REPO, "build", "pgfanout")
DEFAULT_PYPROTO = os.path.join(REPO, "build", "pyproto")
DEFAULT_JSON = os.path.join(REPO, "build", "compare-results.json")
DEFAULT_CHART = os.path.join(REPO, "docs", "compare.png")
PUBLICATION = "cmp_pub"
LAT_TABLE = "cmp_lat"

GOAL_NULL_VS_CEILING = 0.95
GOAL_KAFKA_VS_NULL = 0.8
GOAL_CPU_US = 1.5      # pgfanout → Kafka, CPU µs per change, all threads
GOAL_P99_MS = 5.0      # commit → Kafka ack at 5,000 tps

# Kafka Connect as its own scripts start it (bin/kafka-run-class.sh: KAFKA_HEAP_OPTS of
# connect-standalone.sh, KAFKA_JVM_PERFORMANCE_OPTS), not the test capture's fast-start flags
# (C1 only, serial GC), which would handicap Debezium here.
CONNECT_JVM_OPTS = ["-Xms256m", "-Xmx2g", "-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                    "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
                    "-Djava.awt.headless=true"]

TOOLS = ["pgfanout_kafka", "pgfanout_null", "debezium", "pg_recvlogical"]
LABEL = {"pgfanout_kafka": "pgfanout → Kafka", "pgfanout_null": "pgfanout → null",
         "debezium": "Debezium (Connect)", "pg_recvlogical": "pg_recvlogical → /dev/null",
         "kafka_floor": "librdkafka alone (kafka_floor)"}


# -- small measuring helpers -----------------------------------------------------------------

def wait_walsenders_gone(pm_pid, timeout=30):
    """Waits until the postmaster has no walsender child (the last one was reaped)."""
    deadline = time.monotonic() + timeout
    while walsender_pids(pm_pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.05)


def vm_hwm_mb(pid):
    """VmHWM (peak resident size of the process's current image) in MB, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def child_pid(ppid):
    """The first child of ppid, or None."""
    try:
        with open(f"/proc/{ppid}/task/{ppid}/children") as f:
            kids = f.read().split()
        return int(kids[0]) if kids else None
    except (OSError, ValueError):
        return None


def wchar(pid):
    """Bytes the process passed to write(2) and friends (/proc/PID/io), or None."""
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Watermarks:
    """Sum of the high watermarks of some topics (one consumer kept open for polling)."""

    def __init__(self, bootstrap, topics, partitions):
        from confluent_kafka import Consumer, TopicPartition
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"cmp-wm-{os.getpid()}",
                           "enable.auto.commit": False})
        self.tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]

    def total(self):
        n = 0
        for tp in self.tps:
            try:
                n += self.c.get_watermark_offsets(tp, timeout=5, cached=False)[1]
            except Exception:  # a topic not there yet counts as empty
                pass
        return n

    def close(self):
        self.c.close()


class FirstRecord(threading.Thread):
    """Polls `probe()` every `interval` s from start() until it is true or stop(); `first` is
    then the seconds from `t0` (set by the caller at spawn) to the first true answer."""

    def __init__(self, probe, interval):
        super().__init__(daemon=True)
        self.probe = probe
        self.interval = interval
        self.t0 = None
        self.pid = None
        self.first = None
        self.done = threading.Event()

    def spawned(self, _pid=None, t0=None):
        self.t0 = time.monotonic() if t0 is None else t0
        self.pid = _pid
        self.start()

    def run(self):
        while not self.done.is_set():
            try:
                ok = self.probe(self)
            except Exception:
                ok = False
            if ok:
                self.first = time.monotonic() - self.t0
                return
            self.done.wait(self.interval)

    def stop(self):
        self.done.set()
        if self.is_alive():
            self.join()
        return self.first


class FirstMessage:
    """A consumer assigned to every partition of some topics from offset 0: probe() is true
    once a record has arrived (its fetch returns as soon as the broker has one)."""

    def __init__(self, bootstrap, topics, partitions):
        from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"cmp-first-{os.getpid()}",
                           "enable.auto.commit": False, "fetch.wait.max.ms": 50,
                           "queued.min.messages": 1})
        self.c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics
                       for p in range(partitions)])
        # Before the timed run: until a fetch answered for every partition (the cached
        # watermarks come from fetch responses), so the fetch loop is already long-polling
        # when the tool starts (up to 5 s).
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            self.c.poll(0.05)
            if all(self.c.get_watermark_offsets(tp, cached=True)[1] >= 0
                   for tp in self.c.assignment()):
                break

    def probe(self, _watcher=None):
        m = self.c.poll(0.05)
        if m is None or m.error():
            return False
        self.c.pause(self.c.assignment())  # fetch no more: the tool's run is still timed
        return True

    def close(self):
        self.c.close()


def scrape(port, timeout=5):
    """The text of 127.0.0.1:port/metrics."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def metrics_events(port):
    """Sum of pgfanout_events_total on 127.0.0.1:port/metrics."""
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in scrape(port, timeout=1).splitlines()
               if ln.startswith("pgfanout_events_total"))


def ack_hist(text, sink="kafka"):
    """{le: cumulative count} of pgfanout_sink_ack_latency_seconds for that sink."""
    out = {}
    pre = f'pgfanout_sink_ack_latency_seconds_bucket{{sink="{sink}",le="'
    for ln in text.splitlines():
        if ln.startswith(pre):
            le, _, rest = ln[len(pre):].partition('"')
            out[float("inf") if le == "+Inf" else float(le)] = int(float(rest.split()[-1]))
    return out


def hist_quantile(before, after, q):
    """Upper bucket bound (s) under which a fraction q of the observations made between the
    two scrapes fall, or None when there were none."""
    les = sorted(after)
    total = after[les[-1]] - before.get(les[-1], 0) if les else 0
    if total <= 0:
        return None
    for le in les:
        if after[le] - before.get(le, 0) >= q * total:
            return le
    return les[-1]


# -- one tool over the loaded WAL --------------------------------------------------------------

class Result:
    """One tool's figures for one repetition."""

    def __init__(self, tool, rows, wall, cpu, rss_mb, walsender_cpu, first_s, others=None):
        self.tool, self.rows, self.wall, self.cpu, self.rss_mb = tool, rows, wall, cpu, rss_mb
        self.walsender_cpu, self.first_s, self.others = walsender_cpu, first_s, others

    @property
    def rate(self):
        return self.rows / self.wall

    @property
    def stream_rate(self):
        """Rows/s from the first record on (start-up excluded)."""
        if self.first_s is None or self.wall - self.first_s <= 0:
            return None
        return self.rows / (self.wall - self.first_s)

    @property
    def ceiling(self):
        return self.rows / self.walsender_cpu if self.walsender_cpu > 0 else None

    def line(self):
        first = f"{self.first_s:.3f} s" if self.first_s is not None else "–"
        return (f"{LABEL[self.tool]:<26} {self.wall:8.2f} s {self.rate:10,.0f} rows/s  CPU "
                f"{self.cpu:6.2f} s  peak RSS {self.rss_mb:7.1f} MB  walsender CPU "
                f"{self.walsender_cpu:.2f} s  first record {first}"
                + (f"  other load ~{self.others:.1f} CPU-s" if self.others is not None else ""))


def measured(tool, m, first, ws_exact):
    """A Result from a benchlib Measurement, with the exact walsender CPU when known."""
    ws = ws_exact if ws_exact is not None and ws_exact > 0 else m.walsender_cpu
    others = max(0.0, (m.others_cpu or 0.0) + m.walsender_cpu - ws)
    return Result(tool, m.rows, m.wall, m.cpu, m.rss_mb, ws, first, others)


def run_launched(tool, argv, rows, log_path, args, pm_pid, watcher):
    """argv under benchlib's launcher (exact peak RSS and CPU); watcher (FirstRecord) starts
    at spawn.  Returns (Measurement, first-record seconds, exact walsender CPU)."""
    cut0 = proc_cpu_s(pm_pid, children=True)
    try:
        m = run_child(tool, argv, rows, log_path, args.timeout, pm_pid,
                      started=lambda launcher: watcher.spawned(launcher.pid))
    finally:
        first = watcher.stop()
    if m.exitcode != 0:
        raise BenchError(f"{tool} exited with {m.exitcode} after {m.wall:.1f} s\nargv: "
                         f"{shlex.join(argv)}\nits stderr (tail):\n{tail(log_path)}")
    wait_walsenders_gone(pm_pid)
    cut1 = proc_cpu_s(pm_pid, children=True)
    return m, first, (cut1 - cut0) if None not in (cut0, cut1) else None


def run_debezium(ctx, slot, prefix, tables, rows, tag):
    """Debezium in a fresh Connect worker until its topics hold `rows` records.  Wall, CPU
    (all the JVM's threads, /proc) and VmHWM are taken at that moment, then it is stopped."""
    args, cluster, broker = ctx["args"], ctx["cluster"], ctx["broker"]
    root = tempfile.mkdtemp(prefix=f"connect-{tag}-", dir=ctx["workdir"])
    options = {"slot.name": slot, "topic.prefix": prefix, "snapshot.mode": "no_data",
               "publication.name": PUBLICATION,
               "table.include.list": ",".join(f"public.{t}" for t in tables)}
    options.update(ctx["dbz_conf"])
    conn_w = capture.Connect(ctx["dbz_classpath"], root, broker.bootstrap, cluster,
                             [(prefix, options)], jvm_opts=ctx["jvm_opts"])
    topics = [f"{prefix}.public.{t}" for t in tables]
    wm = Watermarks(broker.bootstrap, topics, args.partitions)
    fm = FirstMessage(broker.bootstrap, topics, args.partitions)
    watcher = FirstRecord(fm.probe, 0)
    pm = cluster.proc.pid
    sampler = Sampler(pm, interval=0.1)
    cut0, busy0 = proc_cpu_s(pm, children=True), machine_busy_s()
    broker0 = proc_cpu_s(broker.pid)
    done = cpu = hwm = None
    try:
        sampler.start()
        t0 = time.monotonic()
        conn_w.start()
        watcher.spawned(t0=t0)
        pid = conn_w.proc.pid
        deadline = t0 + args.timeout
        while True:
            n = wm.total()
            now = time.monotonic()
            if n >= rows:
                done = now - t0
                cpu, hwm = proc_cpu_s(pid), vm_hwm_mb(pid)
                break
            conn_w.check_alive()
            if now > deadline:
                raise BenchError(f"Debezium: {n:,} of {rows:,} records after {args.timeout:.0f}"
                                 f" s\n{conn_w.log_tail()}")
            time.sleep(0.05)
        busy = machine_busy_s() - busy0
        broker_cpu = proc_cpu_s(broker.pid) - broker0
    except RuntimeError as e:  # Connect died
        raise BenchError(str(e))
    finally:
        first = watcher.stop()
        conn_w.stop()
        ws_sampled = sampler.stop()
        wm.close()
        fm.close()
    wait_walsenders_gone(pm)
    cut1 = proc_cpu_s(pm, children=True)
    ws = (cut1 - cut0) if None not in (cut0, cut1) and cut1 > cut0 else ws_sampled
    others = max(0.0, busy - cpu - ws - broker_cpu)
    r = Result("debezium", rows, done, cpu, hwm, ws, first, others)
    r.log_path = conn_w.logfile
    return r


def run_floor(ctx, topic, records, value_bytes, rate=None):
    """bench/kafka_floor: the same number of records of pgfanout's mean size through librdkafka
    alone with pgfanout's producer defaults (and allocator); returns its parsed figures."""
    args = ctx["args"]
    argv = [args.floor_bin, "-b", ctx["broker"].bootstrap, "-t", topic, "-n", str(records),
            "-s", str(value_bytes)] + (["-r", str(rate)] if rate else [])
    out = run_tool(argv, "kafka_floor", timeout=args.timeout)
    r = {}
    for ln in out.splitlines():
        w = ln.replace("(", " ").replace(")", " ").split()
        if ln.startswith("floor:"):
            r["cpu"] = float(w[w.index("CPU") + 1])
            r["us_per_record"] = r["cpu"] / records * 1e6
            r["wall"] = float(w[w.index("wall") + 1])
        elif ln.startswith("latency:"):
            for q in ("p50", "p99", "p999", "max"):
                r[q] = float(w[w.index(q) + 1])
    if "cpu" not in r:
        raise BenchError(f"kafka_floor printed no figures:\n{out}")
    return r


def null_record_bytes(log_path):
    """Mean encoded record size from pgfanout --sink null's closing line, or None."""
    try:
        with open(log_path, errors="replace") as f:
            for ln in f:
                if "null sink:" in ln and "bytes encoded" in ln:
                    w = ln.split()
                    records = int(w[w.index("records,") - 1])
                    return int(w[w.index("bytes") - 1]) // max(1, records)
    except OSError:
        pass
    return None


def run_repetition(ctx, wl, rep):
    args, cluster, broker, conn = ctx["args"], ctx["cluster"], ctx["broker"], ctx["conn"]
    pm = cluster.proc.pid
    slots = {t: f"cmp_{wl.key}{rep}_{t}" for t in TOOLS}
    run_id = f"cmp-{wl.key}{rep}-{os.getpid()}"
    prefix = {"pgfanout_kafka": run_id + "-fan", "debezium": run_id.replace("-", "_") + "_dbz"}
    log(f"workload {wl.key} rep {rep + 1}/{args.repeat}: preparing")
    wl.prepare(conn, cluster, args)
    create_slots(conn, *slots.values())
    t0 = time.monotonic()
    rows = wl.load(conn, cluster, args)
    endpos = scalar(conn, "SELECT pg_current_wal_lsn()::text")
    wal = scalar(conn, "SELECT pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots"
                       " WHERE slot_name = %s", (slots["pg_recvlogical"],))
    log(f"  loaded {rows:,} row changes in {time.monotonic() - t0:.1f} s; endpos {endpos}, "
        f"{int(wal) / 2**20:,.0f} MB of WAL")
    tables = wl.tables()
    kafka_topics = [f"{prefix['pgfanout_kafka']}.public.{t}" for t in tables]
    broker.create_topics(*kafka_topics, *[f"{prefix['debezium']}.public.{t}" for t in tables],
                         partitions=args.partitions)
    dsn = cluster.dsn()
    n = len(TOOLS)
    order = [TOOLS[(i + rep) % n] for i in range(n)]
    out = {}
    for tool in order:
        pause_before_run(args)
        log_path = os.path.join(ctx["workdir"], f"{wl.key}{rep}-{tool}.log")
        if tool == "debezium":
            r = run_debezium(ctx, slots[tool], prefix[tool], tables, rows, f"{wl.key}{rep}")
        elif tool == "pg_recvlogical":
            argv = [f"{PGBIN}/pg_recvlogical", "-d", dsn, "--slot", slots[tool], "--start",
                    "--endpos", endpos, "-o", "proto_version=1",
                    "-o", f"publication_names={PUBLICATION}", "-f", "/dev/null"]

            def wrote(w):
                pid = getattr(w, "child", None) or child_pid(w.pid)
                w.child = pid
                return pid is not None and (wchar(pid) or 0) > 0
            m, first, ws = run_launched(tool, argv, rows, log_path, args, pm,
                                        FirstRecord(wrote, 0.005))
            r = measured(tool, m, first, ws)
        else:
            sink = "kafka" if tool == "pgfanout_kafka" else "null"
            argv = [args.pgfanout_bin, "--dsn", dsn, "--slot", slots[tool], "--publication",
                    PUBLICATION, "--sink", sink, "--endpos", endpos, "--status-interval", "1"]
            if sink == "kafka":
                argv += ["--kafka-brokers", broker.bootstrap, "--topic-prefix",
                         prefix["pgfanout_kafka"]]
                fm = FirstMessage(broker.bootstrap, kafka_topics, args.partitions)
                watcher = FirstRecord(fm.probe, 0)
            else:
                port = free_port()
                argv += ["--http-listen", f"127.0.0.1:{port}"]
                watcher = FirstRecord(lambda w: metrics_events(port) > 0, 0.01)
            argv += shlex.split(args.pgfanout_args)
            try:
                m, first, ws = run_launched(tool, argv, rows, log_path, args, pm, watcher)
            finally:
                if sink == "kafka":
                    fm.close()
            r = measured(tool, m, first, ws)
            if sink == "kafka":
                got = kafka_record_count(broker.bootstrap, kafka_topics)
                if got < rows:
                    raise BenchError(f"Kafka holds {got:,} records, expected ≥ {rows:,}\n"
                                     f"{tail(log_path)}")
        out[tool] = r
        log("  " + r.line())
    if args.floor_bin:
        pause_before_run(args)
        size = null_record_bytes(os.path.join(ctx["workdir"], f"{wl.key}{rep}-pgfanout_null.log"))
        topic = f"{run_id}-floor"
        broker.create_topics(topic, partitions=args.partitions)
        f = run_floor(ctx, topic, rows, size or 256)
        f["value_bytes"] = size or 256
        out["kafka_floor"] = f
        log(f"  {LABEL['kafka_floor']}: {rows:,} records of {f['value_bytes']} bytes, CPU "
            f"{f['cpu']:.2f} s ({f['us_per_record']:.3f} µs/record), {rows / f['wall']:,.0f}"
            f" records/s")
    drop_slots(conn, *slots.values())
    wl.finish(conn)
    conn.execute("CHECKPOINT")
    return out


# -- latency ---------------------------------------------------------------------------------

class LatencyConsumer(threading.Thread):
    """Reads the records of some topics from given offsets as they arrive and keeps
    receipt time − commit time, in ms, per record."""

    def __init__(self, bootstrap, starts, commit_us):
        super().__init__(daemon=True)
        from confluent_kafka import Consumer, TopicPartition
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"cmp-lat-{os.getpid()}",
                           "enable.auto.commit": False, "fetch.wait.max.ms": 100})
        self.c.assign([TopicPartition(t, p, off) for (t, p), off in starts.items()])
        self.commit_us = commit_us
        self.lat_ms = []
        self.errors = 0
        self.stop_flag = threading.Event()

    def run(self):
        # poll() returns as soon as one record is there; consume(n, 0) then takes what else
        # is buffered without waiting (consume(n, t) would wait for n records or t seconds).
        while not self.stop_flag.is_set():
            m = self.c.poll(0.1)
            if m is None:
                continue
            now_us = time.time() * 1e6
            self.take(m, now_us)
            for m in self.c.consume(1000, timeout=0):
                self.take(m, now_us)

    def take(self, m, now_us):
        if m.error() or m.value() is None:
            return
        try:
            self.lat_ms.append((now_us - self.commit_us(m.value())) / 1000.0)
        except Exception:
            self.errors += 1

    def finish(self):
        self.stop_flag.set()
        self.join()
        self.c.close()
        return self.lat_ms


def pgfanout_commit_us(pb2):
    def f(value):
        ev = pb2.Event()
        ev.ParseFromString(value)
        return ev.source.commit_time_us
    return f


DBZ_TS_FIELDS = {}  # which source field gave Debezium's commit time: {"ts_us": n, ...}


def debezium_commit_us(value):
    src = json.loads(value)["source"]
    field = "ts_us" if src.get("ts_us") is not None else "ts_ms"
    DBZ_TS_FIELDS[field] = DBZ_TS_FIELDS.get(field, 0) + 1
    return src["ts_us"] if field == "ts_us" else src["ts_ms"] * 1000


def end_offsets(bootstrap, topic, partitions):
    wm = Watermarks(bootstrap, [topic], partitions)
    try:
        return {(topic, tp.partition): wm.c.get_watermark_offsets(tp, timeout=10,
                                                                   cached=False)[1]
                for tp in wm.tps}
    finally:
        wm.close()


def pct(values, q):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def pgbench_at(ctx, rate, secs):
    """argv of pgbench running the one-row latency script at --rate rate for secs seconds."""
    args, cluster = ctx["args"], ctx["cluster"]
    return [f"{PGBIN}/pgbench", "-n", "-f", ctx["lat_script"], "-c", str(args.latency_clients),
            "-j", "2", "-T", str(secs), "--rate", str(rate), *pg_args(cluster), "postgres"]


def latency_tool(ctx, tool):
    """Starts the tool live on a fresh slot, waits until a probe row reached Kafka, then runs
    pgbench at each rate; returns [{rate, tps, records, p50, p99, p999, max, ...}]."""
    args, cluster, broker, conn = ctx["args"], ctx["cluster"], ctx["broker"], ctx["conn"]
    slot = f"cmp_lat_{tool}"
    prefix = f"cmplat_{tool}_{os.getpid()}"
    topic = f"{prefix}.public.{LAT_TABLE}"
    broker.create_topics(topic, partitions=args.partitions)
    create_slots(conn, slot)
    proc = connect_w = None
    port = None
    logf = os.path.join(ctx["workdir"], f"lat-{tool}.log")
    results = []
    try:
        if tool == "pgfanout_kafka":
            port = free_port()
            argv = [args.pgfanout_bin, "--dsn", cluster.dsn(), "--slot", slot, "--publication",
                    PUBLICATION, "--sink", "kafka", "--kafka-brokers", broker.bootstrap,
                    "--topic-prefix", prefix, "--status-interval", "1", "--http-listen",
                    f"127.0.0.1:{port}", *shlex.split(args.pgfanout_args)]
            with open(logf, "wb") as err:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=err)
            commit_us = pgfanout_commit_us(ctx["pb2"])
            alive = lambda: proc.poll() is None  # noqa: E731
        else:
            root = tempfile.mkdtemp(prefix="connect-lat-", dir=ctx["workdir"])
            options = {"slot.name": slot, "topic.prefix": prefix, "snapshot.mode": "no_data",
                       "publication.name": PUBLICATION,
                       "table.include.list": f"public.{LAT_TABLE}"}
            options.update(ctx["dbz_conf"])
            connect_w = capture.Connect(ctx["dbz_classpath"], root, broker.bootstrap, cluster,
                                        [(prefix, options)], jvm_opts=ctx["jvm_opts"])
            connect_w.start()
            logf = connect_w.logfile
            commit_us = debezium_commit_us
            alive = lambda: connect_w.proc.poll() is None  # noqa: E731
        id_start = scalar(conn, f"SELECT coalesce(max(id), 0) FROM {LAT_TABLE}")

        def drained(what):
            """Waits until the topic holds a record for every row since id_start."""
            t0 = time.monotonic()
            want = scalar(conn, f"SELECT count(*) FROM {LAT_TABLE} WHERE id > %s", (id_start,))
            wm = Watermarks(broker.bootstrap, [topic], args.partitions)
            try:
                while wm.total() < want:
                    if not alive():
                        raise BenchError(f"{tool} exited ({what}):\n{tail(logf)}")
                    if time.monotonic() - t0 > args.timeout:
                        raise BenchError(f"{tool}: {what}: records missing after "
                                         f"{args.timeout:.0f} s\n{tail(logf)}")
                    time.sleep(0.05)
            finally:
                wm.close()
            return time.monotonic() - t0

        # Caught up: a probe row committed now must come out.
        conn.execute(f"INSERT INTO {LAT_TABLE}(v) VALUES (0)")
        log(f"  latency {LABEL[tool]}: live, probe through after {drained('start-up'):.1f} s")
        if args.latency_warmup > 0:
            # Unmeasured: a JVM's JIT has compiled the hot paths before the figures count.
            rate = min(args.latency_rates)
            run_tool(pgbench_at(ctx, rate, args.latency_warmup), "pgbench warm-up",
                     timeout=args.latency_warmup * 3 + 60)
            log(f"    warm-up: {args.latency_warmup} s at --rate {rate}, drained "
                f"{drained('warm-up'):.1f} s after")
        for rate in args.latency_rates:
            time.sleep(args.settle)
            if args.wait_quiet > 0:
                wait_for_quiet(args.wait_quiet)
            id0 = scalar(conn, f"SELECT coalesce(max(id), 0) FROM {LAT_TABLE}")
            cons = LatencyConsumer(broker.bootstrap,
                                   end_offsets(broker.bootstrap, topic, args.partitions),
                                   commit_us)
            cons.start()
            h0 = ack_hist(scrape(port)) if port else None
            out = run_tool(pgbench_at(ctx, rate, args.latency_secs), "pgbench",
                           timeout=args.latency_secs * 3 + 60)
            want = scalar(conn, f"SELECT count(*) FROM {LAT_TABLE} WHERE id > %s", (id0,))
            deadline = time.monotonic() + 120
            while len(cons.lat_ms) < want and time.monotonic() < deadline and alive():
                time.sleep(0.1)
            lat = cons.finish()
            tps = pgbench_tps(out)
            r = {"tool": tool, "rate": rate, "tps": tps, "txns": want, "records": len(lat),
                 "decode_errors": cons.errors, "p50": pct(lat, 0.5), "p99": pct(lat, 0.99),
                 "p999": pct(lat, 0.999), "max": max(lat) if lat else None}
            if port:
                h1 = ack_hist(scrape(port))
                q = hist_quantile(h0, h1, 0.99)
                r["metrics_p99_le_ms"] = q * 1000 if q is not None else None
            if len(lat) < want:
                raise BenchError(f"{tool}: {len(lat):,} of {want:,} records came out at rate "
                                 f"{rate}\n{tail(logf)}")
            log(f"    --rate {rate}: pgbench {tps or 0:,.0f} tps, {len(lat):,} records, "
                f"p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, p999 {r['p999']:.1f} ms, "
                f"max {r['max']:.1f} ms"
                + (f"; /metrics commit→ack p99 ≤ {r['metrics_p99_le_ms']:g} ms"
                   if r.get("metrics_p99_le_ms") is not None else ""))
            results.append(r)
    finally:
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if connect_w is not None:
            connect_w.stop()
        wait_walsenders_gone(cluster.proc.pid)
        drop_slots(conn, slot)
    return results


# -- report ----------------------------------------------------------------------------------

def latency_floor(ctx):
    """librdkafka alone at each rate while pgbench inserts at that rate with nothing decoding:
    produce → ack percentiles of bench/kafka_floor, the part of commit → ack that is the
    broker's round trip on this machine under the same database load."""
    args, broker = ctx["args"], ctx["broker"]
    results = []
    for rate in args.latency_rates:
        time.sleep(args.settle)
        if args.wait_quiet > 0:
            wait_for_quiet(args.wait_quiet)
        topic = f"cmplat_floor_{rate}_{os.getpid()}"
        broker.create_topics(topic, partitions=args.partitions)
        pgb = subprocess.Popen(pgbench_at(ctx, rate, args.latency_secs), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        try:
            f = run_floor(ctx, topic, rate * args.latency_secs, args.floor_latency_bytes, rate)
        finally:
            out = pgb.communicate(timeout=args.latency_secs * 3 + 60)[0]
        tps = pgbench_tps(out)
        r = {"tool": "kafka_floor", "rate": rate, "tps": tps, "txns": None,
             "records": rate * args.latency_secs, **{q: f[q] for q in ("p50", "p99", "p999", "max")}}
        log(f"    {LABEL['kafka_floor']} --rate {rate} with pgbench {tps or 0:,.0f} tps: produce→ack"
            f" p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, p999 {r['p999']:.1f} ms")
        results.append(r)
    return results


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(wl, reps):
    s = {"key": wl.key, "title": wl.title, "rows": reps[0]["pg_recvlogical"].rows, "tools": {}}
    for t in TOOLS:
        rs = [r[t] for r in reps]
        s["tools"][t] = {
            "wall": med([r.wall for r in rs]), "rate": med([r.rate for r in rs]),
            "stream_rate": med([r.stream_rate for r in rs]),
            "rss": med([r.rss_mb for r in rs]), "rss_max": max(r.rss_mb for r in rs),
            "cpu": med([r.cpu for r in rs]),
            "cpu_per_m": med([r.cpu / r.rows * 1e6 for r in rs]),
            "ws_cpu": med([r.walsender_cpu for r in rs]),
            "ceiling": med([r.ceiling for r in rs]),
            "first": med([r.first_s for r in rs]),
            "others": med([r.others for r in rs]),
            "ratio": med([r.rate / x["pgfanout_kafka"].rate for r, x in zip(rs, reps)]),
            "vs_recv": med([r.rate / x["pg_recvlogical"].rate for r, x in zip(rs, reps)]),
        }
    t = s["tools"]
    s["ceiling_recv"] = t["pg_recvlogical"]["ceiling"]
    best = max(TOOLS, key=lambda k: t[k]["ceiling"] or 0)
    s["ceiling_best"], s["ceiling_best_tool"] = t[best]["ceiling"], best
    s["null_vs_ceiling"] = med([x["pgfanout_null"].rate / x["pg_recvlogical"].ceiling
                                for x in reps if x["pg_recvlogical"].ceiling])
    s["null_vs_best"] = t["pgfanout_null"]["rate"] / s["ceiling_best"] if s["ceiling_best"] \
        else None
    s["kafka_vs_null"] = med([x["pgfanout_kafka"].rate / x["pgfanout_null"].rate for x in reps])
    floors = [x["kafka_floor"] for x in reps if "kafka_floor" in x]
    if floors:
        s["floor_us"] = med([f["us_per_record"] for f in floors])
        s["floor_rate"] = med([s["rows"] / f["wall"] for f in floors])
        s["floor_bytes"] = floors[0]["value_bytes"]
    return s


def f_(x, spec, none="–"):
    return none if x is None else format(x, spec)


def mark(ok):
    return "ok" if ok else "MISS"


def cpu_line(s):
    """The CPU-per-change goal, with librdkafka's own cost beside it when it was measured."""
    t = s["tools"]
    kafka_us, null_us = t["pgfanout_kafka"]["cpu_per_m"], t["pgfanout_null"]["cpu_per_m"]
    line = (f"- pgfanout→Kafka CPU per change, all threads: **{kafka_us:.2f} µs** (goal ≤ "
            f"{GOAL_CPU_US}) {mark(kafka_us <= GOAL_CPU_US)}; pgfanout→null {null_us:.2f} µs, "
            f"pg_recvlogical {t['pg_recvlogical']['cpu_per_m']:.2f} µs")
    if s.get("floor_us") is not None:
        line += (f"; librdkafka alone (bench/kafka_floor: the same {s['rows']:,} records of "
                 f"{s['floor_bytes']} bytes, pgfanout's producer settings and allocator, no "
                 f"PostgreSQL) {s['floor_us']:.2f} µs per record at {s['floor_rate']:,.0f} "
                 f"records/s, so {s['floor_us'] / kafka_us:.0%} of pgfanout→Kafka's CPU is the "
                 f"floor any librdkafka producer pays")
    return line


def summary_text(summaries, latency, args, versions):
    out = [f"pgfanout vs Debezium vs pg_recvlogical, {versions['date']}, median of "
           f"{args.repeat} run(s) per throughput figure (`bench/compare.py`)", "",
           f"- machine: {versions['cpus']} CPUs, {versions['kernel']}; PostgreSQL {versions['pg']};"
           f" Kafka {versions['kafka']} (1 local broker, {args.partitions} partitions/topic); "
           f"librdkafka {versions['rdkafka']}",
           f"- pgfanout {versions['pgfanout']}, extra args: "
           f"{('`' + args.pgfanout_args + '`') if args.pgfanout_args else '(none)'}; Debezium "
           f"PostgreSQL connector {versions['debezium']} in Kafka Connect {versions['connect']} "
           f"standalone, JsonConverter (schemas off), snapshot.mode=no_data, "
           f"extra: {', '.join(args.dbz_conf) or '(none)'}", ""]
    for s in summaries:
        out += [f"### ({s['key']}) {s['title']}: {s['rows']:,} row changes", "",
                "| tool | wall s | rows/s | ÷ pgfanout→Kafka | ÷ pg_recvlogical | peak RSS MB "
                "(max) | CPU s per M changes | walsender CPU s | changes per walsender CPU-s "
                "| first record s | rows/s after first record |",
                "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for t in TOOLS:
            x = s["tools"][t]
            out.append(f"| {LABEL[t]} | {x['wall']:.2f} | {x['rate']:,.0f} | {x['ratio']:.2f} "
                       f"| {x['vs_recv']:.2f} | {x['rss']:.1f} ({x['rss_max']:.1f}) "
                       f"| {x['cpu_per_m']:.2f} | {x['ws_cpu']:.2f} | {f_(x['ceiling'], ',.0f')} "
                       f"| {f_(x['first'], '.3f')} | {f_(x['stream_rate'], ',.0f')} |")
        null_ok = (s["null_vs_ceiling"] or 0) >= GOAL_NULL_VS_CEILING
        kn_ok = (s["kafka_vs_null"] or 0) >= GOAL_KAFKA_VS_NULL
        out += ["",
                f"- decoding ceiling (changes per walsender CPU-second): "
                f"{f_(s['ceiling_recv'], ',.0f')} from the pg_recvlogical run; the cheapest "
                f"walsender was under {LABEL[s['ceiling_best_tool']]}: "
                f"{f_(s['ceiling_best'], ',.0f')}",
                f"- pgfanout→null rows/s ÷ decoding ceiling (pg_recvlogical's): "
                f"**{f_(s['null_vs_ceiling'], '.3f')}** (goal ≥ {GOAL_NULL_VS_CEILING}) "
                f"{mark(null_ok)}; against the cheapest walsender: "
                f"{f_(s['null_vs_best'], '.3f')}",
                f"- pgfanout→Kafka ÷ pgfanout→null: **{f_(s['kafka_vs_null'], '.3f')}** "
                f"(goal ≥ {GOAL_KAFKA_VS_NULL}) {mark(kn_ok)}",
                "- peak RSS MB: " + ", ".join(
                    f"{LABEL[t]} {s['tools'][t]['rss']:.1f}" for t in TOOLS)
                + "; rows/s against pg_recvlogical (same run): " + ", ".join(
                    f"{LABEL[t]} {s['tools'][t]['vs_recv']:.2f}×" for t in TOOLS[:3]),
                cpu_line(s),
                "- other load (CPU-s per run not used by the tool, its walsender or, for "
                "Debezium, the broker): " + ", ".join(
                    f"{LABEL[t]} ~{f_(s['tools'][t]['others'], '.1f')}" for t in TOOLS), ""]
    if latency:
        out += [f"### Commit → record latency, pgbench --rate R -T {args.latency_secs} "
                f"-c {args.latency_clients}, one-row INSERT per transaction (after "
                f"{args.latency_warmup} s of unmeasured warm-up at the lowest rate)", "",
                "| tool | --rate | pgbench tps | records | p50 ms | p99 ms | p99.9 ms | max ms "
                "| pgfanout /metrics commit→ack p99 ≤ ms |", "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for r in latency:
            out.append(f"| {LABEL[r['tool']]} | {r['rate']:,} | {f_(r['tps'], ',.0f')} "
                       f"| {r['records']:,} | {f_(r['p50'], '.1f')} | {f_(r['p99'], '.1f')} "
                       f"| {f_(r['p999'], '.1f')} | {f_(r['max'], '.1f')} "
                       f"| {f_(r.get('metrics_p99_le_ms'), 'g')} |")
        out.append("")
        for r in latency:
            if r["tool"] == "pgfanout_kafka" and r["rate"] >= 5000:
                fl = next((x for x in latency if x["tool"] == "kafka_floor"
                           and x["rate"] == r["rate"]), None)
                out.append(f"- pgfanout commit → record p99 at {r['rate']:,} tps: "
                           f"**{r['p99']:.1f} ms** (goal ≤ {GOAL_P99_MS:g} ms, commit → ack) "
                           f"{mark(r['p99'] <= GOAL_P99_MS)}"
                           + (f"; librdkafka alone, produce → ack at {fl['rate']:,} records/s "
                              f"under the same pgbench load (no slot, no pgfanout): p99 "
                              f"{fl['p99']:.1f} ms" if fl else ""))
        out.append("")
    out += ["rows/s = row changes ÷ wall time from spawn to done (pgfanout and pg_recvlogical: "
            "exit at --endpos, pgfanout→Kafka only after every record was acked; Debezium: "
            "from the Connect JVM's spawn, JVM start-up included, until the sum of its topics' "
            "high watermarks reached the row changes, polled every 50 ms). "
            "\"rows/s after first record\" leaves start-up out. Peak RSS: ru_maxrss through "
            "benchlib's launcher; Debezium: the JVM's VmHWM. CPU: user+sys, all threads "
            "(Debezium: the whole Connect JVM, read when done). Walsender CPU: the "
            "postmaster's reaped-children CPU across the run (exact; for Debezium it includes "
            "its short-lived SQL connections), else sampled. First record: pgfanout→Kafka and "
            "Debezium: first record received by a consumer assigned to their topics from "
            "offset 0 (long-poll, so as it arrives); →null: first pgfanout_events_total "
            "> 0 on /metrics (10 ms); pg_recvlogical: first byte written (wchar in /proc/PID/io,"
            " 5 ms; the output stays /dev/null). Latency: receipt in a "
            "confluent_kafka consumer − commit time (pgfanout: Event.source.commit_time_us; "
            "Debezium: source." + ("/".join(sorted(DBZ_TS_FIELDS)) or "ts_us") + "), "
            + ("µs" if set(DBZ_TS_FIELDS) <= {"ts_us"} else "ms") + " resolution, same clock; the /metrics column is the "
            "upper bound of the histogram bucket holding p99."]
    return "\n".join(out)


def versions_of(conn, classpath):
    kafka, rdkafka = kafka_versions()
    dbz = connect_v = "?"
    for jar in classpath.split(os.pathsep):
        b = os.path.basename(jar)
        if b.startswith("debezium-connector-postgres-") and b.endswith(".jar"):
            dbz = b[len("debezium-connector-postgres-"):-4]
        if b.startswith("connect-runtime-") and b.endswith(".jar"):
            connect_v = b[len("connect-runtime-"):-4]
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpus": os.cpu_count(), "kernel": f"Linux {platform.release()}",
            "pg": scalar(conn, "SHOW server_version"), "kafka": kafka, "rdkafka": rdkafka,
            "pgfanout": f"git {git_describe(REPO)}", "debezium": dbz, "connect": connect_v}


# -- main ------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="throughput,latency",
                   help="throughput, latency or both (default)")
    p.add_argument("--repeat", type=int, default=2, help="repetitions per workload (median)")
    p.add_argument("--workloads", default="a,b", help="a, b or a,b (default)")
    p.add_argument("--rows", type=int, default=1_000_000, help="workload a: rows (1,000,000)")
    p.add_argument("--txn-rows", type=int, default=1000, help="workload a: rows per transaction")
    p.add_argument("--scale", type=int, default=4, help="workload b: pgbench -i -s (4)")
    p.add_argument("--pgbench-txns", type=int, default=50000,
                   help="workload b: pgbench -t per client (50,000: 4 clients x 4 changes = "
                        "800,000 row changes)")
    p.add_argument("--pgbench-clients", type=int, default=4, help="workload b: pgbench -c")
    p.add_argument("--latency-rates", default="1000,5000", help="pgbench --rate values (tps)")
    p.add_argument("--latency-secs", type=int, default=30, help="pgbench -T per rate (30)")
    p.add_argument("--latency-warmup", type=int, default=10,
                   help="seconds of unmeasured load at the lowest rate once a tool is live, "
                        "before the measured rates (10; 0: none)")
    p.add_argument("--latency-clients", type=int, default=4, help="pgbench -c for the latency")
    p.add_argument("--latency-tools", default="pgfanout_kafka,debezium",
                   help="whose latency is measured: pgfanout_kafka and/or debezium (both)")
    p.add_argument("--pgfanout-args", default="", help="extra pgfanout flags, shell-quoted")
    p.add_argument("--pgfanout-bin", default=os.environ.get("PGFANOUT_BIN", DEFAULT_PGFANOUT))
    p.add_argument("--dbz-conf", action="append", default=[], metavar="K=V",
                   help="extra Debezium connector property (repeatable), e.g. "
                        "max.batch.size=8192")
    p.add_argument("--connect-jvm-opts", default=" ".join(CONNECT_JVM_OPTS),
                   help="the Connect JVM's options (default: as Kafka's connect-standalone.sh)")
    p.add_argument("--dbz-classpath", default=os.path.join(REPO, "build", "debezium.classpath"))
    p.add_argument("--partitions", type=int, default=3, help="partitions per topic (3)")
    p.add_argument("--settle", type=float, default=2.0, help="idle seconds before each run")
    p.add_argument("--wait-quiet", type=float, default=60,
                   help="wait up to this long for a quiet machine before each run (0: no)")
    p.add_argument("--timeout", type=float, default=1800, help="per tool run, seconds")
    p.add_argument("--json", default=DEFAULT_JSON, help="results file (%(default)s)")
    p.add_argument("--chart", default=DEFAULT_CHART, help="PNG written by compare_chart.py")
    p.add_argument("--chart-python", default=sys.executable,
                   help="a Python with matplotlib for the chart (e.g. a venv's); the chart is "
                        "skipped with a note when it lacks matplotlib")
    p.add_argument("--strict", action="store_true", help="exit 3 when a goal is missed")
    p.add_argument("--keep-logs", action="store_true")
    p.add_argument("--floor-bin", default=os.path.join(REPO, "build", "kafka_floor"),
                   help="bench/kafka_floor binary ('' to skip the librdkafka floor runs)")
    p.add_argument("--floor-latency-bytes", type=int, default=200,
                   help="record size of the latency floor runs (about a cmp_lat row's event)")
    args = p.parse_args(argv)
    args.parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    args.latency_rates = [int(x) for x in args.latency_rates.split(",") if x.strip()]
    if any(x not in ("throughput", "latency") for x in args.parts) or not args.parts:
        p.error("--parts takes throughput, latency or both")
    if any(w not in ("a", "b") for w in args.workloads):
        p.error("--workloads takes a, b or a,b")
    if args.repeat < 1:
        p.error("--repeat must be positive")
    args.pgfanout_bin = os.path.abspath(args.pgfanout_bin)
    return args


def to_json(summaries, latency, args, versions, raw):
    return {"versions": versions, "args": {k: v for k, v in vars(args).items()},
            "throughput": summaries, "latency": latency, "runs": raw}


def main(argv=None):
    args = parse_args(argv)
    dbz_classpath = capture.load_debezium_classpath(os.path.abspath(args.dbz_classpath))
    dbz_conf = {}
    for kv in args.dbz_conf:
        k, sep, v = kv.partition("=")
        if not sep:
            sys.exit(f"--dbz-conf {kv!r}: not K=V")
        dbz_conf[k.strip()] = v.strip()

    def body(workdir, cluster, broker):
        conn = connect(cluster.dsn())
        conn.execute(f"CREATE PUBLICATION {PUBLICATION} FOR ALL TABLES")
        conn.execute(f"CREATE TABLE {LAT_TABLE} (id bigserial PRIMARY KEY, v int NOT NULL,"
                     " at timestamptz NOT NULL DEFAULT now())")
        lat_script = os.path.join(workdir, "lat.sql")
        with open(lat_script, "w") as f:
            f.write(f"INSERT INTO {LAT_TABLE}(v) VALUES (:client_id);\n")
        versions = versions_of(conn, dbz_classpath)
        ctx = {"args": args, "cluster": cluster, "broker": broker, "conn": conn,
               "workdir": workdir, "dbz_classpath": dbz_classpath, "dbz_conf": dbz_conf,
               "jvm_opts": shlex.split(args.connect_jvm_opts), "lat_script": lat_script}
        log(f"PostgreSQL {versions['pg']} on {cluster.port}, Kafka {versions['kafka']} at "
            f"{broker.bootstrap}, Debezium {versions['debezium']} / Connect "
            f"{versions['connect']}; pgfanout {args.pgfanout_bin} {args.pgfanout_args}")
        summaries, latency, raw = [], [], []
        if "throughput" in args.parts:
            for key in args.workloads:
                wl = {"a": InsertWorkload, "b": PgbenchWorkload}[key](args)
                reps = [run_repetition(ctx, wl, rep) for rep in range(args.repeat)]
                raw += [{"workload": key, "rep": i, "tool": t,
                         **(r if isinstance(r, dict) else vars(r))}
                        for i, x in enumerate(reps) for t, r in x.items()]
                summaries.append(summarize(wl, reps))
        if "latency" in args.parts:
            sys.path.insert(0, os.path.abspath(os.environ.get("PGFANOUT_PYPROTO",
                                                              DEFAULT_PYPROTO)))
            from pgfanout.v1 import event_pb2
            ctx["pb2"] = event_pb2
            for tool in args.latency_tools.split(","):
                latency += latency_tool(ctx, tool)
            if args.floor_bin and "pgfanout_kafka" in args.latency_tools:
                latency += latency_floor(ctx)
        conn.close()
        text = summary_text(summaries, latency, args, versions)
        print("\n==== SUMMARY (Markdown, paste into docs) ====", flush=True)
        print(text, flush=True)
        print("==== END SUMMARY ====", flush=True)
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(to_json(summaries, latency, args, versions, raw), f, indent=1,
                      default=str)
        log(f"results: {args.json}")
        chart(args)
        return all((s["null_vs_ceiling"] or 0) >= GOAL_NULL_VS_CEILING
                   and (s["kafka_vs_null"] or 0) >= GOAL_KAFKA_VS_NULL for s in summaries)

    return bench_main(args, "pgfanout-compare-", [f"{PGBIN}/pg_recvlogical", f"{PGBIN}/pgbench"],
                      [("PostgreSQL", lambda: PgCluster(extra_conf=PG_CONF).start(),
                        lambda c: c.stop()),
                       ("the Kafka broker",
                        lambda: KafkaBroker(num_partitions=args.partitions).start(),
                        lambda b: b.cleanup())], body)


def chart(args):
    """Draws the chart with --chart-python (needs matplotlib); a note when it cannot."""
    argv = [args.chart_python, os.path.join(HERE, "compare_chart.py"), args.json, args.chart]
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if r.returncode == 0:
        log(f"chart: {args.chart}")
    else:
        log(f"chart not drawn ({r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.returncode});"
            f" later: <python with matplotlib> bench/compare_chart.py {args.json} {args.chart}")


if __name__ == "__main__":
    sys.exit(main())
