#!/usr/bin/python3
"""pgfanout → Redis cache-invalidation benchmark: commit-to-ack latency under load, and keys/s.

Two parts, each with a baseline measured in the same run:

  latency     pgbench -b tpcb-like --rate R (default 1,000 and 1,500 tps) for --duration s,
              pgfanout --sink redis running live with rules on pgbench_accounts ("acct:{aid}"),
              pgbench_tellers ("teller:{tid}") and pgbench_branches ("branch:{bid}").
              Figures: pgfanout's own commit-to-ack histogram (its "redis: ..." log line at
              SIGTERM); an outside cross-check (probe transactions that invalidate a key with
              pg_logical_emit_message, timed from their commit timestamp to Redis's keyspace
              notification of the DEL); and the baseline, PostgreSQL's own delivery latency:
              commit timestamp to a pg_recvlogical (test_decoding) client receiving the COMMIT,
              on a second slot during the same load.
  throughput  --rows rows (default 1,000,000) updated in --txn-rows-row transactions (1,000)
              behind a fresh slot, then pgfanout started with --endpos catches up and exits
              once Redis acked everything: keys/s = keys / wall time.  Baseline: the same DEL
              commands (same keys, 256 per DEL like pgfanout) through `redis-cli --pipe`.
              Reference: pg_recvlogical draining the same WAL (pgoutput) to /dev/null.

Every Redis key a rule names exists beforehand (DEBUG POPULATE), so each DEL really deletes,
and afterwards the benchmark checks that exactly the keys of the changed rows are gone.
Peak RSS = ru_maxrss of pgfanout (os.wait4 through bench_kafka's small launcher).

Run with Debian's python3 (psycopg 3, redis-py and confluent_kafka come from apt):

  /usr/bin/python3 bench/bench_redis.py                          # full size, 2 repetitions
  /usr/bin/python3 bench/bench_redis.py --repeat 1 --rates 1000 --duration 10 --rows 200000
  /usr/bin/python3 bench/bench_redis.py --pg-socket unix         # consumers over the unix socket
  /usr/bin/python3 bench/bench_redis.py --parts latency --window 16 --linger-ms 1

Not part of ctest.  Every process it starts is stopped by its own handle.
"""
import argparse
import datetime
import json
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "harness"))
sys.path.insert(0, HERE)

import psycopg  # noqa: E402

import benchlib as bk  # noqa: E402  (launcher, quiet-wait, walsender sampler, SQL helpers)
from benchlib import BenchError, log, scalar  # noqa: E402
from pgcluster import PgCluster  # noqa: E402
from redisserver import RedisServer  # noqa: E402

PGBIN = bk.PGBIN
REDIS_CLI = os.environ.get("PGFANOUT_REDIS_CLI", "/usr/bin/redis-cli")
DEFAULT_PGFANOUT = os.path.join(REPO, "build", "pgfanout")
PUBLICATION = "bench_pub"
TARGET_P99_MS = 50.0
TARGET_KEYS_S = 200_000
TPS_TOLERANCE = 0.97  # pgbench --rate schedules Poisson arrivals: the count varies by ~1 %
KEYS_PER_DEL = 256    # what pgfanout packs into one DEL (sinks/redis_sink.c); the baseline too

# bench_kafka's server settings, plus commit timestamps for the outside cross-check
# (pg_xact_commit_timestamp gives the very timestamp pgoutput's Commit message carries).
PG_CONF = dict(bk.PG_CONF, track_commit_timestamp="on")

THRU_TABLE = "bench_inval"
THRU_DDL = (f"CREATE TABLE {THRU_TABLE} (id int8 PRIMARY KEY, val int8 NOT NULL,"
            " label text NOT NULL)")

# pgfanout's last line at exit (sinks/redis_sink.c, redis_close).
STATS_RE = re.compile(r"redis: (\d+) transactions, (\d+) keys in (\d+) commands; "
                      r"commit-to-ack latency p50 ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms")


class BenchRedis(RedisServer):
    """The harness's redis-server, plus DEBUG from 127.0.0.1 (DEBUG POPULATE creates a million
    keys in a fraction of a second) and a unix socket (--redis-socket unix)."""

    def _args(self):
        return super()._args() + ["--enable-debug-command", "local",
                                  "--unixsocket", self.socket, "--unixsocketperm", "700"]

    @property
    def socket(self):
        return os.path.join(self.dir, "redis.sock")


def cache_keys(rc):
    """Keys in Redis, less pgfanout's read-your-writes keys (pgfanout:ryw:<slot>)."""
    return rc.dbsize() - sum(1 for _ in rc.scan_iter(match="pgfanout:ryw:*", count=1000))


def consumer_dsn(cluster, args):
    """The DSN of pgfanout and pg_recvlogical: TCP on 127.0.0.1, or with --pg-socket unix the
    server's socket directory.  pgbench, the prober and the benchmark itself always use TCP."""
    dsn = cluster.dsn()
    if args.pg_socket == "unix":
        dsn = dsn.replace("host=127.0.0.1", f"host={cluster.root}")
    return dsn


def redis_cli_target(rserver, args):
    if args.redis_socket == "unix":
        return ["-s", rserver.socket]
    return ["-h", "127.0.0.1", "-p", str(rserver.port)]


# -- children --------------------------------------------------------------------------------

