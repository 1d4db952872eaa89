"""pgfanout against a live PostgreSQL 15: the whole JSON stream of a varied workload, its
replay against the server's tables, the exact shape of chosen lines, --endpos, SIGTERM, and
restarting from the slot's confirmed position."""
import base64
import collections
import datetime
import os
import re
import signal
import threading
import time
import types

import pytest

import replay
import runner
from runner import wait_for
import workload
from replay import row_events
from runner import lsn_to_int

SLOT = "stream_slot"
PUB = "stream_pub"
COMMIT_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
ROW_FIELDS = {"op", "schema", "table", "lsn", "commit_lsn", "xid", "commit_time", "key",
              "before", "after", "unchanged_toast"}


# Commit timestamps, so the reference can compare each event's commit time.
PG_CONF = {"track_commit_timestamp": "on"}


def base_args(cluster, slot, pub):
    return ["--dsn", cluster.dsn(), "--slot", slot, "--publication", pub]


def start_and_stop_creating(cluster, admin, tmp, slot, pub, extra=()):
    """Starts pgfanout with --create-slot --create-publication and no --endpos, waits until
    it streams from its new slot, then SIGTERMs it.  Returns (problems, stdout text)."""
    problems = []
    out, err = os.path.join(tmp, f"{slot}.create.out"), os.path.join(tmp, f"{slot}.create.err")
    with runner.Worker(base_args(cluster, slot, pub)
                       + ["--create-slot", "--snapshot", "never", "--create-publication", *extra],
                       stdout_path=out, stderr_path=err) as w:
        def streaming():
            info = runner.slot_info(admin, slot)
            return (info is not None and info["active"]) or not w.running()
        wait_for(streaming, 30)
        info = runner.slot_info(admin, slot)
        if not w.running():
            problems.append(f"pgfanout exited early with {w.proc.returncode}")
        elif info is None or not info["active"]:
            problems.append(f"slot {slot} not created/streaming within 30 s: {info}")
        rc = w.terminate()
        if rc != 0:
            problems.append(f"SIGTERM on an idle stream: exit code {rc}, expected 0")
        stderr = w.stderr_text()
    if problems:
        problems.append("stderr:\n" + stderr[-2000:])
    with open(out, "rb") as f:
        return problems, f.read().decode("utf-8", "replace")


@pytest.fixture(scope="module")
def stream(pgfanout, cluster, admin, tmp_path_factory):
    """Creates the schema, lets pgfanout create its slot and publication, commits the
    workload, then runs pgfanout once with --endpos; returns everything the tests check."""
    tmp = str(tmp_path_factory.mktemp("stream"))
    workload.create_schema(admin)
    s = types.SimpleNamespace()
    s.create_problems, s.create_stdout = start_and_stop_creating(
        cluster, admin, tmp, SLOT, PUB, extra=["--allow-missing-replica-identity"])
    s.slot_after_create = runner.wait_slot_inactive(admin, SLOT)
    s.pub_after_create = runner.scalar(
        admin, "SELECT puballtables FROM pg_publication WHERE pubname = %s", (PUB,))
    # Without the slot nothing below means anything; make it by hand so the other tests
    # still check the stream (the creation test reports the failure).
    if s.slot_after_create is None:
        runner.scalar(admin, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')::text",
                      (SLOT,))
    if s.pub_after_create is None:
        admin.execute(f"CREATE PUBLICATION {PUB} FOR ALL TABLES")

    s.facts = workload.run_workload(admin)
    s.endpos = runner.current_lsn(admin)
    # Activity after endpos: a DDL transaction first (no rows), so that the transaction
    # with a row starts strictly after endpos; that row must not be output.
    admin.execute("CREATE TABLE endpos_marker (x int4)")
    s.before_after_endpos = runner.current_lsn(admin)
    admin.execute("INSERT INTO after_endpos VALUES (1)")

    s.out_path = os.path.join(tmp, "stream.jsonl")
    t0 = time.time()
    s.run = runner.run_pgfanout(
        # The workload's nothing_tbl (REPLICA IDENTITY NOTHING) is published on purpose.
        base_args(cluster, SLOT, PUB) + ["--create-slot", "--snapshot", "never", "--create-publication",
                                         "--allow-missing-replica-identity", "--endpos", s.endpos],
        timeout=150, stdout_path=s.out_path)
    s.seconds = time.time() - t0
    s.events, s.bad_lines = replay.parse_lines(s.run.stdout)
    s.slot_after_run = runner.wait_slot_inactive(admin, SLOT)
    return s


def test_create_slot_and_publication(stream):
    """--create-slot/--create-publication made a pgoutput slot and a FOR ALL TABLES
    publication; SIGTERM on an idle stream exits 0 and prints nothing."""
    assert not stream.create_problems, "\n".join(stream.create_problems)
    info = stream.slot_after_create
    assert info is not None, "slot was not created"
    assert info["plugin"] == "pgoutput" and info["slot_type"] == "logical", info
    assert stream.pub_after_create is True, "publication missing or not FOR ALL TABLES"
    assert stream.create_stdout == ""


