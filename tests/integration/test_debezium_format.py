"""kafka.format: debezium-json against Debezium itself.  The workload of
tests/debezium/workload.py runs against a real PostgreSQL 15 the way tests/debezium/capture.py
ran it for Debezium 3.6.1 (tables, publication and pre-capture rows first; pgfanout creates its
slot and reads them through its initial snapshot as op "r"; then the streamed part), with one
pgfanout per captured variant (its handling modes as flags, topic prefix = the variant, as
capture.py's topic.prefix).  Every record pgfanout wrote to a real Kafka broker is compared
with the fixture's record of the same table, key, op and place within that key, field by field:
the record key, before, after (also byte for byte, so number spelling and string escapes are
Debezium's), op, the envelope's and source's field order, every source field, and the headers.

Not compared, because they differ between two runs of Debezium too (fixtures README):
ts_ms/ts_us/ts_ns, source.version, source.lsn, source.txId, source.sequence and the runId
header; and source.snapshot's first/last markers, which pgfanout does not write (every
snapshot row says "true": its snapshot runs in chunks interleaved with the stream).
pgfanout's own headers (op, table, lsn, xid) follow Debezium's and are checked to be there.
And Debezium's snapshot row of dbz_nopk is not expected: pgfanout's snapshot reads only tables
with a primary key (or a unique index over NOT NULL columns), and refuses that one by name.

Then Apache Flink's debezium-json format (tests/flink) applies pgfanout's records of the
REPLICA IDENTITY FULL table with a key, dbz_types, and the result must equal the PostgreSQL
table.  (dbz_nopk cannot be applied: its first row never came, see above, and Flink refuses
the update that retracts it; its records are compared with Debezium's all the same.)"""
import json
import os
import re
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
for d in ("harness", "debezium", "flink"):
    sys.path.insert(0, os.path.join(TESTS, d))

import flinkapply  # noqa: E402
import runner  # noqa: E402
import workload  # noqa: E402
from kafkabroker import KafkaBroker, consume_all  # noqa: E402
from test_flink_debezium import columns, compare_rows, expected_rows  # noqa: E402

FIXTURES = os.path.join(TESTS, "fixtures", "debezium")
PUBLICATION = "dbz_pub"
PG_CONF = {"max_replication_slots": "20", "max_wal_senders": "20"}

# variant -> pgfanout flags (the fixture README's connector options, as pgfanout spells them)
VARIANTS = {
    "default": [],
    "decimal-string": ["--debezium-decimal-handling-mode", "string"],
    "decimal-double": ["--debezium-decimal-handling-mode", "double"],
    "time-connect": ["--debezium-time-precision-mode", "connect"],
    "binary-hex": ["--debezium-binary-handling-mode", "hex"],
    "binary-base64": ["--debezium-binary-handling-mode", "base64"],
    "truncate": ["--debezium-truncates", "emit"],
}
ENVELOPE = ["before", "after", "source", "transaction", "op", "ts_ms", "ts_us", "ts_ns"]
SOURCE = ["version", "connector", "name", "ts_ms", "snapshot", "db", "sequence", "ts_us", "ts_ns",
          "schema", "table", "txId", "lsn", "xmin", "origin", "origin_lsn"]
SOURCE_IGNORED = {"version", "ts_ms", "ts_us", "ts_ns", "lsn", "txId", "sequence"}
SNAPSHOT_MARKERS = {"true", "first", "first_in_data_collection", "last_in_data_collection", "last"}
RUN_ID = "__debezium.context.runId"
PGFANOUT_HEADERS = ["op", "table", "lsn", "xid"]


def topic(variant, table):
    return f"{variant}.{workload.SCHEMA}.{table}"


def ordered(text):
    """JSON text -> value, objects as lists of (key, value) pairs wrapped in a dict subclass
    that remembers their order."""
    return json.loads(text, object_pairs_hook=OrderedObj)


class OrderedObj(dict):
    def __init__(self, pairs):
        super().__init__(pairs)
        self.order = [k for k, _ in pairs]


class Rec:
    """One record, from a fixture line or a consumed message: key/value as raw JSON text (or
    None), headers as [(name, text)]."""

    def __init__(self, topic_, key, value, headers):
        self.topic = topic_
        self.key = key
        self.value = value
        self.headers = headers
        self.v = ordered(value) if value is not None else None
        self.k = json.loads(key) if key is not None else None

    def kind(self):
        return "tombstone" if self.v is None else self.v["op"]

    def images_text(self):
        """The raw text from "before" to just before "source": both row images, byte exact."""
        m = re.match(r'\{"before":(.*),"source":\{', self.value, re.S)
        assert m, self.value[:200]
        return m.group(1)


