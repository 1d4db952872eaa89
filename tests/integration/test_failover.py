"""Failover to a real streaming standby (pg_basebackup -R -X stream, then pg_promote()):
PostgreSQL 15 does not copy logical slots to standbys, so the promoted standby has no slot,
and the changes committed after pgfanout's last confirmed position are in no slot at all.

Every test builds the same history (Failover.prepare):
  1. a primary with a table and a publication, and a hot standby replicating from it;
  2. pgfanout (Kafka sink, state in the Kafka state topic; or the stdout sink with a state
     file in --state-dir) creates its slot on the primary,
     runs the initial snapshot, streams inserts, updates and deletes, confirms them, and is
     stopped (SIGTERM, exit 0);
  3. the gap: updates and inserts on the primary that pgfanout never gets;
  4. the standby replays them; the primary is stopped; the standby is promoted.

Then:
- test_default_stops_with_the_explanation: pgfanout pointed at the promoted standby with
  --create-slot exits 1, naming the slot, the position the state says it streamed up to (which
  must lie between the last change it confirmed and the first change of the gap), that later
  changes are gone downstream, and the way out (on_slot_loss: backfill); no slot is created
  on the standby.  Once with the state in the Kafka state topic, once in a state file.
- test_backfill_after_failover: first a control: the Kafka topic replayed as it stands differs
  from the promoted standby's table in exactly the rows the gap changed.  Then the application
  caches every row in Redis, and pgfanout runs with --on-slot-loss backfill, Kafka + Redis,
  redis.on_read: invalidate, while a writer changes the standby: replaying all events of the
  topic (reads and changes, de-duplicated by identity, in commit-LSN order) gives the table
  exactly, and every cached row key is gone, in particular those of rows nothing changed
  after promotion (only the backfill's reads can have deleted them); keys of no row and of
  no rule are kept.
- test_backfill_after_deletes_in_the_gap: a row deleted (or whose key changed) during the gap
  is never read; the backfill starts each table with a truncate event, so the Kafka replay
  still ends exact and the rule's table keys are deleted (per-row keys of such rows cannot be
  named: the documented limit).
- test_crash_during_recovery_still_backfills: pgfanout with --on-slot-loss backfill killed
  (SIGKILL) at a point of its recovery held deterministically, then started again: it must
  still backfill, so Kafka ends exact.  After the new slot exists (the job was saved before
  it was created), and after the job is saved but before its table list is (cdc/snapshot.c
  lists the tables again).

Knob: PGFANOUT_FAILOVER_ROWS (rows of the table; default 10000)."""
import os
import random
import re
import signal
import threading
import time

import psycopg
import pytest
import yaml

import kafka_replay
import runner
from kafkabroker import consume_all
from pgcluster import PgCluster, PgStandby
from runner import wait_for
from test_snapshot import assert_same, make_table, replay_rows, table_rows, wait_caught_up, wait_log

ROWS = int(os.environ.get("PGFANOUT_FAILOVER_ROWS", "10000"))
CHUNK = 250
TABLE = "accounts"
COLS = ["id", "v", "n"]
KEY = "acct:{}"           # the Redis rule's key template is "acct:{id}"


@pytest.fixture
def failover(broker, tmp_path):
    """Makes Failover scenarios; stops their servers (by pid) at the end of the test."""
    made = []

    def make(name, gap_deletes=False, store="kafka"):
        s = Failover(name, broker, tmp_path, store)
        made.append(s)
        s.prepare(gap_deletes=gap_deletes)
        return s
    yield make
    for s in made:
        s.close()


def lsn(text):
    return runner.lsn_to_int(text)


