"""The stream suite's schema and workload: every table shape and value class the JSON
contract covers.  run_workload() commits it transaction by transaction and returns the
facts the assertions need (xids, LSN bounds of chosen transactions, TOAST values)."""
import secrets

SCHEMA_SQL = [
    "CREATE SCHEMA inv",
    "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
    "CREATE DOMAIN posint AS int4 CHECK (VALUE > 0)",
    "CREATE TYPE pair AS (n int4, label text)",
    # REPLICA IDENTITY DEFAULT with a primary key
    "CREATE TABLE orders (id int4 PRIMARY KEY, status text NOT NULL, qty int2,"
    " amount numeric(20,4), note text)",
    # FULL with and without a primary key
    "CREATE TABLE full_pk (id int8 PRIMARY KEY, name text, score float8)",
    "ALTER TABLE full_pk REPLICA IDENTITY FULL",
    "CREATE TABLE full_nopk (a text, b int4, c bool)",
    "ALTER TABLE full_nopk REPLICA IDENTITY FULL",
    # USING INDEX on NOT NULL columns, no primary key
    "CREATE TABLE idx_tbl (code text NOT NULL, region int4 NOT NULL, payload text,"
    " seq serial)",
    "CREATE UNIQUE INDEX idx_tbl_key ON idx_tbl (code, region)",
    "ALTER TABLE idx_tbl REPLICA IDENTITY USING INDEX idx_tbl_key",
    # NOTHING: inserts and truncate only
    "CREATE TABLE nothing_tbl (n int4, label text)",
    "ALTER TABLE nothing_tbl REPLICA IDENTITY NOTHING",
    "CREATE TABLE composite_pk (tenant int4, id int4, val text, PRIMARY KEY (tenant, id))",
    "CREATE TABLE toasty (id int4 PRIMARY KEY, big text, small int4)",
    "ALTER TABLE toasty ALTER COLUMN big SET STORAGE EXTERNAL",
    "CREATE TABLE types_tbl (id int4 PRIMARY KEY, t text, n numeric, f4 float4, f8 float8,"
    " b bytea, j json, jb jsonb, ia int4[], ta text[], tstz timestamptz, ts timestamp,"
    " d date, iv interval, u uuid, m mood, dom posint, comp pair, bo bool, i2 int2,"
    " i8 int8, o oid, ch char(4), vc varchar(8))",
    "CREATE TABLE parent (id int4 PRIMARY KEY, name text)",
    "CREATE TABLE child (id int4 PRIMARY KEY, parent_id int4 REFERENCES parent (id), v text)",
    "CREATE TABLE seq_tbl (id int4 GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text)",
    "CREATE TABLE evolving (id int4 PRIMARY KEY, a text)",
    "CREATE TABLE savepoints (id int4 PRIMARY KEY, v text)",
    "CREATE TABLE bulk (id int4 PRIMARY KEY, h text, x float8)",
    "CREATE TABLE inv.items (sku text PRIMARY KEY, qty int4)",
    "CREATE TABLE after_endpos (id int4 PRIMARY KEY)",
]

# Every table the replay is compared on (after_endpos is checked separately: it must be absent).
TABLES = [("public", t) for t in (
    "orders", "full_pk", "full_nopk", "idx_tbl", "nothing_tbl", "composite_pk", "toasty",
    "types_tbl", "parent", "child", "seq_tbl", "evolving", "savepoints", "bulk")] + [
    ("inv", "items")]

# The record-key columns each table's events must carry in `key`: the primary key, else the
# replica-identity index, else none.
FULL_TABLES = {("public", "full_pk"), ("public", "full_nopk")}  # REPLICA IDENTITY FULL