def fixture_records(variant):
    out = []
    with open(os.path.join(FIXTURES, f"{variant}.jsonl"), encoding="utf-8") as f:
        for line in f:
            # key and value are embedded verbatim: cut their text out of the line
            m = re.match(r'\{"topic": "([^"]+)", "partition": \d+, "offset": \d+, "key": (.*), '
                         r'"value": (.*), "headers": (\{.*\})\}$', line.rstrip("\n"))
            assert m, line[:200]
            key = None if m.group(2) == "null" else m.group(2)
            value = None if m.group(3) == "null" else m.group(3)
            headers = list(json.loads(m.group(4)).items())
            out.append(Rec(m.group(1), key, value, headers))
    return out


def pgfanout_records(broker, variant):
    topics = [topic(variant, t) for t in workload.TABLES]
    return [Rec(r.topic, None if r.key is None else r.key.decode("utf-8"),
                None if r.value is None else r.value.decode("utf-8"),
                [(n, None if v is None else v.decode("utf-8")) for n, v in r.headers])
            for r in consume_all(broker.bootstrap, topics, timeout=60)]


def by_key(records):
    """{(topic, key text): [records in order]}: a row's history, in the order written."""
    out = {}
    for r in records:
        k = None if r.k is None else json.dumps(r.k, sort_keys=True)
        out.setdefault((r.topic, k), []).append(r)
    return out


def compare_record(where, got, want):
    """Returns the differences between pgfanout's record got and Debezium's want."""
    problems = []

    def diff(field, g, w):
        if g != w:
            problems.append(f"{where}: {field}: pgfanout {json.dumps(g, ensure_ascii=False)[:300]}"
                            f" != Debezium {json.dumps(w, ensure_ascii=False)[:300]}")

    diff("key", got.k, want.k)
    if got.k is not None and want.k is not None:
        diff("key field order", list(got.k), list(want.k))
    diff("kind", got.kind(), want.kind())
    if got.v is not None and want.v is not None:
        diff("envelope fields", got.v.order, ENVELOPE)
        for f in ("before", "after"):
            g, w = got.v[f], want.v[f]
            if isinstance(g, dict) and isinstance(w, dict):
                for c in w:
                    diff(f"{f}.{c}", g.get(c, "<missing>"), w[c])
                diff(f"{f} columns", got.v[f].order, want.v[f].order)
            else:
                diff(f, g, w)
        diff("before/after text", got.images_text(), want.images_text())
        diff("transaction", got.v["transaction"], want.v["transaction"])
        diff("op", got.v["op"], want.v["op"])
        gs, ws = got.v["source"], want.v["source"]
        diff("source fields", gs.order, SOURCE)
        for f in SOURCE:
            if f in SOURCE_IGNORED:
                continue
            g, w = gs.get(f), ws.get(f)
            if f == "snapshot" and w in SNAPSHOT_MARKERS and g == "true":
                continue  # first/last markers: a documented difference
            diff(f"source.{f}", g, w)
        for f in ("ts_ms", "ts_us", "ts_ns"):
            if not isinstance(got.v[f], int) or not isinstance(gs[f], int):
                problems.append(f"{where}: {f} is not an integer")
        if not isinstance(gs["txId"], int) or not isinstance(gs["lsn"], int):
            problems.append(f"{where}: source.txId/lsn not integers: {gs['txId']}, {gs['lsn']}")
        seq = json.loads(gs["sequence"])
        if not (isinstance(seq, list) and len(seq) == 2 and seq[1] == str(gs["lsn"])):
            problems.append(f"{where}: source.sequence {gs['sequence']!r} does not end in the lsn")
    # Debezium's headers, in its order and with its values (runId: any, but present);
    # pgfanout's own after them.
    gnames = [n for n, _ in got.headers]
    wnames = [n for n, _ in want.headers]
    diff("header names", gnames, wnames + PGFANOUT_HEADERS)
    gh, wh = dict(got.headers), dict(want.headers)
    for n in wnames:
        if n != RUN_ID:
            diff(f"header {n}", gh.get(n), wh[n])
    if not re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                        gh.get(RUN_ID) or ""):
        problems.append(f"{where}: runId header {gh.get(RUN_ID)!r} is not a UUID")
    return problems


def unsnapshotted(rec):
    """Debezium's snapshot row of the table without a key, which pgfanout does not read."""
    return rec.topic.endswith("." + workload.NOPK) and rec.v is not None and rec.v["op"] == "r"


