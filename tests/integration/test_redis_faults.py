"""Fault injection for pgfanout's Redis sink (--sink redis) against a real PostgreSQL 15 and a
real redis-server (tests/harness/redisserver.py):

  1. redis-server killed -9 mid-workload and started again more than 10 s later;
  2. redis-server frozen (SIGSTOP) for longer than redis.command_timeout_ms, then SIGCONT;
  3. pgfanout killed -9 at seeded random points and restarted (after each kill, nothing the
     slot is confirmed past may still be cached);
  4. back-pressure with Redis down: bounded VmRSS under a large workload, resumes after;
  5. SIGTERM with Redis down: exit 0 in bounded time, nothing undelivered confirmed, a
     restart delivers; 5b. the same while back-pressure holds the slot, after a transaction
     that spilled to its temporary file was resent by the same process across an outage;
  6. `generation: lsn` after an outage ends at the commit LSN of the last transaction.

While Redis is down or frozen, every test polls the slot: confirmed_flush_lsn must never pass
the commit LSN of the first transaction (with keys to delete) committed after Redis stopped
answering.

The end-state check.  Before pgfanout sees any change, every key a row can feed is SET: the
keys of every existing row, and the keys of every id and slug the workload may create later
(reserved ranges).  The workload records the keys each committed transaction invalidates
(old and new row under REPLICA IDENTITY FULL: an id or slug change invalidates both).  At the
end, once the slot is confirmed past the last transaction: every key of a changed row is gone
(else an invalidation was lost) and every other filled key is still there (else pgfanout
deleted too much, or Redis lost data).  Each workload thread takes untouched rows for most
changes, so the invalidations of the transactions committed during a fault are mostly of keys
nothing deleted before: losing them shows.

Crash-consistent Redis restarts.  RedisServer has no persistence, so a killed Redis would
come back empty and hide lost invalidations.  crash_redis() instead pauses client writes
(CLIENT PAUSE WRITE: commands pgfanout sends stay unexecuted and unanswered), SAVEs the
snapshot (dump.rdb in the server's --dir, which start() loads again), then kills -9.  Every
DEL pgfanout got an answer for is in the snapshot; every one sent after the pause dies with
the process unanswered: a crash of a Redis that persisted exactly what it acknowledged.

Exact LSNs come from a second, reference pgoutput slot on the same publication, peeked with
pg_logical_slot_peek_binary_changes (Begin/Commit messages carry xid, commit LSN, end LSN).

Run with `pytest -s` to see the measured figures.  Knob: PGFANOUT_REDIS_KILL_SEED (the seed of
the kill -9 test's kill points; a fresh one each run otherwise, always printed)."""
import hashlib
import os
import random
import signal
import struct
import threading
import time

import pytest

import runner
from redis_util import (assert_keys, confirmed_lsn, drop_slots, existing, fill, wait_confirmed,
                        write_config)
from runner import int_to_lsn, is_asan_binary, lsn_to_int, rss_kb, wait_for

KILL_SEED = int(os.environ.get("PGFANOUT_REDIS_KILL_SEED") or random.SystemRandom().randrange(1 << 30))
OUTAGE_S = 11            # Redis down for at least 10 s (test 1)
FREEZE_S = 7             # SIGSTOP this long (test 2), more than 3x the command timeout
COMMAND_TIMEOUT_MS = 2000
BP_INFLIGHT = "256k"     # --max-inflight-bytes of the back-pressure test
BP_ROWS, BP_TXN_ROWS = 120_000, 1000
BP_PAD = 6               # md5 repeats in a back-pressure key: keys of about 210 bytes
RSS_GROWTH_KB = 8 * 1024   # VmRSS growth bound during the outage (twice that under ASan)
SHUTDOWN_TIMEOUT_S = 3


# --- fixtures ----------------------------------------------------------------------------

# --- the table, its keys and the workload -------------------------------------------------

class Items:
    """name(id int8 PRIMARY KEY, slug text UNIQUE, n int4) with REPLICA IDENTITY FULL, rows
    1..rows with slugs s<id>, and the rule keys name:{id} and name:slug:{slug}.  Workload
    thread t of `threads` owns the rows with id % threads == t, the new ids
    rows + 1 + k * threads + t and the new slugs n<t>x<k> (k < reserve).  A second table,
    name_log, is published without a rule: transactions on it alone give the sink nothing
    to send (acked without a round trip, in order with the others)."""

    def __init__(self, name, rows, threads=1, reserve=3000):
        self.name, self.rows, self.threads, self.reserve = name, rows, threads, reserve

    def create(self, db):
        db.execute(f"CREATE TABLE {self.name} (id int8 PRIMARY KEY, slug text NOT NULL UNIQUE,"
                   f" n int4 NOT NULL DEFAULT 0)")
        db.execute(f"ALTER TABLE {self.name} REPLICA IDENTITY FULL")
        db.execute(f"INSERT INTO {self.name} (id, slug) SELECT g, 's' || g"
                   f" FROM generate_series(1, {self.rows}) g")
        db.execute(f"CREATE TABLE {self.name}_log (id bigserial PRIMARY KEY, note text)")

    @property
    def tables(self):
        return [self.name, f"{self.name}_log"]

    def id_key(self, i):
        return f"{self.name}:{i}"

    def slug_key(self, s):
        return f"{self.name}:slug:{s}"

    @property
    def gen_key(self):
        return f"pgfanout:gen:public.{self.name}"

    def rule(self, generation=None):
        r = {"table": self.name, "keys": [f"{self.name}:{{id}}", f"{self.name}:slug:{{slug}}"]}
        if generation:
            r["generation"] = generation
        return r

    def new_ids(self, t):
        return [self.rows + 1 + k * self.threads + t for k in range(self.reserve)]

    def new_slugs(self, t):
        return [f"n{t}x{k}" for k in range(self.reserve)]

    def all_keys(self):
        keys = set()
        for i in range(1, self.rows + 1):
            keys.add(self.id_key(i))
            keys.add(self.slug_key(f"s{i}"))
        for t in range(self.threads):
            keys.update(self.id_key(i) for i in self.new_ids(t))
            keys.update(self.slug_key(s) for s in self.new_slugs(t))
        return keys