class Failover:
    """One primary + standby history up to the promotion (see the module's docstring)."""

    def __init__(self, name, broker, tmp_path, store="kafka"):
        self.name, self.broker, self.tmp, self.store = name, broker, tmp_path, store
        self.slot, self.pub = f"{name}_slot", f"{name}_pub"
        self.state_topic, self.topic = f"{name}.state", f"{name}.public.{TABLE}"
        self.primary = self.standby = self.pconn = self.sconn = None
        self.rnd = random.Random(name)

    def args(self, cluster, *extra, sinks="kafka"):
        """pgfanout's arguments; with store "state_dir" the sink is stdout (into a file) and
        the state lives in a state file instead of the Kafka state topic."""
        common = ["--dsn", cluster.dsn(), "--slot", self.slot, "--publication", self.pub,
                  "--snapshot-chunk-size", str(CHUNK), "--status-interval", "1", "--heartbeat-interval", "1"]
        if self.store == "state_dir":
            (self.tmp / "state").mkdir(exist_ok=True)
            return common + ["--sink", "stdout", "--output", str(self.tmp / f"{self.name}.jsonl"),
                             "--state-dir", str(self.tmp / "state"), *extra]
        return common + ["--sink", sinks, "--kafka-brokers", self.broker.bootstrap, "--topic-prefix", self.name,
                         "--state-topic", self.state_topic, *extra]

    @property
    def state_where(self):
        """How pgfanout names its state store."""
        return self.state_topic if self.store == "kafka" else str(self.tmp / "state" / f"{self.slot}.json")

    def prepare(self, gap_deletes=False):
        t0 = time.monotonic()
        self.primary = PgCluster(extra_conf={"hot_standby": "on"}).start()
        p = self.pconn = runner.connect(self.primary.dsn())
        make_table(p, TABLE, ROWS)
        p.execute(f"CREATE PUBLICATION {self.pub} FOR TABLE {TABLE}")
        self.standby = PgStandby(self.primary, slot=f"{self.name}_standby").start()
        t_standby = time.monotonic() - t0

        # pgfanout on the primary: the initial snapshot, then changes it streams and confirms.
        err = self.tmp / f"{self.name}-primary.log"
        with runner.Worker(self.args(self.primary, "--create-slot"), stderr_path=str(err)) as w:
            wait_log(w, r'snapshot job "initial" done', 120)
            ids = list(range(1, ROWS + 1))
            self.rnd.shuffle(ids)
            with p.transaction():
                for i in ids[:200]:
                    p.execute(f"UPDATE {TABLE} SET v = 'streamed', n = n + 1 WHERE id = %s", (i,))
            for i in ids[200:260]:
                p.execute(f"DELETE FROM {TABLE} WHERE id = %s", (i,))
            p.execute(f"INSERT INTO {TABLE} SELECT g, 'streamed-new', 0 FROM generate_series({ROWS + 1}, {ROWS + 100}) g")
            wait_caught_up(p, self.slot)
            self.streamed_to = runner.current_lsn(p)
            assert w.terminate() == 0, w.stderr_text()[-3000:]
        self.primary_log = w.stderr_text()
        self.confirmed = runner.wait_slot_inactive(p, self.slot)["confirmed_flush_lsn"]

        # The gap: committed on the primary while pgfanout is away; the standby replays it.
        self.gap_from = runner.current_lsn(p)
        alive = ids[:200] + ids[260:]
        self.gap_updated = set(self.rnd.sample(alive, 300))
        twice = sorted(self.gap_updated)[:50]
        for batch in range(0, 300, 30):
            with p.transaction():
                for i in sorted(self.gap_updated)[batch:batch + 30]:
                    p.execute(f"UPDATE {TABLE} SET v = md5(random()::text), n = n + 10 WHERE id = %s", (i,))
        for i in twice:
            p.execute(f"UPDATE {TABLE} SET v = 'gap-twice', n = n + 1 WHERE id = %s", (i,))
        gap_new = range(ROWS + 1001, ROWS + 1201)
        p.execute(f"INSERT INTO {TABLE} SELECT g, 'gap-new', 0 FROM generate_series({gap_new[0]}, {gap_new[-1]}) g")
        self.gap_inserted = set(gap_new)
        self.gap_deleted, self.gap_rekeyed = set(), {}
        if gap_deletes:
            left = [i for i in alive if i not in self.gap_updated]
            self.gap_deleted = set(left[:40])
            for i in self.gap_deleted:
                p.execute(f"DELETE FROM {TABLE} WHERE id = %s", (i,))
            for i in left[40:60]:  # the key itself changes: the old id is gone as well
                p.execute(f"UPDATE {TABLE} SET id = id + {10 * ROWS} WHERE id = %s", (i,))
                self.gap_rekeyed[i] = i + 10 * ROWS
        self.gap_to = runner.current_lsn(p)
        self.at_failover = table_rows(p, "public", TABLE, COLS)
        replayed = self.standby.wait_replayed(self.gap_to)

        # The failover: the primary goes away, the standby is promoted.
        self.pconn.close()
        self.pconn = None
        self.primary.stop(remove=False)
        self.promoted_at = self.standby.promote()
        self.sconn = runner.connect(self.standby.dsn())
        self.timeline = int(runner.scalar(self.sconn, "SELECT pg_walfile_name(pg_current_wal_lsn())")[:8], 16)
        assert table_rows(self.sconn, "public", TABLE, COLS) == self.at_failover, \
            "the promoted standby does not hold what the primary committed"
        print(f"\n[{self.name}] {ROWS} rows; standby ready in {t_standby:.1f} s; pgfanout confirmed up to "
              f"{self.confirmed} on the primary; gap {self.gap_from}..{self.gap_to}: "
              f"{len(self.gap_updated)} rows updated ({len(twice)} twice), {len(self.gap_inserted)} inserted, "
              f"{len(self.gap_deleted)} deleted, {len(self.gap_rekeyed)} re-keyed; standby replayed to {replayed}, "
              f"promoted at {self.promoted_at} (timeline {self.timeline}); history built in {time.monotonic() - t0:.1f} s")

    def kafka_events(self):
        dec = kafka_replay.Decoded(consume_all(self.broker.bootstrap, [self.topic], timeout=120))
        assert not dec.problems, dec.problems[:5]
        events, dups, conflicts = kafka_replay.unique_events(dec.values())
        assert not conflicts, conflicts[:3]
        return events, dups

    def close(self):
        for c in (self.pconn, self.sconn):
            if c is not None:
                c.close()
        for srv in (self.standby, self.primary):
            if srv is not None:
                srv.stop()


