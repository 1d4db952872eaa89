"""pgfanout's Kafka sink against a real PostgreSQL 15 and a real Kafka broker (KRaft, from
tests/harness/kafkabroker.py): the protobuf events of the type-rich workload replay to the
source tables (with tombstones, headers, truncates in every partition, the message topic);
per-key order; SIGKILL at random points; a broker outage; a PostgreSQL restart; SIGTERM;
records too large for Kafka, refused by the producer or rejected by the broker, under
kafka.on_oversize fail (exit 1 naming the record and both limits; also after a restart),
dead_letter (the slot waits for the dead-letter record's ack) and skip, with the idempotent
producer carrying on after a rejection; bad producer settings; both sinks at
once against each other; timestamps beyond int64 microseconds; Kafka and Redis together, where
both must ack before the slot moves.

Every test uses its own tables, slot, publication and topic prefix on one cluster and one
broker.  Events are identified exactly by (Source.commit_lsn, Source.txn_index); where a test
allows duplicates (at-least-once after a crash) it counts and prints them.  Run with `pytest -s`
to see the measured figures.

Knobs: PGFANOUT_KAFKA_KILL_CHANGES (changes in the kill -9 test; default 100000),
PGFANOUT_KAFKA_KILL_SEED (its random seed; default fixed, always printed)."""
import collections
import datetime
import json
import os
import random
import re
import signal
import threading
import time
import types
import uuid

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

import kafka_replay
import replay
import runner
from runner import wait_for
import workload
from churn import Churn
from kafka_replay import Decoded, compare_with_reference, reference_transactions, unique_events
from kafkabroker import KafkaBroker, consume_all
from runner import int_to_lsn, is_asan_binary, lsn_to_int, rss_kb

KILL_CHANGES = int(os.environ.get("PGFANOUT_KAFKA_KILL_CHANGES", "100000"))
KILL_SEED = int(os.environ.get("PGFANOUT_KAFKA_KILL_SEED", "20261125"))
MIN_KILLS = 5
RSS_LIMIT_KB = 100 * 1024   # VmRSS bound during the broker outage (plain build)
RSS_GROWTH_KB = 24 * 1024   # and its growth from before the outage (twice that under ASan)
OUTAGE_INFLIGHT = "8M"      # --max-inflight-bytes in the outage test


# --- fixtures and helpers ----------------------------------------------------------------

@pytest.fixture(scope="module")
def broker():
    b = KafkaBroker()
    t0 = time.monotonic()
    b.start()
    print(f"\nkafka broker at {b.bootstrap}, up in {time.monotonic() - t0:.1f} s")
    yield b
    b.cleanup()


# Commit timestamps, so the reference can compare each event's commit time.
PG_CONF = {"track_commit_timestamp": "on"}


def kafka_args(cluster, broker, slot, pub, prefix, *extra):
    return ["--dsn", cluster.dsn(), "--slot", slot, "--publication", pub, "--sink", "kafka",
            "--kafka-brokers", broker.bootstrap, "--topic-prefix", prefix,
            "--status-interval", "0.5", *extra]


def confirmed_lsn(conn, slot):
    return lsn_to_int(runner.slot_info(conn, slot)["confirmed_flush_lsn"])


def setup_slot(conn, tables, name, reference=True):
    """A publication and a pgoutput slot named name_pub/name_slot for tables, and (by
    default) a test_decoding slot name_ref that sees the same WAL as the reference."""
    conn.execute(f"CREATE PUBLICATION {name}_pub FOR TABLE "
                 + ", ".join(f"{s}.{t}" for s, t in tables))
    conn.execute(f"SELECT pg_create_logical_replication_slot('{name}_slot', 'pgoutput')")
    if reference:
        conn.execute(f"SELECT pg_create_logical_replication_slot('{name}_ref', 'test_decoding')")


def drop_slots(conn, *slots):
    for s in slots:
        if runner.slot_info(conn, s) is not None:
            runner.wait_slot_inactive(conn, s, timeout=30)
            conn.execute("SELECT pg_drop_replication_slot(%s)", (s,))


def list_topics(bootstrap, prefix):
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30)
    return {name: len(t.partitions) for name, t in md.topics.items() if name.startswith(prefix)}


def topic_of(prefix, schema, table):
    return f"{prefix}.{schema}.{table}"


def consume(broker, topics, timeout=120):
    return consume_all(broker.bootstrap, sorted(topics), timeout=timeout)


def high_watermarks(bootstrap, topic, partitions=3):
    """The sum of the topic's high watermarks (records written so far), 0 if it is missing."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"wm-{uuid.uuid4()}"})
    try:
        total = 0
        for p in range(partitions):
            try:
                total += c.get_watermark_offsets(TopicPartition(topic, p), timeout=2)[1]
            except Exception:
                pass
        return total
    finally:
        c.close()


def assert_matches_reference_and_tables(db, ref, events, tables):
    """The de-duplicated events hold exactly the reference slot's transactions, and replaying
    them reproduces the tables."""
    problems = compare_with_reference(ref, events)
    assert not problems, "\n".join(problems)
    replay.assert_tables_match(db, replay.Replayer(strict=True).apply_all(events), tables)


def stderr_tail(text, n=3000):
    return text[-n:]


def tombstone_problems(decoded, repeated=False):
    """Every delete with a key is followed, at the next offset of its partition, by a
    tombstone with the same key and the delete's op/table/lsn/xid headers (op=tombstone).
    With repeated=True (a stream with duplicates, after crashes) a delete needs only one of
    its copies followed.  Returns (problems, tombstone count)."""
    problems = []
    followed = set()
    deletes = set()
    n_tomb = 0
    for (topic, part), recs in decoded.by_partition().items():
        for i, r in enumerate(recs):
            if r.tombstone:
                n_tomb += 1
                prev = recs[i - 1] if i else None
                if prev is None or prev.event is None or prev.ev["op"] != "delete" \
                        or prev.rec.offset + 1 != r.rec.offset:
                    problems.append(f"{topic}[{part}]@{r.rec.offset}: tombstone not right after"
                                    f" a delete")
                continue
            if r.ev["op"] != "delete" or r.rec.key is None:
                continue
            deletes.add(r.ident)
            nxt = recs[i + 1] if i + 1 < len(recs) else None
            want = {"op": "tombstone", "table": r.headers.get("table"),
                    "lsn": r.headers.get("lsn"), "xid": r.headers.get("xid")}
            if nxt is not None and nxt.tombstone and nxt.rec.offset == r.rec.offset + 1 \
                    and nxt.rec.key == r.rec.key and nxt.headers == want:
                followed.add(r.ident)
            elif not repeated:
                got = None if nxt is None else (nxt.rec.offset, nxt.rec.key, nxt.headers)
                problems.append(f"{topic}[{part}]@{r.rec.offset}: delete {r.ev['key']} not"
                                f" followed by its tombstone; next: {got}")
    if repeated:
        lacking = sorted(deletes - followed)
        if lacking:
            problems.append(f"{len(lacking)} deletes never followed by a tombstone, e.g."
                            f" {lacking[:5]}")
    return problems, n_tomb


# --- 1 and 2: the type-rich workload, replayed from Kafka ---------------------------------

RP_PREFIX = "rp"
HOT_KEYS = 20
HOT_THREADS = 4
HOT_TXNS = 120


def hot_workload(dsn, seed, errors):
    """Concurrent transactions on a few hot rows (updates, deletes, upserts), so that
    per-key order in Kafka means something."""
    import psycopg

    def worker(t):
        rng = random.Random(seed + t)
        conn = runner.connect(dsn)
        try:
            for i in range(HOT_TXNS):
                keys = sorted(rng.sample(range(1, HOT_KEYS + 1), 3))
                stmts = []
                for k in keys:
                    r = rng.random()
                    if r < 0.7:
                        stmts.append((f"UPDATE hot SET n = n + 1, v = %s WHERE id = {k}",
                                      (f"t{t}i{i}",)))
                    elif r < 0.85:
                        stmts.append(f"DELETE FROM hot WHERE id = {k}")
                    else:
                        stmts.append((f"INSERT INTO hot VALUES ({k}, 0, %s) ON CONFLICT (id)"
                                      f" DO UPDATE SET n = hot.n + 100, v = excluded.v",
                                      (f"up t{t}i{i}",)))
                for attempt in range(5):
                    try:
                        workload.tx(conn, *stmts)
                        break
                    except (psycopg.errors.DeadlockDetected,
                            psycopg.errors.SerializationFailure):
                        continue
        except Exception as e:
            errors.append(repr(e))
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(HOT_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


@pytest.fixture(scope="module")
def rp(pgfanout, cluster, broker, pb2):
    """The stdout suite's workload plus hot-row churn, streamed once with --sink kafka and
    --endpos; every topic of the prefix consumed and decoded."""
    conn = runner.connect(cluster.dsn())
    s = types.SimpleNamespace()
    try:
        workload.create_schema(conn)
        conn.execute("CREATE TABLE hot (id int4 PRIMARY KEY, n int8 NOT NULL, v text)")
        conn.execute("CREATE PUBLICATION rp_pub FOR ALL TABLES")
        conn.execute("SELECT pg_create_logical_replication_slot('rp_slot', 'pgoutput')")
        conn.execute("INSERT INTO hot SELECT g, 0, 'init' FROM generate_series(1, %s) g"
                     % HOT_KEYS)
        s.facts = workload.run_workload(conn)
        errors = []
        hot_workload(cluster.dsn(), 11, errors)
        assert not errors, errors
        s.endpos = runner.current_lsn(conn)
        conn.execute("CREATE TABLE endpos_marker (x int4)")  # WAL after endpos, no rows
        s.before_after_endpos = runner.current_lsn(conn)
        conn.execute("INSERT INTO after_endpos VALUES (1)")

        t0 = time.monotonic()
        s.run = runner.run_pgfanout(kafka_args(cluster, broker, "rp_slot", "rp_pub", RP_PREFIX,
                                               "--endpos", s.endpos), timeout=240)
        s.seconds = time.monotonic() - t0
        s.slot_after = runner.wait_slot_inactive(conn, "rp_slot")
        s.topics = list_topics(broker.bootstrap, RP_PREFIX + ".")
        t0 = time.monotonic()
        s.records = consume(broker, s.topics)
        s.decoded = Decoded(s.records, message_topics={f"{RP_PREFIX}.messages"})
        s.consume_seconds = time.monotonic() - t0
        print(f"\nreplay stream: pgfanout ran {s.seconds:.1f} s (exit {s.run.returncode}),"
              f" {len(s.records)} records in {len(s.topics)} topics, consumed and decoded in"
              f" {s.consume_seconds:.1f} s")
        drop_slots(conn, "rp_slot")
    finally:
        conn.close()
    return s


def rp_run_ok(rp):
    assert not rp.run.timed_out and rp.run.returncode == 0, rp.run.describe()


def test_replay_run_exits_cleanly(rp):
    """The --endpos run stops by itself with exit 0 and wrote records."""
    rp_run_ok(rp)
    assert rp.records, "nothing reached Kafka:\n" + rp.run.describe()


def test_replay_reproduces_every_table(rp, db):
    """Every value decodes as a pgfanout.v1.Event whose values have the kinds their column
    types call for; the events, de-duplicated and ordered by (commit_lsn, txn_index), replay
    to exactly the server's tables; one clean run has no duplicates; nothing committed after
    --endpos is in Kafka and the slot is confirmed past the last event, not past endpos."""
    rp_run_ok(rp)
    assert not rp.decoded.problems, "\n".join(rp.decoded.problems[:30])
    events, dups, conflicts = unique_events(rp.decoded.records)
    assert not conflicts, conflicts[:3]
    assert dups == 0, f"{dups} duplicate records in one clean run"
    replayer = replay.Replayer(strict=True).apply_all(events)
    replay.assert_tables_match(db, replayer, workload.TABLES + [("public", "hot")])
    assert not [e for e in events if e.get("table") in ("after_endpos", "endpos_marker")]
    bulk = [e for e in events if e.get("xid") == rp.facts["bulk_tx"]]
    assert len(bulk) == workload.BULK_ROWS
    assert [e["txn_index"] for e in bulk] == list(range(workload.BULK_ROWS))
    confirmed = lsn_to_int(rp.slot_after["confirmed_flush_lsn"])
    last_commit = max(lsn_to_int(e["commit_lsn"]) for e in events if e["commit_lsn"])
    assert last_commit < confirmed <= lsn_to_int(rp.before_after_endpos), (
        int_to_lsn(last_commit), rp.slot_after, rp.before_after_endpos)


def test_values_sources_and_typed_values(rp, db):
    """Source fields match the server (database, relation OID, xid's commit timestamp in Unix
    microseconds); each column's type_oid is the table column's type; chosen values have the
    exact typed form of event.proto (uuid bytes, date days, timestamps in µs, bytea bytes,
    numeric text, pg_text for infinity/BC/interval/enum/domain)."""
    rp_run_ok(rp)
    problems = []
    types_of = {}
    oids = {}
    xids = set()
    for r in rp.decoded.values():
        ev = r.ev
        if ev["op"] not in ("insert", "update", "delete"):
            continue
        where = (ev["schema"], ev["table"])
        if where not in types_of:
            types_of[where] = dict(replay.table_columns(db, *where))
            oids[where] = runner.scalar(db, "SELECT %s::regclass::oid::int8",
                                        (f'"{where[0]}"."{where[1]}"',))
        for col, oid in ev["types"].items():
            if types_of[where].get(col) != oid:
                problems.append(f"{where}.{col}: type_oid {oid}, table has"
                                f" {types_of[where].get(col)}")
        if ev["relation_oid"] != oids[where]:
            problems.append(f"{where}: relation_oid {ev['relation_oid']} != {oids[where]}")
        if ev["database"] != "postgres":
            problems.append(f"database {ev['database']!r}")
        xids.add((ev["xid"], ev["commit_time_us"]))
        if len(problems) > 20:
            break
    assert not problems, "\n".join(problems)
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    for xid, us in sorted(xids):
        ts = runner.scalar(db, "SELECT pg_xact_commit_timestamp(%s::text::xid)", (str(xid),))
        want = (ts - epoch) // datetime.timedelta(microseconds=1)
        assert us == want, f"xid {xid}: commit_time_us {us}, server commit time {ts} = {want}"

    rows = {}
    for r in rp.decoded.values():
        if r.ev["table"] == "types_tbl" and r.ev["op"] == "insert":
            rows[r.ev["key"]["id"]] = {c.name: c.value for c in r.event.after.columns}
    assert sorted(rows) == list(range(1, 11))

    def kind(row, col):
        v = row[col]
        k = v.WhichOneof("kind")
        return k, getattr(v, k)

    assert all(kind(rows[1], c) == ("is_null", True) for c in rows[1] if c != "id")
    r2 = rows[2]
    assert kind(r2, "id") == ("int_value", 2)
    assert kind(r2, "t") == ("text", workload.UNICODE_TEXT)
    assert kind(r2, "n") == ("numeric",
                             "123456789012345678901234567890.123456789012345678901234567890")
    assert kind(r2, "f8") == ("double_value", 1.7976931348623157e308)
    assert kind(r2, "b") == ("bytes_value", bytes.fromhex("00ff10deadbeef"))
    assert kind(r2, "u") == ("uuid", uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").bytes)
    assert kind(r2, "d") == ("date_days", (datetime.date(2000, 2, 29)
                                           - datetime.date(1970, 1, 1)).days)
    assert kind(r2, "ts") == ("timestamp_us", (datetime.datetime(
        1999, 12, 31, 23, 59, 59, 999999, tzinfo=datetime.timezone.utc) - epoch)
        // datetime.timedelta(microseconds=1))
    tstz = datetime.datetime(2026, 11, 25, 1, 1, 16, 123456, tzinfo=datetime.timezone.utc)
    assert kind(r2, "tstz") == ("timestamptz_us", (tstz - epoch) // datetime.timedelta(
        microseconds=1))
    assert kind(r2, "iv") == ("pg_text", "1 year 2 mons 3 days 04:05:06.789")
    assert kind(r2, "m") == ("pg_text", "happy")
    assert kind(r2, "dom") == ("pg_text", "42")
    assert kind(r2, "comp") == ("pg_text", '(7,"seven, ""quoted""")')
    assert kind(r2, "ia") == ("pg_text", "{1,NULL,3}")
    assert kind(r2, "bo") == ("bool_value", True)
    assert kind(r2, "i2") == ("int_value", -32768)
    assert kind(r2, "i8") == ("int_value", 9223372036854775807)
    assert kind(r2, "o") == ("int_value", 4294967295)
    assert kind(r2, "ch") == ("text", "ab  ")
    assert kind(r2, "vc") == ("text", "ünï")
    r3 = rows[3]
    assert kind(r3, "d") == ("pg_text", "0044-03-15 BC")
    assert kind(r3, "ts") == ("pg_text", "-infinity")
    assert kind(r3, "tstz") == ("pg_text", "infinity")
    assert kind(r3, "n") == ("numeric", "NaN")
    assert r3["f8"].WhichOneof("kind") == "double_value" and r3["f8"].double_value != \
        r3["f8"].double_value
    assert kind(r3, "b") == ("bytes_value", b"")
    assert kind(r3, "u") == ("uuid", bytes(16))
    assert kind(r3, "bo") == ("bool_value", False)
    assert kind(r3, "i8") == ("int_value", -9223372036854775808)
    assert kind(rows[4], "f8") == ("double_value", float("-inf"))
    # an update leaving a TOASTed column alone marks it unchanged_toast
    toasty = [r for r in rp.decoded.values() if r.ev["table"] == "toasty"
              and r.ev["op"] == "update" and r.ev["unchanged_toast"]]
    assert toasty and all(r.ev["unchanged_toast"] == ["big"] for r in toasty)
    big = next(c.value for c in toasty[0].event.after.columns if c.name == "big")
    assert big.WhichOneof("kind") == "unchanged_toast" and big.unchanged_toast is True


