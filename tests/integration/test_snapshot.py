"""Snapshots and backfills (cdc/snapshot.c, decoders/window.c) against real PostgreSQL 15 and
Kafka: every existing row arrives as a `read` event at the point in the stream where its
chunk's high watermark comes back, so replaying reads plus changes reproduces the table
exactly, whatever writers did meanwhile.

- a large table snapshotted while 4 writers insert, update and delete (stdout);
- kill -9 at 3 random points mid-snapshot (Kafka, state in the Kafka state topic): exact end
  state, and each restart resumes after an acknowledged chunk (proved from /metrics);
- backfill of 2 tables under concurrent updates, by message and over HTTP, with key ranges;
- the seam case forced deterministically: a writer whose commit record is in the WAL (and
  handed on) but which stays invisible, held in a synchronous-replication wait;
- a table without a key, the least-privilege role, a state store that cannot be read, bad
  requests and a chunk size of 0.

Knobs: PGFANOUT_SNAPSHOT_ROWS (rows of the large table; default 1000000),
PGFANOUT_SNAPSHOT_KILL_SEED (the kill test's seed; default random, always printed)."""
import http.client
import json
import os
import random
import re
import signal
import threading
import time

import psycopg
import pytest

import kafka_replay
import runner
from runner import wait_for
from conftest import start_cluster
from ports import free_port

HERE = os.path.dirname(os.path.abspath(__file__))

# Each test keeps its slot (its position is part of what the test checks): room for all.
PG_CONF = {"max_replication_slots": "30", "max_wal_senders": "30"}


# --- replay ---------------------------------------------------------------------------------

def text_row(row):
    """A row with every value as PostgreSQL's text output (the JSON and protobuf events carry
    integers as numbers); the test tables hold only integers and text."""
    if row is None:
        return None
    return {c: v if v is None or isinstance(v, str) else str(v) for c, v in row.items()}


def replay_rows(events, schema, table, key="id"):
    """Replays read/insert/update/delete events of one table in order into {id: row}.

    A read or insert sets the row; an update moves it from its old key (before's) to its new
    one; a delete removes it.  Changes of rows not read yet are applied as they come (the
    snapshot's read follows later and carries the same or newer data)."""
    rows = {}
    for ev in events:
        op = ev["op"]
        if op == "truncate":
            if any(t["schema"] == schema and t["table"] == table for t in ev["tables"]):
                rows.clear()
            continue
        if ev.get("schema") != schema or ev.get("table") != table:
            continue
        after = text_row(ev.get("after"))
        if op in ("read", "insert"):
            rows[after[key]] = after
        elif op == "update":
            before = text_row(ev.get("before")) or {}
            old = before.get(key, text_row(ev["key"]).get(key))
            rows.pop(old, None)
            rows[after[key]] = after
        elif op == "delete":
            rows.pop(text_row(ev["key"])[key], None)
    return rows


def table_rows(conn, schema, table, cols):
    """The table as {id text: {col: text}} (text output, as pgoutput and the snapshot send it)."""
    select = ", ".join(f'"{c}"::text' for c in cols)
    with conn.cursor() as cur:
        cur.execute(f'SELECT {select} FROM "{schema}"."{table}"')
        return {r[0]: dict(zip(cols, r)) for r in cur.fetchall()}


def assert_same(replayed, actual, what):
    """The replayed rows equal the table's, column by column; names the first differences."""
    missing = [k for k in actual if k not in replayed]
    extra = [k for k in replayed if k not in actual]
    differ = [k for k in actual if k in replayed and
              {c: replayed[k].get(c) for c in actual[k]} != actual[k]]
    assert not (missing or extra or differ), (
        f"{what}: {len(missing)} rows missing (e.g. {missing[:5]}), {len(extra)} extra "
        f"(e.g. {extra[:5]}), {len(differ)} differ (e.g. "
        f"{[(k, replayed[k], actual[k]) for k in differ[:3]]})")


def json_events(path):
    """The JSON-line events of a stdout file (whole lines only)."""
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")[:-1]  # the last may still be being written
    return [json.loads(line) for line in lines if line.strip()]


# --- helpers ----------------------------------------------------------------------------------

