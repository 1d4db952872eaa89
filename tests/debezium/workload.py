"""The Debezium-format workload: tables covering the PostgreSQL types that pgfanout's
`kafka.format: debezium-json` encodes, rows loaded before capture starts (they come through a
snapshot as op "r"), and a streamed part (inserts, updates, deletes, a multi-statement
transaction, primary-key changes, NULLs, edge values, unchanged TOAST, a TRUNCATE).

Deterministic: fixed values only (no now(), no random), so two runs write the same rows.
Shared by tests/debezium/capture.py (which records what Debezium makes of it) and by any test
that runs pgfanout over the same workload and compares.

    create_schema(conn)            # tables, enum type; REPLICA IDENTITY as documented below
    create_publication(conn, name) # FOR TABLE every workload table
    pre = load_initial(conn)       # rows that exist before capture starts
    ops = run_stream(conn)         # the streamed part
    expected_record_counts(pre + ops)  -> {table: records Debezium writes for them}

Each Op is one statement that touched exactly one row (checked), or a TRUNCATE.

Runnable: `python3 tests/debezium/workload.py DSN` applies all of it to an empty database.
"""
import collections
import sys

import psycopg

# The captured variants: name -> Debezium connector options on top of the common ones
# (capture.py).  "default" is Debezium's defaults: decimal.handling.mode=precise,
# time.precision.mode=adaptive, binary.handling.mode=bytes, interval.handling.mode=numeric,
# skipped.operations=t (no truncates), tombstones.on.delete=true.
VARIANTS = {
    "default": {},
    "decimal-string": {"decimal.handling.mode": "string"},
    "decimal-double": {"decimal.handling.mode": "double"},
    "time-connect": {"time.precision.mode": "connect"},
    "binary-hex": {"binary.handling.mode": "hex"},
    "binary-base64": {"binary.handling.mode": "base64"},
    # Truncates come through only when skipped.operations lets them.
    "truncate": {"skipped.operations": "none"},
}

SCHEMA = "public"

# The one table per identity/key shape.
TYPES = "dbz_types"    # REPLICA IDENTITY FULL, primary key id: every type, one TOASTed column
TOAST = "dbz_toast"    # REPLICA IDENTITY DEFAULT, composite primary key, one TOASTed column
NOPK = "dbz_nopk"      # REPLICA IDENTITY FULL, no primary key (Debezium's key is null)
TRUNC = "dbz_trunc"    # DEFAULT, truncated at the end of the stream

TABLES = [TYPES, TOAST, NOPK, TRUNC]

# Primary-key columns in order (Debezium's record key holds them); [] = no primary key.
KEYS = {TYPES: ["id"], TOAST: ["tenant", "id"], NOPK: [], TRUNC: ["id"]}

SCHEMA_SQL = [
    "CREATE TYPE dbz_mood AS ENUM ('sad', 'ok', 'happy')",
    f"""CREATE TABLE {TYPES} (
        id int4 PRIMARY KEY,
        c_smallint int2,
        c_integer int4,
        c_bigint int8,
        c_boolean bool,
        c_real float4,
        c_double float8,
        c_numeric numeric(12,3),
        c_numeric_any numeric,
        c_text text,
        c_varchar varchar(20),
        c_char char(5),
        c_date date,
        c_time time,
        c_time3 time(3),
        c_timetz timetz,
        c_timestamp timestamp,
        c_timestamp3 timestamp(3),
        c_timestamptz timestamptz,
        c_interval interval,
        c_bytea bytea,
        c_json json,
        c_jsonb jsonb,
        c_uuid uuid,
        c_int_array int4[],
        c_text_array text[],
        c_enum dbz_mood,
        c_big text)""",
    f"ALTER TABLE {TYPES} REPLICA IDENTITY FULL",
    # EXTERNAL: stored out of line uncompressed, so a 12 kB value is always TOASTed.
    f"ALTER TABLE {TYPES} ALTER COLUMN c_big SET STORAGE EXTERNAL",
    f"""CREATE TABLE {TOAST} (
        tenant int4,
        id int8,
        name varchar(20),
        qty int4,
        big text,
        PRIMARY KEY (tenant, id))""",
    f"ALTER TABLE {TOAST} REPLICA IDENTITY DEFAULT",
    f"ALTER TABLE {TOAST} ALTER COLUMN big SET STORAGE EXTERNAL",
    f"CREATE TABLE {NOPK} (a int4, b text)",
    f"ALTER TABLE {NOPK} REPLICA IDENTITY FULL",
    f"CREATE TABLE {TRUNC} (id int4 PRIMARY KEY, v text)",
]