def test_endpos_run_exits_cleanly(stream):
    """The --endpos run (with --create-* on existing objects) stops by itself with 0."""
    assert not stream.run.timed_out, "pgfanout did not stop at --endpos:\n" + stream.run.describe()
    assert stream.run.returncode == 0, stream.run.describe()


def test_every_line_is_a_json_object(stream):
    assert stream.events, "no output at all:\n" + stream.run.describe()
    assert not stream.bad_lines, f"lines that are not JSON objects: {stream.bad_lines[:5]}"


def test_replay_matches_every_table(stream, admin):
    """Replaying the stream in order rebuilds every workload table exactly."""
    rp = replay.Replayer(strict=True).apply_all(stream.events)
    replay.assert_tables_match(admin, rp, workload.TABLES)


def test_row_events_carry_full_rows_and_right_keys(stream, admin):
    """Every insert/update carries every column (or names it in unchanged_toast); key holds
    exactly the replica-identity columns with the row's values; deletes have no after."""
    problems = []
    columns_of = {}
    for ev in row_events(stream.events):
        where = (ev.get("schema"), ev.get("table"))
        if where not in workload.KEY_COLUMNS:
            problems.append(f"event for unexpected table {where}: {ev}")
            continue
        missing = ROW_FIELDS - set(ev)
        if missing:
            problems.append(f"missing fields {sorted(missing)}: {ev}")
            continue
        if where not in columns_of:
            columns_of[where] = {c for c, _ in replay.table_columns(admin, *where)}
        columns = columns_of[where]
        expected_key = workload.KEY_COLUMNS[where]
        if ev["op"] == "delete":
            if ev["after"] is not None or ev["unchanged_toast"] != []:
                problems.append(f"delete with after/unchanged_toast: {ev}")
            if set(ev["key"]) != expected_key:
                problems.append(f"delete key columns {sorted(ev['key'])}: {ev}")
            full = where in workload.FULL_TABLES
            if full and (ev["before"] is None or set(ev["before"]) != columns or
                         any(ev["before"][c] != v for c, v in ev["key"].items())):
                problems.append(f"FULL delete before is not the whole old row: {ev}")
            elif not full and ev["before"] is not None:
                problems.append(f"delete under a key identity must have before null: {ev}")
            continue
        after, toast = ev["after"], ev["unchanged_toast"]
        if where != ("public", "evolving") and set(after) | set(toast) != columns:
            problems.append(f"after+unchanged_toast columns {sorted(set(after) | set(toast))}"
                            f" != table columns {sorted(columns)}: {str(ev)[:300]}")
        if set(after) & set(toast):
            problems.append(f"columns both in after and unchanged_toast: {str(ev)[:300]}")
        key_cols = expected_key
        if set(ev["key"]) != key_cols:
            problems.append(f"key columns {sorted(ev['key'])}, expected {sorted(key_cols)}:"
                            f" {str(ev)[:300]}")
        elif any(ev["key"][c] != after.get(c) for c in key_cols):
            problems.append(f"key values differ from after: {str(ev)[:300]}")
        if ev["op"] == "insert" and ev["before"] is not None:
            problems.append(f"insert with before: {str(ev)[:300]}")
    assert not problems, "\n".join(problems[:20])


def test_transaction_metadata(stream):
    """lsn/commit_lsn are 'X/X' hex, commit_time is ISO-8601 UTC with microseconds and Z;
    the lines of one transaction are contiguous, share xid/commit_lsn/commit_time, have
    lsn below commit_lsn (a message's at most equal) in non-decreasing order, and transactions come in commit order."""
    problems = []
    last_commit, seen_xids, prev_xid, prev_lsn = -1, set(), None, -1
    for ev in stream.events:
        if ev.get("op") == "message" and ev.get("transactional") is False:
            if not runner.LSN_RE.match(str(ev.get("lsn"))):
                problems.append(f"bad lsn: {ev}")
            continue
        for field in ("lsn", "commit_lsn"):
            if not runner.LSN_RE.match(str(ev.get(field))):
                problems.append(f"bad {field}: {str(ev)[:300]}")
        if not COMMIT_TIME_RE.match(str(ev.get("commit_time"))):
            problems.append(f"bad commit_time: {str(ev)[:300]}")
        if not isinstance(ev.get("xid"), int) or isinstance(ev.get("xid"), bool):
            problems.append(f"bad xid: {str(ev)[:300]}")
        if problems:
            break
        lsn, commit = lsn_to_int(ev["lsn"]), lsn_to_int(ev["commit_lsn"])
        key = (ev["xid"], ev["commit_lsn"], ev["commit_time"])
        if ev["xid"] != prev_xid:
            if ev["xid"] in seen_xids:
                problems.append(f"transaction {ev['xid']} is not contiguous")
            if commit <= last_commit:
                problems.append(f"commit_lsn {ev['commit_lsn']} not after the previous one")
            seen_xids.add(ev["xid"])
            prev_xid, prev_key, prev_lsn, last_commit = ev["xid"], key, -1, commit
        elif key != prev_key:
            problems.append(f"xid {ev['xid']}: lines disagree on commit_lsn/commit_time {key}"
                            f" vs {prev_key}")
        # A message's LSN is the end of its WAL record, so it may equal the commit's.
        if not (lsn <= commit if ev["op"] == "message" else lsn < commit):
            problems.append(f"lsn {ev['lsn']} not below commit_lsn {ev['commit_lsn']}")
        if lsn < prev_lsn:
            problems.append(f"lsn {ev['lsn']} goes backwards inside xid {ev['xid']}")
        prev_lsn = lsn
        if len(problems) > 10:
            break
    assert stream.events
    assert not problems, "\n".join(problems)