class Writer(threading.Thread):
    """Changes the promoted standby (updates, deletes, inserts of new ids) from go.set() until
    stop.set(); touched holds every id it changed."""

    def __init__(self, dsn, ids, first_new_id, seed):
        super().__init__(daemon=True)
        self.dsn, self.alive, self.next_id = dsn, list(ids), first_new_id
        self.rnd = random.Random(seed)
        self.go, self.stop = threading.Event(), threading.Event()
        self.touched, self.count, self.error = set(), 0, None

    def run(self):
        try:
            conn = psycopg.connect(self.dsn, autocommit=True)
            self.go.wait()
            while not self.stop.is_set():
                r = self.rnd.random()
                if r < 0.6:
                    i = self.rnd.choice(self.alive)
                    conn.execute(f"UPDATE {TABLE} SET v = 'after', n = n + 100 WHERE id = %s", (i,))
                elif r < 0.8:
                    i = self.alive.pop(self.rnd.randrange(len(self.alive)))
                    conn.execute(f"DELETE FROM {TABLE} WHERE id = %s", (i,))
                else:
                    i, self.next_id = self.next_id, self.next_id + 1
                    conn.execute(f"INSERT INTO {TABLE} VALUES (%s, 'after-new', 0)", (i,))
                    self.alive.append(i)
                self.touched.add(i)
                self.count += 1
                time.sleep(0.002)
            conn.close()
        except Exception as e:  # noqa: BLE001
            self.error = e

    def finish(self):
        self.stop.set()
        self.go.set()
        self.join(30)
        assert self.error is None, repr(self.error)


