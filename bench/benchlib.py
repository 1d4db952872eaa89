"""What the benchmarks share: the PostgreSQL settings for a measurement, measuring one child
process (peak RSS and CPU through a bare launcher, the walsender's and the backends' CPU, the
machine's other load), waiting for a quiet machine, the SQL and tool helpers, the insert
workload's table and counting a run's Kafka records.  Used by bench_kafka.py, bench_redis.py
and bench_snapshot.py; not a benchmark itself."""
import json
import os
import shlex
import subprocess
import sys
import threading
import time

import psycopg

PGBIN = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")
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

def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def bench_main(args, workdir_prefix, tools, servers, body):
    """The frame every benchmark's main shares.  The pgfanout binary (args.pgfanout_bin) and
    tools (paths) must exist; a work directory is made; servers, (what, start, stop) triples,
    are started in order; body(workdir, *started) runs and returns whether the goals were met.
    Returns the exit status: 0, 1 when a check failed (BenchError), 3 with args.strict when a
    goal was missed.  Whatever was started is stopped by its own handle; the work directory is
    kept when something failed or with args.keep_logs."""
    import shutil
    import tempfile
    if not (os.path.isfile(args.pgfanout_bin) and os.access(args.pgfanout_bin, os.X_OK)):
        sys.exit(f"pgfanout binary not found at {args.pgfanout_bin} "
                 "(cmake --build build -j2, or --pgfanout-bin)")
    for tool in tools:
        if not os.access(tool, os.X_OK):
            sys.exit(f"{tool} not found")
    workdir = tempfile.mkdtemp(prefix=workdir_prefix)
    started = []
    ok = False
    try:
        log("starting " + " and ".join(what for what, _, _ in servers))
        for _, start, stop in servers:
            started.append((start(), stop))
        met = body(workdir, *(server for server, _ in started))
        ok = True
        return 3 if args.strict and not met else 0
    except BenchError as e:
        print(f"\nBENCHMARK FAILED: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        for server, stop in reversed(started):
            stop(server)
        if args.keep_logs or not ok:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


class BenchError(RuntimeError):
    """A failed check: the benchmark stops and exits 1."""


# -- measuring one child ---------------------------------------------------------------------

def proc_cpu_s(pid, children=False):
    """utime+stime of a process (all its threads) in seconds, or with children=True
    cutime+cstime (the CPU of the children it has reaped); None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        i = 13 if children else 11
        return (int(fields[i]) + int(fields[i + 1])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def pause_before_run(args):
    """--settle seconds of sleep, then up to --wait-quiet seconds for the machine to calm down:
    what every bench does before a timed run."""
    if args.settle > 0:
        time.sleep(args.settle)
    if args.wait_quiet > 0:
        wait_for_quiet(args.wait_quiet)


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


# Titles of the postmaster's children that are not client backends.
_BACKGROUND = (b"checkpointer", b"background writer", b"walwriter", b"autovacuum",
               b"logical replication", b"archiver", b"stats collector", b"startup")


def postmaster_children(postmaster_pid):
    """(pid, process title) of the postmaster's children."""
    out = []
    try:
        with open(f"/proc/{postmaster_pid}/task/{postmaster_pid}/children") as f:
            children = f.read().split()
    except OSError:
        return out
    for pid in children:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                out.append((int(pid), f.read()))
        except OSError:
            pass
    return out


def walsender_pids(postmaster_pid):
    """PIDs of the postmaster's children whose process title says walsender."""
    return [pid for pid, title in postmaster_children(postmaster_pid) if b"walsender" in title]


def backend_pids(postmaster_pid):
    """PIDs of the client backends (not walsenders, not background processes)."""
    return [pid for pid, title in postmaster_children(postmaster_pid)
            if b"walsender" not in title and not any(b in title for b in _BACKGROUND)]


class Sampler(threading.Thread):
    """Samples the CPU time of the walsenders every `interval` s while a consumer runs (the
    last sample before a walsender exits is what we keep: approximate, within one interval).
    With backends=True it also samples the client backends (e.g. the one a snapshot or a COPY
    reads through) and keeps what they spent since the sampler was made in backend_cpu;
    a backend that lives less than one interval is missed."""

    def __init__(self, postmaster_pid, interval=0.2, backends=False):
        super().__init__(daemon=True)
        self.postmaster_pid = postmaster_pid
        self.interval = interval
        self.seen = {}
        self.backends = backends
        self.backend_base = {}
        self.backend_seen = {}
        self.backend_cpu = None
        if backends:
            for pid in backend_pids(postmaster_pid):
                cpu = proc_cpu_s(pid)
                if cpu is not None:
                    self.backend_base[pid] = cpu
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            for pid in walsender_pids(self.postmaster_pid):
                cpu = proc_cpu_s(pid)
                if cpu is not None:
                    self.seen[pid] = max(cpu, self.seen.get(pid, 0.0))
            if self.backends:
                for pid in backend_pids(self.postmaster_pid):
                    cpu = proc_cpu_s(pid)
                    if cpu is not None:
                        self.backend_seen[pid] = max(cpu, self.backend_seen.get(pid, 0.0))
            self.done.wait(self.interval)

    def stop(self):
        """Ends sampling; returns the walsenders' CPU seconds (backend_cpu is set too)."""
        self.done.set()
        self.join()
        if self.backends:
            self.backend_cpu = sum(cpu - self.backend_base.get(pid, 0.0)
                                   for pid, cpu in self.backend_seen.items())
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
               "utime": ru.ru_utime, "stime": ru.ru_stime, "minflt": ru.ru_minflt,
               "timed_out": wall >= timeout}, f)
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
        self.minflt = r.get("minflt", 0)  # minor page faults (memory the process touched anew)
        self.walsender_cpu = walsender_cpu
        self.broker_cpu = broker_cpu
        self.backend_cpu = None  # client backends' CPU, when run_child sampled them
        self.log_path = log_path
        self.kafka_records = None
        self.others_cpu = None  # machine CPU during the run not spent by the consumer,
                                # its walsender or the broker: other load (noise indicator)

    @property
    def rate(self):
        return self.rows / self.wall if self.wall > 0 else 0.0

    def line(self):
        extra = f", broker CPU {self.broker_cpu:.2f} s" if self.broker_cpu is not None else ""
        if self.backend_cpu is not None:
            extra += f", backends CPU ~{self.backend_cpu:.2f} s"
        if self.others_cpu is not None:
            extra += f", other load ~{self.others_cpu:.2f} CPU-s"
        return (f"{self.name:<15} {self.wall:8.2f} s {self.rate:12,.0f} rows/s  "
                f"CPU {self.cpu:6.2f} s (user {self.user:.2f}, sys {self.sys:.2f})  "
                f"peak RSS {self.rss_mb:6.1f} MB  walsender CPU ~{self.walsender_cpu:.2f} s"
                f"{extra}")