# The columns of dbz_types in order, with their PostgreSQL types (as format_type() names them).
TYPE_COLUMNS = [
    ("id", "integer"), ("c_smallint", "smallint"), ("c_integer", "integer"),
    ("c_bigint", "bigint"), ("c_boolean", "boolean"), ("c_real", "real"),
    ("c_double", "double precision"), ("c_numeric", "numeric(12,3)"),
    ("c_numeric_any", "numeric"), ("c_text", "text"), ("c_varchar", "character varying(20)"),
    ("c_char", "character(5)"), ("c_date", "date"), ("c_time", "time without time zone"),
    ("c_time3", "time(3) without time zone"), ("c_timetz", "time with time zone"),
    ("c_timestamp", "timestamp without time zone"),
    ("c_timestamp3", "timestamp(3) without time zone"),
    ("c_timestamptz", "timestamp with time zone"), ("c_interval", "interval"),
    ("c_bytea", "bytea"), ("c_json", "json"), ("c_jsonb", "jsonb"), ("c_uuid", "uuid"),
    ("c_int_array", "integer[]"), ("c_text_array", "text[]"), ("c_enum", "dbz_mood"),
    ("c_big", "text"),
]

# Every table's columns with their PostgreSQL types (format_type() spelling), in order.
COLUMNS = {
    TYPES: TYPE_COLUMNS,
    TOAST: [("tenant", "integer"), ("id", "bigint"), ("name", "character varying(20)"),
            ("qty", "integer"), ("big", "text")],
    NOPK: [("a", "integer"), ("b", "text")],
    TRUNC: [("id", "integer"), ("v", "text")],
}


def big_text(tag, n=1700):
    """A deterministic text of 5*n+len(tag) characters (8.5 kB by default): out of line."""
    return tag + "".join(f"{i:04d}|" for i in range(n))


BIG1, BIG2, BIG3, BIG4, BIG5 = (big_text(t) for t in ("one:", "two:", "three:", "four:",
                                                      "five:"))

