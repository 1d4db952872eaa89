"""pgfanout quickstart: a throwaway PostgreSQL 15, Redis and Kafka on 127.0.0.1, a small demo
table with its Redis cache filled, pgfanout streaming to Kafka and Redis, a few changes, then
the Kafka events decoded and the Redis keys that vanished.  Stops everything it started, by pid
(also on Ctrl-C, SIGTERM or an error) and removes its temporary directories.

    /usr/bin/python3 scripts/quickstart.py [--bin build/pgfanout] [--summary FILE]

scripts/quickstart.sh installs what is missing, builds and runs this.  --summary writes the raw
facts (Kafka records as base64, Redis keys before and after, pids, temporary directories) as
JSON for tests/integration/test_quickstart.py.
Env: PGFANOUT_KAFKA_CLASSPATH (default build/kafka.classpath), PGFANOUT_PYPROTO (default: the
pyproto directory beside the binary), QUICKSTART_T0_NS (time.time_ns() the timings count from).
"""
import argparse
import base64
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "harness"))

import psycopg  # noqa: E402
import redis  # noqa: E402
from kafkabroker import KafkaBroker, consume_all, load_classpath  # noqa: E402
from pgcluster import PgCluster  # noqa: E402
from redisserver import RedisServer  # noqa: E402

T0_NS = int(os.environ.get("QUICKSTART_T0_NS") or time.time_ns())

# libpq's environment would reach the throwaway server too (PGSSLMODE=require, PGOPTIONS...):
# the demo names everything it connects to, so it drops these.
LIBPQ_ENV = {"PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD",
             "PGPASSFILE", "PGSERVICE", "PGSERVICEFILE", "PGOPTIONS", "PGAPPNAME", "PGSSLMODE",
             "PGREQUIRESSL", "PGSSLCERT", "PGSSLKEY", "PGSSLROOTCERT", "PGSSLCRL",
             "PGSSLCOMPRESSION", "PGSSLMINPROTOCOLVERSION", "PGSSLMAXPROTOCOLVERSION",
             "PGGSSENCMODE", "PGKRBSRVNAME", "PGGSSLIB", "PGCONNECT_TIMEOUT",
             "PGCLIENTENCODING", "PGTARGETSESSIONATTRS", "PGREQUIREAUTH", "PGCHANNELBINDING",
             "PGDATESTYLE", "PGTZ", "PGGEQO", "PGSYSCONFDIR", "PGLOCALEDIR"}
for _k in LIBPQ_ENV & set(os.environ):
    del os.environ[_k]

SLOT = PUBLICATION = "quickstart"
TOPIC = "pgfanout.public.products"
MESSAGE_TOPIC = "pgfanout.messages"

SCHEMA = """
CREATE TABLE products (
    id    integer PRIMARY KEY,
    slug  text NOT NULL UNIQUE,
    name  text NOT NULL,
    price numeric(10,2) NOT NULL
);
ALTER TABLE products REPLICA IDENTITY FULL;
"""
ROWS = [(1, "teapot", "Teapot", "18.00"), (2, "mug", "Mug", "8.50"),
        (3, "kettle", "Kettle", "30.00")]

CONFIG = """\
# pgfanout --config for the quickstart (every setting: pgfanout.example.yaml)
redis:
  rules:
    - table: public.products
      keys: ["product:{id}", "product:slug:{slug}"]
      table_keys: ["products:list"]
"""

# The changes, one transaction each, as shown to the user.
CHANGES = [
    "INSERT INTO products VALUES (4, 'lamp', 'Desk lamp', 24.00)",
    "UPDATE products SET slug = 'blue-mug', name = 'Blue mug' WHERE id = 2",
    "DELETE FROM products WHERE id = 3",
    "SELECT pg_logical_emit_message(true, 'pgfanout.invalidate', 'homepage:featured')",
]

