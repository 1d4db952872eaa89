#!/usr/bin/env python3
"""Recaptures the Debezium fixtures: what Debezium's own PostgreSQL connector, run in Kafka
Connect (standalone) with JsonConverter and schemas.enable=false, writes to Kafka for the
workload of tests/debezium/workload.py.

    python3 tests/debezium/capture.py [--out DIR] [--classpath FILE] [VARIANT ...]

VARIANT is a predefined name (see VARIANTS; all of them when none is given) or
NAME:key=value,key=value for connector options of your own.  Every variant runs as its own
connector (own slot, topic.prefix = its name) in ONE Connect worker, against one PostgreSQL
and one Kafka started by tests/harness, over one run of the workload:

 1. PostgreSQL (wal_level=logical) and Kafka (KRaft, 1 partition per topic) start;
 2. the workload's tables, its publication and its pre-capture rows are created;
 3. Connect starts with one PostgresConnector per variant (snapshot.mode=initial); once each
    variant's topics hold the snapshot's records ("r"), the streamed workload runs;
 4. once each variant's topics hold every record expected (workload.expected_record_counts),
    Connect is stopped by its pid, and DIR/<variant>.jsonl is written: one line per record in
    topic/partition/offset order, {"topic", "partition", "offset", "key", "value", "headers"},
    key and value embedded as the exact JSON text JsonConverter wrote (null for a null key or
    a tombstone), headers as {name: text}; plus DIR/final_tables.json, the workload tables'
    final contents read from PostgreSQL (workload.read_table), for consumers to compare with.

Needs the Debezium classpath (scripts/fetch-debezium.sh, run here when the file is missing)
and the Kafka broker's (scripts/fetch-kafka.sh, through tests/harness/kafkabroker.py).
Not a test: it rewrites fixtures.  Everything listens on 127.0.0.1 and is stopped by pid.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "harness"))
sys.path.insert(0, HERE)

import psycopg  # noqa: E402

import workload  # noqa: E402
from kafkabroker import KafkaBroker, consume_all, load_classpath  # noqa: E402
from pgcluster import PgCluster  # noqa: E402
from ports import free_port  # noqa: E402

PUBLICATION = "dbz_pub"
DEFAULT_OUT = os.path.join(REPO, "tests", "fixtures", "debezium")
DEFAULT_CLASSPATH = os.path.join(REPO, "build", "debezium.classpath")

VARIANTS = workload.VARIANTS

LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.kafka.name = org.apache.kafka
logger.kafka.level = WARN
logger.connect.name = org.apache.kafka.connect.runtime.WorkerSourceTask
logger.connect.level = INFO
logger.reflections.name = org.reflections
logger.reflections.level = ERROR
"""

JVM_OPTS = ["-Xms128m", "-Xmx768m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true"]


def parse_variant(spec):
    """'name' (predefined) or 'name:key=value,key=value' -> (name, options)."""
    if ":" not in spec:
        if spec not in VARIANTS:
            raise SystemExit(f"capture: unknown variant {spec!r} (known: {', '.join(VARIANTS)};"
                             " or NAME:key=value,...)")
        return spec, dict(VARIANTS[spec])
    name, _, opts = spec.partition(":")
    options = {}
    for kv in filter(None, opts.split(",")):
        k, sep, v = kv.partition("=")
        if not sep:
            raise SystemExit(f"capture: option {kv!r} of {spec!r} is not key=value")
        options[k.strip()] = v.strip()
    return name, options


