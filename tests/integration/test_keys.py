"""Record keys (cdc/keys.c): a Kafka record's key is the row's primary key, also under
REPLICA IDENTITY FULL, so one row's changes share a partition and log compaction keeps one
record per row.  Against a real PostgreSQL 15 and a real Kafka broker:

- under FULL, 100k updates spread over 1k rows: every change of a row sits in one partition,
  in commit order;
- a compacted topic, with compaction forced, ends with exactly one record per live row (its
  last version) and none for a deleted row; the rows read by the initial snapshot are keyed
  the same way;
- a key change (UPDATE ... SET id = ...) is a delete and tombstone for the old key and an
  insert for the new one, as Debezium does;
- kafka.key_columns keys a table without a primary key; a column it lacks stops pgfanout
  with a clear error, and a malformed value is refused before anything connects;
- a primary key added while pgfanout runs keys the changes after it: the catalog is read
  again when pgoutput describes the table anew."""
import collections
import random
import time

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

import runner
from kafka_replay import Decoded
from kafkabroker import KafkaBroker, consume_all
from runner import wait_for

# The log cleaner looks for work every half second instead of every 15 s.
BROKER_CONF = {"log.cleaner.backoff.ms": "500", "log.cleaner.dedupe.buffer.size": "4194304",
               "log.segment.delete.delay.ms": "0"}


@pytest.fixture(scope="module")
def broker():
    b = KafkaBroker(extra_conf=BROKER_CONF)
    b.start()
    yield b
    b.cleanup()


def kafka_args(cluster, broker, name, *extra):
    return ["--dsn", cluster.dsn(), "--slot", f"{name}_slot", "--publication", f"{name}_pub",
            "--sink", "kafka", "--kafka-brokers", broker.bootstrap, "--topic-prefix", name,
            "--status-interval", "0.5", *extra]


def make_table(admin, name, ddl, *more):
    """A table, its publication and a pgoutput slot, all named after name."""
    admin.execute(ddl)
    for sql in more:
        admin.execute(sql)
    admin.execute(f"CREATE PUBLICATION {name}_pub FOR TABLE {name}")
    admin.execute(f"SELECT pg_create_logical_replication_slot('{name}_slot', 'pgoutput')")


def records_of(broker, topic, timeout=120):
    return Decoded(consume_all(broker.bootstrap, [topic], timeout=timeout))


def test_full_identity_one_partition_per_row_in_commit_order(pgfanout, cluster, admin, broker):
    """Under REPLICA IDENTITY FULL every version of a row has the same key (its primary key),
    so 100k updates of 1k rows land, per row, in one partition, in commit order: each row's
    counter n rises by one from record to record."""
    name = "kfull"
    make_table(admin, name, f"CREATE TABLE {name} (id int4 PRIMARY KEY, n int8 NOT NULL, pad text)",
          f"ALTER TABLE {name} REPLICA IDENTITY FULL")
    admin.execute(f"INSERT INTO {name} SELECT g, 0, 'x' FROM generate_series(1, 1000) g")
    rng = random.Random(1125)
    print(f"\nseed 1125: 1000 transactions of 100 updates over 1000 rows")
    with runner.connect(cluster.dsn(), autocommit=False) as conn:
        for t in range(1000):
            ids = rng.sample(range(1, 1001), 100)
            with conn.cursor() as cur:
                cur.execute(f"UPDATE {name} SET n = n + 1, pad = %s WHERE id = ANY(%s)",
                            (f"t{t}", ids))
            conn.commit()
    end = runner.current_lsn(admin)
    run = runner.run_pgfanout(kafka_args(cluster, broker, name, "--endpos", end), timeout=600)
    assert run.returncode == 0, run.describe()
    dec = records_of(broker, f"{name}.public.{name}", timeout=300)
    assert not dec.problems, dec.problems[:5]
    parts = collections.defaultdict(set)
    last_n = {}
    problems = []
    updates = 0
    for r in dec.records:  # sorted by partition, then offset
        if r.event is None:
            continue
        row = r.ev["after"] or r.ev["before"]
        row_id = row["id"]
        if set(r.ev["key"]) != {"id"} or r.ev["key"]["id"] != row_id:
            problems.append(f"record key {r.ev['key']} for row {row_id}")
        if r.ev["op"] not in ("insert", "update"):
            problems.append(f"{r.ev['op']} of row {row_id}: only updates were made")
            continue
        parts[row_id].add(r.rec.partition)
        n = row["n"]
        if r.ev["op"] == "update":
            updates += 1
            if last_n.get(row_id, 0) + 1 != n and len(problems) < 20:
                problems.append(f"row {row_id}: n {n} after {last_n.get(row_id)} "
                                f"(partition {r.rec.partition} offset {r.rec.offset})")
        last_n[row_id] = n
    split = {k: v for k, v in parts.items() if len(v) > 1}
    used = len({p for v in parts.values() for p in v})
    print(f"{updates} updates of {len(parts)} rows over {used} partitions; "
          f"rows in several partitions: {len(split)}; out of order: {len(problems)}")
    assert used > 1, "one partition only: the check would prove nothing"
    assert not split, f"rows in several partitions: {list(split.items())[:5]}"
    assert not problems, "\n".join(problems[:20])
    assert updates == 100_000
    final = dict(admin.execute(f"SELECT id, n FROM {name}").fetchall())
    assert last_n == final