# Full rows of dbz_types, as SQL literals by column (columns left out are NULL).
ROW_1 = {
    "id": "1", "c_smallint": "12", "c_integer": "-123456", "c_bigint": "9007199254740993",
    "c_boolean": "true", "c_real": "1.5", "c_double": "3.141592653589793",
    "c_numeric": "12345.678", "c_numeric_any": "3.14159265358979323846264338327950288",
    "c_text": "'hello'", "c_varchar": "'varchar value'", "c_char": "'ab'",
    "c_date": "'2024-02-29'", "c_time": "'13:45:30.123456'", "c_time3": "'13:45:30.123'",
    "c_timetz": "'13:45:30.5+05:30'", "c_timestamp": "'2024-02-29 13:45:30.123456'",
    "c_timestamp3": "'2024-02-29 13:45:30.123'",
    "c_timestamptz": "'2024-02-29 13:45:30.123456+02'",
    "c_interval": "'1 year 2 mons 3 days 04:05:06.789'", "c_bytea": "'\\x00ff10'::bytea",
    "c_json": """'{"a": 1, "b": [true, null]}'""", "c_jsonb": """'{"a": 1, "b": [true, null]}'""",
    "c_uuid": "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "c_int_array": "'{1,2,3}'",
    "c_text_array": """'{"a","b c",NULL}'""", "c_enum": "'happy'", "c_big": "%(big1)s",
}
# Edge values: extremes, negative and very large numerics, specials, empties, unicode.
ROW_3 = {
    "id": "3", "c_smallint": "-32768", "c_integer": "2147483647",
    "c_bigint": "-9223372036854775808", "c_boolean": "false", "c_real": "'NaN'",
    "c_double": "'-Infinity'", "c_numeric": "-999999999.999",
    "c_numeric_any": "-123456789012345678901234567890.123456789",
    "c_text": "%(unicode)s", "c_varchar": "''", "c_char": "'x'", "c_date": "'1969-12-31'",
    "c_time": "'00:00:00'", "c_time3": "'23:59:59.999'", "c_timetz": "'23:59:59.999999-08'",
    "c_timestamp": "'1900-01-01 00:00:00.000001'", "c_timestamp3": "'1970-01-01 00:00:00'",
    "c_timestamptz": "'1969-12-31 23:59:59.999999+00'",
    "c_interval": "'-1 days -02:03:04.5'", "c_bytea": "''::bytea", "c_json": "'[]'",
    "c_jsonb": """'{"\u00fc": "\u2713", "n": 1.50}'""",
    "c_uuid": "'00000000-0000-0000-0000-000000000000'", "c_int_array": "'{}'",
    "c_text_array": "'{}'", "c_enum": "'sad'", "c_big": "'short'",
}
UNICODE_TEXT = "h\u00e9llo w\u00f6rld \u2713 \U0001d11e \u2014 \"quoted\" \\ back\tslash\nnewline"
# A row in between: plain values, deleted later in the stream.
ROW_5 = {
    "id": "5", "c_smallint": "5", "c_integer": "5", "c_bigint": "5", "c_boolean": "true",
    "c_real": "0.25", "c_double": "-0.5", "c_numeric": "0.001", "c_numeric_any": "0",
    "c_text": "'five'", "c_varchar": "'five'", "c_char": "'five5'", "c_date": "'2000-01-01'",
    "c_time": "'12:00:00'", "c_time3": "'12:00:00.5'", "c_timetz": "'12:00:00+00'",
    "c_timestamp": "'2000-01-01 00:00:00'", "c_timestamp3": "'2000-01-01 00:00:00.001'",
    "c_timestamptz": "'2000-01-01 00:00:00+00'", "c_interval": "'1 mon'",
    "c_bytea": "'\\xdeadbeef'::bytea", "c_json": "'null'", "c_jsonb": "'\"str\"'",
    "c_uuid": "'ffffffff-ffff-ffff-ffff-ffffffffffff'", "c_int_array": "'{-1,NULL,2147483647}'",
    "c_text_array": """'{"",x}'""", "c_enum": "'ok'", "c_big": "NULL",
}
# Special timestamp and date values, in a row of their own (id 6).
ROW_6 = {
    "id": "6", "c_date": "'infinity'", "c_timestamp": "'infinity'",
    "c_timestamp3": "'-infinity'", "c_timestamptz": "'infinity'", "c_numeric_any": "'NaN'",
    "c_real": "'Infinity'", "c_double": "'NaN'",
}

PARAMS = {"big1": BIG1, "big2": BIG2, "big3": BIG3, "big4": BIG4, "big5": BIG5,
          "unicode": UNICODE_TEXT}

Op = collections.namedtuple("Op", "table kind")
Op.__doc__ = """One row change: kind is insert, update, delete, pk_update (an UPDATE that
changes the primary key), or truncate (a whole table)."""


def _insert_sql(table, row):
    cols = ", ".join(row)
    vals = ", ".join(row.values())
    return f"INSERT INTO {table} ({cols}) VALUES ({vals})"


class _Recorder:
    """Runs statements that must touch exactly one row and records an Op for each."""

    def __init__(self, conn):
        self.conn = conn
        self.ops = []

    def row(self, table, kind, sql):
        cur = self.conn.execute(sql, PARAMS if "%(" in sql else None)
        if cur.rowcount != 1:
            raise RuntimeError(f"workload statement touched {cur.rowcount} rows, not 1: {sql}")
        self.ops.append(Op(table, kind))

    def truncate(self, table):
        self.conn.execute(f"TRUNCATE {table}")
        self.ops.append(Op(table, "truncate"))


