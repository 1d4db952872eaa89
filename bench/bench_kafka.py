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
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "harness"))

import psycopg  # noqa: E402
from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from confluent_kafka import libversion as rdkafka_libversion  # noqa: E402

import kafkabroker  # noqa: E402
from kafkabroker import KafkaBroker  # noqa: E402
from pgcluster import PgCluster  # noqa: E402

PGBIN = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")
DEFAULT_PGFANOUT = os.path.join(REPO, "build", "pgfanout")
PUBLICATION = "bench_pub"
TARGET_RATIO = 0.9
TARGET_RSS_MB = 64.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

# What the server and the Kafka broker get beyond the harness defaults: no checkpoint in the
# middle of a load or a measurement, enough memory to decode a 1,000-row transaction in RAM.
PG_CONF = {
    "max_wal_size": "'8GB'",
    "checkpoint_timeout": "'1h'",
    "logical_decoding_work_mem": "'256MB'",
    "autovacuum": "off",
    "synchronous_commit": "on",
}

INSERT_TABLE = "bench_insert"
INSERT_DDL = f"""
CREATE TABLE {INSERT_TABLE} (
    id      int8 PRIMARY KEY,
    label   text NOT NULL,
    amount  numeric(14, 2) NOT NULL,
    created timestamptz NOT NULL,
    active  bool NOT NULL
)"""
INSERT_SQL = f"""
INSERT INTO {INSERT_TABLE}
SELECT g, 'customer ' || md5(g::text), (g * 1.37)::numeric(14, 2),
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second', g %% 3 = 0
FROM generate_series(%s::int8, %s::int8) AS g"""
PGBENCH_TABLES = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class BenchError(RuntimeError):
    """A failed check: the benchmark stops and exits 1."""


# -- measuring one child ---------------------------------------------------------------------