def run_backfill(s, rs, tmp_path, also_cached=(), table_keys=()):
    """Caches every row in Redis (and the ids also_cached: rows an application cached before
    the gap, which the gap removed), then runs pgfanout with --on-slot-loss backfill (Kafka +
    Redis, redis.on_read: invalidate) against the promoted standby while a Writer changes it.
    Returns (cached ids, sentinel keys, writer, seconds the backfill took, pgfanout's log)."""
    client = rs.client()
    cached = set(int(i) for i in table_rows(s.sconn, "public", TABLE, COLS))
    pipe = client.pipeline(transaction=False)
    for i in cached | set(also_cached):
        pipe.set(KEY.format(i), b"cached row")
    # Kept: a key of the rule for a row that does not exist, and keys of no rule.
    sentinels = [KEY.format(10**9), "other:1", "other:2", f"{TABLE}:list"]
    for k in sentinels:
        pipe.set(k, b"sentinel")
    pipe.execute()
    config = tmp_path / f"{s.name}.yaml"
    rule = {"table": f"public.{TABLE}", "keys": [KEY.replace("{}", "{id}")]}
    if table_keys:
        rule["table_keys"] = list(table_keys)
        for k in table_keys:
            pipe.set(k, b"cached list")
        pipe.execute()
    config.write_text(yaml.safe_dump({"redis": {"on_read": "invalidate", "rules": [rule]}}))
    writer = Writer(s.standby.dsn(), sorted(cached), 5 * ROWS, seed=len(s.name))
    writer.start()
    err = tmp_path / f"{s.name}-standby.log"
    args = s.args(s.standby, "--on-slot-loss", "backfill", "--config", str(config), "--redis", rs.addr,
                  sinks="kafka,redis")
    t0 = time.monotonic()
    try:
        with runner.Worker(args, stderr_path=str(err)) as w:
            # Changes start once the new slot exists (what is committed before it is in no slot:
            # the backfill reads the rows as they are then).
            assert wait_for(lambda: runner.slot_info(s.sconn, s.slot) or not w.running(), 60) and w.running(), \
                w.stderr_text()[-3000:]
            writer.go.set()
            wait_log(w, r'snapshot job "slot_loss" done', 120)
            took = time.monotonic() - t0
            during = writer.count
            time.sleep(0.3)
            writer.finish()
            wait_caught_up(s.sconn, s.slot)
            # Redis is confirmed too: the slot's position only moves once every sink acknowledged.
            assert w.terminate() == 0, w.stderr_text()[-3000:]
    finally:
        writer.finish()
    log = w.stderr_text()
    print(f"[{s.name}] backfill on the promoted standby: {took:.1f} s; the writer made {during} changes "
          f"during it ({writer.count} in all, {len(writer.touched)} ids)")
    return client, cached, sentinels, writer, log


@pytest.mark.parametrize("store", ["kafka", "state_dir"])
def test_default_stops_with_the_explanation(failover, pgfanout, store):
    """on_slot_loss: stop (the default): exit 1 with the gap explained, and no slot created
    even with --create-slot; the state in the Kafka state topic, or in a state file (stdout
    sink)."""
    s = failover(f"fostop_{store}".replace("_", ""), store=store)
    r = runner.run_pgfanout(s.args(s.standby, "--create-slot"), timeout=90)
    print(f"[{s.name}] pgfanout against the promoted standby: exit {r.returncode}\n"
          + "\n".join(line for line in r.stderr.splitlines() if "error" in line.lower())[:1500])
    assert r.returncode == 1, r.describe()
    assert f'replication slot "{s.slot}" does not exist' in r.stderr, r.describe()
    m = re.search(rf"pgfanout's state \(([^)]*)\) shows it streamed from it up to ([0-9A-F]+/[0-9A-F]+)", r.stderr)
    assert m, r.describe()
    assert s.state_where in m.group(1), m.group(1)
    # The position it names is where the gap begins: at or after the last change it
    # confirmed, before the first change of the gap.
    up_to = m.group(2)
    assert lsn(s.streamed_to) <= lsn(up_to) <= lsn(s.gap_from), (s.streamed_to, up_to, s.gap_from)
    for words in ("never delivered", "gone downstream", "promoted after a failover",
                  "even with --create-slot", "on_slot_loss: backfill", "--on-slot-loss backfill"):
        assert words in r.stderr, f"{words!r} not in the message:\n{r.stderr[-3000:]}"
    # Nothing was created on the standby: no slot, and it reads nothing.
    assert runner.server_objects(s.sconn)[0] == [], runner.server_objects(s.sconn)
    assert "created replication slot" not in r.stderr
    print(f"[{s.name}] the message names {up_to} (confirmed on the primary: {s.confirmed}; gap starts at "
          f"{s.gap_from}); slots on the standby: none")