def test_topics_keys_and_headers(rp, pb2):
    """Row events go to {prefix}.{schema}.{table}; their record key is a pgfanout.v1.Key with
    the table and exactly the Event's key columns (the record key: the primary key, also
    under REPLICA IDENTITY FULL, else the replica-identity index), null for a table without
    either; the same row always has the same key bytes; headers are op, table, lsn, xid of
    the event."""
    rp_run_ok(rp)
    problems = []
    key_bytes = collections.defaultdict(set)
    expected_topics = {topic_of(RP_PREFIX, s, t) for s, t in workload.TABLES + [
        ("public", "hot")]} | {f"{RP_PREFIX}.messages"}
    extra_topics = set(rp.topics) - expected_topics
    assert not extra_topics, f"records in unexpected topics {sorted(extra_topics)}"
    for r in rp.decoded.records:
        loc = f"{r.rec.topic}[{r.rec.partition}]@{r.rec.offset}"
        if r.tombstone:
            continue
        ev = r.ev
        if list(r.headers) != ["op", "table", "lsn", "xid"]:
            problems.append(f"{loc}: headers {r.headers}")
        table_hdr = (f"{ev['schema']}.{ev['table']}" if ev["op"] not in ("truncate", "message")
                     else ",".join(f"{t['schema']}.{t['table']}" for t in ev["tables"])
                     if ev["op"] == "truncate" else "")
        want = {"op": ev["op"], "table": table_hdr, "lsn": ev["lsn"], "xid": str(ev["xid"])}
        if r.headers != want:
            problems.append(f"{loc}: headers {r.headers}, expected {want}")
        if ev["op"] in ("truncate", "message"):
            continue
        where = (ev["schema"], ev["table"])
        if r.rec.topic != topic_of(RP_PREFIX, *where):
            problems.append(f"{loc}: event of {where} in topic {r.rec.topic}")
        want_cols = workload.KEY_COLUMNS.get(where, {"id"})
        if set(ev["key"]) != want_cols:
            problems.append(f"{loc}: Event.key columns {sorted(ev['key'])}, expected"
                            f" {sorted(want_cols)}")
        if ev["after"] is not None and any(ev["after"].get(c) != v for c, v in ev["key"].items()
                                           if not (isinstance(v, float) and v != v)):
            problems.append(f"{loc}: key values differ from after: {ev['key']}")
        if not want_cols:
            if r.rec.key is not None:
                problems.append(f"{loc}: a table without a key has a record key")
            continue
        if r.key is None:
            problems.append(f"{loc}: no pgfanout.v1.Key record key")
            continue
        # compared serialized: a NaN key value is not == itself
        if (r.key.schema, r.key.table) != where or [c.SerializeToString() for c in
                                                      r.key.columns] != [
                c.SerializeToString() for c in r.event.key.columns]:
            problems.append(f"{loc}: record key {r.key} does not match Event.key")
        ident = (where, tuple(sorted((c, repr(v)) for c, v in ev["key"].items())))
        key_bytes[ident].add(r.rec.key)
        if len(problems) > 20:
            break
    assert not problems, "\n".join(problems)
    nondeterministic = {k: v for k, v in key_bytes.items() if len(v) > 1}
    assert not nondeterministic, f"one row, several key encodings: {list(nondeterministic)[:3]}"


def test_tombstones_follow_deletes(rp):
    """Each delete with a key is followed at the next offset of its partition by a tombstone:
    null value, the same key bytes, headers op=tombstone and the delete's table/lsn/xid."""
    rp_run_ok(rp)
    problems, n_tomb = tombstone_problems(rp.decoded)
    deletes = [r for r in rp.decoded.values() if r.ev["op"] == "delete"]
    print(f"\n{len(deletes)} deletes, {n_tomb} tombstones")
    assert deletes and not problems, "\n".join(problems[:20])
    assert n_tomb == len([r for r in deletes if r.rec.key is not None])


def test_truncate_in_every_partition(rp):
    """A TRUNCATE's event is in every partition of each truncated table's topic (identical
    copies), with the flags and tables of the statement; in each partition it sits between
    the earlier and the later events."""
    rp_run_ok(rp)
    copies = collections.defaultdict(lambda: collections.defaultdict(set))
    values = collections.defaultdict(set)
    evs = {}
    for r in rp.decoded.values():
        if r.ev["op"] == "truncate":
            copies[r.ident][r.rec.topic].add(r.rec.partition)
            values[r.ident].add(r.rec.value)
            evs[r.ident] = r.ev
    summary = [(sorted((t["schema"], t["table"]) for t in evs[i]["tables"]), evs[i]["cascade"],
                evs[i]["restart_identity"]) for i in sorted(evs)]
    assert summary == [
        ([("public", "nothing_tbl")], False, False),
        ([("public", "child"), ("public", "parent")], True, False),
        ([("public", "seq_tbl")], False, True),
    ]
    problems = []
    for ident, ev in sorted(evs.items()):
        if len(values[ident]) != 1:
            problems.append(f"truncate {ident}: copies differ")
        for t in ev["tables"]:
            topic = topic_of(RP_PREFIX, t["schema"], t["table"])
            want = set(range(rp.topics.get(topic, 0)))
            got = copies[ident].get(topic, set())
            if got != want:
                problems.append(f"truncate of {[x['table'] for x in ev['tables']]} at"
                                f" {ev['commit_lsn']}: in partitions {sorted(got)} of {topic},"
                                f" which has partitions {sorted(want)}")
        for topic in copies[ident]:
            if topic not in {topic_of(RP_PREFIX, t["schema"], t["table"]) for t in ev["tables"]}:
                problems.append(f"truncate {ident} in unrelated topic {topic}")
    for (topic, part), recs in rp.decoded.by_partition().items():
        idents = [r.ident for r in recs if r.event is not None]
        for i, r in enumerate(recs):
            if r.event is not None and r.ev["op"] == "truncate":
                j = idents.index(r.ident)
                if any(x >= r.ident for x in idents[:j]) or any(x <= r.ident for x in
                                                                 idents[j + 1:]):
                    problems.append(f"{topic}[{part}]: truncate {r.ident} out of order")
    stderr_warn = [line for line in rp.run.stderr.splitlines() if "truncate" in line]
    assert not problems, "\n".join(problems) + "\npgfanout stderr:\n" + "\n".join(stderr_warn)


def test_message_topic(rp):
    """Logical messages go to {prefix}.messages keyed by their prefix: the transactional one
    inside its transaction (same commit_lsn as its row, next txn_index), non-transactional
    ones with commit_lsn/xid/commit_time 0 (also the one from a rolled-back transaction), the
    rolled-back transactional one never."""
    rp_run_ok(rp)
    msgs = [r for r in rp.decoded.values() if r.ev["op"] == "message"]
    assert all(r.rec.topic == f"{RP_PREFIX}.messages" for r in msgs), [r.rec.topic for r in msgs]
    got = sorted((r.ev["prefix"], r.ev["transactional"], r.ev["content"], r.rec.key)
                 for r in msgs)
    assert got == sorted([
        ("pgf-tx", True, "hello tx ✓".encode(), b"pgf-tx"),
        ("pgf-nontx-auto", False, b"auto", b"pgf-nontx-auto"),
        ("pgf-nontx", False, workload.NONTX_BYTES, b"pgf-nontx"),
    ]), got
    others = [r.rec.topic for r in rp.decoded.values() if r.ev["op"] != "message"
              and r.rec.topic == f"{RP_PREFIX}.messages"]
    assert not others
    tx = next(r.ev for r in msgs if r.ev["transactional"])
    assert tx["xid"] == rp.facts["message_tx"]
    row = next(r.ev for r in rp.decoded.values() if r.ev["op"] == "insert"
               and r.ev["table"] == "orders" and r.ev["key"] == {"id": 500})
    assert (tx["commit_lsn"], tx["commit_time_us"], tx["txn_index"]) == (
        row["commit_lsn"], row["commit_time_us"], row["txn_index"] + 1)
    for r in msgs:
        if not r.ev["transactional"]:
            assert (r.ev["commit_lsn"], r.ev["xid"], r.ev["commit_time_us"]) == (None, 0, 0), r.ev
            assert r.headers["xid"] == "0" and r.headers["op"] == "message"


