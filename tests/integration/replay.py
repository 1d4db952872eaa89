"""Replaying pgfanout's JSON change events into in-memory tables and comparing them with
the server's tables.  Sink-agnostic: any suite that can collect the events as dicts (stdout,
a file, Kafka, Redis) reuses parse_lines(), Replayer and assert_tables_match().

Replay rules (the contract's meaning of each event):
- insert and update set the row identified by `key` (the record key: primary key, else the
  replica-identity index); columns listed in unchanged_toast are taken from the row's
  previous state;
- an update with `before` first removes the row identified by the old key (the `before`
  values of the key columns), or, in a table without a key (key {}, REPLICA IDENTITY FULL),
  the row equal to `before`;
- delete removes the row identified by `key`, or in a table without a key the row equal to
  `before`;
- truncate empties every table in `tables`;
- message changes nothing.
Rows of a table without a key (key {}) are not identified by one: inserts append.

Values are compared as PostgreSQL text (each type's output function, as `col::text` in a
session with the walsender's settings), with the JSON value's type checked against the column's type class: bool columns
must be JSON booleans, int2/int4/int8/oid JSON integers, float4/float8 JSON numbers (or the
strings NaN/Infinity/-Infinity, compared as floats), everything else JSON strings."""
import collections
import json

import psycopg

FLOAT_SPECIALS = ("NaN", "Infinity", "-Infinity")
BOOL_OIDS = {16}
INT_OIDS = {20, 21, 23, 26}
FLOAT_OIDS = {700, 701}


class ReplayError(AssertionError):
    """The events cannot be replayed (for example a delete of a row that is not there)."""


def parse_lines(text):
    """Parses JSON lines; returns (events, bad) where bad lists (line number, line, error).

    Lines end at \\n only: JSON strings may hold raw U+2028 and other characters that
    str.splitlines() would split on."""
    events, bad = [], []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            bad.append((n, line[:200], str(e)))
            continue
        if not isinstance(obj, dict):
            bad.append((n, line[:200], "not a JSON object"))
            continue
        events.append(obj)
    return events, bad


def read_events(path):
    """Reads a JSON-lines file; returns (events, bad) like parse_lines()."""
    with open(path, "rb") as f:
        return parse_lines(f.read().decode("utf-8", "replace"))


def _hashable(value):
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float) and value == 0.0:
        return 0.0  # -0.0 and 0.0 identify the same row
    return value


def identity(key):
    """The row identity of a key dict: its items, sorted, as a hashable tuple."""
    return tuple(sorted((k, _hashable(v)) for k, v in key.items()))


class Table:
    """One replayed table: rows by identity, in insertion order."""

    def __init__(self):
        self.rows = {}
        self._anon = 0

    def find(self, key):
        """Returns the identity of the row matching key (exact identity first, then any row
        whose key columns match, missing columns counting as NULL), or None."""
        ident = identity(key)
        if ident in self.rows:
            return ident
        for other, row in self.rows.items():
            if all(_hashable(row.get(c)) == _hashable(v) for c, v in key.items()):
                return other
        return None

    def add(self, key, row):
        if key:
            self.rows[identity(key)] = row
        else:
            self._anon += 1
            self.rows[("__no_key__", self._anon)] = row


class Replayer:
    """Applies events in order.  strict=True (one complete stream) makes every anomaly an
    error; strict=False (the union of overlapping runs) tolerates re-applied changes."""

    def __init__(self, strict=True):
        self.strict = strict
        self.tables = collections.defaultdict(Table)
        self.applied = 0

    def table(self, schema, name):
        return self.tables[(schema, name)]

    def apply_all(self, events):
        for ev in events:
            self.apply(ev)
        return self

    def apply(self, ev):
        op = ev.get("op")
        if op == "insert":
            self._upsert(ev, is_insert=True)
        elif op == "update":
            self._upsert(ev, is_insert=False)
        elif op == "delete":
            self._delete(ev)
        elif op == "truncate":
            for t in ev["tables"]:
                self.tables[(t["schema"], t["table"])] = Table()
        elif op == "message":
            return
        else:
            raise ReplayError(f"unknown op in event {ev!r}")
        self.applied += 1

    def _fail(self, msg, ev):
        raise ReplayError(f"{msg}: {json.dumps(ev)[:600]}")

    def _upsert(self, ev, is_insert):
        tbl = self.table(ev["schema"], ev["table"])
        key = ev["key"]
        after = ev["after"]
        if not isinstance(after, dict):
            self._fail("insert/update without an after object", ev)
        toast = ev.get("unchanged_toast") or []
        before = ev.get("before")
        previous = None
        if is_insert:
            if key and identity(key) in tbl.rows and self.strict:
                self._fail("insert of a key that is already present", ev)
        else:
            if not key and before is None:
                self._fail("update without a key or an old row", ev)
            old_key = key or before  # no key: the whole old row (REPLICA IDENTITY FULL) names it
            if key and before is not None:
                missing = [c for c in key if c not in before]
                if missing:
                    self._fail(f"update's before lacks key columns {missing}", ev)
                old_key = {c: before[c] for c in key}
            old = tbl.find(old_key)
            if old is None:
                if self.strict or toast:
                    self._fail("update of a row that is not there", ev)
            else:
                previous = tbl.rows.pop(old)
        row = dict(after)
        for col in toast:
            if col in row:
                self._fail(f"column {col} both in after and in unchanged_toast", ev)
            if previous is None or col not in previous:
                self._fail(f"unchanged TOAST column {col} has no previous value", ev)
            row[col] = previous[col]
        if key:
            # The new identity may already hold a row in a lenient replay (a re-applied
            # insert); in a strict one an update onto an existing other key is an error.
            if identity(key) in tbl.rows and self.strict and not is_insert:
                self._fail("update onto a key that is already present", ev)
        tbl.add(key, row)

    def _delete(self, ev):
        tbl = self.table(ev["schema"], ev["table"])
        key = ev["key"] or ev.get("before")  # no key: the whole old row (FULL) names it
        if not key:
            self._fail("delete without a key or an old row", ev)
        old = tbl.find(key)
        if old is None:
            if self.strict:
                self._fail("delete of a row that is not there", ev)
            return
        del tbl.rows[old]