class Workload:
    """Short transactions of 1-4 changes on an Items table, from items.threads threads on
    disjoint rows (so no lock waits), each with its own seeded random choices: mostly
    untouched rows, sometimes a row changed before; updates of n, slug changes, id changes,
    deletes, inserts.  Each committed transaction is recorded as (time it returned, keys it
    invalidates)."""

    def __init__(self, dsn, items, seed, pause=0.01):
        self.dsn, self.items, self.seed, self.pause = dsn, items, seed, pause
        self.lock = threading.Lock()
        self.committed = []
        self.keys_by_xid = {}
        self.errors = []
        self._stop = threading.Event()
        self._threads = []
        self._states = [self._initial_state(t) for t in range(items.threads)]

    def _initial_state(self, t):
        it = self.items
        rng = random.Random(self.seed * 1000 + t)
        fresh = [i for i in range(1, it.rows + 1) if i % it.threads == t]
        rng.shuffle(fresh)
        return {"rng": rng, "fresh": fresh, "live": {i: f"s{i}" for i in fresh},
                "touched": [], "new_ids": list(reversed(it.new_ids(t))),
                "new_slugs": list(reversed(it.new_slugs(t)))}

    def _plan(self, st):
        """One transaction: [(sql, params)], keys it invalidates."""
        it, rng, live = self.items, st["rng"], st["live"]
        stmts, keys = [], set()
        if rng.random() < 0.08:  # nothing for Redis to do
            return [(f"INSERT INTO {it.name}_log (note) VALUES (%s)", ("no rule",))], keys
        for _ in range(rng.randint(1, 4)):
            if rng.random() < 0.1 and st["new_ids"] and st["new_slugs"]:
                i, s = st["new_ids"].pop(), st["new_slugs"].pop()
                stmts.append((f"INSERT INTO {it.name} (id, slug) VALUES (%s, %s)", (i, s)))
                keys |= {it.id_key(i), it.slug_key(s)}
                live[i] = s
                st["touched"].append(i)
                continue
            st["touched"] = [i for i in st["touched"] if i in live] \
                if len(st["touched"]) > 2000 else st["touched"]
            again = [i for i in st["touched"][-200:] if i in live]
            if again and (rng.random() < 0.2 or not st["fresh"]):
                i = rng.choice(again)
            elif st["fresh"]:
                i = st["fresh"].pop()
            else:
                break
            s = live[i]
            r = rng.random()
            if r < 0.45 or (r < 0.8 and not (st["new_ids"] and st["new_slugs"])):
                stmts.append((f"UPDATE {it.name} SET n = n + 1 WHERE id = %s", (i,)))
                keys |= {it.id_key(i), it.slug_key(s)}
                st["touched"].append(i)
            elif r < 0.7:
                ns = st["new_slugs"].pop()
                stmts.append((f"UPDATE {it.name} SET slug = %s, n = n + 1 WHERE id = %s", (ns, i)))
                keys |= {it.id_key(i), it.slug_key(s), it.slug_key(ns)}
                live[i] = ns
                st["touched"].append(i)
            elif r < 0.8:
                ni = st["new_ids"].pop()
                stmts.append((f"UPDATE {it.name} SET id = %s WHERE id = %s", (ni, i)))
                keys |= {it.id_key(i), it.id_key(ni), it.slug_key(s)}
                del live[i]
                live[ni] = s
                st["touched"].append(ni)
            else:
                stmts.append((f"DELETE FROM {it.name} WHERE id = %s", (i,)))
                keys |= {it.id_key(i), it.slug_key(s)}
                del live[i]
        return stmts, keys

    def _txn(self, conn, st):
        stmts, keys = self._plan(st)
        if not stmts:
            return False
        with conn.transaction():
            for sql, params in stmts:
                conn.execute(sql, params)
            xid = runner.scalar(conn, "SELECT txid_current()") & 0xFFFFFFFF
        with self.lock:
            self.committed.append((time.monotonic(), keys))
            self.keys_by_xid[xid] = keys
        return True

    def _run(self, t):
        try:
            with runner.connect(self.dsn) as conn:
                while not self._stop.is_set():
                    if not self._txn(conn, self._states[t]):
                        break
                    if self.pause:
                        time.sleep(self.pause)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(f"thread {t}: {e!r}")

    def run_txns(self, n):
        """Commits n transactions in the caller's thread (thread 0's rows)."""
        with runner.connect(self.dsn) as conn:
            for _ in range(n):
                self._txn(conn, self._states[0])

    def start(self):
        self._stop.clear()
        self._threads = [threading.Thread(target=self._run, args=(t,), daemon=True)
                         for t in range(self.items.threads)]
        for th in self._threads:
            th.start()

    def stop(self):
        self._stop.set()
        for th in self._threads:
            th.join(60)
        assert not any(th.is_alive() for th in self._threads), "workload threads hang"
        assert not self.errors, self.errors

    def count(self):
        with self.lock:
            return len(self.committed)

    def gone(self, since=None, until=None):
        """Keys invalidated by the transactions committed (returned) in (since, until]."""
        out = set()
        with self.lock:
            for t, keys in self.committed:
                if (since is None or t > since) and (until is None or t <= until):
                    out |= keys
        return out