def test_order_per_key_within_partition(rp):
    """For every record key, all its records are in one partition, and there its events come
    in strictly increasing (commit_lsn, txn_index) order; the hot rows, changed by concurrent
    transactions, have many events each."""
    rp_run_ok(rp)
    problems = []
    where = collections.defaultdict(set)
    last = {}
    per_key = collections.Counter()
    for (topic, part), recs in rp.decoded.by_partition().items():
        for r in recs:
            if r.rec.key is None or r.event is None:
                continue
            k = (topic, r.rec.key)
            where[k].add(part)
            per_key[k] += 1
            if k in last and not last[k] < r.ident:
                problems.append(f"{topic}[{part}]@{r.rec.offset}: key {r.ev.get('key')} event"
                                f" {r.ident} after {last[k]}")
            last[k] = r.ident
    split = {k: sorted(p) for k, p in where.items() if len(p) > 1}
    assert not split, f"keys in several partitions: {list(split.items())[:3]}"
    assert not problems, "\n".join(problems[:20])
    hot = [n for (topic, _), n in per_key.items() if topic == topic_of(RP_PREFIX, "public", "hot")]
    print(f"\norder: {len(per_key)} keys checked, hot rows have {min(hot)}..{max(hot)} events")
    assert len(hot) == HOT_KEYS and min(hot) >= 20, hot


# --- 3: SIGKILL at random points ---------------------------------------------------------

def test_kill9_at_random_points_loses_nothing(pgfanout, cluster, broker, db, pb2, tmp_path):
    """A concurrent insert/update/delete workload of KILL_CHANGES changes runs while pgfanout
    is SIGKILLed at random moments (at least 5 times) and restarted; a final --endpos run
    catches up.  Every transaction the reference test_decoding slot saw is in Kafka, each
    exactly as the reference has it (ops, tables, ids, order by txn_index); de-duplicated
    events replay to the server's tables; duplicates are counted (allowed)."""
    changes = KILL_CHANGES
    rng = random.Random(KILL_SEED)
    print(f"\nkill -9: seed {KILL_SEED}, {changes} changes wanted")
    churn = Churn(cluster.dsn(), "kt", KILL_SEED, changes, threads=3, max_seconds=150)
    churn.create(db)
    setup_slot(db, churn.tables, "kt")
    # linger.ms=200 keeps a fifth of a second of records unacknowledged at any moment, so
    # that most kills hit records in flight (a slot confirmed too early then loses them).
    args = kafka_args(cluster, broker, "kt_slot", "kt_pub", "kt", "--kafka-conf", "linger.ms=200")
    kills, log = 0, []
    t0 = time.monotonic()
    try:
        churn.start()
        while (kills < MIN_KILLS or churn.alive()) and kills < 25:
            err = str(tmp_path / f"run{kills}.err")
            with runner.Worker(args, stderr_path=err) as w:
                delay = rng.uniform(0.3, 2.5)
                time.sleep(delay)
                assert w.running(), (f"pgfanout exited by itself ({w.proc.returncode}) before"
                                     f" kill {kills + 1}:\n{stderr_tail(w.stderr_text())}")
                w.proc.send_signal(signal.SIGKILL)
                w.proc.wait()
            kills += 1
            runner.wait_slot_inactive(db, "kt_slot", timeout=30)
            log.append((round(delay, 2), runner.slot_info(db, "kt_slot")["confirmed_flush_lsn"],
                        churn.changes))
        assert churn.join(timeout=150), "workload did not finish"
        assert churn.fatal is None, churn.fatal
        workload_s = time.monotonic() - t0
        endpos = runner.current_lsn(db)
        final = runner.run_pgfanout(args + ["--endpos", endpos], timeout=240)
        assert not final.timed_out and final.returncode == 0, final.describe()
        ref = reference_transactions(db, "kt_ref", churn.tables)
        records = consume(broker, [topic_of("kt", s, t) for s, t in churn.tables])
        decoded = Decoded(records)
        assert not decoded.problems, "\n".join(decoded.problems[:20])
        events, dups, conflicts = unique_events(decoded.records)
        n_ref = kafka_replay.count_changes(ref)
        print(f"kill -9: {kills} kills (delay s, confirmed, changes committed): {log}")
        print(f"kill -9: {n_ref} changes in {len(ref)} transactions in {workload_s:.1f} s;"
              f" {len(records)} records, {len(events)} distinct events, {dups} duplicates")
        assert kills >= MIN_KILLS
        assert n_ref >= changes, f"the workload made only {n_ref} changes"
        assert not conflicts, f"one (commit_lsn, txn_index), different events: {conflicts[:2]}"
        problems = compare_with_reference(ref, events)
        assert not problems, "\n".join(problems)
        assert len(events) == n_ref
        tomb, _ = tombstone_problems(decoded, repeated=True)
        assert not tomb, "\n".join(tomb[:10])
        replayer = replay.Replayer(strict=True).apply_all(events)
        replay.assert_tables_match(db, replayer, churn.tables)
        progress = {c for _, c, _ in log}
        assert len(progress) > 2, f"the slot barely advanced between kills: {log}"
    finally:
        churn.stop()
        churn.join(timeout=60)
        drop_slots(db, "kt_slot", "kt_ref")


# --- 4: the broker goes away ---------------------------------------------------------------

def test_broker_outage_holds_the_slot_and_resumes(pgfanout, cluster, broker, db, pb2, tmp_path):
    """The broker is stopped for 22 s while the workload keeps committing (tens of MB): the
    slot's confirmed_flush_lsn never moves past the commit LSN of any transaction committed
    after the broker was gone (polled every 0.25 s), the worker stays up with bounded memory
    (--max-inflight-bytes 8M: VmRSS < 100 MB on the plain build, and it grows by less than
    24 MB, 48 MB under ASan), and after the broker is back the same worker delivers everything,
    as the reference slot has it."""
    asan = is_asan_binary(pgfanout)
    churn = Churn(cluster.dsn(), "bd", 4, 10**9, threads=2, pause=0.02, payload=30,
                  max_seconds=200)
    churn.create(db)
    setup_slot(db, churn.tables, "bd")
    start = confirmed_lsn(db, "bd_slot")
    args = kafka_args(cluster, broker, "bd_slot", "bd_pub", "bd", "--max-inflight-bytes",
                      OUTAGE_INFLIGHT)
    err = str(tmp_path / "bd.err")
    samples = []
    try:
        with runner.Worker(args, stderr_path=err) as w:
            churn.start()
            assert wait_for(lambda: confirmed_lsn(db, "bd_slot") > start or not w.running(), 30)
            time.sleep(2)
            assert w.running(), stderr_tail(w.stderr_text())
            rss_before = rss_kb(w.proc.pid)
            t_stop = time.monotonic()
            broker.stop()
            stop_s = time.monotonic() - t_stop
            down_lsn = lsn_to_int(runner.scalar(db, "SELECT pg_current_wal_insert_lsn()::text"))
            commits_at_down = churn.commits
            t_down = time.monotonic()
            try:
                while time.monotonic() - t_down < 22:
                    samples.append((time.monotonic() - t_down, confirmed_lsn(db, "bd_slot"),
                                    rss_kb(w.proc.pid), w.running()))
                    time.sleep(0.25)
            finally:
                broker.restart()
            outage = time.monotonic() - t_down
            commits_in_outage = churn.commits - commits_at_down
            outage_wal = lsn_to_int(runner.current_lsn(db)) - down_lsn
            time.sleep(3)
            churn.stop()
            assert churn.join(60) and churn.fatal is None, churn.fatal
            ref = reference_transactions(db, "bd_ref", churn.tables)
            last_end = max(t.end_lsn for t in ref.values())
            caught_up = wait_for(lambda: confirmed_lsn(db, "bd_slot") >= last_end
                                 or not w.running(), 120, interval=0.2)
            running = w.running()
            rc = w.terminate(timeout=30)
            stderr = w.stderr_text()
        max_confirmed = max(c for _, c, _, _ in samples)
        max_rss = max((r for _, _, r, _ in samples if r), default=None)
        records = consume(broker, [topic_of("bd", s, t) for s, t in churn.tables])
        decoded = Decoded(records)
        events, dups, conflicts = unique_events(decoded.records)
        # The first transaction committed after the broker was gone: its commit record is the
        # first at or after down_lsn (commit LSNs from the events, once all are delivered).
        after_down = [lsn_to_int(e["commit_lsn"]) for e in events
                      if lsn_to_int(e["commit_lsn"]) >= down_lsn]
        limit = min(after_down, default=down_lsn)
        print(f"\nbroker outage: stop took {stop_s:.1f} s, outage {outage:.1f} s,"
              f" {commits_in_outage} transactions ({outage_wal >> 20} MB of WAL) committed"
              f" meanwhile; confirmed_flush at most {int_to_lsn(max_confirmed)} (broker gone"
              f" at {int_to_lsn(down_lsn)}, first commit after it at {int_to_lsn(limit)});"
              f" VmRSS {rss_before} kB before, at most {max_rss} kB during"
              f"{' (ASan build)' if asan else ''}; {len(stderr.splitlines())} log lines")
        print(f"broker outage: {kafka_replay.count_changes(ref)} changes in {len(ref)}"
              f" transactions, {len(records)} records, {dups} duplicates")
        assert all(alive for *_, alive in samples), "pgfanout exited during the outage:\n" + \
            stderr_tail(stderr)
        assert commits_in_outage > 50, "the workload did not keep committing"
        past = [(round(t, 1), int_to_lsn(c)) for t, c, _, _ in samples if c > limit]
        assert max_confirmed <= limit, (
            f"confirmed_flush_lsn moved to {int_to_lsn(max_confirmed)} while the broker was down,"
            f" past the commit at {int_to_lsn(limit)} of a transaction committed after the broker"
            f" went away (seconds into the outage, confirmed): {past[:5]}")
        # ASan's shadow memory and allocator add ~110 MB of their own, and its redzones about
        # double the growth: there the growth is bounded at twice the plain build's.
        if not asan:
            assert max_rss < RSS_LIMIT_KB, f"VmRSS reached {max_rss} kB during the outage"
        growth_limit = RSS_GROWTH_KB * (2 if asan else 1)
        assert max_rss - rss_before < growth_limit, (
            f"VmRSS grew from {rss_before} to {max_rss} kB while the broker was down")
        # Buffering what was committed during the outage would have taken more than that
        # (unthrottled, memory grows by about twice the WAL: the records are copied twice).
        assert outage_wal > RSS_GROWTH_KB * 1024, f"only {outage_wal} bytes of WAL"
        assert running and caught_up, ("pgfanout did not deliver everything after the broker"
                                       " came back:\n" + stderr_tail(stderr))
        assert rc == 0, f"SIGTERM exit code {rc}:\n{stderr_tail(stderr)}"
        assert not decoded.problems, decoded.problems[:10]
        assert not conflicts
        assert_matches_reference_and_tables(db, ref, events, churn.tables)
    finally:
        churn.stop()
        churn.join(60)
        if broker.proc is None:
            broker.restart()
        drop_slots(db, "bd_slot", "bd_ref")


# --- 5: PostgreSQL restarts ------------------------------------------------------------------

def test_postgres_restart_reconnects_and_loses_nothing(pgfanout, cluster, broker, pb2, tmp_path):
    """PostgreSQL is restarted (fast shutdown) while the workload commits and pgfanout
    streams: the same pgfanout process reconnects by itself and every transaction reaches
    Kafka as the reference slot has it."""
    db = runner.connect(cluster.dsn())
    churn = Churn(cluster.dsn(), "pr", 5, 10**9, threads=2, pause=0.01, max_seconds=200)
    churn.create(db)
    setup_slot(db, churn.tables, "pr")
    start = confirmed_lsn(db, "pr_slot")
    args = kafka_args(cluster, broker, "pr_slot", "pr_pub", "pr")
    err = str(tmp_path / "pr.err")
    try:
        with runner.Worker(args, stderr_path=err) as w:
            churn.start()
            assert wait_for(lambda: confirmed_lsn(db, "pr_slot") > start or not w.running(), 30)
            time.sleep(1.5)
            assert w.running(), stderr_tail(w.stderr_text())
            pid = w.proc.pid
            confirmed_before = confirmed_lsn(db, "pr_slot")
            db.close()
            t0 = time.monotonic()
            cluster.restart()
            restart_s = time.monotonic() - t0
            with runner.connect(cluster.dsn()) as c:
                confirmed_after = confirmed_lsn(c, "pr_slot")
            time.sleep(4)
            churn.stop()
            assert churn.join(60) and churn.fatal is None, churn.fatal
            db = runner.connect(cluster.dsn())
            ref = reference_transactions(db, "pr_ref", churn.tables)
            last_end = max(t.end_lsn for t in ref.values())
            caught_up = wait_for(lambda: confirmed_lsn(db, "pr_slot") >= last_end
                                 or not w.running(), 90, interval=0.2)
            running = w.running() and w.proc.pid == pid
            rc = w.terminate(timeout=30)
            stderr = w.stderr_text()
        reconnects = [line for line in stderr.splitlines() if "reconnect" in line]
        print(f"\npostgres restart: took {restart_s:.1f} s; workload saw"
              f" {len(churn.errors)} connection errors; confirmed_flush"
              f" {int_to_lsn(confirmed_before)} before, {int_to_lsn(confirmed_after)} right"
              f" after the restart; pgfanout log: {reconnects[-3:]}")
        assert running and caught_up, "pgfanout did not resume after the restart:\n" + \
            stderr_tail(stderr)
        assert any("reconnected" in line for line in reconnects), stderr_tail(stderr)
        assert rc == 0, f"SIGTERM exit code {rc}:\n{stderr_tail(stderr)}"
        records = consume(broker, [topic_of("pr", s, t) for s, t in churn.tables])
        decoded = Decoded(records)
        assert not decoded.problems, decoded.problems[:10]
        events, dups, conflicts = unique_events(decoded.records)
        print(f"postgres restart: {kafka_replay.count_changes(ref)} changes in {len(ref)}"
              f" transactions, {len(records)} records, {dups} duplicates")
        assert not conflicts
        assert_matches_reference_and_tables(db, ref, events, churn.tables)
    finally:
        churn.stop()
        churn.join(60)
        if db.closed:
            db = runner.connect(cluster.dsn())
        drop_slots(db, "pr_slot", "pr_ref")
        db.close()