class Child:
    """A program run under bench_kafka's launcher, which reaps it with os.wait4 and reports its
    own peak RSS, CPU and wall time (fork to reap).  stop() sends SIGTERM to the launcher, which
    forwards it; the launcher SIGKILLs the program after `timeout` s."""

    def __init__(self, name, argv, log_path, timeout, stdin_path=None, stdout_path=None):
        self.name, self.argv, self.log_path = name, argv, log_path
        self.result_path = log_path + ".rusage.json"
        stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
        stdout = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
        try:
            with open(log_path, "wb") as err:
                self.proc = subprocess.Popen(
                    [sys.executable, "-S", "-I", "-c", bk.LAUNCHER, self.result_path,
                     str(timeout), *argv],
                    stdin=stdin, stdout=stdout, stderr=err)
        finally:
            for f in (stdin, stdout):
                if f is not subprocess.DEVNULL:
                    f.close()

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait_log(self, pattern, timeout):
        """Waits until the program's stderr matches pattern; fails if it exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.log_text()):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise BenchError(f"{self.name} did not log /{pattern}/ within {timeout} s\n"
                         f"{bk.tail(self.log_path)}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout=None):
        """Reaps the launcher; returns the program's result (exitcode, wall, rss_mb, cpu...)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait()
            raise BenchError(f"{self.name} still running after {timeout} s\n"
                             f"{bk.tail(self.log_path)}")
        try:
            with open(self.result_path) as f:
                r = json.load(f)
        except (OSError, ValueError):
            raise BenchError(f"the launcher of {self.name} failed ({self.proc.returncode}) "
                             f"without a result; stderr:\n{bk.tail(self.log_path)}")
        r["exitcode"] = os.waitstatus_to_exitcode(r["status"])
        r["rss_mb"] = r["maxrss_kb"] / 1024.0
        r["cpu"] = r["utime"] + r["stime"]
        if r["timed_out"]:
            raise BenchError(f"{self.name} killed at its timeout\n{bk.tail(self.log_path)}")
        if r["exitcode"] != 0:
            raise BenchError(f"{self.name} exited with {r['exitcode']}\n"
                             f"argv: {shlex.join(self.argv)}\n"
                             f"stderr (tail):\n{bk.tail(self.log_path)}")
        return r


def tree_cpu_s(pid=None):
    """CPU seconds of a process tree (default: this benchmark and all it started: PostgreSQL
    and its backends, Redis, pgbench, the consumers): each live process's utime+stime plus
    what its reaped children used (cutime+cstime).  Machine busy time minus this is other
    people's load."""
    pid = pid or os.getpid()
    try:
        with open(f"/proc/{pid}/stat") as f:
            v = f.read().rsplit(")", 1)[1].split()
        total = sum(int(x) for x in v[11:15]) / bk.CLK_TCK
        kids = set()
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.update(int(x) for x in f.read().split())
    except (OSError, ValueError, IndexError):
        return 0.0
    return total + sum(tree_cpu_s(k) for k in kids)


def parse_stats(text):
    m = STATS_RE.search(text)
    if not m:
        raise BenchError("pgfanout logged no 'redis: N transactions, ...' line at exit")
    return {"txns": int(m[1]), "keys": int(m[2]), "commands": int(m[3]),
            "p50": float(m[4]), "p99": float(m[5]), "max": float(m[6])}


def pct(values, q):
    """Nearest-rank percentile (q in 0..1) of a non-empty list."""
    v = sorted(values)
    return v[max(0, min(len(v) - 1, int(q * len(v) + 0.999999) - 1))]


def lat_summary(values_ms):
    if not values_ms:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {"n": len(values_ms), "p50": pct(values_ms, 0.5), "p99": pct(values_ms, 0.99),
            "max": max(values_ms)}


def write_series(path, header, series):
    """Per-transaction latencies (commit epoch s, ms), for looking at spikes (--keep-logs)."""
    with open(path, "w") as f:
        f.write(header + "\n")
        f.writelines(f"{t:.6f},{ms:.3f}\n" for t, ms in series)


# -- setup -----------------------------------------------------------------------------------

def item_prefixes(n):
    """Key prefixes of the throughput rule: item, item2, item3, ... (one per key a row feeds)."""
    return ["item"] + [f"item{i}" for i in range(2, n + 1)]


