#!/usr/bin/python3
"""The offload figure: what capturing changes costs the primary, pgfanout against a
trigger-based outbox, in pgbench transactions per second.

Three setups, pgbench -n -c 4 -j 2 -T SECS on the primary each time, --repeat times each (3),
the order rotated between repetitions:

  none      nothing attached;
  pgfanout  build/pgfanout --sink kafka streaming live from its own slot (publication FOR ALL
            TABLES) into the broker;
  outbox    AFTER INSERT/UPDATE/DELETE FOR EACH ROW triggers on the four pgbench tables write
            to_jsonb(NEW/OLD) into an outbox table; bench/outbox_relay.py polls it, DELETEs
            what it reads (... FOR UPDATE SKIP LOCKED ... RETURNING), produces to Kafka,
            commits once Kafka acked.

After pgbench, pgfanout / the relay runs on until it has caught up (every change in Kafka),
then gets SIGTERM; its peak RSS and CPU come from os.wait4 (benchlib.run_child).

Two modes (--mode both, the default):

  naive  everything shares all CPUs, fsync = off (the harness's default);
  fair   like production, where the CDC worker and the broker run on other machines:
         PostgreSQL (postmaster and every child: backends, walsender, walwriter...) pinned to
         CPU 0, pgfanout, the Kafka broker, the relay, pgbench (client side) and this script
         pinned to CPU 1; fsync = on.

In fair mode it also measures what reduces the walsender's decoding cost (pgfanout attached,
walsender and backend CPU-s per 1k transactions): publication FOR ALL TABLES, only
pgbench_accounts, a row filter (WHERE), a column list, and logical_decoding_work_mem 64MB
(PostgreSQL's default) against the bench's 256MB.

  /usr/bin/python3 bench/offload.py                         # full size (~20 min)
  /usr/bin/python3 bench/offload.py -T 5 --repeat 1 --scale 2 --decode-secs 5   # quick look

Not part of ctest.  Every process it starts is stopped by its own handle.
"""
import argparse
import datetime
import os
import platform
import re
import shlex
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "harness"))

from kafkabroker import KafkaBroker  # noqa: E402
from pgcluster import PgCluster  # noqa: E402
from benchlib import (  # noqa: E402
    BenchError,
    CLK_TCK,
    PGBIN,
    PG_CONF,
    Sampler,
    _BACKGROUND,
    bench_main,
    connect,
    create_slots,
    drop_slots,
    git_describe,
    kafka_record_count,
    kafka_versions,
    log,
    pg_args,
    postmaster_children,
    proc_cpu_s,
    run_child,
    run_tool,
    scalar,
    tail,
    pause_before_run,
)

DEFAULT_PGFANOUT = os.path.join(REPO, "build", "pgfanout")
RELAY = os.path.join(HERE, "outbox_relay.py")
PGBENCH_TABLES = {"pgbench_accounts": "aid", "pgbench_branches": "bid",
                  "pgbench_tellers": "tid", "pgbench_history": "aid"}  # table: Kafka key column
SETUPS = ["none", "pgfanout", "outbox"]
TARGET = 1 / 3  # pgfanout's TPS loss ÷ the outbox's

OUTBOX_DDL = """
CREATE TABLE outbox (
    id      bigserial PRIMARY KEY,
    tbl     text NOT NULL,
    op      char NOT NULL,
    key     text,
    payload jsonb NOT NULL,
    created timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION outbox_capture() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO outbox (tbl, op, key, payload)
        VALUES (TG_TABLE_NAME, 'd', to_jsonb(OLD) ->> TG_ARGV[0], to_jsonb(OLD));
    ELSE
        INSERT INTO outbox (tbl, op, key, payload)
        VALUES (TG_TABLE_NAME, lower(left(TG_OP, 1)), to_jsonb(NEW) ->> TG_ARGV[0],
                to_jsonb(NEW));
    END IF;
    RETURN NULL;
END $$;
"""

# The decoding-cost variants: (key, what, publication clause, logical_decoding_work_mem).
DECODE_VARIANTS = [
    ("all", "publication FOR ALL TABLES", "FOR ALL TABLES", None),
    ("accounts", "only pgbench_accounts", "FOR TABLE pgbench_accounts", None),
    ("rowfilter", "pgbench_accounts WHERE (aid % 10 = 0)",
     "FOR TABLE pgbench_accounts WHERE (aid % 10 = 0)", None),
    ("columns", "pgbench_accounts (aid, abalance): no filler",
     "FOR TABLE pgbench_accounts (aid, abalance)", None),
    ("workmem", "FOR ALL TABLES, logical_decoding_work_mem 64MB", "FOR ALL TABLES", "64MB"),
]