# --- 6: SIGTERM ------------------------------------------------------------------------------

def test_sigterm_drains_confirms_and_exits_zero(pgfanout, cluster, broker, db, pb2, tmp_path):
    """SIGTERM once part of a 60,000-row transaction reached Kafka: exit 0 within 30 s; every
    transaction in Kafka is complete and the slot's confirmed_flush_lsn covers all of them
    (and skips none); a second run delivers the rest without repeating anything."""
    churn = Churn(cluster.dsn(), "sg", 6, 10**9, threads=2, pause=0.01, max_seconds=200)
    churn.create(db)
    setup_slot(db, churn.tables, "sg")
    args = kafka_args(cluster, broker, "sg_slot", "sg_pub", "sg")
    topic_a = topic_of("sg", "public", "sg_a")
    err = str(tmp_path / "sg.err")
    try:
        with runner.Worker(args, stderr_path=err) as w:
            churn.start()
            assert wait_for(lambda: high_watermarks(broker.bootstrap, topic_a) > 0
                            or not w.running(), 30, interval=0.2)
            before_big = high_watermarks(broker.bootstrap, topic_a)
            big_xid = workload.tx(db, "INSERT INTO sg_a SELECT g, md5(g::text), 0"
                                      " FROM generate_series(5000000001, 5000060000) g")
            mid = wait_for(lambda: high_watermarks(broker.bootstrap, topic_a) > before_big + 5000
                           or not w.running(), 30, interval=0.02)
            assert w.running(), stderr_tail(w.stderr_text())
            t0 = time.monotonic()
            rc = w.terminate(timeout=60)
            exit_s = time.monotonic() - t0
            stderr = w.stderr_text()
        time.sleep(1)  # transactions after the stop, for the second run
        churn.stop()
        assert churn.join(60) and churn.fatal is None, churn.fatal
        print(f"\nSIGTERM {'mid-transaction' if mid else 'at some point'}: exit {rc} in"
              f" {exit_s:.1f} s")
        assert rc == 0, f"exit code {rc} after SIGTERM:\n{stderr_tail(stderr)}"
        assert exit_s < 30
        confirmed = lsn_to_int(runner.wait_slot_inactive(db, "sg_slot")["confirmed_flush_lsn"])
        ref = reference_transactions(db, "sg_ref", churn.tables)
        topics = [topic_of("sg", s, t) for s, t in churn.tables]
        first = Decoded(consume(broker, topics))
        assert not first.problems, first.problems[:10]
        events1, _, _ = unique_events(first.records)
        got1 = collections.Counter(e["xid"] for e in events1)
        partial = {x: (n, len(ref[x].changes)) for x, n in got1.items()
                   if x not in ref or n != len(ref[x].changes)}
        assert not partial, f"transactions in Kafka incompletely (got, want): {partial}"
        beyond = sorted(x for x in got1 if ref[x].end_lsn > confirmed)
        assert not beyond, (f"confirmed_flush_lsn {int_to_lsn(confirmed)} does not cover"
                            f" delivered transactions {beyond[:5]}")
        skipped = sorted(x for x, t in ref.items() if t.end_lsn <= confirmed and x not in got1)
        assert not skipped, f"confirmed past transactions never delivered: {skipped[:5]}"
        pending = sorted(x for x, t in ref.items() if t.end_lsn > confirmed)
        assert pending, "everything was delivered: not a stop in mid-stream"
        print(f"SIGTERM: {len(got1)} transactions delivered and confirmed up to"
              f" {int_to_lsn(confirmed)} (the 60,000-row one"
              f" {'among them' if big_xid in got1 else 'not yet'}), {len(pending)} left for"
              f" the next run")

        endpos = runner.current_lsn(db)
        second = runner.run_pgfanout(args + ["--endpos", endpos], timeout=120)
        assert not second.timed_out and second.returncode == 0, second.describe()
        both = Decoded(consume(broker, topics))
        events, dups, conflicts = unique_events(both.records)
        assert not conflicts
        assert dups == 0, f"{dups} records delivered twice across a clean SIGTERM stop"
        assert_matches_reference_and_tables(db, ref, events, churn.tables)
    finally:
        churn.stop()
        churn.join(60)
        drop_slots(db, "sg_slot", "sg_ref")


# --- 7: records too large for Kafka (kafka.on_oversize) ---------------------------------------

# The description of a record too large for Kafka, in the error of on_oversize=fail and in the
# warnings of dead_letter and skip (whose "(kafka.on_oversize=skip; " oversize_lines drops).
OVERSIZE_RE = re.compile(
    r"record too large for Kafka \((?P<by>refused by the producer|rejected by the broker): [^)]*\)"
    r": table (?P<table>\S+), (?P<op>\w+) at LSN"
    r" (?P<lsn>[0-9A-F]+/[0-9A-F]+) \(xid (?P<xid>\d+), commit LSN (?P<commit>[0-9A-F]+/[0-9A-F]+)\),"
    r" key (?P<key>.*?), (?P<size>\d+) bytes \(value (?P<vsize>\d+) \+ key (?P<ksize>\d+)\),"
    r" topic (?P<topic>\S+?)[.;](?: |$)")


def oversize_lines(text):
    """[(line, match)] of the log lines that describe a record too large for Kafka."""
    out = []
    for line in text.splitlines():
        m = OVERSIZE_RE.search(line.replace("(kafka.on_oversize=skip; ", "("))
        if m:
            out.append((line, m))
    return out


def check_names_the_record(line, m, table, xid, bounds, key, min_size, topic, by):
    """The line names table, the change's LSN and its commit LSN (both within the
    transaction's WAL bounds), xid, key, a size of at least min_size (value + key), the topic,
    and both limits to raise."""
    lo, hi = (lsn_to_int(x) for x in bounds)
    assert m["by"] == by, line
    assert (m["table"], m["xid"], m["key"], m["topic"]) == (table, str(xid), key, topic), line
    assert lo < lsn_to_int(m["lsn"]) < lsn_to_int(m["commit"]) < hi, (line, bounds)
    assert int(m["size"]) == int(m["vsize"]) + int(m["ksize"]) >= min_size, line
    assert "message.max.bytes" in line and "--kafka-conf message.max.bytes=N" in line, line
    assert f"topic {topic}'s max.message.bytes" in line, line


def create_topic(broker, topic, **config):
    from confluent_kafka.admin import NewTopic
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic(topic, 3, 1, config={k.replace("_", "."): str(v)
                                                                  for k, v in config.items()})]
                                 ).values():
        f.result(30)


def set_topic_config(broker, topic, **config):
    from confluent_kafka.admin import ConfigResource
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.alter_configs([ConfigResource(ConfigResource.Type.TOPIC, topic, set_config={
            k.replace("_", "."): str(v) for k, v in config.items()})]).values():
        f.result(30)


def oversize_metrics(port):
    """{action: value} of pgfanout_kafka_oversize_records_total, from a parsed scrape."""
    from test_service import scrape
    return {lab["action"]: v for lab, v in
            scrape(port).series("pgfanout_kafka_oversize_records_total")}


def test_record_too_large_fails_without_confirming(pgfanout, cluster, broker, db, pb2):
    """With the client's message.max.bytes=2000, a row of ~6 kB cannot be produced
    (on_oversize=fail, the default): pgfanout exits 1 naming the table, the change's LSN,
    commit LSN and xid, the key, the size and both limits to raise (the producer's
    message.max.bytes, the topic's max.message.bytes); the slot stays before that transaction,
    and a restart fails the same way.  A run without the setting then delivers it and what
    followed, and the record is exactly the one named (LSN, commit LSN, size)."""
    db.execute("CREATE TABLE pe_t (id int4 PRIMARY KEY, big text)")
    setup_slot(db, [("public", "pe_t")], "pe", reference=False)
    topic = topic_of("pe", "public", "pe_t")
    try:
        for i in (1, 2, 3):
            workload.tx(db, ("INSERT INTO pe_t VALUES (%s, %s)", (i, f"small {i}")))
        big_value = os.urandom(3000).hex()
        big = workload.tx_bounded(db, ("INSERT INTO pe_t VALUES (100, %s)", (big_value,)))
        for i in (4, 5):
            workload.tx(db, ("INSERT INTO pe_t VALUES (%s, %s)", (i, f"small {i}")))
        endpos = runner.current_lsn(db)
        args = kafka_args(cluster, broker, "pe_slot", "pe_pub", "pe")
        failures = []
        for attempt in (1, 2):  # the second run is a restart: the same failure, no silent advance
            res = runner.run_pgfanout(args + ["--kafka-conf", "message.max.bytes=2000",
                                              "--endpos", endpos], timeout=60)
            confirmed = lsn_to_int(runner.wait_slot_inactive(db, "pe_slot")["confirmed_flush_lsn"])
            assert not res.timed_out, "pgfanout hung on a permanent error:\n" + res.describe()
            assert res.returncode == 1, res.describe()
            found = oversize_lines(res.stderr)
            assert len(found) == 1 and " error: " in found[0][0], res.describe()
            line, m = found[0]
            print(f"\ntoo large, run {attempt}: exit {res.returncode}; {line}")
            check_names_the_record(line, m, "public.pe_t", big["xid"],
                                   (big["lsn_before"], big["lsn_after"]), "id=100", 6000, topic,
                                   "refused by the producer")
            assert "(now 2000;" in line and "--kafka-on-oversize" in line, line
            assert confirmed <= lsn_to_int(big["lsn_before"]), (
                f"run {attempt}: slot confirmed to {int_to_lsn(confirmed)}, past the undelivered"
                f" transaction (which starts after {big['lsn_before']})")
            failures.append((line.split(" error: ", 1)[1], confirmed))
        assert failures[0] == failures[1], failures

        again = runner.run_pgfanout(args + ["--endpos", endpos], timeout=60)
        assert not again.timed_out and again.returncode == 0, again.describe()
        decoded = Decoded(consume(broker, [topic]))
        assert not decoded.problems
        events, dups, _ = unique_events(decoded.records)
        got = {e["after"]["id"]: e["after"]["big"] for e in events if e["op"] == "insert"}
        assert sorted(got) == [1, 2, 3, 4, 5, 100], sorted(got)
        assert got[100] == big_value
        assert [e["xid"] for e in events if e["after"]["id"] == 100] == [big["xid"]]
        # The record the error named is the one now delivered: same LSNs, same size.
        rec = next(r for r in decoded.values() if r.ev["after"]["id"] == 100)
        assert (rec.ev["lsn"], rec.ev["commit_lsn"]) == (m["lsn"], m["commit"]), (rec.ev, line)
        assert len(rec.rec.value) + len(rec.rec.key) == int(m["size"]), line
        assert len(rec.rec.key) == int(m["ksize"]), line
    finally:
        drop_slots(db, "pe_slot")


