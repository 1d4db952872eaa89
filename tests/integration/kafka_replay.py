"""Reading pgfanout's Kafka records back: decoding the pgfanout.v1 protobuf values and keys,
turning them into the same event dicts the JSON stream has (so replay.Replayer and
replay.assert_tables_match() replay and compare them unchanged), de-duplicating and ordering
them by (Source.commit_lsn, Source.txn_index), and comparing them with a reference
`test_decoding` slot.

Typed values go back to PostgreSQL's text output (DateStyle ISO, TimeZone UTC, bytea hex), the
form the server's `col::text` has; bool, integers and floats stay Python bool/int/float as in the
JSON stream (NaN and +-Infinity as the strings "NaN", "Infinity", "-Infinity").  Every value's
`kind` is checked against its column's type (an int4 column must carry int_value, a date column
date_days or, for infinity and BC dates only, pg_text, ...); mismatches are collected as
problems rather than raised, so that one bad value does not hide the rest."""
import collections
import os
import re
import sys
import uuid

import runner

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PYPROTO = os.path.abspath(os.path.join(HERE, "..", "..", "build", "pyproto"))

_pb2 = None


def event_pb2():
    """The generated pgfanout.v1 classes, from PGFANOUT_PYPROTO (the build's pyproto dir)."""
    global _pb2
    if _pb2 is None:
        path = os.path.abspath(os.environ.get("PGFANOUT_PYPROTO", DEFAULT_PYPROTO))
        if not os.path.isfile(os.path.join(path, "pgfanout", "v1", "event_pb2.py")):
            raise RuntimeError(f"no generated pgfanout/v1/event_pb2.py under {path}"
                               " (build the pyproto target, or set PGFANOUT_PYPROTO)")
        if path not in sys.path:
            sys.path.insert(0, path)
        from pgfanout.v1 import event_pb2 as mod  # noqa: E402
        _pb2 = mod
    return _pb2


OP_NAMES = {1: "insert", 2: "update", 3: "delete", 4: "truncate", 5: "message", 6: "read"}

# Type OIDs and the Value kinds their columns may carry (besides is_null/unchanged_toast).
OID_BOOL, OID_INT2, OID_INT4, OID_INT8, OID_OID = 16, 21, 23, 20, 26
OID_FLOAT4, OID_FLOAT8, OID_NUMERIC = 700, 701, 1700
OID_TEXT, OID_VARCHAR, OID_BPCHAR, OID_NAME, OID_JSON, OID_JSONB = 25, 1043, 1042, 19, 114, 3802
OID_BYTEA, OID_UUID, OID_DATE, OID_TIME, OID_TIMESTAMP, OID_TIMESTAMPTZ = (
    17, 2950, 1082, 1083, 1114, 1184)

EXPECTED_KIND = {
    OID_BOOL: {"bool_value"},
    OID_INT2: {"int_value"}, OID_INT4: {"int_value"}, OID_INT8: {"int_value"},
    OID_OID: {"int_value"},
    OID_FLOAT4: {"double_value"}, OID_FLOAT8: {"double_value"},
    OID_NUMERIC: {"numeric"},
    OID_TEXT: {"text"}, OID_VARCHAR: {"text"}, OID_BPCHAR: {"text"}, OID_NAME: {"text"},
    OID_JSON: {"text"}, OID_JSONB: {"text"},
    OID_BYTEA: {"bytes_value"},
    OID_UUID: {"uuid"},
    # infinity / BC values do not fit the integer forms and come as pg_text
    OID_DATE: {"date_days", "pg_text"},
    OID_TIME: {"time_us"},
    OID_TIMESTAMP: {"timestamp_us", "pg_text"},
    OID_TIMESTAMPTZ: {"timestamptz_us", "pg_text"},
}
# The only texts a date/time column may carry as pg_text.
SPECIAL_DATETIME_RE = re.compile(r"^(-?infinity|.* BC)$")

UNCHANGED = object()  # an unchanged-TOAST value