def create_schema(conn):
    """Creates the enum type and the workload tables (in one transaction)."""
    with conn.transaction():
        for sql in SCHEMA_SQL:
            conn.execute(sql)


def create_publication(conn, name):
    """CREATE PUBLICATION name FOR TABLE (every workload table); all operations published."""
    conn.execute(f"CREATE PUBLICATION {name} FOR TABLE {', '.join(TABLES)}")


def load_initial(conn):
    """The rows that exist before capture starts; returns their Ops (all inserts)."""
    rec = _Recorder(conn)
    with conn.transaction():
        rec.row(TYPES, "insert", _insert_sql(TYPES, ROW_1))
        rec.row(TYPES, "insert", "INSERT INTO dbz_types (id) VALUES (2)")  # all NULL
        # The stream's edge and special rows (ids 3 and 6) through the snapshot too, whose
        # values Debezium reads over JDBC rather than from pgoutput's text.
        rec.row(TYPES, "insert", _insert_sql(TYPES, dict(ROW_3, id="7")))
        rec.row(TYPES, "insert", _insert_sql(TYPES, dict(ROW_6, id="8")))
        rec.row(TOAST, "insert", "INSERT INTO dbz_toast VALUES (1, 1, 'one', 10, %(big1)s)")
        rec.row(TOAST, "insert", "INSERT INTO dbz_toast VALUES (1, 2, 'two', 20, %(big2)s)")
        rec.row(NOPK, "insert", "INSERT INTO dbz_nopk VALUES (1, 'a')")
        rec.row(TRUNC, "insert", "INSERT INTO dbz_trunc VALUES (1, 'before truncate')")
    return rec.ops


def run_stream(conn):
    """The streamed part, transaction by transaction; returns its Ops in commit order."""
    rec = _Recorder(conn)
    # Single-row transactions (autocommit or not, each `with` is one transaction).
    with conn.transaction():
        rec.row(TYPES, "insert", _insert_sql(TYPES, ROW_3))
    with conn.transaction():
        rec.row(TYPES, "insert", "INSERT INTO dbz_types (id) VALUES (4)")  # every column NULL
    with conn.transaction():
        rec.row(TYPES, "insert", _insert_sql(TYPES, ROW_5))
    with conn.transaction():
        rec.row(TYPES, "insert", _insert_sql(TYPES, ROW_6))
    # FULL identity: c_big is not touched, so the new tuple carries it as unchanged TOAST.
    with conn.transaction():
        rec.row(TYPES, "update", "UPDATE dbz_types SET c_integer = c_integer + 1,"
                " c_text = 'updated', c_numeric = -0.5 WHERE id = 1")
    # NULLs become values, and a TOASTed value is written.
    with conn.transaction():
        rec.row(TYPES, "update", "UPDATE dbz_types SET c_text = 'was null', c_boolean = false,"
                " c_int_array = '{7}', c_big = %(big3)s WHERE id = 2")
    # Values become NULL.
    with conn.transaction():
        rec.row(TYPES, "update", "UPDATE dbz_types SET c_numeric_any = NULL, c_enum = NULL,"
                " c_jsonb = NULL WHERE id = 3")
    with conn.transaction():
        rec.row(TYPES, "delete", "DELETE FROM dbz_types WHERE id = 5")

    # A multi-statement transaction over three tables.
    with conn.transaction():
        rec.row(TOAST, "insert", "INSERT INTO dbz_toast VALUES (2, 1, 'three', 30, %(big4)s)")
        # DEFAULT identity, `big` untouched: unchanged TOAST, and no old tuple at all.
        rec.row(TOAST, "update", "UPDATE dbz_toast SET qty = 11 WHERE tenant = 1 AND id = 1")
        rec.row(TOAST, "delete", "DELETE FROM dbz_toast WHERE tenant = 1 AND id = 2")
        rec.row(NOPK, "insert", "INSERT INTO dbz_nopk VALUES (2, 'b')")
        rec.row(NOPK, "update", "UPDATE dbz_nopk SET b = 'a2' WHERE a = 1")
        rec.row(NOPK, "delete", "DELETE FROM dbz_nopk WHERE a = 2")
        rec.row(TYPES, "update", "UPDATE dbz_types SET c_smallint = 13 WHERE id = 1")

    # Primary-key changes: DEFAULT identity (the old key only) and FULL (the whole old row).
    with conn.transaction():
        rec.row(TOAST, "pk_update", "UPDATE dbz_toast SET id = 10 WHERE tenant = 1 AND id = 1")
    with conn.transaction():
        rec.row(TYPES, "pk_update", "UPDATE dbz_types SET id = 30 WHERE id = 3")
    # DEFAULT identity: a TOASTed value rewritten, then a NULL written with TOAST unchanged.
    with conn.transaction():
        rec.row(TOAST, "update", "UPDATE dbz_toast SET big = %(big5)s WHERE tenant = 2 AND id = 1")
    with conn.transaction():
        rec.row(TOAST, "update", "UPDATE dbz_toast SET name = NULL WHERE tenant = 2 AND id = 1")

    with conn.transaction():
        rec.row(TRUNC, "insert", "INSERT INTO dbz_trunc VALUES (2, 'also truncated')")
    with conn.transaction():
        rec.truncate(TRUNC)
    # The last change: once it arrives, everything before it has.
    with conn.transaction():
        rec.row(TRUNC, "insert", "INSERT INTO dbz_trunc VALUES (3, 'after truncate')")
    return rec.ops