# The harness's and the benchmarks' own variables: not pgfanout's settings, so they are kept
# from the timed program (pgfanout warns about unknown PGFANOUT_* variables), as in
# tests/integration/runner.py.
HARNESS_VARS = ("PGFANOUT_BIN", "PGFANOUT_PYPROTO", "PGFANOUT_KAFKA_CLASSPATH",
                "PGFANOUT_KAFKA_CDS", "PGFANOUT_REDIS_SERVER")


def child_env(extra=None):
    """Our environment without the harness's variables, plus extra (a dict)."""
    env = {k: v for k, v in os.environ.items() if k not in HARNESS_VARS}
    env.update(extra or {})
    return env


def run_child(name, argv, rows, log_path, timeout, postmaster_pid, broker_pid=None,
              backends=False, env=None, started=None):
    """Runs argv to completion under the launcher and returns its Measurement.  The launcher
    SIGKILLs it after timeout seconds; if this process is interrupted, the launcher gets
    SIGTERM (by its handle) and passes it on.  backends=True also samples the client
    backends' CPU (Measurement.backend_cpu), which then does not count as other load.  env:
    variables added to the program's environment (a dict).  started: called with the
    launcher's Popen once it runs (the program is its only child), so a program that runs until
    stopped (a live consumer) can be ended from another thread with launcher.terminate(): the
    launcher forwards SIGTERM."""
    sampler = Sampler(postmaster_pid, backends=backends)
    broker_before = proc_cpu_s(broker_pid) if broker_pid else None
    busy_before = machine_busy_s()
    result_path = log_path + ".rusage.json"
    with open(log_path, "wb") as err:
        sampler.start()
        launcher = subprocess.Popen(
            [sys.executable, "-S", "-I", "-c", LAUNCHER, result_path, str(timeout), *argv],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=child_env(env))
        try:
            if started is not None:
                started(launcher)
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
    m.backend_cpu = sampler.backend_cpu
    m.others_cpu = max(0.0, busy - m.cpu - walsender_cpu - (broker_cpu or 0.0)
                       - (m.backend_cpu or 0.0))
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