def test_xid_commit_lsn_and_time_match_the_server(stream, admin):
    """For the key-changing update: xid is the transaction's xid, commit_lsn lies within the
    WAL written by that transaction, commit_time equals pg_xact_commit_timestamp()."""
    facts = stream.facts["key_change"]
    evs = [e for e in row_events(stream.events, "public", "orders", ("update",))
           if e.get("after", {}).get("id") == 1001]
    assert len(evs) == 1, evs
    ev = evs[0]
    assert ev["xid"] == facts["xid"]
    assert lsn_to_int(facts["lsn_before"]) < lsn_to_int(ev["commit_lsn"]) \
        < lsn_to_int(facts["lsn_after"]), (facts, ev["commit_lsn"])
    assert lsn_to_int(facts["lsn_before"]) <= lsn_to_int(ev["lsn"]) < lsn_to_int(ev["commit_lsn"])
    server_time = runner.scalar(admin, "SELECT pg_xact_commit_timestamp(%s::text::xid)",
                                (str(facts["xid"]),))
    got = datetime.datetime.strptime(ev["commit_time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc)
    assert got == server_time, (ev["commit_time"], server_time)


def find_one(events, op, table, pred, schema="public"):
    found = [e for e in events if e.get("op") == op and e.get("schema") == schema
             and e.get("table") == table and pred(e)]
    assert len(found) == 1, f"expected one {op} on {table} matching, got {found}"
    return found[0]


def shape(ev):
    return {k: ev.get(k) for k in ("op", "schema", "table", "key", "before", "after",
                                   "unchanged_toast")}


def test_key_change_update_shapes(stream):
    """An update that changes the key carries only the old key columns in before, under
    DEFAULT (single and composite key) and USING INDEX."""
    ev = find_one(stream.events, "update", "orders", lambda e: e["key"] == {"id": 1001})
    assert shape(ev) == {
        "op": "update", "schema": "public", "table": "orders", "key": {"id": 1001},
        "before": {"id": 1},
        "after": {"id": 1001, "status": "moved", "qty": 2, "amount": "1.5000",
                  "note": "note 1"},
        "unchanged_toast": []}
    ev = find_one(stream.events, "update", "composite_pk",
                  lambda e: e["key"] == {"tenant": 1, "id": 20})
    assert shape(ev)["before"] == {"tenant": 1, "id": 2}
    assert ev["after"] == {"tenant": 1, "id": 20, "val": "b"}
    ev = find_one(stream.events, "update", "idx_tbl", lambda e: e["after"]["code"] == "C")
    assert shape(ev) == {
        "op": "update", "schema": "public", "table": "idx_tbl",
        "key": {"code": "C", "region": 1}, "before": {"code": "B", "region": 1},
        "after": {"code": "C", "region": 1, "payload": "p3", "seq": 3},
        "unchanged_toast": []}


def test_update_without_key_change_has_no_before(stream):
    evs = [e for e in row_events(stream.events, "public", "orders", ("update",))
           if e["xid"] == stream.facts["plain_update"]]
    assert len(evs) == 5
    assert all(e["before"] is None for e in evs), evs
    ev = find_one(stream.events, "update", "idx_tbl", lambda e: e["after"]["payload"] == "p1b")
    assert ev["before"] is None and ev["key"] == {"code": "A", "region": 1}


def test_full_identity_shapes(stream):
    """REPLICA IDENTITY FULL: the key is still the primary key (none without one); update and
    delete carry the whole old row."""
    ev = find_one(stream.events, "delete", "full_pk", lambda e: e["key"].get("id") == 3)
    assert shape(ev) == {
        "op": "delete", "schema": "public", "table": "full_pk",
        "key": {"id": 3},
        "before": {"id": 3, "name": "gamma", "score": None},
        "after": None, "unchanged_toast": []}
    assert ev["xid"] == stream.facts["full_delete"]
    ev = find_one(stream.events, "update", "full_pk", lambda e: e["after"]["id"] == 1)
    assert shape(ev) == {
        "op": "update", "schema": "public", "table": "full_pk",
        "key": {"id": 1},
        "before": {"id": 1, "name": "alpha", "score": 1.5},
        "after": {"id": 1, "name": "alpha", "score": 2.5}, "unchanged_toast": []}
    ev = find_one(stream.events, "update", "full_pk", lambda e: e["after"]["id"] == 20)
    assert ev["before"] == {"id": 2, "name": "beta", "score": "NaN"}
    ev = find_one(stream.events, "update", "full_nopk", lambda e: e["after"]["a"] == "y")
    assert shape(ev) == {
        "op": "update", "schema": "public", "table": "full_nopk",
        "key": {}, "before": {"a": "y", "b": 2, "c": False},
        "after": {"a": "y", "b": 22, "c": False}, "unchanged_toast": []}
    ev = find_one(stream.events, "delete", "full_nopk", lambda e: e["before"].get("a") == "z")
    assert ev["key"] == {} and ev["before"] == {"a": "z", "b": None, "c": None} and ev["after"] is None


def test_replica_identity_nothing(stream):
    """NOTHING: inserts have key {} and no before; truncate works; duplicates survive."""
    evs = row_events(stream.events, "public", "nothing_tbl")
    assert [e["op"] for e in evs] == ["insert"] * 5
    assert all(e["key"] == {} and e["before"] is None for e in evs), evs
    assert evs[0]["after"] == {"n": 1, "label": "one"}
    assert evs[4]["after"] == {"n": None, "label": None}


def test_unchanged_toast(stream):
    """An update leaving a TOASTed column alone omits it from after and names it in
    unchanged_toast; a changed or NULL TOAST column is sent in full."""
    big = stream.facts["big"]
    ev = find_one(stream.events, "update", "toasty", lambda e: e["after"].get("small") == 10)
    assert shape(ev) == {
        "op": "update", "schema": "public", "table": "toasty", "key": {"id": 1},
        "before": None, "after": {"id": 1, "small": 10}, "unchanged_toast": ["big"]}
    ev = find_one(stream.events, "update", "toasty", lambda e: e["after"].get("small") == 11)
    assert ev["unchanged_toast"] == ["big"] and "big" not in ev["after"]
    ev = find_one(stream.events, "update", "toasty", lambda e: e["after"].get("small") == 20)
    assert ev["after"] == {"id": 2, "big": None, "small": 20} and ev["unchanged_toast"] == []
    ev = find_one(stream.events, "update", "toasty", lambda e: e["key"] == {"id": 3})
    assert ev["after"]["big"] == big["3b"] and ev["unchanged_toast"] == []
    ev = find_one(stream.events, "insert", "toasty", lambda e: e["key"] == {"id": 1})
    assert ev["after"]["big"] == big[1]
    ev = find_one(stream.events, "update", "toasty", lambda e: e["key"] == {"id": 4})
    assert ev["after"].get("small") == 40


def test_truncate_lines(stream):
    """One line per TRUNCATE with the listed tables and the CASCADE/RESTART IDENTITY flags."""
    evs = [e for e in stream.events if e.get("op") == "truncate"]
    assert len(evs) == 3, evs
    for ev in evs:
        for field in ("lsn", "commit_lsn"):
            assert runner.LSN_RE.match(str(ev.get(field))), ev
        assert COMMIT_TIME_RE.match(str(ev.get("commit_time"))), ev
        assert isinstance(ev.get("xid"), int), ev
    summary = [(sorted((t["schema"], t["table"]) for t in ev["tables"]), ev["cascade"],
                ev["restart_identity"]) for ev in evs]
    assert summary == [
        ([("public", "nothing_tbl")], False, False),
        ([("public", "child"), ("public", "parent")], True, False),
        ([("public", "seq_tbl")], False, True),
    ]
    assert all(set(t) == {"schema", "table"} for ev in evs for t in ev["tables"]), evs


def test_logical_messages(stream):
    """The transactional message appears once inside its transaction; the rolled-back one
    never; non-transactional messages appear once each, even from a rolled-back transaction."""
    msgs = [e for e in stream.events if e.get("op") == "message"]
    by_prefix = collections.defaultdict(list)
    for m in msgs:
        by_prefix[m.get("prefix")].append(m)
    assert "pgf-rolledback" not in by_prefix, by_prefix["pgf-rolledback"]
    assert len(by_prefix["pgf-tx"]) == 1, msgs
    m = by_prefix["pgf-tx"][0]
    assert m["transactional"] is True
    assert m["content_base64"] == base64.b64encode("hello tx ✓".encode()).decode()
    assert m["xid"] == stream.facts["message_tx"]
    row = find_one(stream.events, "insert", "orders", lambda e: e["key"] == {"id": 500})
    assert m["commit_lsn"] == row["commit_lsn"] and m["commit_time"] == row["commit_time"]
    assert runner.LSN_RE.match(m["lsn"])
    assert len(by_prefix["pgf-nontx"]) == 1, msgs
    m = by_prefix["pgf-nontx"][0]
    assert m["transactional"] is False
    assert base64.b64decode(m["content_base64"]) == workload.NONTX_BYTES
    assert runner.LSN_RE.match(m["lsn"])
    assert len(by_prefix["pgf-nontx-auto"]) == 1, msgs
    assert base64.b64decode(by_prefix["pgf-nontx-auto"][0]["content_base64"]) == b"auto"
    assert set(by_prefix) == {"pgf-tx", "pgf-nontx", "pgf-nontx-auto"}


def test_add_column_mid_stream(stream):
    """Rows written before ALTER TABLE ADD COLUMN have the old columns, rows after it the
    new ones, also when the ALTER happens inside the transaction."""
    evs = row_events(stream.events, "public", "evolving")
    got = [(e["op"], e["key"]["id"], sorted(e["after"])) for e in evs]
    assert got == [
        ("insert", 1, ["a", "id"]),
        ("insert", 2, ["a", "id"]),
        ("insert", 3, ["a", "b", "id"]),
        ("update", 1, ["a", "b", "id"]),
        ("insert", 4, ["a", "b", "id"]),
        ("insert", 5, ["a", "b", "c", "id"]),
        ("update", 2, ["a", "b", "c", "id"]),
    ]
    assert evs[3]["after"] == {"id": 1, "a": "ONE", "b": None}
    assert evs[5]["after"] == {"id": 5, "a": "five", "b": 55, "c": "cinq"}
    assert evs[6]["after"] == {"id": 2, "a": "two", "b": None, "c": "deux"}


def test_values_of_every_type(stream):
    """A few exact renderings (the replay test compares all of them with the server)."""
    rows = {e["key"]["id"]: e["after"] for e in
            row_events(stream.events, "public", "types_tbl", ("insert",))}
    assert sorted(rows) == list(range(1, 11))
    assert all(v is None for k, v in rows[1].items() if k != "id")
    r2 = rows[2]
    assert r2["t"] == workload.UNICODE_TEXT
    assert r2["n"] == "123456789012345678901234567890.123456789012345678901234567890"
    assert r2["i8"] == 9223372036854775807 and r2["i2"] == -32768 and r2["o"] == 4294967295
    assert r2["bo"] is True and rows[3]["bo"] is False
    assert r2["b"] == "\\x00ff10deadbeef" and rows[3]["b"] == "\\x"
    assert r2["tstz"] == "2026-11-25 01:01:16.123456+00"
    assert r2["dom"] == "42" and r2["m"] == "happy"
    assert r2["comp"] == '(7,"seven, ""quoted""")'
    assert r2["ch"] == "ab  "
    assert r2["ia"] == "{1,NULL,3}"
    assert r2["f8"] == 1.7976931348623157e308
    assert rows[3]["n"] == "NaN" and rows[3]["f4"] == "NaN" and rows[3]["f8"] == "NaN"
    assert rows[4]["f4"] == "Infinity" and rows[4]["f8"] == "-Infinity"
    assert rows[4]["n"] == "Infinity"
    assert rows[6]["f8"] == 0.1 and rows[6]["f4"] == 1.1
    assert rows[7]["f8"] == 5e-324 and rows[7]["f4"] == 16777216.0
    assert rows[9]["f8"] == 1.2345678901234567
    assert rows[3]["i8"] == -9223372036854775808


def test_schema_other_than_public(stream):
    evs = row_events(stream.events, "inv", "items")
    assert [(e["op"], e["key"]) for e in evs] == [
        ("insert", {"sku": "sku-1"}), ("insert", {"sku": "sku-2"}),
        ("update", {"sku": "sku-1"}), ("delete", {"sku": "sku-2"})]


def test_savepoint_rollback_is_not_output(stream):
    evs = row_events(stream.events, "public", "savepoints")
    assert [e["key"]["id"] for e in evs] == [1, 3]
    assert len({e["xid"] for e in evs}) == 1


def test_large_transaction(stream):
    """The 100,000-row transaction arrives whole, as one transaction, in insert order."""
    evs = [e for e in stream.events if e.get("xid") == stream.facts["bulk_tx"]]
    assert len(evs) == workload.BULK_ROWS
    assert all(e["op"] == "insert" and e["table"] == "bulk" for e in evs)
    assert [e["key"]["id"] for e in evs] == list(range(1, workload.BULK_ROWS + 1))
    assert len({e["commit_lsn"] for e in evs}) == 1


def test_nothing_after_endpos(stream, admin):
    """A transaction that started after --endpos is not output, and the slot was not
    confirmed past it (so the next run still gets it); the slot was confirmed past the last
    transaction that was output."""
    assert not row_events(stream.events, "public", "after_endpos")
    assert not [e for e in stream.events if e.get("table") == "endpos_marker"]
    info = stream.slot_after_run
    confirmed = lsn_to_int(info["confirmed_flush_lsn"])
    assert confirmed <= lsn_to_int(stream.before_after_endpos), (info, stream.before_after_endpos)
    last_commit = max(lsn_to_int(e["commit_lsn"]) for e in stream.events if e.get("commit_lsn"))
    assert confirmed > last_commit, (info, runner.int_to_lsn(last_commit))


def test_next_run_resumes_from_confirmed_position(stream, cluster, admin):
    """Running again on the same slot outputs only what the first run had not: the row
    committed after the first run's --endpos, and nothing older."""
    assert stream.run.returncode == 0 and not stream.run.timed_out, stream.run.describe()
    endpos = runner.current_lsn(admin)
    admin.execute("CREATE TABLE endpos_marker2 (x int4)")  # WAL after endpos, no rows
    run = runner.run_pgfanout(base_args(cluster, SLOT, PUB) + ["--endpos", endpos], timeout=60)
    assert not run.timed_out and run.returncode == 0, run.describe()
    events, bad = replay.parse_lines(run.stdout)
    assert not bad, bad
    mine = set(workload.TABLES) | {("public", "after_endpos")}
    events = [e for e in events if e.get("op") == "message"
              or (e.get("schema"), e.get("table")) in mine
              or any((t["schema"], t["table"]) in mine for t in e.get("tables", []))]
    assert [(e["op"], e["table"], e["after"]) for e in events] == [
        ("insert", "after_endpos", {"id": 1})], events[:5]
    runner.wait_slot_inactive(admin, SLOT)


# --- SIGTERM in mid-stream and restarting ---------------------------------------------

RS_TABLES = [("public", "rs_accounts"), ("public", "rs_events")]
RS_TXNS = 30
# Rows inserted by each workload transaction; one is large, so that SIGTERM can be sent
# while pgfanout is still writing it.
RS_BIG_TXN = 8
RS_SIZES = [60_000 if i == RS_BIG_TXN else 2000 for i in range(1, RS_TXNS + 1)]
RS_BIG_FIRST_ID = sum(RS_SIZES[:RS_BIG_TXN - 1]) + 1


def rs_workload(dsn, progress, stop):
    """Commits RS_TXNS transactions of inserts, updates and deletes, pausing between them;
    progress['committed'] counts them."""
    conn = runner.connect(dsn)
    try:
        workload.tx(conn, "INSERT INTO rs_accounts SELECT g, 0, 'new'"
                          " FROM generate_series(1, 100) g")
        lo = prev_lo = 0
        for i, size in enumerate(RS_SIZES, 1):
            if stop.is_set():
                break
            workload.tx(
                conn,
                f"INSERT INTO rs_events SELECT g, g % 100 + 1, md5(g::text)"
                f" FROM generate_series({lo + 1}, {lo + size}) g",
                f"UPDATE rs_accounts SET balance = balance + {i}, note = 'txn {i}'"
                f" WHERE id % 5 = {i % 5}",
                f"DELETE FROM rs_events WHERE id > {prev_lo} AND id <= {lo}"
                f" AND id % 40 = 0")
            prev_lo, lo = lo, lo + size
            progress["committed"] = i
            time.sleep(0.1)
    except Exception as e:  # reported by the test
        progress["error"] = repr(e)
    finally:
        conn.close()


def big_txn_started(path):
    """True once the output file's tail holds a row of the large transaction."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 65536))
            tail = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return False
    events, _ = replay.parse_lines("\n".join(tail.split("\n")[1:-1][-20:]))
    return any(e.get("table") == "rs_events" and (e.get("key") or {}).get("id", 0)
               >= RS_BIG_FIRST_ID for e in events)


def truth_transactions(conn, slot, table_prefix):
    """Reads a test_decoding slot: {xid: (number of row changes on the tables, end LSN of
    the commit record)} for transactions touching those tables."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT xid::text::bigint,"
            " count(*) FILTER (WHERE data LIKE %s),"
            " max(lsn) FILTER (WHERE data LIKE 'COMMIT%%')::text"
            " FROM pg_logical_slot_peek_changes(%s, NULL, NULL, 'include-xids', '1',"
            "  'skip-empty-xacts', '1')"
            " GROUP BY 1", (f"table public.{table_prefix}%", slot))
        return {xid: (n, lsn_to_int(end)) for xid, n, end in cur.fetchall() if n}


def changes_by_xid(events):
    counts = collections.Counter()
    for e in row_events(events):
        counts[e["xid"]] += 1
    return counts


def test_sigterm_mid_stream_then_restart(pgfanout, cluster, admin, tmp_path):
    """SIGTERM while a multi-transaction workload streams: exit 0, only whole transactions
    written, the slot confirmed no further than what was written (and up to it); a second
    run continues from there; both outputs together replay to the exact tables; a third run
    with nothing new outputs nothing."""
    admin.execute("CREATE TABLE rs_accounts (id int4 PRIMARY KEY, balance int8, note text)")
    admin.execute("CREATE TABLE rs_events (id int8 PRIMARY KEY, account int4, payload text)")
    admin.execute("CREATE TABLE nopub_marker (x int4)")
    admin.execute("CREATE PUBLICATION rs_pub FOR TABLE rs_accounts, rs_events")
    admin.execute("SELECT pg_create_logical_replication_slot('rs_slot', 'pgoutput')")
    admin.execute("SELECT pg_create_logical_replication_slot('rs_truth', 'test_decoding')")
    start_confirmed = lsn_to_int(runner.slot_info(admin, "rs_slot")["confirmed_flush_lsn"])
    args = base_args(cluster, "rs_slot", "rs_pub") + ["--status-interval", "1"]
    out1, out2, out3 = (str(tmp_path / f"run{i}.jsonl") for i in (1, 2, 3))

    progress, stop = {"committed": 0}, threading.Event()
    wl = threading.Thread(target=rs_workload, args=(cluster.dsn(), progress, stop))
    try:
        with runner.Worker(args + ["--output", out1],
                           stderr_path=str(tmp_path / "run1.err")) as w:
            wl.start()
            wait_for(lambda: big_txn_started(out1) or not w.running() or not wl.is_alive(),
                     60, interval=0.01)
            committed_at_signal = progress["committed"]
            assert w.running(), f"pgfanout exited by itself:\n{w.stderr_text()[-2000:]}"
            assert committed_at_signal < RS_TXNS, (
                "the workload finished before pgfanout wrote the large transaction; the"
                " stream was not interrupted mid-way:\n" + w.stderr_text()[-2000:])
            rc = w.terminate()
            stderr1 = w.stderr_text()
        assert rc == 0, f"exit code {rc} after SIGTERM:\n{stderr1[-2000:]}"
    except BaseException:
        stop.set()
        raise
    finally:
        wl.join(timeout=120)
    assert "error" not in progress, progress
    confirmed1 = lsn_to_int(runner.wait_slot_inactive(admin, "rs_slot")["confirmed_flush_lsn"])

    truth = truth_transactions(admin, "rs_truth", "rs_")
    assert len(truth) == RS_TXNS + 1
    events1, bad1 = replay.read_events(out1)
    assert not bad1, bad1[:3]
    got1 = changes_by_xid(events1)
    assert got1, "nothing was written before SIGTERM"
    assert set(got1) <= set(truth), set(got1) - set(truth)
    assert len(got1) < len(truth), "the first run saw every transaction: not a mid-stream stop"
    partial = {x: (n, truth[x][0]) for x, n in got1.items() if n != truth[x][0]}
    assert not partial, f"transactions written incompletely before exit (got, want): {partial}"
    lost = sorted(x for x, (n, end) in truth.items() if end <= confirmed1 and x not in got1)
    assert not lost, (f"slot confirmed to {runner.int_to_lsn(confirmed1)}, past transactions"
                      f" that were never written: {lost}")
    last_written = max(truth[x][1] for x in got1)
    assert confirmed1 >= last_written, (
        f"final feedback missing: confirmed {runner.int_to_lsn(confirmed1)} (was"
        f" {runner.int_to_lsn(start_confirmed)}), last written transaction ends at"
        f" {runner.int_to_lsn(last_written)}")

    endpos = runner.current_lsn(admin)
    admin.execute("INSERT INTO nopub_marker VALUES (1)")  # WAL past endpos, not published
    run2 = runner.run_pgfanout(args + ["--output", out2, "--endpos", endpos], timeout=90)
    assert not run2.timed_out and run2.returncode == 0, run2.describe()
    confirmed2 = lsn_to_int(runner.wait_slot_inactive(admin, "rs_slot")["confirmed_flush_lsn"])
    events2, bad2 = replay.read_events(out2)
    assert not bad2, bad2[:3]
    assert run2.stdout == "", "with --output, stdout must stay empty"
    got2 = changes_by_xid(events2)
    old = sorted(x for x in got2 if truth[x][1] <= confirmed1)
    assert not old, f"second run repeated transactions the slot had confirmed: {old}"
    partial = {x: (n, truth[x][0]) for x, n in got2.items() if n != truth[x][0]}
    assert not partial, partial
    missing = sorted(set(truth) - set(got1) - set(got2))
    assert not missing, f"transactions in neither output: {missing}"
    assert confirmed2 >= max(end for _, end in truth.values())

    rp = replay.Replayer(strict=False).apply_all(events1 + events2)
    replay.assert_tables_match(admin, rp, RS_TABLES)

    endpos = runner.current_lsn(admin)
    admin.execute("INSERT INTO nopub_marker VALUES (2)")
    run3 = runner.run_pgfanout(args + ["--output", out3, "--endpos", endpos], timeout=60)
    assert not run3.timed_out and run3.returncode == 0, run3.describe()
    events3, bad3 = replay.read_events(out3)
    assert not bad3 and not row_events(events3), events3[:5]
    runner.wait_slot_inactive(admin, "rs_slot")
    admin.execute("SELECT pg_drop_replication_slot('rs_truth')")
    admin.execute("SELECT pg_drop_replication_slot('rs_slot')")


def test_dsn_from_environment_and_tables(pgfanout, cluster, admin, tmp_path):
    """With no --dsn the PG* variables are used; --create-publication --tables publishes
    only the listed tables; SIGINT stops cleanly; --sink stdout is the default sink."""
    admin.execute("CREATE TABLE env_in (id int4 PRIMARY KEY, v text)")
    admin.execute("CREATE TABLE env_out (id int4 PRIMARY KEY, v text)")
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(cluster.port), "PGDATABASE": "postgres",
           "PGUSER": cluster.superuser}
    args = ["--slot", "env_slot", "--publication", "env_pub"]
    err = str(tmp_path / "create.err")
    with runner.Worker(args + ["--create-slot", "--snapshot", "never", "--create-publication", "--tables",
                               "env_in"], stderr_path=err, env=env) as w:
        wait_for(lambda: not w.running() or (runner.slot_info(admin, "env_slot") or {})
                 .get("active"), 30)
        assert w.running(), w.stderr_text()[-2000:]
        assert w.terminate(signal.SIGINT) == 0, "SIGINT: " + w.stderr_text()[-2000:]
    runner.wait_slot_inactive(admin, "env_slot")
    with admin.cursor() as cur:
        cur.execute("SELECT schemaname, tablename FROM pg_publication_tables"
                    " WHERE pubname = 'env_pub'")
        assert cur.fetchall() == [("public", "env_in")]
    admin.execute("INSERT INTO env_in VALUES (1, 'in')")
    admin.execute("INSERT INTO env_out VALUES (1, 'out')")
    endpos = runner.current_lsn(admin)
    admin.execute("INSERT INTO env_out VALUES (2, 'out again')")
    run = runner.run_pgfanout(args + ["--sink", "stdout", "--endpos", endpos], env=env,
                              timeout=60)
    assert not run.timed_out and run.returncode == 0, run.describe()
    events, bad = replay.parse_lines(run.stdout)
    assert not bad, bad
    assert [(e["op"], e["table"], e["after"]) for e in events] == [
        ("insert", "env_in", {"id": 1, "v": "in"})]
    runner.wait_slot_inactive(admin, "env_slot")
    admin.execute("SELECT pg_drop_replication_slot('env_slot')")