def expected_record_counts(ops, tombstones=True, truncates=False):
    """Kafka records Debezium writes for these Ops, by table: an insert (or snapshot row) or
    an update is one record; a delete is a delete event plus a tombstone; a primary-key change
    is a delete, a tombstone and a create; a TRUNCATE is one "t" record only when the
    connector's skipped.operations lets truncates through (by default it skips them)."""
    per = {"insert": 1, "update": 1, "delete": 1 + tombstones,
           "pk_update": 2 + tombstones, "truncate": int(truncates)}
    counts = collections.Counter()
    for op in ops:
        counts[op.table] += per[op.kind]
    return {t: counts.get(t, 0) for t in TABLES}


# The session settings under which read_table() renders values as text.
TEXT_SETTINGS = {"TimeZone": "UTC", "DateStyle": "ISO", "IntervalStyle": "postgres",
                 "bytea_output": "hex", "extra_float_digits": "3"}


def read_table(conn, table):
    """The table's rows as {column: text or None} (every value in its type's text output under
    TEXT_SETTINGS, so infinities and NaN come through as PostgreSQL spells them), sorted by
    their values, for comparisons.  Sets TEXT_SETTINGS on the connection."""
    for k, v in TEXT_SETTINGS.items():
        conn.execute(f"SET {k} = '{v}'")
    cur = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
        " AND NOT attisdropped ORDER BY attnum", (f"{SCHEMA}.{table}",))
    cols = [r[0] for r in cur.fetchall()]
    # concat() prints with the type's output function: as ::text, but char(n) keeps its
    # padding (a cast to text strips it).
    sel = ", ".join(f"CASE WHEN {c} IS NULL THEN NULL ELSE concat({c}) END" for c in cols)
    cur = conn.execute(f"SELECT {sel} FROM {SCHEMA}.{table}")
    rows = [dict(zip(cols, r)) for r in cur.fetchall()]
    return sorted(rows, key=lambda r: [(r[c] is None, r[c] or "") for c in cols])


def main(argv):
    if len(argv) != 2:
        print(f"usage: {argv[0]} DSN   (applies the schema and the whole workload)",
              file=sys.stderr)
        return 2
    with psycopg.connect(argv[1], autocommit=True) as conn:
        create_schema(conn)
        ops = load_initial(conn) + run_stream(conn)
    print(f"workload: {len(ops)} operations; records Debezium writes per table: "
          f"{expected_record_counts(ops)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