# --- pgfanout, slots, LSNs ---------------------------------------------------------------

def config(path, rules, **settings):
    """A pgfanout config with these rules and redis settings."""
    return write_config(path, dict(settings, rules=rules))


def setup_slots(db, name, tables):
    """Publication name_pub for tables, the slot pgfanout reads (name_slot) and a reference
    pgoutput slot (name_ref) created right after it, so both see the same transactions."""
    db.execute(f"CREATE PUBLICATION {name}_pub FOR TABLE {', '.join(tables)}")
    db.execute(f"SELECT pg_create_logical_replication_slot('{name}_slot', 'pgoutput')")
    db.execute(f"SELECT pg_create_logical_replication_slot('{name}_ref', 'pgoutput')")


def drop_ref(db, name):
    drop_slots(db, f"{name}_slot", f"{name}_ref")


def worker_args(cluster, rs, name, config, *extra):
    return ["--dsn", cluster.dsn(), "--slot", f"{name}_slot", "--publication", f"{name}_pub",
            "--sink", "redis", "--config", config, "--redis", rs.addr,
            "--status-interval", "0.2", *extra]


def ref_transactions(db, name, keyed, upto_nchanges=None):
    """[(xid, commit_lsn, end_lsn, has_keys)] in commit order of the transactions with row
    changes, from the reference slot (peeked, not consumed); has_keys: it changed a table of
    `keyed` (one with a rule).  upto_nchanges stops after the transaction that passes it."""
    relids = {runner.scalar(db, "SELECT %s::regclass::oid::int8", (t,)) for t in keyed}
    out, xid, changed, has_keys = [], None, False, False
    with db.cursor() as cur:
        cur.execute("SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, %s,"
                    " 'proto_version', '1', 'publication_names', %s)",
                    (f"{name}_ref", upto_nchanges, f"{name}_pub"))
        for (data,) in cur:
            data = bytes(data)
            kind = data[:1]
            if kind == b"B":
                _final, _ts, xid = struct.unpack_from(">QqI", data, 1)
                changed = has_keys = False
            elif kind in (b"I", b"U", b"D"):
                changed = True
                has_keys |= struct.unpack_from(">I", data, 1)[0] in relids
            elif kind == b"T":
                changed = has_keys = True
            elif kind == b"C" and changed:
                _flags, commit_lsn, end_lsn, _ts = struct.unpack_from(">bQQq", data, 1)
                out.append((xid, commit_lsn, end_lsn, has_keys))
    return out


def insert_lsn(db):
    return lsn_to_int(runner.scalar(db, "SELECT pg_current_wal_insert_lsn()::text"))


def wait_received(db, slot, lsn, timeout=30):
    """Waits until the walsender of slot reports pgfanout wrote (received) lsn."""
    def got():
        v = runner.scalar(db, "SELECT write_lsn::text FROM pg_stat_replication WHERE pid ="
                              " (SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s)",
                          (slot,))
        return v is not None and lsn_to_int(v) >= lsn
    return wait_for(got, timeout, interval=0.05)


def first_commit_at_or_after(ref, lsn):
    """The smallest commit LSN >= lsn of a transaction with keys to invalidate (its commit
    was written after lsn).  The slot must not be confirmed past it before Redis answers."""
    return min((c for _, c, _, k in ref if k and c >= lsn), default=None)


def crash_redis(rs, db, hold=0.0):
    """Stops Redis executing writes (CLIENT PAUSE WRITE), returns the WAL insert position at
    that moment, after `hold` s (commands pile up unanswered) SAVEs and kills -9: see the
    module docstring.  Returns (pause_lsn, monotonic time of the pause)."""
    c = rs.client()
    c.client_pause(120_000, all=False)
    t_pause = time.monotonic()
    lsn = insert_lsn(db)
    time.sleep(hold)
    assert c.save()
    c.close()
    rs.kill()
    return lsn, t_pause


def confirmed_undelivered(db, name, keyed, conf, wl, client):
    """The workload transactions the slot is confirmed past (end LSN <= conf) whose keys
    Redis still has: [(xid, keys still there)].  Nothing sets keys after the fill, so each
    was confirmed before Redis executed its DELs."""
    with wl.lock:
        by_xid = dict(wl.keys_by_xid)
    confirmed_txns = [(xid, by_xid.get(xid, set())) for xid, _c, end, _k
                      in ref_transactions(db, name, keyed) if end <= conf]
    present = existing(client, set().union(*(keys for _, keys in confirmed_txns)))
    return [(xid, sorted(keys & present)) for xid, keys in confirmed_txns if keys & present]


def tail(text, n=3000):
    return text[-n:]


def assert_end_state(client, filled, gone, what):
    """Every invalidated key is gone, every other filled key is still there."""
    assert gone <= filled, f"test bug: invalidated keys never filled {sorted(gone - filled)[:5]}"
    assert_keys(client, gone, filled - gone, what)


def fill_items(rs, items):
    """SETs every key the items table can feed; returns them."""
    keys = items.all_keys()
    fill(rs.client(), keys)
    return keys


def redis_log(stderr):
    """pgfanout's log lines about its Redis connection, without timestamps."""
    return [line[25:] for line in stderr.splitlines() if "redis at" in line]


def sample_outage(db, slot, worker, seconds, every=0.25):
    """Polls (seconds in, confirmed_flush_lsn, worker alive, VmRSS kB) for seconds."""
    samples = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        samples.append((round(time.monotonic() - t0, 2), confirmed_lsn(db, slot), worker.running(),
                        rss_kb(worker.proc.pid)))
        time.sleep(every)
    return samples