def test_record_rejected_by_broker_fails_without_confirming(pgfanout, cluster, broker, db,
                                                            pb2):
    """The topic's max.message.bytes=2000 makes the broker reject a ~6 kB record (a failed
    delivery report, not a failed produce call): pgfanout exits 1 naming the table, LSN, xid,
    key, size, topic and both limits, and (the broker judging whole batches) batch.size; the
    slot stays before that transaction even though later transactions were acknowledged, also
    after a restart; once the topic allows it, a rerun delivers everything, and the record is
    the one named."""
    topic = topic_of("pb", "public", "pb_t")
    create_topic(broker, topic, max_message_bytes=2000)
    db.execute("CREATE TABLE pb_t (id int4 PRIMARY KEY, big text)")
    setup_slot(db, [("public", "pb_t")], "pb", reference=False)
    try:
        for i in (1, 2, 3):
            workload.tx(db, ("INSERT INTO pb_t VALUES (%s, %s)", (i, f"small {i}")))
        big_value = os.urandom(3000).hex()
        big = workload.tx_bounded(db, ("INSERT INTO pb_t VALUES (100, %s)", (big_value,)))
        for i in range(4, 40):
            workload.tx(db, ("INSERT INTO pb_t VALUES (%s, %s)", (i, f"small {i}")))
        endpos = runner.current_lsn(db)
        args = kafka_args(cluster, broker, "pb_slot", "pb_pub", "pb")
        for attempt in (1, 2):
            res = runner.run_pgfanout(args + ["--endpos", endpos], timeout=60)
            confirmed = lsn_to_int(runner.wait_slot_inactive(db, "pb_slot")["confirmed_flush_lsn"])
            delivered = Decoded(consume(broker, [topic]))
            later = sorted({r.ev["after"]["id"] for r in delivered.values()} - {1, 2, 3})
            print(f"\nrejected by the broker, run {attempt}: exit {res.returncode}; delivered so"
                  f" far: ids {later} after the rejected one; confirmed {int_to_lsn(confirmed)}")
            assert not res.timed_out, "pgfanout hung on a permanent error:\n" + res.describe()
            assert res.returncode == 1, res.describe()
            found = oversize_lines(res.stderr)
            assert len(found) == 1 and " error: " in found[0][0], res.describe()
            line, m = found[0]
            print(line)
            check_names_the_record(line, m, "public.pb_t", big["xid"],
                                   (big["lsn_before"], big["lsn_after"]), "id=100", 6000, topic,
                                   "rejected by the broker")
            assert "batch.size" in line, line
            assert "fatal" not in res.stderr.lower(), res.describe()
            assert confirmed <= lsn_to_int(big["lsn_before"]), (
                f"slot confirmed to {int_to_lsn(confirmed)}, past the rejected transaction"
                f" (which starts after {big['lsn_before']})")

        set_topic_config(broker, topic, max_message_bytes=1 << 20)
        again = runner.run_pgfanout(args + ["--endpos", endpos], timeout=60)
        assert not again.timed_out and again.returncode == 0, again.describe()
        decoded = Decoded(consume(broker, [topic]))
        events, _, _ = unique_events(decoded.records)
        got = {e["after"]["id"]: e["after"]["big"] for e in events}
        assert sorted(got) == list(range(1, 40)) + [100], sorted(got)
        assert got[100] == big_value
        rec = next(r for r in decoded.values() if r.ev["after"]["id"] == 100)
        assert (rec.ev["lsn"], rec.ev["commit_lsn"]) == (m["lsn"], m["commit"]), (rec.ev, line)
        assert len(rec.rec.value) + len(rec.rec.key) == int(m["size"]), line
    finally:
        drop_slots(db, "pb_slot")


# The dead-letter topic is missing and the producer may not create topics, so librdkafka holds
# the dead-letter record waiting for the topic (for topic.metadata.propagation.max.ms from the
# topic's first use; 2 min here rather than 30 s, so a slow run cannot reach it).
NO_AUTO_CREATE = ["--kafka-conf", "allow.auto.create.topics=false",
                  "--kafka-conf", "topic.metadata.propagation.max.ms=120000"]


def held_then_released(db, broker, slot, dl_topic, big, end, worker, records_in, want_records):
    """The dead-letter topic does not exist yet (NO_AUTO_CREATE), so the dead-letter record
    stays unacknowledged: once every later record is in Kafka, the slot must still be before
    the oversize transaction for several status intervals.  Then the topic is created, the
    dead-letter record is acked and the slot moves past everything."""
    assert dl_topic not in list_topics(broker.bootstrap, dl_topic)
    assert wait_for(lambda: records_in() >= want_records or not worker.running(), 60,
                    interval=0.2), (records_in(), stderr_tail(worker.stderr_text()))
    assert worker.running(), stderr_tail(worker.stderr_text())
    held = []
    for _ in range(8):  # 4 s: 8 status intervals
        time.sleep(0.5)
        held.append(confirmed_lsn(db, slot))
    assert max(held) <= lsn_to_int(big["lsn_before"]), (
        f"slot confirmed to {int_to_lsn(max(held))} past the oversize transaction (which"
        f" starts after {big['lsn_before']}) before its dead-letter record was acknowledged")
    assert worker.running(), stderr_tail(worker.stderr_text())
    create_topic(broker, dl_topic)
    assert wait_for(lambda: confirmed_lsn(db, slot) >= lsn_to_int(end) or not worker.running(),
                    60, interval=0.2), stderr_tail(worker.stderr_text())
    assert high_watermarks(broker.bootstrap, dl_topic) == 1
    print(f"\nslot held at {int_to_lsn(max(held))} (the oversize transaction starts after"
          f" {big['lsn_before']}) until the dead-letter record was acked, then confirmed"
          f" {int_to_lsn(confirmed_lsn(db, slot))}")


def check_dead_letter(broker, dl_topic, topic, table, big, key_bytes, by, limit_setting):
    """The dead-letter topic holds one record: JSON naming the table, op, printable key, LSN,
    commit LSN, xid, size, reason and original topic; Kafka key the original record's key;
    the original headers.  Returns the decoded JSON."""
    import json
    recs = consume(broker, [dl_topic])
    assert len(recs) == 1, recs
    r = recs[0]
    doc = json.loads(r.value)
    print(f"dead-letter record: key {r.key!r}, headers {r.headers}, value {doc}")
    lo, hi = lsn_to_int(big["lsn_before"]), lsn_to_int(big["lsn_after"])
    assert (doc["table"], doc["op"], doc["key"], doc["xid"], doc["topic"]) == (
        table, "insert", "id=100", big["xid"], topic), doc
    assert lo < lsn_to_int(doc["lsn"]) < lsn_to_int(doc["commit_lsn"]) < hi, doc
    assert doc["size"] == doc["value_size"] + doc["key_size"] > 6000, doc
    assert doc["key_size"] == len(key_bytes), doc
    assert "too large" in doc["reason"].lower(), doc
    assert (doc["rejected_by"], doc["limit_setting"]) == (by, limit_setting), doc
    assert doc["database"] == "postgres", doc
    assert r.key == key_bytes, (r.key, key_bytes)
    assert dict((k, v.decode()) for k, v in r.headers) == {
        "op": "insert", "table": table, "lsn": doc["lsn"], "xid": str(big["xid"])}, r.headers
    return doc


def oversize_workload(db, table, big_value, n_updates=10, n_after=6):
    """Small rows 1..3, then row 100 with big_value in a transaction of its own, then
    n_updates small updates of row 100 (same key: same partition, after the big record) and
    small rows 4.. each in its own transaction.  Returns (big transaction, end LSN, number of
    records after the big one)."""
    for i in (1, 2, 3):
        workload.tx(db, (f"INSERT INTO {table} VALUES (%s, %s)", (i, f"small {i}")))
    big = workload.tx_bounded(db, (f"INSERT INTO {table} VALUES (100, %s)", (big_value,)))
    for i in range(n_updates):
        workload.tx(db, (f"UPDATE {table} SET big = %s WHERE id = 100", (f"u{i}",)))
    for i in range(4, 4 + n_after):
        workload.tx(db, (f"INSERT INTO {table} VALUES (%s, %s)", (i, f"small {i}")))
    return big, runner.current_lsn(db), n_updates + n_after


def partition_ends(bootstrap, topic, partitions=3):
    """{partition: high watermark} of a topic once it stops moving: produce requests a run sent
    just before it exited may still be appended after the exit."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"wm-{uuid.uuid4()}"})
    try:
        last = None
        while True:
            ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                    for p in range(partitions)}
            if ends == last:
                return ends
            last = ends
            time.sleep(0.5)
    finally:
        c.close()


def check_later_records(decoded, n_updates, n_after, first_offsets=None):
    """Every change after the big one (see oversize_workload) is in Kafka exactly once
    (counting from first_offsets on, per partition, when given), the updates of row 100 in
    commit order in one partition, and the big insert is not.  Returns row 100's record key."""
    recs = [r for r in decoded.values()
            if first_offsets is None or r.rec.offset >= first_offsets[r.rec.partition]]
    seen = collections.Counter((r.ev["op"], r.ev["after"]["id"], r.ev["after"]["big"])
                               for r in recs if r.ev["after"]["id"] not in (1, 2, 3))
    want = collections.Counter([("update", 100, f"u{i}") for i in range(n_updates)]
                               + [("insert", i, f"small {i}") for i in range(4, 4 + n_after)])
    assert seen == want, (f"later records missing or repeated: {sorted((seen - want).items())}"
                          f" extra, {sorted((want - seen).items())} missing")
    ups = sorted((r for r in recs if r.ev["after"]["id"] == 100), key=lambda r: r.rec.offset)
    assert len({r.rec.partition for r in ups}) == 1
    assert [r.ev["after"]["big"] for r in ups] == [f"u{i}" for i in range(n_updates)], \
        "updates of row 100 out of order"
    return ups[0].rec.key


def test_oversize_dead_letter_refused_by_producer(pgfanout, cluster, broker, db, pb2, tmp_path):
    """kafka.on_oversize=dead_letter, a ~6 kB row over the producer's message.max.bytes=2000:
    a JSON record naming it (table, op, key, LSN, commit LSN, xid, size, reason, topic) goes
    to {prefix}.dead_letter keyed by the row's record key; every later change, including
    updates of the same row, is delivered in order; the slot does not pass the transaction
    until the dead-letter record is acknowledged (held while the topic refuses writes), then
    moves past everything; a warning names the record; /metrics counts it."""
    db.execute("CREATE TABLE dla_t (id int4 PRIMARY KEY, big text)")
    setup_slot(db, [("public", "dla_t")], "dla", reference=False)
    topic, dl_topic = topic_of("dla", "public", "dla_t"), "dla.dead_letter"
    create_topic(broker, topic)
    create_topic(broker, "dla.tiny", max_message_bytes=100)
    from ports import free_port
    port = free_port()
    try:
        big, end, n_later = oversize_workload(db, "dla_t", os.urandom(3000).hex())
        args = kafka_args(cluster, broker, "dla_slot", "dla_pub", "dla", "--kafka-conf",
                          "message.max.bytes=2000", "--kafka-on-oversize", "dead_letter")
        # A dead-letter record that cannot be delivered is fatal, as with on_oversize=fail.
        res = runner.run_pgfanout(args + ["--dead-letter-topic", "{prefix}.tiny", "--endpos", end],
                                  timeout=60)
        assert not res.timed_out and res.returncode == 1, res.describe()
        assert "the dead-letter record for a record too large for Kafka (table public.dla_t, LSN" \
            in res.stderr and "could not be delivered to topic dla.tiny" in res.stderr, res.describe()
        assert lsn_to_int(runner.wait_slot_inactive(db, "dla_slot")["confirmed_flush_lsn"]) <= \
            lsn_to_int(big["lsn_before"])
        first = partition_ends(broker.bootstrap, topic)

        with runner.Worker(args + NO_AUTO_CREATE + ["--http-listen", str(port)],
                           stderr_path=str(tmp_path / "dla.err")) as w:
            held_then_released(db, broker, "dla_slot", dl_topic, big, end, w,
                               lambda: high_watermarks(broker.bootstrap, topic) - sum(first.values()),
                               n_later)
            assert oversize_metrics(port) == {"dead_letter": 1, "skip": 0}
            assert w.terminate() == 0, stderr_tail(w.stderr_text())
            stderr = w.stderr_text()
        found = oversize_lines(stderr)
        assert len(found) == 1 and " warn: " in found[0][0], stderr_tail(stderr)
        line, m = found[0]
        check_names_the_record(line, m, "public.dla_t", big["xid"],
                               (big["lsn_before"], big["lsn_after"]), "id=100", 6000, topic,
                               "refused by the producer")
        assert f"dead-letter record goes to topic {dl_topic}" in line, line
        decoded = Decoded(consume(broker, [topic]))
        assert not decoded.problems, decoded.problems
        key = check_later_records(decoded, 10, 6, first)
        doc = check_dead_letter(broker, dl_topic, topic, "public.dla_t", big, key, "producer",
                                "message.max.bytes")
        assert (doc["lsn"], doc["commit_lsn"], doc["size"]) == (m["lsn"], m["commit"],
                                                                int(m["size"])), (doc, line)
    finally:
        drop_slots(db, "dla_slot")