# -- CPU affinity ----------------------------------------------------------------------------

def pin(pid, cpus):
    """Sets the CPU affinity of every thread of pid (a JVM has dozens); threads and children
    made later inherit it from their parent."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:  # the thread ended meanwhile
            pass


def pin_postgres(postmaster_pid, cpus):
    """The postmaster and all its current children; new backends and walsenders are forked by
    the postmaster, so they inherit its affinity."""
    pin(postmaster_pid, cpus)
    for pid, _ in postmaster_children(postmaster_pid):
        pin(pid, cpus)


def pg_background_cpu(postmaster_pid):
    """CPU seconds of the postmaster and its long-lived background processes (walwriter,
    checkpointer, background writer...): diffed around a run."""
    total = proc_cpu_s(postmaster_pid) or 0.0
    for pid, title in postmaster_children(postmaster_pid):
        if any(b in title for b in _BACKGROUND):
            total += proc_cpu_s(pid) or 0.0
    return total


class Mode:
    """naive: all CPUs, fsync off; fair: PostgreSQL on pg_cpu, the rest on other_cpu, fsync
    on.  apply() switches the running cluster and broker (fsync is a reload setting)."""

    def __init__(self, name, args):
        self.name = name
        self.fair = name == "fair"
        self.all_cpus = set(range(os.cpu_count()))
        self.pg_cpus = {args.pg_cpu} if self.fair else self.all_cpus
        self.other_cpus = {args.other_cpu} if self.fair else self.all_cpus
        self.other_cpu = args.other_cpu
        self.fsync = "on" if self.fair else "off"

    def apply(self, conn, cluster, broker):
        pin_postgres(cluster.proc.pid, self.pg_cpus)
        pin(broker.pid, self.other_cpus)
        os.sched_setaffinity(0, self.other_cpus)  # this script's main thread: its samplers
        conn.execute(f"ALTER SYSTEM SET fsync = {self.fsync}")
        conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.5)
        got = scalar(conn, "SHOW fsync")
        if got != self.fsync:
            raise BenchError(f"fsync is {got} after the reload, wanted {self.fsync}")

    def wrap(self, argv):
        """argv run on the client-side CPU (taskset execs the program: same pid)."""
        if not self.fair:
            return argv
        return ["/usr/bin/taskset", "-c", ",".join(map(str, sorted(self.other_cpus))), *argv]

    def describe(self):
        if self.fair:
            return (f"fair: PostgreSQL (postmaster and all children, walsender included) "
                    f"pinned to CPU {sorted(self.pg_cpus)[0]}; pgfanout, the Kafka broker, the "
                    f"outbox relay, pgbench (client side) and the benchmark pinned to CPU "
                    f"{sorted(self.other_cpus)[0]}; fsync on")
        return f"naive: everything shares the {len(self.all_cpus)} CPUs; fsync off"


# -- one pgbench run -------------------------------------------------------------------------

def parse_pgbench(out):
    """(tps, transactions) from pgbench's report."""
    tps = re.search(r"^tps = ([0-9.]+) \(without initial connection time\)", out, re.M)
    txns = re.search(r"^number of transactions actually processed: (\d+)", out, re.M)
    if not tps or not txns:
        raise BenchError(f"cannot read pgbench's report:\n{out[-2000:]}")
    return float(tps.group(1)), int(txns.group(1))


def reset_tables(conn):
    """Before a run: an empty history, vacuumed tables and a checkpoint, so runs start alike
    (autovacuum is off in the bench's settings)."""
    conn.execute("TRUNCATE pgbench_history")
    conn.execute("VACUUM " + ", ".join(t for t in PGBENCH_TABLES if t != "pgbench_history"))
    conn.execute("CHECKPOINT")


def cpu_busy_s():
    """Busy seconds of each CPU (/proc/stat cpuN lines: all but idle and iowait), by index."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *v = line.split()
                v = [int(x) for x in v]
                out[int(name[3:])] = (sum(v[:8]) - v[3] - v[4]) / CLK_TCK
    return out


LAST_BUSY = {}  # CPU index: busy fraction during the last pgbench run (everyone's processes)


def run_pgbench(args, mode, cluster, secs):
    """pgbench -n -c C -j 2 -T secs on the client-side CPU; returns (tps, transactions) and
    leaves each CPU's busy fraction during the run in LAST_BUSY."""
    argv = mode.wrap([f"{PGBIN}/pgbench", "-n", "-c", str(args.clients), "-j", "2",
                      "-T", str(secs), *pg_args(cluster), "postgres"])
    b0, t0 = cpu_busy_s(), time.monotonic()
    tps, txns = parse_pgbench(run_tool(argv, "pgbench", timeout=secs * 4 + 120))
    b1, dt = cpu_busy_s(), time.monotonic() - t0
    LAST_BUSY.clear()
    LAST_BUSY.update({c: (b1[c] - b0.get(c, 0.0)) / dt for c in b1})
    return tps, txns