def pgbench_tps(out):
    """pgbench's reported tps (its "tps = N (without initial connection time)" line), or None."""
    return next((float(ln.split()[2]) for ln in out.splitlines() if ln.startswith("tps")), None)


def run_tool(argv, what, timeout):
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if r.returncode != 0:
        raise BenchError(f"{what} failed ({r.returncode}): {shlex.join(argv)}\n{r.stdout[-3000:]}")
    return r.stdout




def git_describe(repo):
    """`git describe --always --dirty` of the checkout, or "?"."""
    try:
        out = subprocess.run(["git", "-C", repo, "describe", "--always", "--dirty"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    except OSError:
        out = ""
    return out.strip() or "?"


# -- the insert workload's table -------------------------------------------------------------
# bench_kafka's workload (a) inserts into it; bench_snapshot reads it: int8 primary key, text,
# numeric, timestamptz and bool (about 100 bytes a row on disk).

def insert_table_ddl(table):
    return f"""
CREATE TABLE {table} (
    id      int8 PRIMARY KEY,
    label   text NOT NULL,
    amount  numeric(14, 2) NOT NULL,
    created timestamptz NOT NULL,
    active  bool NOT NULL
)"""


def insert_rows_sql(table):
    """INSERT of the rows with ids %s..%s (two parameters, inclusive)."""
    return f"""
INSERT INTO {table}
SELECT g, 'customer ' || md5(g::text), (g * 1.37)::numeric(14, 2),
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second', g %% 3 = 0
FROM generate_series(%s::int8, %s::int8) AS g"""


def insert_rows(conn, table, rows, txn_rows):
    """Inserts rows 1..rows, one autocommitted statement (transaction) per txn_rows rows;
    checks the count and returns it."""
    sql = insert_rows_sql(table)
    with conn.cursor() as cur:
        for start in range(1, rows + 1, txn_rows):
            cur.execute(sql, (start, min(start + txn_rows - 1, rows)))
    n = scalar(conn, f"SELECT count(*) FROM {table}")
    if n != rows:
        raise BenchError(f"loaded {n} rows into {table}, wanted {rows}")
    return n


# -- Kafka side ------------------------------------------------------------------------------

def kafka_record_count(bootstrap, topics, timeout=30):
    """Sum over the topics' partitions of (high watermark - low watermark)."""
    from confluent_kafka import Consumer, TopicPartition  # only the Kafka benchmarks need it
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


def kafka_versions():
    """(Kafka broker version from the harness's classpath, librdkafka version), "?" unknown."""
    kafka = rdkafka = "?"
    try:
        import kafkabroker  # tests/harness, on sys.path in the Kafka benchmarks
        for jar in kafkabroker.load_classpath().split(os.pathsep):
            base = os.path.basename(jar)
            if base.startswith("kafka_2.13-") and base.endswith(".jar"):
                kafka = base[len("kafka_2.13-"):-4]
    except Exception:  # only for the report
        pass
    try:
        from confluent_kafka import libversion
        rdkafka = libversion()[0]
    except Exception:
        pass
    return kafka, rdkafka