def test_oversize_dead_letter_rejected_by_broker(pgfanout, cluster, broker, db, pb2, tmp_path):
    """kafka.on_oversize=dead_letter, a ~6 kB row over the topic's max.message.bytes=2000 (the
    broker rejects it in the delivery report).  With the default batch.size the record is
    under the producer's batch limit, so it may only have shared a rejected batch: pgfanout
    fails (exit 1) saying to lower batch.size, without confirming or dead-lettering anything.
    With batch.size=1500 it travels alone: it is dead-lettered, and the idempotent producer
    carries on after the rejection (no fatal error, no gap): later records in the same
    partition are delivered once each and in order; the slot is held until the dead-letter
    record is acked; /metrics counts it."""
    db.execute("CREATE TABLE dlb_t (id int4 PRIMARY KEY, big text)")
    setup_slot(db, [("public", "dlb_t")], "dlb", reference=False)
    topic, dl_topic = topic_of("dlb", "public", "dlb_t"), "dlb.dead_letter"
    create_topic(broker, topic, max_message_bytes=2000)
    from ports import free_port
    port = free_port()
    try:
        big, end, n_later = oversize_workload(db, "dlb_t", os.urandom(3000).hex())
        args = kafka_args(cluster, broker, "dlb_slot", "dlb_pub", "dlb", "--kafka-on-oversize",
                          "dead_letter", *NO_AUTO_CREATE)
        res = runner.run_pgfanout(args + ["--endpos", end], timeout=60)
        assert not res.timed_out and res.returncode == 1, res.describe()
        found = oversize_lines(res.stderr)
        assert len(found) == 1 and " error: " in found[0][0], res.describe()
        line, m = found[0]
        print(f"\ndead_letter with the default batch.size: {line}")
        check_names_the_record(line, m, "public.dlb_t", big["xid"],
                               (big["lsn_before"], big["lsn_after"]), "id=100", 6000, topic,
                               "rejected by the broker")
        assert "--kafka-conf batch.size=N" in line and "on its own" in line, line
        assert lsn_to_int(runner.wait_slot_inactive(db, "dlb_slot")["confirmed_flush_lsn"]) <= \
            lsn_to_int(big["lsn_before"])
        assert high_watermarks(broker.bootstrap, dl_topic) == 0
        first = partition_ends(broker.bootstrap, topic)

        with runner.Worker(args + ["--kafka-conf", "batch.size=1500",
                                                     "--http-listen", str(port)],
                           stderr_path=str(tmp_path / "dlb.err")) as w:
            held_then_released(db, broker, "dlb_slot", dl_topic, big, end, w,
                               lambda: high_watermarks(broker.bootstrap, topic) - sum(first.values()),
                               n_later)
            assert oversize_metrics(port) == {"dead_letter": 1, "skip": 0}
            assert w.terminate() == 0, stderr_tail(w.stderr_text())
            stderr = w.stderr_text()
        assert "fatal" not in stderr.lower(), stderr_tail(stderr)
        found = oversize_lines(stderr)
        assert len(found) == 1 and " warn: " in found[0][0], stderr_tail(stderr)
        line, m = found[0]
        check_names_the_record(line, m, "public.dlb_t", big["xid"],
                               (big["lsn_before"], big["lsn_after"]), "id=100", 6000, topic,
                               "rejected by the broker")
        decoded = Decoded(consume(broker, [topic]))
        assert not decoded.problems, decoded.problems
        key = check_later_records(decoded, 10, 6, first)
        doc = check_dead_letter(broker, dl_topic, topic, "public.dlb_t", big, key, "broker",
                                "max.message.bytes")
        assert (doc["lsn"], doc["commit_lsn"], doc["size"]) == (m["lsn"], m["commit"],
                                                                int(m["size"])), (doc, line)
    finally:
        drop_slots(db, "dlb_slot")


def test_oversize_skip_logs_counts_and_continues(pgfanout, cluster, broker, db, pb2, tmp_path):
    """kafka.on_oversize=skip: a row over the producer's message.max.bytes (4000) and one over
    its topic's max.message.bytes (1100; batch.size=1000 so it travels alone) are left out,
    never silently: a warning each names table, LSN, xid, key, size and both limits;
    /metrics counts 2 skipped; every other change is delivered and the slot moves past all."""
    db.execute("CREATE TABLE ska_t (id int4 PRIMARY KEY, big text)")
    db.execute("CREATE TABLE skb_t (id int4 PRIMARY KEY, big text)")
    setup_slot(db, [("public", "ska_t"), ("public", "skb_t")], "sk", reference=False)
    topic_a, topic_b = topic_of("sk", "public", "ska_t"), topic_of("sk", "public", "skb_t")
    create_topic(broker, topic_b, max_message_bytes=1100)
    from ports import free_port
    port = free_port()
    try:
        big_a, _, _ = oversize_workload(db, "ska_t", os.urandom(3000).hex(), 3, 2)
        big_b, end, _ = oversize_workload(db, "skb_t", os.urandom(1500).hex(), 3, 2)
        args = kafka_args(cluster, broker, "sk_slot", "sk_pub", "sk", "--kafka-on-oversize",
                          "skip", "--kafka-conf", "message.max.bytes=4000", "--kafka-conf",
                          "batch.size=1000", "--http-listen", str(port))
        with runner.Worker(args, stderr_path=str(tmp_path / "sk.err")) as w:
            assert wait_for(lambda: confirmed_lsn(db, "sk_slot") >= lsn_to_int(end)
                            or not w.running(), 60, interval=0.2), stderr_tail(w.stderr_text())
            assert oversize_metrics(port) == {"dead_letter": 0, "skip": 2}
            assert w.terminate() == 0, stderr_tail(w.stderr_text())
            stderr = w.stderr_text()
        found = oversize_lines(stderr)
        assert len(found) == 2 and all(" warn: " in f[0] and "skipped" in f[0] for f in found), \
            stderr_tail(stderr)
        by_table = {m["table"]: (line, m) for line, m in found}
        check_names_the_record(*by_table["public.ska_t"], "public.ska_t", big_a["xid"],
                               (big_a["lsn_before"], big_a["lsn_after"]), "id=100", 6000, topic_a,
                               "refused by the producer")
        check_names_the_record(*by_table["public.skb_t"], "public.skb_t", big_b["xid"],
                               (big_b["lsn_before"], big_b["lsn_after"]), "id=100", 3000, topic_b,
                               "rejected by the broker")
        for line, _ in found:
            print(f"\n{line}")
        for t in (topic_a, topic_b):
            decoded = Decoded(consume(broker, [t]))
            assert not decoded.problems, decoded.problems
            got = [(r.ev["op"], r.ev["after"]["id"]) for r in decoded.values()]
            assert sorted(got) == sorted([("insert", i) for i in (1, 2, 3, 4, 5)]
                                         + [("update", 100)] * 3), (t, got)
    finally:
        drop_slots(db, "sk_slot")


# --- 8: bad producer settings -----------------------------------------------------------------

def test_bad_kafka_setting_names_the_key_and_hides_values(pgfanout, cluster, broker, db):
    """An unknown --kafka-conf key stops pgfanout non-zero, naming the key; the value of a
    secret setting given alongside never appears in its output, not even at debug level."""
    db.execute("CREATE TABLE bc_t (id int4 PRIMARY KEY)")
    setup_slot(db, [("public", "bc_t")], "bc", reference=False)
    try:
        before = runner.slot_info(db, "bc_slot")["confirmed_flush_lsn"]
        args = kafka_args(cluster, broker, "bc_slot", "bc_pub", "bc")
        res = runner.run_pgfanout(args + ["--kafka-conf", "no.such.setting=1"], timeout=30)
        assert not res.timed_out and res.returncode > 0, res.describe()
        assert "no.such.setting" in res.stderr, res.describe()

        secret = "sekrit123"
        for extra in (["--kafka-conf", f"sasl.password={secret}", "--kafka-conf", "no.such=1"],
                      ["--log-level", "debug", "--kafka-conf", f"sasl.password={secret}",
                       "--kafka-conf", "no.such=1"]):
            res = runner.run_pgfanout(args + extra, timeout=30)
            assert not res.timed_out and res.returncode > 0, res.describe()
            assert "no.such" in res.stderr, res.describe()
            assert secret not in res.stderr and secret not in res.stdout, res.describe()
        # A valid configuration with the secret, at debug level, librdkafka's too.
        db.execute("INSERT INTO bc_t VALUES (1)")
        endpos = runner.current_lsn(db)
        res = runner.run_pgfanout(args + ["--log-level", "debug", "--kafka-conf",
                                          f"sasl.password={secret}", "--kafka-conf",
                                          "debug=generic,conf", "--endpos", endpos], timeout=60)
        assert not res.timed_out and res.returncode == 0, res.describe()
        assert secret not in res.stderr and secret not in res.stdout, (
            "the secret was printed: " + "\n".join(line for line in res.stderr.splitlines()
                                                   if secret in line)[:2000])
        runner.wait_slot_inactive(db, "bc_slot")
        assert lsn_to_int(runner.slot_info(db, "bc_slot")["confirmed_flush_lsn"]) >= \
            lsn_to_int(before)
    finally:
        drop_slots(db, "bc_slot")


# --- 9: both sinks at once, the topic flags, date/time edge values ----------------------------

EDGE_ROWS = [
    # id, time, timetz, date, timestamp, timestamptz, name, char(3), varchar, int2, real
    "(1, '24:00:00', '01:02:03+05:30', '0001-01-01', '0001-01-01 00:00:00',"
    " '0001-01-01 00:00:00+00', 'nm', 'a', 'v', 1, 1.1)",
    "(2, '00:00:00.000001', '23:59:59.5-03:00:15', '1969-12-31', '1969-12-31 23:59:59.5',"
    " '1969-12-31 23:59:59.999999+00', '', '', '', -1, '-0')",
    "(3, '23:59:59.999999', NULL, '10000-01-01', '12345-06-07 08:09:10.1',"
    " '99999-12-31 23:59:59.999999+00', repeat('x', 63), 'abc', repeat('é', 300), 32767,"
    " 'NaN')",
    "(4, '12:00', '12:00+00', 'infinity', 'infinity', '-infinity', 'n', 'b', NULL, NULL,"
    " '-Infinity')",
    "(5, '00:00', '00:00-14', '1970-01-01', 'epoch', '1970-01-01 05:30:00+05:30', 'z', 'c',"
    " 'w', 0, 3.4028235e38)",
]