# Why each cached key should go or stay, given the rules and the changes above.
WHY = {
    "product:1": "row 1 untouched",
    "product:2": "row 2 updated",
    "product:3": "row 3 deleted",
    "product:slug:teapot": "row 1 untouched",
    "product:slug:mug": "old slug of row 2",
    "product:slug:kettle": "row 3 deleted",
    "products:list": "table key: any change",
    "homepage:featured": "named by pg_logical_emit_message",
    "homepage:banner": "no rule names it",
}
# Redis commands that change keys or notify: what MONITOR shows of pgfanout's work.
WRITES = {"DEL", "UNLINK", "SET", "INCR", "PUBLISH", "EXPIRE", "MULTI", "EXEC"}
# pgfanout's read-your-writes key: the LSN through which every invalidation is done.
RYW_KEY = f"pgfanout:ryw:{SLOT}"
EXPECT_GONE = {"product:2", "product:3", "product:slug:mug", "product:slug:kettle",
               "products:list", "homepage:featured"}


def lsn_text(value):
    """b'22046232' (the read-your-writes key's decimal) as PostgreSQL's X/Y, or 'unset'."""
    if value is None:
        return "unset"
    n = int(value)
    return f"{n >> 32:X}/{n & 0xFFFFFFFF:X}"


def elapsed():
    return (time.time_ns() - T0_NS) / 1e9


def say(msg=""):
    print(f"[{elapsed():5.1f}s] {msg}" if msg else "", flush=True)


def note(msg):
    print(f"         {msg}", flush=True)


class Interrupted(BaseException):
    """SIGTERM or SIGHUP, raised like KeyboardInterrupt so that the cleanup runs."""