def compare_variant(variant, got_records):
    """Every difference between pgfanout's records of a variant and Debezium's."""
    want = by_key([r for r in fixture_records(variant) if not unsnapshotted(r)])
    got = by_key(got_records)
    problems = []
    for k in sorted(set(want) | set(got), key=str):
        g, w = got.get(k, []), want.get(k, [])
        if [r.kind() for r in g] != [r.kind() for r in w]:
            problems.append(f"{variant} {k}: ops {[r.kind() for r in g]} != Debezium's "
                            f"{[r.kind() for r in w]}")
            continue
        for i, (gr, wr) in enumerate(zip(g, w)):
            problems += compare_record(f"{variant} {k[0]} key {k[1]} #{i} {wr.kind()}", gr, wr)
    run_ids = {dict(r.headers).get(RUN_ID) for r in got_records}
    if len(run_ids) != 1:
        problems.append(f"{variant}: {len(run_ids)} runIds in one run")
    return problems


@pytest.fixture(scope="module")
def broker():
    b = KafkaBroker(num_partitions=1)  # as the capture's: one partition, so order is total
    b.start()
    yield b
    b.cleanup()


def keyed(ops):
    """ops without the snapshot rows pgfanout cannot read: its snapshot needs a primary key
    or a unique index over NOT NULL columns, and refuses dbz_nopk by name (Debezium reads
    it; a documented difference)."""
    return [op for op in ops if op.table != workload.NOPK]


def expected_counts(variant, ops):
    counts = workload.expected_record_counts(ops, True, variant == "truncate")
    return {topic(variant, t): n for t, n in counts.items()}


def wait_counts(broker, workers, want, what, timeout=90):
    """Waits until each topic holds exactly the records of want; returns the records."""
    deadline = time.monotonic() + timeout
    while True:
        for name, w in workers.items():
            assert w.running(), f"pgfanout {name} exited:\n{w.stderr_text()[-3000:]}"
        recs = consume_all(broker.bootstrap, list(want), timeout=60)
        counts = {t: 0 for t in want}
        for r in recs:
            counts[r.topic] += 1
        if counts == want:
            return
        over = {t: (counts[t], n) for t, n in want.items() if counts[t] > n}
        assert not over, f"{what}: more records than the workload explains: {over}"
        assert time.monotonic() < deadline, \
            f"{what}: records missing: {({t: (counts[t], n) for t, n in want.items() if counts[t] != n})}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def captured(cluster, broker, tmp_path_factory):
    """Runs the workload with one pgfanout per variant; returns ({variant: records}, final
    tables read from PostgreSQL)."""
    tmp = tmp_path_factory.mktemp("dbzfmt")
    with runner.connect(cluster.dsn()) as conn:
        workload.create_schema(conn)
        workload.create_publication(conn, PUBLICATION)
        pre = workload.load_initial(conn)
    workers = {}
    try:
        for variant, flags in VARIANTS.items():
            slot = "pgf_" + re.sub(r"\W", "_", variant)
            args = ["--dsn", cluster.dsn(), "--slot", slot, "--publication", PUBLICATION,
                    "--create-slot", "--snapshot", "initial", "--sink", "kafka",
                    "--kafka-brokers", broker.bootstrap, "--topic-prefix", variant,
                    "--kafka-format", "debezium-json", "--status-interval", "0.5", *flags]
            workers[variant] = runner.Worker(args, stderr_path=str(tmp / f"{variant}.log"))
        want = {}
        for variant in VARIANTS:
            want.update(expected_counts(variant, keyed(pre)))
        wait_counts(broker, workers, want, "snapshot")
        with runner.connect(cluster.dsn()) as conn:
            ops = workload.run_stream(conn)
            final = {t: workload.read_table(conn, t) for t in workload.TABLES}
            # A logical message after the workload: it must reach the message topic only.
            conn.execute("SELECT pg_logical_emit_message(true, 'app', decode('68656c6c6f2001', 'hex'))")
        want = {}
        for variant in VARIANTS:
            want.update(expected_counts(variant, keyed(pre) + ops))
            want[f"{variant}.messages"] = 1
        wait_counts(broker, workers, want, "stream")
        for name, w in workers.items():
            rc = w.terminate()
            assert rc == 0, f"pgfanout {name} exit {rc}:\n{w.stderr_text()[-3000:]}"
            log = w.stderr_text()
            assert "AddressSanitizer" not in log and "runtime error" not in log, log[-3000:]
    finally:
        for w in workers.values():
            w.kill()
    messages = {v: consume_all(broker.bootstrap, [f"{v}.messages"], timeout=60) for v in VARIANTS}
    return {v: pgfanout_records(broker, v) for v in VARIANTS}, final, messages


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_records_equal_debeziums(captured, variant):
    """pgfanout's records of the variant are Debezium's, field by field (see the module
    docstring for what differs between any two runs and is left out)."""
    records, _, _ = captured
    problems = compare_variant(variant, records[variant])
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:40])