def table_columns(conn, schema, table):
    """Returns [(name, type_oid)] of a table's live columns in attnum order."""
    with conn.cursor() as cur:
        cur.execute("SELECT a.attname, a.atttypid::int FROM pg_attribute a"
                    " WHERE a.attrelid = format('%%I.%%I', %s::text, %s::text)::regclass"
                    " AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                    (schema, table))
        return [(r[0], r[1]) for r in cur.fetchall()]


def fetch_table_text(conn, schema, table, columns):
    """Returns the table's rows as tuples of each column's text output (None for NULL).

    The text-format result is the type's output function, exactly what pgoutput sends;
    that is `col::text` for every type but char(n), whose cast to text drops the padding."""
    if not columns:
        return []
    select = ", ".join(f'"{name}"' for name, _ in columns)
    res = conn.pgconn.exec_(f'SELECT {select} FROM "{schema}"."{table}"'.encode())
    if res.status != psycopg.pq.ExecStatus.TUPLES_OK:
        raise RuntimeError(f"reading {schema}.{table}: "
                           + res.error_message.decode("utf-8", "replace"))
    rows = []
    for i in range(res.ntuples):
        row = []
        for j in range(res.nfields):
            v = res.get_value(i, j)
            row.append(None if v is None else v.decode("utf-8"))
        rows.append(tuple(row))
    return rows


def pg_text_to_comparable(text, type_oid):
    """Makes a server text value comparable: floats become Python floats (specials stay)."""
    if text is None or type_oid not in FLOAT_OIDS or text in FLOAT_SPECIALS:
        return text
    return float(text)


def json_to_comparable(value, type_oid, where, problems):
    """Turns a JSON value into the form pg_text_to_comparable() gives for the same server
    value.  A JSON type that does not match the column's type class is appended to
    problems, and the value is still converted as well as possible so that the row
    comparison goes on."""
    if value is None:
        return None
    if type_oid in BOOL_OIDS:
        if isinstance(value, bool):
            return "t" if value else "f"
        problems.append(f"{where}: bool column holds {value!r}, not a JSON boolean")
        return {"true": "t", "false": "f"}.get(str(value).lower(), str(value))
    if type_oid in INT_OIDS:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        problems.append(f"{where}: integer column holds {value!r}, not a JSON integer")
        return str(value)
    if type_oid in FLOAT_OIDS:
        if isinstance(value, str) and value in FLOAT_SPECIALS:
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        problems.append(f"{where}: float column holds {value!r}, not a JSON number"
                        " (only NaN/Infinity/-Infinity are strings)")
        try:
            return float(value)
        except (TypeError, ValueError):
            return str(value)
    if not isinstance(value, str):
        problems.append(f"{where}: text-class column (type {type_oid}) holds {value!r},"
                        " not a JSON string")
        return json.dumps(value)
    return value


def _sort_key(row):
    return tuple((v is None, repr(v)) for v in row)


def compare_table(conn, replayed, schema, table):
    """Returns a list of problems (empty when the replayed table equals the server's)."""
    columns = table_columns(conn, schema, table)
    names = [c for c, _ in columns]
    server = collections.Counter(
        tuple(pg_text_to_comparable(v, oid) for v, (_, oid) in zip(row, columns))
        for row in fetch_table_text(conn, schema, table, columns))
    mine = collections.Counter()
    problems = []
    type_problems = []
    for row in replayed.rows.values():
        extra = set(row) - set(names)
        if extra:
            problems.append(f"{schema}.{table}: replayed row has unknown columns {sorted(extra)}")
        where = f"{schema}.{table}"
        mine[tuple(json_to_comparable(row.get(name), oid, f"{where}.{name}", type_problems)
                   for name, oid in columns)] += 1
    problems += sorted(set(type_problems))
    if mine != server:
        missing = sorted((server - mine).elements(), key=_sort_key)
        unexpected = sorted((mine - server).elements(), key=_sort_key)
        problems.append(
            f"{schema}.{table} ({names}): server has {sum(server.values())} rows, replay"
            f" {sum(mine.values())}; {len(missing)} server rows missing from the replay,"
            f" e.g. {_short(missing[:3])}; {len(unexpected)} replayed rows not on the server,"
            f" e.g. {_short(unexpected[:3])}")
    return problems


def _short(rows):
    text = repr(rows)
    return text if len(text) < 1500 else text[:1500] + "..."


def assert_tables_match(conn, replayer, tables):
    """Asserts that every (schema, table) replays to exactly the server's contents."""
    problems = []
    for schema, table in tables:
        problems += compare_table(conn, replayer.table(schema, table), schema, table)
    assert not problems, "replay differs from the server:\n" + "\n".join(problems)


def row_events(events, schema=None, table=None, ops=("insert", "update", "delete")):
    """The events of the given ops, optionally only for one table."""
    return [e for e in events if e.get("op") in ops
            and (schema is None or e.get("schema") == schema)
            and (table is None or e.get("table") == table)]