def test_backfill_after_failover(failover, pgfanout, rserver, tmp_path):
    """on_slot_loss: backfill: Kafka ends exact (the gap's rows included) and every cached row
    key is invalidated; before it, the topic differs from the table in the gap's rows only."""
    s = failover("fobf")
    actual = table_rows(s.sconn, "public", TABLE, COLS)

    # Control: what Kafka holds before the backfill is the primary's table up to the gap, so
    # it differs from the promoted standby's in exactly the gap's rows.
    before, _ = s.kafka_events()
    replayed = replay_rows(before, "public", TABLE)
    missing = {int(k) for k in actual if k not in replayed}
    extra = {int(k) for k in replayed if k not in actual}
    stale = {int(k) for k in actual if k in replayed and replayed[k] != actual[k]}
    print(f"[{s.name}] before the backfill: {len(before)} events in Kafka; against the standby's "
          f"{len(actual)} rows: {len(missing)} missing, {len(stale)} stale, {len(extra)} extra")
    assert missing == s.gap_inserted and stale == s.gap_updated and not extra, \
        (sorted(missing ^ s.gap_inserted)[:10], sorted(stale ^ s.gap_updated)[:10], sorted(extra)[:10])

    client, cached, sentinels, writer, log = run_backfill(s, rserver, tmp_path)
    assert "does not exist, but pgfanout's state" in log and "on_slot_loss: backfill" in log, log[-3000:]
    assert re.search(rf'created replication slot "{s.slot}"', log), log[-3000:]
    assert f"timeline {s.timeline}" in log, log[-3000:]

    # (a) Kafka: all events replayed reproduce the standby's table, every column.
    events, dups = s.kafka_events()
    new = [e for e in events if lsn(e["commit_lsn"]) > lsn(s.promoted_at)]
    reads = [e for e in new if e["op"] == "read"]
    changes = [e for e in new if e["op"] != "read"]
    final = table_rows(s.sconn, "public", TABLE, COLS)
    print(f"[{s.name}] after: {len(events)} distinct events ({dups} duplicates); since promotion "
          f"{len(reads)} reads and {len(changes)} changes; the table has {len(final)} rows")
    assert not [e for e in events if lsn(s.gap_from) <= lsn(e["commit_lsn"]) <= lsn(s.gap_to)], \
        "events from the gap reached Kafka: the gap was not a gap"
    read_ids = {int(e["after"]["id"]) for e in reads}
    gap_rows = (s.gap_inserted | s.gap_updated) - writer.touched
    assert gap_rows <= read_ids, sorted(gap_rows - read_ids)[:10]
    assert_same(replay_rows(events, "public", TABLE), final, f"{TABLE} after the backfill")

    # (b) Redis: every cached row key is gone.  Rows the writer never touched (the gap's
    # among them) changed nothing after promotion: only the backfill's reads deleted them.
    untouched = cached - writer.touched
    left = [i for i in untouched if client.exists(KEY.format(i))]
    gap_untouched = (s.gap_updated | s.gap_inserted) & untouched
    print(f"[{s.name}] Redis: {len(cached)} row keys cached; {len(untouched)} of rows untouched after promotion "
          f"({len(gap_untouched)} changed in the gap): {len(left)} left; "
          f"{sum(1 for i in cached if client.exists(KEY.format(i)))} left of all; "
          f"sentinels kept: {sum(client.exists(k) for k in sentinels)}/{len(sentinels)}")
    assert untouched and gap_untouched
    assert not left, f"{len(left)} keys of rows the backfill read are still cached, e.g. {sorted(left)[:10]}"
    assert not [i for i in cached if client.exists(KEY.format(i))]
    assert all(client.get(k) == b"sentinel" for k in sentinels)