def wait_until(what, cond, timeout, interval=0.2):
    """Polls cond() until true; returns the seconds it took; BenchError after timeout."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise BenchError(f"{what}: not done after {timeout:.0f} s")
        time.sleep(interval)
    return time.monotonic() - t0


class Live:
    """A consumer (pgfanout or the relay) run by benchlib.run_child in a thread until stop():
    SIGTERM through its launcher, then its Measurement."""

    def __init__(self, name, argv, log_path, args, cluster, broker):
        self.launcher = None
        self.result = None
        self.error = None
        self.ready = threading.Event()

        def started(launcher):
            self.launcher = launcher
            self.ready.set()

        def body():
            try:
                self.result = run_child(name, argv, 0, log_path, args.timeout, cluster.proc.pid,
                                        broker.pid, backends=True, started=started)
            except BaseException as e:  # reported by stop()
                self.error = e
                self.ready.set()

        self.log_path = log_path
        self.thread = threading.Thread(target=body, daemon=True)
        self.thread.start()
        self.ready.wait(30)

    def alive(self):
        return self.thread.is_alive()

    def stop(self):
        if self.launcher is not None and self.launcher.poll() is None:
            self.launcher.terminate()
        self.thread.join(60)
        if self.error is not None:
            raise self.error
        if self.result is None:
            raise BenchError(f"no measurement for {self.log_path}")
        if self.result.exitcode != 0:
            raise BenchError(f"exited with {self.result.exitcode}; stderr tail:\n"
                             f"{tail(self.log_path)}")
        return self.result


def check_alive(live, what):
    """BenchError (with the log) when the live consumer has already exited."""
    if not live.alive():
        live.stop()  # raises with the log
        raise BenchError(f"{what} exited early:\n{tail(live.log_path)}")


def check_pinned(mode, pid, what):
    """A PostgreSQL child forked during the run must have inherited the postmaster's CPUs."""
    got = os.sched_getaffinity(pid)
    if got != mode.pg_cpus:
        raise BenchError(f"{what} (pid {pid}) runs on CPUs {sorted(got)}, not "
                         f"{sorted(mode.pg_cpus)}")


def slot_caught_up(conn, slot, lsn):
    """The slot's walsender has sent (decoded) up to lsn."""
    return scalar(conn, "SELECT coalesce(r.sent_lsn >= %s::pg_lsn, false) FROM pg_replication_slots s"
                        " LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid"
                        " WHERE s.slot_name = %s", (lsn, slot))


def run_none(args, mode, cluster, broker, conn, workdir, tag, secs):
    """pgbench alone, backends sampled."""
    sampler = Sampler(cluster.proc.pid, backends=True)
    bg0 = pg_background_cpu(cluster.proc.pid)
    sampler.start()
    tps, txns = run_pgbench(args, mode, cluster, secs)
    sampler.stop()
    return {"tps": tps, "txns": txns, "backend_cpu": sampler.backend_cpu,
            "bg_cpu": pg_background_cpu(cluster.proc.pid) - bg0, "walsender_cpu": 0.0}