def beyond_int64_us(type_oid, text):
    """True for a timestamp after 294247-01-10 04:00:54.775807 UTC, the last instant int64
    microseconds since 1970 can hold: event.proto sends those as pg_text."""
    if type_oid not in (OID_TIMESTAMP, OID_TIMESTAMPTZ):
        return False
    m = re.match(r"^(\d+)-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d+))?", text)
    if not m:
        return False
    y, mo, d, h, mi, sec = (int(x) for x in m.groups()[:6])
    frac = int((m.group(7) or "0").ljust(6, "0"))
    return (y, mo, d, h, mi, sec, frac) > (294247, 1, 10, 4, 0, 54, 775807)


def civil_from_days(days):
    """(year, month, day) of a day count since 1970-01-01, proleptic Gregorian
    (Howard Hinnant's civil_from_days)."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (m <= 2), m, d


def date_text(days):
    y, m, d = civil_from_days(days)
    if y < 1:
        raise ValueError(f"date_days {days} is year {y}: BC dates must come as pg_text")
    return f"{y:04d}-{m:02d}-{d:02d}"


def time_text(us):
    """PostgreSQL's time output: HH:MM:SS with the fraction's trailing zeros dropped."""
    if not 0 <= us <= 86400 * 10**6:
        raise ValueError(f"time_us {us} outside 00:00:00..24:00:00")
    secs, frac = divmod(us, 10**6)
    h, rest = divmod(secs, 3600)
    mi, s = divmod(rest, 60)
    text = f"{h:02d}:{mi:02d}:{s:02d}"
    if frac:
        text += "." + f"{frac:06d}".rstrip("0")
    return text


def timestamp_text(us):
    days, rest = divmod(us, 86400 * 10**6)
    return f"{date_text(days)} {time_text(rest)}"


def value_to_py(value, type_oid, where, problems):
    """One pgfanout.v1.Value as the JSON stream would hold it; UNCHANGED for unchanged TOAST.
    A kind that does not fit type_oid is appended to problems (the value is still turned
    into text as well as possible)."""
    kind = value.WhichOneof("kind")
    if kind is None:
        problems.append(f"{where}: Value with no kind set")
        return None
    if kind == "is_null":
        if not value.is_null:
            problems.append(f"{where}: is_null set to false")
        return None
    if kind == "unchanged_toast":
        if not value.unchanged_toast:
            problems.append(f"{where}: unchanged_toast set to false")
        return UNCHANGED
    allowed = EXPECTED_KIND.get(type_oid, {"pg_text"})
    if kind not in allowed:
        problems.append(f"{where}: type {type_oid} carried as {kind}, expected"
                        f" {' or '.join(sorted(allowed))}")
    try:
        if kind == "bool_value":
            return bool(value.bool_value)
        if kind == "int_value":
            return int(value.int_value)
        if kind == "double_value":
            d = value.double_value
            if d != d:
                return "NaN"
            if d in (float("inf"), float("-inf")):
                return "Infinity" if d > 0 else "-Infinity"
            return d
        if kind in ("numeric", "text"):
            return getattr(value, kind)
        if kind == "pg_text":
            if type_oid in (OID_DATE, OID_TIMESTAMP, OID_TIMESTAMPTZ) and \
                    not SPECIAL_DATETIME_RE.match(value.pg_text) and \
                    not beyond_int64_us(type_oid, value.pg_text):
                problems.append(f"{where}: ordinary date/time {value.pg_text!r} sent as pg_text")
            return value.pg_text
        if kind == "bytes_value":
            return "\\x" + value.bytes_value.hex()
        if kind == "uuid":
            if len(value.uuid) != 16:
                problems.append(f"{where}: uuid of {len(value.uuid)} bytes")
                return value.uuid.hex()
            return str(uuid.UUID(bytes=bytes(value.uuid)))
        if kind == "date_days":
            return date_text(value.date_days)
        if kind == "time_us":
            return time_text(value.time_us)
        if kind == "timestamp_us":
            return timestamp_text(value.timestamp_us)
        if kind == "timestamptz_us":
            return timestamp_text(value.timestamptz_us) + "+00"
    except ValueError as e:
        problems.append(f"{where}: {e}")
        return repr(value)
    problems.append(f"{where}: unknown Value kind {kind}")
    return None


def row_to_dict(row, where, problems, toast=None):
    """A Row as {column: value}; unchanged-TOAST columns are left out and, when toast is a
    list, named in it (elsewhere they are a problem)."""
    out = {}
    for col in row.columns:
        if col.name in out:
            problems.append(f"{where}: column {col.name} twice")
        v = value_to_py(col.value, col.type_oid, f"{where}.{col.name}", problems)
        if v is UNCHANGED:
            if toast is None:
                problems.append(f"{where}.{col.name}: unchanged_toast outside an after image")
            else:
                toast.append(col.name)
            continue
        out[col.name] = v
    return out


def column_types(row):
    return {c.name: c.type_oid for c in row.columns}


def event_to_dict(ev, problems):
    """A pgfanout.v1.Event as the JSON stream's event dict (see replay.py), plus the
    protobuf-only fields txn_index, commit_time_us and relation_oid; lsn/commit_lsn as text."""
    src = ev.source
    op = OP_NAMES.get(ev.op)
    if op is None:
        problems.append(f"event with op {ev.op}")
        op = f"op{ev.op}"
    where = f"{src.schema}.{src.table}@{runner.int_to_lsn(src.commit_lsn)}#{src.txn_index}"
    d = {"op": op, "schema": src.schema, "table": src.table, "database": src.database,
         "relation_oid": src.relation_oid, "lsn": runner.int_to_lsn(src.lsn),
         "commit_lsn": runner.int_to_lsn(src.commit_lsn) if src.commit_lsn else None,
         "xid": src.xid, "commit_time_us": src.commit_time_us, "txn_index": src.txn_index,
         "origin": src.origin}
    if op in ("insert", "update", "delete", "read"):
        toast = []
        d["key"] = row_to_dict(ev.key, where + ".key", problems)
        d["before"] = row_to_dict(ev.before, where + ".before", problems) \
            if ev.HasField("before") else None
        d["after"] = row_to_dict(ev.after, where + ".after", problems, toast) \
            if ev.HasField("after") else None
        d["unchanged_toast"] = toast
        d["types"] = {**column_types(ev.before), **column_types(ev.after),
                      **column_types(ev.key)}
        if ev.HasField("truncate") or ev.HasField("message"):
            problems.append(f"{where}: row event with truncate/message set")
    elif op == "truncate":
        d["tables"] = [{"schema": t.schema, "table": t.table, "relation_oid": t.relation_oid}
                       for t in ev.truncate.tables]
        d["cascade"] = ev.truncate.cascade
        d["restart_identity"] = ev.truncate.restart_identity
    elif op == "message":
        d["prefix"] = ev.message.prefix
        d["transactional"] = ev.message.transactional
        d["content"] = bytes(ev.message.content)
    return d


class KRecord:
    """One consumed record with its decoded value (None for a tombstone) and key."""
    __slots__ = ("rec", "event", "ev", "key", "headers")

    def __init__(self, rec, event, ev, key, headers):
        self.rec = rec
        self.event = event  # the pgfanout.v1.Event, or None (tombstone)
        self.ev = ev        # its dict form, or None
        self.key = key      # the pgfanout.v1.Key, or None (null key or a message's prefix)
        self.headers = headers

    @property
    def tombstone(self):
        return self.rec.value is None

    @property
    def ident(self):
        """The exact identity of an event: (commit_lsn, txn_index); a non-transactional
        message, which has neither, is (0, lsn)."""
        s = self.event.source
        if s.commit_lsn == 0:
            return (0, s.lsn)
        return (s.commit_lsn, s.txn_index)


def header_dict(rec, problems):
    """The record's headers as {name: text}; a repeated or undecodable header is a problem."""
    out = {}
    for name, value in rec.headers:
        if name in out:
            problems.append(f"{rec.topic}[{rec.partition}]@{rec.offset}: header {name} twice")
        try:
            out[name] = None if value is None else value.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"{rec.topic}[{rec.partition}]@{rec.offset}: header {name} not UTF-8")
            out[name] = repr(value)
    return out