def write_config(path, args, rserver, part):
    """pgfanout's YAML for one part: the bench's Redis (TCP or its unix socket), window and
    linger_ms only when given, and the rules for that part's tables."""
    if args.redis_socket == "unix":
        lines = ["redis:", f"  host: {rserver.socket}"]
    else:
        lines = ["redis:", "  host: 127.0.0.1", f"  port: {rserver.port}"]
    if args.window is not None:
        lines.append(f"  window: {args.window}")
    if args.linger_ms is not None:
        lines.append(f"  linger_ms: {args.linger_ms}")
    lines.append("  rules:")
    if part == "latency":
        lines += ["    - table: public.pgbench_accounts", '      keys: ["acct:{aid}"]',
                  "    - table: public.pgbench_tellers", '      keys: ["teller:{tid}"]',
                  "    - table: public.pgbench_branches", '      keys: ["branch:{bid}"]']
    else:
        keys = ", ".join(f'"{p}:{{id}}"' for p in item_prefixes(args.keys_per_row))
        lines += [f"    - table: public.{THRU_TABLE}", f"      keys: [{keys}]"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def populate(rc, count, prefix):
    """Creates prefix:0 .. prefix:count-1 (DEBUG POPULATE); ids start at 1, so key 0 is spare."""
    rc.execute_command("DEBUG", "POPULATE", count, prefix, 16)


def pgfanout_argv(args, dsn, slot, config, endpos=None):
    argv = [args.pgfanout_bin, "--dsn", dsn, "--slot", slot, "--publication", PUBLICATION,
            "--sink", "redis", "--config", config, "--status-interval", "1"]
    if endpos:
        argv += ["--endpos", endpos]
    return argv + shlex.split(args.pgfanout_args)


def settle(args):
    bk.pause_before_run(args)


# -- part 1: latency under pgbench load ------------------------------------------------------

class DeliveryReader(threading.Thread):
    """pg_recvlogical on a test_decoding slot, writing into our pipe: for every COMMIT line
    ("COMMIT xid (at 2026-... +00)") records (commit time, now - commit time in ms).  Its
    stdout is unbuffered write()s, so a line is seen as soon as the walsender sent it."""

    def __init__(self, dsn, slot, log_path):
        super().__init__(daemon=True)
        self.series = []
        self.err = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [f"{PGBIN}/pg_recvlogical", "-d", dsn, "--slot", slot, "--start",
             "-o", "include-timestamp=1", "-o", "skip-empty-xacts=1", "-f", "-", "-s", "1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.err)

    def run(self):
        fd = self.proc.stdout.fileno()
        pending = b""
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return
            now = time.time()
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for ln in lines:
                if ln.startswith(b"COMMIT ") and b"(at " in ln:
                    ts = ln[ln.index(b"(at ") + 4:].rstrip(b")").decode()
                    t = datetime.datetime.fromisoformat(ts).timestamp()
                    self.series.append((t, (now - t) * 1000.0))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.join(timeout=10)
        self.err.close()


class Prober:
    """The outside cross-check.  Every `interval` s: SET probe:n in Redis, then a transaction
    that asks pgfanout to delete it (pg_logical_emit_message with pgfanout's message prefix).
    A keyspace-notification subscriber stamps the moment Redis deleted each probe key;
    latency = that moment - the transaction's commit timestamp (pg_xact_commit_timestamp,
    looked up afterwards).  Covers what pgfanout's own figure covers, plus Redis's
    notification push and a Python thread wake-up."""

    def __init__(self, cluster, rserver, interval):
        self.dsn = cluster.dsn()
        self.interval = interval
        self.rc = rserver.client()
        self.rc.config_set("notify-keyspace-events", "Kg")
        self.sub = rserver.client().pubsub()
        self.sub.psubscribe("__keyspace@0__:probe:*")
        self.deleted = {}  # key -> time.time() of the notification
        self.xids = {}     # key -> xid8 as text
        self.series = []
        self.drain_until = 0.0
        self.done = threading.Event()
        self.t_sub = threading.Thread(target=self._listen, daemon=True)
        self.t_probe = threading.Thread(target=self._probe, daemon=True)
        self.error = None

    def start(self):
        deadline = time.monotonic() + 5  # the subscription must be in place before probe 1
        while time.monotonic() < deadline:
            m = self.sub.get_message(timeout=0.5)
            if m and m["type"] == "psubscribe":
                break
        self.t_sub.start()
        self.t_probe.start()

    def _listen(self):
        try:
            while not self.done.is_set() or len(self.deleted) < len(self.xids):
                m = self.sub.get_message(timeout=0.2)
                if m is None:
                    if self.done.is_set() and self.drain_until < time.monotonic():
                        return
                    continue
                if m["type"] == "pmessage" and m["data"] == b"del":
                    self.deleted[m["channel"].decode().split(":", 1)[1]] = time.time()
        except Exception as e:  # reported by finish(); quiet while being torn down
            if not self.done.is_set():
                self.error = e

    def _probe(self):
        try:
            with psycopg.connect(self.dsn) as conn:
                n = 0
                nxt = time.monotonic()
                while not self.done.is_set():
                    n += 1
                    key = f"probe:{n}"
                    self.rc.set(key, "1")
                    with conn.cursor() as cur:
                        cur.execute("SELECT pg_current_xact_id()::text, pg_logical_emit_message("
                                    "true, 'pgfanout.invalidate', %s)", (key,))
                        xid = cur.fetchone()[0]
                    conn.commit()
                    self.xids[key] = xid
                    nxt += self.interval
                    self.done.wait(max(0.0, nxt - time.monotonic()))
        except Exception as e:  # reported by finish()
            self.error = e

    def stop(self):
        self.done.set()
        self.t_probe.join(timeout=10)
        self.t_sub.join(timeout=10)

    def finish(self, conn, grace=5.0):
        """Stops probing, waits (up to grace s) for the last deletions; returns
        (latencies in ms, probes sent, probe keys never deleted)."""
        self.drain_until = time.monotonic() + grace
        self.done.set()
        self.t_probe.join(timeout=10)
        self.t_sub.join(timeout=grace + 5)
        try:
            self.sub.close()
        except Exception:
            pass
        if self.error:
            raise BenchError(f"probe thread failed: {self.error!r}")
        keys = list(self.xids)
        ts = {}
        if keys:
            with conn.cursor() as cur:
                cur.execute("SELECT k, extract(epoch FROM pg_xact_commit_timestamp("
                            "x::xid8::xid))::float8 FROM unnest(%s::text[], %s::text[]) AS u(k, x)",
                            (keys, [self.xids[k] for k in keys]))
                ts = dict(cur.fetchall())
        self.series = [(ts[k], (self.deleted[k] - ts[k]) * 1000.0) for k in keys
                       if k in self.deleted and ts.get(k)]
        missing = [k for k in keys if k not in self.deleted]
        return [ms for _, ms in self.series], len(keys), missing


def redis_rtt(target, seconds):
    """`redis-cli --latency` for `seconds` (a PING every 10 ms); not on a TTY it prints one line
    "MIN MAX AVG SAMPLES" in ms (min and max in whole ms) and exits."""
    return subprocess.Popen([REDIS_CLI, *target, "--latency", "-i", str(seconds)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def parse_pgbench(out):
    def grab(rx, conv=float):
        m = re.search(rx, out)
        return conv(m[1]) if m else None
    return {"tps": grab(r"tps = ([\d.]+)"),
            "txns": grab(r"number of transactions actually processed: (\d+)", int),
            "lat_avg": grab(r"latency average = ([\d.]+) ms"),
            "lag_avg": grab(r"rate limit schedule lag: avg ([\d.]+)"),
            "lag_max": grab(r"rate limit schedule lag: avg [\d.]+ \(max ([\d.]+)")}


def latency_run(rate, rep, args, cluster, rserver, conn, workdir, config):
    """One pgbench run at `rate` with pgfanout, the prober and the delivery baseline live."""
    tag = f"lat{rate}_{rep}"
    s_fan, s_td = f"bench_{tag}_pgfanout", f"bench_{tag}_delivery"
    rc = rserver.client()
    conn.execute("TRUNCATE pgbench_history")
    rc.flushdb()
    counts = {"acct": args.scale * 100000 + 1, "teller": args.scale * 10 + 1,
              "branch": args.scale + 1}
    for prefix, n in counts.items():
        populate(rc, n, prefix)
    bk.create_slots(conn, s_fan)
    conn.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (s_td,))
    dsn = consumer_dsn(cluster, args)
    settle(args)

    fan = Child("pgfanout", pgfanout_argv(args, dsn, s_fan, config),
                os.path.join(workdir, f"{tag}-pgfanout.log"), timeout=args.duration + 600)
    delivery = prober = rtt = ws = None
    try:
        fan.wait_log(r"redis at \S+: connected", 15)
        fan.wait_log(r"streaming slot", 15)
        if not args.no_delivery:
            delivery = DeliveryReader(dsn, s_td, os.path.join(workdir, f"{tag}-recvlogical.log"))
            delivery.start()
        prober = Prober(cluster, rserver, args.probe_interval)
        prober.start()
        time.sleep(0.5)
        ws = bk.Sampler(cluster.proc.pid)
        ws.start()
        redis_cpu0 = bk.proc_cpu_s(rserver.proc.pid)
        rtt = redis_rtt(redis_cli_target(rserver, args), max(1, args.duration - 2))
        log(f"  latency rate {rate} rep {rep + 1}: pgbench -b tpcb-like --rate {rate} "
            f"-T {args.duration}")
        busy0, self0, tree0 = bk.machine_busy_s(), time.process_time(), tree_cpu_s()
        t0 = time.monotonic()
        out = bk.run_tool([f"{PGBIN}/pgbench", "-n", "-b", "tpcb-like", "-c", str(args.clients),
                           "-j", "2", "-T", str(args.duration), "--rate", str(rate),
                           *bk.pg_args(cluster), "postgres"], "pgbench",
                          timeout=args.duration + 300)
        elapsed = time.monotonic() - t0
        busy = (bk.machine_busy_s() - busy0) / elapsed
        others = max(0.0, busy - (tree_cpu_s() - tree0) / elapsed)
        self_cpu = (time.process_time() - self0) / elapsed
        pb = parse_pgbench(out)
        probe_lat, probes, missing = prober.finish(conn)
        write_series(os.path.join(workdir, f"{tag}-probes.csv"),
                     "commit_epoch_s,commit_to_del_ms", prober.series)
        prober = None
        time.sleep(1.0)  # the last commits reach Redis before the stop
        redis_cpu = bk.proc_cpu_s(rserver.proc.pid) - redis_cpu0
        fan.stop()
        r = fan.wait(timeout=60)
        ws_cpu = ws.stop()
        ws = None
        dl_series = []
        if delivery:
            delivery.stop()
            dl_series, delivery = delivery.series, None
            write_series(os.path.join(workdir, f"{tag}-delivery.csv"),
                         "commit_epoch_s,commit_to_receipt_ms", dl_series)
        rtt_out, _ = rtt.communicate(timeout=60)
        rtt = None
    finally:
        if prober:
            prober.stop()
        if delivery:
            delivery.stop()
        if ws:
            ws.stop()
        if rtt is not None and rtt.poll() is None:
            rtt.terminate()
            rtt.wait()
        fan.stop()
        fan.proc.wait()

    # Correctness: pgfanout saw every pgbench transaction and every probe, and Redis lost
    # exactly the keys of the rows pgbench changed, and every probe key.
    stats = parse_stats(fan.log_text())
    n_txn, d_aid, d_tid, d_bid = conn.execute(
        "SELECT count(*), count(DISTINCT aid), count(DISTINCT tid), count(DISTINCT bid)"
        " FROM pgbench_history").fetchone()
    if stats["txns"] < n_txn + probes:
        raise BenchError(f"pgfanout acked {stats['txns']} transactions, expected at least {n_txn} "
                         f"pgbench + {probes} probes\n{bk.tail(fan.log_path)}")
    aids = [row[0] for row in conn.execute("SELECT DISTINCT aid FROM pgbench_history")]
    pipe = rc.pipeline(transaction=False)
    for aid in aids:
        pipe.exists(f"acct:{aid}")
    still = sum(pipe.execute())
    expect_left = ((counts["acct"] - d_aid) + (counts["teller"] - d_tid)
                   + (counts["branch"] - d_bid))
    left = cache_keys(rc)
    if still or left != expect_left or missing:
        raise BenchError(f"wrong Redis state after the latency run: {still} changed accounts still "
                         f"cached, {left} keys left (expected {expect_left}), {len(missing)} probe "
                         f"keys never deleted (e.g. {missing[:3]})")
    m = re.search(r"^([\d.]+) ([\d.]+) ([\d.]+) (\d+)\s*$", rtt_out or "", re.M)
    rtt_avg, rtt_max = (float(m[3]), float(m[2])) if m else (float("nan"), float("nan"))
    res = {"rate": rate, "pgbench": pb, "elapsed": elapsed, "stats": stats, "fan": r,
           "probe": lat_summary(probe_lat), "probes": probes,
           "delivery": lat_summary([ms for _, ms in dl_series]),
           "rtt_avg": rtt_avg, "rtt_max": rtt_max, "walsender_cpu": ws_cpu,
           "redis_cpu": redis_cpu, "busy": busy, "others": others}
    d, p = res["delivery"], res["probe"]
    log(f"    pgbench {pb['tps']:.0f} tps ({pb['txns']:,} txns, latency avg {pb['lat_avg']} ms, "
        f"schedule lag avg {pb['lag_avg']} max {pb['lag_max']} ms)")
    log(f"    pgfanout commit→ack p50 {stats['p50']:.1f} ms, p99 {stats['p99']:.1f} ms, max "
        f"{stats['max']:.1f} ms over {stats['txns']:,} txns ({stats['keys']:,} keys in "
        f"{stats['commands']:,} commands); CPU {r['cpu']:.2f} s, peak RSS {r['rss_mb']:.1f} MB")
    log(f"    outside probes ({probes}): p50 {p['p50']:.1f} ms, p99 {p['p99']:.1f} ms, max "
        f"{p['max']:.1f} ms;  PG delivery (pg_recvlogical, {d['n']:,} commits): p50 "
        f"{d['p50']:.1f} ms, p99 {d['p99']:.1f} ms, max {d['max']:.1f} ms;  Redis RTT avg "
        f"{rtt_avg:.2f} ms max {rtt_max:.2f} ms")
    log(f"    machine busy {busy:.2f} of {os.cpu_count()} CPUs, other load {others:.2f} (this "
        f"script's probes and readers {self_cpu:.2f}); walsenders CPU ~{ws_cpu:.1f} s, "
        f"redis-server CPU {redis_cpu:.1f} s; {len(aids):,} changed accounts checked deleted, "
        f"{left:,} untouched keys still cached as expected")
    bk.drop_slots(conn, s_fan, s_td)
    return res


# -- part 2: throughput catching up ----------------------------------------------------------

def write_del_stream(path, rows, txn_rows, prefixes):
    """The RESP stream the baseline sends: the keys pgfanout sends, in its order (per row, one
    key per rule template), cut the same way (per transaction of txn_rows rows, DELs of up to
    256 keys).  Returns the number of commands."""
    cmds = 0
    with open(path, "wb") as f:
        for start in range(1, rows + 1, txn_rows):
            end = min(start + txn_rows - 1, rows)
            keys = [b"%s:%d" % (p.encode(), i) for i in range(start, end + 1) for p in prefixes]
            for a in range(0, len(keys), KEYS_PER_DEL):
                chunk = keys[a:a + KEYS_PER_DEL]
                parts = [b"*%d\r\n$3\r\nDEL\r\n" % (len(chunk) + 1)]
                parts += [b"$%d\r\n%s\r\n" % (len(k), k) for k in chunk]
                f.write(b"".join(parts))
                cmds += 1
    return cmds


def throughput_run(rep, args, cluster, rserver, conn, workdir, config, del_stream):
    """Fresh slots, the updates, then pgfanout, redis-cli --pipe and pg_recvlogical timed one
    after the other (the order rotates between repetitions)."""
    s_fan, s_recv = f"bench_thru{rep}_pgfanout", f"bench_thru{rep}_recvlogical"
    slots = [s_fan] + ([] if args.no_recvlogical else [s_recv])
    rc = rserver.client()
    rows, txn_rows = args.rows, args.txn_rows
    prefixes = item_prefixes(args.keys_per_row)
    nkeys = rows * len(prefixes)
    bk.create_slots(conn, *slots)
    t0 = time.monotonic()
    with conn.cursor() as cur:
        for start in range(1, rows + 1, txn_rows):
            cur.execute(f"UPDATE {THRU_TABLE} SET val = val + 1 WHERE id BETWEEN %s AND %s",
                        (start, min(start + txn_rows - 1, rows)))
    endpos = scalar(conn, "SELECT pg_current_wal_lsn()::text")
    wal = scalar(conn, "SELECT pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots"
                       " WHERE slot_name = %s", (s_fan,))
    log(f"  throughput rep {rep + 1}: updated {rows:,} rows in {txn_rows:,}-row transactions in "
        f"{time.monotonic() - t0:.1f} s; endpos {endpos}, {int(wal) / 2**20:,.0f} MB of WAL")
    dsn = consumer_dsn(cluster, args)
    names = ["pgfanout", "redis-cli --pipe"] + ([] if args.no_recvlogical else ["pg_recvlogical"])
    names = names[rep % len(names):] + names[:rep % len(names)]
    res = {}
    for name in names:
        rc.flushdb()
        if name != "pg_recvlogical":
            for prefix in prefixes:
                populate(rc, rows + 1, prefix)
        settle(args)
        ws = bk.Sampler(cluster.proc.pid)
        redis_cpu0 = bk.proc_cpu_s(rserver.proc.pid)
        busy0, tree0 = bk.machine_busy_s(), tree_cpu_s()
        ws.start()
        log_path = os.path.join(workdir, f"thru{rep}-{name.split()[0]}.log")
        if name == "pgfanout":
            child = Child(name, pgfanout_argv(args, dsn, s_fan, config, endpos), log_path,
                          args.timeout)
        elif name == "pg_recvlogical":
            child = Child(name, [f"{PGBIN}/pg_recvlogical", "-d", dsn, "--slot", s_recv,
                                 "--start", "--endpos", endpos, "-o", "proto_version=1",
                                 "-o", f"publication_names={PUBLICATION}", "-f", "/dev/null"],
                          log_path, args.timeout)
        else:
            child = Child(name, [REDIS_CLI, *redis_cli_target(rserver, args), "--pipe"],
                          log_path, args.timeout, stdin_path=del_stream,
                          stdout_path=log_path + ".out")
        try:
            r = child.wait()
        finally:
            r_ws = ws.stop()
        r["walsender_cpu"] = r_ws
        r["redis_cpu"] = bk.proc_cpu_s(rserver.proc.pid) - redis_cpu0
        r["others"] = max(0.0, (bk.machine_busy_s() - busy0) - (tree_cpu_s() - tree0))
        extra = ""
        if name == "pgfanout":
            st = parse_stats(child.log_text())
            if st["keys"] != nkeys or st["txns"] < rows // txn_rows:
                raise BenchError(f"pgfanout sent {st['keys']:,} keys in {st['txns']:,} "
                                 f"transactions, expected {nkeys:,} keys\n{bk.tail(log_path)}")
            r["stats"], r["keys"] = st, st["keys"]
            extra = f", {st['commands']:,} commands"
        elif name == "redis-cli --pipe":
            with open(log_path + ".out") as f:
                out = f.read()
            m = re.search(r"errors: (\d+), replies: (\d+)", out)
            if not m or int(m[1]) != 0:
                raise BenchError(f"redis-cli --pipe: {out[-500:]}")
            r["keys"], r["commands"] = nkeys, int(m[2])
            extra = f", {r['commands']:,} commands"
        else:
            r["keys"] = rows  # row changes decoded
        if name != "pg_recvlogical":
            left = cache_keys(rc)
            spares = [f"{p}:0" for p in prefixes]
            if left != len(spares) or rc.exists(*spares) != len(spares):
                raise BenchError(f"after {name}: {left:,} keys left in Redis, expected only the "
                                 f"spare {', '.join(spares)}")
        r["rate"] = r["keys"] / r["wall"]
        res[name] = r
        unit = "rows/s" if name == "pg_recvlogical" else "keys/s"
        log(f"    {name:<17} {r['wall']:6.2f} s {r['rate']:11,.0f} {unit}  CPU {r['cpu']:.2f} s  "
            f"peak RSS {r['rss_mb']:.1f} MB  walsender CPU ~{r['walsender_cpu']:.2f} s  "
            f"redis-server CPU {r['redis_cpu']:.2f} s{extra}, other load ~{r['others']:.1f} CPU-s")
    if not scalar(conn, "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots"
                        " WHERE slot_name = %s", (endpos, s_fan)):
        raise BenchError(f"slot {s_fan} confirmed less than endpos {endpos} after a clean exit")
    bk.drop_slots(conn, *slots)
    conn.execute("CHECKPOINT")
    return res


# -- report ----------------------------------------------------------------------------------

med = statistics.median


def mark(ok):
    return "ok" if ok else "MISS"


def fmt(x, spec):
    return "–" if x != x else format(x, spec)  # NaN: a baseline that was not measured


def latency_table(lat_runs, args):
    out = ["Latency: pgbench -b tpcb-like, "
           f"{args.clients} clients, {args.duration} s per run, rules on accounts, tellers and "
           "branches (3 keys per transaction); all latencies in ms", "",
           "| --rate | pgbench tps | pgfanout p50 | pgfanout p99 (≤ 50) | pgfanout max "
           "| outside probes p50 / p99 | PG delivery p50 / p99 (baseline) | p99 ratio to baseline "
           "| pgfanout adds at p99 | Redis RTT avg | pgfanout CPU % | peak RSS MB "
           "| machine busy CPUs (other load) |",
           "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    met = True
    for rate in sorted({r["rate"] for r in lat_runs}):
        rs = [r for r in lat_runs if r["rate"] == rate]
        ok_p99 = max(r["stats"]["p99"] for r in rs) <= TARGET_P99_MS
        ok_tps = min(r["pgbench"]["tps"] for r in rs) >= TPS_TOLERANCE * rate
        met = met and ok_p99 and ok_tps

        def m(f):
            return med([f(r) for r in rs])
        out.append(
            f"| {rate:,} | {m(lambda r: r['pgbench']['tps']):,.0f} {mark(ok_tps)} "
            f"| {m(lambda r: r['stats']['p50']):.1f} "
            f"| {m(lambda r: r['stats']['p99']):.1f} {mark(ok_p99)} "
            f"| {m(lambda r: r['stats']['max']):.1f} "
            f"| {m(lambda r: r['probe']['p50']):.1f} / {m(lambda r: r['probe']['p99']):.1f} "
            f"| {fmt(m(lambda r: r['delivery']['p50']), '.1f')} / "
            f"{fmt(m(lambda r: r['delivery']['p99']), '.1f')} "
            f"| {fmt(m(lambda r: r['stats']['p99'] / r['delivery']['p99']), '.2f')} "
            f"| {fmt(m(lambda r: r['stats']['p99'] - r['delivery']['p99']), '+.1f')} "
            f"| {fmt(m(lambda r: r['rtt_avg']), '.2f')} "
            f"| {m(lambda r: 100 * r['fan']['cpu'] / r['elapsed']):.0f} "
            f"| {m(lambda r: r['fan']['rss_mb']):.1f} "
            f"| {m(lambda r: r['busy']):.2f} ({m(lambda r: r['others']):.2f}) |")
    out += ["", "pgfanout p50/p99/max: its own commit-to-ack histogram (commit timestamp of "
            "pgoutput's Commit → Redis answered the transaction's last command; ~6 % buckets); "
            "the p99 target is checked against the worst run. Outside probes: a transaction every "
            f"{args.probe_interval * 1000:.0f} ms emitting a pgfanout.invalidate message, commit "
            "timestamp → Redis keyspace notification of the DEL seen by a Python subscriber. PG "
            "delivery: commit timestamp → pg_recvlogical (test_decoding, second slot, same load) "
            "received the COMMIT, i.e. PostgreSQL's part of the latency. pgbench tps ok = within "
            f"{100 - TPS_TOLERANCE * 100:.0f} % of --rate in every run (the schedule is Poisson). "
            "pgfanout CPU % = its CPU time / pgbench run time. Machine busy: all CPUs during the "
            "pgbench run; other load: what this benchmark's own process tree did not use.", ""]
    return out, met


def throughput_table(thru_runs, args):
    fan = [r["pgfanout"] for r in thru_runs]
    base = [r["redis-cli --pipe"] for r in thru_runs]
    recv = [r["pg_recvlogical"] for r in thru_runs if "pg_recvlogical" in r]
    rate = med([f["rate"] for f in fan])
    met = rate >= TARGET_KEYS_S

    def m(runs, key):
        return med([x[key] for x in runs])
    out = [f"Throughput: {args.rows:,} rows updated in {args.txn_rows:,}-row transactions, "
           f"{args.keys_per_row} key{'s' if args.keys_per_row > 1 else ''} per row "
           f"({args.rows * args.keys_per_row:,} keys); pgfanout started afterwards with --endpos "
           "(wall time from spawn to exit, which comes after Redis acked every key)", "",
           "| | s | keys/s | CPU s | walsender CPU s | redis-server CPU s | peak RSS MB |",
           "|---|--:|--:|--:|--:|--:|--:|",
           f"| pgfanout | {m(fan, 'wall'):.2f} | {rate:,.0f} {mark(met)} (≥ 200k) "
           f"| {m(fan, 'cpu'):.2f} | {m(fan, 'walsender_cpu'):.2f} | {m(fan, 'redis_cpu'):.2f} "
           f"| {m(fan, 'rss_mb'):.1f} (max {max(f['rss_mb'] for f in fan):.1f}) |",
           f"| baseline: redis-cli --pipe, same DELs | {m(base, 'wall'):.2f} "
           f"| {m(base, 'rate'):,.0f} | {m(base, 'cpu'):.2f} | – | {m(base, 'redis_cpu'):.2f} "
           f"| {m(base, 'rss_mb'):.1f} |"]
    if recv:
        out.append(f"| reference: pg_recvlogical → /dev/null, same WAL (row changes/s) "
                   f"| {m(recv, 'wall'):.2f} | {m(recv, 'rate'):,.0f} | {m(recv, 'cpu'):.2f} "
                   f"| {m(recv, 'walsender_cpu'):.2f} | – | {m(recv, 'rss_mb'):.1f} |")
    ratio = med([f["rate"] / b["rate"] for f, b in zip(fan, base)])
    line = (f"ratio pgfanout keys/s ÷ redis-cli --pipe keys/s = **{ratio:.3f}** (median of "
            "per-run ratios)")
    if recv:
        line += ("; pgfanout row changes/s ÷ pg_recvlogical row changes/s = "
                 f"{med([x['wall'] / f['wall'] for f, x in zip(fan, recv)]):.3f}")
    st = fan[0]["stats"]
    others = med([x["others"] for r in thru_runs for x in r.values()])
    line += (f". pgfanout sent {st['keys']:,} keys in {st['commands']:,} DEL commands "
             f"({st['txns']:,} transactions); the baseline the same keys in "
             f"{base[0]['commands']:,} DELs. Other load ~{others:.1f} CPU-s per timed run "
             "(median).")
    return out + ["", line, ""], met


def report(lat_runs, thru_runs, args, versions):
    via = {"unix": "its unix socket", "tcp": "TCP 127.0.0.1"}
    window = args.window if args.window is not None else "64 (default)"
    linger = args.linger_ms if args.linger_ms is not None else "0 (default)"
    extra = f"`{args.pgfanout_args}`" if args.pgfanout_args else "(none)"
    out = [f"pgfanout → Redis benchmark, {versions['date']}, median of {args.repeat} run(s) per "
           "figure (`bench/bench_redis.py`)", "",
           f"- machine: {versions['cpus']} CPUs, {versions['kernel']}; PostgreSQL {versions['pg']};"
           f" Redis {versions['redis']} (local, no persistence); pgfanout and pg_recvlogical reach "
           f"PostgreSQL over {via[args.pg_socket]}, pgfanout reaches Redis over "
           f"{via[args.redis_socket]}",
           f"- pgfanout {versions['pgfanout']}; redis.window {window}, redis.linger_ms {linger}; "
           f"extra args: {extra}", ""]
    met = True
    if lat_runs:
        lines, ok = latency_table(lat_runs, args)
        out, met = out + lines, met and ok
    if thru_runs:
        lines, ok = throughput_table(thru_runs, args)
        out, met = out + lines, met and ok
    print("\n==== SUMMARY (Markdown, paste into docs) ====", flush=True)
    print("\n".join(out), flush=True)
    print("==== END SUMMARY ====", flush=True)
    return met


def versions_of(conn, rserver):
    try:
        desc = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True).stdout.strip()
    except OSError:
        desc = ""
    return {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
            "kernel": f"Linux {platform.release()}", "pg": scalar(conn, "SHOW server_version"),
            "redis": rserver.client().info("server")["redis_version"],
            "pgfanout": f"git {desc or '?'}"}


# -- main ------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=2,
                   help="repetitions of each measurement; the report gives medians (default 2)")
    p.add_argument("--parts", default="latency,throughput",
                   help="latency, throughput or both (default)")
    p.add_argument("--rates", default="1000,1500",
                   help="pgbench --rate values, comma-separated (default 1000,1500)")
    p.add_argument("--duration", type=int, default=20,
                   help="pgbench -T per latency run, seconds (default 20)")
    p.add_argument("--clients", type=int, default=8, help="pgbench -c (default 8)")
    p.add_argument("--scale", type=int, default=10,
                   help="pgbench -i -s (default 10: 1M accounts)")
    p.add_argument("--probe-interval", type=float, default=0.02,
                   help="seconds between outside probe transactions (default 0.02)")
    p.add_argument("--no-delivery", action="store_true",
                   help="latency: skip the pg_recvlogical delivery-latency baseline")
    p.add_argument("--rows", type=int, default=1_000_000,
                   help="throughput: rows updated (default 1,000,000)")
    p.add_argument("--txn-rows", type=int, default=1000,
                   help="throughput: rows per transaction (default 1,000)")
    p.add_argument("--keys-per-row", type=int, default=1,
                   help="throughput: keys each updated row invalidates (rule templates "
                        "item:{id}, item2:{id}, ...; default 1)")
    p.add_argument("--no-recvlogical", action="store_true",
                   help="throughput: skip the pg_recvlogical reference")
    p.add_argument("--window", type=int,
                   help="redis.window in pgfanout's config (default: pgfanout's, 64)")
    p.add_argument("--linger-ms", type=int,
                   help="redis.linger_ms in pgfanout's config (default: pgfanout's, 0)")
    p.add_argument("--pg-socket", choices=("tcp", "unix"), default="tcp",
                   help="how pgfanout and pg_recvlogical reach PostgreSQL: 127.0.0.1 (default) "
                        "or the unix socket")
    p.add_argument("--redis-socket", choices=("tcp", "unix"), default="tcp",
                   help="how pgfanout, redis-cli --pipe and the RTT probe reach Redis "
                        "(default tcp)")
    p.add_argument("--pgfanout-args", default="", help="extra pgfanout flags, shell-quoted")
    p.add_argument("--pgfanout-bin", default=os.environ.get("PGFANOUT_BIN", DEFAULT_PGFANOUT))
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds to idle before each timed run (default 1)")
    p.add_argument("--wait-quiet", type=float, default=30,
                   help="before each timed run, wait up to this many seconds for the machine to "
                        "be under half a CPU busy (0: do not wait; default 30)")
    p.add_argument("--timeout", type=float, default=600,
                   help="seconds before a throughput child is killed and the benchmark fails")
    p.add_argument("--strict", action="store_true", help="exit 3 when a target is missed")
    p.add_argument("--keep-logs", action="store_true",
                   help="keep the children's logs and per-transaction latency CSVs")
    args = p.parse_args(argv)
    args.parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    if not args.parts or any(x not in ("latency", "throughput") for x in args.parts):
        p.error("--parts takes latency, throughput or both")
    args.rates = [int(x) for x in args.rates.split(",") if x.strip()]
    if (args.repeat < 1 or args.rows < 1 or args.txn_rows < 1 or args.keys_per_row < 1
            or args.duration < 1 or not args.rates or min(args.rates) < 1):
        p.error("--repeat, --rows, --txn-rows, --keys-per-row, --duration and --rates must be "
                "positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    t_start = time.monotonic()

    def body(workdir, cluster, rserver):
        conn = bk.connect(cluster.dsn())
        conn.execute(f"CREATE PUBLICATION {PUBLICATION} FOR ALL TABLES")
        versions = versions_of(conn, rserver)
        configs = {}
        for part in ("latency", "throughput"):
            configs[part] = os.path.join(workdir, f"pgfanout-{part}.yaml")
            write_config(configs[part], args, rserver, part)
        log(f"PostgreSQL {versions['pg']} on port {cluster.port}, Redis {versions['redis']} at "
            f"{rserver.addr}; pgfanout {args.pgfanout_bin}")
        lat_runs, thru_runs = [], []
        if "latency" in args.parts:
            t0 = time.monotonic()
            bk.run_tool([f"{PGBIN}/pgbench", "-i", "-q", "-s", str(args.scale),
                         *bk.pg_args(cluster), "postgres"], "pgbench -i", timeout=1800)
            conn.execute("VACUUM ANALYZE")
            log(f"pgbench -i -s {args.scale} in {time.monotonic() - t0:.1f} s")
            for rep in range(args.repeat):
                for rate in args.rates:
                    lat_runs.append(latency_run(rate, rep, args, cluster, rserver, conn, workdir,
                                                configs["latency"]))
        if "throughput" in args.parts:
            t0 = time.monotonic()
            conn.execute(f"DROP TABLE IF EXISTS {THRU_TABLE}")
            conn.execute(THRU_DDL)
            conn.execute(f"INSERT INTO {THRU_TABLE} SELECT g, 0, md5(g::text)"
                         " FROM generate_series(1, %s) g", (args.rows,))
            conn.execute(f"VACUUM ANALYZE {THRU_TABLE}")
            del_stream = os.path.join(workdir, "dels.resp")
            cmds = write_del_stream(del_stream, args.rows, args.txn_rows,
                                    item_prefixes(args.keys_per_row))
            log(f"loaded {args.rows:,} rows into {THRU_TABLE} and wrote the baseline's {cmds:,} "
                f"DEL commands in {time.monotonic() - t0:.1f} s")
            for rep in range(args.repeat):
                thru_runs.append(throughput_run(rep, args, cluster, rserver, conn, workdir,
                                                configs["throughput"], del_stream))
        conn.close()
        met = report(lat_runs, thru_runs, args, versions)
        log(f"done in {time.monotonic() - t_start:.0f} s")
        return met

    return bk.bench_main(args, "pgfanout-bench-redis-", [f"{PGBIN}/pgbench", f"{PGBIN}/pg_recvlogical", REDIS_CLI],
                         [("PostgreSQL", lambda: PgCluster(extra_conf=PG_CONF).start(), lambda c: c.stop()),
                          ("Redis", lambda: BenchRedis().start(), lambda r: r.cleanup())], body)


if __name__ == "__main__":
    sys.exit(main())