KEY_COLUMNS = {
    ("public", "orders"): {"id"},
    ("public", "full_pk"): {"id"},
    ("public", "full_nopk"): set(),
    ("public", "idx_tbl"): {"code", "region"},
    ("public", "nothing_tbl"): set(),
    ("public", "composite_pk"): {"tenant", "id"},
    ("public", "toasty"): {"id"},
    ("public", "types_tbl"): {"id"},
    ("public", "parent"): {"id"},
    ("public", "child"): {"id"},
    ("public", "seq_tbl"): {"id"},
    ("public", "evolving"): {"id"},
    ("public", "savepoints"): {"id"},
    ("public", "bulk"): {"id"},
    ("inv", "items"): {"sku"},
}

BULK_ROWS = 100_000

NONTX_BYTES = b"\xde\xad\x00\xbe\xef"

UNICODE_TEXT = ("quote \" backslash \\ newline \n tab \t bell \x07 ctrl \x01 del \x7f"
                " é 日本語 🚀 \u2028 \u200b end")

# Value rows for types_tbl: (id, t, literal SQL for the other columns in table order).
TYPE_ROWS = [
    (1, None, "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
              " NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL"),
    (2, UNICODE_TEXT,
     "'123456789012345678901234567890.123456789012345678901234567890',"
     " '3.4028235e38', '1.7976931348623157e308', '\\x00ff10deadbeef',"
     " '{\"a\": [1, 2.5, \"x\"], \"u\": \"é\",  \"sp\":  true}',"
     " '{\"b\": {\"c\": null}, \"a\": [1, \"two\"]}',"
     " '{1,NULL,3}', '{\"a b\",\"c,d\",\"q\\\"uote\",NULL}',"
     " '2026-11-25 04:01:16.123456+03', '1999-12-31 23:59:59.999999', '2000-02-29',"
     " '1 year 2 mons 3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',"
     " 'happy', 42, ROW(7, 'seven, \"quoted\"'), true, -32768, 9223372036854775807,"
     " 4294967295, 'ab', 'ünï'"),
    (3, "",
     "'NaN', 'NaN', 'NaN', '\\x', '\"just a string\"', '[]', '{}', '{{a,b},{c,d}}',"
     " 'infinity', '-infinity', '0044-03-15 BC', '-1 days +02:03:00',"
     " '00000000-0000-0000-0000-000000000000', 'sad', 1, ROW(NULL, NULL), false, 32767,"
     " -9223372036854775808, 0, 'abcd', ''"),
    (4, "four", "'Infinity', 'Infinity', '-Infinity', NULL, NULL, NULL, NULL, NULL,"
                " '2000-01-01 00:00:00+00', NULL, NULL, '0', NULL, 'ok', NULL, NULL, NULL,"
                " 0, 0, NULL, NULL, NULL"),
    (5, "five", "'-Infinity', '-Infinity', 'Infinity', NULL, NULL, NULL, NULL, NULL,"
                " NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
                " NULL, NULL"),
    (6, "six", "'-0.000000000000000000001', '1.1', '0.1', NULL, NULL, NULL, NULL, NULL,"
               " NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
               " NULL, NULL"),
    (7, "seven", "'1e-100', '16777217', '5e-324', NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
                 " NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL"),
    (8, "eight", "'0.0000', '-0', '-0', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
                 " NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL"),
    (9, "nine", "'99999999999999999999999999999999999999', '1.17549435e-38',"
                " '1.2345678901234567', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
                " NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL"),
    (10, "ten", "'-1.5', '1e-45', '123456789012345678901', NULL, NULL, NULL, NULL, NULL,"
                " NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
                " NULL, NULL"),
]


def create_schema(conn):
    with conn.cursor() as cur:
        for sql in SCHEMA_SQL:
            cur.execute(sql)


def _lsn(cur):
    cur.execute("SELECT pg_current_wal_lsn()::text")
    return cur.fetchone()[0]


def tx(conn, *statements):
    """Runs statements (sql or (sql, params)) in one transaction; returns its xid."""
    with conn.transaction():
        with conn.cursor() as cur:
            for st in statements:
                sql, params = st if isinstance(st, tuple) else (st, None)
                cur.execute(sql, params)
            cur.execute("SELECT pg_current_xact_id()::text")
            return int(cur.fetchone()[0]) & 0xFFFFFFFF