class Decoded:
    """Every record of some topics, decoded: .records (KRecord, sorted by topic, partition,
    offset) and .problems (value/type mismatches and undecodable records)."""

    def __init__(self, records, message_topics=()):
        pb = event_pb2()
        self.problems = []
        self.records = []
        for rec in records:
            loc = f"{rec.topic}[{rec.partition}]@{rec.offset}"
            event = ev = key = None
            if rec.value is not None:
                event = pb.Event()
                try:
                    event.ParseFromString(rec.value)
                except Exception as e:  # google.protobuf.message.DecodeError
                    self.problems.append(f"{loc}: value is not a pgfanout.v1.Event: {e}")
                    continue
                ev = event_to_dict(event, self.problems)
            if rec.key is not None and rec.topic not in message_topics:
                key = pb.Key()
                try:
                    key.ParseFromString(rec.key)
                except Exception as e:
                    self.problems.append(f"{loc}: key is not a pgfanout.v1.Key: {e}")
                    key = None
            self.records.append(KRecord(rec, event, ev, key, header_dict(rec, self.problems)))

    def values(self):
        """The records that carry an event (not tombstones)."""
        return [r for r in self.records if r.event is not None]

    def by_partition(self):
        parts = collections.defaultdict(list)
        for r in self.records:
            parts[(r.rec.topic, r.rec.partition)].append(r)
        return parts