def test_the_comparison_can_fail(captured):
    """One wrong value, one missing header, one swapped op: each is reported."""
    records, _, _ = captured
    good = records["default"]

    def changed(edit):
        out = []
        done = False
        for r in good:
            r2 = Rec(r.topic, r.key, r.value, list(r.headers))
            if not done and r.v is not None and edit(r2):
                done = True
                r2 = Rec(r2.topic, r2.key, r2.value, r2.headers)
            out.append(r2)
        assert done
        return out

    def wrong_value(r):
        if r.v["op"] == "c" and r.topic.endswith(workload.TYPES) and r.v["after"]["id"] == 3:
            r.value = r.value.replace('"c_time3":86399999', '"c_time3":86399998')
            return True
        return False

    def lost_header(r):
        if any(n == "__debezium.oldkey" for n, _ in r.headers):
            r.headers = [(n, v) for n, v in r.headers if n != "__debezium.oldkey"]
            return True
        return False

    def spelling(r):
        if r.v["op"] == "r" and r.topic.endswith(workload.TYPES) and r.v["after"]["id"] == 1:
            r.value = r.value.replace('"c_double":3.141592653589793', '"c_double":3.1415926535897930')
            return True
        return False

    for edit, needle in ((wrong_value, "c_time3"), (lost_header, "header names"),
                         (spelling, "before/after text")):
        problems = compare_variant("default", changed(edit))
        assert any(needle in p for p in problems), (needle, problems)


def test_flink_applies_pgfanouts_records(captured):
    """Flink's own debezium-json format applies pgfanout's records of dbz_types (REPLICA
    IDENTITY FULL, every type; every variant) and ends with exactly the PostgreSQL table."""
    records, final, _ = captured
    jobs = []
    for variant in VARIANTS:
        options = workload.VARIANTS[variant]
        for table in (workload.TYPES,):
            values = [r.value for r in records[variant] if r.topic == topic(variant, table)]
            jobs.append(flinkapply.job(f"{variant}/{table}", columns(table, options),
                                       workload.KEYS[table], values=values))
    results = flinkapply.run_jobs(jobs)
    problems = []
    for variant in VARIANTS:
        options = workload.VARIANTS[variant]
        for table in (workload.TYPES,):
            res = results[f"{variant}/{table}"]
            if res.error is not None:
                problems.append(f"{variant}/{table}: Flink: {res.error}")
                continue
            problems += [f"{variant}/{table}: {p}" for p in
                         compare_rows(columns(table, options), res.rows,
                                      expected_rows(table, final[table], options))]
            if res.changes["-U"] == 0 or res.changes["-D"] == 0:
                problems.append(f"{variant}/{table}: no updates or deletes applied: {res.changes}")
    assert not problems, "\n".join(problems[:40])


def test_messages_as_debeziums_message_events(captured):
    """pg_logical_emit_message goes to the message topic (never a table topic: the table
    topics held exactly the workload's records above) as Debezium documents its message
    events: op "m", key {"prefix"}, message {prefix, content in base64 (hex under hex)}."""
    _, _, messages = captured
    for variant, recs in messages.items():
        assert len(recs) == 1, (variant, recs)
        r = recs[0]
        assert json.loads(r.key) == {"prefix": "app"}
        v = ordered(r.value.decode("utf-8"))
        assert v.order == ["op", "ts_ms", "ts_us", "ts_ns", "source", "message"], v.order
        assert v["op"] == "m"
        assert v["source"].order == SOURCE and v["source"]["name"] == variant
        assert v["source"]["schema"] == "" and v["source"]["table"] == ""
        want = "68656c6c6f2001" if variant == "binary-hex" else "aGVsbG8gAQ=="
        assert v["message"] == {"prefix": "app", "content": want}, v["message"]
        names = [n for n, _ in r.headers]
        assert names[:4] == ["__debezium.context.connectorLogicalName", "__debezium.context.taskId",
                             "__debezium.context.connectorName", RUN_ID], names