def confirmed_past(samples, limit):
    """The samples whose confirmed_flush_lsn is past limit, for messages."""
    return [(t, int_to_lsn(c)) for t, c, _, _ in samples if c > limit]


# --- 1: redis-server killed -9 for more than 10 s ----------------------------------------

def test_redis_killed_for_10s_loses_no_invalidation(pgfanout, cluster, db, rs, tmp_path):
    """Redis is killed -9 while the workload commits (with DELs pgfanout sent still
    unanswered) and started again 11 s later from the snapshot taken at the kill.  Meanwhile
    pgfanout stays up, and the slot's confirmed_flush_lsn never passes the commit LSN of the
    first transaction committed after Redis stopped answering; then the same pgfanout
    reconnects, resends, catches up, and the end state holds: no invalidation lost."""
    items = Items("rk", rows=20000)
    items.create(db)
    setup_slots(db, "rk", items.tables)
    filled = fill_items(rs, items)
    cfg = config(tmp_path / "rk.yaml", [items.rule()])
    wl = Workload(cluster.dsn(), items, seed=1)
    try:
        with runner.Worker(worker_args(cluster, rs, "rk", cfg),
                           stderr_path=str(tmp_path / "rk.err")) as w:
            wl.start()
            time.sleep(2.5)
            assert w.running(), tail(w.stderr_text())
            before = wl.count()
            pause_lsn, t_pause = crash_redis(rs, db, hold=1.0)
            t_kill = time.monotonic()
            samples = sample_outage(db, "rk_slot", w, OUTAGE_S)
            commits_in_outage = wl.count() - before
            rs.start()
            down_s = time.monotonic() - t_kill
            time.sleep(2)
            wl.stop()
            ref = ref_transactions(db, "rk", [items.name])
            wait_confirmed(db, "rk_slot", ref[-1][2], timeout=60, worker=w)
            assert_end_state(rs.client(), filled, wl.gone(), "after Redis was killed")
            rc = w.terminate(timeout=30)
            stderr = w.stderr_text()
        limit = first_commit_at_or_after(ref, pause_lsn)
        in_outage = wl.gone(since=t_pause) - wl.gone(until=t_pause)
        print(f"\nredis kill -9: down {down_s:.1f} s, {commits_in_outage} transactions committed"
              f" meanwhile ({len(ref)} in all); confirmed_flush at most"
              f" {int_to_lsn(max(c for _, c, _, _ in samples))}, first commit after the pause at"
              f" {int_to_lsn(limit)}; {len(in_outage)} keys first invalidated during the outage;"
              f" log: {redis_log(stderr)[-2:]}")
        assert all(alive for _, _, alive, _ in samples), \
            "pgfanout exited while Redis was down:\n" + tail(stderr)
        assert commits_in_outage > 100, "the workload did not keep committing"
        assert len(in_outage) > 200, "too few keys to detect a lost invalidation"
        past = confirmed_past(samples, limit)
        assert not past, (f"confirmed_flush_lsn passed the first transaction committed after"
                          f" Redis stopped answering (commit {int_to_lsn(limit)}) while it was"
                          f" down (seconds in, confirmed): {past[:5]}")
        assert any("connected again" in line for line in redis_log(stderr)), tail(stderr)
        assert rc == 0, f"SIGTERM exit code {rc}:\n{tail(stderr)}"
    finally:
        wl.stop()
        drop_ref(db, "rk")


# --- 2: redis-server frozen past the command timeout -------------------------------------

def process_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_frozen_redis_is_dropped_and_resent(pgfanout, cluster, db, rs, tmp_path):
    """Redis is frozen with SIGSTOP for 7 s (redis.command_timeout_ms 2000) while the workload
    commits, then SIGCONT: pgfanout drops the connection for lack of replies, reconnects and
    resends everything unanswered; while frozen the slot is not confirmed past the first
    commit after the freeze; the end state holds (Redis keeps its data here)."""
    items = Items("fz", rows=12000)
    items.create(db)
    setup_slots(db, "fz", items.tables)
    filled = fill_items(rs, items)
    cfg = config(tmp_path / "fz.yaml", [items.rule()], command_timeout_ms=COMMAND_TIMEOUT_MS)
    wl = Workload(cluster.dsn(), items, seed=2)
    pid = rs.proc.pid
    try:
        with runner.Worker(worker_args(cluster, rs, "fz", cfg),
                           stderr_path=str(tmp_path / "fz.err")) as w:
            wl.start()
            time.sleep(2)
            assert w.running(), tail(w.stderr_text())
            before = wl.count()
            os.kill(pid, signal.SIGSTOP)
            try:
                assert wait_for(lambda: process_state(pid) == "T", 5)
                t_stop = time.monotonic()
                stop_lsn = insert_lsn(db)
                samples = sample_outage(db, "fz_slot", w, FREEZE_S)
            finally:
                os.kill(pid, signal.SIGCONT)
            commits_frozen = wl.count() - before
            time.sleep(2)
            wl.stop()
            ref = ref_transactions(db, "fz", [items.name])
            wait_confirmed(db, "fz_slot", ref[-1][2], timeout=60, worker=w)
            assert_end_state(rs.client(), filled, wl.gone(), "after Redis was frozen")
            rc = w.terminate(timeout=30)
            stderr = w.stderr_text()
        limit = first_commit_at_or_after(ref, stop_lsn)
        frozen_keys = wl.gone(since=t_stop) - wl.gone(until=t_stop)
        log = redis_log(stderr)
        print(f"\nredis SIGSTOP {FREEZE_S} s: {commits_frozen} transactions committed meanwhile,"
              f" {len(frozen_keys)} keys first invalidated then; log: {log[-2:]}")
        assert all(alive for _, _, alive, _ in samples), tail(stderr)
        assert commits_frozen > 50 and len(frozen_keys) > 100, "too little work during the freeze"
        past = confirmed_past(samples, limit)
        assert not past, (f"confirmed_flush_lsn passed the first commit after the freeze"
                          f" ({int_to_lsn(limit)}) while Redis answered nothing: {past[:5]}")
        assert any("no reply within redis.command_timeout_ms" in line for line in log), tail(stderr)
        assert any("connected again" in line for line in log), tail(stderr)
        assert rc == 0, f"SIGTERM exit code {rc}:\n{tail(stderr)}"
    finally:
        wl.stop()
        drop_ref(db, "fz")