def load_debezium_classpath(path):
    """The Debezium/Connect classpath, fetched (scripts/fetch-debezium.sh) when missing."""
    def read():
        try:
            jars = [j for j in open(path).read().strip().split(os.pathsep) if j]
        except FileNotFoundError:
            return None
        return os.pathsep.join(jars) if jars and all(map(os.path.isfile, jars)) else None
    cp = read()
    if cp is None:
        r = subprocess.run(["bash", os.path.join(REPO, "scripts", "fetch-debezium.sh"), path],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise SystemExit(f"capture: scripts/fetch-debezium.sh failed:\n{r.stdout}")
        cp = read()
        if cp is None:
            raise SystemExit(f"capture: no usable classpath in {path}")
    return cp


def topic(prefix, table):
    return f"{prefix}.{workload.SCHEMA}.{table}"


def slot_name(variant):
    return "dbz_" + "".join(c if c.isalnum() else "_" for c in variant.lower())


def write_properties(path, props):
    with open(path, "w") as f:
        for k, v in props.items():
            f.write(f"{k}={v}\n")


class Connect:
    """One Kafka Connect standalone worker with one PostgresConnector per variant."""

    def __init__(self, classpath, root, bootstrap, pg, variants, jvm_opts=None):
        self.classpath = classpath
        self.jvm_opts = list(JVM_OPTS if jvm_opts is None else jvm_opts)
        self.root = root
        self.proc = None
        self.logfile = os.path.join(root, "connect.log")
        self.worker = os.path.join(root, "worker.properties")
        write_properties(self.worker, {
            "bootstrap.servers": bootstrap,
            "key.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "key.converter.schemas.enable": "false",
            "value.converter.schemas.enable": "false",
            "offset.storage.file.filename": os.path.join(root, "offsets.dat"),
            "offset.flush.interval.ms": "1000",
            "listeners": f"http://127.0.0.1:{free_port()}",
            # The connector is on the classpath: no plugin.path, found through its
            # ServiceLoader manifest without scanning jars.
            "plugin.discovery": "service_load",
        })
        self.connectors = []
        for name, options in variants:
            props = {
                "name": f"dbz-{name}",
                "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
                "tasks.max": "1",
                "database.hostname": "127.0.0.1",
                "database.port": str(pg.port),
                "database.user": pg.superuser,
                "database.password": "unused",  # the throwaway cluster trusts local users
                "database.dbname": "postgres",
                "plugin.name": "pgoutput",
                "publication.name": PUBLICATION,
                "publication.autocreate.mode": "disabled",
                "slot.name": slot_name(name),
                "topic.prefix": name,
                "snapshot.mode": "initial",
                "table.include.list": ",".join(f"{workload.SCHEMA}.{t}"
                                               for t in workload.TABLES),
            }
            props.update(options)
            path = os.path.join(root, f"connector-{name}.properties")
            write_properties(path, props)
            self.connectors.append(path)
        with open(os.path.join(root, "log4j2.properties"), "w") as f:
            f.write(LOG4J2)

    def start(self):
        argv = ["java", *self.jvm_opts,
                f"-Dlog4j2.configurationFile={os.path.join(self.root, 'log4j2.properties')}",
                "-cp", self.classpath, "org.apache.kafka.connect.cli.ConnectStandalone",
                self.worker, *self.connectors]
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, start_new_session=True, cwd=self.root)
        print(f"capture: Kafka Connect pid {self.proc.pid}, log {self.logfile}", file=sys.stderr)

    def check_alive(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"Kafka Connect exited with {self.proc.returncode}:\n"
                               + self.log_tail())

    def log_tail(self, lines=60):
        try:
            with open(self.logfile, errors="replace") as f:
                all_lines = f.readlines()
        except OSError:
            return "(no log)"
        errors = [ln for ln in all_lines if " ERROR " in ln][:20]
        return ("errors:\n" + "".join(errors) + "last lines:\n" if errors else "") + \
            "".join(all_lines[-lines:])

    def stop(self, timeout=60):
        """SIGTERM to our worker's pid (a clean stop), SIGKILL after timeout seconds."""
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_for_records(broker, connect, want, what, timeout):
    """Waits until each topic in want ({topic: count}) holds exactly that many records;
    returns {topic: [Record]}.  Raises with the counts seen and the Connect log on timeout,
    or at once when a topic holds more than expected."""
    deadline = time.monotonic() + timeout
    while True:
        connect.check_alive()
        got = {t: [] for t in want}
        for r in consume_all(broker.bootstrap, list(want), timeout=60):
            got[r.topic].append(r)
        counts = {t: len(r) for t, r in got.items()}
        over = {t: (counts[t], n) for t, n in want.items() if counts[t] > n}
        if over:
            raise RuntimeError(f"capture: more records than the workload explains ({what}), "
                               f"topic: (got, expected): {over}")
        if counts == want:
            return got
        if time.monotonic() > deadline:
            missing = {t: (counts[t], n) for t, n in want.items() if counts[t] != n}
            raise RuntimeError(f"capture: {what}: records missing after {timeout} s, "
                               f"topic: (got, expected): {missing}\n" + connect.log_tail())
        time.sleep(1)