def proc_cpu_s(pid):
    """utime+stime of a process (all its threads) in seconds, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def machine_busy_s():
    """CPU seconds the whole machine has been busy (all CPUs, /proc/stat: not idle/iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK


def wait_for_quiet(max_wait, threshold=0.5):
    """Waits (up to max_wait s) until the machine has been busy less than `threshold` CPUs over
    half a second, so a timed run does not start on top of someone else's burst.  Returns the
    seconds waited."""
    t0 = time.monotonic()
    while True:
        b0 = machine_busy_s()
        time.sleep(0.5)
        busy = (machine_busy_s() - b0) / 0.5
        waited = time.monotonic() - t0
        if busy < threshold or waited >= max_wait:
            if waited > 1:
                log(f"  waited {waited:.0f} s for a quiet machine (now {busy:.2f} CPUs busy)")
            return waited


def walsender_pids(postmaster_pid):
    """PIDs of the postmaster's children whose process title says walsender."""
    pids = []
    try:
        with open(f"/proc/{postmaster_pid}/task/{postmaster_pid}/children") as f:
            children = f.read().split()
    except OSError:
        return pids
    for pid in children:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"walsender" in f.read():
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


class Sampler(threading.Thread):
    """Samples the CPU time of the walsenders every `interval` s while a consumer runs (the
    last sample before a walsender exits is what we keep: approximate, within one interval)."""

    def __init__(self, postmaster_pid, interval=0.2):
        super().__init__(daemon=True)
        self.postmaster_pid = postmaster_pid
        self.interval = interval
        self.seen = {}
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            for pid in walsender_pids(self.postmaster_pid):
                cpu = proc_cpu_s(pid)
                if cpu is not None:
                    self.seen[pid] = max(cpu, self.seen.get(pid, 0.0))
            self.done.wait(self.interval)

    def stop(self):
        self.done.set()
        self.join()
        return sum(self.seen.values())


# Why a launcher: Linux carries a process's peak RSS across exec (the old address space's
# high-water mark counts), and a child forked from this interpreter (psycopg, librdkafka
# loaded) starts with ~30 MB of it, so os.wait4 here would report at least that for any
# program.  The launcher is a bare `python3 -S -I` (~5 MB): it forks the program from there,
# reaps it with os.wait4 and hands back that rusage, the exit status and the wall time
# (fork to reap).  Any program that peaks above ~5 MB is then measured exactly.  It forwards
# SIGINT/SIGTERM to the program and SIGKILLs it at the timeout.
LAUNCHER = r"""
import json, os, signal, sys, time
out, timeout, argv = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
t0 = time.monotonic()
pid = os.fork()
if pid == 0:
    try:
        os.execv(argv[0], argv)
    finally:
        os._exit(127)
def forward(sig, frame):
    os.kill(pid, sig)
signal.signal(signal.SIGTERM, forward)
signal.signal(signal.SIGINT, forward)
signal.signal(signal.SIGALRM, lambda s, f: os.kill(pid, signal.SIGKILL))
signal.setitimer(signal.ITIMER_REAL, timeout)
_, status, ru = os.wait4(pid, 0)
wall = time.monotonic() - t0
signal.setitimer(signal.ITIMER_REAL, 0)
with open(out, "w") as f:
    json.dump({"status": status, "wall": wall, "maxrss_kb": ru.ru_maxrss,
               "utime": ru.ru_utime, "stime": ru.ru_stime, "timed_out": wall >= timeout}, f)
"""


class Measurement:
    def __init__(self, name, rows, r, walsender_cpu, broker_cpu, log_path):
        self.name = name
        self.rows = rows
        self.wall = r["wall"]
        self.status = r["status"]
        self.exitcode = os.waitstatus_to_exitcode(r["status"])
        self.timed_out = r["timed_out"]
        self.user = r["utime"]
        self.sys = r["stime"]
        self.cpu = self.user + self.sys
        self.rss_mb = r["maxrss_kb"] / 1024.0  # Linux: KiB
        self.walsender_cpu = walsender_cpu
        self.broker_cpu = broker_cpu
        self.log_path = log_path
        self.kafka_records = None
        self.others_cpu = None  # machine CPU during the run not spent by the consumer,
                                # its walsender or the broker: other load (noise indicator)

    @property
    def rate(self):
        return self.rows / self.wall if self.wall > 0 else 0.0

    def line(self):
        extra = f", broker CPU {self.broker_cpu:.2f} s" if self.broker_cpu is not None else ""
        if self.others_cpu is not None:
            extra += f", other load ~{self.others_cpu:.2f} CPU-s"
        return (f"{self.name:<15} {self.wall:8.2f} s {self.rate:12,.0f} rows/s  "
                f"CPU {self.cpu:6.2f} s (user {self.user:.2f}, sys {self.sys:.2f})  "
                f"peak RSS {self.rss_mb:6.1f} MB  walsender CPU ~{self.walsender_cpu:.2f} s"
                f"{extra}")


def run_child(name, argv, rows, log_path, timeout, postmaster_pid, broker_pid=None):
    """Runs argv to completion under the launcher and returns its Measurement.  The launcher
    SIGKILLs it after timeout seconds; if this process is interrupted, the launcher gets
    SIGTERM (by its handle) and passes it on."""
    sampler = Sampler(postmaster_pid)
    broker_before = proc_cpu_s(broker_pid) if broker_pid else None
    busy_before = machine_busy_s()
    result_path = log_path + ".rusage.json"
    with open(log_path, "wb") as err:
        sampler.start()
        launcher = subprocess.Popen(
            [sys.executable, "-S", "-I", "-c", LAUNCHER, result_path, str(timeout), *argv],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        try:
            rc = launcher.wait()
        except BaseException:
            launcher.terminate()
            launcher.wait()
            raise
        finally:
            walsender_cpu = sampler.stop()
    busy = machine_busy_s() - busy_before
    broker_cpu = None
    if broker_pid:
        after = proc_cpu_s(broker_pid)
        if after is not None and broker_before is not None:
            broker_cpu = after - broker_before
    try:
        with open(result_path) as f:
            r = json.load(f)
    except (OSError, ValueError):
        raise BenchError(f"the launcher of {name} failed ({rc}) without a result; stderr:\n"
                         f"{tail(log_path)}")
    m = Measurement(name, rows, r, walsender_cpu, broker_cpu, log_path)
    m.others_cpu = max(0.0, busy - m.cpu - walsender_cpu - (broker_cpu or 0.0))
    if m.timed_out:
        raise BenchError(f"{name} killed after the {timeout:.0f} s timeout\n"
                         f"its stderr (tail):\n{tail(log_path)}")
    return m


def tail(path, n=40):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


# -- database side ---------------------------------------------------------------------------

def connect(dsn):
    return psycopg.connect(dsn, autocommit=True)


def scalar(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()[0]


def create_slots(conn, *names):
    for name in names:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))


def drop_slots(conn, *names):
    for name in names:
        deadline = time.monotonic() + 30
        while scalar(conn, "SELECT count(*) FROM pg_replication_slots"
                           " WHERE slot_name = %s AND active", (name,)):
            if time.monotonic() > deadline:
                raise BenchError(f"slot {name} still active 30 s after its consumer exited")
            time.sleep(0.05)
        conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                     " WHERE slot_name = %s", (name,))


