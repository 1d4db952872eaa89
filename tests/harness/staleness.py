"""The staleness scenario of issue 13 (race (b), the lagging replica), shared by
bench/bench_staleness.py (60 s per mode) and tests/integration/test_staleness.py (~10 s).

A real primary, a real streaming standby (`pg_basebackup -R`, `recovery_min_apply_delay`), a
redis-server and pgfanout (`--sink redis`, a rule `<table>:{id}` on the mode's table).  Writer
threads update rows on the primary (`v = v + 1`); reader threads do cache-aside reads of the
same rows, reading the database FROM THE STANDBY and filling the cache.  One mode at a time:

  plain           readers: GET, on a miss SELECT on the standby then SET; pgfanout as today
  leases          readers: contrib/redis's fill protocol (tests/harness/leasecache.py)
  leases+replica  the same, and pgfanout's second pass (`redis.replicas`: the standby's DSN,
                  or with replica_mode "names" `redis.replica_names`: its application_name)

Each mode has its own table, slot, publication and pgfanout process.  A mode ends with
quiescence: writers stop; a marker transaction (a transactional logical message that names a
key) is committed; we wait until the slot is confirmed past it (pgfanout confirms a
transaction only after Redis answered its invalidations, both passes when replicas are
configured), the standby replayed it, and, when pgfanout sets it, the read-your-writes key
passed it; then a margin; then readers stop.  Then each cached key is compared with its row on
the primary: a key whose value differs is stale.

While it runs, every value a reader gets from the cache (a hit, or a value that appeared while
it waited on another reader's lease) is checked against the writers' own record of each row's
last committed version: a value older than that is a stale hit, and its age is the time since
the version that superseded it committed (taken when the writer's UPDATE returned, so a lower
bound by the commit's round trip).

Nothing here asks pgfanout what it did, except the figures it publishes (/metrics and its exit
line), which are only reported."""
import http.client
import os
import random
import re
import signal
import subprocess
import threading
import time

import psycopg
import yaml

from leasecache import LeaseCache
from pgcluster import PgCluster, PgStandby
from ports import free_port
from redisserver import RedisServer

MODES = ("plain", "leases", "leases+replica")
APP_NAME = "pgf_standby1"

# pgfanout's exit line (sinks/redis_sink.c, redis_close).
STATS_RE = re.compile(r"redis: (\d+) transactions, (\d+) keys in (\d+) commands")