# --- --sink null ------------------------------------------------------------------------

NULL_SUMMARY_RE = re.compile(r"null sink: (\d+) events, (\d+) records, (\d+) bytes encoded in ([\d.]+) s "
                             r"\((\d+) events/s\)")


def null_summary(stderr):
    """The null sink's exit line as (events, records, bytes, seconds, rate); fails without one."""
    found = NULL_SUMMARY_RE.findall(stderr)
    assert len(found) == 1, "want exactly one null sink summary:\n" + stderr[-3000:]
    events, records, size, secs, rate = found[0]
    return int(events), int(records), int(size), float(secs), int(rate)


def test_null_sink_counts_the_workload_and_confirms_the_slot(cluster, admin):
    """--sink null with --endpos over a known workload: its summary counts every change once
    (a key-changing update as two Kafka records), it exits 0, and the slot is confirmed past
    the last transaction and not past endpos.  Combined with stdout, both see the same changes."""
    admin.execute("CREATE TABLE null_items (id int4 PRIMARY KEY, v text, n int4)")
    admin.execute("CREATE PUBLICATION null_pub FOR TABLE null_items")
    for slot in ("null_slot", "null_stdout_slot"):
        runner.scalar(admin, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')::text", (slot,))
    inserts = 0
    for t in range(20):
        admin.execute("INSERT INTO null_items SELECT g, repeat('x', g %% 50), g FROM generate_series(%s::int4, %s::int4) g",
                      (t * 50 + 1, t * 50 + 50))
        inserts += 50
    admin.execute("UPDATE null_items SET n = n + 1 WHERE id <= 100")      # 100, key kept
    admin.execute("UPDATE null_items SET id = id + 100000 WHERE id > 990")  # 10, key moved
    before_last = runner.current_lsn(admin)
    admin.execute("DELETE FROM null_items WHERE id BETWEEN 101 AND 150")  # 50
    endpos = runner.current_lsn(admin)
    admin.execute("INSERT INTO null_items VALUES (-1, 'after endpos', 0)")
    changes, moved = inserts + 100 + 10 + 50, 10

    run = runner.run_pgfanout(base_args(cluster, "null_slot", "null_pub") + ["--sink", "null", "--endpos", endpos],
                              timeout=60)
    assert not run.timed_out and run.returncode == 0, run.describe()
    assert run.stdout == "", run.stdout[:500]
    events, records, size, secs, rate = null_summary(run.stderr)
    assert (events, records) == (changes, changes + moved), run.describe()
    # Every record is at least its table name and a column, in value and key.
    assert size > records * 20 and secs > 0 and rate > 0, run.describe()
    info = runner.wait_slot_inactive(admin, "null_slot")
    confirmed = lsn_to_int(info["confirmed_flush_lsn"])
    assert lsn_to_int(before_last) < confirmed <= lsn_to_int(endpos), (info, before_last, endpos)

    # With stdout beside it: the JSON lines are the same changes the null sink counted.
    run = runner.run_pgfanout(base_args(cluster, "null_stdout_slot", "null_pub")
                              + ["--sink", "stdout,null", "--endpos", endpos], timeout=60)
    assert not run.timed_out and run.returncode == 0, run.describe()
    lines, bad = replay.parse_lines(run.stdout)
    assert not bad, bad
    rows = [e for e in lines if e.get("table") == "null_items"]
    assert len(rows) == changes, len(rows)
    assert null_summary(run.stderr)[:3] == (events, records, size), run.describe()
    info = runner.wait_slot_inactive(admin, "null_stdout_slot")
    assert lsn_to_int(info["confirmed_flush_lsn"]) == confirmed, (info, runner.int_to_lsn(confirmed))
    for slot in ("null_slot", "null_stdout_slot"):
        admin.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def test_unknown_sink_names_every_choice(cluster):
    """A misspelt sink stops at the command line (exit 2), naming it and every sink there is."""
    run = runner.run_pgfanout(base_args(cluster, "no_slot", "no_pub") + ["--sink", "kafka,nul"], timeout=30)
    assert run.returncode == 2, run.describe()
    assert "unknown sink 'nul'; allowed are stdout, kafka, redis, null" in run.stderr, run.describe()