# --- 3: pgfanout killed -9 at random points -----------------------------------------------

def test_worker_kill9_at_random_points_loses_no_invalidation(pgfanout, cluster, db, rs, tmp_path):
    """pgfanout is killed -9 at seeded random moments (4 times) while two workload threads
    commit, and restarted each time.  With redis.linger_ms 350 about a third of a second of
    received transactions is unsent at any moment, so a slot confirmed before Redis answered
    would lose them: after each kill, no transaction the slot is confirmed past may still
    have keys in Redis.  A last run catches up; the end state holds (duplicates allowed)."""
    rng = random.Random(KILL_SEED)
    print(f"\nworker kill -9: seed {KILL_SEED} (PGFANOUT_REDIS_KILL_SEED)")
    items = Items("wk", rows=16000, threads=2)
    items.create(db)
    setup_slots(db, "wk", items.tables)
    filled = fill_items(rs, items)
    # Batches held 350 ms (not a multiple of the 0.2 s status interval, which would keep
    # each send just after a status update): every status update finds some unsent.
    cfg = config(tmp_path / "wk.yaml", [items.rule()], linger_ms=350, window=256)
    args = worker_args(cluster, rs, "wk", cfg)
    wl = Workload(cluster.dsn(), items, seed=KILL_SEED)
    log = []
    try:
        wl.start()
        for k in range(4):
            with runner.Worker(args, stderr_path=str(tmp_path / f"wk{k}.err")) as w:
                delay = rng.uniform(0.6, 2.5)
                time.sleep(delay)
                assert w.running(), (f"seed {KILL_SEED}: pgfanout exited by itself before kill"
                                     f" {k + 1}:\n{tail(w.stderr_text())}")
                w.proc.send_signal(signal.SIGKILL)
                w.proc.wait()
            conf = lsn_to_int(runner.wait_slot_inactive(db, "wk_slot", timeout=30)
                              ["confirmed_flush_lsn"])
            early = confirmed_undelivered(db, "wk", [items.name], conf, wl, rs.client())
            log.append((round(delay, 2), int_to_lsn(conf), wl.count(), len(early)))
            assert not early, (
                f"seed {KILL_SEED}, kill {k + 1}: the slot is confirmed at {int_to_lsn(conf)},"
                f" past {len(early)} transactions whose keys Redis still has (confirmed before"
                f" Redis acknowledged them), e.g. (xid, keys) {early[:3]}")
        time.sleep(0.5)
        wl.stop()
        ref = ref_transactions(db, "wk", [items.name])
        with runner.Worker(args, stderr_path=str(tmp_path / "wk-last.err")) as w:
            wait_confirmed(db, "wk_slot", ref[-1][2], timeout=60, worker=w)
            assert_end_state(rs.client(), filled, wl.gone(), f"seed {KILL_SEED}, after kill -9s")
            rc = w.terminate(timeout=30)
            stderr = w.stderr_text()
        dels = rs.client().info("commandstats").get("cmdstat_del", {}).get("calls")
        print(f"worker kill -9: kills (delay s, confirmed after, transactions committed, confirmed"
              f" early): {log};"
              f" {len(ref)} transactions, {len(wl.gone())} keys invalidated by {dels} DELs")
        assert rc == 0, f"SIGTERM exit code {rc}:\n{tail(stderr)}"
        assert len({c for _, c, _, _ in log}) > 2, (f"seed {KILL_SEED}: the slot barely advanced"
                                                 f" between kills: {log}")
    finally:
        wl.stop()
        drop_ref(db, "wk")


# --- 4: back-pressure with Redis down ------------------------------------------------------

def bp_key(i, table="bp"):
    """The key of row i of a table filled with pad = repeat(md5(id::text), BP_PAD)."""
    return f"{table}:{i}:{hashlib.md5(str(i).encode()).hexdigest() * BP_PAD}"


def insert_padded(conn, table, first, last):
    """One transaction inserting rows first..last with BP_PAD md5s as pad."""
    conn.execute(f"INSERT INTO {table} SELECT g, repeat(md5(g::text), {BP_PAD})"
                 f" FROM generate_series({first}, {last}) g")