def lsn_int(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def percentile(values, q):
    """The q-quantile (0..1) of values by nearest rank, or None when empty."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))]


class ModeResult:
    """What one mode measured.  Times in seconds."""

    def __init__(self, mode):
        self.mode = mode
        self.seconds = 0.0           # readers and writers ran together for this long
        self.quiesce_s = 0.0         # writers stopped -> every invalidation done (+ margin)
        self.reads = 0               # every read a reader made (cache or database)
        self.cache_reads = 0         # values served from the cache (hits, waited)
        self.stale_hits = 0          # ... of which older than the row's last committed version
        self.stale_ages = []         # for each stale hit: time since the newer version committed
        self.counts = {}             # per outcome: hit, miss_filled, filled, refused, ...
        self.writes = 0
        self.rows = 0
        self.cached_keys = 0         # keys present at the end
        self.stale_keys = 0          # ... whose value differs from the primary's row
        self.stale_examples = []
        self.replica_pass = False    # pgfanout was given the standby (second pass)
        self.rss_mb = None           # pgfanout's peak RSS (VmHWM)
        self.pgfanout_keys = None    # keys pgfanout deleted (its exit line)
        self.pgfanout_cpu_s = None
        self.replay_lag = []         # the standby's own replay lag, sampled (now() - last replayed commit)
        self.metrics = {}            # second-pass and replica figures from /metrics, when present
        self.ryw_seen = False
        self.log_path = None

    @property
    def reads_per_s(self):
        return self.reads / self.seconds if self.seconds else 0.0

    @property
    def keys_per_s(self):
        return (self.pgfanout_keys or 0) / self.seconds if self.seconds else 0.0

    @property
    def stale_hit_pct(self):
        return 100.0 * self.stale_hits / self.cache_reads if self.cache_reads else 0.0

    def visibility(self):
        """(p50, p99, max) of the stale hits' ages in ms, or Nones."""
        a = self.stale_ages
        if not a:
            return (None, None, None)
        return (percentile(a, 0.5) * 1000, percentile(a, 0.99) * 1000, max(a) * 1000)

    def summary(self):
        p50, p99, mx = self.visibility()
        fmt = lambda x: "-" if x is None else f"{x:.0f}"  # noqa: E731
        return (f"{self.mode}: {self.stale_keys} stale of {self.cached_keys} cached keys; "
                f"{self.stale_hits} stale of {self.cache_reads} cache reads "
                f"({self.stale_hit_pct:.1f} %), visible p50/p99/max {fmt(p50)}/{fmt(p99)}/{fmt(mx)} ms; "
                f"{self.reads_per_s:,.0f} reads/s, {self.writes} writes, counts {self.counts}")


def parse_metrics(text):
    """{(name, labels text): value} of a Prometheus text page."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m:
            try:
                out[(m.group(1), m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return out


def histogram_quantile(samples, name, q):
    """The upper bound of the bucket where the q-quantile of histogram `name` falls (None when
    the histogram is missing or empty)."""
    buckets = []
    for (n, labels), v in samples.items():
        if n == name + "_bucket":
            m = re.search(r'le="([^"]+)"', labels)
            if m:
                buckets.append((float("inf") if m.group(1) == "+Inf" else float(m.group(1)), v))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return None
    want = q * buckets[-1][1]
    for le, count in buckets:
        if count >= want:
            return le
    return None


class Scenario:
    """The servers, started once for all modes: start(), run_mode() per mode, stop()."""

    def __init__(self, pgfanout_bin, workdir, rows=1000, lag_ms=200, log=print,
                 replica_mode="dsn", second_pass_delay_ms=None):
        self.bin = pgfanout_bin
        self.workdir = workdir
        self.rows = rows
        self.lag_ms = lag_ms
        self.log = log
        self.replica_mode = replica_mode
        self.second_pass_delay_ms = second_pass_delay_ms
        self.primary = self.standby = self.redis = None
        help_text = subprocess.run([self.bin, "--help"], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True).stdout
        self.supports_replicas = "PGFANOUT_REDIS_REPLICAS" in help_text
        self.supports_ryw = "PGFANOUT_REDIS_RYW_KEY" in help_text

    # -- servers ------------------------------------------------------------------------------

    def start(self):
        self.primary = PgCluster(extra_conf={"max_wal_size": "'1GB'",
                                             "wal_sender_timeout": "'60s'"}).start()
        self.standby = PgStandby(self.primary, application_name=APP_NAME, extra_conf={
            "recovery_min_apply_delay": f"'{int(self.lag_ms)}ms'",
            "hot_standby_feedback": "on",            # no query cancelled by replay conflicts
            "wal_receiver_status_interval": "'1s'",  # pg_stat_replication fresh for mode B
        }).start()
        self.redis = RedisServer().start()
        with self.primary_conn() as c:
            names = [r[0] for r in c.execute("SELECT application_name FROM pg_stat_replication"
                                             " WHERE state = 'streaming'").fetchall()]
        if APP_NAME not in names:
            raise RuntimeError(f"the standby streams as {names}, not as {APP_NAME}")
        return self

    def stop(self):
        for s in (self.redis, self.standby, self.primary):
            if s is None:
                continue
            try:
                s.cleanup() if isinstance(s, RedisServer) else s.stop()
            except Exception as e:  # keep stopping the others
                self.log(f"stopping {type(s).__name__}: {e}")

    def primary_conn(self):
        return psycopg.connect(self.primary.dsn(), autocommit=True)

    def standby_conn(self):
        return psycopg.connect(self.standby.dsn(), autocommit=True)

    # -- one mode -----------------------------------------------------------------------------

    def run_mode(self, mode, seconds, readers=6, writers=2, write_pause_ms=5.0,
                 read_pause_ms=1.0, fill_delay_ms=2.0, margin_s=0.5, seed=1):
        """Runs one mode for `seconds` and returns its ModeResult."""
        assert mode in MODES, mode
        tag = {"plain": "plain", "leases": "leases", "leases+replica": "replica"}[mode]
        table, slot, pub, prefix = f"st_{tag}", f"st_{tag}_slot", f"st_{tag}_pub", f"st_{tag}"
        res = ModeResult(mode)
        res.rows = self.rows
        admin = self.primary_conn()
        admin.execute(f"DROP TABLE IF EXISTS {table}")
        admin.execute(f"CREATE TABLE {table} (id int4 PRIMARY KEY, v int8 NOT NULL)")
        admin.execute(f"INSERT INTO {table} SELECT g, 0 FROM generate_series(1, {self.rows}) g")
        admin.execute(f"CREATE PUBLICATION {pub} FOR TABLE {table}")
        admin.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        self.standby.wait_replayed(admin.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])
        client = self.redis.client()
        client.flushall()

        redis_section = {"rules": [{"table": table, "keys": [prefix + ":{id}"]}]}
        if mode == "leases+replica" and self.supports_replicas:
            res.replica_pass = True
            if self.replica_mode == "names":
                redis_section["replica_names"] = APP_NAME
            else:
                redis_section["replicas"] = self.standby.dsn()
            if self.second_pass_delay_ms is not None:
                redis_section["second_pass_delay_ms"] = self.second_pass_delay_ms
        ryw_key = f"pgfanout:ryw:{slot}"
        cfg = os.path.join(self.workdir, f"{tag}.yaml")
        with open(cfg, "w") as f:
            yaml.safe_dump({"redis": redis_section}, f, sort_keys=False)
        port = free_port()
        res.log_path = os.path.join(self.workdir, f"pgfanout-{tag}.log")
        argv = [self.bin, "--dsn", self.primary.dsn(), "--slot", slot, "--publication", pub,
                "--sink", "redis", "--config", cfg, "--redis", self.redis.addr,
                "--status-interval", "0.2", "--http-listen", f"127.0.0.1:{port}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PGFANOUT_")}
        errf = open(res.log_path, "wb")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=errf, env=env)
        errf.close()
        try:
            self._wait_started(proc, res.log_path)
            self._drive(mode, res, table, prefix, slot, ryw_key, port, proc, seconds, readers,
                        writers, write_pause_ms, read_pause_ms, fill_delay_ms, margin_s, seed)
            res.rss_mb = _vm_hwm_kb(proc.pid) / 1024.0
            res.pgfanout_cpu_s = _cpu_s(proc.pid)
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=30)
            text = _read(res.log_path)
            if rc != 0:
                raise RuntimeError(f"pgfanout ({mode}) exited with {rc}:\n{text[-3000:]}")
            m = STATS_RE.findall(text)
            res.pgfanout_keys = int(m[-1][1]) if m else None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            _wait_slot_inactive(admin, slot)
            admin.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            admin.execute(f"DROP PUBLICATION {pub}")
            admin.close()
        self.log(res.summary())
        return res

    def _wait_started(self, proc, log_path, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = _read(log_path)
            if "streaming slot" in text and ": connected" in text:
                return
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"pgfanout did not start streaming:\n{_read(log_path)[-3000:]}")

    def _drive(self, mode, res, table, prefix, slot, ryw_key, port, proc, seconds, readers,
               writers, write_pause_ms, read_pause_ms, fill_delay_ms, margin_s, seed):
        rows = self.rows
        latest = [0] * (rows + 1)               # last committed version per row (writers' record)
        committed_at = [dict() for _ in range(rows + 1)]   # row -> {version: monotonic time}
        stop_writers = threading.Event()
        stop_readers = threading.Event()
        stop_sampler = threading.Event()
        lock = threading.Lock()
        errors = []
        counts = {}
        ages = []
        tallies = {"reads": 0, "cache_reads": 0, "stale_hits": 0, "writes": 0}

        def add(**kw):
            with lock:
                for k, v in kw.items():
                    tallies[k] += v

        def count(what):
            with lock:
                counts[what] = counts.get(what, 0) + 1

        def served_from_cache(i, value):
            cached = int(value)
            now = time.monotonic()
            newest = latest[i]
            if cached < newest:
                t = committed_at[i].get(cached + 1)
                with lock:
                    tallies["stale_hits"] += 1
                    if t is not None:
                        ages.append(now - t)
            add(cache_reads=1)

        def writer(n):
            try:
                rng = random.Random(seed * 1000 + n)
                with self.primary_conn() as conn:
                    while not stop_writers.is_set():
                        i = rng.randint(1, rows)
                        v = conn.execute(f"UPDATE {table} SET v = v + 1 WHERE id = %s RETURNING v",
                                         (i,)).fetchone()[0]
                        committed_at[i][v] = time.monotonic()
                        with lock:
                            latest[i] = max(latest[i], v)
                            tallies["writes"] += 1
                        if write_pause_ms:
                            time.sleep(rng.uniform(0, 2 * write_pause_ms) / 1000)
            except Exception as e:
                errors.append(f"writer {n}: {e!r}")

        def reader(n):
            try:
                rng = random.Random(seed * 1000 + 100 + n)
                rc = self.redis.client()
                cache = LeaseCache(rc)
                with self.standby_conn() as conn:
                    def load(i):
                        return str(conn.execute(f"SELECT v FROM {table} WHERE id = %s",
                                                (i,)).fetchone()[0])

                    def slow():
                        if fill_delay_ms:
                            time.sleep(rng.uniform(0, fill_delay_ms) / 1000)
                    while not stop_readers.is_set():
                        i = rng.randint(1, rows)
                        key = f"{prefix}:{i}"
                        if mode == "plain":
                            value = rc.get(key)
                            if value is not None:
                                served_from_cache(i, value)
                                how = "hit"
                            else:
                                value = load(i)
                                slow()
                                rc.set(key, value)
                                how = "filled"
                        else:
                            value, how = cache.get_or_fill(key, lambda: load(i), between=slow)
                            if how in ("hit", "waited"):
                                served_from_cache(i, value)
                        count(how)
                        add(reads=1)
                        if read_pause_ms:
                            time.sleep(rng.uniform(0, 2 * read_pause_ms) / 1000)
            except Exception as e:
                errors.append(f"reader {n}: {e!r}")

        def sampler():
            """The standby's own replay lag (now() minus the commit time of the last replayed
            transaction, while writes go on) and pgfanout's replica metrics."""
            try:
                with self.standby_conn() as conn:
                    n = 0
                    while not stop_sampler.is_set():
                        lag = conn.execute("SELECT extract(epoch FROM now() -"
                                           " pg_last_xact_replay_timestamp())").fetchone()[0]
                        if lag is not None and not stop_writers.is_set():
                            res.replay_lag.append(float(lag))
                        if n % 5 == 0:
                            m = _metrics(port)
                            for (name, labels), v in m.items():
                                if name == "pgfanout_replica_lag_seconds":
                                    res.metrics.setdefault("replica_lag_samples", []).append(v)
                        n += 1
                        stop_sampler.wait(0.1)
            except Exception as e:
                errors.append(f"sampler: {e!r}")

        threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(writers)]
        threads += [threading.Thread(target=reader, args=(n,), daemon=True) for n in range(readers)]
        samp = threading.Thread(target=sampler, daemon=True)
        t0 = time.monotonic()
        for th in threads:
            th.start()
        samp.start()
        try:
            while time.monotonic() - t0 < seconds and not errors:
                if proc.poll() is not None:
                    raise RuntimeError(f"pgfanout exited ({proc.returncode}):\n"
                                       f"{_read(res.log_path)[-3000:]}")
                time.sleep(0.1)
            stop_writers.set()
            for th in threads[:writers]:
                th.join(30)
            res.seconds = time.monotonic() - t0
            q0 = time.monotonic()
            self._quiesce(slot, ryw_key, res, proc, margin_s)
            res.quiesce_s = time.monotonic() - q0
        finally:
            stop_writers.set()
            stop_readers.set()
            stop_sampler.set()
            for th in threads:
                th.join(30)
            samp.join(30)
        if errors:
            raise RuntimeError("; ".join(errors[:5]))
        res.reads = tallies["reads"]
        res.cache_reads = tallies["cache_reads"]
        res.stale_hits = tallies["stale_hits"]
        res.writes = tallies["writes"]
        res.stale_ages = ages
        res.counts = counts
        samples = _metrics(port)
        for name in ("pgfanout_redis_second_pass_seconds",):
            count_ = samples.get((name + "_count", ""))
            if count_:
                res.metrics["second_pass_count"] = count_
                res.metrics["second_pass_mean_s"] = samples.get((name + "_sum", ""), 0) / count_
                res.metrics["second_pass_p50_s"] = histogram_quantile(samples, name, 0.5)
                res.metrics["second_pass_p99_s"] = histogram_quantile(samples, name, 0.99)
        forced = sum(v for (n, _), v in samples.items()
                     if n == "pgfanout_redis_second_pass_forced_total")
        if forced:
            res.metrics["second_pass_forced"] = forced
        # The end state: every cached key against the primary's row.
        with self.primary_conn() as conn:
            truth = dict(conn.execute(f"SELECT id, v FROM {table}").fetchall())
        client = self.redis.client()
        keys = [f"{prefix}:{i}" for i in range(1, rows + 1)]
        values = client.mget(keys)
        for i, value in zip(range(1, rows + 1), values):
            if value is None:
                continue
            res.cached_keys += 1
            if int(value) != truth[i]:
                res.stale_keys += 1
                if len(res.stale_examples) < 5:
                    res.stale_examples.append((f"{prefix}:{i}", int(value), truth[i]))

    def _quiesce(self, slot, ryw_key, res, proc, margin_s, timeout=90):
        """Writers have stopped: commits a marker transaction and waits until pgfanout is done
        with it (slot confirmed past it; the read-your-writes key past it when pgfanout sets
        one), and the standby replayed it; then margin_s."""
        client = self.redis.client()
        with self.primary_conn() as conn:
            before = lsn_int(conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0])
            conn.execute("SELECT pg_logical_emit_message(true, 'pgfanout.invalidate', %s)",
                         (f"{slot}:marker",))
            after = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"pgfanout exited ({proc.returncode}):\n"
                                       f"{_read(res.log_path)[-3000:]}")
                confirmed = conn.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots"
                                         " WHERE slot_name = %s", (slot,)).fetchone()[0]
                ryw = client.get(ryw_key)
                if ryw is not None:
                    res.ryw_seen = True
                done = (confirmed is not None and lsn_int(confirmed) >= lsn_int(after)
                        and (ryw is None or int(ryw) > before)
                        and (not res.replica_pass or not self.supports_ryw or ryw is not None))
                if done:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pgfanout did not catch up with {after} in {timeout} s "
                                       f"(confirmed {confirmed}, ryw {ryw})")
                time.sleep(0.05)
        self.standby.wait_replayed(after)
        time.sleep(margin_s)


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _vm_hwm_kb(pid):
    """Peak resident set size of a live process (VmHWM, kB): the peak of its own address
    space since exec, unlike a parent's ru_maxrss after fork+exec."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _metrics(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/metrics")
        return parse_metrics(conn.getresponse().read().decode())
    except (OSError, http.client.HTTPException):
        return {}
    finally:
        conn.close()


def _wait_slot_inactive(conn, slot, timeout=30):
    deadline = time.monotonic() + timeout
    while conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s AND active",
                       (slot,)).fetchone()[0]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"slot {slot} still active {timeout} s after pgfanout exited")
        time.sleep(0.05)