def header_text(value):
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + __import__("base64").b64encode(value).decode()


def fixture_line(rec):
    """One record as a JSON line; key and value are JsonConverter's own text, embedded."""
    def raw(b):
        if b is None:
            return "null"
        text = b.decode("utf-8")
        json.loads(text)  # JsonConverter writes one JSON document: checked
        if "\n" in text:
            raise RuntimeError("a record's JSON spans lines")
        return text
    head = json.dumps({"topic": rec.topic, "partition": rec.partition, "offset": rec.offset},
                      ensure_ascii=False)
    headers = json.dumps({k: header_text(v) for k, v in rec.headers}, ensure_ascii=False)
    line = f'{head[:-1]}, "key": {raw(rec.key)}, "value": {raw(rec.value)}, "headers": {headers}}}'
    json.loads(line)
    return line


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="*", help="variant names or NAME:key=value,...")
    ap.add_argument("--out", default=DEFAULT_OUT, help="fixture directory (%(default)s)")
    ap.add_argument("--classpath", default=DEFAULT_CLASSPATH,
                    help="Debezium classpath file (%(default)s)")
    ap.add_argument("--timeout", type=float, default=180,
                    help="seconds to wait for the snapshot, and again for the stream")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args(argv)
    variants = [parse_variant(v) for v in (args.variants or list(VARIANTS))]
    names = [n for n, _ in variants]
    if len(set(names)) != len(names):
        raise SystemExit("capture: a variant name is given twice")

    classpath = load_debezium_classpath(os.path.abspath(args.classpath))
    load_classpath()  # the broker's jars, fetched before any server starts
    root = tempfile.mkdtemp(prefix="pgfanout-dbz-")
    t0 = time.monotonic()
    pg = PgCluster(extra_conf={"max_replication_slots": "20", "max_wal_senders": "20"})
    broker = KafkaBroker(num_partitions=1)
    connect = None
    try:
        pg.start()
        broker.start()
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            workload.create_schema(conn)
            workload.create_publication(conn, PUBLICATION)
            pre = workload.load_initial(conn)
        print(f"capture: PostgreSQL on {pg.port}, Kafka on {broker.port}, "
              f"{len(variants)} connectors: {', '.join(names)}", file=sys.stderr)

        connect = Connect(classpath, root, broker.bootstrap, pg, variants)
        connect.start()

        def want(ops):
            out = {}
            for name, options in variants:
                tomb = options.get("tombstones.on.delete", "true") == "true"
                skipped = options.get("skipped.operations", "t")
                truncs = "t" not in [s.strip() for s in skipped.split(",")]
                for t, n in workload.expected_record_counts(ops, tomb, truncs).items():
                    out[topic(name, t)] = n
            return out

        wait_for_records(broker, connect, want(pre), "snapshot", args.timeout)
        print(f"capture: snapshots done ({time.monotonic() - t0:.1f} s)", file=sys.stderr)
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            ops = workload.run_stream(conn)
            final = {t: workload.read_table(conn, t) for t in workload.TABLES}
        got = wait_for_records(broker, connect, want(pre + ops), "stream", args.timeout)
        print(f"capture: all records in ({time.monotonic() - t0:.1f} s)", file=sys.stderr)
        connect.stop()

        os.makedirs(args.out, exist_ok=True)
        for name, _ in variants:
            recs = sorted((r for t in workload.TABLES for r in got[topic(name, t)]),
                          key=lambda r: (r.topic, r.partition, r.offset))
            path = os.path.join(args.out, f"{name}.jsonl")
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                for r in recs:
                    f.write(fixture_line(r) + "\n")
            os.replace(path + ".tmp", path)
            print(f"capture: {len(recs)} records -> {path}", file=sys.stderr)
        path = os.path.join(args.out, "final_tables.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(final, f, ensure_ascii=False, indent=1, sort_keys=True)
            f.write("\n")
        print(f"capture: final table contents -> {path}", file=sys.stderr)
    finally:
        if connect is not None:
            connect.stop()
        broker.cleanup()
        pg.stop()
        if args.keep:
            print(f"capture: work directory kept: {root}", file=sys.stderr)
        else:
            __import__("shutil").rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
