#!/usr/bin/python3
"""The fault suite (issue 14, item 5): one pgfanout (--sink kafka,redis) streams a steady
workload while faults are injected one after the other; at the end every committed change must
be in Kafka (in per-key order; duplicates are counted, not failed) and no Redis key may be left
stale.

    /usr/bin/python3 tests/faults/run_faults.py            # quick: 3 kills, 8-s outages (ctest faults.quick)
    /usr/bin/python3 tests/faults/run_faults.py --full     # 20 kills, 60-s outages (by hand)

Faults, in this order: kill -9 of pgfanout (restarted each time); the Kafka broker stopped by
its pid and started again on the same ports and log dirs; redis-server stopped (SHUTDOWN SAVE,
so its keys come back with it) and started again; PostgreSQL stopped with `pg_ctl -m fast`,
then with `-m immediate`, and started again (pgfanout must reconnect by itself); PostgreSQL
frozen (SIGSTOP to the postmaster and every child) for 3x the status interval; the spill
directory full: pgfanout runs in a mount namespace of its own whose /tmp (where tmpfile(),
which the Redis sink spills a large transaction's commands to, always writes) is a tmpfs,
shrunk to 256 kB before a transaction of ~6 MB of keys.

The workload is tests/integration/churn.py (threads committing inserts, updates and deletes
on fx_a and fx_b, reconnecting through server restarts); the Redis rules key fx_a:{id},
fx_b:{id} and fx_spill:{v}.  The checks are the existing ones:

- Kafka: every record of the run is consumed and decoded (kafka_replay.Decoded), de-duplicated
  (unique_events, which counts duplicates), compared with a reference test_decoding slot
  (compare_with_reference: every committed transaction, each exactly), replayed into the
  tables (replay.Replayer, strict) and compared with the server, and checked for per-key order
  (kafka_replay.key_order_problems).  Lost changes and duplicates are attributed to the fault
  during which the transaction committed (by its commit LSN).
- Redis: before each fault a sample of keys is filled (rows alive now, and ids the workload
  will insert next); after the fault, once the slot is confirmed past a point P, every filled
  key of a row changed by a transaction that committed after the fill and before P must be gone
  (it is stale otherwise), and every filled key of a row never changed since must still be
  there (redis_util.existing).  Which rows changed comes from the reference slot, not from
  pgfanout.

Exit status 1 when anything was lost, a key was stale, or a fault was not survived."""
import argparse
import collections
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "harness"))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
os.environ.setdefault("PGFANOUT_BIN", os.path.join(REPO, "build", "pgfanout"))

import psycopg  # noqa: E402
import yaml  # noqa: E402

import kafka_replay  # noqa: E402
import redis_util  # noqa: E402
import replay  # noqa: E402
import runner  # noqa: E402
from churn import ID_SPAN, Churn  # noqa: E402
from kafkabroker import KafkaBroker, consume_all  # noqa: E402
from pgcluster import PGBIN, PgCluster  # noqa: E402
from redisserver import RedisServer  # noqa: E402
from runner import int_to_lsn, lsn_to_int  # noqa: E402

QUICK = dict(kills=3, outage_s=8, status_s=1, freeze_s=3, fill_sample=1500, fill_ahead=1500,
             pause=0.1)
FULL = dict(kills=20, outage_s=60, status_s=1, freeze_s=3, fill_sample=3000, fill_ahead=3000,
            pause=0.05)   # pause: seconds between a workload thread's transactions

NAME = "fx"
PREFIX = "fx"                    # topic prefix
SPILL_ROWS = 10_000              # one transaction of ~6.5 MB of Redis commands: spilled (> 4 MB)
SPILL_REPEAT = 20                # md5 repeats in a spill row's v: keys of ~650 bytes
TMP_SIZE = "64m"                 # pgfanout's private /tmp
TMP_FULL = "256k"                # ... shrunk to this for the spill fault
FILL_MARGIN = 4096               # bytes of WAL after the fill's end before a commit surely follows it
SPILL_ERROR = "cannot write a large transaction to a temporary file"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Window:
    """Keys filled before one fault, and what Redis held once the slot passed check_lsn."""

    def __init__(self, keys, fill_start, fill_end):
        self.keys = keys                  # {key: (table, id or spill v)}
        self.fill_start = fill_start      # slot confirmed_flush when the fill began
        self.fill_end = fill_end          # WAL insert position once the last SET returned
        self.check_lsn = None
        self.present = None