def test_backfill_after_deletes_in_the_gap(failover, pgfanout, rserver, tmp_path):
    """Rows deleted (or re-keyed) during the gap: no read can name them, so a slot_loss backfill
    starts each table with a truncate event.  Kafka consumers that replay in order drop them
    (the replay ends exact); Redis deletes the rule's table keys.  Per-row keys of those rows
    cannot be named: they stay until they expire (the documented limit; table_keys or
    generation cover them)."""
    s = failover("fodel", gap_deletes=True)
    gone = s.gap_deleted | set(s.gap_rekeyed)
    listing = f"{TABLE}:all"
    client, cached, sentinels, writer, log = run_backfill(s, rserver, tmp_path, also_cached=gone,
                                                          table_keys=[listing])
    events, _ = s.kafka_events()
    truncates = [e for e in events if e["op"] == "truncate"]
    replayed = replay_rows(events, "public", TABLE)
    final = table_rows(s.sconn, "public", TABLE, COLS)
    ghosts = sorted(int(k) for k in replayed if k not in final)
    stale = sorted(i for i in gone if client.exists(KEY.format(i)))
    print(f"[{s.name}] rows deleted or re-keyed in the gap: {len(gone)}; truncate events: {len(truncates)}; after "
          f"the backfill still in the Kafka replay: {len(ghosts)}, per-row keys still cached: {len(stale)}")
    assert len(truncates) == 1 and "a truncate first" in log
    assert not ghosts, f"{len(ghosts)} rows gone from the table are still in the Kafka replay: {ghosts[:5]}"
    assert_same(replayed, final, TABLE)
    assert not client.exists(listing), "the rule's table key survived the backfill's truncate"


# --- a crash while pgfanout recovers from the failover ------------------------------------------

def newest_state(s):
    """The newest state document of the scenario's slot in the Kafka state topic, or None."""
    import json
    docs = [r.value for r in consume_all(s.broker.bootstrap, [s.state_topic], timeout=30)
            if r.key == s.slot.encode() and r.value is not None]
    return json.loads(docs[-1]) if docs else None


def walsender_creating_slot(s, done=False):
    """True while a walsender's CREATE_REPLICATION_SLOT waits for a transaction to end, or
    with done, once it has finished (the slot is persistent then: the walsender persists it
    before it answers)."""
    cond = "state = 'idle'" if done else "wait_event_type = 'Lock'"
    return runner.scalar(s.sconn, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'"
                                  f" AND query LIKE 'CREATE_REPLICATION_SLOT%%' AND {cond}") > 0


def job_outcome(w, timeout=60, quiet=5):
    """The 'snapshot job ... done' line of a worker's log; None when it has streamed for quiet
    seconds without starting any snapshot job (a job says so at once: it resumes, or lists
    its tables)."""
    rx = re.compile(r'snapshot job "\w+" done: .*')
    deadline, streaming_since = time.monotonic() + timeout, None
    while time.monotonic() < deadline and w.running():
        text = w.stderr_text()
        m = rx.search(text)
        if m:
            return m.group(0)
        if "streaming slot" in text and "snapshot job" not in text and "the slot was lost" not in text:
            streaming_since = streaming_since or time.monotonic()
            if time.monotonic() - streaming_since > quiet:
                return None
        time.sleep(0.1)
    raise AssertionError(f"no snapshot job ended within {timeout} s (running={w.running()}):\n"
                         + w.stderr_text()[-3000:])