def tx_bounded(conn, *statements):
    """Like tx(), and also returns the WAL positions taken just before and after it."""
    with conn.cursor() as cur:
        before = _lsn(cur)
    xid = tx(conn, *statements)
    with conn.cursor() as cur:
        after = _lsn(cur)
    return {"xid": xid, "lsn_before": before, "lsn_after": after}


def run_workload(conn):
    """Commits the whole workload (conn is in autocommit mode); returns the facts dict."""
    facts = {}
    tx(conn, "INSERT INTO orders SELECT g, 'new', g, g * 1.5,"
             " CASE WHEN g % 3 = 0 THEN NULL ELSE 'note ' || g END"
             " FROM generate_series(1, 20) g")
    facts["plain_update"] = tx(conn, "UPDATE orders SET status = 'paid', qty = qty + 1"
                                     " WHERE id <= 5")
    facts["key_change"] = tx_bounded(
        conn, "UPDATE orders SET id = 1001, status = 'moved' WHERE id = 1")
    tx(conn, "DELETE FROM orders WHERE id IN (2, 3)")

    tx(conn, "INSERT INTO full_pk VALUES (1, 'alpha', 1.5), (2, 'beta', 'NaN'),"
             " (3, 'gamma', NULL), (4, 'delta', '-Infinity')")
    tx(conn, "UPDATE full_pk SET score = 2.5 WHERE id = 1")
    facts["full_delete"] = tx(conn, "DELETE FROM full_pk WHERE id = 3")
    tx(conn, "UPDATE full_pk SET id = 20 WHERE id = 2")

    tx(conn, "INSERT INTO full_nopk VALUES ('x', 1, true), ('y', 2, false), ('z', NULL, NULL),"
             " ('w', 4, true)")
    tx(conn, "UPDATE full_nopk SET b = 22 WHERE a = 'y'",
       "DELETE FROM full_nopk WHERE a = 'z'")

    tx(conn, "INSERT INTO idx_tbl (code, region, payload) VALUES ('A', 1, 'p1'), ('A', 2, 'p2'),"
             " ('B', 1, 'p3')")
    tx(conn, "UPDATE idx_tbl SET payload = 'p1b' WHERE code = 'A' AND region = 1")
    tx(conn, "UPDATE idx_tbl SET code = 'C' WHERE code = 'B'")
    tx(conn, "DELETE FROM idx_tbl WHERE code = 'A' AND region = 2")

    tx(conn, "INSERT INTO nothing_tbl VALUES (1, 'one'), (2, 'two')")
    tx(conn, "TRUNCATE nothing_tbl")
    tx(conn, "INSERT INTO nothing_tbl VALUES (3, 'three'), (3, 'three'), (NULL, NULL)")

    tx(conn, "INSERT INTO composite_pk VALUES (1, 1, 'a'), (1, 2, 'b'), (2, 1, 'c')")
    tx(conn, "UPDATE composite_pk SET id = 20 WHERE tenant = 1 AND id = 2")
    tx(conn, "DELETE FROM composite_pk WHERE tenant = 2 AND id = 1")

    big = {i: secrets.token_hex(12000) for i in (1, 3, 4, 5)}
    big["3b"] = secrets.token_hex(9000)
    facts["big"] = big
    tx(conn, ("INSERT INTO toasty VALUES (1, %s, 1), (2, NULL, 2), (3, %s, 3), (5, %s, 5)",
              (big[1], big[3], big[5])))
    tx(conn, "UPDATE toasty SET small = 10 WHERE id = 1")
    tx(conn, "UPDATE toasty SET small = 20 WHERE id = 2")
    tx(conn, ("UPDATE toasty SET big = %s WHERE id = 3", (big["3b"],)))
    tx(conn, ("INSERT INTO toasty VALUES (4, %s, 4)", (big[4],)),
       "UPDATE toasty SET small = 40 WHERE id = 4")
    tx(conn, "UPDATE toasty SET small = 11 WHERE id = 1")
    tx(conn, "DELETE FROM toasty WHERE id = 5")

    for rid, text, rest in TYPE_ROWS:
        tx(conn, (f"INSERT INTO types_tbl VALUES ({rid}, %s, {rest})", (text,)))
    tx(conn, "UPDATE types_tbl SET f8 = 'Infinity', t = NULL, jb = '{\"updated\": true}'"
             " WHERE id = 2")

    tx(conn, "INSERT INTO parent VALUES (1, 'p1'), (2, 'p2'), (3, 'p3')",
       "INSERT INTO child VALUES (10, 1, 'c10'), (11, 1, 'c11'), (12, 2, 'c12')")
    tx(conn, "TRUNCATE parent CASCADE")
    tx(conn, "INSERT INTO parent VALUES (100, 'after truncate')",
       "INSERT INTO child VALUES (10, 100, 'same id as before')")

    tx(conn, "INSERT INTO seq_tbl (v) VALUES ('a'), ('b'), ('c')")
    tx(conn, "TRUNCATE seq_tbl RESTART IDENTITY")
    tx(conn, "INSERT INTO seq_tbl (v) VALUES ('a again'), ('b again')")

    # Schema change in mid-stream: in its own transaction, then inside one.
    tx(conn, "INSERT INTO evolving VALUES (1, 'one'), (2, 'two')")
    tx(conn, "ALTER TABLE evolving ADD COLUMN b int4")
    tx(conn, "INSERT INTO evolving VALUES (3, 'three', 33)",
       "UPDATE evolving SET a = 'ONE' WHERE id = 1")
    tx(conn, "INSERT INTO evolving VALUES (4, 'four', 44)",
       "ALTER TABLE evolving ADD COLUMN c text",
       "INSERT INTO evolving VALUES (5, 'five', 55, 'cinq')",
       "UPDATE evolving SET c = 'deux' WHERE id = 2")

    # Logical messages: one transactional (with a row), one non-transactional in autocommit,
    # and a rolled-back transaction whose transactional message must vanish while its
    # non-transactional one is still delivered.
    facts["message_tx"] = tx(conn, "INSERT INTO orders VALUES (500, 'with message', 1, 0, NULL)",
                             "SELECT pg_logical_emit_message(true, 'pgf-tx', 'hello tx ✓')")
    with conn.cursor() as cur:
        cur.execute("SELECT pg_logical_emit_message(false, 'pgf-nontx-auto', 'auto')")
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("INSERT INTO orders VALUES (600, 'rolled back', 1, 0, NULL)")
        cur.execute("SELECT pg_logical_emit_message(true, 'pgf-rolledback', 'nope')")
        cur.execute("SELECT pg_logical_emit_message(false, 'pgf-nontx', %s::bytea)",
                    (NONTX_BYTES,))
        cur.execute("ROLLBACK")

    with conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("INSERT INTO savepoints VALUES (1, 'kept')")
        cur.execute("SAVEPOINT s")
        cur.execute("INSERT INTO savepoints VALUES (2, 'rolled back to savepoint')")
        cur.execute("ROLLBACK TO SAVEPOINT s")
        cur.execute("INSERT INTO savepoints VALUES (3, 'kept too')")
        cur.execute("COMMIT")

    tx(conn, "INSERT INTO inv.items VALUES ('sku-1', 5), ('sku-2', 7)",
       "UPDATE inv.items SET qty = qty - 1 WHERE sku = 'sku-1'")
    tx(conn, "DELETE FROM inv.items WHERE sku = 'sku-2'")

    facts["bulk_tx"] = tx(conn, f"INSERT INTO bulk SELECT g, md5(g::text), (g / 7.0)::float8"
                                f" FROM generate_series(1, {BULK_ROWS}) g")
    tx(conn, "UPDATE bulk SET h = 'changed', x = 'NaN' WHERE id % 10000 = 0",
       "DELETE FROM bulk WHERE id % 25000 = 1")
    return facts