def metric(port, name, table):
    """A snapshot metric's value for table from /metrics, or None when it cannot be read."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        c.request("GET", "/metrics")
        body = c.getresponse().read().decode()
        c.close()
    except OSError:
        return None
    m = re.search(rf'^{name}\{{table="{re.escape(table)}"\}} (\d+)$', body, re.M)
    return int(m.group(1)) if m else 0


def post_backfill(port, body):
    """POSTs body (dict or raw text) to /backfill; returns (status, parsed or raw reply). A 503
    "not streaming yet" (the slot exists before the stream starts, longer under ASan) is what
    the worker asks clients to retry, so it is retried for up to 30 s."""
    deadline = time.monotonic() + 30
    while True:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("POST", "/backfill", body if isinstance(body, str) else json.dumps(body),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        text = r.read().decode()
        c.close()
        if r.status == 503 and "not streaming yet" in text and time.monotonic() < deadline:
            time.sleep(0.1)
            continue
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text


def wait_log(worker, pattern, timeout):
    """Waits for a line matching pattern in the worker's stderr; returns the match or fails."""
    rx = re.compile(pattern)
    m = wait_for(lambda: rx.search(worker.stderr_text()) or (not worker.running() and "exited"),
                 timeout, interval=0.2)
    assert m and m != "exited", (f"no log line matching {pattern!r} within {timeout} s"
                                 f" (running={worker.running()}):\n{worker.stderr_text()[-4000:]}")
    return m


def wait_caught_up(conn, slot, timeout=120):
    """Waits until the slot's confirmed position passes the current WAL position."""
    target = runner.lsn_to_int(runner.current_lsn(conn))

    def confirmed():
        info = runner.slot_info(conn, slot)
        return info and info["confirmed_flush_lsn"] and runner.lsn_to_int(info["confirmed_flush_lsn"]) >= target

    assert wait_for(confirmed, timeout, interval=0.2), \
        f"slot {slot} did not confirm {runner.int_to_lsn(target)} within {timeout} s"


class Writers:
    """n threads changing a table (id bigint primary key, v text, n int) until stopped: updates
    of random rows, and with churn also deletes, inserts of new ids and re-inserts, some of
    them several statements in one transaction."""

    def __init__(self, dsn, table, n, max_id, churn=True, seed=0):
        self.dsn, self.table, self.churn = dsn, table, churn
        self.max_id = max_id
        self.next_id = max_id + 1
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.count = 0
        self.errors = []
        self.threads = [threading.Thread(target=self._run, args=(seed + i,), daemon=True) for i in range(n)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.finish()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(60)
        assert not self.errors, self.errors[:3]

    def _new_id(self):
        with self.lock:
            self.next_id += 1
            return self.next_id

    def _run(self, seed):
        rnd = random.Random(seed)
        try:
            conn = psycopg.connect(self.dsn, autocommit=True)
        except Exception as e:  # noqa: BLE001
            self.errors.append(repr(e))
            return
        t = self.table
        with conn:
            while not self.stop.is_set():
                r = rnd.random()
                rid = rnd.randint(1, self.max_id)
                try:
                    if not self.churn or r < 0.6:
                        conn.execute(f"UPDATE {t} SET v = md5(random()::text), n = n + 1 WHERE id = %s", (rid,))
                    elif r < 0.75:
                        conn.execute(f"DELETE FROM {t} WHERE id = %s", (rid,))
                    elif r < 0.85:
                        conn.execute(f"INSERT INTO {t} VALUES (%s, 'new', 0)", (self._new_id(),))
                    elif r < 0.92:
                        conn.execute(f"INSERT INTO {t} VALUES (%s, 'back', 0) ON CONFLICT (id) DO UPDATE "
                                     "SET v = 'again', n = excluded.n", (rid,))
                    else:
                        with conn.transaction():
                            for _ in range(3):
                                conn.execute(f"UPDATE {t} SET n = n + 1 WHERE id = %s",
                                             (rnd.randint(1, self.max_id),))
                            conn.execute(f"DELETE FROM {t} WHERE id = %s", (rnd.randint(1, self.max_id),))
                    self.count += 1
                except psycopg.errors.DeadlockDetected:
                    pass
                except Exception as e:  # noqa: BLE001
                    self.errors.append(repr(e))
                    return


def make_table(conn, name, rows):
    conn.execute(f"DROP TABLE IF EXISTS {name}")
    conn.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, v text, n int NOT NULL)")
    conn.execute(f"INSERT INTO {name} SELECT g, md5(g::text), 0 FROM generate_series(1, {rows}) g")
    conn.execute(f"ANALYZE {name}")


def stdout_args(cluster, slot, pub, *extra):
    return ["--dsn", cluster.dsn(), "--slot", slot, "--publication", pub, "--status-interval", "1",
            "--heartbeat-interval", "1", *extra]


COLS = ["id", "v", "n"]


# --- tests ------------------------------------------------------------------------------------

