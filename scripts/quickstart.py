"""Quickstart: a throwaway PostgreSQL on 127.0.0.1, a demo schema, pgfanout streaming it,
a few changes, and the JSON lines they produce.  Stops what it started, by pid."""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "harness"))
import psycopg  # noqa: E402
from pgcluster import PgCluster  # noqa: E402

binary = sys.argv[1] if len(sys.argv) > 1 else "build/pgfanout"
pg = PgCluster().start()
worker = None
try:
    dsn = pg.dsn()
    print(f"# PostgreSQL 15 running on 127.0.0.1:{pg.port}")
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("CREATE TABLE orders (id serial PRIMARY KEY, status text NOT NULL, total numeric(10,2))")
        db.execute("INSERT INTO orders (status, total) VALUES ('new', 12.50)")
    argv = [binary, "--dsn", dsn, "--slot", "demo", "--publication", "demo",
            "--create-slot", "--create-publication"]
    print("# $ " + " ".join(argv[:1] + ["--dsn", f"'{dsn}'"] + argv[3:]), flush=True)
    worker = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)  # let it create the slot before the changes below
    with psycopg.connect(dsn, autocommit=True) as db:
        print("# INSERT, UPDATE, DELETE, a transactional message and a TRUNCATE:")
        db.execute("INSERT INTO orders (status, total) VALUES ('new', 99.90), ('new', 5.00)")
        db.execute("UPDATE orders SET status = 'paid' WHERE id = 2")
        db.execute("DELETE FROM orders WHERE id = 3")
        db.execute("SELECT pg_logical_emit_message(true, 'demo', 'hello from a transaction')")
        db.execute("TRUNCATE orders")
    seen = 0
    deadline = time.time() + 20
    while seen < 6 and time.time() < deadline:
        line = worker.stdout.readline()
        if not line:
            break
        print(line, end="")
        seen += 1
    if seen < 6:
        sys.exit(f"quickstart: expected 6 events, saw {seen}")
    print("# 6 changes streamed; stopping pgfanout with SIGTERM", flush=True)
finally:
    if worker is not None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    pg.stop()