class Fault:
    """One row of the result table."""

    def __init__(self, name):
        self.name = name
        self.start_lsn = None             # WAL insert position when the fault's phase began
        self.survived = None
        self.notes = []
        self.window = None
        self.lost = 0
        self.dups = 0
        self.stale = 0
        self.wrongly_deleted = 0
        self.examples = []


class Suite:
    def __init__(self, opts, workdir):
        self.o = opts
        self.workdir = workdir
        self.cluster = self.broker = self.rs = None
        self.churn = None
        self.worker = None
        self.runs = 0
        self.faults = []
        self.spill_keys = {}
        self.spill_commits = []
        self.private_tmp = private_tmp_works()
        self.rng = random.Random(opts["seed"])
        self.low = 1 << 64

    # --- servers, connections -------------------------------------------------------------

    def conn(self):
        """A fresh connection (PostgreSQL restarts break older ones), retried while it starts."""
        deadline = time.monotonic() + 60
        while True:
            try:
                return runner.connect(self.cluster.dsn())
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def sql(self, query, params=None):
        with self.conn() as c:
            return runner.scalar(c, query, params)

    def insert_lsn(self):
        return lsn_to_int(self.sql("SELECT pg_current_wal_insert_lsn()::text"))

    def confirmed(self):
        with self.conn() as c:
            lsn = redis_util.confirmed_lsn(c, f"{NAME}_slot")
        # The lowest position seen since the fill: a restarted server can hand back an older
        # confirmed_flush (PostgreSQL 15 does not always write it at a shutdown checkpoint),
        # and pgfanout then re-sends, and re-deletes, from there.
        self.low = min(self.low, lsn)
        return lsn

    def start(self):
        log("starting PostgreSQL, Kafka, Redis")
        self.cluster = PgCluster().start()
        self.broker = KafkaBroker().start()
        self.rs = RedisServer().start()
        self.redis = self.rs.client()
        self.churn = Churn(self.cluster.dsn(), NAME, self.o["seed"], 10**12, threads=2,
                           pause=self.o["pause"], max_seconds=10**6)
        with self.conn() as c:
            self.churn.create(c)
            c.execute(f"CREATE TABLE {NAME}_spill (id int8 PRIMARY KEY, v text)")
            # Its key template uses v: FULL sends it for deletes too (pgfanout warns otherwise).
            c.execute(f"ALTER TABLE {NAME}_spill REPLICA IDENTITY FULL")
            tables = self.tables()
            c.execute(f"CREATE PUBLICATION {NAME}_pub FOR TABLE "
                      + ", ".join(f"{s}.{t}" for s, t in tables))
            c.execute(f"SELECT pg_create_logical_replication_slot('{NAME}_slot', 'pgoutput')")
            c.execute(f"SELECT pg_create_logical_replication_slot('{NAME}_ref', 'test_decoding')")
        self.config = os.path.join(self.workdir, "pgfanout.yaml")
        redis_util.write_config(self.config, {
            "command_timeout_ms": 2000,
            "rules": [{"table": f"{NAME}_a", "keys": [f"{NAME}_a:{{id}}"]},
                      {"table": f"{NAME}_b", "keys": [f"{NAME}_b:{{id}}"]},
                      {"table": f"{NAME}_spill", "keys": [f"{NAME}_spill:{{v}}"]}]})

    def tables(self):
        return self.churn.tables + [("public", f"{NAME}_spill")]

    def stop(self):
        if self.churn is not None:
            self.churn.stop()
            self.churn.join(60)
        if self.worker is not None:
            self.worker.kill()
        for s in (self.rs, self.broker, self.cluster):
            if s is None:
                continue
            try:
                if s is self.rs and s.proc is not None and s.proc.poll() is None:
                    os.kill(s.proc.pid, signal.SIGCONT)
                s.cleanup() if hasattr(s, "cleanup") else s.stop()
            except Exception as e:  # keep stopping the others
                log(f"stopping {type(s).__name__}: {e}")

    # --- pgfanout ------------------------------------------------------------------------

    def args(self):
        return ["--dsn", self.cluster.dsn(), "--slot", f"{NAME}_slot", "--publication",
                f"{NAME}_pub", "--sink", "kafka,redis", "--kafka-brokers", self.broker.bootstrap,
                "--topic-prefix", PREFIX, "--config", self.config, "--redis", self.rs.addr,
                "--status-interval", str(self.o["status_s"]), "--kafka-conf", "linger.ms=100"]

    def wrap(self, tmp_size):
        """unshare: a mount namespace of pgfanout's own, whose /tmp is a tmpfs of tmp_size
        (so that filling it touches nobody else's /tmp); the process is still our child.
        Nothing when namespaces are not available here (then the spill fault is not run)."""
        if not self.private_tmp:
            return []
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                f'mount -t tmpfs -o size={tmp_size} pgfanout-faults /tmp && exec "$0" "$@"']

    def start_worker(self, tmp_size=TMP_SIZE, wait=True):
        self.runs += 1
        err = os.path.join(self.workdir, f"pgfanout.{self.runs}.log")
        w = runner.Worker(self.args(), stderr_path=err, wrap=self.wrap(tmp_size))
        self.worker = w
        if wait:
            redis_util.wait_started(w, timeout=60)
        return w

    def worker_log(self, n=3000):
        return self.worker.stderr_text()[-n:] if self.worker else ""

    def wait_confirmed(self, target, timeout=180, worker=True):
        """Waits until the slot is confirmed at or past target (both sinks acknowledged
        everything before it); False on timeout or when pgfanout exited."""
        def reached():
            if worker and not self.worker.running():
                raise RuntimeError(f"pgfanout exited ({self.worker.proc.returncode}):\n"
                                   + self.worker_log())
            return self.confirmed() >= target
        return runner.wait_for(reached, timeout, interval=0.2)

    def catch_up(self, fault, timeout=180):
        """The slot reaches the WAL position of now (the workload keeps going)."""
        target = self.insert_lsn()
        ok = self.wait_confirmed(target, timeout)
        if not ok:
            fault.notes.append(f"slot not confirmed past {int_to_lsn(target)} in {timeout} s")
        return target if ok else None

    # --- Redis keys ----------------------------------------------------------------------

    def fill(self, extra=None):
        """SETs a sample of keys: rows alive now and ids each churn thread inserts next."""
        o = self.o
        keys = {}
        with self.conn() as c:
            ids = [r[0] for r in c.execute(
                f"SELECT id FROM {NAME}_a ORDER BY random() LIMIT %s", (o["fill_sample"],))]
            for t in range(self.churn.nthreads):
                top = runner.scalar(c, f"SELECT max(id) FROM {NAME}_a WHERE id >= %s AND id < %s",
                                    (t * ID_SPAN + 1, (t + 1) * ID_SPAN)) or t * ID_SPAN
                ids += range(top + 1, top + 1 + o["fill_ahead"])
        for i in ids:
            keys[f"{NAME}_a:{i}"] = (f"{NAME}_a", i)
            keys[f"{NAME}_b:{i}"] = (f"{NAME}_b", i)
        keys.update(extra or {})
        self.low = 1 << 64
        start = self.confirmed()
        redis_util.fill(self.redis, keys)
        return Window(keys, start, self.insert_lsn())

    def check(self, fault, window):
        """Records which of the window's keys Redis holds once the slot passed now."""
        lsn = self.catch_up(fault)
        if lsn is None:
            return
        window.check_lsn = lsn
        window.resent_from = min(window.fill_start, self.low)
        window.present = redis_util.existing(self.redis, window.keys)

    # --- the faults -----------------------------------------------------------------------

    def phase(self, name, body, extra_keys=None):
        f = Fault(name)
        self.faults.append(f)
        f.start_lsn = self.insert_lsn()
        log(f"--- {name}")
        try:
            if self.worker is None or not self.worker.running():
                self.start_worker()
            f.window = self.fill(extra_keys)
            f.survived = body(f)
            if not self.worker.running():
                f.notes.append("pgfanout not running after the fault")
                f.survived = False
                self.start_worker()
            self.check(f, f.window)
            if f.window.check_lsn is None:
                f.survived = False
        except Exception as e:
            f.survived = False
            f.notes.append(f"error: {e}"[:600])
            traceback.print_exc()
            log(self.worker_log(2000))
            if self.worker is None or not self.worker.running():
                try:
                    self.start_worker()
                except Exception as e2:
                    f.notes.append(f"restart failed: {e2}"[:300])
        log(f"{name}: survived={f.survived} {'; '.join(f.notes)}")

    def kills(self, f):
        for k in range(self.o["kills"]):
            time.sleep(self.rng.uniform(0.3, 2.0))
            if not self.worker.running():
                f.notes.append(f"pgfanout exited by itself before kill {k + 1}")
                return False
            self.worker.proc.send_signal(signal.SIGKILL)
            self.worker.proc.wait()
            self.worker.kill()
            with self.conn() as c:
                runner.wait_slot_inactive(c, f"{NAME}_slot", timeout=30)
            self.start_worker()
        f.notes.append(f"{self.o['kills']} kills")
        return True

    def hold_samples(self, seconds):
        """Polls the slot during an outage: [(confirmed, pgfanout running)]."""
        out = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            out.append((self.confirmed(), self.worker.running()))
            time.sleep(0.5)
        return out

    def outage_result(self, f, down_lsn, samples):
        """pgfanout stayed up; the slot's furthest point during the outage is kept to check,
        once the events are in, that it passed no transaction committed after down_lsn."""
        f.hold = (down_lsn, max(c for c, _ in samples))
        return all(alive for _, alive in samples)

    def broker_down(self, f):
        time.sleep(0.5)
        self.broker.stop()
        down = self.insert_lsn()
        samples = self.hold_samples(self.o["outage_s"])
        t0 = time.monotonic()
        self.broker.restart()
        f.notes.append(f"broker back in {time.monotonic() - t0:.1f} s")
        return self.outage_result(f, down, samples)

    def redis_down(self, f):
        time.sleep(0.5)
        # SHUTDOWN SAVE: the restarted server loads the keys back (a cache that kept them),
        # so that invalidations owed from the outage can be checked.
        try:
            self.redis.shutdown(save=True)
        except Exception:
            pass  # the connection closes under the call
        self.rs.proc.wait(timeout=30)
        down = self.insert_lsn()
        samples = self.hold_samples(self.o["outage_s"])
        self.rs.start()
        self.redis = self.rs.client()
        return self.outage_result(f, down, samples)

    def pg_stop(self, mode):
        def body(f):
            time.sleep(0.5)
            pid = self.worker.proc.pid
            before = self.confirmed()
            seen = self.worker.stderr_text().count("reconnected")
            t0 = time.monotonic()
            subprocess.run([f"{PGBIN}/pg_ctl", "stop", "-D", self.cluster.datadir, "-m", mode,
                            "-w", "-t", "60"], user=self.cluster._user, check=True,
                           stdout=subprocess.DEVNULL)
            self.cluster.proc.wait(timeout=60)
            time.sleep(1)
            self.cluster._spawn()
            after = self.confirmed()
            f.notes.append(f"down {time.monotonic() - t0:.1f} s; confirmed {int_to_lsn(before)}"
                           f" before, {int_to_lsn(after)} after")
            ok = runner.wait_for(lambda: not self.worker.running()
                                 or self.worker.stderr_text().count("reconnected") > seen, 60)
            return bool(ok) and self.worker.running() and self.worker.proc.pid == pid
        return body

    def pg_freeze(self, f):
        time.sleep(0.5)
        pids = [self.cluster.proc.pid] + children(self.cluster.proc.pid)
        pid = self.worker.proc.pid
        for p in pids:
            os.kill(p, signal.SIGSTOP)
        try:
            time.sleep(self.o["freeze_s"])
        finally:
            for p in pids:
                os.kill(p, signal.SIGCONT)
        f.notes.append(f"{len(pids)} processes frozen {self.o['freeze_s']} s")
        return self.worker.running() and self.worker.proc.pid == pid

    def spill_full(self, f):
        """The spill directory full: /tmp of pgfanout's namespace shrunk below the spill."""
        pid = self.worker.proc.pid
        subprocess.run(["nsenter", "-t", str(pid), "-m", "mount", "-o",
                        f"remount,size={TMP_FULL}", "/tmp"], check=True)
        before = self.confirmed()
        with self.conn() as c:
            c.execute(f"INSERT INTO {NAME}_spill SELECT g, repeat(md5(g::text), {SPILL_REPEAT})"
                      f" FROM generate_series(1, {SPILL_ROWS}) g")
            spill_end = lsn_to_int(runner.current_lsn(c))
        exited = self.worker.wait(60)
        text = self.worker.stderr_text()
        held = self.confirmed()
        clear = SPILL_ERROR in text
        f.notes.append(f"exit {exited}, error logged: {clear}, confirmed {int_to_lsn(held)}"
                       f" (was {int_to_lsn(before)}), spill txn ends {int_to_lsn(spill_end)}")
        # Still full: a new run fails the same way and the slot still holds.
        self.start_worker(tmp_size=TMP_FULL, wait=False)
        again = self.worker.wait(90)
        held2 = self.confirmed()
        again_clear = SPILL_ERROR in self.worker.stderr_text()
        f.notes.append(f"restarted while full: exit {again}, error logged: {again_clear}")
        f.spill_hold = (held, held2, spill_end)
        # Space back.
        self.start_worker()
        ok = self.wait_confirmed(spill_end, 120)
        return bool(exited and exited != 0 and clear and again and again_clear and ok)

    # --- the end ---------------------------------------------------------------------------

    def finish(self):
        log("--- stopping the workload, final catch-up")
        self.churn.stop()
        self.churn.join(60)
        end = self.insert_lsn()
        if self.worker is None or not self.worker.running():
            self.start_worker()
        if not self.wait_confirmed(end, 240):
            raise RuntimeError("pgfanout did not catch up at the end:\n" + self.worker_log())
        rc = self.worker.terminate(signal.SIGTERM, timeout=60)
        if rc != 0:
            raise RuntimeError(f"pgfanout's SIGTERM exit code {rc}:\n{self.worker_log()}")
        if self.churn.fatal:
            raise RuntimeError(f"the workload failed: {self.churn.fatal}")

    def evaluate(self):
        """Fills each fault's lost/duplicates/stale figures; returns the problems."""
        problems = []
        with self.conn() as c:
            ref = kafka_replay.reference_transactions(c, f"{NAME}_ref", self.tables())
        topics = [f"{PREFIX}.{s}.{t}" for s, t in self.tables()]
        t0 = time.monotonic()
        decoded = kafka_replay.Decoded(consume_all(self.broker.bootstrap, topics, timeout=300))
        events, dups, conflicts = kafka_replay.unique_events(decoded.records)
        log(f"{kafka_replay.count_changes(ref)} changes in {len(ref)} transactions committed;"
            f" {len(decoded.records)} records read in {time.monotonic() - t0:.1f} s,"
            f" {len(events)} distinct events, {dups} duplicates")
        problems += decoded.problems[:20]
        problems += [f"one identity, different events: {c_[0]}" for c_ in conflicts[:5]]
        problems += kafka_replay.compare_with_reference(ref, events)
        problems += kafka_replay.key_order_problems(decoded)
        with self.conn() as c:
            try:
                replay.assert_tables_match(c, replay.Replayer(strict=True).apply_all(events),
                                           self.tables())
            except AssertionError as e:
                problems.append(str(e)[:3000])

        # Per fault: the transactions that committed during its phase.
        starts = [f.start_lsn for f in self.faults]

        def fault_of(lsn):
            i = 0
            while i + 1 < len(starts) and lsn >= starts[i + 1]:
                i += 1
            return self.faults[i]  # the workload starts after the first row's start

        got = collections.defaultdict(list)
        for e in events:
            if e["op"] in ("insert", "update", "delete"):
                got[e["xid"]].append((e["schema"], e["table"], e["op"], kafka_replay._event_id(e)))
        for xid, t in ref.items():
            have = collections.Counter(got.get(xid, ()))
            lost = sum((collections.Counter(t.changes) - have).values())
            if lost:
                fault_of(t.end_lsn).lost += lost
        copies = collections.Counter()
        for r in decoded.records:
            if r.event is not None:
                copies[(r.rec.topic, r.rec.partition, r.ident)] += 1
        for (_, _, ident), n in copies.items():
            if n > 1:
                fault_of(ident[0]).dups += n - 1

        # The slot never passed a transaction committed after a sink went away.
        commits = sorted({lsn_to_int(e["commit_lsn"]) for e in events if e.get("commit_lsn")})
        for f in self.faults:
            if hasattr(f, "hold"):
                down, furthest = f.hold
                first_after = next((x for x in commits if x >= down), None)
                if first_after is not None and furthest > first_after:
                    f.survived = False
                    f.notes.append(f"slot confirmed {int_to_lsn(furthest)} during the outage, past"
                                   f" the commit at {int_to_lsn(first_after)}")
            if hasattr(f, "spill_hold"):
                held, held2, spill_end = f.spill_hold
                # The spill transaction's own commit LSN (spill_end was read after it
                # returned, so later commits may lie before it); PostgreSQL skips a transaction
                # whose commit record starts before the confirmed position.
                spill_end = min((lsn_to_int(e["commit_lsn"]) for e in events
                                 if e["table"] == f"{NAME}_spill"),
                                default=min(self.spill_commits, default=spill_end))
                if max(held, held2) > spill_end:
                    f.survived = False
                    f.notes.append(f"slot confirmed {int_to_lsn(max(held, held2))} past the"
                                   f" undelivered spilled transaction (ends {int_to_lsn(spill_end)})")

        # Redis: per fault window.
        changed = collections.defaultdict(list)  # key -> [commit end LSNs]
        for t in ref.values():
            for schema, table, op, ident in t.changes:
                if table == f"{NAME}_spill":
                    continue
                changed[f"{table}:{ident}"].append(t.end_lsn)
        for key, v in self.spill_keys.items():
            changed[key] += self.spill_commits
        for f in self.faults:
            w = f.window
            if w is None or w.present is None:
                continue
            gone = {k for k in w.keys
                    if any(w.fill_end + FILL_MARGIN < x <= w.check_lsn for x in changed.get(k, ()))}
            kept = {k for k in w.keys if not any(x > w.resent_from for x in changed.get(k, ()))}
            stale = gone & w.present
            wrong = kept - w.present
            f.stale = len(stale)
            f.wrongly_deleted = len(wrong)
            f.checked = (len(gone), len(kept))
            if stale:
                f.examples.append(f"stale: {sorted(stale)[:5]}")
            if wrong:
                # Not a loss (the key is only gone too early), so reported, not failed.
                f.examples.append(f"{len(wrong)} keys deleted though their rows did not change"
                                  f" (not a failure), e.g. {sorted(wrong)[:5]}")
        return problems, ref, dups

    def table(self):
        rows = [("fault", "survived", "changes lost", "duplicates", "stale keys",
                 "keys checked (gone/kept)")]
        for f in self.faults:
            chk = getattr(f, "checked", None)
            survived = f.survived if isinstance(f.survived, str) else ("yes" if f.survived else "NO")
            rows.append((f.name, survived, str(f.lost), str(f.dups),
                         str(f.stale), f"{chk[0]}/{chk[1]}" if chk else "-"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = []
        for n, r in enumerate(rows):
            lines.append(" | ".join(c.ljust(w) for c, w in zip(r, widths)))
            if n == 0:
                lines.append("-+-".join("-" * w for w in widths))
        return "\n".join(lines)


def private_tmp_works():
    """True when this process may give a child a mount namespace with a tmpfs /tmp (root, or
    CAP_SYS_ADMIN; not in an unprivileged container)."""
    try:
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs -o size=64k pgfanout-faults /tmp"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def children(pid):
    """Every descendant of pid (from /proc), depth first."""
    kids = collections.defaultdict(list)
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids[ppid].append(int(d))
    out = []
    stack = list(kids.get(pid, ()))
    while stack:
        p = stack.pop()
        out.append(p)
        stack += kids.get(p, ())
    return out


def spill_keys():
    """The keys of the spill transaction's rows, computed here (md5 as PostgreSQL's)."""
    out = {}
    for g in range(1, SPILL_ROWS + 1):
        v = hashlib.md5(str(g).encode()).hexdigest() * SPILL_REPEAT
        out[f"{NAME}_spill:{v}"] = (f"{NAME}_spill", v)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="20 kills and 60-s outages (the issue's size)")
    ap.add_argument("--kills", type=int, help="override the number of kill -9")
    ap.add_argument("--outage", type=float, help="override the broker/Redis outage in seconds")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("PGFANOUT_FAULTS_SEED", "14")))
    ap.add_argument("--keep", action="store_true", help="keep the work directory (pgfanout's logs)")
    a = ap.parse_args()
    opts = dict(FULL if a.full else QUICK)
    if a.kills is not None:
        opts["kills"] = a.kills
    if a.outage is not None:
        opts["outage_s"] = a.outage
    opts["seed"] = a.seed
    # Not under /tmp: pgfanout's /tmp is a tmpfs of its own, where it could not read its config.
    workdir = tempfile.mkdtemp(prefix="pgfanout-faults-", dir="/var/tmp")
    binary = os.path.realpath(runner.pgfanout_bin())
    if binary.startswith("/tmp/"):
        # pgfanout's own /tmp hides the original: run a copy.
        shutil.copy2(binary, os.path.join(workdir, "pgfanout"))
        os.environ["PGFANOUT_BIN"] = os.path.join(workdir, "pgfanout")
    t_start = time.monotonic()
    log(f"fault suite ({'full' if a.full else 'quick'}): {opts}; binary {runner.pgfanout_bin()};"
        f" logs in {workdir}")
    s = Suite(opts, workdir)
    ok = False
    try:
        s.start()
        s.churn.start()
        # The first row: the start and a steady stretch with no fault (a loss before the first
        # fault is charged here).
        steady = Fault("none (start, steady workload)")
        steady.start_lsn = s.insert_lsn()
        s.faults.append(steady)
        s.start_worker()
        time.sleep(2)
        steady.survived = s.worker.running()
        s.phase(f"kill -9 x{opts['kills']}", s.kills)
        s.phase(f"Kafka broker down {opts['outage_s']:g} s", s.broker_down)
        s.phase(f"Redis down {opts['outage_s']:g} s", s.redis_down)
        s.phase("PostgreSQL restart -m fast", s.pg_stop("fast"))
        s.phase("PostgreSQL restart -m immediate", s.pg_stop("immediate"))
        s.phase(f"PostgreSQL frozen {opts['freeze_s']:g} s (status {opts['status_s']} s)",
                s.pg_freeze)
        s.spill_keys = spill_keys()
        s.spill_commits = []
        if s.private_tmp:
            s.phase("spill directory full", s.spill_full, extra_keys=s.spill_keys)
        else:
            f = Fault("spill directory full")
            f.notes.append("NOT RUN: no mount namespace with a tmpfs /tmp here (needs root"
                           " or CAP_SYS_ADMIN)")
            f.start_lsn = s.insert_lsn()
            f.survived = "not run"
            s.faults.append(f)
        s.finish()
        with s.conn() as c:
            # The spill transaction's commit, from the reference slot (it has no churn ids).
            s.spill_commits = [t.end_lsn for t in kafka_replay.reference_transactions(
                c, f"{NAME}_ref", [("public", f"{NAME}_spill")]).values()]
        problems, ref, dups = s.evaluate()
        print()
        print(s.table())
        print()
        for f in s.faults:
            for n in f.notes + f.examples:
                print(f"  {f.name}: {n}")
        if problems:
            print("\nPROBLEMS:\n" + "\n".join(problems[:40]))
        lost = sum(f.lost for f in s.faults)
        stale = sum(f.stale for f in s.faults)
        ok = not problems and lost == 0 and stale == 0 and all(f.survived for f in s.faults)
        print(f"\n{kafka_replay.count_changes(ref)} changes in {len(ref)} transactions;"
              f" {sum(f.lost for f in s.faults)} lost, {dups} duplicates, {stale} stale keys;"
              f" {time.monotonic() - t_start:.0f} s in all: {'PASS' if ok else 'FAIL'}")
    except Exception:
        traceback.print_exc()
        if s.worker is not None:
            print(s.worker_log())
    finally:
        s.stop()
        if not a.keep and ok:
            shutil.rmtree(workdir, ignore_errors=True)
        elif os.path.isdir(workdir):
            print(f"pgfanout's logs kept in {workdir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