def pg_args(cluster):
    return ["-h", "127.0.0.1", "-p", str(cluster.port), "-U", cluster.superuser]


def run_tool(argv, what, timeout):
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if r.returncode != 0:
        raise BenchError(f"{what} failed ({r.returncode}): {shlex.join(argv)}\n{r.stdout[-3000:]}")
    return r.stdout


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
        with conn.cursor() as cur:
            for start in range(1, self.rows + 1, self.txn_rows):
                cur.execute(INSERT_SQL, (start, min(start + self.txn_rows - 1, self.rows)))
        n = scalar(conn, f"SELECT count(*) FROM {INSERT_TABLE}")
        if n != self.rows:
            raise BenchError(f"loaded {n} rows, wanted {self.rows}")
        return n

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


# -- Kafka side ------------------------------------------------------------------------------

def kafka_record_count(bootstrap, topics, timeout=30):
    """Sum over the topics' partitions of (high watermark - low watermark)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "pgfanout-bench",
                  "enable.auto.commit": False})
    try:
        total = 0
        for topic in topics:
            md = c.list_topics(topic, timeout=timeout)
            tmd = md.topics.get(topic)
            if tmd is None or tmd.error is not None:
                raise BenchError(f"Kafka topic {topic} missing after the run: "
                                 f"{tmd.error if tmd else 'no metadata'}")
            for p in tmd.partitions:
                lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
                total += hi - lo
        return total
    finally:
        c.close()


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
        if args.settle > 0:
            time.sleep(args.settle)
        if args.wait_quiet > 0:
            wait_for_quiet(args.wait_quiet)
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
    kafka = "?"
    try:
        cp = kafkabroker.load_classpath()
        for jar in cp.split(os.pathsep):
            base = os.path.basename(jar)
            if base.startswith("kafka_2.13-") and base.endswith(".jar"):
                kafka = base[len("kafka_2.13-"):-4]
    except Exception:  # only for the report
        pass
    try:
        desc = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    except OSError:
        desc = ""
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "kernel": f"Linux {platform.release()}",
        "pg": scalar(conn, "SHOW server_version"),
        "kafka": kafka,
        "rdkafka": rdkafka_libversion()[0],
        "pgfanout": f"git {desc.strip() or '?'}",
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
    if not (os.path.isfile(args.pgfanout_bin) and os.access(args.pgfanout_bin, os.X_OK)):
        sys.exit(f"pgfanout binary not found at {args.pgfanout_bin} "
                 "(cmake --build build -j2, or --pgfanout-bin)")
    for tool in ("pg_recvlogical", "pgbench"):
        if not os.access(f"{PGBIN}/{tool}", os.X_OK):
            sys.exit(f"{PGBIN}/{tool} not found")
    workdir = tempfile.mkdtemp(prefix="pgfanout-bench-")
    cluster = broker = None
    ok = False
    try:
        log("starting PostgreSQL and the Kafka broker")
        cluster = PgCluster(extra_conf=PG_CONF).start()
        broker = KafkaBroker(num_partitions=args.partitions).start()
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
        met = print_summary(summaries, args, versions)
        ok = True
        if args.strict and not met:
            return 3
        return 0
    except BenchError as e:
        print(f"\nBENCHMARK FAILED: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        if broker is not None:
            broker.cleanup()
        if cluster is not None:
            cluster.stop()
        if args.keep_logs or not ok:
            print(f"consumer logs kept in {workdir}", file=sys.stderr)
        else:
            import shutil
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