def test_backpressure_bounds_memory_while_redis_is_down(pgfanout, cluster, db, rs, tmp_path):
    """Redis is down while 120,000 rows are inserted in 1,000-row transactions whose keys
    (about 210 bytes each, 25 MB of commands) are far more than --max-inflight-bytes 256k:
    pgfanout pauses the slot, stays up, its VmRSS grows by less than 8 MB (16 MB under
    ASan), the slot stays before the first transaction after the kill; once Redis is back it
    resumes and every key is invalidated."""
    asan = is_asan_binary(pgfanout)
    db.execute("CREATE TABLE bp (id int8 PRIMARY KEY, pad text NOT NULL)")
    insert_padded(db, "bp", -999, 0)
    setup_slots(db, "bp", ["bp"])
    control = {bp_key(i) for i in range(-999, 0)}  # rows nothing changes
    bulk = {bp_key(i) for i in range(0, BP_ROWS + 1)}
    fill(rs.client(), control | bulk)
    cfg = config(tmp_path / "bp.yaml", [{"table": "bp", "keys": ["bp:{id}:{pad}"]}])
    args = worker_args(cluster, rs, "bp", cfg, "--max-inflight-bytes", BP_INFLIGHT,
                       "--log-level", "debug")
    loader_errors = []

    def load():
        try:
            with runner.connect(cluster.dsn()) as conn:
                for a in range(1, BP_ROWS + 1, BP_TXN_ROWS):
                    insert_padded(conn, "bp", a, a + BP_TXN_ROWS - 1)
        except Exception as e:  # noqa: BLE001 - reported below
            loader_errors.append(repr(e))

    try:
        with runner.Worker(args, stderr_path=str(tmp_path / "bp.err")) as w:
            db.execute("UPDATE bp SET pad = pad WHERE id = 0")  # warm-up: one key
            assert wait_for(lambda: not rs.client().exists(bp_key(0)) or not w.running(), 30), \
                tail(w.stderr_text())
            time.sleep(1)
            rss_before = rss_kb(w.proc.pid)
            kill_lsn, _ = crash_redis(rs, db)
            t0 = time.monotonic()
            loader = threading.Thread(target=load)
            loader.start()
            samples = sample_outage(db, "bp_slot", w, 4)
            loader.join(120)
            load_s = time.monotonic() - t0
            samples += sample_outage(db, "bp_slot", w, max(3.0, 10 - load_s))
            wal = insert_lsn(db) - kill_lsn
            paused = "pausing the slot" in w.stderr_text()
            rs.start()
            t_back = time.monotonic()
            # Caught up: the slot confirmed to the end of WAL (an idle slot confirms the
            # server's keepalive position), which is past the last insert.
            wait_confirmed(db, "bp_slot", runner.current_lsn(db), timeout=90, worker=w)
            catch_s = time.monotonic() - t_back
            assert_end_state(rs.client(), control | bulk, bulk, "after back-pressure")
            rc = w.terminate(timeout=30)
            stderr = w.stderr_text()
        limit = first_commit_at_or_after(ref_transactions(db, "bp", ["bp"], upto_nchanges=10),
                                         kill_lsn)
        max_rss = max(r for *_, r in samples if r)
        max_conf = max(c for _, c, _, _ in samples)
        growth = RSS_GROWTH_KB * (2 if asan else 1)
        print(f"\nback-pressure: {BP_ROWS} rows loaded in {load_s:.1f} s ({wal >> 20} MB of WAL)"
              f" with Redis down; VmRSS {rss_before} kB before, at most {max_rss} kB during"
              f"{' (ASan build)' if asan else ''}; confirmed at most {int_to_lsn(max_conf)} (first"
              f" commit after the kill {int_to_lsn(limit)}); caught up {catch_s:.1f} s after"
              f" Redis returned")
        assert not loader_errors, loader_errors
        assert all(alive for _, _, alive, _ in samples), tail(stderr)
        assert load_s < 60, "the load was throttled: the walsender waits only on pgfanout"
        assert paused, "back-pressure never paused the slot:\n" + tail(stderr)
        assert "resumed reading the slot" in stderr, tail(stderr)
        assert max_rss - rss_before < growth, (
            f"VmRSS grew from {rss_before} to {max_rss} kB while Redis was down")
        # Holding the keys of what was committed would take far more than the bound (the
        # mutant without back-pressure grew by 25 MB; ASan's redzones would double that too).
        assert sum(len(k) for k in bulk) > 2 * RSS_GROWTH_KB * 1024
        assert max_conf <= limit, (f"confirmed_flush_lsn {int_to_lsn(max_conf)} passed the first"
                                   f" commit after the kill, {int_to_lsn(limit)}")
        assert rc == 0, f"SIGTERM exit code {rc}:\n{tail(stderr)}"
    finally:
        drop_ref(db, "bp")


# --- 5: SIGTERM while Redis is down --------------------------------------------------------