@pytest.mark.parametrize("point", [
    "slot_created", "tables_not_listed"])
def test_crash_during_recovery_still_backfills(failover, pgfanout, tmp_path, point):
    """pgfanout with --on-slot-loss backfill is killed (SIGKILL) at a point of its recovery,
    held there deterministically; a second start must still backfill, so that Kafka ends
    exact.  The points:
    - slot_created: the new slot exists on the standby, nothing was saved yet (the walsender
      creates it while pgfanout is SIGSTOPped: CREATE_REPLICATION_SLOT waited for a
      transaction we held open);
    - tables_not_listed: the state says job slot_loss, but its table list is not saved yet
      (the standby refuses new connections, so the snapshot cannot list the tables)."""
    s = failover(f"focrash{point.split('_')[0]}")
    hold = psycopg.connect(s.standby.dsn())  # a transaction with an xid: slot creation waits for it
    hold.execute("SELECT txid_current()")
    err = tmp_path / "first.log"
    args = s.args(s.standby, "--on-slot-loss", "backfill")
    with runner.Worker(args, stderr_path=str(err)) as w:
        assert wait_for(lambda: walsender_creating_slot(s) or not w.running(), 60) and w.running(), \
            w.stderr_text()[-3000:]
        if point == "slot_created":
            w.proc.send_signal(signal.SIGSTOP)
            hold.commit()
            # (the slot is listed, as a temporary one, while it is being built: wait for its end)
            assert wait_for(lambda: walsender_creating_slot(s, done=True), 30)
        else:
            with runner.connect(s.standby.dsn(dbname="template1")) as other:
                other.execute("ALTER DATABASE postgres WITH ALLOW_CONNECTIONS false")
            hold.commit()
            # The job is saved before the slot is created; the kill comes once both are.
            # (an ephemeral slot under construction is not listed as temporary: wait for streaming)
            assert wait_for(lambda: runner.scalar(s.sconn, "SELECT count(*) FROM pg_stat_activity WHERE backend_type "
                                                           "= 'walsender' AND query LIKE 'START_REPLICATION%%'") > 0, 30)
            doc = wait_for(lambda: (lambda d: d if d and d.get("snapshot") else None)(newest_state(s)), 60, 0.2)
            assert doc and doc["snapshot"] == {"job": "slot_loss", "tables": []}, (doc, w.stderr_text()[-3000:])
        w.proc.send_signal(signal.SIGKILL)
        w.proc.wait()
    hold.close()
    if point == "tables_not_listed":
        with runner.connect(s.standby.dsn(dbname="template1")) as other:
            other.execute("ALTER DATABASE postgres WITH ALLOW_CONNECTIONS true")
    state = newest_state(s)
    print(f"[{s.name}] killed at {point}: slot {runner.slot_info(s.sconn, s.slot)['confirmed_flush_lsn']}, state: "
          f"confirmed {state['confirmed_lsn']}, snapshot {state.get('snapshot')}")

    err = tmp_path / "second.log"
    with runner.Worker(args, stderr_path=str(err)) as w:
        done = job_outcome(w)
        print(f"[{s.name}] second start: {done or 'no snapshot job at all'}")
        assert done, ("the second start began no snapshot job: it streams from the new slot and the gap "
                      "is skipped without a word:\n" + w.stderr_text()[-3000:])
        wait_caught_up(s.sconn, s.slot)
        assert w.terminate() == 0, w.stderr_text()[-3000:]
    events, _ = s.kafka_events()
    reads = [e for e in events if e["op"] == "read" and lsn(e["commit_lsn"]) > lsn(s.promoted_at)]
    print(f"[{s.name}] read events since promotion: {len(reads)}")
    assert_same(replay_rows(events, "public", TABLE), table_rows(s.sconn, "public", TABLE, COLS),
                f"{TABLE} after a crash at {point} and a restart")