def test_compaction_keeps_one_record_per_live_row(pgfanout, cluster, admin, broker):
    """The initial snapshot's rows, then updates, deletes and re-inserts, into a compacted
    topic; with compaction forced, the topic ends with exactly the live rows, each once, at its
    last version, and nothing of a deleted row (its tombstone matched every version)."""
    name = "kcomp"
    admin.execute(f"CREATE TABLE {name} (id int4 PRIMARY KEY, v int4 NOT NULL, pad text)")
    admin.execute(f"ALTER TABLE {name} REPLICA IDENTITY FULL")
    admin.execute(f"INSERT INTO {name} SELECT g, 0, repeat('p', 200) FROM generate_series(1, 300) g")
    admin.execute(f"CREATE PUBLICATION {name}_pub FOR TABLE {name}")
    topic = f"{name}.public.{name}"
    client = AdminClient({"bootstrap.servers": broker.bootstrap})  # kept: its futures need it
    # One partition, so the change each pass adds rolls the one segment the cleaner must see.
    fut = client.create_topics([NewTopic(
        topic, 1, 1, config={"cleanup.policy": "compact", "segment.ms": "200",
                             "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "0",
                             "min.compaction.lag.ms": "0"})])
    fut[topic].result(30)
    args = kafka_args(cluster, broker, name, "--create-slot", "--snapshot", "initial")
    with runner.Worker(args) as w:
        wait_for(lambda: runner.slot_info(admin, f"{name}_slot"), 30)
        for round_ in range(1, 6):
            admin.execute(f"UPDATE {name} SET v = %s WHERE id %% 3 <> 0", (round_,))
        admin.execute(f"DELETE FROM {name} WHERE id % 10 = 0")           # 30 rows gone
        admin.execute(f"DELETE FROM {name} WHERE id BETWEEN 1 AND 5")     # 5 rows gone ...
        admin.execute(f"INSERT INTO {name} VALUES (1, 77, 'back')")       # ... one comes back
        live = dict(admin.execute(f"SELECT id, v FROM {name}").fetchall())
        deleted = set(range(1, 301)) - set(live)

        def compacted():
            # Each pass adds a change in a new segment, so the cleaner always has work: a
            # first pass merges versions, a later one drops tombstones past their retention.
            admin.execute(f"UPDATE {name} SET v = v WHERE id = 6")
            time.sleep(0.4)
            dec = records_of(broker, topic, timeout=60)
            ids = collections.Counter()
            latest, tombstones = {}, 0
            for r in dec.records:
                if r.event is None:
                    tombstones += 1
                    continue
                row = r.ev["after"] or {}
                ids[row.get("id")] += 1
                latest[row.get("id")] = row.get("v")
            compacted.state = (len(dec.records), tombstones, ids, latest)
            # Kafka never cleans the active segment: row 6, whose updates roll it, may have its
            # newest record there besides the cleaned one.
            return (tombstones == 0 and set(ids) == set(live) and ids[6] <= 2 and
                    all(n == 1 for i, n in ids.items() if i != 6))

        ok = wait_for(compacted, 180, interval=0.5)
        total, tombstones, ids, latest = compacted.state
        print(f"\ncompacted topic: {total} records for {len(live)} live rows, {tombstones} "
              f"tombstones, {len(deleted)} deleted rows")
        assert ok, (f"{total} records, {tombstones} tombstones, rows seen more than once: "
                    f"{[i for i, n in ids.items() if n > 1 and i != 6][:10]}, deleted rows present: "
                    f"{sorted(set(ids) & deleted)[:10]}, live rows missing: "
                    f"{sorted(set(live) - set(ids))[:10]}")
        assert latest == live
        assert w.terminate() == 0


def test_key_change_is_delete_tombstone_insert(pgfanout, cluster, admin, broker, pb2):
    """UPDATE ... SET id = ... under REPLICA IDENTITY DEFAULT and FULL: the old key gets a
    delete (with the old row) and a tombstone, the new key an insert with the new row."""
    for ident in ("default", "full"):
        name = f"kchg_{ident}"
        make_table(admin, name, f"CREATE TABLE {name} (id int4 PRIMARY KEY, v text)",
              f"ALTER TABLE {name} REPLICA IDENTITY {ident.upper()}")
        admin.execute(f"INSERT INTO {name} VALUES (1, 'a')")
        admin.execute(f"UPDATE {name} SET id = 2 WHERE id = 1")
        admin.execute(f"UPDATE {name} SET v = 'b' WHERE id = 2")
        end = runner.current_lsn(admin)
        run = runner.run_pgfanout(kafka_args(cluster, broker, name, "--endpos", end), timeout=120)
        assert run.returncode == 0, run.describe()
        dec = records_of(broker, f"{name}.public.{name}")
        assert not dec.problems, dec.problems
        got = []
        for r in dec.records:  # by partition and offset: one key's records keep their order
            keyed = {c.name: c.value.int_value for c in r.key.columns}
            if r.event is None:
                got.append(("tombstone", keyed))
            else:
                got.append((r.ev["op"], keyed, r.ev["before"], r.ev["after"]))
        old = [g for g in got if g[1] == {"id": 1}]
        new = [g for g in got if g[1] == {"id": 2}]
        want_old_before = {"id": 1} if ident == "default" else {"id": 1, "v": "a"}
        assert old == [("insert", {"id": 1}, None, {"id": 1, "v": "a"}),
                       ("delete", {"id": 1}, want_old_before, None),
                       ("tombstone", {"id": 1})], (ident, old)
        assert new == [("insert", {"id": 2}, None, {"id": 2, "v": "a"}),
                       ("update", {"id": 2}, {"id": 2, "v": "a"} if ident == "full" else None,
                        {"id": 2, "v": "b"})], (ident, new)