def unique_events(krecords):
    """De-duplicates events by their identity (commit_lsn, txn_index) and returns
    (event dicts in (commit_lsn, txn_index) order, number of duplicates, conflicts).

    A truncate is written to several partitions and topics on purpose; those copies are not
    counted as duplicates (only a second copy in the same partition is).  conflicts lists
    identities whose copies differ in content: an identity must name one event exactly."""
    first = {}
    copies = collections.Counter()
    conflicts = []
    for r in krecords:
        if r.event is None:
            continue
        ident = r.ident
        copies[(r.rec.topic, r.rec.partition, ident)] += 1
        if ident not in first:
            first[ident] = r
        elif first[ident].rec.value != r.rec.value:
            conflicts.append((ident, first[ident].ev, r.ev))
    duplicates = sum(n - 1 for n in copies.values())
    ordered = [first[i].ev for i in sorted(first)]
    return ordered, duplicates, conflicts


# --- the reference: a test_decoding slot --------------------------------------------------

TD_LINE_RE = re.compile(r'^table (?P<schema>[^.]+)\.(?P<table>[^:]+): (?P<op>INSERT|UPDATE|DELETE'
                        r'|TRUNCATE): (?P<rest>.*)$', re.S)
TD_ID_RE = re.compile(r'\s*id\[[^\]]+\]:(-?\d+)')


class RefTxn:
    """One transaction as a test_decoding slot saw it: changes is a list of
    (schema, table, op, id) in WAL order; end_lsn the LSN its COMMIT row carries."""
    __slots__ = ("xid", "changes", "end_lsn")

    def __init__(self, xid):
        self.xid = xid
        self.changes = []
        self.end_lsn = None


def reference_transactions(conn, slot, tables):
    """Peeks (does not consume) the test_decoding slot and returns {xid: RefTxn} for the
    transactions with changes on any of tables ((schema, table) pairs).  A row change's id is
    the value of its `id` column (the new one for an update): every table compared this way
    has `id` as its first column."""
    wanted = set(tables)
    txns = {}
    with conn.cursor() as cur:
        cur.execute("SELECT lsn::text, xid::text::bigint, data FROM"
                    " pg_logical_slot_peek_changes(%s, NULL, NULL, 'include-xids', '1',"
                    " 'skip-empty-xacts', '1')", (slot,))
        for lsn, xid, data in cur:
            if data.startswith("COMMIT"):
                if xid in txns:
                    txns[xid].end_lsn = runner.lsn_to_int(lsn)
                continue
            m = TD_LINE_RE.match(data)
            if m is None or (m["schema"], m["table"]) not in wanted:
                continue
            rest = m["rest"]
            if "new-tuple:" in rest:
                rest = rest.split("new-tuple:", 1)[1]
            idm = TD_ID_RE.match(rest)
            txns.setdefault(xid, RefTxn(xid)).changes.append(
                (m["schema"], m["table"], m["op"].lower(), int(idm.group(1)) if idm else None))
    return txns