def on_signal(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def connect(dsn):
    """psycopg.connect with the stop signals held back until it returns: raised inside libpq's
    connection setup, they leave a half-built PGconn whose destructor prints a traceback."""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        return psycopg.connect(dsn, autocommit=True)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def short_path(path):
    """path relative to the current directory when it lies below it, else absolute."""
    rel = os.path.relpath(path)
    return os.path.abspath(path) if rel.startswith("..") else rel


def pb2_module(binary):
    path = os.environ.get("PGFANOUT_PYPROTO") or os.path.join(
        os.path.dirname(os.path.abspath(binary)), "pyproto")
    if not os.path.isfile(os.path.join(path, "pgfanout", "v1", "event_pb2.py")):
        path = os.path.join(REPO, "build", "pyproto")
    if not os.path.isfile(os.path.join(path, "pgfanout", "v1", "event_pb2.py")):
        sys.exit(f"quickstart: no generated pgfanout/v1/event_pb2.py under {path}"
                 " (cmake --build build --target pyproto)")
    sys.path.insert(0, path)
    from pgfanout.v1 import event_pb2
    event_pb2.where = short_path(path)
    return event_pb2


# --- showing a decoded event ----------------------------------------------------------------

def show_value(v):
    kind = v.WhichOneof("kind")
    if kind == "is_null":
        return "null"
    if kind == "text":
        return json.dumps(v.text, ensure_ascii=False)
    if kind in ("int_value", "numeric", "double_value", "bool_value"):
        x = getattr(v, kind)
        return ("true" if x else "false") if kind == "bool_value" else str(x)
    return f"{kind}:{getattr(v, kind)!r}"


def show_row(row):
    return "{" + ", ".join(f"{c.name}: {show_value(c.value)}" for c in row.columns) + "}"


def event_lines(rec, pb):
    """The human-readable line(s) of one Kafka record of the products or messages topic."""
    if rec.value is None:  # a tombstone: same key as the delete before it, null value
        key = pb.Key()
        key.ParseFromString(rec.key)
        ident = ", ".join(f"{c.name}: {show_value(c.value)}" for c in key.columns)
        return [f"{'tombstone':9} {key.table:9} key {{{ident}}}, null value:"
                " lets a compacted topic forget the row"]
    ev = pb.Event()
    ev.ParseFromString(rec.value)
    op = pb.Op.Name(ev.op)[3:].lower()
    if ev.op == pb.OP_MESSAGE:
        m = ev.message
        return [f"{op:9} {m.prefix}  {json.dumps(m.content.decode('utf-8', 'replace'))}"
                f" ({'transactional' if m.transactional else 'non-transactional'})"]
    head = f"{op:9} {ev.source.table:9}"
    pad = " " * len(head)
    key = f"key {show_row(ev.key)}"
    lines = []
    if ev.HasField("before"):
        lines.append(f"before {show_row(ev.before)}")
    if ev.HasField("after"):
        lines.append(f"after  {show_row(ev.after)}")
    lines[-1] += f"  {key}"
    return [(head if i == 0 else pad) + " " + line for i, line in enumerate(lines)]


# --- the demo -------------------------------------------------------------------------------

def start_postgres_and_redis(pg, rds, out):
    """In a thread while Kafka starts: PostgreSQL, Redis, the demo table and its cache."""
    try:
        pg.start()
        out["pids"]["postgres"] = pg.proc.pid
        say(f"PostgreSQL 15 on 127.0.0.1:{pg.port}  pid {pg.proc.pid}")
        rds.start()
        out["pids"]["redis"] = rds.proc.pid
        ver = rds.client().info("server")["redis_version"]
        say(f"Redis {ver} on 127.0.0.1:{rds.port}  pid {rds.proc.pid}")
        with connect(pg.dsn()) as db:
            db.execute(SCHEMA)
            with db.cursor() as cur:
                cur.executemany("INSERT INTO products VALUES (%s, %s, %s, %s)", ROWS)
        c = rds.client()
        for id_, slug, name, price in ROWS:
            row = json.dumps({"id": id_, "slug": slug, "name": name, "price": price})
            c.set(f"product:{id_}", row)
            c.set(f"product:slug:{slug}", row)
        c.set("products:list", json.dumps([r[0] for r in ROWS]))
        c.set("homepage:featured", json.dumps([2, 3]))
        c.set("homepage:banner", "Autumn sale")
    except BaseException as e:  # reported by the main thread
        out["error"] = e


def redis_keys(client):
    return sorted(k.decode() for k in client.scan_iter(count=1000))


class RedisMonitor(threading.Thread):
    """Records the commands Redis receives (MONITOR) until finish() sends a marker."""
    MARK = "quickstart-monitor-end"

    def __init__(self, rds):
        super().__init__(daemon=True)
        self.client = redis.Redis(host="127.0.0.1", port=rds.port)
        self.mon = self.client.monitor().__enter__()  # MONITOR is on when this returns
        self.commands = []

    def run(self):
        try:
            while True:
                c = self.mon.next_command()
                if c["command"] == f"ECHO {self.MARK}":
                    return
                self.commands.append(c["command"])
        except Exception:  # the connection closed under us: finish() gave up waiting
            pass

    def finish(self, client, timeout=10):
        client.echo(self.MARK)
        self.join(timeout)
        self.mon.__exit__()
        return self.commands


def wait_started(worker, errfile, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"pgfanout exited with {worker.returncode} at start")
        text = open(errfile, errors="replace").read()
        if "streaming slot" in text and ": connected" in text:
            return
        time.sleep(0.05)
    raise RuntimeError(f"pgfanout did not start streaming within {timeout}s")


def wait_confirmed(db, worker, lsn, timeout=60):
    """Waits until the slot's confirmed_flush_lsn reaches lsn: Kafka and Redis acknowledged."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"pgfanout exited with {worker.returncode}")
        done = db.execute("SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots"
                          " WHERE slot_name = %s", (lsn, SLOT)).fetchone()
        if done and done[0]:
            return
        time.sleep(0.05)
    raise RuntimeError(f"slot {SLOT} did not confirm {lsn} within {timeout}s")


def run(args, state):
    pb = pb2_module(args.bin)
    work = tempfile.mkdtemp(prefix="pgfanout-quickstart-")
    state["dirs"].append(work)
    # Fails early, before any server starts, when the Kafka jars are missing.
    jars = load_classpath().split(os.pathsep)
    kver = [os.path.basename(j)[len("kafka_2.13-"):-len(".jar")] for j in jars
            if os.path.basename(j).startswith("kafka_2.13-")][0]

    pg, rds, broker = PgCluster(), RedisServer(), KafkaBroker(num_partitions=1)
    state["servers"] = [pg, rds, broker]
    state["dirs"] += [pg.root, rds.dir]
    say("starting PostgreSQL, Redis and Kafka on 127.0.0.1 (throwaway, in temp dirs)")
    side = {"pids": state["pids"]}
    t = threading.Thread(target=start_postgres_and_redis, args=(pg, rds, side), daemon=True)
    state["thread"] = t
    t.start()
    broker.start()
    state["pids"]["kafka"] = broker.pid
    state["dirs"].append(broker.root)
    broker.create_topics(TOPIC, MESSAGE_TOPIC)
    say(f"Kafka {kver} on {broker.bootstrap}  pid {broker.pid}  (KRaft, one node)")
    t.join()
    if "error" in side:
        raise side["error"]

    client = rds.client()
    before = redis_keys(client)
    say(f"table public.products (id, slug, name, price), REPLICA IDENTITY FULL, {len(ROWS)} rows;"
        f" {len(before)} keys cached in Redis")

    config = os.path.join(work, "pgfanout.yaml")
    with open(config, "w") as f:
        f.write(CONFIG)
    argv = [args.bin, "--dsn", pg.dsn(), "--slot", SLOT, "--publication", PUBLICATION,
            "--create-slot", "--create-publication", "--sink", "kafka,redis",
            # The demo is about changes; the rows already there (a snapshot's read events) are
            # in the README's "Snapshots and backfills".
            "--snapshot", "never",
            "--config", config, "--redis", rds.addr, "--kafka-brokers", broker.bootstrap,
            "--status-interval", "0.2"]
    errfile = os.path.join(work, "pgfanout.log")
    monitor = RedisMonitor(rds)
    monitor.start()
    # Only the settings shown: none from PGFANOUT_* variables of the caller's environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGFANOUT_")}
    with open(errfile, "wb") as err:
        # Its own session: Ctrl-C reaches only this script, which stops pgfanout with SIGTERM.
        worker = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=err, env=env, start_new_session=True)
    state["worker"], state["errfile"] = worker, errfile
    state["pids"]["pgfanout"] = worker.pid
    wait_started(worker, errfile)
    shown = [short_path(args.bin)] + [shlex.quote(a) for a in argv[1:]]
    say(f"pgfanout streaming  pid {worker.pid}")
    note("$ " + " ".join(shown[:3]))
    note("    " + " ".join(shown[3:9]))
    note("    " + " ".join(shown[9:13]))
    note("    " + " ".join(shown[13:17]))
    note("    " + " ".join(shown[17:]) + "   (report the confirmed position every 0.2 s, not 10)")
    note("where pgfanout.yaml holds:")
    for line in CONFIG.splitlines()[1:]:
        note("  " + line)

    say("changes in PostgreSQL, one transaction each:")
    with connect(pg.dsn()) as db:
        for sql in CHANGES:
            db.execute(sql)
            note(sql)
        end = db.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
        committed = time.monotonic()
        wait_confirmed(db, worker, end)
    say(f"slot confirmed up to {end} ({time.monotonic() - committed:.1f} s after the last commit):"
        " Kafka and Redis acknowledged every change")

    records = consume_all(broker.bootstrap, [TOPIC, MESSAGE_TOPIC], timeout=30)
    after = redis_keys(client)
    # The read-your-writes key is raised by a script (EVALSHA raise.lua); MONITOR shows the
    # SET it runs.  It is told apart from the invalidations.
    writes = [c for c in monitor.finish(client) if c.split(" ", 1)[0].upper() in WRITES]
    sent = [c for c in writes if RYW_KEY not in c.split()]
    ryw = client.get(RYW_KEY)
    state["facts"] = {
        "records": [{"topic": r.topic, "partition": r.partition, "offset": r.offset,
                     "key": r.key and base64.b64encode(r.key).decode(),
                     "value": r.value and base64.b64encode(r.value).decode()}
                    for r in records],
        "redis_before": before, "redis_after": after, "redis_commands": sent,
        "ryw": ryw and int(ryw), "ryw_raises": len(writes) - len(sent),
    }

    print(flush=True)
    print(f"Kafka records (protobuf pgfanout.v1.Event, decoded with {pb.where}); a record's key is")
    print("the row's primary key, under REPLICA IDENTITY FULL too:")
    for topic in (TOPIC, MESSAGE_TOPIC):
        print(f"  topic {topic}")
        for r in (r for r in records if r.topic == topic):
            for line in event_lines(r, pb):
                print(f"    {line}")
    print()
    print("Redis commands pgfanout sent (seen with MONITOR):")
    for c in sent:
        print(f"  {c}")
    print(f"  and {len(writes) - len(sent)} raises of the read-your-writes key {RYW_KEY}, now "
          f"{lsn_text(ryw)}: every invalidation up to that LSN is done")
    print("Redis keys, before -> after:")
    width = max(map(len, before)) + 2
    problems = []
    for k in sorted(before, key=lambda k: (list(WHY).index(k) if k in WHY else len(WHY), k)):
        gone = k not in after
        print(f"  {k:{width}} {'GONE' if gone else 'kept'}   {WHY.get(k, '')}")
        if gone != (k in EXPECT_GONE):
            problems.append(f"{k} {'vanished' if gone else 'stayed'}, expected otherwise")
    new = sorted(set(after) - set(before) - {RYW_KEY})
    if new:
        problems.append(f"keys appeared: {' '.join(new)}")
    print(flush=True)
    return problems


def cleanup(state):
    """Stops what we started, by pid: pgfanout (SIGTERM), Kafka, Redis, PostgreSQL."""
    t = state.get("thread")
    if t is not None and t.is_alive():
        t.join(90)  # PostgreSQL's initdb/start; stopping under it would race it
    worker = state.get("worker")
    summary = None
    if worker is not None and worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=40)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    if worker is not None:
        state["pgfanout_exit"] = worker.returncode
        with open(state["errfile"], errors="replace") as f:
            log = f.read()
        state["pgfanout_log"] = log
        summary = [ln[ln.index("redis: "):] for ln in log.splitlines()
                   if "redis: " in ln and "transactions" in ln and "latency" in ln]
    pg, rds, broker = (state.get("servers") or [None] * 3)
    for stop in (broker and broker.cleanup, rds and rds.cleanup, pg and pg.stop):
        if stop:
            try:
                stop()
            except Exception as e:  # keep stopping the others
                print(f"quickstart: while stopping: {e}", file=sys.stderr)
    for d in state["dirs"][:1]:  # our own work dir; the servers remove theirs
        shutil.rmtree(d, ignore_errors=True)
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "pgfanout"))
    ap.add_argument("--summary", help="write the raw facts as JSON to this file")
    args = ap.parse_args()
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"quickstart: {args.bin} is missing (build it: bash scripts/quickstart.sh)")
    # Ctrl-C stops the demo and cleans up, even where the shell started us ignoring SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    state = {"dirs": [], "pids": {}}
    status, problems, summary = 0, [], None
    try:
        problems = run(args, state)
    except (KeyboardInterrupt, Interrupted) as e:
        print(f"\nquickstart: interrupted ({str(e) or 'SIGINT'}); stopping what it started",
              file=sys.stderr, flush=True)
        status = 130
    except BrokenPipeError:  # e.g. | head: stop quietly, still cleaning up
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 1
    except Exception as e:
        print(f"\nquickstart: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        status = 1
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        summary = cleanup(state)
    exit_code = state.get("pgfanout_exit")
    if status == 0 and summary:
        print("pgfanout's own account at exit:")
        for line in summary:
            print(f"  {line}")
    if status == 1 and state.get("pgfanout_log") and "facts" not in state:
        print("pgfanout's log (last lines):", file=sys.stderr)
        print("\n".join(state["pgfanout_log"].splitlines()[-25:]), file=sys.stderr)
    if status == 0 and exit_code not in (0, None):
        problems.append(f"pgfanout exited with {exit_code} after SIGTERM")
    names = [n for p, n in (("pgfanout", "pgfanout"), ("kafka", "Kafka"), ("redis", "Redis"),
                            ("postgres", "PostgreSQL")) if p in state["pids"]]
    say(f"stopped {', '.join(names) if names else 'what it had started'} (by pid)"
        " and removed the temp dirs")
    for p in problems:
        print(f"quickstart: UNEXPECTED: {p}", file=sys.stderr)
    if status == 0 and problems:
        status = 1
    if args.summary:
        with open(args.summary, "w") as f:
            json.dump({"status": status, "pids": state["pids"], "dirs": state["dirs"],
                       "pgfanout_exit": exit_code, "problems": problems,
                       **state.get("facts", {})}, f, indent=1)
    if status == 0:
        facts = state["facts"]
        gone = len(set(facts["redis_before"]) - set(facts["redis_after"]))
        print(f"done in {elapsed():.1f} s: {len(facts['records'])} Kafka records,"
              f" {gone} cached keys invalidated, {len(set(facts['redis_after']) - {RYW_KEY})} left alone."
              "  More: README.md, pgfanout --help")
    sys.exit(status)


if __name__ == "__main__":
    main()