def test_snapshot_consistent_under_concurrent_writers(cluster, admin, pgfanout, tmp_path):
    """The initial snapshot of a large table while 4 writers insert, update and delete: the
    read events plus the stream replay to exactly the table, every column."""
    rows = int(os.environ.get("PGFANOUT_SNAPSHOT_ROWS", "1000000"))
    make_table(admin, "sn_big", rows)
    admin.execute("CREATE PUBLICATION sn_big_pub FOR TABLE sn_big")
    out, err = tmp_path / "out.jsonl", tmp_path / "err.log"
    args = stdout_args(cluster, "sn_big_slot", "sn_big_pub", "--create-slot", "--snapshot", "initial",
                       "--state-dir", str(tmp_path), "--progress-interval", "1")
    t0 = time.monotonic()
    with runner.Worker(args, stdout_path=str(out), stderr_path=str(err)) as w:
        with Writers(cluster.dsn(), "sn_big", 4, rows, churn=True, seed=11) as writers:
            wait_log(w, r'snapshot of public\.sn_big starts', 60)
            wait_log(w, r'snapshot job "initial" done', 900)
            took = time.monotonic() - t0
            # Writers kept writing across the whole snapshot.
            assert writers.count > 100, writers.count
        wait_caught_up(admin, "sn_big_slot")
        assert w.terminate() == 0, w.stderr_text()[-3000:]
    events = json_events(out)
    reads = sum(1 for e in events if e["op"] == "read")
    changes = len(events) - reads
    print(f"\n{rows} rows: {reads} read events, {changes} changes by 4 writers ({writers.count} statements), "
          f"snapshot in {took:.1f} s")
    assert rows * 0.9 < reads <= rows + writers.count, reads
    assert_same(replay_rows(events, "public", "sn_big"), table_rows(admin, "public", "sn_big", COLS), "sn_big")
    progress = re.findall(r"snapshot of public\.sn_big: \d+ of about \d+ rows \([\d.]+%\), \d+ rows/s, "
                          r"(?:about \d+ s|unknown) left", w.stderr_text())
    assert progress or took < 3, "no progress line during a snapshot that took " + str(took)