def compare_with_reference(ref, events):
    """Compares de-duplicated row events (dicts, as from unique_events) with the reference
    transactions.  Returns a list of problems: transactions missing or unexpected, a
    transaction whose events differ from the reference in number, order, op, table or id,
    txn_index values not 0..n-1, commit_lsn not before the commit's end."""
    problems = []
    got = collections.defaultdict(list)
    for e in events:
        if e["op"] in ("insert", "update", "delete"):
            got[e["xid"]].append(e)
    missing = sorted(set(ref) - set(got))
    if missing:
        n = sum(len(ref[x].changes) for x in missing)
        problems.append(f"{len(missing)} transactions ({n} changes) never reached Kafka,"
                        f" e.g. xids {missing[:10]}")
    extra = sorted(set(got) - set(ref))
    if extra:
        problems.append(f"{len(extra)} transactions in Kafka that the reference slot does not"
                        f" have, e.g. xids {extra[:10]}")
    for xid in sorted(set(ref) & set(got)):
        evs = sorted(got[xid], key=lambda e: e["txn_index"])
        mine = [(e["schema"], e["table"], e["op"], _event_id(e)) for e in evs]
        if mine != ref[xid].changes:
            diff = next((i for i, (a, b) in enumerate(zip(mine, ref[xid].changes)) if a != b),
                        min(len(mine), len(ref[xid].changes)))
            problems.append(
                f"xid {xid}: {len(mine)} events, reference {len(ref[xid].changes)}; first"
                f" difference at {diff}: got {mine[diff:diff + 2]}, reference"
                f" {ref[xid].changes[diff:diff + 2]}")
        # The indexes of row events of a transaction without messages are exactly 0..n-1.
        idx = [e["txn_index"] for e in evs]
        if idx != list(range(len(idx))):
            problems.append(f"xid {xid}: txn_index values {idx[:10]}... are not 0..{len(idx) - 1}")
        commits = {e["commit_lsn"] for e in evs}
        if len(commits) != 1:
            problems.append(f"xid {xid}: events disagree on commit_lsn: {sorted(commits)}")
        elif ref[xid].end_lsn is not None and \
                not runner.lsn_to_int(commits.pop()) < ref[xid].end_lsn:
            problems.append(f"xid {xid}: commit_lsn not before the commit's end"
                            f" {runner.int_to_lsn(ref[xid].end_lsn)}")
        if len(problems) > 20:
            problems.append("...")
            break
    return problems


def _event_id(e):
    row = e["key"] if e["op"] == "delete" else e["after"]
    v = (row or {}).get("id")
    return v if isinstance(v, int) else None


def count_changes(ref):
    return sum(len(t.changes) for t in ref.values())


def key_order_problems(decoded):
    """Per-key order in a stream that may hold duplicates (at-least-once, after crashes):
    every record key stays in one partition, and there each event seen for the first time
    comes after every event of that key seen before it, by (commit_lsn, txn_index).  A
    re-sent older event is a duplicate, not an order problem; a new event older than one
    already delivered is."""
    problems = []
    where = collections.defaultdict(set)
    seen = collections.defaultdict(set)
    last = {}
    for (topic, part), recs in decoded.by_partition().items():
        for r in recs:
            if r.rec.key is None or r.event is None:
                continue
            k = (topic, r.rec.key)
            where[k].add(part)
            if r.ident in seen[k]:
                continue
            seen[k].add(r.ident)
            if k in last and not last[k] < r.ident:
                problems.append(f"{topic}[{part}]@{r.rec.offset}: key {r.ev.get('key')} new event"
                                f" {r.ident} after {last[k]}")
            last[k] = r.ident
    split = {k: sorted(p) for k, p in where.items() if len(p) > 1}
    if split:
        problems.append(f"{len(split)} keys in several partitions, e.g. {list(split.items())[:3]}")
    return problems[:20]