def test_stdout_and_kafka_agree_with_topic_flags(pgfanout, cluster, broker, db, pb2, tmp_path):
    """--sink stdout,kafka: each Kafka event, turned back into PostgreSQL text, equals the
    JSON line of the same change, and both replay to the table; date/time values at the
    edges (24:00, year 1, before 1970 with fractions, years 10000 to 99999, infinity) have
    the typed forms of event.proto; --topic-template/--topic-prefix/--message-topic name the
    topics, and --no-tombstones leaves out the tombstones."""
    db.execute("CREATE SCHEMA edge")
    db.execute("CREATE TABLE edge.vals (id int4 PRIMARY KEY, t time, ttz timetz, d date,"
               " ts timestamp, tstz timestamptz, nm name, bp char(3), vc varchar, i2 int2,"
               " r real)")
    setup_slot(db, [("edge", "vals")], "ed", reference=False)
    try:
        workload.tx(db, "INSERT INTO edge.vals VALUES " + ", ".join(EDGE_ROWS))
        workload.tx(db, "UPDATE edge.vals SET t = '13:14:15.161718', d = d + 1 WHERE id = 5",
                    "SELECT pg_logical_emit_message(true, 'edge', 'in tx')")
        workload.tx(db, "UPDATE edge.vals SET id = 50 WHERE id = 5",
                    "DELETE FROM edge.vals WHERE id = 4")
        endpos = runner.current_lsn(db)
        out = str(tmp_path / "edge.jsonl")
        args = kafka_args(cluster, broker, "ed_slot", "ed_pub", "edp")
        args[args.index("kafka")] = "stdout,kafka"
        res = runner.run_pgfanout(args + [
            "--output", out, "--no-tombstones",
            "--topic-template", "{prefix}-{database}-{schema}-{table}",
            "--message-topic", "{prefix}-msgs", "--endpos", endpos], timeout=60)
        assert not res.timed_out and res.returncode == 0, res.describe()
        topics = list_topics(broker.bootstrap, "edp")
        assert set(topics) == {"edp-postgres-edge-vals", "edp-msgs"}, topics
        decoded = Decoded(consume(broker, topics), message_topics={"edp-msgs"})
        assert not decoded.problems, "\n".join(decoded.problems)
        assert not [r for r in decoded.records if r.tombstone], "tombstones despite the flag"
        kafka_events, dups, _ = unique_events(decoded.records)
        json_events, bad = replay.read_events(out)
        assert not bad, bad
        # Kafka splits the key change (id 5 -> 50) into a delete of the old key and an insert
        # of the new (Record keys in the README); the JSON stream keeps one update.
        moved = [j for j in json_events if j["op"] == "update" and j["key"] == {"id": 50}]
        assert len(moved) == 1 and moved[0]["before"] == {"id": 5}, moved
        i = json_events.index(moved[0])
        json_events[i:i + 1] = [
            {**moved[0], "op": "delete", "key": {"id": 5}, "after": None},
            {**moved[0], "op": "insert", "before": None}]
        assert len(kafka_events) == len(json_events) == 10, (len(kafka_events), len(json_events))
        problems = []
        for k, j in zip(kafka_events, json_events):
            for field in ("op", "lsn", "commit_lsn", "xid"):
                if k[field] != j[field]:
                    problems.append(f"{field}: kafka {k[field]!r}, json {j[field]!r}")
            t = datetime.datetime.strptime(j["commit_time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.timezone.utc)
            if k["commit_time_us"] != (t - datetime.datetime(1970, 1, 1, tzinfo=t.tzinfo)) \
                    // datetime.timedelta(microseconds=1):
                problems.append(f"commit_time_us {k['commit_time_us']} vs {j['commit_time']}")
            if k["op"] == "message":
                if (k["prefix"], k["content"], k["transactional"]) != ("edge", b"in tx", True):
                    problems.append(f"message {k}")
                continue
            for field in ("schema", "table", "key", "before", "after", "unchanged_toast"):
                if _comparable(k[field]) != _comparable(j[field]):
                    problems.append(f"{field} of {j['op']} {j['key']}: kafka {k[field]!r},"
                                    f" json {j[field]!r}")
        assert not problems, "\n".join(problems)
        replay.assert_tables_match(db, replay.Replayer(strict=True).apply_all(kafka_events),
                                   [("edge", "vals")])
        kinds = {}
        for r in decoded.values():
            if r.ev["op"] == "insert":
                kinds[r.ev["key"]["id"]] = {c.name: c.value.WhichOneof("kind")
                                            for c in r.event.after.columns}
        assert [kinds[i]["t"] for i in (1, 2, 3)] == ["time_us"] * 3
        assert [kinds[i]["d"] for i in (1, 2, 3, 4)] == ["date_days"] * 3 + ["pg_text"]
        assert [kinds[i]["ts"] for i in (1, 2, 3, 4)] == ["timestamp_us"] * 3 + ["pg_text"]
        assert [kinds[i]["tstz"] for i in (1, 2, 3, 4)] == ["timestamptz_us"] * 3 + ["pg_text"]
        assert kinds[1]["ttz"] == "pg_text" and kinds[1]["nm"] == "text"
        msgs = [r for r in decoded.values() if r.ev["op"] == "message"]
        assert [(r.rec.topic, r.rec.key) for r in msgs] == [("edp-msgs", b"edge")]
    finally:
        drop_slots(db, "ed_slot")


def _comparable(v):
    """JSON-stream values and Kafka values side by side: NaN is not == itself."""
    if isinstance(v, dict):
        return {k: _comparable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_comparable(x) for x in v]
    if isinstance(v, float) and v != v:
        return "NaN"
    return v


def test_timestamps_beyond_int64_microseconds(pgfanout, cluster, broker, db, pb2):
    """PostgreSQL accepts timestamps up to 294276-12-31 23:59:59.999999, but int64
    microseconds since 1970 end at 294247-01-10 04:00:54.775807: later values must not come as
    a wrapped-around timestamp_us/timestamptz_us (event.proto's pg_text is the form for values
    outside the integer forms).  The last representable instant and the latest date keep
    their integer forms; everything converts back to the server's text."""
    db.execute("CREATE TABLE mx (id int4 PRIMARY KEY, ts timestamp, tstz timestamptz, d date)")
    setup_slot(db, [("public", "mx")], "mx", reference=False)
    try:
        workload.tx(db, "INSERT INTO mx VALUES"
                        " (1, '294276-12-31 23:59:59.999999', '294276-12-31 23:59:59.999999+00',"
                        "  '5874897-12-31'),"
                        " (2, '294247-01-10 04:00:54.775807', '294247-01-10 04:00:54.775807+00',"
                        "  '294247-01-10')")
        endpos = runner.current_lsn(db)
        res = runner.run_pgfanout(kafka_args(cluster, broker, "mx_slot", "mx_pub", "mx",
                                             "--endpos", endpos), timeout=60)
        assert not res.timed_out and res.returncode == 0, res.describe()
        decoded = Decoded(consume(broker, [topic_of("mx", "public", "mx")]))
        values = {r.ev["key"]["id"]: {c.name: c.value for c in r.event.after.columns}
                  for r in decoded.values()}
        shown = {i: {c: (v.WhichOneof("kind"), getattr(v, v.WhichOneof("kind")))
                     for c, v in row.items()} for i, row in values.items()}
        assert not decoded.problems, "\n".join(decoded.problems) + f"\nvalues: {shown}"
        events, _, _ = unique_events(decoded.records)
        replay.assert_tables_match(db, replay.Replayer(strict=True).apply_all(events),
                                   [("public", "mx")])
        int64_max = 2**63 - 1
        assert shown[2]["ts"] == ("timestamp_us", int64_max)
        assert shown[2]["tstz"] == ("timestamptz_us", int64_max)
        assert shown[1]["d"] == ("date_days", 2145042905)  # 5874897-12-31, PostgreSQL's last
    finally:
        drop_slots(db, "mx_slot")


def test_idle_slot_confirms_keepalive_position(pgfanout, cluster, broker, db, tmp_path):
    """With nothing in flight, the worker confirms the server's keepalive position: WAL written
    by another database (which this slot never sends) must not stay pinned behind the slot."""
    db.execute("CREATE TABLE idle_t (id int PRIMARY KEY)")
    setup_slot(db, [("public", "idle_t")], "idle", reference=False)
    db.execute("INSERT INTO idle_t VALUES (1)")
    db.execute("CREATE DATABASE idle_other")
    try:
        args = kafka_args(cluster, broker, "idle_slot", "idle_pub", "idle")
        with runner.Worker(args, stderr_path=str(tmp_path / "idle.err")) as w:
            after_row = runner.current_lsn(db)
            assert wait_for(lambda: confirmed_lsn(db, "idle_slot") >= lsn_to_int(after_row), 30,
                            interval=0.2), "the one transaction was never confirmed"
            with psycopg.connect(cluster.dsn(dbname="idle_other"), autocommit=True) as other:
                other.execute("CREATE TABLE noise (x text)")
                for _ in range(20):
                    other.execute("INSERT INTO noise SELECT md5(g::text) FROM generate_series(1, 2000) g")
                other_end = lsn_to_int(runner.current_lsn(other))
            # Only keepalives can carry the slot past the other database's WAL.
            assert wait_for(lambda: confirmed_lsn(db, "idle_slot") >= other_end, 60, interval=0.2), (
                f"idle slot stuck at {confirmed_lsn(db, 'idle_slot'):X}, other database's WAL ends at "
                f"{other_end:X}\n" + stderr_tail(w.stderr_text()))
            assert w.running()
            assert w.terminate(timeout=30) == 0
    finally:
        drop_slots(db, "idle_slot")
        db.execute("DROP DATABASE idle_other")


def test_sigterm_while_paused_by_a_down_broker_exits_in_bounded_time(pgfanout, cluster, broker, db,
                                                                     tmp_path):
    """Broker down, back-pressure paused mid-transaction: SIGTERM still ends the worker within
    --shutdown-timeout plus a margin, and the undelivered transaction stays unconfirmed."""
    db.execute("CREATE TABLE bp_t (id int8 PRIMARY KEY, pad text)")
    setup_slot(db, [("public", "bp_t")], "bp", reference=False)
    err = str(tmp_path / "bp.err")
    args = kafka_args(cluster, broker, "bp_slot", "bp_pub", "bp", "--max-inflight-bytes", "256k",
                      "--shutdown-timeout", "3", "--log-level", "debug")
    try:
        with runner.Worker(args, stderr_path=err) as w:
            db.execute("INSERT INTO bp_t VALUES (0, 'warm-up')")
            assert wait_for(lambda: high_watermarks(broker.bootstrap, topic_of("bp", "public", "bp_t")) > 0
                            or not w.running(), 30, interval=0.2), stderr_tail(w.stderr_text())
            broker.stop()
            db.execute("INSERT INTO bp_t SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
            big_commit = lsn_to_int(runner.current_lsn(db))
            assert wait_for(lambda: "pausing the slot" in w.stderr_text() or not w.running(), 60,
                            interval=0.2), stderr_tail(w.stderr_text())
            assert w.running(), stderr_tail(w.stderr_text())
            t0 = time.monotonic()
            rc = w.terminate(timeout=30)
            took = time.monotonic() - t0
            assert rc is not None, "pgfanout did not stop within 30 s of SIGTERM"
            print(f"\nSIGTERM while paused: exit {rc} after {took:.1f} s")
            assert took < 15, took
        assert confirmed_lsn(db, "bp_slot") < big_commit
    finally:
        broker.restart()
        drop_slots(db, "bp_slot")


def test_sigterm_while_paused_lets_the_transaction_finish(pgfanout, cluster, broker, db, tmp_path):
    """Back-pressure pauses reading in the middle of a 20,000-row transaction
    (--max-inflight-bytes 256k) when SIGTERM comes, and the broker is up: the transaction still
    finishes (it has half the shutdown timeout), so Kafka holds all of it rather than a part to
    be sent whole again on the next start, the slot is confirmed past it, and the exit is 0.
    (pgfanout stopped at once while paused, leaving thousands of records of a cut transaction.)"""
    db.execute("CREATE TABLE bf_t (id int8 PRIMARY KEY, pad text)")
    setup_slot(db, [("public", "bf_t")], "bf", reference=False)
    topic = topic_of("bf", "public", "bf_t")
    err = str(tmp_path / "bf.err")
    args = kafka_args(cluster, broker, "bf_slot", "bf_pub", "bf", "--max-inflight-bytes", "256k",
                      "--log-level", "debug")
    try:
        with runner.Worker(args, stderr_path=err) as w:
            db.execute("INSERT INTO bf_t VALUES (0, 'warm-up')")
            assert wait_for(lambda: high_watermarks(broker.bootstrap, topic) > 0 or not w.running(), 30,
                            interval=0.2), stderr_tail(w.stderr_text())
            db.execute("INSERT INTO bf_t SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
            big_commit = lsn_to_int(runner.current_lsn(db))
            assert wait_for(lambda: "pausing the slot" in w.stderr_text() or not w.running(), 60,
                            interval=0.01), stderr_tail(w.stderr_text())
            assert w.running(), stderr_tail(w.stderr_text())
            rc = w.terminate(timeout=30)
            stderr = w.stderr_text()
        assert rc == 0, stderr_tail(stderr)
        assert "did not finish" not in stderr, stderr_tail(stderr)
        assert high_watermarks(broker.bootstrap, topic) == 20001, stderr_tail(stderr)
        assert confirmed_lsn(db, "bf_slot") >= big_commit
    finally:
        drop_slots(db, "bf_slot")


def test_truncate_waiting_for_metadata_holds_up_nothing_else(pgfanout, cluster, broker, db, pb2, tmp_path):
    """A truncate needs its topic's partition count, which the broker cannot give while the
    topic does not exist (the producer may not create it).  Meanwhile other tables' changes
    reach Kafka within 2 s each and /healthz answers within 100 ms; once the topic exists, the
    truncate is in every partition, before the truncated table's later change, and the slot
    confirms everything."""
    from pgcluster import free_port
    db.execute("CREATE TABLE md_slow (id int PRIMARY KEY)")
    db.execute("CREATE TABLE md_fast (id int PRIMARY KEY)")
    setup_slot(db, [("public", "md_slow"), ("public", "md_fast")], "md", reference=False)
    slow, fast = topic_of("md", "public", "md_slow"), topic_of("md", "public", "md_fast")
    create_topic(broker, fast)
    port = free_port()
    with runner.Worker(kafka_args(cluster, broker, "md_slot", "md_pub", "md", *NO_AUTO_CREATE,
                                  "--http-listen", str(port)), stderr_path=str(tmp_path / "md.err")) as w:
        assert wait_for(lambda: runner.healthz_ms(port) is not None or not w.running(), 30), \
            stderr_tail(w.stderr_text())
        before_truncate = runner.current_lsn(db)
        db.execute("TRUNCATE md_slow")
        db.execute("INSERT INTO md_slow VALUES (1)")
        worst, late = 0.0, []
        for i in range(1, 16):
            db.execute("INSERT INTO md_fast VALUES (%s)", (i,))
            t0 = time.monotonic()
            while high_watermarks(broker.bootstrap, fast) < i:
                ms = runner.healthz_ms(port)
                assert ms is not None, stderr_tail(w.stderr_text())
                worst = max(worst, ms)
                if time.monotonic() - t0 > 2:
                    late.append(i)
                    break
                time.sleep(0.02)
        assert not late, f"md_fast changes {late} took over 2 s behind a truncate waiting for metadata"
        assert worst < 100, f"/healthz took {worst:.0f} ms behind a truncate waiting for metadata"
        assert high_watermarks(broker.bootstrap, slow) == 0 and w.running(), stderr_tail(w.stderr_text())
        # Held records are not delivered, so the slot stays before the truncate (no loss).
        assert confirmed_lsn(db, "md_slot") <= lsn_to_int(before_truncate), (
            f"slot confirmed to {int_to_lsn(confirmed_lsn(db, 'md_slot'))} past the held truncate at"
            f" {before_truncate}")
        end = runner.current_lsn(db)
        create_topic(broker, slow)
        assert wait_for(lambda: confirmed_lsn(db, "md_slot") >= lsn_to_int(end) or not w.running(), 90,
                        interval=0.2), stderr_tail(w.stderr_text())
        assert w.terminate() == 0
    recs = consume(broker, [slow])
    parts = collections.defaultdict(list)
    for r in recs:
        ev = pb2.Event()
        ev.ParseFromString(r.value)
        parts[r.partition].append(pb2.Op.Name(ev.op))
    assert sorted(parts) == [0, 1, 2], dict(parts)
    for p, ops in parts.items():
        assert ops[0] == "OP_TRUNCATE" and ops.count("OP_TRUNCATE") == 1, (p, ops)
    assert sum(ops.count("OP_INSERT") for ops in parts.values()) == 1, dict(parts)
    drop_slots(db, "md_slot")


def test_kafka_and_redis_both_gate_the_checkpoint(pgfanout, cluster, broker, db, tmp_path):
    """With --sink kafka,redis the slot moves past a transaction only when both sinks acked it:
    Redis down holds the slot even though Kafka acked everything; when Redis is back every
    key is invalidated, and Kafka has every change."""
    from redisserver import RedisServer
    db.execute("CREATE TABLE kr_t (id int8 PRIMARY KEY, v text)")
    db.execute("INSERT INTO kr_t SELECT g, 'v' FROM generate_series(1, 200) g")
    setup_slot(db, [("public", "kr_t")], "kr", reference=False)
    cfg = tmp_path / "kr.yaml"
    cfg.write_text("redis:\n  command_timeout_ms: 2000\n  rules:\n"
                   "    - table: kr_t\n      keys: [\"kr:{id}\"]\n")
    rs = RedisServer().start()
    err = str(tmp_path / "kr.err")
    args = kafka_args(cluster, broker, "kr_slot", "kr_pub", "kr", "--config", str(cfg),
                      "--redis", rs.addr)
    args[args.index("--sink") + 1] = "kafka,redis"
    topic = topic_of("kr", "public", "kr_t")
    try:
        with runner.Worker(args, stderr_path=err) as w:
            db.execute("UPDATE kr_t SET v = 'w' WHERE id = 1")
            warm = lsn_to_int(runner.current_lsn(db))
            assert wait_for(lambda: confirmed_lsn(db, "kr_slot") >= warm or not w.running(), 30,
                            interval=0.2), stderr_tail(w.stderr_text())
            # Redis goes away (SIGSTOP: the connection hangs, the command timeout notices).
            client = rs.client()
            client.mset({f"kr:{i}": "cached" for i in range(1, 201)})
            rs.proc.send_signal(signal.SIGSTOP)
            before = confirmed_lsn(db, "kr_slot")
            db.execute("UPDATE kr_t SET v = 'x' WHERE id BETWEEN 1 AND 50")
            first_commit = lsn_to_int(runner.current_lsn(db))
            db.execute("UPDATE kr_t SET v = 'y' WHERE id BETWEEN 51 AND 100")
            # Kafka acks both transactions (1 + 50 + 50 records) while Redis cannot.
            assert wait_for(lambda: high_watermarks(broker.bootstrap, topic) >= 101, 60, interval=0.5)
            time.sleep(3)  # several status updates go by
            held = confirmed_lsn(db, "kr_slot")
            assert before <= held < first_commit, (before, held, first_commit)
            rs.proc.send_signal(signal.SIGCONT)
            end = lsn_to_int(runner.current_lsn(db))
            assert wait_for(lambda: confirmed_lsn(db, "kr_slot") >= end or not w.running(), 60,
                            interval=0.2), stderr_tail(w.stderr_text())
            left = {int(k.decode().split(":")[1]) for k in client.keys("kr:*")}
            assert left == set(range(101, 201)), sorted(set(range(101, 201)) ^ left)[:20]
            assert w.terminate() == 0, stderr_tail(w.stderr_text())
    finally:
        if rs.proc and rs.proc.poll() is None:
            rs.proc.send_signal(signal.SIGCONT)
        rs.cleanup()
        drop_slots(db, "kr_slot")


def run_in_every_sink(cluster, broker, tmp_path, name, table, endpos, rs, key):
    """Runs pgfanout on slot NAME_slot (publication NAME_pub) to endpos with --sink
    stdout,kafka,redis, topics prefixed NAME and one Redis rule keying table's rows as key,
    then on slot NAME_dbz_slot with debezium-json (prefix NAMEdbz); both must exit 0.
    Returns the first run's result (its stdout is the JSON sink's)."""
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(f"redis:\n  rules:\n    - table: {table}\n      keys: [\"{key}\"]\n")
    args = kafka_args(cluster, broker, f"{name}_slot", f"{name}_pub", name, "--endpos", endpos,
                      "--config", str(cfg), "--redis", rs.addr)
    args[args.index("--sink") + 1] = "stdout,kafka,redis"
    res = runner.run_pgfanout(args, timeout=90)
    assert not res.timed_out and res.returncode == 0, res.describe()
    dbz = kafka_args(cluster, broker, f"{name}_dbz_slot", f"{name}_pub", f"{name}dbz", "--endpos", endpos,
                     "--kafka-format", "debezium-json")
    res_dbz = runner.run_pgfanout(dbz, timeout=90)
    assert not res_dbz.timed_out and res_dbz.returncode == 0, res_dbz.describe()
    return res


def test_table_without_columns_in_every_sink(pgfanout, cluster, broker, db, pb2, tmp_path):
    """A table with no columns is legal (CREATE TABLE t ()) and its rows are empty: with
    REPLICA IDENTITY FULL, inserts and deletes of them reach stdout (JSON), Kafka (protobuf
    and debezium-json) and Redis (a rule with a constant key), and pgfanout exits 0.  The
    decoder and the protobuf encoder took NULL + 0 for the empty rows' column arrays, which a
    sanitized build aborts on (fuzz/regressions/pgoutput-zero-columns).  SQL has no UPDATE of
    a table without columns, so inserts and deletes are all there is."""
    from redisserver import RedisServer
    db.execute("CREATE TABLE zc ()")
    db.execute("ALTER TABLE zc REPLICA IDENTITY FULL")
    setup_slot(db, [("public", "zc")], "zc", reference=False)
    db.execute("SELECT pg_create_logical_replication_slot('zc_dbz_slot', 'pgoutput')")
    workload.tx(db, "INSERT INTO zc DEFAULT VALUES; INSERT INTO zc DEFAULT VALUES")
    workload.tx(db, "DELETE FROM zc")
    endpos = runner.current_lsn(db)
    rs = RedisServer().start()
    try:
        client = rs.client()
        client.set("zc:all", "cached")
        res = run_in_every_sink(cluster, broker, tmp_path, "zc", "zc", endpos, rs, "zc:all")
        # stdout: two inserts and two deletes, each with an empty row and an empty key.
        events, bad = replay.parse_lines(res.stdout)
        assert not bad, bad
        rows = [(e["op"], e.get("key"), e.get("before"), e.get("after")) for e in events
                if e.get("table") == "zc"]
        assert sorted(op for op, *_ in rows) == ["delete", "delete", "insert", "insert"], rows
        assert all(r == ("insert", {}, None, {}) for r in rows if r[0] == "insert"), rows
        assert all(r == ("delete", {}, {}, None) for r in rows if r[0] == "delete"), rows
        # Kafka, protobuf: the same four events, with no record key (no key columns).
        decoded = Decoded(consume(broker, [topic_of("zc", "public", "zc")]))
        assert not decoded.problems, "\n".join(decoded.problems)
        ops = sorted(pb2.Op.Name(r.event.op) for r in decoded.values())
        assert ops == ["OP_DELETE", "OP_DELETE", "OP_INSERT", "OP_INSERT"], ops
        assert all(len(r.event.after.columns) == 0 for r in decoded.values()
                   if r.event.HasField("after")), [r.ev for r in decoded.values()]
        # Redis: the rule's key was invalidated.
        assert client.get("zc:all") is None
        # Kafka, debezium-json, from a second slot on the same WAL.
        recs = consume(broker, [topic_of("zcdbz", "public", "zc")])
        values = [json.loads(r.value) for r in recs if r.value is not None]
        assert sorted(v["op"] for v in values) == ["c", "c", "d", "d"], values
        assert all(v["after"] == {} for v in values if v["op"] == "c"), values
        assert all(v["before"] == {} for v in values if v["op"] == "d"), values
    finally:
        rs.cleanup()
        drop_slots(db, "zc_slot", "zc_dbz_slot")


def test_origin_names_past_127_bytes_arrive_whole(pgfanout, cluster, broker, db, pb2):
    """PostgreSQL allows replication origin names of 512 bytes; pgfanout cut them to 127,
    possibly inside a character.  A 510-byte name of two-byte characters arrives whole in the
    protobuf event's source.origin (valid UTF-8, so a strict decoder takes it)."""
    name = "é" * 255  # 510 bytes
    db.execute("CREATE TABLE orn_t (id int4 PRIMARY KEY)")
    setup_slot(db, [("public", "orn_t")], "orn", reference=False)
    db.execute("SELECT pg_replication_origin_create(%s)", (name,))
    try:
        db.execute("SELECT pg_replication_origin_session_setup(%s)", (name,))
        with db.transaction():
            db.execute("SELECT pg_replication_origin_xact_setup('0/1', now())")
            db.execute("INSERT INTO orn_t VALUES (1)")
        db.execute("SELECT pg_replication_origin_session_reset()")
    finally:
        db.execute("SELECT pg_replication_origin_drop(%s)", (name,))
    endpos = runner.current_lsn(db)
    res = runner.run_pgfanout(kafka_args(cluster, broker, "orn_slot", "orn_pub", "orn", "--endpos", endpos),
                              timeout=90)
    assert not res.timed_out and res.returncode == 0, res.describe()
    decoded = Decoded(consume(broker, [topic_of("orn", "public", "orn_t")]))
    assert not decoded.problems, "\n".join(decoded.problems)
    origins = [r.event.source.origin for r in decoded.values()]
    assert origins == [name], [len(o.encode()) for o in origins]
    drop_slots(db, "orn_slot")


def test_infinite_commit_times_in_every_sink(pgfanout, cluster, broker, db, pb2, tmp_path):
    """A server passes a replication origin's timestamp on as the commit time, and
    pg_replication_origin_xact_setup takes 'infinity' and '-infinity': Begin then carries
    INT64_MAX or INT64_MIN.  Every sink takes them: JSON prints PostgreSQL's words, protobuf
    keeps the int64 extremes, debezium-json clamps, the Kafka and Redis sinks record no
    latency for them, and pgfanout exits 0.  (Adding the epoch shift overflowed, and a
    sanitized build aborted: fuzz/regressions/pgoutput-commit-time-*.)"""
    from redisserver import RedisServer
    db.execute("CREATE TABLE inf_t (id int4 PRIMARY KEY)")
    setup_slot(db, [("public", "inf_t")], "inf", reference=False)
    db.execute("SELECT pg_create_logical_replication_slot('inf_dbz_slot', 'pgoutput')")
    db.execute("SELECT pg_replication_origin_create('inf_origin')")
    try:
        db.execute("SELECT pg_replication_origin_session_setup('inf_origin')")
        for i, ts in ((1, "infinity"), (2, "-infinity")):
            with db.transaction():
                db.execute("SELECT pg_replication_origin_xact_setup('0/1', %s)", (ts,))
                db.execute("INSERT INTO inf_t VALUES (%s)", (i,))
        db.execute("SELECT pg_replication_origin_session_reset()")
    finally:
        db.execute("SELECT pg_replication_origin_drop('inf_origin')")
    endpos = runner.current_lsn(db)
    rs = RedisServer().start()
    try:
        client = rs.client()
        client.mset({"inf:1": "cached", "inf:2": "cached"})
        res = run_in_every_sink(cluster, broker, tmp_path, "inf", "inf_t", endpos, rs, "inf:{id}")
        events, bad = replay.parse_lines(res.stdout)
        assert not bad, bad
        times = {e["after"]["id"]: e["commit_time"] for e in events if e.get("table") == "inf_t"}
        assert times == {1: "infinity", 2: "-infinity"}, times
        decoded = Decoded(consume(broker, [topic_of("inf", "public", "inf_t")]))
        assert not decoded.problems, "\n".join(decoded.problems)
        us = {r.ev["key"]["id"]: r.event.source.commit_time_us for r in decoded.values()}
        assert us == {1: 2**63 - 1, 2: -2**63}, us
        assert client.get("inf:1") is None and client.get("inf:2") is None
        values = {json.loads(r.value)["after"]["id"]: json.loads(r.value)["source"]
                  for r in consume(broker, [topic_of("infdbz", "public", "inf_t")]) if r.value}
        assert values[1]["ts_us"] == 2**63 - 1 and values[1]["ts_ns"] == 2**63 - 1, values
        assert values[2]["ts_us"] == -2**63 and values[2]["ts_ns"] == -2**63, values
    finally:
        rs.cleanup()
        drop_slots(db, "inf_slot", "inf_dbz_slot")