def test_sigterm_while_redis_down_exits_zero_and_keeps_the_slot(pgfanout, cluster, db, rs,
                                                                tmp_path):
    """Redis is killed, 40 transactions commit and reach pgfanout, then SIGTERM: pgfanout
    exits 0 within --shutdown-timeout 3 s plus a 5 s margin, without confirming the slot past
    the first undelivered transaction; once Redis is back, a new run delivers them all."""
    items = Items("st", rows=3000)
    items.create(db)
    setup_slots(db, "st", items.tables)
    filled = fill_items(rs, items)
    cfg = config(tmp_path / "st.yaml", [items.rule()])
    args = worker_args(cluster, rs, "st", cfg, "--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S))
    wl = Workload(cluster.dsn(), items, seed=5)
    try:
        with runner.Worker(args, stderr_path=str(tmp_path / "st1.err")) as w:
            wl.run_txns(5)
            wait_confirmed(db, "st_slot", ref_transactions(db, "st", [items.name])[-1][2],
                           timeout=30, worker=w)
            kill_lsn, _ = crash_redis(rs, db)
            wl.run_txns(40)
            assert wait_received(db, "st_slot", lsn_to_int(runner.current_lsn(db))), \
                "pgfanout did not receive the transactions:\n" + tail(w.stderr_text())
            time.sleep(0.5)
            assert w.running(), tail(w.stderr_text())
            t0 = time.monotonic()
            rc = w.terminate(timeout=30)
            took = time.monotonic() - t0
            stderr1 = w.stderr_text()
        conf = lsn_to_int(runner.wait_slot_inactive(db, "st_slot")["confirmed_flush_lsn"])
        ref = ref_transactions(db, "st", [items.name])
        limit = first_commit_at_or_after(ref, kill_lsn)
        undelivered = [x for x, c, _, _ in ref if c >= kill_lsn]
        print(f"\nSIGTERM with Redis down: exit {rc} after {took:.1f} s; confirmed"
              f" {int_to_lsn(conf)}, first undelivered commit {int_to_lsn(limit)}"
              f" ({len(undelivered)} transactions); last log lines:"
              f" {[line[25:] for line in stderr1.splitlines()[-3:]]}")
        assert rc is not None, "pgfanout did not stop within 30 s of SIGTERM"
        assert took < SHUTDOWN_TIMEOUT_S + 5, f"took {took:.1f} s to stop"
        assert conf <= limit, (f"confirmed {int_to_lsn(conf)} past the undelivered transaction"
                               f" committed at {int_to_lsn(limit)}")
        assert len(undelivered) == 40
        assert rc == 0, (f"exit code {rc} after SIGTERM with Redis down (a clean stop that"
                         f" leaves the undelivered transactions in the slot):\n{tail(stderr1)}")
        rs.start()
        with runner.Worker(args, stderr_path=str(tmp_path / "st2.err")) as w:
            wait_confirmed(db, "st_slot", ref[-1][2], timeout=60, worker=w)
            assert_end_state(rs.client(), filled, wl.gone(), "after SIGTERM and a restart")
            assert w.terminate(timeout=30) == 0, tail(w.stderr_text())
    finally:
        drop_ref(db, "st")


def test_default_shutdown_timeout_ends_before_kubernetes_kills(pgfanout, cluster, db, rs, tmp_path):
    """No --shutdown-timeout: with Redis killed and transactions unacknowledged, SIGTERM ends
    pgfanout with exit 0 after the default 20 s of waiting, safely before Kubernetes' default
    30 s grace period would SIGKILL it, and the slot keeps the undelivered transactions."""
    items = Items("dt", rows=100)
    items.create(db)
    setup_slots(db, "dt", items.tables)
    fill_items(rs, items)
    cfg = config(tmp_path / "dt.yaml", [items.rule()])
    wl = Workload(cluster.dsn(), items, seed=9)
    try:
        with runner.Worker(worker_args(cluster, rs, "dt", cfg), stderr_path=str(tmp_path / "dt.err")) as w:
            wl.run_txns(3)
            wait_confirmed(db, "dt_slot", ref_transactions(db, "dt", [items.name])[-1][2], timeout=30, worker=w)
            kill_lsn, _ = crash_redis(rs, db)
            wl.run_txns(5)
            assert wait_received(db, "dt_slot", lsn_to_int(runner.current_lsn(db))), tail(w.stderr_text())
            t0 = time.monotonic()
            rc = w.terminate(timeout=40)
            took = time.monotonic() - t0
        conf = lsn_to_int(runner.wait_slot_inactive(db, "dt_slot")["confirmed_flush_lsn"])
        limit = first_commit_at_or_after(ref_transactions(db, "dt", [items.name]), kill_lsn)
        print(f"\nSIGTERM with Redis down and the default timeout: exit {rc} after {took:.1f} s")
        assert rc == 0, tail(w.stderr_text())
        assert 19 <= took < 26, f"took {took:.1f} s to stop; the default shutdown timeout is 20 s"
        assert conf <= limit, f"confirmed {int_to_lsn(conf)} past the undelivered commit {int_to_lsn(limit)}"
    finally:
        drop_ref(db, "dt")


# --- 5b: a spilled transaction across an outage; SIGTERM while paused ---------------------

SPILL_ROWS = 40_000  # about 8.5 MB of keys in one transaction: past the 4 MB spill threshold


def test_spilled_transaction_resent_and_sigterm_while_paused(pgfanout, cluster, db, rs, tmp_path):
    """A: Redis is down while a 40,000-row transaction (8.5 MB of keys, so its commands
    spill to a temporary file) and three small ones commit; Redis comes back and the same
    pgfanout sends them all, the big one from its file.  B: Redis is down again while six
    1,000-row transactions commit: back-pressure (--max-inflight-bytes 256k) pauses the slot,
    and SIGTERM then ends pgfanout with exit 0 within --shutdown-timeout 3 s plus a 5 s
    margin, the slot before the first of them; a new run delivers them."""
    db.execute("CREATE TABLE sp (id int8 PRIMARY KEY, pad text NOT NULL)")
    insert_padded(db, "sp", -499, 0)
    setup_slots(db, "sp", ["sp"])
    control = {bp_key(i, "sp") for i in range(-499, 0)}
    keys_a = {bp_key(i, "sp") for i in range(0, SPILL_ROWS + 3001)}
    keys_b = {bp_key(i, "sp") for i in range(SPILL_ROWS + 3001, SPILL_ROWS + 9001)}
    fill(rs.client(), control | keys_a | keys_b)
    cfg = config(tmp_path / "sp.yaml", [{"table": "sp", "keys": ["sp:{id}:{pad}"]}])
    args = worker_args(cluster, rs, "sp", cfg, "--max-inflight-bytes", BP_INFLIGHT,
                       "--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S), "--log-level", "debug")
    try:
        with runner.Worker(args, stderr_path=str(tmp_path / "sp1.err")) as w:
            db.execute("UPDATE sp SET pad = pad WHERE id = 0")  # warm-up
            assert wait_for(lambda: not rs.client().exists(bp_key(0, "sp")) or not w.running(),
                            30), tail(w.stderr_text())
            # A
            lsn_a, _ = crash_redis(rs, db)
            insert_padded(db, "sp", 1, SPILL_ROWS)
            for a in range(SPILL_ROWS + 1, SPILL_ROWS + 3001, 1000):
                insert_padded(db, "sp", a, a + 999)
            end_a = lsn_to_int(runner.current_lsn(db))
            # The big transaction alone is past the bound: the slot pauses behind it.
            assert wait_for(lambda: "pausing the slot" in w.stderr_text() or not w.running(),
                            30), "no back-pressure:\n" + tail(w.stderr_text())
            time.sleep(0.5)
            rss_a = rss_kb(w.proc.pid)
            rs.start()
            wait_confirmed(db, "sp_slot", end_a, timeout=60, worker=w)
            assert_end_state(rs.client(), control | keys_a | keys_b, keys_a,
                             "a spilled transaction sent after Redis came back")
            # B
            log_before = len(w.stderr_text())
            lsn_b, _ = crash_redis(rs, db)
            for a in range(SPILL_ROWS + 3001, SPILL_ROWS + 9001, 1000):
                insert_padded(db, "sp", a, a + 999)
            assert wait_for(lambda: "pausing the slot" in w.stderr_text()[log_before:]
                            or not w.running(), 30), "no back-pressure:\n" + tail(w.stderr_text())
            assert w.running(), tail(w.stderr_text())
            t0 = time.monotonic()
            rc = w.terminate(timeout=30)
            took = time.monotonic() - t0
            stderr1 = w.stderr_text()
        conf = lsn_to_int(runner.wait_slot_inactive(db, "sp_slot")["confirmed_flush_lsn"])
        ref = ref_transactions(db, "sp", ["sp"])
        limit = first_commit_at_or_after(ref, lsn_b)
        print(f"\nspilled transaction: VmRSS {rss_a} kB holding it; SIGTERM while paused: exit"
              f" {rc} after {took:.1f} s, confirmed {int_to_lsn(conf)}, first undelivered"
              f" commit {int_to_lsn(limit)}; {stderr1.splitlines()[-3][25:]}")
        assert lsn_a < limit
        assert rc is not None and took < SHUTDOWN_TIMEOUT_S + 5, f"took {took:.1f} s to stop"
        assert conf <= limit, (f"confirmed {int_to_lsn(conf)} past the undelivered transaction"
                               f" committed at {int_to_lsn(limit)}")
        assert rc == 0, f"exit code {rc} after SIGTERM while paused:\n{tail(stderr1)}"
        rs.start()
        with runner.Worker(args, stderr_path=str(tmp_path / "sp2.err")) as w:
            wait_confirmed(db, "sp_slot", ref[-1][2], timeout=60, worker=w)
            assert_end_state(rs.client(), control | keys_a | keys_b, keys_a | keys_b,
                             "after SIGTERM while paused and a restart")
            assert w.terminate(timeout=30) == 0, tail(w.stderr_text())
    finally:
        drop_ref(db, "sp")


# --- 6: generation: lsn across an outage -------------------------------------------------

def test_generation_lsn_ends_at_last_commit_after_outage(pgfanout, cluster, db, rs, tmp_path):
    """Three threads commit concurrently on a table with `generation: lsn` (and on a table
    without a rule); Redis is killed mid-workload and the workload stops while it is down, so
    the last transactions are all queued and resent; Redis comes back from its snapshot.
    Once the slot is confirmed past the last transaction, the generation key holds exactly
    the commit LSN of the last transaction that changed the table (the largest), and keeps
    it; the keys' end state holds."""
    items = Items("gn", rows=9000, threads=3)
    items.create(db)
    setup_slots(db, "gn", items.tables)
    filled = fill_items(rs, items)
    cfg = config(tmp_path / "gn.yaml", [items.rule(generation="lsn")])
    wl = Workload(cluster.dsn(), items, seed=6, pause=0.005)
    try:
        with runner.Worker(worker_args(cluster, rs, "gn", cfg),
                           stderr_path=str(tmp_path / "gn.err")) as w:
            wl.start()
            time.sleep(2)
            pause_lsn, _ = crash_redis(rs, db, hold=0.5)
            time.sleep(3)
            wl.stop()
            time.sleep(2)
            assert w.running(), tail(w.stderr_text())
            rs.start()
            client = rs.client()
            snapshot_gen = client.get(items.gen_key)
            ref = ref_transactions(db, "gn", [items.name])
            wait_confirmed(db, "gn_slot", ref[-1][2], timeout=60, worker=w)
            gens = []
            for _ in range(5):
                gens.append(client.get(items.gen_key))
                time.sleep(0.2)
            assert_end_state(client, filled, wl.gone(), "generation test")
            rc = w.terminate(timeout=30)
            stderr = w.stderr_text()
        keyed = [c for _, c, _, k in ref if k]
        last = keyed[-1]
        after = [c for c in keyed if c >= pause_lsn]
        print(f"\ngeneration: {len(ref)} transactions ({len(keyed)} on the table), {len(after)}"
              f" after the pause; snapshot value {snapshot_gen}, values after catching up"
              f" {gens}; last commit {last} ({int_to_lsn(last)})")
        assert last == max(keyed)
        assert len(after) > 50, "too few transactions queued during the outage"
        assert snapshot_gen is not None and int(snapshot_gen) < last
        assert all(g is not None and int(g) == last for g in gens), (
            f"generation key {gens} after catching up, expected the last commit LSN {last}"
            f" ({int_to_lsn(last)}); as LSNs:"
            f" {[int_to_lsn(int(g)) for g in gens if g is not None]}")
        assert rc == 0, tail(stderr)
    finally:
        wl.stop()
        drop_ref(db, "gn")