def test_key_columns_setting(pgfanout, cluster, admin, broker, tmp_path):
    """kafka.key_columns keys a table without a primary key by the columns it names, in its
    order; a column the table lacks stops pgfanout (exit 1) before anything is delivered, and
    a malformed value is refused at startup (exit 2) naming the entry and the form."""
    name = "kcols"
    make_table(admin, name, f"CREATE TABLE {name} (a int4, b text, c int4)",
          f"ALTER TABLE {name} REPLICA IDENTITY FULL")
    admin.execute(f"INSERT INTO {name} VALUES (1, 'x', 10), (2, 'y', 20)")
    admin.execute(f"UPDATE {name} SET b = 'z' WHERE a = 1")
    end = runner.current_lsn(admin)

    bad = runner.run_pgfanout(kafka_args(cluster, broker, name, "--endpos", end, "--key-columns",
                                         f"public.{name}:c,nope"), timeout=60)
    assert bad.returncode == 1, bad.describe()
    assert '"nope"' in bad.stderr and f"public.{name}" in bad.stderr, bad.stderr
    slot = runner.slot_info(admin, f"{name}_slot")
    assert runner.lsn_to_int(slot["confirmed_flush_lsn"]) < runner.lsn_to_int(end), \
        "the slot moved past changes that were never delivered"

    malformed = runner.run_pgfanout(kafka_args(cluster, broker, name, "--key-columns", name),
                                    timeout=30)
    assert malformed.returncode == 2, malformed.describe()
    assert "kafka.key_columns" in malformed.stderr and "schema.table:column" in malformed.stderr

    no_key = runner.run_pgfanout(kafka_args(cluster, broker, name, "--endpos", end), timeout=60)
    assert no_key.returncode == 0, no_key.describe()
    assert "has no primary key" in no_key.stderr and "kafka.key_columns" in no_key.stderr
    dec = records_of(broker, f"{name}.public.{name}")
    assert dec.records and all(r.rec.key is None for r in dec.records)

    # Same slot, from the start again, now keyed by the setting.
    admin.execute(f"SELECT pg_drop_replication_slot('{name}_slot')")
    admin.execute(f"SELECT pg_create_logical_replication_slot('{name}_slot', 'pgoutput')")
    admin.execute(f"INSERT INTO {name} VALUES (3, 'w', 30)")
    end = runner.current_lsn(admin)
    ok = runner.run_pgfanout(kafka_args(cluster, broker, name, "--endpos", end, "--topic-prefix",
                                        "kcols2", "--key-columns", f"public.{name}:c,a"),
                             timeout=60)
    assert ok.returncode == 0, ok.describe()
    dec = records_of(broker, f"kcols2.public.{name}")
    keys = [[(c.name, c.value.int_value) for c in r.key.columns] for r in dec.records]
    assert keys == [[("c", 30), ("a", 3)]], keys


def test_primary_key_added_while_running(pgfanout, cluster, admin, broker):
    """A table without a key gets a primary key while pgfanout streams: changes before the
    ALTER TABLE have no record key, changes after it are keyed by the new primary key (the
    catalog is read again when pgoutput describes the table anew)."""
    name = "kalter"
    make_table(admin, name, f"CREATE TABLE {name} (id int4 NOT NULL, v text)",
          f"ALTER TABLE {name} REPLICA IDENTITY FULL")
    topic = f"{name}.public.{name}"
    with runner.Worker(kafka_args(cluster, broker, name)) as w:
        admin.execute(f"INSERT INTO {name} VALUES (1, 'before')")
        assert wait_for(lambda: len(consume_all(broker.bootstrap, [topic], timeout=30)) >= 1, 60)
        admin.execute(f"ALTER TABLE {name} ADD PRIMARY KEY (id)")
        admin.execute(f"INSERT INTO {name} VALUES (2, 'after')")
        assert wait_for(lambda: len(consume_all(broker.bootstrap, [topic], timeout=30)) >= 2, 60)
        assert w.terminate() == 0
    dec = records_of(broker, topic)
    got = [(r.ev["after"]["id"], None if r.key is None else [c.name for c in r.key.columns])
           for r in dec.records]
    assert sorted(got) == [(1, None), (2, ["id"])], got