def run_pgfanout(args, mode, cluster, broker, conn, workdir, tag, secs, publication="bench_pub",
                 check_kafka=True):
    """pgfanout live on a fresh slot while pgbench runs; then until it caught up."""
    slot = f"offload_{tag}".replace("-", "_")
    prefix = f"offload-{tag}-{os.getpid()}"
    topics = [f"{prefix}.public.{t}" for t in PGBENCH_TABLES]
    create_slots(conn, slot)
    broker.create_topics(*topics)
    argv = mode.wrap([args.pgfanout_bin, "--dsn", cluster.dsn(), "--slot", slot,
                      "--publication", publication, "--sink", "kafka",
                      "--kafka-brokers", broker.bootstrap, "--status-interval", "1",
                      "--topic-prefix", prefix, *shlex.split(args.pgfanout_args)])
    bg0 = pg_background_cpu(cluster.proc.pid)
    live = Live("pgfanout", argv, os.path.join(workdir, f"{tag}-pgfanout.log"), args, cluster,
                broker)
    try:
        wait_until("pgfanout's slot active", lambda: (check_alive(live, "pgfanout") or True) and
                   scalar(conn, "SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                          (slot,)), 30)
        check_pinned(mode, scalar(conn, "SELECT active_pid FROM pg_replication_slots"
                                        " WHERE slot_name = %s", (slot,)), "the walsender")
        tps, txns = run_pgbench(args, mode, cluster, secs)
        end = scalar(conn, "SELECT pg_current_wal_lsn()::text")
        want = 4 * txns  # 3 updates and 1 insert per transaction
        catchup = wait_until(
            "pgfanout catching up",
            lambda: (check_alive(live, "pgfanout") or True) and slot_caught_up(conn, slot, end)
            and (not check_kafka or kafka_record_count(broker.bootstrap, topics) >= want),
            args.catchup_timeout, interval=0.3)
    finally:
        m = live.stop()
    bg = pg_background_cpu(cluster.proc.pid) - bg0
    records = kafka_record_count(broker.bootstrap, topics)
    drop_slots(conn, slot)
    return {"tps": tps, "txns": txns, "backend_cpu": m.backend_cpu, "bg_cpu": bg,
            "walsender_cpu": m.walsender_cpu, "rss": m.rss_mb, "cpu": m.cpu,
            "broker_cpu": m.broker_cpu, "catchup": catchup, "records": records}


def run_outbox(args, mode, cluster, broker, conn, workdir, tag, secs):
    """Outbox triggers and the relay while pgbench runs; then until the outbox is empty."""
    topic = f"offload-{tag}-{os.getpid()}.outbox"
    conn.execute(OUTBOX_DDL)
    for t, key in PGBENCH_TABLES.items():
        conn.execute(f"CREATE TRIGGER outbox_capture AFTER INSERT OR UPDATE OR DELETE ON {t} "
                     f"FOR EACH ROW EXECUTE FUNCTION outbox_capture('{key}')")
    broker.create_topics(topic)
    argv = mode.wrap([sys.executable, RELAY, "--dsn", cluster.dsn(), "--bootstrap",
                      broker.bootstrap, "--topic", topic, "--batch", str(args.relay_batch),
                      "--poll-ms", str(args.relay_poll_ms)])
    bg0 = pg_background_cpu(cluster.proc.pid)
    live = Live("outbox relay", argv, os.path.join(workdir, f"{tag}-relay.log"), args, cluster,
                broker)
    relay_backend = [None, 0.0]
    try:
        wait_until("the relay's connection", lambda: (check_alive(live, "the relay") or True) and
                   scalar(conn, "SELECT count(*) FROM pg_stat_activity"
                                " WHERE application_name = 'outbox-relay'"), 30)
        relay_backend[0] = scalar(conn, "SELECT pid FROM pg_stat_activity"
                                        " WHERE application_name = 'outbox-relay'")
        relay_backend[1] = proc_cpu_s(relay_backend[0]) or 0.0
        check_pinned(mode, relay_backend[0], "the relay's backend")
        tps, txns = run_pgbench(args, mode, cluster, secs)
        backlog = scalar(conn, "SELECT count(*) FROM outbox")
        catchup = wait_until(
            "the relay emptying the outbox",
            lambda: (check_alive(live, "the relay") or True) and
            not scalar(conn, "SELECT EXISTS (SELECT 1 FROM outbox)"),
            args.catchup_timeout, interval=0.3)
        relay_backend_cpu = (proc_cpu_s(relay_backend[0]) or 0.0) - relay_backend[1]
    finally:
        m = live.stop()
    bg = pg_background_cpu(cluster.proc.pid) - bg0
    records = kafka_record_count(broker.bootstrap, [topic])
    if records < 4 * txns:
        raise BenchError(f"Kafka holds {records:,} outbox records, expected {4 * txns:,}")
    for t in PGBENCH_TABLES:
        conn.execute(f"DROP TRIGGER outbox_capture ON {t}")
    conn.execute("DROP TABLE outbox")
    conn.execute("DROP FUNCTION outbox_capture()")
    return {"tps": tps, "txns": txns, "backend_cpu": m.backend_cpu, "bg_cpu": bg,
            "walsender_cpu": 0.0, "rss": m.rss_mb, "cpu": m.cpu, "broker_cpu": m.broker_cpu,
            "catchup": catchup, "records": records, "backlog": backlog,
            "relay_backend_cpu": relay_backend_cpu}


RUNNERS = {"none": run_none, "pgfanout": run_pgfanout, "outbox": run_outbox}


def fmt_run(setup, r):
    """One run as a log line."""
    s = (f"{setup:<9} {r['tps']:9,.1f} tps  {r['txns']:8,} txns  backends CPU "
         f"{r['backend_cpu']:.2f} s  walsender CPU {r['walsender_cpu']:.2f} s  "
         f"PG background CPU {r['bg_cpu']:.2f} s")
    if setup != "none":
        s += (f"  | {setup} CPU {r['cpu']:.2f} s, peak RSS {r['rss']:.1f} MB, broker CPU "
              f"{r['broker_cpu'] or 0:.2f} s, caught up {r['catchup']:.1f} s after pgbench, "
              f"{r['records']:,} Kafka records")
    if setup == "outbox":
        s += (f", outbox backlog at pgbench's end {r['backlog']:,} rows, relay's backend CPU "
              f"{r['relay_backend_cpu']:.2f} s (in backends CPU)")
    return s


def busy_text(busy):
    """Per-CPU busy fractions as text."""
    return ", ".join(f"CPU{c} {b:.0%} busy" for c, b in sorted(busy.items()))


def settle(args):
    """The pause and the quiet-machine wait before a timed run."""
    pause_before_run(args)


def run_mode(mode, args, cluster, broker, conn, workdir):
    """--repeat rounds of the three setups, the order rotated per round; returns
    {setup: [result, ...]}."""
    log(f"mode {mode.describe()}")
    mode.apply(conn, cluster, broker)
    results = {s: [] for s in SETUPS}
    for rep in range(args.repeat):
        order = SETUPS[rep % 3:] + SETUPS[:rep % 3]
        for setup in order:
            reset_tables(conn)
            settle(args)
            tag = f"{mode.name}-{setup}-r{rep}"
            r = RUNNERS[setup](args, mode, cluster, broker, conn, workdir, tag, args.secs)
            r["secs"] = args.secs
            r["cpu_busy"] = dict(LAST_BUSY)
            results[setup].append(r)
            log(f"  [{mode.name} rep {rep + 1}/{args.repeat}] " + fmt_run(setup, r)
                + "  | during pgbench: " + busy_text(r["cpu_busy"]))
    return results


def run_decoding(mode, args, cluster, broker, conn, workdir):
    """The walsender's cost per variant (fair mode, pgfanout attached); returns rows."""
    log("decoding cost: " + mode.describe())
    mode.apply(conn, cluster, broker)
    rows = []
    for rep in range(args.decode_repeat):
        for key, what, clause, workmem in DECODE_VARIANTS:
            pub = f"offload_{key}"
            conn.execute(f"DROP PUBLICATION IF EXISTS {pub}")
            conn.execute(f"CREATE PUBLICATION {pub} {clause}")
            if workmem:
                conn.execute(f"ALTER SYSTEM SET logical_decoding_work_mem = '{workmem}'")
                conn.execute("SELECT pg_reload_conf()")
            wm = scalar(conn, "SHOW logical_decoding_work_mem")
            try:
                reset_tables(conn)
                settle(args)
                r = run_pgfanout(args, mode, cluster, broker, conn, workdir,
                                 f"decode-{key}-r{rep}", args.decode_secs, publication=pub,
                                 check_kafka=(key in ("all", "workmem")))
            finally:
                if workmem:
                    conn.execute(f"ALTER SYSTEM SET logical_decoding_work_mem = "
                                 f"{PG_CONF['logical_decoding_work_mem']}")
                    conn.execute("SELECT pg_reload_conf()")
                conn.execute(f"DROP PUBLICATION {pub}")
            r.update(key=key, what=what, workmem=wm, cpu_busy=dict(LAST_BUSY))
            rows.append(r)
            log(f"  [decode {key} rep {rep + 1}] " + fmt_run("pgfanout", r)
                + "  | during pgbench: " + busy_text(r["cpu_busy"]))
    return rows


# -- report ----------------------------------------------------------------------------------

def med(rs, k):
    return statistics.median([r[k] for r in rs])


def per_k(cpu, txns):
    return 1000.0 * cpu / txns if txns else 0.0


def mode_summary(mode, res):
    """Medians over the rounds of one mode, losses and the pgfanout ÷ outbox loss ratio."""
    none, fan, box = res["none"], res["pgfanout"], res["outbox"]
    base = med(none, "tps")
    s = {"mode": mode, "base": base, "fan": med(fan, "tps"), "box": med(box, "tps"),
         "fan_rss_max": max(r["rss"] for r in fan), "box_rss_max": max(r["rss"] for r in box),
         "fan_rss": med(fan, "rss"), "box_rss": med(box, "rss"),
         "fan_cpu_k": statistics.median([per_k(r["cpu"], r["txns"]) for r in fan]),
         "box_cpu_k": statistics.median([per_k(r["cpu"], r["txns"]) for r in box]),
         "ws_k": statistics.median([per_k(r["walsender_cpu"], r["txns"]) for r in fan]),
         "none_be_k": statistics.median([per_k(r["backend_cpu"], r["txns"]) for r in none]),
         "fan_be_k": statistics.median([per_k(r["backend_cpu"], r["txns"]) for r in fan]),
         "box_be_k": statistics.median([per_k(r["backend_cpu"], r["txns"]) for r in box]),
         "relay_be_k": statistics.median([per_k(r["relay_backend_cpu"], r["txns"]) for r in box]),
         "fan_catchup": med(fan, "catchup"), "box_catchup": med(box, "catchup"),
         "pg_busy": statistics.median([(r["backend_cpu"] + r["walsender_cpu"] + r["bg_cpu"])
                                       / r["secs"] for r in fan]),
         "busy": {k: {c: statistics.median([r["cpu_busy"].get(c, 0.0) for r in res[k]])
                      for c in res[k][0]["cpu_busy"]} for k in SETUPS},
         "n": len(none)}
    s["fan_loss"] = (base - s["fan"]) / base if base else 0.0
    s["box_loss"] = (base - s["box"]) / base if base else 0.0
    s["ratio"] = ((base - s["fan"]) / (base - s["box"])) if base - s["box"] > 0 else None
    return s


def verdict(s):
    """Whether the walsender's decoding is what pgfanout costs the primary (fair mode): its
    share of PostgreSQL's CPU against the TPS lost, read with how busy PostgreSQL's CPU was
    (by PostgreSQL, and by anything else that ran there)."""
    mode = s["mode"]
    pg_cpu = sorted(mode.pg_cpus)[0]
    ws, be, busy, loss = s["ws_k"], s["fan_be_k"], s["pg_busy"], s["fan_loss"]
    core = s["busy"]["pgfanout"].get(pg_cpu, busy)
    client = s["busy"]["pgfanout"].get(mode.other_cpu, 0.0)
    share = ws / (ws + be) if ws + be > 0 else 0.0
    text = (f"walsender {ws:.3f} CPU-s per 1k txns against backends {be:.3f} with pgfanout "
            f"attached: the walsender is {share:.0%} of PostgreSQL's foreground CPU. CPU{pg_cpu} "
            f"was {core:.0%} busy, {busy:.0%} of it PostgreSQL's own processes; TPS lost "
            f"{loss:.1%}. ")
    if core - busy > 0.15:
        text += (f"**Not conclusive**: other processes (not this benchmark's) took "
                 f"{core - busy:.0%} of PostgreSQL's CPU; rerun on a quiet machine. ")
    if client >= 0.9:
        text += (f"The client-side CPU (pgbench, pgfanout, the broker) was {client:.0%} busy "
                 f"with pgfanout attached, so part of the loss can be pgbench waiting for its "
                 f"own CPU rather than the primary. ")
    if share < 0.02:
        return text + ("The walsender's decoding is negligible next to the backends' own work: "
                       "**it is not what costs the primary**.")
    if core < 0.85:
        return text + ("PostgreSQL's CPU had idle time (commits wait on the WAL flush), so the "
                       "walsender mostly used time the backends left idle: **decoding CPU alone "
                       "does not explain the loss**.")
    if abs(loss - share) <= max(0.05, 0.5 * share):
        return text + ("PostgreSQL's CPU was saturated, so the walsender's CPU was taken from "
                       "the backends, and its share matches the loss: **yes, the walsender's "
                       "decoding is what costs the primary**.")
    return text + (f"PostgreSQL's CPU was saturated, so the walsender's CPU was taken from the "
                   f"backends, but its share ({share:.0%}) does not match the loss "
                   f"({loss:.1%}): **decoding explains only part of it**, or the rounds are "
                   f"noisy (compare them).")


def print_summary(summaries, decoding, args, versions):
    out = [
        f"Offload figure: pgbench TPS on the primary with nothing attached, pgfanout, a "
        f"trigger outbox; {versions['date']}, median of {args.repeat} run(s) per figure "
        f"(`bench/offload.py`)",
        "",
        f"- machine: {versions['cpus']} CPUs, {versions['kernel']}; PostgreSQL "
        f"{versions['pg']}; Kafka {versions['kafka']} (1 local broker); librdkafka "
        f"{versions['rdkafka']}; broker data in {args.broker_dir or tempfile.gettempdir()}",
        f"- pgfanout {versions['pgfanout']}, extra args: "
        f"{('`' + args.pgfanout_args + '`') if args.pgfanout_args else '(none)'}",
        f"- pgbench -n -c {args.clients} -j 2 -T {args.secs}, scale {args.scale}; history "
        f"truncated, tables vacuumed and a checkpoint before each run; order rotated per round",
        f"- pgfanout: publication FOR ALL TABLES, `--sink kafka`; outbox: AFTER ROW triggers on "
        f"the 4 tables, relay `bench/outbox_relay.py` (batch {args.relay_batch}, "
        f"poll {args.relay_poll_ms:g} ms, DELETE … SKIP LOCKED RETURNING → Kafka → COMMIT)",
        "",
    ]
    for s in summaries:
        out.append(f"- {s['mode'].describe()}")
    out += [
        "",
        "| mode | none tps | pgfanout tps | outbox tps | pgfanout loss | outbox loss "
        "| pgfanout loss ÷ outbox loss (≤ 0.33) | pgfanout peak RSS MB | relay peak RSS MB "
        "| pgfanout CPU-s/1k txn | relay CPU-s/1k txn |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    met = True
    for s in summaries:
        ok = s["ratio"] is not None and s["ratio"] <= TARGET
        met = met and ok
        if s["ratio"] is None:
            ratio = "n/a (the outbox lost nothing)"
        elif s["ratio"] < 0:
            ratio = f"{s['ratio']:.2f} ok (pgfanout lost nothing: noise)"
        else:
            ratio = f"{s['ratio']:.2f} {'ok' if ok else 'MISS'}"
        out.append(
            f"| {s['mode'].name} | {s['base']:,.0f} | {s['fan']:,.0f} | {s['box']:,.0f} "
            f"| {s['fan_loss']:.1%} | {s['box_loss']:.1%} | {ratio} "
            f"| {s['fan_rss']:.1f} (max {s['fan_rss_max']:.1f}) "
            f"| {s['box_rss']:.1f} (max {s['box_rss_max']:.1f}) "
            f"| {s['fan_cpu_k']:.3f} | {s['box_cpu_k']:.3f} |")
    out += ["", "loss = (none − setup) ÷ none. RSS = ru_maxrss of the process (the relay is a "
            "Python process: interpreter, psycopg, librdkafka). CPU = user+sys, all threads.", ""]
    for s in summaries:
        out.append(
            f"- {s['mode'].name}: primary CPU-s per 1k txns — backends {s['none_be_k']:.3f} "
            f"(none), {s['fan_be_k']:.3f} + walsender {s['ws_k']:.3f} (pgfanout), "
            f"{s['box_be_k']:.3f} incl. the relay's own backend {s['relay_be_k']:.3f} (outbox); "
            f"caught up {s['fan_catchup']:.1f} s (pgfanout) / {s['box_catchup']:.1f} s "
            f"(relay) after pgbench ended; during pgbench (every process, ours and "
            f"others'): " + "; ".join(f"{k}: {busy_text(s['busy'][k])}" for k in SETUPS))
    for s in summaries:
        if s["mode"].fair:
            out += ["", f"**Is decoding what costs the primary?** {verdict(s)}"]
    if decoding:
        wm_default = PG_CONF["logical_decoding_work_mem"].strip("'")
        out += ["", f"Walsender decoding cost, fair mode, pgfanout attached, pgbench -T "
                f"{args.decode_secs} per variant (median of {args.decode_repeat}); "
                f"logical_decoding_work_mem {wm_default} unless said:", "",
                "| variant | tps | walsender CPU-s / 1k txn | backends CPU-s / 1k txn "
                "| walsender ÷ backends | Kafka records / txn |",
                "|---|--:|--:|--:|--:|--:|"]
        for key, what, _, _ in DECODE_VARIANTS:
            rs = [r for r in decoding if r["key"] == key]
            ws = statistics.median([per_k(r["walsender_cpu"], r["txns"]) for r in rs])
            be = statistics.median([per_k(r["backend_cpu"], r["txns"]) for r in rs])
            rec = statistics.median([r["records"] / r["txns"] if r["txns"] else 0 for r in rs])
            out.append(f"| {what} | {med(rs, 'tps'):,.0f} | {ws:.3f} | {be:.3f} "
                       f"| {ws / be if be else 0:.2f} | {rec:.2f} |")
        out += ["", "Every variant still decodes the whole WAL: a publication, row filter or "
                "column list only decides what pgoutput sends after decoding."]
    print("\n==== SUMMARY (Markdown, paste into docs) ====", flush=True)
    print("\n".join(out), flush=True)
    print("==== END SUMMARY ====", flush=True)
    return met


def versions_of(conn):
    kafka, rdkafka = kafka_versions()
    return {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "cpus": os.cpu_count(), "kernel": f"Linux {platform.release()}",
            "pg": scalar(conn, "SHOW server_version"), "kafka": kafka, "rdkafka": rdkafka,
            "pgfanout": f"git {git_describe(REPO)}"}


# -- main ------------------------------------------------------------------------------------

def start_broker(args):
    """The broker with its data under --broker-dir: by default tmpfs, so that its log writes do
    not compete with PostgreSQL's WAL flushes for the disk (in production the broker has its
    own disks; fsync = on makes the primary sensitive to that)."""
    saved = tempfile.tempdir
    if args.broker_dir:
        tempfile.tempdir = args.broker_dir
    try:
        return KafkaBroker().start()
    finally:
        tempfile.tempdir = saved


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["naive", "fair", "both"], default="both")
    p.add_argument("-T", "--secs", type=int, default=30, help="pgbench -T per run (default 30)")
    p.add_argument("--scale", type=int, default=10, help="pgbench -i -s (default 10)")
    p.add_argument("--clients", type=int, default=4, help="pgbench -c (default 4)")
    p.add_argument("--repeat", type=int, default=3, help="rounds per mode (default 3)")
    p.add_argument("--decode-secs", type=int, default=None,
                   help="pgbench -T per decoding-cost variant (default: -T)")
    p.add_argument("--decode-repeat", type=int, default=1,
                   help="rounds of the decoding-cost variants (default 1)")
    p.add_argument("--no-decoding", action="store_true",
                   help="skip the decoding-cost table (fair mode only anyway)")
    p.add_argument("--pg-cpu", type=int, default=0, help="fair mode: PostgreSQL's CPU (0)")
    p.add_argument("--other-cpu", type=int, default=1,
                   help="fair mode: the CPU of everything else (1)")
    p.add_argument("--broker-dir", default="/dev/shm" if os.path.isdir("/dev/shm") else "",
                   help="where the broker keeps its data (default /dev/shm: off PostgreSQL's "
                        "disk; '' for the system temp dir)")
    p.add_argument("--relay-batch", type=int, default=1000)
    p.add_argument("--relay-poll-ms", type=float, default=50)
    p.add_argument("--pgfanout-args", default="", help="extra pgfanout flags, shell-quoted")
    p.add_argument("--pgfanout-bin", default=os.environ.get("PGFANOUT_BIN", DEFAULT_PGFANOUT))
    p.add_argument("--catchup-timeout", type=float, default=600,
                   help="seconds pgfanout / the relay may take to catch up after pgbench")
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--wait-quiet", type=float, default=30,
                   help="wait up to this long for a quiet machine before each run (0: no)")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--strict", action="store_true", help="exit 3 when the ratio goal is missed")
    p.add_argument("--keep-logs", action="store_true")
    args = p.parse_args(argv)
    if args.decode_secs is None:
        args.decode_secs = args.secs
    args.modes = ["naive", "fair"] if args.mode == "both" else [args.mode]
    if "fair" in args.modes:
        cpus = os.sched_getaffinity(0)
        if args.pg_cpu == args.other_cpu or not {args.pg_cpu, args.other_cpu} <= cpus:
            p.error(f"fair mode needs two distinct usable CPUs (--pg-cpu, --other-cpu); "
                    f"usable: {sorted(cpus)}")
    return args


def main(argv=None):
    args = parse_args(argv)

    def body(workdir, cluster, broker):
        conn = connect(cluster.dsn())
        conn.execute("CREATE PUBLICATION bench_pub FOR ALL TABLES")
        versions = versions_of(conn)
        log(f"PostgreSQL {versions['pg']} on port {cluster.port}, Kafka at {broker.bootstrap}; "
            f"pgbench -i -s {args.scale}")
        run_tool([f"{PGBIN}/pgbench", "-i", "-q", "-s", str(args.scale), *pg_args(cluster),
                  "postgres"], "pgbench -i", timeout=1800)
        summaries, decoding = [], []
        try:
            for name in args.modes:
                mode = Mode(name, args)
                summaries.append(mode_summary(mode, run_mode(mode, args, cluster, broker, conn,
                                                             workdir)))
                if mode.fair and not args.no_decoding:
                    decoding = run_decoding(mode, args, cluster, broker, conn, workdir)
        finally:
            all_cpus = set(range(os.cpu_count()))
            pin_postgres(cluster.proc.pid, all_cpus)
            pin(broker.pid, all_cpus)
            os.sched_setaffinity(0, all_cpus)
        conn.close()
        return print_summary(summaries, decoding, args, versions)

    return bench_main(args, "pgfanout-offload-", [f"{PGBIN}/pgbench", "/usr/bin/taskset"],
                      [("PostgreSQL", lambda: PgCluster(extra_conf=PG_CONF).start(),
                        lambda c: c.stop()),
                       ("the Kafka broker", lambda: start_broker(args),
                        lambda b: b.cleanup())], body)


if __name__ == "__main__":
    sys.exit(main())