def test_kill9_mid_snapshot_resumes_after_acknowledged_chunks(cluster, admin, pgfanout, broker, tmp_path):
    """kill -9 at 3 random points of a snapshot into Kafka under concurrent updates; each
    restart resumes from the Kafka state topic after an acknowledged chunk.  The end state is
    exact, and the rows read over all runs (from /metrics) are at most the table's rows plus
    one chunk per kill."""
    seed = int(os.environ.get("PGFANOUT_SNAPSHOT_KILL_SEED", random.randrange(1 << 30)))
    print(f"\nkill seed {seed} (PGFANOUT_SNAPSHOT_KILL_SEED={seed} repeats it)")
    rnd = random.Random(seed)
    rows, chunk = 120000, 4000
    make_table(admin, "sn_kill", rows)
    admin.execute("CREATE PUBLICATION sn_kill_pub FOR TABLE sn_kill")
    port = free_port()
    args = ["--dsn", cluster.dsn(), "--slot", "sn_kill_slot", "--publication", "sn_kill_pub",
            "--sink", "kafka", "--kafka-brokers", broker.bootstrap, "--topic-prefix", "snk",
            "--state-topic", "snk.state", "--create-slot", "--snapshot", "initial",
            "--snapshot-chunk-size", str(chunk), "--http-listen", f"127.0.0.1:{port}",
            "--status-interval", "1"]
    read_per_run = []
    resumed_at = []
    with Writers(cluster.dsn(), "sn_kill", 2, rows, churn=False, seed=seed) as writers:
        for k in range(3):
            target = rnd.randint(2 * chunk, rows // 4)
            err = tmp_path / f"err{k}.log"
            with runner.Worker(args, stderr_path=str(err)) as w:
                last = [0]

                def progressed():
                    v = metric(port, "pgfanout_snapshot_rows_total", "public.sn_kill")
                    if v is not None:
                        last[0] = v
                    return last[0] >= target or not w.running()

                assert wait_for(progressed, 300, interval=0.02), w.stderr_text()[-3000:]
                assert w.running(), w.stderr_text()[-3000:]
                w.proc.send_signal(signal.SIGKILL)
                w.proc.wait()
                read_per_run.append(last[0])
                m = re.search(r"resumes after the last acknowledged chunk \((\d+) rows done", w.stderr_text())
                resumed_at.append(int(m.group(1)) if m else 0)
                print(f"run {k + 1}: killed after reading {last[0]} rows (target {target})")
        err = tmp_path / "err-final.log"
        with runner.Worker(args, stderr_path=str(err)) as w:
            wait_log(w, r'snapshot job "initial" done', 600)
            final = metric(port, "pgfanout_snapshot_rows_total", "public.sn_kill")
            m = re.search(r"resumes after the last acknowledged chunk \((\d+) rows done", w.stderr_text())
            resumed_at.append(int(m.group(1)) if m else 0)
            read_per_run.append(final)
            writers.finish()
            wait_caught_up(admin, "sn_kill_slot")
            assert w.terminate() == 0, w.stderr_text()[-3000:]
    total = sum(read_per_run)
    print(f"rows read per run {read_per_run}, total {total} for {rows} rows and chunks of {chunk}; "
          f"restarts resumed at {resumed_at[1:]} rows")
    # Every restart resumed where an acknowledged chunk ended, never from zero.
    for k in range(1, 4):
        assert resumed_at[k] > 0 and resumed_at[k] % chunk == 0, resumed_at
        assert resumed_at[k] >= resumed_at[k - 1]
    assert total <= rows + 3 * chunk, f"read {total} rows over all runs: more than {rows} + 3 chunks"
    records = kafka_replay.Decoded(
        __import__("kafkabroker").consume_all(broker.bootstrap, ["snk.public.sn_kill"], timeout=120)).values()
    events, dups, conflicts = kafka_replay.unique_events(records)
    assert not conflicts
    print(f"{len(events)} distinct events, {dups} duplicates after kills (at-least-once)")
    assert_same(replay_rows(events, "public", "sn_kill"), table_rows(admin, "public", "sn_kill", COLS), "sn_kill")


@pytest.mark.parametrize("how", ["message", "http"])
def test_backfill_two_tables_under_updates(cluster, admin, pgfanout, tmp_path, how):
    """A backfill of two tables while streaming goes on and writers update them, requested by
    a logical message or over HTTP: the end state is exact; a key range reads only its rows."""
    a, b = f"sn_bfa_{how}", f"sn_bfb_{how}"
    make_table(admin, a, 30000)
    make_table(admin, b, 20000)
    admin.execute(f"CREATE PUBLICATION {a}_pub FOR TABLE {a}, {b}")
    port = free_port()
    out, err = tmp_path / "out.jsonl", tmp_path / "err.log"
    slot = f"{a}_slot"
    args = stdout_args(cluster, slot, f"{a}_pub", "--create-slot", "--snapshot", "never",
                       "--snapshot-chunk-size", "3000", "--http-listen", f"127.0.0.1:{port}")
    with runner.Worker(args, stdout_path=str(out), stderr_path=str(err)) as w:
        wait_for(lambda: runner.slot_info(admin, slot), 30)
        with Writers(cluster.dsn(), a, 2, 30000, churn=True, seed=5), \
                Writers(cluster.dsn(), b, 2, 20000, churn=True, seed=7):
            time.sleep(0.5)
            request = {"tables": [f"public.{a}", b]}
            if how == "message":
                admin.execute("SELECT pg_logical_emit_message(true, 'pgfanout.backfill', %s)",
                              (json.dumps(request),))
            else:
                status, reply = post_backfill(port, request)
                assert status == 202, reply
                assert reply["accepted"] == [f"public.{a}", f"public.{b}"] and reply["refused"] == [], reply
            wait_log(w, r'snapshot job "backfill" done', 300)
        # A key range: only rows 100..199 of a are read again.
        before = sum(1 for e in json_events(out) if e["op"] == "read")
        ranged = {"tables": [{"table": a, "from": 100, "to": [199]}]}
        if how == "message":
            admin.execute("SELECT pg_logical_emit_message(true, 'pgfanout.backfill', %s)", (json.dumps(ranged),))
        else:
            assert post_backfill(port, ranged)[0] == 202
        wait_for(lambda: len(re.findall(r'snapshot job "backfill" done', w.stderr_text())) >= 2, 120)
        wait_caught_up(admin, slot)
        ranged_end = sum(1 for e in json_events(out) if e["op"] == "read")
        if how == "http":
            # A where filter (HTTP only): exactly the matching rows are read again.
            where = "id % 7 = 0 AND n >= 0 AND v <> 'x'"
            status, reply = post_backfill(port, {"tables": [{"table": b, "where": where}]})
            assert status == 202 and reply["accepted"] == [f"public.{b}"], reply
            wait_for(lambda: len(re.findall(r'snapshot job "backfill" done', w.stderr_text())) >= 3, 120)
            wait_caught_up(admin, slot)
            filtered = [e for e in json_events(out) if e["op"] == "read"][ranged_end:]
            expect = {r[0]: r for r in admin.execute(f"SELECT id::text, v, n::text FROM {b} WHERE {where}")}
            got = {r["id"]: (r["id"], r["v"], r["n"]) for r in map(text_row, (e["after"] for e in filtered))}
            assert len(filtered) == len(expect) > 0 and got == expect, \
                f"where backfill read {len(filtered)} rows, {len(expect)} match"
        assert w.terminate() == 0, w.stderr_text()[-3000:]
    events = json_events(out)
    ranged_reads = [e for e in events if e["op"] == "read"][before:ranged_end]
    ids = {int(e["after"]["id"]) for e in ranged_reads}
    assert ids and min(ids) >= 100 and max(ids) <= 199 and len(ranged_reads) <= 100, sorted(ids)[:10]
    for t in (a, b):
        assert_same(replay_rows(events, "public", t), table_rows(admin, "public", t, COLS), t)


def test_seam_commit_before_low_watermark_but_invisible(pgfanout, tmp_path):
    """The seam, forced: a writer's commit record reaches the WAL, and the stream hands its
    update on, while the writer waits for a synchronous standby that never answers; the
    chunk that holds its row, read meanwhile, does not see the update.  That chunk must not
    hand on its older row after the update (window.h's rule (b)); without the rule the
    replay ends with the old value and this test fails."""
    # Sessions commit locally; only the writer asks for the (absent) synchronous standby.
    c = start_cluster(extra_conf={"synchronous_standby_names": "'ghost'", "synchronous_commit": "local"})
    try:
        conn = runner.connect(c.dsn())
        rows, chunk = 60000, 200
        make_table(conn, "sn_seam", rows)
        conn.execute("CREATE PUBLICATION sn_seam_pub FOR TABLE sn_seam")
        port = free_port()
        out, err = tmp_path / "out.jsonl", tmp_path / "err.log"
        args = stdout_args(c, "sn_seam_slot", "sn_seam_pub", "--create-slot", "--snapshot", "never",
                           "--snapshot-chunk-size", str(chunk), "--http-listen", f"127.0.0.1:{port}")
        with runner.Worker(args, stdout_path=str(out), stderr_path=str(err)) as w:
            wait_for(lambda: runner.slot_info(conn, "sn_seam_slot"), 30)
            assert post_backfill(port, {"tables": ["sn_seam"]})[0] == 202
            # The snapshot has started reading (past its wait for older transactions).
            assert wait_for(lambda: (metric(port, "pgfanout_snapshot_rows_total", "public.sn_seam") or 0) >= chunk,
                            60, interval=0.01)
            held = {}

            def writer():
                wc = psycopg.connect(c.dsn(), autocommit=True)
                wc.execute("SET synchronous_commit = on")
                held["pid"] = wc.info.backend_pid
                wc.execute(f"UPDATE sn_seam SET v = 'seam', n = 42 WHERE id = {rows}")
                held["done"] = True
                wc.close()

            t = threading.Thread(target=writer, daemon=True)
            t.start()
            # Its update is committed in the WAL and handed on...
            assert wait_for(lambda: any(e["op"] == "update" for e in json_events(out)), 30)
            # ...while it still waits for the standby, so the chunks' snapshots do not see it.
            assert runner.scalar(conn, "SELECT wait_event FROM pg_stat_activity WHERE pid = %s",
                                 (held["pid"],)) == "SyncRep"
            assert runner.scalar(conn, f"SELECT v FROM sn_seam WHERE id = {rows}") != "seam"
            reads_then = metric(port, "pgfanout_snapshot_rows_total", "public.sn_seam")
            assert reads_then < rows - chunk, "the snapshot passed the writer's row before it committed"
            wait_log(w, r'snapshot job "backfill" done', 300)
            assert "done" not in held
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = ''")
            conn.execute("SELECT pg_reload_conf()")
            t.join(30)
            assert held.get("done")
            wait_caught_up(conn, "sn_seam_slot")
            assert w.terminate() == 0, w.stderr_text()[-3000:]
        events = json_events(out)
        mine = [e for e in events if e["after"] and text_row(e["after"]).get("id") == str(rows)]
        print(f"\nevents of row {rows}: {[(e['op'], e['after']['v']) for e in mine]}")
        assert_same(replay_rows(events, "public", "sn_seam"), table_rows(conn, "public", "sn_seam", COLS),
                    "sn_seam")
        conn.close()
    finally:
        c.stop()


def test_table_without_key_is_refused_and_others_go_on(cluster, admin, pgfanout, tmp_path):
    """A table without a primary key or usable unique index is refused by name with the fix;
    the other tables are read.  A unique index over NOT NULL columns is a key."""
    admin.execute("CREATE TABLE sn_nokey (a int, b text)")
    admin.execute("INSERT INTO sn_nokey VALUES (1, 'x')")
    admin.execute("CREATE TABLE sn_ukey (code text NOT NULL, v text)")
    admin.execute("CREATE UNIQUE INDEX ON sn_ukey (code)")
    admin.execute("INSERT INTO sn_ukey SELECT 'c' || g, 'v' FROM generate_series(1, 50) g")
    admin.execute("CREATE PUBLICATION sn_nk_pub FOR TABLE sn_nokey, sn_ukey")
    port = free_port()
    out, err = tmp_path / "out.jsonl", tmp_path / "err.log"
    args = stdout_args(cluster, "sn_nk_slot", "sn_nk_pub", "--create-slot", "--snapshot", "never",
                       "--snapshot-chunk-size", "7", "--http-listen", f"127.0.0.1:{port}",
                       "--allow-missing-replica-identity")
    with runner.Worker(args, stdout_path=str(out), stderr_path=str(err)) as w:
        wait_for(lambda: runner.slot_info(admin, "sn_nk_slot"), 30)
        status, reply = post_backfill(port, {"tables": ["sn_nokey", "public.sn_ukey"]})
        assert status == 202, reply
        assert reply["accepted"] == ["public.sn_ukey"], reply
        assert reply["refused"][0]["table"] == "sn_nokey"
        assert "no primary key and no unique index" in reply["refused"][0]["error"]
        assert "ADD PRIMARY KEY" in reply["refused"][0]["error"]
        wait_log(w, r'snapshot job "backfill" done', 60)
        assert w.terminate() == 0
    text = w.stderr_text()
    assert "backfill request from HTTP POST /backfill" in text and "sn_nokey" in text
    reads = [e for e in json_events(out) if e["op"] == "read"]
    assert sorted(e["after"]["code"] for e in reads) == sorted(f"c{g}" for g in range(1, 51))


def test_bad_requests_are_refused_and_the_stream_goes_on(cluster, admin, pgfanout, tmp_path):
    """Malformed or unknown requests, by message or HTTP, get a clear error in the log (and
    the HTTP reply) and never stop the stream; a WHERE filter by message is refused."""
    admin.execute("CREATE TABLE sn_bad (id int PRIMARY KEY, v text)")
    admin.execute("CREATE TABLE sn_unpub (id int PRIMARY KEY)")
    admin.execute("CREATE PUBLICATION sn_bad_pub FOR TABLE sn_bad")
    port = free_port()
    out, err = tmp_path / "out.jsonl", tmp_path / "err.log"
    args = stdout_args(cluster, "sn_bad_slot", "sn_bad_pub", "--create-slot", "--snapshot", "never",
                       "--http-listen", f"127.0.0.1:{port}")
    with runner.Worker(args, stdout_path=str(out), stderr_path=str(err)) as w:
        wait_for(lambda: runner.slot_info(admin, "sn_bad_slot"), 30)
        status, reply = post_backfill(port, "{not json")
        assert status == 400 and "not JSON" in reply["error"], reply
        status, reply = post_backfill(port, {"table": "sn_bad"})
        assert status == 400 and "no \"tables\" list" in reply["error"], reply
        status, reply = post_backfill(port, {"tables": ["no_such_table"]})
        assert status == 400 and "does not exist" in reply["refused"][0]["error"], reply
        status, reply = post_backfill(port, {"tables": ["sn_unpub"]})
        assert status == 400 and "ALTER PUBLICATION sn_bad_pub ADD TABLE" in reply["refused"][0]["error"], reply
        status, reply = post_backfill(port, {"tables": [{"table": "sn_bad", "from": [1, 2]}]})
        assert status == 400 and "1 column" in reply["refused"][0]["error"], reply
        # A filter is tried before the request is accepted, and can only ever be one condition.
        admin.execute("INSERT INTO sn_bad VALUES (0, 'kept')")
        status, reply = post_backfill(port, {"tables": ["sn_bad"], "where": "nope > 1"})
        assert status == 400 and 'column "nope" does not exist' in reply["refused"][0]["error"], reply
        status, reply = post_backfill(port, {"tables": ["sn_bad"],
                                             "where": "true) ; COMMIT; DELETE FROM sn_bad; COMMIT; SELECT (1"})
        assert status == 400 and "multiple commands" in reply["refused"][0]["error"], reply
        # A comment cannot cut off the chunk's ORDER BY ... LIMIT (the whole table in one chunk).
        status, reply = post_backfill(port, {"tables": ["sn_bad"], "where": "true) ORDER BY v --"})
        assert status == 400 and "syntax error" in reply["refused"][0]["error"], reply
        time.sleep(1)
        assert runner.scalar(admin, "SELECT count(*) FROM sn_bad") == 1, "a where filter ran another statement"
        for content in ("{broken", json.dumps({"tables": ["sn_bad"], "where": "true"}),
                        json.dumps({"tables": ["nope.nope"]})):
            admin.execute("SELECT pg_logical_emit_message(true, 'pgfanout.backfill', %s)", (content,))
        admin.execute("INSERT INTO sn_bad VALUES (1, 'after the bad requests')")
        assert wait_for(lambda: any(e["op"] == "insert" and e["after"]["id"] == 1 for e in json_events(out)), 30)
        # Eight over HTTP, three by message; a log line counts once (its body may say "refused" too).
        text = wait_for(lambda: (lambda t: t if len(re.findall(r"backfill request from .* refused:", t)) >= 11
                                 else None)(w.stderr_text()), 30)
        assert text, w.stderr_text()[-3000:]
        assert w.running()
        assert w.terminate() == 0
    assert "is not JSON" in text and "only over HTTP" in text and "nope.nope does not exist" in text


def test_least_privilege_role_snapshots(cluster, admin, pgfanout, tmp_path):
    """A role with REPLICATION and SELECT only (no superuser, no CREATE anywhere) runs the
    initial snapshot; its state lives in state_dir, outside the application's database."""
    admin.execute("CREATE ROLE sn_cdc LOGIN REPLICATION")
    make_table(admin, "sn_lp", 5000)
    admin.execute("GRANT SELECT ON sn_lp TO sn_cdc")
    admin.execute("CREATE PUBLICATION sn_lp_pub FOR TABLE sn_lp")
    out = tmp_path / "out.jsonl"
    state = tmp_path / "state"
    state.mkdir()
    r = runner.run_pgfanout(["--dsn", cluster.dsn(user="sn_cdc"), "--slot", "sn_lp_slot", "--publication",
                             "sn_lp_pub", "--create-slot", "--snapshot", "initial_only",
                             "--snapshot-chunk-size", "999", "--state-dir", str(state)],
                            timeout=120, stdout_path=str(out))
    assert r.returncode == 0, r.describe()
    reads = [e for e in json_events(out) if e["op"] == "read"]
    assert len(reads) == 5000
    assert_same(replay_rows(reads, "public", "sn_lp"), table_rows(admin, "public", "sn_lp", COLS), "sn_lp")
    doc = json.loads((state / "sn_lp_slot.json").read_text())
    assert doc["slot"] == "sn_lp_slot" and doc["initial_done"] is True and doc["system_id"]
    # A second run finds the snapshot done and does not read again.
    r = runner.run_pgfanout(["--dsn", cluster.dsn(user="sn_cdc"), "--slot", "sn_lp_slot", "--publication",
                             "sn_lp_pub", "--snapshot", "initial_only", "--state-dir", str(state)], timeout=60)
    assert r.returncode == 0 and "not repeating it" in r.stderr, r.describe()
    assert '"op":"read"' not in r.stdout


def test_state_store_that_cannot_be_read_stops_with_a_clear_error(cluster, admin, pgfanout, tmp_path, broker):
    """A state file that is not a state document, a state_dir that does not exist, a state
    topic record that is garbage, and a chunk size of 0: each stops pgfanout before it reads
    the slot, saying what failed and what to do; the slot is left where it was."""
    admin.execute("CREATE TABLE sn_st (id int PRIMARY KEY)")
    admin.execute("CREATE PUBLICATION sn_st_pub FOR TABLE sn_st")
    admin.execute("SELECT pg_create_logical_replication_slot('sn_st_slot', 'pgoutput')")
    before = runner.slot_info(admin, "sn_st_slot")
    (tmp_path / "sn_st_slot.json").write_text('{"version": 1, "slot": ')
    base = ["--dsn", cluster.dsn(), "--slot", "sn_st_slot", "--publication", "sn_st_pub"]
    r = runner.run_pgfanout(base + ["--state-dir", str(tmp_path)], timeout=30)
    assert r.returncode == 1, r.describe()
    assert "cannot read pgfanout's state from state file" in r.stderr and "is not JSON" in r.stderr
    assert "remove the state" in r.stderr
    r = runner.run_pgfanout(base + ["--state-dir", str(tmp_path / "missing")], timeout=30)
    assert r.returncode == 1 and "is not a directory" in r.stderr and "volume" in r.stderr, r.describe()
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": broker.bootstrap})
    p.produce("snst.state", key=b"sn_st_slot", value=b"\x00garbage")
    assert p.flush(30) == 0
    r = runner.run_pgfanout(base + ["--sink", "kafka", "--kafka-brokers", broker.bootstrap,
                                    "--state-topic", "snst.state"], timeout=90)
    assert r.returncode == 1, r.describe()
    assert "cannot read pgfanout's state from" in r.stderr and "snst.state" in r.stderr, r.describe()
    r = runner.run_pgfanout(base + ["--snapshot-chunk-size", "0"], timeout=30)
    assert r.returncode == 2 and "snapshot_chunk_size" in r.stderr, r.describe()
    assert runner.slot_info(admin, "sn_st_slot") == before


@pytest.mark.parametrize("on_read", ["ignore", "invalidate"])
def test_redis_on_read(cluster, admin, pgfanout, tmp_path, rserver, on_read):
    """Rows read by a backfill leave Redis alone by default (the application fills its caches);
    with redis.on_read: invalidate, each read row's keys are deleted by the rules."""
    t = f"sn_r_{on_read}"
    make_table(admin, t, 300)
    admin.execute(f"CREATE PUBLICATION {t}_pub FOR TABLE {t}")
    client = rserver.client()
    for i in range(1, 301):
        client.set(f"{t}:{i}", "cached")
    client.set("unrelated", "stays")
    config = tmp_path / "pgfanout.yaml"
    config.write_text(f"redis:\n  on_read: {on_read}\n  rules:\n    - table: {t}\n      keys: [\"{t}:{{id}}\"]\n")
    port = free_port()
    args = stdout_args(cluster, f"{t}_slot", f"{t}_pub", "--create-slot", "--snapshot", "never",
                       "--sink", "stdout,redis", "--redis", rserver.addr, "--config", str(config),
                       "--snapshot-chunk-size", "50", "--http-listen", f"127.0.0.1:{port}")
    out, err = tmp_path / "out.jsonl", tmp_path / "err.log"
    with runner.Worker(args, stdout_path=str(out), stderr_path=str(err)) as w:
        wait_for(lambda: runner.slot_info(admin, f"{t}_slot"), 30)
        assert post_backfill(port, {"tables": [t]})[0] == 202
        wait_log(w, r'snapshot job "backfill" done', 60)
        wait_caught_up(admin, f"{t}_slot")
        assert w.terminate() == 0, w.stderr_text()[-3000:]
    assert sum(1 for e in json_events(out) if e["op"] == "read") == 300
    left = sum(1 for i in range(1, 301) if client.get(f"{t}:{i}") is not None)
    assert client.get("unrelated") == b"stays"
    assert left == (300 if on_read == "ignore" else 0), f"{left} of 300 cached rows left with on_read: {on_read}"


def test_state_of_another_system_is_a_gap(cluster, admin, pgfanout, tmp_path):
    """State written against one cluster, then pointed at another (a restore, a new server) with
    the same slot name: by default pgfanout stops and names both system identifiers; with
    on_slot_loss: backfill it reads every published table from the new one."""
    admin.execute("CREATE TABLE sn_sys (id int PRIMARY KEY)")
    admin.execute("CREATE PUBLICATION sn_sys_pub FOR TABLE sn_sys")
    state = tmp_path / "state"
    state.mkdir()
    base = ["--slot", "sn_sys_slot", "--publication", "sn_sys_pub", "--create-slot", "--state-dir", str(state),
            "--snapshot", "initial_only"]
    r = runner.run_pgfanout(["--dsn", cluster.dsn()] + base, timeout=60)
    assert r.returncode == 0, r.describe()
    first = json.loads((state / "sn_sys_slot.json").read_text())["system_id"]
    other = start_cluster()
    try:
        conn = runner.connect(other.dsn())
        make_table(conn, "sn_sys", 10)
        conn.execute("CREATE PUBLICATION sn_sys_pub FOR TABLE sn_sys")
        r = runner.run_pgfanout(["--dsn", other.dsn()] + base, timeout=60)
        assert r.returncode == 1, r.describe()
        assert f"was read from system {first}" in r.stderr and "another database cluster" in r.stderr, r.describe()
        assert runner.slot_info(conn, "sn_sys_slot") is None, "a slot was created over the gap"
        r = runner.run_pgfanout(["--dsn", other.dsn(), "--on-slot-loss", "backfill"] + base, timeout=60)
        assert r.returncode == 0, r.describe()
        assert sum(1 for line in r.stdout.splitlines() if '"op":"read"' in line) == 10, r.describe()
        conn.close()
    finally:
        other.stop()
